//! Convolution family (`shaders/conv.wgsl`): PyTorch's `conv1d`, `conv2d` and
//! `conv_transpose2d` (NCL / NCHW, weights `[out, in / groups, k…]`) as three
//! kernels, each a GEMM over one group: the forward (`y = W·im2col(x) + b`), the
//! input gradient (`dx = col2im(Wᵀ·dy)`, which is also the transposed convolution's
//! forward) and the weight gradient (`dW = dy·im2col(x)ᵀ`). The three close under
//! differentiation (each one's gradients are the other two), so gradients of
//! gradients and of the transposed convolution come for free.
//!
//! On the GPU each is an implicit GEMM: the tiled product reads the image through
//! the convolution's index arithmetic, no column matrix is materialized. The CPU
//! twin builds the column matrix of one image and group at a time (im2col) and
//! multiplies with the crate's SGEMM; from 4 MFLOP a pass deals its images out to
//! two threads ([`FastPath::GemmSplit`]; the weight gradient sums two fixed halves
//! of the batch, so its bits do not depend on the split), and a single image's large
//! product is split by the SGEMM itself.
//!
//! A 1-D convolution is a 2-D one of height 1. The builders on [`Tensor`] and their
//! shape rules are in `conv/builders.rs`.

use super::{Bind, Launch, Lowering, Rule};
use crate::backend::cpu::helper_thread::join;
use crate::backend::cpu::sgemm::{sgemm, sgemm_serial};
use crate::backend::kernel::{Cost, Grid, Kernel, Tune, Uniforms, Variant, Wgsl};
use crate::fast_path::{self, FastPath};
use crate::ops::elementwise::UnaryOp;
use crate::Tensor;
use std::sync::Arc;

mod builders;

pub(crate) use builders::{conv_output_shape, conv_output_shape_2d, ConvKind};
pub use builders::{Conv2dArgs, ConvArgs};

const SHADER: &str = include_str!("../../shaders/conv.wgsl");

/// The sizes of a 2-D convolution `x [batch, c_in, h, w] → y [batch, c_out, oh, ow]`
/// with weight `[c_out, c_in / groups, kh, kw]`; pairs are (height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    /// Images in the batch.
    pub batch: usize,
    /// Channels of x.
    pub c_in: usize,
    /// Channels of y.
    pub c_out: usize,
    /// Channel groups (both channel counts are multiples of it).
    pub groups: usize,
    /// Height and width of x.
    pub input: [usize; 2],
    /// Height and width of the kernel.
    pub kernel: [usize; 2],
    /// Height and width of y.
    pub output: [usize; 2],
    /// Step between output pixels, in input pixels.
    pub stride: [usize; 2],
    /// Zeros added on both sides of x.
    pub padding: [usize; 2],
    /// Step between kernel taps, in input pixels.
    pub dilation: [usize; 2],
}

impl ConvGeometry {
    /// Input channels per group.
    fn cg(&self) -> usize {
        self.c_in / self.groups
    }
    /// Output channels per group.
    fn og(&self) -> usize {
        self.c_out / self.groups
    }
    /// Kernel taps per output channel and input channel.
    fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
    /// Length of a column of im2col: `cg · kh · kw`.
    fn depth(&self) -> usize {
        self.cg() * self.taps()
    }
    /// Pixels of one output channel.
    fn pixels(&self) -> usize {
        self.output[0] * self.output[1]
    }
    /// Pixels of one input channel.
    fn in_pixels(&self) -> usize {
        self.input[0] * self.input[1]
    }
    /// `[batch, c_in, h, w]`.
    pub(crate) fn x_shape(&self) -> Vec<usize> {
        vec![self.batch, self.c_in, self.input[0], self.input[1]]
    }
    /// `[batch, c_out, oh, ow]`.
    pub(crate) fn y_shape(&self) -> Vec<usize> {
        vec![self.batch, self.c_out, self.output[0], self.output[1]]
    }
    /// `[c_out, c_in / groups, kh, kw]`.
    pub(crate) fn w_shape(&self) -> Vec<usize> {
        vec![self.c_out, self.cg(), self.kernel[0], self.kernel[1]]
    }

