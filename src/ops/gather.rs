//! Gather family (`shaders/gather.wgsl`): entries picked along one axis by u32
//! indices (`index_select`, the forward of an embedding) and its adjoint, a
//! scatter-add that sums in a fixed order — each output element adds its sources in
//! index order, with no float atomics — so the CPU and the GPU give the same bits.

use super::{split_axis, Lowering, Op, Rule};
use crate::backend::cpu::helper_thread::join;
use crate::backend::kernel::{Grid, Kernel, Uniforms, Wgsl};
use crate::fast_path::{self, FastPath};
use crate::tensor::{Axis, DType};
use crate::{Error, Result, Tensor};

const SHADER: &str = include_str!("../../shaders/gather.wgsl");

/// Entries of input 0 along `axis` picked by the u32 indices of input 1 (`[m]`):
/// `[.., n, ..]` → `[.., m, ..]`. An index not below `n` is an error when it is known
/// (labels made from host data), else gives NaN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexSelect {
    /// The axis indexed.
    pub axis: usize,
}

/// Input 0's entries along `axis` summed into a zero tensor of `len` entries there,
/// entry `m` going to index `indices[m]` (input 1): the adjoint of [`IndexSelect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScatterAddRows {
    /// The axis scattered along.
    pub axis: usize,
    /// Entries of the output along `axis`.
    pub len: usize,
}

/// The largest index of an index tensor made from host labels, through reshapes.
fn known_max_index(indices: &Tensor) -> Option<(u32, usize)> {
    let mut t = indices.clone();
    loop {
        match t.0.op {
            Op::Reshape | Op::Detach => t = t.0.inputs[0].clone(),
            Op::Leaf => return t.0.max_label,
            _ => return None,
        }
    }
}

fn check_indices(op: &'static str, indices: &Tensor, len: usize) -> Result<()> {
    match known_max_index(indices) {
        Some((label, index)) if label as usize >= len => Err(Error::LabelOutOfRange {
            op,
            label,
            index,
            classes: len,
        }),
        _ => Ok(()),
    }
}

impl Rule for IndexSelect {
    fn name(&self) -> &'static str {
        "index_select"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let (outer, len, inner) = split_axis(inputs[0], self.axis);
        let picks = inputs[1].iter().product();
        Lowering::kernel(
            GatherKernel {
                outer,
                len,
                inner,
                picks,
            },
            2,
        )
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let len = inputs[0].shape()[self.axis];
        vec![Some(g.scatter_add(self.axis, &inputs[1], len)), None]
    }
    fn validate(&self, inputs: &[Tensor]) -> Result<()> {
        check_indices("index_select", &inputs[1], inputs[0].shape()[self.axis])
    }
}

impl Rule for ScatterAddRows {
    fn name(&self) -> &'static str {
        "scatter_add"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let (outer, picks, inner) = split_axis(inputs[0], self.axis);
        Lowering::kernel(
            ScatterAddKernel {
                outer,
                len: self.len,
                inner,
                picks,
            },
            2,
        )
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(g.index_select(self.axis, &inputs[1])), None]
    }
    fn validate(&self, inputs: &[Tensor]) -> Result<()> {
        check_indices("scatter_add", &inputs[1], self.len)
    }
}

/// Output words from which a gather's CPU pass copies half of its rows on the helper
/// thread: `fit`'s batch of 32 Fashion-MNIST images picked from the training set on
/// the device (25 Ki words, rows scattered over 188 MB) took 33 µs on one thread and
/// 17 µs on two, one of 128 images 99 and 61 µs.
const SPLIT_WORDS: usize = 16 * 1024;

/// reads [x as [outer, len, inner], indices [picks]], writes [outer, picks, inner]
#[derive(Debug)]
struct GatherKernel {
    outer: usize,
    len: usize,
    inner: usize,
    picks: usize,
}

impl Kernel for GatherKernel {
    fn reads(&self) -> usize {
        2
    }
    /// Output rows (one per outer index and pick) copied in order; from
    /// [`SPLIT_WORDS`] output words on ([`FastPath::GatherSplit`]), the second half of
    /// the rows on the helper thread (each row a copy: the same bits).
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (len, inner, picks) = (self.len, self.inner, self.picks);
        let rows = self.outer * picks;
        let out = &mut out[0][..rows * inner];
        let copy_rows = |first: usize, out: &mut [f32]| {
            for (r, dst) in (first..).zip(out.chunks_exact_mut(inner.max(1))) {
                let (o, m) = (r / picks, r % picks);
                let at = x[1][m].to_bits() as usize;
                if at < len {
                    dst.copy_from_slice(&x[0][(o * len + at) * inner..(o * len + at + 1) * inner]);
                } else {
                    dst.fill(f32::NAN);
                }
            }
        };
        if inner == 0 || rows < 2 || !fast_path::choose(FastPath::GatherSplit, rows * inner >= SPLIT_WORDS) {
            return copy_rows(0, out);
        }
        let cut = rows / 2;
        let (top, bottom) = out.split_at_mut(cut * inner);
        join(|| copy_rows(cut, bottom), || copy_rows(0, top));
    }
    fn wgsl(&self) -> Wgsl {
        let n = self.outer * self.picks * self.inner;
        let u = Uniforms::new()
            .u32("n", n)
            .u32("len", self.len)
            .u32("inner", self.inner)
            .u32("picks", self.picks);
        Wgsl::new(SHADER, "gather", u, Grid::Threads(n))
    }
}

