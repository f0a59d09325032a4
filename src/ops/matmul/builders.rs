//! The matmul family's builders on [`Tensor`] and their shape rules: `matmul` with
//! `torch.matmul`'s rules (1-D operands, broadcast batch axes), `matmul_t`, `linear`
//! on inputs of any rank, and an activation taken into a product's epilogue. The op's
//! kernels and gradient are in `ops/matmul.rs`, beside `shaders/matmul.wgsl`.

use super::{Batch, MatMul};
use crate::backend::kernel::MAX_RANK;
use crate::ops::cast::{autocast_half, autocasting};
use crate::ops::conv::{Conv, ConvPass};
use crate::ops::elementwise::UnaryOp;
use crate::ops::{broadcast_shapes, Op};
use crate::tensor::{numel, DType};
use crate::Tensor;

impl Tensor {
    /// Matrix product, as `torch.matmul`:
    /// - `[m, k] · [k, n] → [m, n]`, one GEMM; a transposed operand (`x.t()`,
    ///   `x.transpose(-2, -1)`) is read in place, never copied;
    /// - operands of rank 3 or more are stacks of matrices whose leading (batch) axes
    ///   broadcast by NumPy's rules: `[b, m, k] · [b, k, n] → [b, m, n]`,
    ///   `[b, m, k] · [k, n] → [b, m, n]`, `[a, 1, m, k] · [b, k, n] → [a, b, m, n]`,
    ///   computed as one batched GEMM (one launch on the GPU); the gradient of a
    ///   broadcast operand is summed over the axes it was broadcast along;
    /// - a 1-D operand is a row vector on the left, a column vector on the right, and
    ///   its axis is dropped from the result: `[k] · [k] → []`, `[k] · [.., k, n] →
    ///   [.., n]`, `[.., m, k] · [k] → [.., m]`.
    ///
    /// # Panics
    /// On a scalar operand, inner dimensions that differ, or batch axes that do not
    /// broadcast; the message names both shapes.
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        self.matmul_t(other, false, false)
    }

    /// `op(self) · op(other)` by [`Tensor::matmul`]'s rules, where `op` swaps the last
    /// two axes of an operand when its flag is set (read in place, never copied).
    ///
    /// # Panics
    /// As [`Tensor::matmul`], and on a flag set for a 1-D operand.
    #[track_caller]
    pub fn matmul_t(&self, other: &Tensor, ta: bool, tb: bool) -> Tensor {
        let (sa, sb) = (self.shape(), other.shape());
        let (ra, rb) = (sa.len(), sb.len());
        if ra == 2 && rb == 2 {
            return Tensor::matmul_node(self, other, None, ta, tb);
        }
        let mark = |t: bool| if t { "ᵀ" } else { "" };
        assert!(
            ra >= 1 && rb >= 1 && !(ra == 1 && ta) && !(rb == 1 && tb),
            "matmul: expects matrices or vectors (a vector is never transposed), got {sa:?}{} and {sb:?}{}",
            mark(ta),
            mark(tb)
        );
        let ka = if ra == 1 || !ta { sa[ra - 1] } else { sa[ra - 2] };
        let kb = if rb == 1 || tb { sb[rb - 1] } else { sb[rb - 2] };
        assert!(
            ka == kb,
            "matmul: inner dimensions differ: {sa:?}{} · {sb:?}{}",
            mark(ta),
            mark(tb)
        );
        if ra > 1 && rb > 1 {
            return Tensor::batched_matmul(self, other, ta, tb);
        }
        // A vector is a one-row (left) or one-column (right) matrix, that axis dropped.
        let a = if ra == 1 { self.unsqueeze(0) } else { self.clone() };
        let b = if rb == 1 { other.unsqueeze(1) } else { other.clone() };
        let product = a.matmul_t(&b, ta, tb);
        let p = product.shape();
        let mut shape = p[..p.len() - 2].to_vec();
        if ra > 1 {
            shape.push(p[p.len() - 2]);
        }
        if rb > 1 {
            shape.push(p[p.len() - 1]);
        }
        product.reshape(&shape)
    }

    /// `x · wᵀ + b`, PyTorch's `nn.Linear` with weight `[out, in]`, as one fused kernel,
    /// for `x` of shape `[.., in]` (any rank from 1): the leading axes are rows of one
    /// product, and the result is `[.., out]`.
    ///
    /// # Panics
    /// When `x` does not end in `in` features or the bias is not `[out]`.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let shape = self.shape();
        if shape.len() == 2 {
            return Tensor::matmul_node(self, weight, bias, false, true);
        }
        let w = weight.shape();
        assert!(
            !shape.is_empty() && w.len() == 2 && shape[shape.len() - 1] == w[1],
            "linear: input {shape:?} does not end in the input features of weight {w:?} ([out, in])"
        );
        let lead = &shape[..shape.len() - 1];
        let rows = self.reshape(&[numel(lead), w[1]]);
        let mut out = lead.to_vec();
        out.push(w[0]);
        Tensor::matmul_node(&rows, weight, bias, false, true).reshape(&out)
    }

    /// The node of a 2-D product, with a bias row when given.
    #[track_caller]
    pub(super) fn matmul_node(a: &Tensor, b: &Tensor, bias: Option<&Tensor>, ta: bool, tb: bool) -> Tensor {
        a.check_same_device(b, "matmul");
        assert!(
            a.shape().len() == 2 && b.shape().len() == 2,
            "matmul: expects 2-D operands, got {:?} and {:?}",
            a.shape(),
            b.shape()
        );
        // Fold explicit transposes into the kernel's flags.
        let (a, ta) = a.untransposed(ta);
        let (b, tb) = b.untransposed(tb);
        let (a, b, half) = mixed_precision(a, b);
        let (m, ka) = if ta {
            (a.shape()[1], a.shape()[0])
        } else {
            (a.shape()[0], a.shape()[1])
        };
        let (kb, n) = if tb {
            (b.shape()[1], b.shape()[0])
        } else {
            (b.shape()[0], b.shape()[1])
        };
        assert!(
            ka == kb,
            "matmul: inner dimensions differ: {:?}{} · {:?}{}",
            a.shape(),
            if ta { "ᵀ" } else { "" },
            b.shape(),
            if tb { "ᵀ" } else { "" }
        );
        let mut inputs = vec![a, b];
        if let Some(bias) = bias {
            assert!(
                bias.shape() == [n],
                "linear: bias shape {:?} does not match output features [{n}]",
                bias.shape()
            );
            inputs.push(bias.clone());
        }
        let op = MatMul {
            ta,
            tb,
            bias: bias.is_some(),
            act: None,
            half,
        };
        Tensor::from_node(Op::MatMul(op), inputs, vec![m, n], DType::F32)
    }

    /// The product of operands of rank 2 or more, one of them more (inner dimensions
    /// already checked): one batched node, or one 2-D product when B is a single
    /// matrix and A is not transposed (A's batch is then just more rows).
    #[track_caller]
    fn batched_matmul(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Tensor {
        a.check_same_device(b, "matmul");
        let (a, ta) = a.untransposed(ta);
        let (b, tb) = b.untransposed(tb);
        let (a, b, half) = mixed_precision(a, b);
        let (sa, sb) = (a.shape(), b.shape());
        let (ra, rb) = (sa.len(), sb.len());
        let batch = broadcast_shapes(&sa[..ra - 2], &sb[..rb - 2]).unwrap_or_else(|| {
            panic!(
                "matmul: batch axes {:?} and {:?} do not broadcast, in {sa:?} · {sb:?}",
                &sa[..ra - 2],
                &sb[..rb - 2]
            )
        });
        let m = sa[ra - 2 + ta as usize];
        let n = sb[rb - 1 - tb as usize];
        let mut out = batch;
        out.extend([m, n]);
        if rb == 2 && !ta {
            let rows = a.reshape(&[numel(&sa[..ra - 1]), sa[ra - 1]]);
            return Tensor::matmul_node(&rows, &b, None, false, tb).reshape(&out);
        }
        let axes = Batch::of(sa, sb, &out).map_or(0, |batch| batch.dims.len());
        assert!(
            axes <= MAX_RANK,
            "matmul: the batch axes of {sa:?} · {sb:?} need {axes} strided axes, at most {MAX_RANK}"
        );
        let op = MatMul {
            ta,
            tb,
            bias: false,
            act: None,
            half,
        };
        Tensor::from_node(Op::MatMul(op), vec![a, b], out, DType::F32)
    }

    /// The tensor a swap of the last two axes reads, with the flag flipped; else this
    /// tensor and the flag.
    fn untransposed(&self, flag: bool) -> (Tensor, bool) {
        match &self.0.op {
            Op::Permute(p) if swaps_last_two(&p.0) => (self.0.inputs[0].clone(), !flag),
            _ => (self.clone(), flag),
        }
    }

    /// This unrealized matmul or convolution forward (or an unrealized reshape of a
    /// matmul: `linear` on `[.., in]`) with `act` as its epilogue, when it has none
    /// yet (built where the activation was asked for).
    #[track_caller]
    pub(crate) fn with_epilogue(&self, act: UnaryOp) -> Option<Tensor> {
        if self.0.storage.lock().unwrap().is_some() {
            return None;
        }
        let op = match self.0.op {
            Op::MatMul(op @ MatMul { act: None, .. }) => op,
            Op::Conv(
                conv @ Conv {
                    pass: ConvPass::Forward { bias, act: None },
                    ..
                },
            ) => {
                let pass = ConvPass::Forward { bias, act: Some(act) };
                return Some(Conv::node(pass, conv.geometry, self.0.inputs.clone()));
            }
            Op::Reshape => {
                let fused = self.0.inputs[0].with_epilogue(act)?;
                return Some(fused.reshape(self.shape()));
            }
            _ => return None,
        };
        let fused = Op::MatMul(MatMul { act: Some(act), ..op });
        Some(Tensor::from_node(
            fused,
            self.0.inputs.clone(),
            self.shape().to_vec(),
            DType::F32,
        ))
    }
}

/// The operands of a product as it computes them, and whether in f16: both cast to
/// f16 when either already is (the backward products of a mixed-precision GEMM) or
/// autocast is on for their device ([`crate::amp`]); else both f32 as they are. On a
/// device without half-precision shaders, f16 operands are widened (exactly) and the
/// f32 GEMM runs: the same values. Label tensors panic (at the caller).
#[track_caller]
fn mixed_precision(a: Tensor, b: Tensor) -> (Tensor, Tensor, bool) {
    let given = a.dtype() == DType::F16 || b.dtype() == DType::F16;
    if autocasting(a.device()) {
        (autocast_half(&a), autocast_half(&b), true)
    } else if given && a.device().shader_f16() {
        (a.half(), b.half(), true)
    } else {
        let (a, b) = (a.float(), b.float());
        a.check_f32("matmul");
        b.check_f32("matmul");
        (a, b, false)
    }
}

/// Whether a permutation swaps the last two axes and keeps the others.
fn swaps_last_two(perm: &[usize]) -> bool {
    let r = perm.len();
    r >= 2 && perm[r - 2] == r - 1 && perm[r - 1] == r - 2 && perm[..r - 2].iter().enumerate().all(|(i, &p)| i == p)
}
