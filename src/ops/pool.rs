//! Pooling family (`shaders/pool.wgsl`): max and average pooling over the last two
//! axes (NCHW; NCL runs as planes of height 1), over fixed windows or PyTorch's
//! adaptive bins.
//!
//! Max pooling is two nodes: the indices of each window's first maximum (in window
//! order, row by row), then the values picked at them. The indices are the pick's
//! input, so the backward always has them (nothing recomputed), and it has no
//! atomics: each input element sums, in window order, the gradients of the windows
//! that chose it. The CPU twin adds in the same order, so max pooling gives the same
//! bits on the CPU and the GPU, ties included. Average pooling's backward is the same
//! loop over the windows that cover an element.

use std::ops::Range;

use super::{Lowering, Op, Rule};
use crate::backend::kernel::{Grid, Kernel, Uniforms, Wgsl};
use crate::tensor::DType;
use crate::Tensor;

const SHADER: &str = include_str!("../../shaders/pool.wgsl");

/// A 2-D pooling window as PyTorch's `nn.MaxPool2d` / `nn.AvgPool2d` take it:
/// kernel, stride and padding per axis (height, width), `ceil_mode` and
/// `count_include_pad`. [`PoolWindow::square`] is the usual square window; a 1-D
/// pooling runs as a 2-D one over planes of height 1 ([`PoolWindow::line`]).
///
/// ```
/// use wgnn::{Device, PoolWindow, Tensor};
///
/// let x = Tensor::randn(&[1, 2, 7, 9], 0, &Device::cpu()).unwrap();
/// let w = PoolWindow { kernel: [3, 2], stride: [2, 1], ..PoolWindow::square(2, 2, 0) };
/// assert_eq!(x.max_pool2d_with(w).shape(), &[1, 2, 3, 8]);
/// let ceil = PoolWindow { ceil_mode: true, ..PoolWindow::square(2, 2, 0) };
/// assert_eq!(x.avg_pool2d_with(ceil).shape(), &[1, 2, 4, 5]); // floor mode: 3 × 4
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolWindow {
    /// Window size along (height, width).
    pub kernel: [usize; 2],
    /// Entries between the starts of neighbouring windows along (height, width).
    pub stride: [usize; 2],
    /// Implicit entries added at both ends of each axis (−∞ for max pooling, 0 for
    /// average pooling); at most half the kernel, as PyTorch.
    pub padding: [usize; 2],
    /// PyTorch's `ceil_mode`: a last, partial window where the input (with its left
    /// padding) leaves one, rather than only whole windows.
    pub ceil_mode: bool,
    /// PyTorch's `count_include_pad` (average pooling only): divide by the window's
    /// size with the padding in it (`true`, PyTorch's default) or by the number of
    /// input entries in it (`false`).
    pub count_include_pad: bool,
}

impl PoolWindow {
    /// `kernel`×`kernel` windows every `stride` along both axes, padded by
    /// `padding`: PyTorch's defaults otherwise (`ceil_mode=False`,
    /// `count_include_pad=True`).
    pub fn square(kernel: usize, stride: usize, padding: usize) -> PoolWindow {
        PoolWindow {
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 2],
            ceil_mode: false,
            count_include_pad: true,
        }
    }

    /// A 1-D window (`max_pool1d`): `kernel` entries every `stride` along the last
    /// axis, padded by `padding`; the height's entries are 1, 1, 0.
    pub fn line(kernel: usize, stride: usize, padding: usize) -> PoolWindow {
        PoolWindow {
            kernel: [1, kernel],
            stride: [1, stride],
            padding: [0, padding],
            ..PoolWindow::square(1, 1, 0)
        }
    }

    /// How the window cuts the rows, then the columns.
    pub(crate) fn spans(&self) -> [Span; 2] {
        [0, 1].map(|axis| Span::Fixed {
            kernel: self.kernel[axis],
            stride: self.stride[axis],
            padding: self.padding[axis],
            ceil_mode: self.ceil_mode,
            count_pad: self.count_include_pad,
        })
    }
}

