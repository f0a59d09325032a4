//! Copy family (`shaders/copy.wgsl`): ops that move words without reading them as
//! numbers, so they serve f32 data and u32 labels alike — reshape and detach (aliases,
//! no kernel), permute and expand (strided copies), narrow/select (a strided copy, or
//! an alias when the range is a prefix of the buffer), pad (a slice's gradient), and
//! cat/stack (one region copy per input).

use std::sync::Arc;

use super::{broadcast_shapes, broadcast_strides, contiguous_strides, simplify, split_axis};
use super::{Bind, Launch, Lowering, Op, Rule};
use crate::backend::kernel::{Grid, Kernel, Tune, Uniforms, Wgsl};
use crate::tensor::Axis;
use crate::Tensor;

const SHADER: &str = include_str!("../../shaders/copy.wgsl");

/// Same data, new shape: an alias of the input's buffer.
pub(crate) struct Reshape;

impl Rule for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Lowering {
        Lowering::Alias
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(g.reshape(inputs[0].shape()))]
    }
}

/// The input's value without its gradient: an alias of the input's buffer.
pub(crate) struct Detach;

impl Rule for Detach {
    fn name(&self) -> &'static str {
        "detach"
    }
    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Lowering {
        Lowering::Alias
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        vec![None]
    }
}

/// Axis permutation: output axis `i` is input axis `self.0[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permute(pub Vec<usize>);

impl Rule for Permute {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Lowering {
        let own = contiguous_strides(inputs[0]);
        let in_strides: Vec<usize> = self.0.iter().map(|&p| own[p]).collect();
        Lowering::kernel(Strided::new(out, &in_strides, 0), 1)
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let mut inverse = vec![0; self.0.len()];
        for (i, &p) in self.0.iter().enumerate() {
            inverse[p] = i;
        }
        vec![Some(g.permute(&inverse))]
    }
}

/// Broadcast to the node's shape (zero strides along broadcast axes).
pub(crate) struct Expand;

impl Rule for Expand {
    fn name(&self) -> &'static str {
        "expand"
    }
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Lowering {
        Lowering::kernel(Strided::new(out, &broadcast_strides(inputs[0], out), 0), 1)
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(g.sum_to_shape(inputs[0].shape()))]
    }
}

/// `len` entries from `start` along `axis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    /// The axis sliced.
    pub axis: usize,
    /// First index kept.
    pub start: usize,
    /// Entries kept.
    pub len: usize,
}

impl Rule for Slice {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Lowering {
        let (outer, _, inner) = split_axis(inputs[0], self.axis);
        if outer == 1 && self.start == 0 {
            // A prefix of the input's buffer: share it.
            return Lowering::Alias;
        }
        let strides = contiguous_strides(inputs[0]);
        Lowering::kernel(Strided::new(out, &strides, self.start * inner), 1)
    }
    fn views(&self, inputs: &[&[usize]], _: &[usize]) -> Option<Vec<usize>> {
        let (outer, _, inner) = split_axis(inputs[0], self.axis);
        (outer == 1).then(|| vec![self.start * inner])
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let full = inputs[0].shape()[self.axis];
        vec![Some(g.pad(self.axis, self.start, full - self.start - self.len))]
    }
}

/// The input placed between `before` and `after` zeros along `axis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pad {
    /// The axis padded.
    pub axis: usize,
    /// Zeros before the input.
    pub before: usize,
    /// Zeros after the input.
    pub after: usize,
}

impl Rule for Pad {
    fn name(&self) -> &'static str {
        "pad"
    }
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Lowering {
        let (outer, len, inner) = split_axis(inputs[0], self.axis);
        let kernel = PadKernel {
            outer,
            inner,
            len,
            before: self.before,
            out_len: out[self.axis],
        };
        Lowering::kernel(kernel, 1)
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(g.narrow(self.axis, self.before, inputs[0].shape()[self.axis]))]
    }
}

