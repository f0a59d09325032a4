//! The op table. Every primitive op of the graph belongs to one **kernel family**: a
//! Rust file here beside a WGSL file in `shaders/` with the same name. The Rust file
//! holds, side by side, the op's builder on [`Tensor`] with its shape rule, its
//! gradient rule (written as other graph ops, so the backward pass runs on the same
//! backend in the same plan), its lowering to kernel launches, the CPU twin of each
//! kernel and the kernel's WGSL bindings and named uniform layout.
//!
//! The backends know nothing about any op: they run kernels (the crate-private
//! `Kernel` trait), which carry their CPU function and their WGSL launch. [`Op`] is
//! the one central enum; its only match is `Op::rule`, one delegating line per op.
//!
//! - A new elementwise map is one file, `src/ops/elementwise.rs`: a variant of
//!   [`UnaryOp`] (or [`BinaryOp`]), its arms in the CPU, WGSL and gradient matches
//!   beside it, and its one-line `Tensor` method there.
//! - A new kernel family is two files, `src/ops/<family>.rs` and
//!   `shaders/<family>.wgsl`, plus one variant of [`Op`] and its line in `Op::rule`.
//!   (A family whose builders outgrow its file keeps them in a submodule beside it:
//!   `matmul/builders.rs`, `torch.matmul`'s shape rules.)

pub(crate) mod attention;
pub(crate) mod cast;
pub(crate) mod conv;
pub(crate) mod copy;
pub(crate) mod dropout;
pub(crate) mod elementwise;
pub(crate) mod fused;
pub(crate) mod gather;
pub(crate) mod gru;
pub(crate) mod lstm;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod pool;
pub(crate) mod quant;
pub(crate) mod reduce;
pub(crate) mod softmax_xent;
pub(crate) mod update;

use std::sync::Arc;

pub use cast::Cast;
pub use conv::{Conv, Conv2dArgs, ConvArgs};
pub(crate) use copy::{plain_copy, CAT_INPUTS};
pub use copy::{Cat, Pad, Permute, Slice, Unbind};

pub use dropout::Dropout;
pub(crate) use elementwise::zero_fill;
pub use elementwise::{BinaryOp, Fill, OneHot, UnaryOp};
pub use gather::{IndexSelect, ScatterAddRows};
pub use gru::{GruCell, GruCellGrad};
pub use lstm::{LstmCell, LstmCellGrad};
pub use matmul::MatMul;
pub use norm::Norm;
pub use pool::Pool;
pub use quant::Quant;
pub use reduce::{ArgMax, MaxWithIndices, Reduce};
pub use softmax_xent::{CrossEntropyMean, CrossEntropyMeanGrad, CrossEntropyRows, CrossEntropyRowsGrad};
pub use update::{UpdateKind, UpdateMany};

pub(crate) use crate::backend::kernel::Kernel;

use crate::{Result, Tensor};

