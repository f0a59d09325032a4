//! Reduce family (`shaders/reduce.wgsl`): sum and max along one axis in a fixed order
//! (the CPU twin follows the GPU's order, so both agree bit for bit run to run), and
//! argmax.

use super::{split_axis, Bind, Launch, Lowering, Op, Rule};
use crate::backend::cpu::{helper_thread, vmath};
use crate::backend::kernel::{Grid, Kernel, Uniforms, Wgsl};
use crate::fast_path::{self, FastPath};
use crate::tensor::{Axis, DType};
use crate::Tensor;
use std::sync::Arc;

const SHADER: &str = include_str!("../../shaders/reduce.wgsl");

/// What a reduction combines with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// `a + b`
    Sum,
    /// `max(a, b)`
    Max,
}

impl ReduceKind {
    fn identity(self) -> f32 {
        match self {
            ReduceKind::Sum => 0.0,
            ReduceKind::Max => f32::NEG_INFINITY,
        }
    }

    #[inline]
    fn combine(self, a: f32, b: f32) -> f32 {
        match self {
            ReduceKind::Sum => a + b,
            ReduceKind::Max => a.max(b),
        }
    }
}

/// Reduce along `axis`, which is removed from the shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reduce {
    /// Sum or max.
    pub kind: ReduceKind,
    /// The axis reduced.
    pub axis: usize,
}

/// Longest row one workgroup reduces alone; longer rows are reduced in chunks
/// first (more parallelism, and no invocation loops for too long).
const ROW_CHUNK: usize = 4096;

impl Rule for Reduce {
    fn name(&self) -> &'static str {
        "reduce"
    }

    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let (outer, len, inner) = split_axis(inputs[0], self.axis);
        let kind = self.kind;
        if inner > 1 {
            return Lowering::kernel(
                ReduceCols {
                    kind,
                    outer,
                    len,
                    inner,
                },
                1,
            );
        }
        if len <= 4 * ROW_CHUNK {
            let rows = ReduceRows {
                kind,
                outer,
                len,
                chunk: len,
            };
            return Lowering::kernel(rows, 1);
        }
        // Chunked partial results into a scratch buffer, then one pass over them.
        let chunks = len.div_ceil(ROW_CHUNK);
        let first = ReduceRows {
            kind,
            outer,
            len,
            chunk: ROW_CHUNK,
        };
        let second = ReduceRows {
            kind,
            outer,
            len: chunks,
            chunk: chunks,
        };
        Lowering::Launches {
            temps: vec![outer * chunks],
            outputs: Vec::new(),
            launches: vec![
                Launch {
                    kernel: Arc::new(first),
                    bindings: vec![Bind::Input(0), Bind::Temp(0)],
                },
                Launch {
                    kernel: Arc::new(second),
                    bindings: vec![Bind::Temp(0), Bind::Output(0)],
                },
            ],
        }
    }

    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let x = &inputs[0];
        let g_full = g.unsqueeze(self.axis).expand(x.shape());
        match self.kind {
            ReduceKind::Sum => vec![Some(g_full)],
            ReduceKind::Max => {
                let mask = x.eq_mask(&y.unsqueeze(self.axis).expand(x.shape()));
                vec![Some(&g_full * &mask)]
            }
        }
    }
}

/// Index of the first maximum along `axis` (u32 labels out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgMax {
    /// The axis searched, removed from the shape.
    pub axis: usize,
}

impl Rule for ArgMax {
    fn name(&self) -> &'static str {
        "argmax"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let (outer, len, inner) = split_axis(inputs[0], self.axis);
        let kernel = ArgMaxKernel {
            outer,
            len,
            inner,
            values: false,
        };
        Lowering::kernel(kernel, 1)
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        vec![None]
    }
}

/// The maximum along `axis` and the index of its first occurrence, from one kernel:
/// output 0 is the values (f32), output 1 the indices (u32), as `torch.max(x, dim)`.
/// The gradient goes to the picked index only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxWithIndices {
    /// The axis searched, removed from the shape.
    pub axis: usize,
}