    /// Visits every (column-matrix index, x index) pair of one image and group whose
    /// tap falls inside x (not in the padding), in a fixed order: the one traversal
    /// behind im2col and col2im.
    #[inline]
    fn each_tap(&self, mut f: impl FnMut(usize, usize)) {
        let ([h, w], [kh, kw], [oh, ow]) = (self.input, self.kernel, self.output);
        let (p, hw) = (self.pixels(), self.in_pixels());
        let tap = |o: usize, k: usize, axis: usize| {
            (o * self.stride[axis] + k * self.dilation[axis]).checked_sub(self.padding[axis])
        };
        for c in 0..self.cg() {
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = ((c * kh + ky) * kw + kx) * p;
                    for oy in 0..oh {
                        let Some(iy) = tap(oy, ky, 0).filter(|&iy| iy < h) else {
                            continue;
                        };
                        for ox in 0..ow {
                            if let Some(ix) = tap(ox, kx, 1).filter(|&ix| ix < w) {
                                f(row + oy * ow + ox, c * hw + iy * w + ix);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The column matrix `[cg·kh·kw, oh·ow]` of one image's group `x` (`[cg, h, w]`).
    fn im2col(&self, x: &[f32], cols: &mut [f32]) {
        cols.fill(0.0);
        self.each_tap(|ci, xi| cols[ci] = x[xi]);
    }

    /// The reverse: each column entry added into its pixel of `x` (zeroed first).
    fn col2im(&self, cols: &[f32], x: &mut [f32]) {
        x.fill(0.0);
        self.each_tap(|ci, xi| x[xi] += cols[ci]);
    }
}

/// Which of the family's three products a node computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConvPass {
    /// Inputs x, weight (and bias): y.
    Forward {
        /// A bias per output channel is the third input.
        bias: bool,
        /// An activation applied in the epilogue, after the bias (a ReLU, GELU, …
        /// that followed the convolution, taken in as `Linear`'s products take theirs).
        act: Option<UnaryOp>,
    },
    /// Inputs dy, weight: dx (also the transposed convolution of dy).
    InputGrad,
    /// Inputs dy, x: dW.
    WeightGrad,
}

/// A convolution node: one pass over one geometry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv {
    /// Which product.
    pub pass: ConvPass,
    /// The sizes of the forward convolution it belongs to.
    pub geometry: ConvGeometry,
}

impl Conv {
    /// The node of `pass` on `inputs` (the output's shape follows from the pass).
    pub(crate) fn node(pass: ConvPass, geometry: ConvGeometry, inputs: Vec<Tensor>) -> Tensor {
        let shape = match pass {
            ConvPass::Forward { .. } => geometry.y_shape(),
            ConvPass::InputGrad => geometry.x_shape(),
            ConvPass::WeightGrad => geometry.w_shape(),
        };
        let op = crate::ops::Op::Conv(Conv { pass, geometry });
        Tensor::from_node(op, inputs, shape, crate::tensor::DType::F32)
    }
}

impl Rule for Conv {
    fn name(&self) -> &'static str {
        match self.pass {
            ConvPass::Forward { .. } => "conv",
            ConvPass::InputGrad => "conv_input_grad",
            ConvPass::WeightGrad => "conv_weight_grad",
        }
    }

    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Lowering {
        // Every pass binds the tensor that may be read as an image (x) second: the
        // forward's weight comes first, so that `x_at` in the shader reads `in1`.
        let mut bindings = match self.pass {
            ConvPass::Forward { bias, .. } => {
                let mut b = vec![Bind::Input(1), Bind::Input(0)];
                b.extend(bias.then_some(Bind::Input(2)));
                b
            }
            _ => vec![Bind::Input(0), Bind::Input(1)],
        };
        let kernel: Arc<dyn Kernel> = Arc::new(ConvKernel(*self));
        bindings.push(Bind::Output(0));
        Lowering::launches(vec![Launch { kernel, bindings }])
    }

    /// Each pass is bilinear in its two tensor inputs; its gradients are the other
    /// two passes (the bias's is the output gradient summed per channel).
    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let geo = self.geometry;
        let plain = ConvPass::Forward { bias: false, act: None };
        let forward = |x: &Tensor, w: &Tensor| Conv::node(plain, geo, vec![x.clone(), w.clone()]);
        // The gradient before the epilogue's activation: from its output where the
        // map allows (ReLU), else from the convolution recomputed without it.
        let g = &match self.pass {
            ConvPass::Forward { bias, act: Some(act) } => match act.grad_from_output(y, g) {
                Some(gp) => gp,
                None => {
                    let pre = Conv::node(ConvPass::Forward { bias, act: None }, geo, inputs.to_vec());
                    match act.grad(&pre, y, g) {
                        Some(gp) => gp,
                        None => return vec![None; inputs.len()],
                    }
                }
            },
            _ => g.clone(),
        };
        let input_grad = |dy: &Tensor, w: &Tensor| Conv::node(ConvPass::InputGrad, geo, vec![dy.clone(), w.clone()]);
        let weight_grad = |dy: &Tensor, x: &Tensor| Conv::node(ConvPass::WeightGrad, geo, vec![dy.clone(), x.clone()]);
        let (a, b) = (&inputs[0], &inputs[1]);
        match self.pass {
            ConvPass::Forward { bias, .. } => {
                let mut out = vec![Some(input_grad(g, b)), Some(weight_grad(g, a))];
                if bias {
                    // Summed over each channel's pixels as one row (not an axis at a
                    // time): a 28-pixel row per workgroup made this the slowest part of
                    // a small CNN's step on software adapters.
                    let (n, c) = (g.shape()[0], g.shape()[1]);
                    let rows = g.reshape(&[n, c, g.numel() / (n * c).max(1)]);
                    out.push(Some(rows.sum_axis(2, false).sum_axis(0, false)));
                }
                out
            }
            // dx = InputGrad(dy, W): d dy = Forward(g, W), dW = WeightGrad(dy, g).
            ConvPass::InputGrad => vec![Some(forward(g, b)), Some(weight_grad(a, g))],
            // dW = WeightGrad(dy, x): d dy = Forward(x, g), dx = InputGrad(dy, g).
            ConvPass::WeightGrad => vec![Some(forward(b, g)), Some(input_grad(a, g))],
        }
    }
}

/// One pass: reads its [`ConvPass`]'s inputs (the forward's as [weight, x, bias?]),
/// writes [out].
#[derive(Debug)]
struct ConvKernel(Conv);

impl ConvKernel {
    /// The GEMM of one group: (rows, depth, columns).
    fn mkn(&self) -> (usize, usize, usize) {
        let g = &self.0.geometry;
        match self.0.pass {
            ConvPass::Forward { .. } => (g.og(), g.depth(), g.batch * g.pixels()),
            ConvPass::InputGrad => (g.cg(), g.og() * g.taps(), g.batch * g.in_pixels()),
            ConvPass::WeightGrad => (g.og(), g.batch * g.pixels(), g.depth()),
        }
    }

