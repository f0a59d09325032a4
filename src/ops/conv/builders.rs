//! The convolution family's builders on [`Tensor`] — `conv1d`, `conv2d`,
//! `conv_transpose2d`, with PyTorch's arguments and shape rules — and the shape check
//! the layers of `wgnn::nn` share with them. The kernels and the gradient are in
//! `ops/conv.rs`, beside `shaders/conv.wgsl`.

use super::{Conv, ConvGeometry, ConvPass};
use crate::Tensor;

/// The arguments of PyTorch's `F.conv1d` / `F.conv2d` / `F.conv_transpose2d` after
/// the tensors, the same along every spatial axis. `Default` is PyTorch's: stride 1,
/// padding 0, dilation 1, one group, no output padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvArgs {
    /// Step between output pixels, in input pixels (at least 1).
    pub stride: usize,
    /// Zeros added on both sides of each spatial axis (for a transposed convolution:
    /// removed from the output, as PyTorch's `padding`).
    pub padding: usize,
    /// Step between kernel taps (at least 1).
    pub dilation: usize,
    /// Channel groups: input and output channels split into this many independent
    /// convolutions (`groups == channels` is a depthwise convolution).
    pub groups: usize,
    /// Transposed convolution only: extra rows and columns on one side of the output,
    /// to pick among the sizes a strided convolution maps to one size (below the
    /// stride).
    pub output_padding: usize,
}

impl Default for ConvArgs {
    fn default() -> ConvArgs {
        ConvArgs {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            output_padding: 0,
        }
    }
}

/// [`ConvArgs`] with a (height, width) pair for each spatial setting: PyTorch's
/// tuple arguments of `F.conv2d` / `F.conv_transpose2d` (`stride=(2, 1)`, …).
/// `Default` is PyTorch's; `From<ConvArgs>` repeats each value along both axes.
///
/// ```
/// use wgnn::{Conv2dArgs, Device, Tensor};
///
/// let dev = Device::cpu();
/// let x = Tensor::randn(&[1, 2, 7, 9], 0, &dev).unwrap();
/// let w = Tensor::randn(&[4, 2, 3, 5], 1, &dev).unwrap();
/// let args = Conv2dArgs { stride: [2, 1], padding: [1, 2], ..Default::default() };
/// assert_eq!(x.conv2d_with(&w, None, args).shape(), &[1, 4, 4, 9]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dArgs {
    /// Step between output pixels along (height, width), in input pixels (at least 1).
    pub stride: [usize; 2],
    /// Zeros added on both sides of the height and of the width (a transposed
    /// convolution: removed from its output).
    pub padding: [usize; 2],
    /// Step between kernel taps along (height, width) (at least 1).
    pub dilation: [usize; 2],
    /// Channel groups, as [`ConvArgs::groups`].
    pub groups: usize,
    /// Transposed convolution only: extra rows and columns on one side of the
    /// output, each below its axis's stride.
    pub output_padding: [usize; 2],
}

impl Default for Conv2dArgs {
    fn default() -> Conv2dArgs {
        ConvArgs::default().into()
    }
}

impl From<ConvArgs> for Conv2dArgs {
    fn from(a: ConvArgs) -> Conv2dArgs {
        Conv2dArgs {
            stride: [a.stride; 2],
            padding: [a.padding; 2],
            dilation: [a.dilation; 2],
            groups: a.groups,
            output_padding: [a.output_padding; 2],
        }
    }
}

impl Conv2dArgs {
    /// A 1-D convolution's arguments as those of a 2-D one of height 1.
    fn line(a: ConvArgs) -> Conv2dArgs {
        Conv2dArgs {
            stride: [1, a.stride],
            padding: [0, a.padding],
            dilation: [1, a.dilation],
            groups: a.groups,
            output_padding: [0, a.output_padding],
        }
    }
}

/// Which of the family's public ops a shape check is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConvKind {
    Conv1d,
    Conv2d,
    ConvTranspose2d,
}

impl ConvKind {
    fn name(self) -> &'static str {
        match self {
            ConvKind::Conv1d => "conv1d",
            ConvKind::Conv2d => "conv2d",
            ConvKind::ConvTranspose2d => "conv_transpose2d",
        }
    }
    /// Spatial axes.
    fn spatial(self) -> usize {
        match self {
            ConvKind::Conv1d => 1,
            _ => 2,
        }
    }
}

/// The output shape of `kind` on an input and a weight of these shapes, or why they
/// do not fit (without the op's name: callers prefix their own). The geometry is
/// that of the forward convolution the op computes (for a transposed one: the
/// convolution whose input gradient it is).
pub(crate) fn conv_output_shape(
    kind: ConvKind,
    x: &[usize],
    w: &[usize],
    args: ConvArgs,
) -> std::result::Result<(Vec<usize>, ConvGeometry), String> {
    let args = match kind {
        ConvKind::Conv1d => Conv2dArgs::line(args),
        _ => args.into(),
    };
    conv_output_shape_2d(kind, x, w, args)
}