impl Rule for MaxWithIndices {
    fn name(&self) -> &'static str {
        "max_with_indices"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let (outer, len, inner) = split_axis(inputs[0], self.axis);
        let kernel = ArgMaxKernel {
            outer,
            len,
            inner,
            values: true,
        };
        Lowering::Launches {
            temps: Vec::new(),
            outputs: vec![outer * inner],
            launches: vec![Launch {
                kernel: Arc::new(kernel),
                bindings: vec![Bind::Input(0), Bind::Output(0), Bind::Output(1)],
            }],
        }
    }
    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        self.backward_outputs(inputs, &[Some(y.clone()), None], &[Some(g.clone()), None])
    }
    fn backward_outputs(
        &self,
        inputs: &[Tensor],
        outputs: &[Option<Tensor>],
        grads: &[Option<Tensor>],
    ) -> Vec<Option<Tensor>> {
        let (x, axis) = (&inputs[0], self.axis);
        let Some(g) = &grads[0] else { return vec![None] };
        // The indices, recomputed by argmax (same first maximum) if nobody kept them.
        let indices = outputs[1].clone().unwrap_or_else(|| x.argmax(axis));
        // One-hot rows along the axis moved last, then moved back.
        let rank = x.shape().len();
        let mut perm: Vec<usize> = (0..rank).filter(|&d| d != axis).collect();
        perm.push(axis);
        let mut moved: Vec<usize> = perm.iter().map(|&d| x.shape()[d]).collect();
        let len = moved.pop().unwrap();
        let rows = moved.iter().product();
        moved.push(len);
        let mut inverse = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        let mask = indices.reshape(&[rows]).one_hot(len).reshape(&moved).permute(&inverse);
        vec![Some(&g.unsqueeze(axis).expand(x.shape()) * &mask)]
    }
}

/// reads [x] viewed as [outer, len] (inner = 1), writes [outer, ⌈len / chunk⌉]: one
/// workgroup per chunk of a row, 256 strided partial results then a tree.
#[derive(Debug)]
struct ReduceRows {
    kind: ReduceKind,
    outer: usize,
    len: usize,
    chunk: usize,
}

impl Kernel for ReduceRows {
    fn reads(&self) -> usize {
        1
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (kind, len, chunk) = (self.kind, self.len, self.chunk.max(1));
        let chunks = len.div_ceil(chunk);
        for (w, result) in out[0][..self.outer * chunks].iter_mut().enumerate() {
            let (o, c) = (w / chunks, w % chunks);
            let row = &x[0][o * len + c * chunk..o * len + ((c + 1) * chunk).min(len)];
            let mut partial = [kind.identity(); 256];
            for (j, &v) in row.iter().enumerate() {
                partial[j % 256] = kind.combine(partial[j % 256], v);
            }
            let mut s = 128;
            while s > 0 {
                for i in 0..s {
                    partial[i] = kind.combine(partial[i], partial[i + s]);
                }
                s /= 2;
            }
            *result = partial[0];
        }
    }

    fn wgsl(&self) -> Wgsl {
        let chunks = self.len.div_ceil(self.chunk.max(1));
        let u = Uniforms::new()
            .u32("outer", self.outer)
            .u32("len", self.len)
            .u32("chunk", self.chunk)
            .u32("chunks", chunks);
        Wgsl::new(SHADER, "reduce_rows", u, Grid::Groups(self.outer * chunks))
            .defs(format!("const IS_MAX: bool = {};\n", self.kind == ReduceKind::Max))
    }

    /// The same partial results per invocation, combined by `subgroupAdd` /
    /// `subgroupMax` within each subgroup and then, in subgroup order, by one
    /// invocation: no tree of barriers through workgroup memory.
    fn wgsl_subgroups(&self) -> Option<Wgsl> {
        let mut w = self.wgsl();
        w.entry = "reduce_rows_subgroups";
        Some(w)
    }
}

