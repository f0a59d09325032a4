//! Op builders on `Tensor`: shape checks happen here, when the op is built, and panic
//! (with the op name and both shapes) on misuse inside a tensor expression.

use super::{DType, Tensor};
use crate::graph::elementwise::{BinaryOp, UnaryOp};
use crate::graph::op::{Act, Op, ReduceKind};

/// NumPy broadcast of two shapes, or `None` when they are incompatible.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

impl Tensor {
    #[track_caller]
    fn check_f32(&self, op: &str) {
        assert!(
            self.dtype() == DType::F32,
            "{op}: expects f32 data, got a label tensor of shape {:?}",
            self.shape()
        );
    }

    #[track_caller]
    fn check_same_device(&self, other: &Tensor, op: &str) {
        assert!(
            self.device().same(other.device()),
            "{op}: operands live on different devices ({} and {}); shapes {:?} and {:?}",
            self.device(),
            other.device(),
            self.shape(),
            other.shape()
        );
    }

    #[track_caller]
    pub(crate) fn unary(&self, op: UnaryOp) -> Tensor {
        self.check_f32("unary op");
        Tensor::from_node(Op::Unary(op), vec![self.clone()], self.shape().to_vec(), DType::F32)
    }

    #[track_caller]
    fn binary(&self, other: &Tensor, op: BinaryOp) -> Tensor {
        self.check_f32("binary op");
        other.check_f32("binary op");
        self.check_same_device(other, "binary op");
        let shape = broadcast_shapes(self.shape(), other.shape()).unwrap_or_else(|| {
            panic!(
                "{op:?}: shapes {:?} and {:?} do not broadcast",
                self.shape(),
                other.shape()
            )
        });
        Tensor::from_node(Op::Binary(op), vec![self.clone(), other.clone()], shape, DType::F32)
    }

    /// Fuses an activation into an unrealized matmul that has none, else applies it
    /// elementwise.
    fn activation(&self, act: Act, op: UnaryOp) -> Tensor {
        if let Op::MatMul {
            ta,
            tb,
            bias,
            act: Act::None,
        } = self.0.op
        {
            if self.0.storage.lock().unwrap().is_none() {
                let fused = Op::MatMul { ta, tb, bias, act };
                return Tensor::from_node(fused, self.0.inputs.clone(), self.shape().to_vec(), DType::F32);
            }
        }
        self.unary(op)
    }