/// How one axis is cut into windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// Windows of `kernel` entries every `stride` entries, over the axis padded by
    /// `padding` on both sides: only whole windows, or with `ceil_mode` a last
    /// partial one (PyTorch's rule: it must start inside the input or its left
    /// padding).
    Fixed {
        /// Entries per window.
        kernel: usize,
        /// Entries between the starts of neighbouring windows.
        stride: usize,
        /// Implicit entries added at each end (−∞ for max, 0 for average).
        padding: usize,
        /// PyTorch's `ceil_mode`.
        ceil_mode: bool,
        /// PyTorch's `count_include_pad`: average pooling's divisor counts the
        /// padding inside a window (not what lies past the padded axis).
        count_pad: bool,
    },
    /// `out` bins as PyTorch's adaptive pooling: bin `i` of an axis of `len` entries
    /// is `⌊i·len/out⌋ .. ⌈(i+1)·len/out⌉`.
    Adaptive {
        /// Number of bins.
        out: usize,
    },
}

impl Span {
    /// How many windows an axis of `len` entries has, or why the span does not fit
    /// it (the message names `op` and the numbers).
    pub(crate) fn out_len(self, op: &str, len: usize) -> Result<usize, String> {
        match self {
            Span::Fixed {
                kernel,
                stride,
                padding,
                ceil_mode,
                ..
            } => {
                if kernel == 0 || stride == 0 {
                    return Err(format!("{op}: kernel {kernel} and stride {stride} must be at least 1"));
                }
                if 2 * padding > kernel {
                    return Err(format!(
                        "{op}: padding {padding} is more than half the kernel {kernel} (PyTorch's limit)"
                    ));
                }
                let padded = len + 2 * padding;
                if kernel > padded {
                    return Err(format!(
                        "{op}: kernel {kernel} is larger than the padded input ({len} + 2·{padding} = {padded})"
                    ));
                }
                if !ceil_mode {
                    return Ok((padded - kernel) / stride + 1);
                }
                let out = (padded - kernel).div_ceil(stride) + 1;
                // The last window must start inside the input or its left padding.
                Ok(if (out - 1) * stride >= len + padding {
                    out - 1
                } else {
                    out
                })
            }
            Span::Adaptive { out } if out == 0 || len == 0 => {
                Err(format!("{op}: {out} bins over {len} entries (both must be at least 1)"))
            }
            Span::Adaptive { out } => Ok(out),
        }
    }

    /// Window `o`'s entries `[start, end)` before clipping to `0..len` (`start` is
    /// negative in the padding); its length is average pooling's divisor.
    fn window(self, o: usize, len: usize) -> (isize, isize) {
        match self {
            Span::Fixed {
                kernel,
                stride,
                padding,
                ..
            } => {
                let start = (o * stride) as isize - padding as isize;
                (start, start + kernel as isize)
            }
            Span::Adaptive { out } => ((o * len / out) as isize, ((o + 1) * len).div_ceil(out) as isize),
        }
    }

    /// Average pooling's divisor along this axis for window `o`: the window's
    /// entries up to the end of the padded axis (with `count_pad`, PyTorch's
    /// `count_include_pad`), else those inside the input.
    fn divisor_len(self, o: usize, len: usize) -> isize {
        let (start, end) = self.window(o, len);
        match self {
            Span::Fixed {
                padding,
                count_pad: true,
                ..
            } => end.min((len + padding) as isize) - start,
            _ => end.min(len as isize) - start.max(0),
        }
    }

    /// The windows that contain entry `i` of an axis of `len` entries with `out`
    /// windows, in increasing order (possibly none).
    fn covering(self, i: usize, len: usize, out: usize) -> Range<usize> {
        match self {
            Span::Fixed {
                kernel,
                stride,
                padding,
                ..
            } => {
                let at = i + padding;
                let lo = if at >= kernel { (at - kernel) / stride + 1 } else { 0 };
                lo..(at / stride + 1).min(out)
            }
            Span::Adaptive { out } => i * out / len..((i + 1) * out).div_ceil(len).min(out),
        }
    }
}

/// Which pass of a pooling a [`Pool`] node computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolPass {
    /// `x [.., H, W]` → u32 `[.., OH, OW]`: per window, the index `h·W + w` in its
    /// plane of its first maximum in window order (PyTorch's `return_indices`; a NaN
    /// wins over numbers).
    MaxIndices,
    /// `x [.., H, W]`, indices `[.., OH, OW]` → the entries of each plane at the
    /// indices: max pooling's values.
    Pick,
    /// `x [.., H, W]` → `[.., OH, OW]`: each window's sum over the entries inside the
    /// input divided by the window's whole length (PyTorch's `count_include_pad`).
    Average,
    /// `g [.., OH, OW]`, indices → `[.., H, W]`: each entry sums, in window order,
    /// the gradients of the windows whose index is its own.
    MaxGrad,
    /// `g [.., OH, OW]` → `[.., H, W]`: each entry sums, in window order, the
    /// gradients of the windows that cover it, each over its divisor.
    AverageGrad,
}