    fn entry(&self) -> &'static str {
        match self.0.pass {
            ConvPass::Forward { .. } => "conv_forward",
            ConvPass::InputGrad => "conv_input_grad",
            ConvPass::WeightGrad => "conv_weight_grad",
        }
    }

    fn uniforms(&self) -> Uniforms {
        let g = &self.0.geometry;
        let (m, k, n) = self.mkn();
        Uniforms::new()
            .u32("m", m)
            .u32("k", k)
            .u32("n", n)
            .u32("batch", g.batch)
            .u32("c_in", g.c_in)
            .u32("c_out", g.c_out)
            .u32("cg", g.cg())
            .u32("og", g.og())
            .u32("h", g.input[0])
            .u32("w", g.input[1])
            .u32("oh", g.output[0])
            .u32("ow", g.output[1])
            .u32("kh", g.kernel[0])
            .u32("kw", g.kernel[1])
            .u32("sy", g.stride[0])
            .u32("sx", g.stride[1])
            .u32("py", g.padding[0])
            .u32("px", g.padding[1])
            .u32("dy", g.dilation[0])
            .u32("dx", g.dilation[1])
    }

    /// The launch with one tile.
    fn pass(&self, tile: Tile) -> Wgsl {
        let (m, _, n) = self.mkn();
        let Tile { wx, wy, tm, tn, bk } = tile;
        let (bias, act) = match self.0.pass {
            ConvPass::Forward { bias, act } => (bias, act),
            _ => (false, None),
        };
        let bias = match bias {
            true => "fn bias_at(o: u32) -> f32 { return in2[o]; }\n",
            false => "fn bias_at(o: u32) -> f32 { return 0.0; }\n",
        };
        let helpers = act.map_or("", UnaryOp::wgsl_helpers);
        let act = act.map_or("x".to_string(), UnaryOp::wgsl);
        let defs = format!(
            "const WX: u32 = {wx}u;\nconst WY: u32 = {wy}u;\nconst TM: u32 = {tm}u;\n\
             const TN: u32 = {tn}u;\nconst BK: u32 = {bk}u;\n{bias}{helpers}\
             fn epilogue(x: f32) -> f32 {{ return {act}; }}\n"
        );
        let grid = Grid::Tiles(n.div_ceil(wx * tn), m.div_ceil(wy * tm), self.0.geometry.groups);
        Wgsl::new(SHADER, self.entry(), self.uniforms(), grid).defs(defs)
    }