    /// `-x`
    pub fn neg(&self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
    /// `e^x`
    pub fn exp(&self) -> Tensor {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Tensor {
        self.unary(UnaryOp::Log)
    }
    /// Logistic function `1 / (1 + e^-x)`.
    pub fn sigmoid(&self) -> Tensor {
        self.activation(Act::Sigmoid, UnaryOp::Sigmoid)
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        self.activation(Act::Tanh, UnaryOp::Tanh)
    }
    /// `max(x, 0)`
    pub fn relu(&self) -> Tensor {
        self.activation(Act::Relu, UnaryOp::Relu)
    }
    /// Heaviside step: 1 where x > 0, else 0 (zero gradient).
    pub fn step(&self) -> Tensor {
        self.unary(UnaryOp::Step)
    }
    /// `|x|`
    pub fn abs(&self) -> Tensor {
        self.unary(UnaryOp::Abs)
    }
    /// -1, 0 or 1 (zero gradient).
    pub fn sign(&self) -> Tensor {
        self.unary(UnaryOp::Sign)
    }
    /// Square root.
    pub fn sqrt(&self) -> Tensor {
        self.unary(UnaryOp::Sqrt)
    }
    /// `x²`
    pub fn square(&self) -> Tensor {
        self.unary(UnaryOp::Square)
    }
    /// `1 / x`
    pub fn recip(&self) -> Tensor {
        self.unary(UnaryOp::Recip)
    }
    /// `x + c`
    pub fn add_scalar(&self, c: f32) -> Tensor {
        self.unary(UnaryOp::AddScalar(c))
    }
    /// `x · c`
    pub fn mul_scalar(&self, c: f32) -> Tensor {
        self.unary(UnaryOp::MulScalar(c))
    }
    /// `x^p`
    pub fn pow_scalar(&self, p: f32) -> Tensor {
        self.unary(UnaryOp::PowScalar(p))
    }

    /// Elementwise sum with broadcasting.
    #[track_caller]
    pub fn add(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Add)
    }
    /// Elementwise difference with broadcasting.
    #[track_caller]
    pub fn sub(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Sub)
    }
    /// Elementwise product with broadcasting.
    #[track_caller]
    pub fn mul(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Mul)
    }
    /// Elementwise quotient with broadcasting.
    #[track_caller]
    pub fn div(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Div)
    }
    /// Elementwise maximum with broadcasting.
    #[track_caller]
    pub fn maximum(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Maximum)
    }
    /// 1 where `self == other`, else 0.
    #[track_caller]
    pub fn eq_mask(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Eq)
    }
    /// 1 where `self > other`, else 0.
    #[track_caller]
    pub fn gt_mask(&self, other: &Tensor) -> Tensor {
        self.binary(other, BinaryOp::Gt)
    }
    /// 1 where `self >= other`, else 0.
    #[track_caller]
    pub fn ge_mask(&self, other: &Tensor) -> Tensor {
        other.gt_mask(self).neg().add_scalar(1.0)
    }

    /// Matrix product of 2-D tensors `[m, k] · [k, n]`. A transposed operand
    /// (`x.t()`) is read in place, never copied.
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        self.matmul_t(other, false, false)
    }

    /// `op(self) · op(other)` where `op` transposes a 2-D operand when its flag is set.
    #[track_caller]
    pub fn matmul_t(&self, other: &Tensor, ta: bool, tb: bool) -> Tensor {
        Tensor::matmul_node(self, other, None, ta, tb)
    }

    /// `x · wᵀ + b`, PyTorch's `nn.Linear` with weight `[out, in]`, as one fused kernel.
    #[track_caller]
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
        Tensor::matmul_node(self, weight, bias, false, true)
    }

    #[track_caller]
    fn matmul_node(a: &Tensor, b: &Tensor, bias: Option<&Tensor>, ta: bool, tb: bool) -> Tensor {
        a.check_f32("matmul");
        b.check_f32("matmul");
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
        let op = Op::MatMul {
            ta,
            tb,
            bias: bias.is_some(),
            act: Act::None,
        };
        Tensor::from_node(op, inputs, vec![m, n], DType::F32)
    }

    fn untransposed(&self, flag: bool) -> (Tensor, bool) {
        match &self.0.op {
            Op::Permute(p) if p == &[1, 0] => (self.0.inputs[0].clone(), !flag),
            _ => (self.clone(), flag),
        }
    }

    #[track_caller]
    fn reduce(&self, kind: ReduceKind, axis: usize, keepdim: bool) -> Tensor {
        self.check_f32("reduce");
        assert!(
            axis < self.shape().len(),
            "reduce: axis {axis} out of range for shape {:?}",
            self.shape()
        );
        let mut shape = self.shape().to_vec();
        shape.remove(axis);
        let out = Tensor::from_node(Op::Reduce { kind, axis }, vec![self.clone()], shape, DType::F32);
        if keepdim {
            out.unsqueeze(axis)
        } else {
            out
        }
    }

    /// Sum of all elements (shape `[]`).
    pub fn sum(&self) -> Tensor {
        self.reshape(&[self.numel()]).reduce(ReduceKind::Sum, 0, false)
    }
    /// Mean of all elements (shape `[]`).
    pub fn mean(&self) -> Tensor {
        self.sum().mul_scalar(1.0 / self.numel().max(1) as f32)
    }
    /// Sum along `axis`.
    #[track_caller]
    pub fn sum_axis(&self, axis: usize, keepdim: bool) -> Tensor {
        self.reduce(ReduceKind::Sum, axis, keepdim)
    }
    /// Mean along `axis`.
    #[track_caller]
    pub fn mean_axis(&self, axis: usize, keepdim: bool) -> Tensor {
        let n = self.shape().get(axis).copied().unwrap_or(1).max(1);
        self.reduce(ReduceKind::Sum, axis, keepdim).mul_scalar(1.0 / n as f32)
    }
    /// Maximum along `axis` (the gradient goes to every maximal element).
    #[track_caller]
    pub fn max_axis(&self, axis: usize, keepdim: bool) -> Tensor {
        self.reduce(ReduceKind::Max, axis, keepdim)
    }
    /// Index of the first maximum along `axis`, as a label tensor.
    #[track_caller]
    pub fn argmax(&self, axis: usize) -> Tensor {
        self.check_f32("argmax");
        assert!(
            axis < self.shape().len(),
            "argmax: axis {axis} out of range for shape {:?}",
            self.shape()
        );
        let mut shape = self.shape().to_vec();
        shape.remove(axis);
        Tensor::from_node(Op::ArgMax { axis }, vec![self.clone()], shape, DType::U32)
    }

    /// Same data, new shape (no copy).
    #[track_caller]
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        assert!(
            super::numel(shape) == self.numel(),
            "reshape: cannot view shape {:?} as {:?}",
            self.shape(),
            shape
        );
        if shape == self.shape() {
            return self.clone();
        }
        Tensor::from_node(Op::Reshape, vec![self.clone()], shape.to_vec(), self.dtype())
    }

    /// Inserts an axis of length 1 at `axis`.
    #[track_caller]
    pub fn unsqueeze(&self, axis: usize) -> Tensor {
        let mut shape = self.shape().to_vec();
        assert!(
            axis <= shape.len(),
            "unsqueeze: axis {axis} out of range for shape {:?}",
            self.shape()
        );
        shape.insert(axis, 1);
        self.reshape(&shape)
    }

    /// Inverted dropout: each element is zeroed with probability `p` and the rest are
    /// scaled by `1 / (1 − p)`, so the expected value is unchanged. The mask is a pure
    /// function of `seed` and the element index (Philox4x32-10), identical on the CPU
    /// and the GPU, and the backward pass regenerates it. `nn::Dropout` draws a fresh
    /// seed per call from the global stream (`wgnn::manual_seed`).
    ///
    /// # Panics
    /// If `p` is not in `[0, 1]`.
    #[track_caller]
    pub fn dropout(&self, p: f32, seed: u64) -> Tensor {
        let key = Tensor::dropout_key_tensor(seed, self.device());
        self.dropout_keyed(p, &key)
    }

    /// The key input of a dropout node: the seed as two u32 words.
    fn dropout_key_tensor(seed: u64, device: &crate::Device) -> Tensor {
        let words = vec![f32::from_bits(seed as u32), f32::from_bits((seed >> 32) as u32)];
        let storage = device
            .backend()
            .stage(words)
            .expect("staging two words never exceeds a device limit");
        Tensor::leaf(storage, vec![2], DType::U32, device, None)
    }

    #[track_caller]
    pub(crate) fn dropout_keyed(&self, p: f32, key: &Tensor) -> Tensor {
        self.check_f32("dropout");
        assert!(
            (0.0..=1.0).contains(&p),
            "dropout: p = {p} is not a probability in [0, 1]"
        );
        Tensor::from_node(
            Op::Dropout { p },
            vec![self.clone(), key.clone()],
            self.shape().to_vec(),
            DType::F32,
        )
    }

    /// One-hot rows `[n, classes]` (f32) of a label tensor `[n]`; a label not below
    /// `classes` gives a row of zeros. No gradient.
    #[track_caller]
    pub fn one_hot(&self, classes: usize) -> Tensor {
        assert!(
            self.dtype() == DType::U32 && self.shape().len() == 1,
            "one_hot: needs a label tensor [n], got {:?} {:?}",
            self.dtype(),
            self.shape()
        );
        let shape = vec![self.shape()[0], classes];
        Tensor::from_node(Op::OneHot { classes }, vec![self.clone()], shape, DType::F32)
    }

    /// Values limited to `[lo, hi]` (composed from `maximum`).
    #[track_caller]
    pub fn clamp(&self, lo: f32, hi: f32) -> Tensor {
        assert!(lo <= hi, "clamp: lo {lo} is above hi {hi}");
        let dev = self.device();
        self.maximum(&Tensor::full(&[], lo, dev))
            .neg()
            .maximum(&Tensor::full(&[], -hi, dev))
            .neg()
    }

    /// A value that gradients do not flow through.
    pub fn detach(&self) -> Tensor {
        let t = Tensor::from_node(Op::Reshape, vec![self.clone()], self.shape().to_vec(), self.dtype());
        t.0.requires_grad.store(false, std::sync::atomic::Ordering::Release);
        t
    }

    /// Reorders the axes: output axis `i` is input axis `perm[i]`.
    #[track_caller]
    pub fn permute(&self, perm: &[usize]) -> Tensor {
        let rank = self.shape().len();
        let mut seen = vec![false; rank];
        assert!(
            perm.len() == rank && perm.iter().all(|&p| p < rank && !std::mem::replace(&mut seen[p], true)),
            "permute: {perm:?} is not a permutation of the axes of shape {:?}",
            self.shape()
        );
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return self.clone();
        }
        let shape = perm.iter().map(|&p| self.shape()[p]).collect();
        Tensor::from_node(Op::Permute(perm.to_vec()), vec![self.clone()], shape, self.dtype())
    }

    /// Swaps two axes.
    #[track_caller]
    pub fn transpose(&self, a: usize, b: usize) -> Tensor {
        let rank = self.shape().len();
        assert!(
            a < rank && b < rank,
            "transpose: axes {a}, {b} out of range for shape {:?}",
            self.shape()
        );
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Transpose of a 2-D tensor.
    #[track_caller]
    pub fn t(&self) -> Tensor {
        assert!(
            self.shape().len() == 2,
            "t: expects a 2-D tensor, got {:?}",
            self.shape()
        );
        self.transpose(0, 1)
    }

    /// Broadcasts to `shape` (NumPy rules).
    #[track_caller]
    pub fn expand(&self, shape: &[usize]) -> Tensor {
        assert!(
            broadcast_shapes(self.shape(), shape).as_deref() == Some(shape),
            "expand: shape {:?} does not broadcast to {:?}",
            self.shape(),
            shape
        );
        if shape == self.shape() {
            return self.clone();
        }
        Tensor::from_node(Op::Expand, vec![self.clone()], shape.to_vec(), self.dtype())
    }

    /// Sums a broadcast gradient back to `shape` (the inverse of `expand`).
    pub(crate) fn sum_to_shape(&self, shape: &[usize]) -> Tensor {
        if self.shape() == shape {
            return self.clone();
        }
        let lead = self.shape().len() - shape.len();
        let mut t = self.clone();
        for _ in 0..lead {
            t = t.sum_axis(0, false);
        }
        for (axis, &d) in shape.iter().enumerate() {
            if d == 1 && t.shape()[axis] != 1 {
                t = t.sum_axis(axis, true);
            }
        }
        t.reshape(shape)
    }

    /// Softmax along `axis` (max-subtracted, stable).
    #[track_caller]
    pub fn softmax(&self, axis: usize) -> Tensor {
        self.log_softmax(axis).exp()
    }

    /// Log-softmax along `axis` (max-subtracted, stable).
    #[track_caller]
    pub fn log_softmax(&self, axis: usize) -> Tensor {
        let shifted = self - &self.max_axis(axis, true).detach();
        &shifted - &shifted.exp().sum_axis(axis, true).log()
    }

    pub(crate) fn cross_entropy_rows(logits: &Tensor, labels: &Tensor) -> Tensor {
        Tensor::from_node(
            Op::CrossEntropyRows,
            vec![logits.clone(), labels.clone()],
            vec![logits.shape()[0]],
            DType::F32,
        )
    }

    pub(crate) fn cross_entropy_rows_grad(logits: &Tensor, labels: &Tensor, g: &Tensor) -> Tensor {
        let inputs = vec![logits.clone(), labels.clone(), g.clone()];
        Tensor::from_node(Op::CrossEntropyRowsGrad, inputs, logits.shape().to_vec(), DType::F32)
    }
}

macro_rules! impl_operator {
    ($trait:ident, $method:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                Tensor::$method(self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: Tensor) -> Tensor {
                Tensor::$method(&self, &rhs)
            }
        }
        impl std::ops::$trait<&Tensor> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $method(self, rhs: &Tensor) -> Tensor {
                Tensor::$method(&self, rhs)
            }
        }
    };
}
impl_operator!(Add, add);
impl_operator!(Sub, sub);
impl_operator!(Mul, mul);
impl_operator!(Div, div);

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}
