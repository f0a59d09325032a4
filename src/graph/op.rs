//! The op table: every primitive op of the graph, with its gradient rule written as
//! other graph ops (so the backward pass runs on the same backend, in the same plan).
//! Elementwise maps live in [`super::elementwise`]; their kernels in
//! `shaders/elementwise.wgsl` and `backend/cpu.rs`.

use super::elementwise::{BinaryOp, UnaryOp};
use crate::Tensor;

/// Activation fused into the epilogue of a matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Act {
    None,
    Relu,
    Sigmoid,
    Tanh,
}

/// Reduction along one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    Max,
}

/// Hyper-parameters that are fixed for a plan (the rest live in a device buffer).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UpdateKind {
    /// `torch.optim.SGD`; reads lr, momentum, dampening, weight decay, nesterov from
    /// the hyper buffer.
    Sgd { momentum: bool },
    /// `torch.optim.Adam` (decoupled = false) or `AdamW` (decoupled = true).
    Adam { decoupled: bool },
}

/// A primitive op. Shapes are checked when the op is built (see `tensor::ops`).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Data or parameter: its storage is always set.
    Leaf,
    /// A constant generated on the device (no upload).
    Fill(f32),
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `act(op(A)·op(B) + bias)`; op transposes a 2-D operand in place (no copy).
    /// Inputs: a, b, and bias when `bias`.
    MatMul {
        ta: bool,
        tb: bool,
        bias: bool,
        act: Act,
    },
    /// Reduce along `axis`, which is removed from the shape.
    Reduce {
        kind: ReduceKind,
        axis: usize,
    },
    /// Index of the first maximum along `axis` (u32 labels out).
    ArgMax {
        axis: usize,
    },
    /// Same data, new shape (an alias, no kernel).
    Reshape,
    /// Axis permutation (strided copy).
    Permute(Vec<usize>),
    /// Broadcast to the node's shape (strided copy with zero strides).
    Expand,
    /// Per-row `-log_softmax(logits)[label]`: inputs logits `[B, C]`, labels `[B]`.
    CrossEntropyRows,
    /// Gradient of `CrossEntropyRows`: `(softmax(logits) - onehot) * g[row]`; inputs
    /// logits, labels, g `[B]`.
    CrossEntropyRowsGrad,
    /// In-place optimizer update of one parameter. Inputs: grad, hyper, step counter,
    /// then the buffers written in place: param and its state (one or two buffers).
    Update(UpdateKind),
    /// Adds one to a step counter in place. Input: the counter.
    Increment,
    /// Inverted dropout: `x · keep / (1 − p)`, where `keep` for element `i` comes from
    /// Philox4x32-10 keyed by the key input (u32 `[2]`) at counter `i`. The mask is a
    /// function of (key, i) only, so the CPU and the GPU drop the same elements and the
    /// backward pass regenerates it instead of storing it. Inputs: x, key.
    Dropout {
        p: f32,
    },
    /// u32 labels `[n]` to f32 rows `[n, classes]` with a 1 at the label (a label not
    /// below `classes` gives a row of zeros). Used for device-side confusion matrices.
    OneHot {
        classes: usize,
    },
}

impl Op {
    /// Short name used in errors and plan keys.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Leaf => "leaf",
            Op::Fill(_) => "fill",
            Op::Unary(_) => "unary",
            Op::Binary(_) => "binary",
            Op::MatMul { .. } => "matmul",
            Op::Reduce { .. } => "reduce",
            Op::ArgMax { .. } => "argmax",
            Op::Reshape => "reshape",
            Op::Permute(_) => "permute",
            Op::Expand => "expand",
            Op::CrossEntropyRows => "cross_entropy",
            Op::CrossEntropyRowsGrad => "cross_entropy_grad",
            Op::Update(_) => "optimizer_update",
            Op::Increment => "increment",
            Op::Dropout { .. } => "dropout",
            Op::OneHot { .. } => "one_hot",
        }
    }

    /// Number of leading inputs written in place (optimizer ops only).
    pub fn in_place_from(&self) -> Option<usize> {
        match self {
            Op::Update(_) => Some(3),
            Op::Increment => Some(0),
            _ => None,
        }
    }

    /// Gradients of each input, given the node `y` (this op applied to `inputs`) and
    /// the gradient `g` flowing into it. Broadcast inputs get the gradient summed back
    /// to their own shape.
    pub fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        match self {
            Op::Leaf | Op::Fill(_) | Op::ArgMax { .. } | Op::Update(_) | Op::Increment | Op::OneHot { .. } => {
                vec![None; inputs.len()]
            }
            Op::Unary(u) => vec![u.grad(&inputs[0], y, g)],
            Op::Binary(b) => {
                let [ga, gb] = b.grad(&inputs[0], &inputs[1], y, g);
                vec![
                    ga.map(|t| t.sum_to_shape(inputs[0].shape())),
                    gb.map(|t| t.sum_to_shape(inputs[1].shape())),
                ]
            }
            Op::MatMul { ta, tb, bias, act } => {
                let gp = match act {
                    Act::None => g.clone(),
                    Act::Relu => g * &y.step(),
                    Act::Sigmoid => g * &(y * &y.neg().add_scalar(1.0)),
                    Act::Tanh => g * &y.square().neg().add_scalar(1.0),
                };
                let (a, b) = (&inputs[0], &inputs[1]);
                // With C = op(A)·op(B): dop(A) = gp·op(B)ᵀ and dop(B) = op(A)ᵀ·gp,
                // transposed back when the operand was stored transposed.
                let da = match (ta, tb) {
                    (false, false) => gp.matmul_t(b, false, true),
                    (false, true) => gp.matmul_t(b, false, false),
                    (true, false) => b.matmul_t(&gp, false, true),
                    (true, true) => b.matmul_t(&gp, true, true),
                };
                let db = match (ta, tb) {
                    (false, false) => a.matmul_t(&gp, true, false),
                    (false, true) => gp.matmul_t(a, true, false),
                    (true, false) => a.matmul_t(&gp, false, false),
                    (true, true) => gp.matmul_t(a, true, true),
                };
                let mut out = vec![Some(da), Some(db)];
                if *bias {
                    out.push(Some(gp.sum_axis(0, false)));
                }
                out
            }
            Op::Reduce { kind, axis } => {
                let x = &inputs[0];
                let g_full = g.unsqueeze(*axis).expand(x.shape());
                match kind {
                    ReduceKind::Sum => vec![Some(g_full)],
                    ReduceKind::Max => {
                        let mask = x.eq_mask(&y.unsqueeze(*axis).expand(x.shape()));
                        vec![Some(&g_full * &mask)]
                    }
                }
            }
            Op::Reshape => vec![Some(g.reshape(inputs[0].shape()))],
            Op::Permute(perm) => {
                let mut inverse = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inverse[p] = i;
                }
                vec![Some(g.permute(&inverse))]
            }
            Op::Expand => vec![Some(g.sum_to_shape(inputs[0].shape()))],
            Op::CrossEntropyRows => {
                vec![Some(Tensor::cross_entropy_rows_grad(&inputs[0], &inputs[1], g)), None]
            }
            Op::CrossEntropyRowsGrad => vec![None, None, None],
            // The same key gives the same mask: dx = g · keep / (1 − p).
            Op::Dropout { p } => vec![Some(g.dropout_keyed(*p, &inputs[1])), None],
        }
    }
}