    /// The untimed tile: as few idle rows as the group's GEMM allows.
    fn default_tile(&self) -> Tile {
        let (m, _, _) = self.mkn();
        match m {
            0..=16 => TILES[2],
            17..=32 => TILES[1],
            _ => TILES[0],
        }
    }
}

/// A tile of the implicit GEMM: `wx × wy` invocations, each computing `tm × tn`
/// outputs, K walked in slices of `bk` through workgroup memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tile {
    wx: usize,
    wy: usize,
    tm: usize,
    tn: usize,
    bk: usize,
}

/// 64×64, 32×64, 16×64 and 32×32 outputs per workgroup (at most 8 KiB of workgroup
/// memory and 256 invocations: WebGPU's default limits).
const TILES: [Tile; 4] = [
    Tile {
        wx: 16,
        wy: 16,
        tm: 4,
        tn: 4,
        bk: 16,
    },
    Tile {
        wx: 16,
        wy: 8,
        tm: 4,
        tn: 4,
        bk: 16,
    },
    Tile {
        wx: 16,
        wy: 4,
        tm: 4,
        tn: 4,
        bk: 16,
    },
    Tile {
        wx: 8,
        wy: 8,
        tm: 4,
        tn: 4,
        bk: 16,
    },
];

/// Products below this many flops are not worth timing: the default tile runs.
const TUNE_FLOPS: usize = 1 << 20;

impl Kernel for ConvKernel {
    fn reads(&self) -> usize {
        match self.0.pass {
            ConvPass::Forward { bias, .. } => 2 + bias as usize,
            _ => 2,
        }
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let g = &self.0.geometry;
        match self.0.pass {
            ConvPass::Forward { bias, act } => forward_cpu(g, x[1], x[0], bias.then(|| x[2]), act, out[0]),
            ConvPass::InputGrad => input_grad_cpu(g, x[0], x[1], out[0]),
            ConvPass::WeightGrad => weight_grad_cpu(g, x[0], x[1], out[0]),
        }
    }

    fn wgsl(&self) -> Wgsl {
        self.pass(self.default_tile())
    }

    /// `2·m·k·n` per group.
    fn cost(&self, words: &[usize]) -> Cost {
        let (m, k, n) = self.mkn();
        Cost {
            flops: 2 * (m * k * n * self.0.geometry.groups) as u64,
            ..Cost::moved(words)
        }
    }

    /// Every tile of [`TILES`] (the default first); they give the same bits.
    fn tune(&self) -> Option<Tune> {
        let (m, k, n) = self.mkn();
        let groups = self.0.geometry.groups;
        let bucket = |d: usize| d.next_power_of_two();
        let key = format!(
            "{} m{} k{} n{} g{}",
            self.entry(),
            bucket(m),
            bucket(k),
            bucket(n),
            bucket(groups)
        );
        let default = self.default_tile();
        let variants = std::iter::once(default)
            .chain(TILES.into_iter().filter(|t| *t != default))
            .map(|tile| {
                Variant::new(
                    format!("{}x{}", tile.wy * tile.tm, tile.wx * tile.tn),
                    vec![self.pass(tile)],
                    0,
                )
            })
            .collect();
        Some(Tune {
            key,
            variants,
            worth_timing: 2 * m * k * n * groups >= TUNE_FLOPS,
            canonical: None,
        })
    }
}

/// The words of image `n`'s group `grp` in a `[batch, channels, pixels]` tensor whose
/// groups have `per_group` channels.
fn group_of(
    t: &[f32],
    n: usize,
    grp: usize,
    channels: usize,
    per_group: usize,
    pixels: usize,
) -> std::ops::Range<usize> {
    let start = (n * channels + grp * per_group) * pixels;
    debug_assert!(start + per_group * pixels <= t.len());
    start..start + per_group * pixels
}

/// Whether a pass over `batch` images of `flops` in all deals the images out to two
/// threads ([`FastPath::GemmSplit`]'s threshold, 4 MFLOP); each image's products
/// then run on one thread. A single image keeps the SGEMM's own split.
fn split_images(batch: usize, flops: usize) -> bool {
    fast_path::choose(FastPath::GemmSplit, batch >= 2 && flops >= 1 << 22)
}