/// Inputs joined along `axis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cat {
    /// The axis joined along.
    pub axis: usize,
}

impl Rule for Cat {
    fn name(&self) -> &'static str {
        "cat"
    }
    /// One launch per group of up to [`CAT_INPUTS`] inputs (WebGPU's default of
    /// eight storage buffers per kernel, the output included).
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Lowering {
        let mut offset = 0;
        let pieces: Vec<Piece> = inputs
            .iter()
            .map(|shape| {
                let (outer, len, inner) = split_axis(shape, self.axis);
                offset += len;
                Piece {
                    outer,
                    len,
                    inner,
                    offset: offset - len,
                }
            })
            .collect();
        let launches = pieces
            .chunks(CAT_INPUTS)
            .enumerate()
            .map(|(c, group)| {
                let mut bindings: Vec<Bind> = (0..group.len()).map(|j| Bind::Input(c * CAT_INPUTS + j)).collect();
                bindings.push(Bind::Output(0));
                let kernel = CatKernel {
                    pieces: group.to_vec(),
                    out_len: out[self.axis],
                };
                Launch {
                    kernel: Arc::new(kernel),
                    bindings,
                }
            })
            .collect();
        Lowering::launches(launches)
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let mut start = 0;
        inputs
            .iter()
            .map(|x| {
                let len = x.shape()[self.axis];
                start += len;
                Some(g.narrow(self.axis, start - len, len))
            })
            .collect()
    }
}

/// Every entry along `axis` as its own tensor (the axis removed), as `torch.unbind`:
/// one node whose outputs are the entries, so a sequence's time steps cost one copy
/// each and their gradients one concatenation (not a padded tensor per step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unbind {
    /// The axis split.
    pub axis: usize,
}

impl Rule for Unbind {
    fn name(&self) -> &'static str {
        "unbind"
    }
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Lowering {
        let shape = inputs[0];
        let strides = contiguous_strides(shape);
        let mut entry_strides = strides.clone();
        entry_strides.remove(self.axis);
        let entries = shape[self.axis];
        let words = out.iter().product::<usize>();
        let launches = (0..entries)
            .map(|k| Launch {
                kernel: Arc::new(Strided::new(out, &entry_strides, k * strides[self.axis])),
                bindings: vec![Bind::Input(0), Bind::Output(k)],
            })
            .collect();
        Lowering::Launches {
            temps: Vec::new(),
            outputs: vec![words; entries - 1],
            launches,
        }
    }
    fn views(&self, inputs: &[&[usize]], _: &[usize]) -> Option<Vec<usize>> {
        let (outer, entries, inner) = split_axis(inputs[0], self.axis);
        (outer == 1).then(|| (0..entries).map(|k| k * inner).collect())
    }
    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let entries = inputs[0].shape()[self.axis];
        let mut outputs = vec![Some(y.clone())];
        outputs.resize(entries, None);
        let mut grads = vec![Some(g.clone())];
        grads.resize(entries, None);
        self.backward_outputs(inputs, &outputs, &grads)
    }
    fn backward_outputs(
        &self,
        inputs: &[Tensor],
        _: &[Option<Tensor>],
        grads: &[Option<Tensor>],
    ) -> Vec<Option<Tensor>> {
        let x = &inputs[0];
        let mut entry = x.shape().to_vec();
        entry.remove(self.axis);
        let zeros = Tensor::zeros(&entry, x.device());
        let parts: Vec<&Tensor> = grads.iter().map(|g| g.as_ref().unwrap_or(&zeros)).collect();
        vec![Some(Tensor::stack(&parts, self.axis))]
    }
}

/// A launch copying `words` words as they are: a part of a join written in place
/// that its own launch does not write (`graph/joins.rs`).
pub(crate) fn plain_copy(words: usize) -> Arc<dyn Kernel> {
    Arc::new(Strided::new(&[words], &[1], 0))
}