/// A primitive op: one node of the graph. Each variant's payload is its family's
/// parameters; shapes are checked when the op is built (the builders on [`Tensor`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Data or parameter: its storage is always set.
    Leaf,
    /// A constant generated on the device (no upload).
    Fill(Fill),
    /// A one-input elementwise map.
    Unary(UnaryOp),
    /// A two-input elementwise map with broadcasting.
    Binary(BinaryOp),
    /// `act(op(A)·op(B) + bias)`: GEMM with an optional elementwise epilogue.
    MatMul(MatMul),
    /// Sum or max along one axis, which is removed.
    Reduce(Reduce),
    /// Index of the first maximum along one axis (u32 labels out).
    ArgMax(ArgMax),
    /// Maxima along one axis and their indices: two outputs from one kernel.
    MaxWithIndices(MaxWithIndices),
    /// Same data, new shape (an alias of the input's buffer, no kernel).
    Reshape,
    /// The input's value with no gradient flowing back (an alias, no kernel).
    Detach,
    /// Axis permutation (strided copy).
    Permute(Permute),
    /// Broadcast to the node's shape (strided copy with zero strides).
    Expand,
    /// A range along one axis (strided copy).
    Slice(Slice),
    /// The input placed in a zero tensor along one axis (the gradient of a slice).
    Pad(Pad),
    /// Inputs joined along one axis.
    Cat(Cat),
    /// Every entry along one axis as its own output.
    Unbind(Unbind),
    /// Rows of a table picked by u32 indices (the forward of an embedding).
    IndexSelect(IndexSelect),
    /// Rows added into a zero table at u32 indices, in a fixed order (deterministic).
    ScatterAddRows(ScatterAddRows),
    /// Per-row `-log_softmax(logits)[label]`: inputs logits `[B, C]`, labels `[B]`.
    CrossEntropyRows(CrossEntropyRows),
    /// Gradient of `CrossEntropyRows`: `(softmax(logits) - onehot) * g[row]`.
    CrossEntropyRowsGrad(CrossEntropyRowsGrad),
    /// The batch mean of `CrossEntropyRows`, a scalar, from one kernel.
    CrossEntropyMean(CrossEntropyMean),
    /// Gradient of `CrossEntropyMean`: `(softmax(logits) - onehot) * g / B`.
    CrossEntropyMeanGrad(CrossEntropyMeanGrad),
    /// In-place optimizer updates of several parameters in one launch (multi-tensor
    /// apply); inputs: gradient 0, coefficients, gradients 1…, then each parameter
    /// followed by its state buffers.
    UpdateMany(UpdateMany),
    /// Inverted dropout with a counter-based mask keyed by the key input.
    Dropout(Dropout),
    /// u32 labels `[n]` to f32 one-hot rows `[n, classes]`.
    OneHot(OneHot),
    /// One fused LSTM step: outputs h and c.
    LstmCell(LstmCell),
    /// Its backward: outputs the gates' and the previous cell state's gradients.
    LstmCellGrad(LstmCellGrad),
    /// One fused GRU step.
    GruCell(GruCell),
    /// Its backward: outputs the gradients of both projections and of h_prev.
    GruCellGrad(GruCellGrad),
    /// Layer, group or batch normalization, its fused backward, or batch norm's
    /// in-place running-statistics update.
    Norm(Norm),
    /// Max or average pooling over the last two axes, or its gradient: one pass.
    Pool(Pool),
    /// A convolution's forward, input gradient or weight gradient (an implicit GEMM).
    Conv(Conv),
    /// Fused scaled-dot-product attention or its gradient.
    Attention(attention::Attention),
    /// Int8 quantization of rows or the int8 GEMM (inference only).
    Quant(Quant),
    /// f32 ↔ f16 (packed two to a word).
    Cast(Cast),
    /// Output `index` (≥ 1) of the op with several outputs that is its input (the
    /// first output is that node itself); its kernel wrote it, so this is an alias.
    Output(Output),
}

impl Op {
    /// The op's rules: everything the graph, autograd and plans ask of an op.
    pub(crate) fn rule(&self) -> &dyn Rule {
        match self {
            Op::Leaf => &Leaf,
            Op::Fill(f) => f,
            Op::Unary(u) => u,
            Op::Binary(b) => b,
            Op::MatMul(m) => m,
            Op::Reduce(r) => r,
            Op::ArgMax(a) => a,
            Op::MaxWithIndices(m) => m,
            Op::Reshape => &copy::Reshape,
            Op::Detach => &copy::Detach,
            Op::Permute(p) => p,
            Op::Expand => &copy::Expand,
            Op::Slice(s) => s,
            Op::Pad(p) => p,
            Op::Cat(c) => c,
            Op::Unbind(u) => u,
            Op::IndexSelect(i) => i,
            Op::ScatterAddRows(s) => s,
            Op::CrossEntropyRows(x) => x,
            Op::CrossEntropyRowsGrad(x) => x,
            Op::CrossEntropyMean(x) => x,
            Op::CrossEntropyMeanGrad(x) => x,
            Op::UpdateMany(u) => u,
            Op::Dropout(d) => d,
            Op::OneHot(o) => o,
            Op::LstmCell(l) => l,
            Op::LstmCellGrad(l) => l,
            Op::GruCell(g) => g,
            Op::GruCellGrad(g) => g,
            Op::Norm(n) => n,
            Op::Pool(p) => p,
            Op::Conv(c) => c,
            Op::Attention(a) => a,
            Op::Quant(q) => q,
            Op::Cast(c) => c,
            Op::Output(o) => o,
        }
    }