/// `pass(images, out)` over all images, or over two halves on two threads (`out`
/// holds `words` words per image).
fn over_images(
    g: &ConvGeometry,
    words: usize,
    out: &mut [f32],
    pass: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) {
    let flops = 2 * g.batch * g.c_out * g.depth() * g.pixels();
    if !split_images(g.batch, flops) {
        return pass(0..g.batch, out);
    }
    let cut = g.batch / 2;
    let (first, second) = out.split_at_mut(cut * words);
    join(|| pass(cut..g.batch, second), || pass(0..cut, first));
}

/// `y = W·im2col(x) + b`, one image and group at a time.
fn forward_cpu(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, act: Option<UnaryOp>, y: &mut [f32]) {
    let (og, depth, p) = (g.og(), g.depth(), g.pixels());
    let words = g.c_out * p;
    over_images(g, words, y, |images, y| {
        let mut cols = vec![0.0; depth * p];
        let first = images.start;
        for n in images {
            for grp in 0..g.groups {
                g.im2col(&x[group_of(x, n, grp, g.c_in, g.cg(), g.in_pixels())], &mut cols);
                let out = &mut y[(n - first) * words + grp * og * p..][..og * p];
                gemm(g.batch, og, depth, p, false, false, &w[grp * og * depth..], &cols, out);
            }
        }
    });
    if let Some(bias) = bias {
        for (channel, row) in y.chunks_mut(p.max(1)).enumerate() {
            let b = bias[channel % g.c_out];
            row.iter_mut().for_each(|v| *v += b);
        }
    }
    if let Some(act) = act {
        act.map_in_place(y);
    }
}

/// `dx = col2im(Wᵀ·dy)`, one image and group at a time.
fn input_grad_cpu(g: &ConvGeometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (og, depth, p) = (g.og(), g.depth(), g.pixels());
    let words = g.c_in * g.in_pixels();
    over_images(g, words, dx, |images, dx| {
        let mut cols = vec![0.0; depth * p];
        let first = images.start;
        for n in images {
            for grp in 0..g.groups {
                let rows = &dy[group_of(dy, n, grp, g.c_out, og, p)];
                gemm(
                    g.batch,
                    depth,
                    og,
                    p,
                    true,
                    false,
                    &w[grp * og * depth..],
                    rows,
                    &mut cols,
                );
                let out = &mut dx[(n - first) * words + grp * g.cg() * g.in_pixels()..][..g.cg() * g.in_pixels()];
                g.col2im(&cols, out);
            }
        }
    });
}

/// `dW = Σ_n dy·im2col(x)ᵀ`: the images in two halves (the first ⌊N/2⌋ and the
/// rest), each summed in image order, then the second half's sum added to the
/// first's — the same order whether the halves run on one thread or two.
fn weight_grad_cpu(g: &ConvGeometry, dy: &[f32], x: &[f32], dw: &mut [f32]) {
    let (og, depth, p) = (g.og(), g.depth(), g.pixels());
    let half = |images: std::ops::Range<usize>, sum: &mut [f32]| {
        let mut cols = vec![0.0; depth * p];
        let mut part = vec![0.0; og * depth];
        sum.fill(0.0);
        for n in images {
            for grp in 0..g.groups {
                g.im2col(&x[group_of(x, n, grp, g.c_in, g.cg(), g.in_pixels())], &mut cols);
                let rows = &dy[group_of(dy, n, grp, g.c_out, og, p)];
                gemm(g.batch, og, p, depth, false, true, rows, &cols, &mut part);
                let sum = &mut sum[grp * og * depth..][..og * depth];
                sum.iter_mut().zip(&part).for_each(|(s, v)| *s += v);
            }
        }
    };
    let cut = g.batch / 2;
    let mut second = vec![0.0; dw.len()];
    let flops = 2 * g.batch * g.c_out * g.depth() * g.pixels();
    if split_images(g.batch, flops) {
        join(|| half(cut..g.batch, &mut second), || half(0..cut, dw));
    } else {
        half(0..cut, dw);
        half(cut..g.batch, &mut second);
    }
    dw.iter_mut().zip(&second).for_each(|(s, v)| *s += v);
}

/// One product of a pass over `batch` images: on this thread when the images are
/// dealt out to threads, else the SGEMM (which splits a large product itself).
#[allow(clippy::too_many_arguments)]
fn gemm(batch: usize, m: usize, k: usize, n: usize, ta: bool, tb: bool, a: &[f32], b: &[f32], out: &mut [f32]) {
    if batch >= 2 {
        sgemm_serial(m, k, n, ta, tb, a, b, out)
    } else {
        sgemm(m, k, n, ta, tb, a, b, out)
    }
}