/// [`conv_output_shape`] with per-axis arguments (a 1-D convolution's as
/// [`Conv2dArgs::line`] makes them).
pub(crate) fn conv_output_shape_2d(
    kind: ConvKind,
    x: &[usize],
    w: &[usize],
    args: Conv2dArgs,
) -> std::result::Result<(Vec<usize>, ConvGeometry), String> {
    let rank = 2 + kind.spatial();
    if x.len() != rank || w.len() != rank {
        let layout = if rank == 3 { "[N, C, L]" } else { "[N, C, H, W]" };
        return Err(format!(
            "expects an input {layout} and a weight of rank {rank}, got input {x:?} and weight {w:?}"
        ));
    }
    let one_d = rank == 3;
    // Square settings print as one number, as they always did.
    let show = |v: [usize; 2]| match one_d || v[0] == v[1] {
        true => v[1].to_string(),
        false => format!("{v:?}"),
    };
    let Conv2dArgs {
        stride,
        padding,
        dilation,
        groups,
        output_padding,
    } = args;
    if stride.contains(&0) || dilation.contains(&0) || groups == 0 {
        return Err(format!(
            "stride ({}), dilation ({}) and groups ({groups}) must be at least 1",
            show(stride),
            show(dilation)
        ));
    }
    let transposed = kind == ConvKind::ConvTranspose2d;
    let (c_in, c_out) = (x[1], channels_out(transposed, x, w, groups)?);
    if transposed && (0..2).any(|a| output_padding[a] >= stride[a]) {
        return Err(format!(
            "output_padding {} must be smaller than the stride {}",
            show(output_padding),
            show(stride)
        ));
    }
    // Pad the 1-D case to 2-D with a height of 1.
    let spatial = |s: &[usize]| -> [usize; 2] {
        if rank == 3 {
            [1, s[2]]
        } else {
            [s[2], s[3]]
        }
    };
    let (size, kernel) = (spatial(x), spatial(w));
    let mut out = [0; 2];
    for a in 0..2 {
        let span = dilation[a] * (kernel[a].max(1) - 1) + 1;
        if transposed {
            let full = (size[a].max(1) - 1) * stride[a] + span + output_padding[a];
            out[a] = full.checked_sub(2 * padding[a]).filter(|&o| o > 0).ok_or_else(|| {
                format!(
                    "input {x:?} with weight {w:?}, stride {}, padding {}, dilation {} gives no output",
                    stride[a], padding[a], dilation[a]
                )
            })?;
        } else {
            let padded = size[a] + 2 * padding[a];
            if kernel[a] == 0 || span > padded {
                let axes = &x[2..];
                return Err(format!(
                    "kernel {:?} (dilated to {span} along axis {}) is larger than the padded input: input {x:?} \
                     (spatial {axes:?}) with padding {}",
                    &w[2..],
                    a + 2 - (2 - kind.spatial()),
                    padding[a]
                ));
            }
            out[a] = (padded - span) / stride[a] + 1;
        }
    }
    let batch = x[0];
    let geometry = if transposed {
        ConvGeometry {
            batch,
            c_in: c_out,
            c_out: c_in,
            groups,
            input: out,
            kernel,
            output: size,
            stride,
            padding,
            dilation,
        }
    } else {
        ConvGeometry {
            batch,
            c_in,
            c_out,
            groups,
            input: size,
            kernel,
            output: out,
            stride,
            padding,
            dilation,
        }
    };
    let mut shape = vec![batch, c_out];
    shape.extend(if one_d { &out[1..] } else { &out[..] });
    Ok((shape, geometry))
}

/// The op's output channels, or why the channels of input, weight and groups do not
/// fit together.
fn channels_out(transposed: bool, x: &[usize], w: &[usize], groups: usize) -> std::result::Result<usize, String> {
    let c_in = x[1];
    // A transposed convolution's weight is [C_in, C_out / groups, ..].
    let c_out = if transposed { w[1] * groups } else { w[0] };
    if !c_in.is_multiple_of(groups) || !c_out.is_multiple_of(groups) {
        return Err(format!(
            "{c_in} input channels and {c_out} output channels are not both divisible by groups {groups} \
             (input {x:?}, weight {w:?})"
        ));
    }
    if transposed && w[0] != c_in {
        return Err(format!(
            "weight {w:?} ([C_in, C_out / groups, ..]) is for {} input channels, the input {x:?} has {c_in}",
            w[0]
        ));
    }
    if !transposed && w[1] != c_in / groups {
        return Err(format!(
            "weight {w:?} expects {} input channels per group, the input {x:?} has {} ({c_in} in {groups} groups)",
            w[1],
            c_in / groups
        ));
    }
    Ok(c_out)
}