/// reads [x], writes [out]: `out[i] = x[offset + Σ idx_d · in_strides_d]`.
#[derive(Debug)]
struct Strided {
    shape: Vec<usize>,
    in_strides: Vec<usize>,
    offset: usize,
}

impl Strided {
    fn new(out: &[usize], in_strides: &[usize], offset: usize) -> Strided {
        let (shape, mut s) = simplify(out, &[in_strides, &contiguous_strides(out)]);
        s.pop();
        Strided {
            shape,
            in_strides: s.pop().unwrap(),
            offset,
        }
    }
}

impl Kernel for Strided {
    fn reads(&self) -> usize {
        1
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (shape, in_strides) = (&self.shape, &self.in_strides);
        let n: usize = shape.iter().product();
        let last = shape.len() - 1;
        let (len, stride) = (shape[last], in_strides[last]);
        let mut base = self.offset;
        let mut idx = vec![0usize; shape.len()];
        let mut o = 0;
        while o < n {
            let dst = &mut out[0][o..o + len];
            if stride == 1 {
                dst.copy_from_slice(&x[0][base..base + len]);
            } else if stride == 0 {
                dst.fill(x[0][base]);
            } else {
                let src = &x[0][base..=base + (len - 1) * stride];
                for (d, s) in dst.iter_mut().zip(src.iter().step_by(stride)) {
                    *d = *s;
                }
            }
            o += len;
            // Odometer over the outer axes.
            for d in (0..last).rev() {
                idx[d] += 1;
                base += in_strides[d];
                if idx[d] < shape[d] {
                    break;
                }
                base -= in_strides[d] * shape[d];
                idx[d] = 0;
            }
        }
    }

    fn wgsl(&self) -> Wgsl {
        let n: usize = self.shape.iter().product();
        let u = Uniforms::new()
            .u32("n", n)
            .u32("rank", self.shape.len())
            .u32("offset", self.offset)
            .dims("shape", &self.shape)
            .dims("in_strides", &self.in_strides);
        Wgsl::new(SHADER, "strided", u, Grid::Threads(n)).words()
    }
}

/// reads [x] as [outer, len, inner], writes [outer, out_len, inner]: x between zeros.
#[derive(Debug)]
struct PadKernel {
    outer: usize,
    inner: usize,
    len: usize,
    before: usize,
    out_len: usize,
}

impl Kernel for PadKernel {
    fn reads(&self) -> usize {
        1
    }
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (inner, len, out_len) = (self.inner, self.len, self.out_len);
        for o in 0..self.outer {
            let dst = &mut out[0][o * out_len * inner..(o + 1) * out_len * inner];
            dst.fill(0.0);
            dst[self.before * inner..(self.before + len) * inner]
                .copy_from_slice(&x[0][o * len * inner..(o + 1) * len * inner]);
        }
    }
    fn wgsl(&self) -> Wgsl {
        let n = self.outer * self.out_len * self.inner;
        let u = Uniforms::new()
            .u32("n", n)
            .u32("inner", self.inner)
            .u32("len", self.len)
            .u32("before", self.before)
            .u32("out_len", self.out_len);
        Wgsl::new(SHADER, "pad", u, Grid::Threads(n)).words()
    }
}

/// Most inputs one cat launch reads.
pub(crate) const CAT_INPUTS: usize = 7;

/// One input of a cat launch, viewed as [outer, len, inner], and where it goes along
/// the output's middle axis.
#[derive(Clone, Copy, Debug)]
struct Piece {
    outer: usize,
    len: usize,
    inner: usize,
    offset: usize,
}

impl Piece {
    fn words(&self) -> usize {
        self.outer * self.len * self.inner
    }
}

/// reads its pieces, writes each one's region of [outer, out_len, inner] from the
/// piece's offset along the middle axis (the rest of the output is left as it is).
#[derive(Debug)]
struct CatKernel {
    pieces: Vec<Piece>,
    out_len: usize,
}