/// reads [x] viewed as [outer, len, inner], writes [outer, inner]: one invocation per
/// output, looping over `len`.
#[derive(Debug)]
struct ReduceCols {
    kind: ReduceKind,
    outer: usize,
    len: usize,
    inner: usize,
}

vmath::simd_fn! {
    /// Columns `c0..c0 + acc.len()` of `x`'s rows of `inner` words reduced into
    /// `acc` (the identity first), row after row: [`ReduceCols`]'s CPU pass over one
    /// outer block, or over part of its columns.
    fn reduce_cols_block(kind: ReduceKind, x: &[f32], inner: usize, c0: usize, acc: &mut [f32]) {
        acc.fill(kind.identity());
        let width = acc.len();
        for row in x.chunks_exact(inner) {
            let row = &row[c0..c0 + width];
            match kind {
                ReduceKind::Sum => acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v),
                ReduceKind::Max => acc.iter_mut().zip(row).for_each(|(a, &v)| *a = a.max(v)),
            }
        }
    }
}

/// Words read from which a column reduction of one outer block (a bias gradient's
/// column sum) is split over two threads, half of the columns each
/// ([`FastPath::ReduceSplit`]): an LSTM's bias gradient at h512 sums 1600 rows of
/// 2048 gates, 1.1 ms on one core.
const SPLIT_WORDS: usize = 1 << 16;

impl Kernel for ReduceCols {
    fn reads(&self) -> usize {
        1
    }

    /// Row after row added into (or maxed with) the output row, built for AVX2
    /// where the CPU has it; one outer block of at least [`SPLIT_WORDS`] and 32
    /// columns in two column halves, the right one on the helper thread (each
    /// column reduced in the same order: the same bits).
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (outer, len, inner) = (self.outer, self.len, self.inner);
        let out = &mut out[0][..outer * inner];
        if inner == 0 {
            return;
        }
        let block = |o: usize| &x[0][o * len * inner..(o + 1) * len * inner];
        if outer == 1 && inner >= 32 && fast_path::choose(FastPath::ReduceSplit, len * inner >= SPLIT_WORDS) {
            let (left, right) = out.split_at_mut((inner / 2).next_multiple_of(16));
            let cut = left.len();
            return helper_thread::join(
                || reduce_cols_block(self.kind, block(0), inner, cut, right),
                || reduce_cols_block(self.kind, block(0), inner, 0, left),
            );
        }
        for (o, acc) in out.chunks_exact_mut(inner).enumerate() {
            reduce_cols_block(self.kind, block(o), inner, 0, acc);
        }
    }

    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new()
            .u32("outer", self.outer)
            .u32("len", self.len)
            .u32("inner", self.inner);
        Wgsl::new(SHADER, "reduce_cols", u, Grid::Threads(self.outer * self.inner))
            .defs(format!("const IS_MAX: bool = {};\n", self.kind == ReduceKind::Max))
    }
}

/// reads [x] viewed as [outer, len, inner], writes u32 indices [outer, inner], or
/// with `values` the maxima [outer, inner] and then the indices.
#[derive(Debug)]
struct ArgMaxKernel {
    outer: usize,
    len: usize,
    inner: usize,
    values: bool,
}

impl Kernel for ArgMaxKernel {
    fn reads(&self) -> usize {
        1
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (outer, len, inner) = (self.outer, self.len, self.inner);
        for o in 0..outer {
            for i in 0..inner {
                let (mut best, mut at) = (f32::NEG_INFINITY, 0u32);
                for l in 0..len {
                    let v = x[0][(o * len + l) * inner + i];
                    if v > best || (l == 0) {
                        best = v;
                        at = l as u32;
                    }
                }
                if self.values {
                    out[0][o * inner + i] = best;
                    out[1][o * inner + i] = f32::from_bits(at);
                } else {
                    out[0][o * inner + i] = f32::from_bits(at);
                }
            }
        }
    }

    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new()
            .u32("outer", self.outer)
            .u32("len", self.len)
            .u32("inner", self.inner);
        let entry = if self.values { "max_with_indices" } else { "argmax" };
        Wgsl::new(SHADER, entry, u, Grid::Threads(self.outer * self.inner)).defs("const IS_MAX: bool = true;\n")
    }
}