    /// Short name used in errors, debug output and plan keys.
    pub fn name(&self) -> &'static str {
        self.rule().name()
    }

    /// Number of leading inputs that are read; the rest are written in place
    /// (optimizer ops only).
    pub fn in_place_from(&self) -> Option<usize> {
        self.rule().in_place_from()
    }

    /// Gradients of each input, given the node `y` (this op applied to `inputs`) and
    /// the gradient `g` flowing into it.
    pub(crate) fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        self.rule().backward(inputs, y, g)
    }
}

/// What the graph, autograd and plans need of an op; each family implements it
/// beside its kernels.
pub(crate) trait Rule {
    /// Short name used in errors, debug output and plan keys.
    fn name(&self) -> &'static str;

    /// The launches computing the op for inputs of these shapes into `out`.
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Lowering;

    /// Where every output of the op is a contiguous range of input 0's words (a
    /// narrow along the leading axes, the entries of an unbind along them): each
    /// output's first word in input 0 (output 0 first), so that the plan binds input
    /// 0's buffer there instead of copying (`FastPath::Views`). `None`: the op
    /// copies, as [`Rule::lower`] says.
    fn views(&self, _inputs: &[&[usize]], _out: &[usize]) -> Option<Vec<usize>> {
        None
    }

    /// Gradients of each input (`None`: no gradient flows there), given the node `y`
    /// and the gradient `g` flowing into it, written as graph ops.
    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>>;

    /// Checks that can only be made once the inputs' values exist (label ranges).
    fn validate(&self, _inputs: &[Tensor]) -> Result<()> {
        Ok(())
    }

    /// Number of leading inputs that are read; the rest are written in place.
    fn in_place_from(&self) -> Option<usize> {
        None
    }

    /// For ops with several outputs: gradients of each input given each output
    /// (`None` where nobody holds it) and the gradient flowing into each (`None`
    /// where it does not reach the loss). Single-output ops use [`Rule::backward`].
    fn backward_outputs(
        &self,
        inputs: &[Tensor],
        outputs: &[Option<Tensor>],
        grads: &[Option<Tensor>],
    ) -> Vec<Option<Tensor>> {
        match (&outputs[0], &grads[0]) {
            (Some(y), Some(g)) => self.backward(inputs, y, g),
            _ => vec![None; inputs.len()],
        }
    }
}

/// Output `index` (≥ 1) of a multi-output node, which is its only input. Autograd
/// hands its gradient to that node's `Rule::backward_outputs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output {
    /// Which output of the input node.
    pub index: usize,
}

impl Rule for Output {
    fn name(&self) -> &'static str {
        "output"
    }
    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Lowering {
        Lowering::OutputOf(self.index)
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        unreachable!("autograd routes an output's gradient to the node that made it")
    }
}

/// Data or parameter: no kernel, no gradient rule (autograd collects it).
struct Leaf;

impl Rule for Leaf {
    fn name(&self) -> &'static str {
        "leaf"
    }
    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Lowering {
        Lowering::Alias
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        Vec::new()
    }
}

/// A buffer a launch binds, relative to its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bind {
    /// The node's input `i`.
    Input(usize),
    /// Scratch buffer `i` of the node (see [`Lowering::Launches`]).
    Temp(usize),
    /// The node's output `k`: 0 is the node itself, the others its `Op::Output` nodes.
    Output(usize),
}