impl CatKernel {
    /// The launch copying the pieces `which` (indices): `cat_at(i)` finds the piece
    /// word i of the launch belongs to (ranges baked in as constants) and copies it.
    fn pass(&self, which: &[usize]) -> Wgsl {
        let total: usize = which.iter().map(|&j| self.pieces[j].words()).sum();
        let mut defs = String::from("fn cat_at(i: u32) {\n");
        let mut start = 0;
        for &j in which {
            let Piece { len, inner, offset, .. } = self.pieces[j];
            let end = start + self.pieces[j].words();
            defs += &format!(
                "    if (i < {end}u) {{ let p = i - {start}u; \
                 out0[((p / {block}u) * {out_len}u + {offset}u + (p / {inner}u) % {len}u) * {inner}u + p % {inner}u] = in{j}[p]; \
                 return; }}\n",
                block = (len * inner).max(1),
                inner = inner.max(1),
                len = len.max(1),
                out_len = self.out_len,
            );
            start = end;
        }
        defs += "}\n";
        // Indices: p < the piece's words; the output index < outer · out_len · inner.
        Wgsl::new(SHADER, "cat", Uniforms::new().u32("n", total), Grid::Threads(total))
            .defs(defs)
            .words()
            .in_bounds()
    }
}

impl Kernel for CatKernel {
    fn reads(&self) -> usize {
        self.pieces.len()
    }
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        for (p, x) in self.pieces.iter().zip(x) {
            let (len, inner) = (p.len, p.inner);
            for o in 0..p.outer {
                let at = (o * self.out_len + p.offset) * inner;
                out[0][at..at + len * inner].copy_from_slice(&x[o * len * inner..(o + 1) * len * inner]);
            }
        }
    }
    /// Every piece in one launch.
    fn wgsl(&self) -> Wgsl {
        self.pass(&(0..self.pieces.len()).collect::<Vec<_>>())
    }
    /// All pieces in one dispatch or one dispatch each: the same words either way;
    /// the GPU autotune picks per adapter (lavapipe runs every branch of a kernel for
    /// every invocation).
    fn tune(&self) -> Option<Tune> {
        let words = self.pieces.iter().map(Piece::words).sum();
        Some(Tune::one_or_each("cat", "per input", self.pieces.len(), words, |w| {
            self.pass(w)
        }))
    }
}