/// One pass of a pooling over the last two axes (see [`PoolPass`]); `spans` cut the
/// rows and the columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// What the node computes.
    pub pass: PoolPass,
    /// The windows along H, then along W.
    pub spans: [Span; 2],
}

impl Rule for Pool {
    fn name(&self) -> &'static str {
        match self.pass {
            PoolPass::MaxIndices => "max_pool_indices",
            PoolPass::Pick => "max_pool",
            PoolPass::Average => "avg_pool",
            PoolPass::MaxGrad => "max_pool_grad",
            PoolPass::AverageGrad => "avg_pool_grad",
        }
    }

    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Lowering {
        // Geometry in the forward's terms: `pooled` is the smaller shape.
        let (full, pooled) = match self.pass {
            PoolPass::MaxGrad | PoolPass::AverageGrad => (out, inputs[0]),
            _ => (inputs[0], out),
        };
        let last2 = |s: &[usize]| [s[s.len() - 2], s[s.len() - 1]];
        let (input, output) = (last2(full), last2(pooled));
        let planes = crate::tensor::numel(full) / (input[0] * input[1]).max(1);
        let geometry = Geometry {
            planes,
            input,
            output,
            spans: self.spans,
        };
        Lowering::kernel(
            PoolKernel {
                pass: self.pass,
                geometry,
            },
            inputs.len(),
        )
    }

    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let x = &inputs[0];
        let node = |pass, ins: Vec<Tensor>, shape: &[usize]| {
            let op = Op::Pool(Pool {
                pass,
                spans: self.spans,
            });
            Tensor::from_node(op, ins, shape.to_vec(), DType::F32)
        };
        match self.pass {
            PoolPass::MaxIndices => vec![None],
            PoolPass::Pick => {
                let grad = node(PoolPass::MaxGrad, vec![g.clone(), inputs[1].clone()], x.shape());
                vec![Some(grad), None]
            }
            PoolPass::MaxGrad => {
                let grad = node(PoolPass::Pick, vec![g.clone(), inputs[1].clone()], x.shape());
                vec![Some(grad), None]
            }
            PoolPass::Average => vec![Some(node(PoolPass::AverageGrad, vec![g.clone()], x.shape()))],
            PoolPass::AverageGrad => vec![Some(node(PoolPass::Average, vec![g.clone()], x.shape()))],
        }
    }
}

/// The sizes of one pooling: `planes` planes of `input` `[H, W]` cut into `output`
/// `[OH, OW]` windows by `spans`.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    planes: usize,
    input: [usize; 2],
    output: [usize; 2],
    spans: [Span; 2],
}

impl Geometry {
    /// Window `o` along `axis` (0: rows, 1: columns), unclipped.
    fn window(&self, axis: usize, o: usize) -> (isize, isize) {
        self.spans[axis].window(o, self.input[axis])
    }

    /// The entries of window `o` along `axis` inside the input.
    fn inside(&self, axis: usize, o: usize) -> Range<usize> {
        let (start, end) = self.window(axis, o);
        start.max(0) as usize..(end.max(0) as usize).min(self.input[axis])
    }

    /// The windows along `axis` that contain entry `i`.
    fn covering(&self, axis: usize, i: usize) -> Range<usize> {
        self.spans[axis].covering(i, self.input[axis], self.output[axis])
    }

    /// Average pooling's divisor of window `(oh, ow)`: its area, padding in or not
    /// (see [`Span::divisor_len`]).
    fn area(&self, oh: usize, ow: usize) -> f32 {
        let h = self.spans[0].divisor_len(oh, self.input[0]);
        let w = self.spans[1].divisor_len(ow, self.input[1]);
        (h * w) as f32
    }