impl Tensor {
    /// PyTorch's `F.conv2d`: `x [N, C_in, H, W]`, `weight [C_out, C_in / groups, kh,
    /// kw]`, optional `bias [C_out]` → `[N, C_out, H_out, W_out]` with `H_out =
    /// (H + 2·padding − dilation·(kh − 1) − 1) / stride + 1` (likewise W). One kernel
    /// launch forward; its backward is two (input and weight gradients) plus the
    /// bias's sum.
    ///
    /// # Panics
    /// On ranks other than 4, channels that do not divide by `groups` or do not match
    /// the weight, a (dilated) kernel larger than the padded input, or a bias that is
    /// not `[C_out]`; the message names `conv2d` and the shapes.
    #[track_caller]
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, args: ConvArgs) -> Tensor {
        self.conv_op(ConvKind::Conv2d, weight, bias, args.into())
    }

    /// [`Tensor::conv2d`] with a (height, width) pair for stride, padding and
    /// dilation, as PyTorch's `F.conv2d(x, w, b, stride=(sh, sw), padding=(ph, pw),
    /// dilation=(dh, dw), groups)`; `output_padding` is ignored.
    ///
    /// # Panics
    /// As [`Tensor::conv2d`], per axis.
    #[track_caller]
    pub fn conv2d_with(&self, weight: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs) -> Tensor {
        let args = Conv2dArgs {
            output_padding: [0; 2],
            ..args
        };
        self.conv_op(ConvKind::Conv2d, weight, bias, args)
    }

    /// PyTorch's `F.conv1d`: `x [N, C_in, L]`, `weight [C_out, C_in / groups, k]`,
    /// optional `bias [C_out]` → `[N, C_out, L_out]` (a 2-D convolution of height 1).
    ///
    /// # Panics
    /// As [`Tensor::conv2d`], naming `conv1d`.
    #[track_caller]
    pub fn conv1d(&self, weight: &Tensor, bias: Option<&Tensor>, args: ConvArgs) -> Tensor {
        self.conv_op(ConvKind::Conv1d, weight, bias, Conv2dArgs::line(args))
    }

    /// PyTorch's `F.conv_transpose2d`: `x [N, C_in, H, W]`, `weight [C_in, C_out /
    /// groups, kh, kw]`, optional `bias [C_out]` → `[N, C_out, H_out, W_out]` with
    /// `H_out = (H − 1)·stride − 2·padding + dilation·(kh − 1) + output_padding + 1`:
    /// the gradient of `conv2d` with respect to its input, computed by the same
    /// kernel. `output_padding` must be below the stride.
    ///
    /// # Panics
    /// On ranks other than 4, channels that do not divide by `groups`, a weight whose
    /// first axis is not `C_in`, an `output_padding` not below the stride, an empty
    /// output, or a bias that is not `[C_out]`; the message names `conv_transpose2d`
    /// and the shapes.
    #[track_caller]
    pub fn conv_transpose2d(&self, weight: &Tensor, bias: Option<&Tensor>, args: ConvArgs) -> Tensor {
        self.conv_op(ConvKind::ConvTranspose2d, weight, bias, args.into())
    }

    /// [`Tensor::conv_transpose2d`] with a (height, width) pair for stride, padding,
    /// dilation and output padding, as PyTorch's tuple arguments.
    ///
    /// # Panics
    /// As [`Tensor::conv_transpose2d`], per axis.
    #[track_caller]
    pub fn conv_transpose2d_with(&self, weight: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs) -> Tensor {
        self.conv_op(ConvKind::ConvTranspose2d, weight, bias, args)
    }

    #[track_caller]
    fn conv_op(&self, kind: ConvKind, weight: &Tensor, bias: Option<&Tensor>, args: Conv2dArgs) -> Tensor {
        let name = kind.name();
        self.check_f32(name);
        weight.check_f32(name);
        self.check_same_device(weight, name);
        let (shape, geometry) = conv_output_shape_2d(kind, self.shape(), weight.shape(), args)
            .unwrap_or_else(|reason| panic!("{name}: {reason}"));
        let c_out = shape[1];
        if let Some(b) = bias {
            b.check_f32(name);
            self.check_same_device(b, name);
            assert!(
                b.shape() == [c_out],
                "{name}: bias shape {:?} does not match the {c_out} output channels ([{c_out}])",
                b.shape()
            );
        }
        // The kernels see 2-D geometry: a 1-D operand gains a height of 1.
        let as_2d = |t: &Tensor| match kind {
            ConvKind::Conv1d => {
                let s = t.shape();
                t.reshape(&[s[0], s[1], 1, s[2]])
            }
            _ => t.clone(),
        };
        let (x, w) = (as_2d(self), as_2d(weight));
        let out = match kind {
            ConvKind::ConvTranspose2d => {
                let y = Conv::node(ConvPass::InputGrad, geometry, vec![x, w]);
                match bias {
                    Some(b) => &y + &b.reshape(&[1, c_out, 1, 1]),
                    None => y,
                }
            }
            _ => {
                let mut inputs = vec![x, w];
                inputs.extend(bias.cloned());
                let pass = ConvPass::Forward {
                    bias: bias.is_some(),
                    act: None,
                };
                Conv::node(pass, geometry, inputs)
            }
        };
        if out.shape() == &shape[..] {
            out
        } else {
            out.reshape(&shape)
        }
    }
}