impl Tensor {
    /// Same data, new shape (no copy). Works on label tensors too.
    #[track_caller]
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        assert!(
            crate::tensor::numel(shape) == self.numel(),
            "reshape: cannot view shape {:?} as {:?}",
            self.shape(),
            shape
        );
        if shape == self.shape() {
            return self.clone();
        }
        Tensor::from_node(Op::Reshape, vec![self.clone()], shape.to_vec(), self.dtype())
    }

    /// Inserts an axis of length 1 at `axis` (`0..=rank`; `-1` appends one, as
    /// `torch.unsqueeze`).
    #[track_caller]
    pub fn unsqueeze(&self, axis: impl Axis) -> Tensor {
        let axis = self.new_axis("unsqueeze", axis);
        let mut shape = self.shape().to_vec();
        shape.insert(axis, 1);
        self.reshape(&shape)
    }

    /// A value that gradients do not flow through (same buffer, no copy). Detaching
    /// a value that is already computed gives a tensor with no link to the graph that
    /// made it, so a state carried from step to step (truncated BPTT) does not keep
    /// every earlier step's graph alive.
    #[track_caller]
    pub fn detach(&self) -> Tensor {
        let computed = self.0.storage.lock().unwrap().clone();
        if let Some(storage) = computed.filter(|_| self.0.op != Op::Leaf) {
            return Tensor::leaf(storage, self.shape().to_vec(), self.dtype(), self.device(), None);
        }
        let t = Tensor::from_node(Op::Detach, vec![self.clone()], self.shape().to_vec(), self.dtype());
        t.0.requires_grad.store(false, std::sync::atomic::Ordering::Release);
        t
    }

    /// Reorders the axes: output axis `i` is input axis `perm[i]` (negative entries
    /// count from the back, as `torch.permute`).
    #[track_caller]
    pub fn permute<A: Axis>(&self, perm: &[A]) -> Tensor {
        let rank = self.shape().len();
        let resolved: Option<Vec<usize>> = perm.iter().map(|p| p.index(rank)).collect();
        let mut seen = vec![false; rank];
        let perm = match resolved {
            Some(p) if p.len() == rank && p.iter().all(|&a| !std::mem::replace(&mut seen[a], true)) => p,
            _ => panic!(
                "permute: [{}] is not a permutation of the axes of shape {:?}",
                perm.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                self.shape()
            ),
        };
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return self.clone();
        }
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        // Axes of one entry moved among the others leave every word where it was.
        let longer: Vec<usize> = perm.iter().copied().filter(|&p| self.shape()[p] != 1).collect();
        if longer.windows(2).all(|w| w[0] < w[1]) {
            return self.reshape(&shape);
        }
        Tensor::from_node(
            Op::Permute(Permute(perm.to_vec())),
            vec![self.clone()],
            shape,
            self.dtype(),
        )
    }

    /// Swaps two axes (`x.transpose(-2, -1)` swaps the last two).
    #[track_caller]
    pub fn transpose(&self, a: impl Axis, b: impl Axis) -> Tensor {
        let rank = self.shape().len();
        let (a, b) = (self.axis("transpose", a), self.axis("transpose", b));
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

    /// `len` entries from `start` along `axis` (`-1`: the last), as `torch.narrow`. A
    /// range at the start of the buffer (all axes before `axis` of length 1) shares
    /// the buffer; any other is a copy. Works on label tensors too.
    #[track_caller]
    pub fn narrow(&self, axis: impl Axis, start: usize, len: usize) -> Tensor {
        let axis = self.axis("narrow", axis);
        let shape = self.shape();
        assert!(
            start + len <= shape[axis],
            "narrow: range {start}..{} of axis {axis} is outside shape {shape:?}",
            start + len
        );
        if start == 0 && len == shape[axis] {
            return self.clone();
        }
        // A range of a permutation not yet computed is the permutation of the range
        // of its input: only the range is copied (a batch-first sequence's last step
        // is not the whole sequence permuted, then narrowed), or none of it, where
        // the range is a view.
        if let (Op::Permute(Permute(perm)), true) = (&self.0.op, self.is_pending()) {
            return self.0.inputs[0].narrow(perm[axis], start, len).permute(perm);
        }
        let mut out = shape.to_vec();
        out[axis] = len;
        Tensor::from_node(
            Op::Slice(Slice { axis, start, len }),
            vec![self.clone()],
            out,
            self.dtype(),
        )
    }

    /// Entry `index` along `axis` (`-1`: the last), which is removed, as
    /// `torch.select` (`x.select(0, t)` is time step `t` of a `[T, B, H]` sequence).
    #[track_caller]
    pub fn select(&self, axis: impl Axis, index: usize) -> Tensor {
        let axis = self.axis("select", axis);
        let shape = self.shape();
        assert!(
            index < shape[axis],
            "select: index {index} of axis {axis} is outside shape {shape:?}"
        );
        let mut out = shape.to_vec();
        out.remove(axis);
        self.narrow(axis, index, 1).reshape(&out)
    }

    /// Zeros before and after along `axis` (the gradient of `narrow`).
    #[track_caller]
    pub(crate) fn pad(&self, axis: usize, before: usize, after: usize) -> Tensor {
        if before == 0 && after == 0 {
            return self.clone();
        }
        // Zeros around zeros around x along one axis: one pad of x (the gradient of a
        // range of a range: a sequence's last step of a range of its states).
        if let (Op::Pad(inner), true) = (&self.0.op, self.is_pending()) {
            if inner.axis == axis {
                return self.0.inputs[0].pad(axis, before + inner.before, after + inner.after);
            }
        }
        let mut out = self.shape().to_vec();
        out[axis] += before + after;
        Tensor::from_node(
            Op::Pad(Pad { axis, before, after }),
            vec![self.clone()],
            out,
            self.dtype(),
        )
    }

    /// Tensors joined along `axis` (`-1`: the last), as `torch.cat`: all have the same
    /// rank, dtype and device, and equal sizes on every other axis.
    ///
    /// # Panics
    /// On an empty list or mismatched shapes (naming both).
    #[track_caller]
    pub fn cat(tensors: &[&Tensor], axis: impl Axis) -> Tensor {
        let first = tensors.first().expect("cat: no tensors to join");
        let axis = first.axis("cat", axis);
        let shape = first.shape();
        let mut out = shape.to_vec();
        out[axis] = 0;
        for t in tensors {
            first.check_same_device(t, "cat");
            let same_rest = t.shape().len() == shape.len()
                && t.shape()
                    .iter()
                    .zip(shape)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            assert!(
                same_rest && t.dtype() == first.dtype(),
                "cat: {:?} {:?} and {:?} {:?} differ outside axis {axis}",
                first.dtype(),
                shape,
                t.dtype(),
                t.shape()
            );
            out[axis] += t.shape()[axis];
        }
        if tensors.len() == 1 {
            return (*first).clone();
        }
        let inputs = tensors.iter().map(|t| (*t).clone()).collect();
        Tensor::from_node(Op::Cat(Cat { axis }), inputs, out, first.dtype())
    }

    /// Every entry along `axis` (`-1`: the last) as its own tensor, as `torch.unbind`:
    /// `[T, B, H]` unbound along 0 gives T tensors `[B, H]`, computed together (one
    /// node, a copy each) and differentiated together (one concatenation).
    #[track_caller]
    pub fn unbind(&self, axis: impl Axis) -> Vec<Tensor> {
        let axis = self.axis("unbind", axis);
        let shape = self.shape();
        let entries = shape[axis];
        if entries <= 1 {
            return (0..entries).map(|k| self.select(axis, k)).collect();
        }
        let mut entry = shape.to_vec();
        entry.remove(axis);
        let outputs = vec![(entry, self.dtype()); entries];
        Tensor::from_node_outputs(Op::Unbind(Unbind { axis }), vec![self.clone()], outputs)
    }

    /// Tensors of one shape joined along a new axis `axis` (`0..=rank`; `-1`: a new
    /// last axis), as `torch.stack`.
    ///
    /// # Panics
    /// On an empty list or mismatched shapes.
    #[track_caller]
    pub fn stack(tensors: &[&Tensor], axis: impl Axis) -> Tensor {
        let first = tensors.first().expect("stack: no tensors to join");
        let axis = first.new_axis("stack", axis);
        for t in tensors {
            assert!(
                t.shape() == first.shape(),
                "stack: shapes {:?} and {:?} differ",
                first.shape(),
                t.shape()
            );
        }
        let parts: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(axis)).collect();
        Tensor::cat(&parts.iter().collect::<Vec<_>>(), axis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_slice_shares_the_buffer_and_others_copy() {
        let s = Slice {
            axis: 1,
            start: 0,
            len: 2,
        };
        assert!(matches!(s.lower(&[&[1, 5, 3]], &[1, 2, 3]), Lowering::Alias));
        assert!(matches!(s.lower(&[&[2, 5, 3]], &[2, 2, 3]), Lowering::Launches { .. }));
        let s = Slice {
            axis: 0,
            start: 1,
            len: 2,
        };
        assert!(matches!(s.lower(&[&[5, 3]], &[2, 3]), Lowering::Launches { .. }));
    }
}