    /// The shared uniforms: sizes, then each axis's span as `k`, `s`, `p`,
    /// `adaptive` (1 for adaptive bins, whose count is `out_*`) and `count_pad`.
    fn uniforms(&self, n: usize) -> Uniforms {
        let mut u = Uniforms::new().u32("n", n);
        for axis in 0..2 {
            let (k, s, p, adaptive, count_pad) = match self.spans[axis] {
                Span::Fixed {
                    kernel,
                    stride,
                    padding,
                    count_pad,
                    ..
                } => (kernel, stride, padding, 0, count_pad),
                Span::Adaptive { .. } => (1, 1, 0, 1, true),
            };
            u = u
                .u32(["in_h", "in_w"][axis], self.input[axis])
                .u32(["out_h", "out_w"][axis], self.output[axis])
                .u32(["k_h", "k_w"][axis], k)
                .u32(["s_h", "s_w"][axis], s)
                .u32(["p_h", "p_w"][axis], p)
                .u32(["adaptive_h", "adaptive_w"][axis], adaptive)
                .u32(["count_pad_h", "count_pad_w"][axis], count_pad as usize);
        }
        u
    }
}

/// One pass of a pooling (see [`PoolPass`]): reads the node's inputs, writes its
/// output, one invocation per output element.
#[derive(Debug)]
struct PoolKernel {
    pass: PoolPass,
    geometry: Geometry,
}

impl PoolKernel {
    /// `f(plane, row, column, rows, cols)` for every window in output order, with
    /// the entries of the input it covers.
    fn each_window(&self, mut f: impl FnMut(usize, usize, usize, Range<usize>, Range<usize>)) {
        let g = &self.geometry;
        let [oh, ow] = g.output;
        for p in 0..g.planes {
            for y in 0..oh {
                for x in 0..ow {
                    f(p, y, x, g.inside(0, y), g.inside(1, x));
                }
            }
        }
    }

    /// Each input element's gradient: the sum, over the windows that contain it in
    /// window order, of `term(window, entry)` where it is `Some`.
    fn each_entry(&self, out: &mut [f32], term: impl Fn(usize, usize) -> Option<f32>) {
        let g = &self.geometry;
        let [ih, iw] = g.input;
        let [oh, ow] = g.output;
        for (i, acc) in out[..g.planes * ih * iw].iter_mut().enumerate() {
            let (p, h, w) = (i / (ih * iw), i / iw % ih, i % iw);
            *acc = 0.0;
            for y in g.covering(0, h) {
                for x in g.covering(1, w) {
                    if let Some(v) = term((p * oh + y) * ow + x, h * iw + w) {
                        *acc += v;
                    }
                }
            }
        }
    }

    fn forward_cpu(&self, x: &[f32], out: &mut [f32]) {
        let [ih, iw] = self.geometry.input;
        let mut o = 0;
        self.each_window(|p, y, xo, rows, cols| {
            let plane = &x[p * ih * iw..(p + 1) * ih * iw];
            out[o] = match self.pass {
                PoolPass::MaxIndices => {
                    let (mut best, mut at) = (f32::NEG_INFINITY, rows.start * iw + cols.start);
                    for h in rows {
                        for w in cols.clone() {
                            let v = plane[h * iw + w];
                            if v > best || (v.is_nan() && !best.is_nan()) {
                                (best, at) = (v, h * iw + w);
                            }
                        }
                    }
                    f32::from_bits(at as u32)
                }
                _ => {
                    let mut sum = 0.0f32;
                    for h in rows {
                        for w in cols.clone() {
                            sum += plane[h * iw + w];
                        }
                    }
                    sum / self.geometry.area(y, xo)
                }
            };
            o += 1;
        });
    }
}

impl Kernel for PoolKernel {
    fn reads(&self) -> usize {
        match self.pass {
            PoolPass::Pick | PoolPass::MaxGrad => 2,
            _ => 1,
        }
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let g = &self.geometry;
        let [ih, iw] = g.input;
        let [oh, ow] = g.output;
        match self.pass {
            PoolPass::MaxIndices | PoolPass::Average => self.forward_cpu(x[0], out[0]),
            PoolPass::Pick => {
                for (o, v) in out[0][..g.planes * oh * ow].iter_mut().enumerate() {
                    let at = x[1][o].to_bits() as usize;
                    *v = x[0][o / (oh * ow) * ih * iw + at];
                }
            }
            PoolPass::MaxGrad => self.each_entry(out[0], |o, me| (x[1][o].to_bits() as usize == me).then(|| x[0][o])),
            PoolPass::AverageGrad => self.each_entry(out[0], |o, _| Some(x[0][o] / g.area(o / ow % oh, o % ow))),
        }
    }