/// reads [x as [outer, picks, inner], indices [picks]], writes [outer, len, inner]:
/// one output element per invocation, adding its sources in index order.
#[derive(Debug)]
struct ScatterAddKernel {
    outer: usize,
    len: usize,
    inner: usize,
    picks: usize,
}

impl Kernel for ScatterAddKernel {
    fn reads(&self) -> usize {
        2
    }
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (len, inner, picks) = (self.len, self.inner, self.picks);
        out[0][..self.outer * len * inner].fill(0.0);
        // Each output element receives its sources in increasing m: the GPU's order.
        for o in 0..self.outer {
            for (m, idx) in x[1][..picks].iter().enumerate() {
                let at = idx.to_bits() as usize;
                if at >= len {
                    continue;
                }
                let src = &x[0][(o * picks + m) * inner..(o * picks + m + 1) * inner];
                let dst = &mut out[0][(o * len + at) * inner..(o * len + at + 1) * inner];
                dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
            }
        }
    }
    fn wgsl(&self) -> Wgsl {
        let n = self.outer * self.len * self.inner;
        let u = Uniforms::new()
            .u32("n", n)
            .u32("len", self.len)
            .u32("inner", self.inner)
            .u32("picks", self.picks);
        Wgsl::new(SHADER, "scatter_add", u, Grid::Threads(n))
    }
}

impl Tensor {
    /// Entries along `axis` (`-1`: the last) picked by a 1-D label tensor of indices, as
    /// `torch.index_select`: `[.., n, ..]` → `[.., m, ..]`. With `axis` 0 on a table
    /// `[num, dim]` this is an embedding lookup. The gradient is a deterministic
    /// [`Tensor::scatter_add`]. A label tensor can be indexed too (its words are
    /// copied, as `reshape` and `cat` copy them): `fit` gathers the batch's labels on
    /// the device this way.
    ///
    /// # Panics
    /// If `indices` is not a 1-D label tensor or `axis` is out of range.
    #[track_caller]
    pub fn index_select(&self, axis: impl Axis, indices: &Tensor) -> Tensor {
        self.check_same_device(indices, "index_select");
        assert!(
            indices.dtype() == DType::U32 && indices.shape().len() == 1,
            "index_select: indices must be a 1-D label tensor, got {:?} {:?}",
            indices.dtype(),
            indices.shape()
        );
        let axis = self.axis("index_select", axis);
        let mut out = self.shape().to_vec();
        out[axis] = indices.shape()[0];
        let op = Op::IndexSelect(IndexSelect { axis });
        Tensor::from_node(op, vec![self.clone(), indices.clone()], out, self.dtype())
    }

    /// Sums the entries of `self` along `axis` (`-1`: the last) into a zero tensor with `len` entries
    /// there: entry `m` is added at `indices[m]` (repeated indices add up). The
    /// adjoint of [`Tensor::index_select`]; deterministic, the same bits on every
    /// device (each output adds its sources in index order; no atomics). Cost on the
    /// GPU is `len · m · inner` comparisons: fine for embedding tables up to a few
    /// thousand rows per step.
    ///
    /// # Panics
    /// If `indices` is not a 1-D label tensor as long as `self` is along `axis`.
    #[track_caller]
    pub fn scatter_add(&self, axis: impl Axis, indices: &Tensor, len: usize) -> Tensor {
        self.check_f32("scatter_add");
        self.check_same_device(indices, "scatter_add");
        let axis = self.axis("scatter_add", axis);
        assert!(
            indices.dtype() == DType::U32 && indices.shape() == [self.shape()[axis]],
            "scatter_add: indices {:?} {:?} do not match axis {axis} of {:?}",
            indices.dtype(),
            indices.shape(),
            self.shape()
        );
        let mut out = self.shape().to_vec();
        out[axis] = len;
        let op = Op::ScatterAddRows(ScatterAddRows { axis, len });
        Tensor::from_node(op, vec![self.clone(), indices.clone()], out, DType::F32)
    }
}