impl Tensor {
    #[track_caller]
    fn reduce(&self, op: &str, kind: ReduceKind, axis: impl Axis, keepdim: bool) -> Tensor {
        self.check_f32(op);
        let axis = self.axis(op, axis);
        let mut shape = self.shape().to_vec();
        shape.remove(axis);
        let out = Tensor::from_node(Op::Reduce(Reduce { kind, axis }), vec![self.clone()], shape, DType::F32);
        if keepdim {
            out.unsqueeze(axis)
        } else {
            out
        }
    }

    /// Sum of all elements (shape `[]`).
    #[track_caller]
    pub fn sum(&self) -> Tensor {
        self.reshape(&[self.numel()]).reduce("sum", ReduceKind::Sum, 0, false)
    }
    /// Mean of all elements (shape `[]`).
    #[track_caller]
    pub fn mean(&self) -> Tensor {
        self.sum().mul_scalar(1.0 / self.numel().max(1) as f32)
    }
    /// Sum along `axis` (`-1`: the last), removed unless `keepdim`.
    #[track_caller]
    pub fn sum_axis(&self, axis: impl Axis, keepdim: bool) -> Tensor {
        self.reduce("sum_axis", ReduceKind::Sum, axis, keepdim)
    }
    /// Mean along `axis` (`-1`: the last), removed unless `keepdim`.
    #[track_caller]
    pub fn mean_axis(&self, axis: impl Axis, keepdim: bool) -> Tensor {
        let axis = self.axis("mean_axis", axis);
        let n = self.shape()[axis].max(1);
        self.reduce("mean_axis", ReduceKind::Sum, axis, keepdim)
            .mul_scalar(1.0 / n as f32)
    }
    /// Maximum along `axis` (`-1`: the last), removed unless `keepdim` (the gradient
    /// goes to every maximal element).
    #[track_caller]
    pub fn max_axis(&self, axis: impl Axis, keepdim: bool) -> Tensor {
        self.reduce("max_axis", ReduceKind::Max, axis, keepdim)
    }
    /// Index of the first maximum along `axis` (`-1`: the last), as a label tensor.
    #[track_caller]
    pub fn argmax(&self, axis: impl Axis) -> Tensor {
        self.check_f32("argmax");
        let axis = self.axis("argmax", axis);
        let mut shape = self.shape().to_vec();
        shape.remove(axis);
        Tensor::from_node(Op::ArgMax(ArgMax { axis }), vec![self.clone()], shape, DType::U32)
    }

    /// The maximum along `axis` and the index of its first occurrence, computed by
    /// one kernel, as `torch.max(x, dim)`: `(values, indices)` with `axis` removed,
    /// indices a label tensor. The gradient of the values goes to that index only.
    #[track_caller]
    pub fn max_with_indices(&self, axis: impl Axis) -> (Tensor, Tensor) {
        self.check_f32("max_with_indices");
        let axis = self.axis("max_with_indices", axis);
        let mut shape = self.shape().to_vec();
        shape.remove(axis);
        let op = Op::MaxWithIndices(MaxWithIndices { axis });
        let outputs = vec![(shape.clone(), DType::F32), (shape, DType::U32)];
        let mut both = Tensor::from_node_outputs(op, vec![self.clone()], outputs).into_iter();
        (both.next().unwrap(), both.next().unwrap())
    }

    /// Softmax along `axis` (`-1`: the last; max-subtracted, stable).
    #[track_caller]
    pub fn softmax(&self, axis: impl Axis) -> Tensor {
        self.log_softmax(self.axis("softmax", axis)).exp()
    }

    /// Log-softmax along `axis` (`-1`: the last; max-subtracted, stable).
    #[track_caller]
    pub fn log_softmax(&self, axis: impl Axis) -> Tensor {
        let axis = self.axis("log_softmax", axis);
        let shifted = self - &self.max_axis(axis, true).detach();
        &shifted - &shifted.exp().sum_axis(axis, true).log()
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
}