    fn wgsl(&self) -> Wgsl {
        let g = &self.geometry;
        let entry = match self.pass {
            PoolPass::MaxIndices => "max_indices",
            PoolPass::Pick => "pick",
            PoolPass::Average => "average",
            PoolPass::MaxGrad => "max_grad",
            PoolPass::AverageGrad => "average_grad",
        };
        let area = match self.pass {
            PoolPass::MaxGrad | PoolPass::AverageGrad => g.input[0] * g.input[1],
            _ => g.output[0] * g.output[1],
        };
        let n = g.planes * area;
        Wgsl::new(SHADER, entry, g.uniforms(n), Grid::Threads(n))
    }
}

/// The shape pooling the last `spans.len()` axes (1 or 2) of `shape` gives, or why
/// it cannot: the message names `op`, the numbers and the input's shape. The input
/// is `[N, C, ..]` or `[C, ..]` (unbatched), as PyTorch's.
pub(crate) fn pooled_shape(op: &str, shape: &[usize], spans: &[Span]) -> Result<Vec<usize>, String> {
    let dims = spans.len();
    if shape.len() != dims + 1 && shape.len() != dims + 2 {
        let layout = if dims == 1 {
            "[N, C, L] or [C, L]"
        } else {
            "[N, C, H, W] or [C, H, W]"
        };
        return Err(format!("{op}: expects an input {layout}, got shape {shape:?}"));
    }
    let mut out = shape.to_vec();
    for (k, span) in spans.iter().enumerate() {
        let axis = shape.len() - dims + k;
        out[axis] = span
            .out_len(op, shape[axis])
            .map_err(|why| format!("{why}; input shape {shape:?}"))?;
    }
    Ok(out)
}

impl Tensor {
    /// A pooling over the last two axes, checked as `op`: `Average`, or max
    /// (`MaxIndices`: the indices, then the values picked at them). The values, and
    /// the indices of a max.
    #[track_caller]
    fn pool2d(&self, op: &str, pass: PoolPass, spans: [Span; 2]) -> (Tensor, Option<Tensor>) {
        self.check_f32(op);
        let out = pooled_shape(op, self.shape(), &spans).unwrap_or_else(|why| panic!("{why}"));
        let node = |pass, inputs, dtype| Tensor::from_node(Op::Pool(Pool { pass, spans }), inputs, out.clone(), dtype);
        if pass != PoolPass::MaxIndices {
            return (node(pass, vec![self.clone()], DType::F32), None);
        }
        let indices = node(PoolPass::MaxIndices, vec![self.clone()], DType::U32);
        let values = node(PoolPass::Pick, vec![self.clone(), indices.clone()], DType::F32);
        (values, Some(indices))
    }

    /// The same pooling over the last axis, as planes of height 1 (the window's
    /// height must be 1, 1, 0: [`PoolWindow::line`]).
    #[track_caller]
    fn pool1d(&self, op: &str, pass: PoolPass, window: PoolWindow) -> Tensor {
        self.check_f32(op);
        if (window.kernel[0], window.stride[0], window.padding[0]) != (1, 1, 0) {
            panic!(
                "{op}: a 1-D window has kernel, stride and padding 1, 1, 0 along the height \
                 (PoolWindow::line), got {}, {}, {}",
                window.kernel[0], window.stride[0], window.padding[0]
            );
        }
        let [rows, span] = window.spans();
        let out = pooled_shape(op, self.shape(), &[span]).unwrap_or_else(|why| panic!("{why}"));
        let mut planes = self.shape().to_vec();
        planes.insert(planes.len() - 1, 1);
        self.reshape(&planes).pool2d(op, pass, [rows, span]).0.reshape(&out)
    }

    /// Max pooling of `[N, C, H, W]` (or `[C, H, W]`) over `kernel`×`kernel` windows
    /// every `stride`, the input padded by `padding` (−∞) on each side, as
    /// `torch.nn.functional.max_pool2d`: `[N, C, OH, OW]` with
    /// `OH = (H + 2·padding − kernel) / stride + 1`.
    ///
    /// The gradient goes to each window's first maximum (row by row; a NaN wins) and
    /// is deterministic: the same bits on the CPU and the GPU, ties included.
    ///
    /// # Panics
    /// If the input is not of rank 3 or 4, `padding` is more than half the kernel, or
    /// the kernel is larger than the padded input; the message names the numbers.
    #[track_caller]
    pub fn max_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Tensor {
        self.max_pool2d_with(PoolWindow::square(kernel, stride, padding))
    }