/// One kernel launch of a node: bindings are the kernel's reads, then its writes.
#[derive(Clone, Debug)]
pub(crate) struct Launch {
    pub kernel: Arc<dyn Kernel>,
    pub bindings: Vec<Bind>,
}

/// How a node is computed.
pub(crate) enum Lowering {
    /// No kernel: the node's value is input 0's buffer.
    Alias,
    /// No kernel: the node's value is output `k` of input 0 (`Op::Output`).
    OutputOf(usize),
    /// No kernel: output `k` of the node is input 0's buffer from word `offsets[k]`
    /// on (the planner's choice where [`Rule::views`] allows it).
    Views(Vec<usize>),
    /// No kernel: the node is a join whose parts were computed into its buffer (the
    /// planner's choice, `graph/joins.rs`).
    Joined,
    /// Launches in order; `temps` are scratch buffers (in words) private to the node,
    /// `outputs` the sizes (in words) of its outputs after the first.
    Launches {
        temps: Vec<usize>,
        outputs: Vec<usize>,
        launches: Vec<Launch>,
    },
}

impl Lowering {
    /// One kernel reading every input in order and writing the output.
    pub(crate) fn kernel(kernel: impl Kernel + 'static, inputs: usize) -> Lowering {
        let mut bindings: Vec<Bind> = (0..inputs).map(Bind::Input).collect();
        bindings.push(Bind::Output(0));
        Lowering::launches(vec![Launch {
            kernel: Arc::new(kernel),
            bindings,
        }])
    }

    /// Launches without scratch buffers.
    pub(crate) fn launches(launches: Vec<Launch>) -> Lowering {
        Lowering::Launches {
            temps: Vec::new(),
            outputs: Vec::new(),
            launches,
        }
    }

    /// One kernel binding the inputs only: it writes those after `reads` in place.
    pub(crate) fn in_place(kernel: impl Kernel + 'static, inputs: usize) -> Lowering {
        Lowering::launches(vec![Launch {
            kernel: Arc::new(kernel),
            bindings: (0..inputs).map(Bind::Input).collect(),
        }])
    }
}

/// Row-major strides of a shape.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        strides[i] = s;
        s *= shape[i];
    }
    strides
}

/// `[outer, len, inner]` view of a shape around `axis`.
pub(crate) fn split_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let numel = |s: &[usize]| s.iter().product::<usize>();
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}

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

/// Strides of `shape` read as if broadcast to `out` (0 along broadcast axes).
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = contiguous_strides(shape);
    let lead = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < lead || shape[i - lead] == 1 {
                0
            } else {
                own[i - lead]
            }
        })
        .collect()
}

/// Drops axes of length 1 and merges axes that are contiguous in every operand, so
/// kernels see the smallest rank (and `MAX_RANK` is rarely a limit).
pub(crate) fn simplify(shape: &[usize], strides: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut out_shape: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for axis in 0..shape.len() {
        if shape[axis] == 1 {
            continue;
        }
        let mergeable = !out_shape.is_empty()
            && strides.iter().enumerate().all(|(k, s)| {
                let prev = *out_strides[k].last().unwrap();
                prev == s[axis] * shape[axis]
            });
        if mergeable {
            let last = out_shape.len() - 1;
            out_shape[last] *= shape[axis];
            for (k, s) in strides.iter().enumerate() {
                *out_strides[k].last_mut().unwrap() = s[axis];
            }
        } else {
            out_shape.push(shape[axis]);
            for (k, s) in strides.iter().enumerate() {
                out_strides[k].push(s[axis]);
            }
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        for s in &mut out_strides {
            s.push(0);
        }
    }
    (out_shape, out_strides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simplify_merges_contiguous_axes_and_keeps_broadcast_ones() {
        let out = [2, 3, 4];
        let a = contiguous_strides(&out);
        let b = broadcast_strides(&[4], &out);
        let (shape, s) = simplify(&out, &[&a, &b]);
        assert_eq!(shape, vec![6, 4]);
        assert_eq!(s[0], vec![4, 1]);
        assert_eq!(s[1], vec![0, 1]);
    }
}