    /// [`Tensor::max_pool2d`] over any [`PoolWindow`]: non-square kernel, stride
    /// and padding, `ceil_mode` (`count_include_pad` plays no part), as
    /// `torch.nn.functional.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), ceil_mode=…)`.
    ///
    /// # Panics
    /// As [`Tensor::max_pool2d`], per axis.
    #[track_caller]
    pub fn max_pool2d_with(&self, window: PoolWindow) -> Tensor {
        self.max_pool2d_window_with_indices(window).0
    }

    /// [`Tensor::max_pool2d`] and the index `h·W + w` in its plane of each window's
    /// maximum (a label tensor shaped like the values), as `return_indices=True`.
    #[track_caller]
    pub fn max_pool2d_with_indices(&self, kernel: usize, stride: usize, padding: usize) -> (Tensor, Tensor) {
        self.max_pool2d_window_with_indices(PoolWindow::square(kernel, stride, padding))
    }

    /// [`Tensor::max_pool2d_with`] and the indices of the maxima, as
    /// [`Tensor::max_pool2d_with_indices`].
    #[track_caller]
    pub fn max_pool2d_window_with_indices(&self, window: PoolWindow) -> (Tensor, Tensor) {
        let (values, indices) = self.pool2d("max_pool2d", PoolPass::MaxIndices, window.spans());
        (values, indices.expect("a max pooling has indices"))
    }

    /// Max pooling of `[N, C, L]` (or `[C, L]`) over windows of `kernel` every
    /// `stride`, padded by `padding`, as `torch.nn.functional.max_pool1d`; the
    /// gradient is that of [`Tensor::max_pool2d`].
    ///
    /// # Panics
    /// As [`Tensor::max_pool2d`], for rank 2 or 3.
    #[track_caller]
    pub fn max_pool1d(&self, kernel: usize, stride: usize, padding: usize) -> Tensor {
        self.max_pool1d_with(PoolWindow::line(kernel, stride, padding))
    }

    /// [`Tensor::max_pool1d`] over a [`PoolWindow::line`] (its width entries; with
    /// `ceil_mode` as PyTorch's).
    ///
    /// # Panics
    /// As [`Tensor::max_pool1d`], and if the window's height is not 1, 1, 0.
    #[track_caller]
    pub fn max_pool1d_with(&self, window: PoolWindow) -> Tensor {
        self.pool1d("max_pool1d", PoolPass::MaxIndices, window)
    }

    /// Average pooling of `[N, C, H, W]` (or `[C, H, W]`) over `kernel`×`kernel`
    /// windows every `stride`, padded by `padding` zeros that count in the divisor, as
    /// `torch.nn.functional.avg_pool2d` with its defaults (`count_include_pad=True`).
    ///
    /// # Panics
    /// As [`Tensor::max_pool2d`].
    #[track_caller]
    pub fn avg_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Tensor {
        self.avg_pool2d_with(PoolWindow::square(kernel, stride, padding))
    }

    /// [`Tensor::avg_pool2d`] over any [`PoolWindow`]: non-square kernel, stride and
    /// padding, `ceil_mode` and `count_include_pad`, as
    /// `torch.nn.functional.avg_pool2d(x, (kh, kw), (sh, sw), (ph, pw), ceil_mode,
    /// count_include_pad)`. A window's divisor is its size up to the end of the
    /// padded input (with `count_include_pad`) or the number of input entries in it.
    ///
    /// # Panics
    /// As [`Tensor::max_pool2d`], per axis.
    #[track_caller]
    pub fn avg_pool2d_with(&self, window: PoolWindow) -> Tensor {
        self.pool2d("avg_pool2d", PoolPass::Average, window.spans()).0
    }

    /// Average pooling of `[N, C, H, W]` (or `[C, H, W]`) into `out_h`×`out_w` bins,
    /// as `torch.nn.functional.adaptive_avg_pool2d`: bin `i` of `H` rows covers rows
    /// `⌊i·H/out_h⌋ .. ⌈(i+1)·H/out_h⌉` (bins may overlap, or repeat rows when
    /// `out_h > H`). `(1, 1)` is global average pooling.
    ///
    /// # Panics
    /// If the input is not of rank 3 or 4, or a size is 0.
    #[track_caller]
    pub fn adaptive_avg_pool2d(&self, out_h: usize, out_w: usize) -> Tensor {
        let spans = [Span::Adaptive { out: out_h }, Span::Adaptive { out: out_w }];
        self.pool2d("adaptive_avg_pool2d", PoolPass::Average, spans).0
    }
}
