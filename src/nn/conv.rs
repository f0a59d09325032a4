//! Convolution layers with PyTorch's layouts, names and initialisation: `Conv1d`
//! (`[N, C, L]`), `Conv2d` and `ConvTranspose2d` (`[N, C, H, W]`), each with
//! parameters `weight` and `bias`. The ops are `Tensor::conv1d`, `Tensor::conv2d`
//! and `Tensor::conv_transpose2d` (`src/ops/conv.rs`).

use super::{Module, TensorSpec};
use crate::ops::conv::{conv_output_shape, conv_output_shape_2d, ConvKind};
use crate::{Conv2dArgs, ConvArgs, Device, Error, Result, Tensor};

/// A convolution layer's settings; `Default` is PyTorch's: stride 1, padding 0,
/// dilation 1, one group, with bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvConfig {
    /// Step between output pixels (at least 1).
    pub stride: usize,
    /// Zeros added on both sides of each spatial axis (a transposed convolution
    /// removes that many from its output, as PyTorch's).
    pub padding: usize,
    /// Step between kernel taps (at least 1).
    pub dilation: usize,
    /// Channel groups; both channel counts must divide by it (`groups == in ==
    /// out` is a depthwise convolution).
    pub groups: usize,
    /// Whether the layer has a bias per output channel.
    pub bias: bool,
}

impl Default for ConvConfig {
    fn default() -> ConvConfig {
        ConvConfig {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }
}

impl ConvConfig {
    fn args(&self, output_padding: usize) -> ConvArgs {
        ConvArgs {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
            output_padding,
        }
    }
}

/// A layer's parameters, initialised as PyTorch's `_ConvNd.reset_parameters`:
/// weight and bias uniform in ±1/√fan_in (kaiming_uniform with a = √5), fan_in =
/// `weight.shape[1] · kernel taps`, from the thread's seed stream (`wgnn::manual_seed`). `channels` are (in, out);
/// the weight is `[out, in / groups, k…]`, or `[in, out / groups, k…]` transposed.
fn init(
    layer: &str,
    channels: (usize, usize),
    kernel: &[usize],
    config: &ConvConfig,
    transposed: bool,
    device: &Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let (c_in, c_out) = channels;
    let setting = |setting, message| Err(Error::InvalidSetting { setting, message });
    if config.stride == 0 || config.dilation == 0 || config.groups == 0 || kernel.contains(&0) {
        let message = format!(
            "{layer}: kernel {kernel:?}, stride {}, dilation {} and groups {} must all be at least 1",
            config.stride, config.dilation, config.groups
        );
        return setting("kernel_size", message);
    }
    let g = config.groups;
    if !c_in.is_multiple_of(g) || !c_out.is_multiple_of(g) {
        let message =
            format!("{layer}: in_channels {c_in} and out_channels {c_out} must both be divisible by groups {g}");
        return setting("groups", message);
    }
    let mut shape = if transposed {
        vec![c_in, c_out / g]
    } else {
        vec![c_out, c_in / g]
    };
    shape.extend(kernel);
    let fan_in = shape[1..].iter().product::<usize>();
    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
    let weight = Tensor::rand(&shape, -bound, bound, crate::rng::next_seed(), device)?.requires_grad()?;
    let bias = if config.bias {
        let b = Tensor::rand(&[c_out], -bound, bound, crate::rng::next_seed(), device)?;
        Some(b.requires_grad()?)
    } else {
        None
    };
    Ok((weight, bias))
}

/// The spec of a layer's output, or why the input does not fit.
fn spec(
    kind: ConvKind,
    input: &TensorSpec,
    weight: &Tensor,
    args: ConvArgs,
) -> std::result::Result<Option<TensorSpec>, String> {
    input.expect_f32()?;
    let (shape, _) = conv_output_shape(kind, &input.shape, weight.shape(), args)?;
    Ok(Some(TensorSpec::f32(&shape)))
}

/// A layer's name as PyTorch prints it, e.g. `Conv2d(3, 8, kernel_size=(3, 3), stride=(2, 2))`.
fn describe(layer: &str, channels: (usize, usize), kernel: &[usize], config: &ConvConfig) -> String {
    let per_axis = |v: usize| vec![v; kernel.len()];
    let (stride, padding, dilation) = (
        per_axis(config.stride),
        per_axis(config.padding),
        per_axis(config.dilation),
    );
    describe_axes(layer, channels, kernel, [&stride, &padding, &dilation], config)
}

/// [`describe`] with stride, padding and dilation given per spatial axis (the
/// config's groups and bias).
fn describe_axes(
    layer: &str,
    channels: (usize, usize),
    kernel: &[usize],
    [stride, padding, dilation]: [&[usize]; 3],
    config: &ConvConfig,
) -> String {
    let tuple = |v: &[usize]| {
        let parts: Vec<String> = v.iter().map(usize::to_string).collect();
        format!("({}{})", parts.join(", "), if v.len() == 1 { "," } else { "" })
    };
    let mut s = format!("{layer}({}, {}, kernel_size={}", channels.0, channels.1, tuple(kernel));
    if stride.iter().any(|&v| v != 1) {
        s += &format!(", stride={}", tuple(stride));
    }
    if padding.iter().any(|&v| v != 0) {
        s += &format!(", padding={}", tuple(padding));
    }
    if dilation.iter().any(|&v| v != 1) {
        s += &format!(", dilation={}", tuple(dilation));
    }
    if config.groups != 1 {
        s += &format!(", groups={}", config.groups);
    }
    if !config.bias {
        s += ", bias=False";
    }
    s + ")"
}

/// PyTorch's `nn.Conv2d`: `[N, C_in, H, W] → [N, C_out, H_out, W_out]` with weight
/// `[C_out, C_in / groups, kh, kw]` and bias `[C_out]` (see [`Tensor::conv2d`]).
#[derive(Module)]
pub struct Conv2d {
    /// `[out_channels, in_channels / groups, kh, kw]`, trainable; `state_dict()` name `weight`.
    pub weight: Tensor,
    /// `[out_channels]`, trainable, if the layer has one; `state_dict()` name `bias`.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation, groups (`bias` says whether it was made with one).
    /// For a layer made by [`Conv2d::with_args`] with different values along the
    /// height and the width, its stride, padding and dilation are the height's and
    /// only `groups` is read from here: [`Conv2d::args`] has both axes.
    #[module(skip)]
    pub config: ConvConfig,
    /// Per-axis stride, padding and dilation ([`Conv2d::with_args`]), else `None`:
    /// `config`'s along both axes.
    #[module(skip)]
    axes: Option<Conv2dArgs>,
}

impl Conv2d {
    /// A layer with a square `kernel_size × kernel_size` kernel. Panics on settings
    /// [`Conv2d::try_new`] rejects (the message names the layer and the numbers).
    #[track_caller]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        config: ConvConfig,
        device: &Device,
    ) -> Conv2d {
        Conv2d::try_new(in_channels, out_channels, [kernel_size; 2], config, device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A layer with a `[kh, kw]` kernel; `Err` when a channel count does not divide
    /// by `groups`, a size is 0, or the device cannot hold the parameters.
    pub fn try_new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 2],
        config: ConvConfig,
        device: &Device,
    ) -> Result<Conv2d> {
        let (weight, bias) = init(
            "Conv2d",
            (in_channels, out_channels),
            &kernel_size,
            &config,
            false,
            device,
        )?;
        Ok(Conv2d {
            weight,
            bias,
            config,
            axes: None,
        })
    }

    /// PyTorch's `nn.Conv2d(in_channels, out_channels, (kh, kw), stride=(sh, sw),
    /// padding=(ph, pw), dilation=(dh, dw), groups, bias)`: a `[kh, kw]` kernel and a
    /// (height, width) pair for each setting (`args.output_padding` is not used).
    /// Panics on what [`Conv2d::try_with_args`] rejects.
    ///
    /// ```
    /// use wgnn::nn::{Conv2d, Module};
    /// use wgnn::{Conv2dArgs, Device, Tensor};
    ///
    /// let dev = Device::cpu();
    /// let args = Conv2dArgs { stride: [1, 2], padding: [1, 2], ..Default::default() };
    /// let conv = Conv2d::with_args(3, 8, [3, 5], args, true, &dev);
    /// let x = Tensor::randn(&[2, 3, 7, 9], 0, &dev).unwrap();
    /// assert_eq!(conv.forward(&x).shape(), &[2, 8, 7, 5]);
    /// assert_eq!(conv.name(), "Conv2d(3, 8, kernel_size=(3, 5), stride=(1, 2), padding=(1, 2))");
    /// ```
    #[track_caller]
    pub fn with_args(
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 2],
        args: Conv2dArgs,
        bias: bool,
        device: &Device,
    ) -> Conv2d {
        Conv2d::try_with_args(in_channels, out_channels, kernel_size, args, bias, device)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Conv2d::with_args`]; `Err` when a stride or dilation is 0, or for what
    /// [`Conv2d::try_new`] rejects.
    pub fn try_with_args(
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 2],
        args: Conv2dArgs,
        bias: bool,
        device: &Device,
    ) -> Result<Conv2d> {
        if args.stride.contains(&0) || args.dilation.contains(&0) {
            return Err(Error::InvalidSetting {
                setting: "stride",
                message: format!(
                    "Conv2d: stride {:?} and dilation {:?} must be at least 1 along both axes",
                    args.stride, args.dilation
                ),
            });
        }
        let config = ConvConfig {
            stride: args.stride[0],
            padding: args.padding[0],
            dilation: args.dilation[0],
            groups: args.groups,
            bias,
        };
        let layer = Conv2d::try_new(in_channels, out_channels, kernel_size, config, device)?;
        let args = Conv2dArgs {
            output_padding: [0; 2],
            ..args
        };
        Ok(Conv2d {
            axes: Some(args),
            ..layer
        })
    }

    /// The stride, padding, dilation (per axis) and groups the layer convolves with.
    pub fn args(&self) -> Conv2dArgs {
        match self.axes {
            Some(axes) => Conv2dArgs {
                groups: self.config.groups,
                ..axes
            },
            None => self.config.args(0).into(),
        }
    }
}

impl Module for Conv2d {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d_with(&self.weight, self.bias.as_ref(), self.args())
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        input.expect_f32()?;
        let (shape, _) = conv_output_shape_2d(ConvKind::Conv2d, &input.shape, self.weight.shape(), self.args())?;
        Ok(Some(TensorSpec::f32(&shape)))
    }

    fn name(&self) -> String {
        let w = self.weight.shape();
        let a = self.args();
        let axes = [&a.stride[..], &a.padding[..], &a.dilation[..]];
        describe_axes("Conv2d", (w[1] * self.config.groups, w[0]), &w[2..], axes, &self.config)
    }
}

/// PyTorch's `nn.Conv1d`: `[N, C_in, L] → [N, C_out, L_out]` with weight `[C_out,
/// C_in / groups, k]` and bias `[C_out]` (see [`Tensor::conv1d`]).
#[derive(Module)]
pub struct Conv1d {
    /// `[out_channels, in_channels / groups, k]`, trainable; `state_dict()` name `weight`.
    pub weight: Tensor,
    /// `[out_channels]`, trainable, if the layer has one; `state_dict()` name `bias`.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation, groups.
    #[module(skip)]
    pub config: ConvConfig,
}

impl Conv1d {
    /// A layer with a kernel of `kernel_size` taps. Panics on settings
    /// [`Conv1d::try_new`] rejects (the message names the layer and the numbers).
    #[track_caller]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        config: ConvConfig,
        device: &Device,
    ) -> Conv1d {
        Conv1d::try_new(in_channels, out_channels, kernel_size, config, device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Conv1d::new`]; `Err` when a channel count does not divide by `groups`, a
    /// size is 0, or the device cannot hold the parameters.
    pub fn try_new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        config: ConvConfig,
        device: &Device,
    ) -> Result<Conv1d> {
        let (weight, bias) = init(
            "Conv1d",
            (in_channels, out_channels),
            &[kernel_size],
            &config,
            false,
            device,
        )?;
        Ok(Conv1d { weight, bias, config })
    }
}

impl Module for Conv1d {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv1d(&self.weight, self.bias.as_ref(), self.config.args(0))
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        spec(ConvKind::Conv1d, input, &self.weight, self.config.args(0))
    }

    fn name(&self) -> String {
        let w = self.weight.shape();
        describe("Conv1d", (w[1] * self.config.groups, w[0]), &w[2..], &self.config)
    }
}

/// PyTorch's `nn.ConvTranspose2d`: `[N, C_in, H, W] → [N, C_out, H_out, W_out]` with
/// weight `[C_in, C_out / groups, kh, kw]` and bias `[C_out]` (see
/// [`Tensor::conv_transpose2d`]); the upsampling half of a convolutional autoencoder.
#[derive(Module)]
pub struct ConvTranspose2d {
    /// `[in_channels, out_channels / groups, kh, kw]`, trainable; `state_dict()` name `weight`.
    pub weight: Tensor,
    /// `[out_channels]`, trainable, if the layer has one; `state_dict()` name `bias`.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation, groups.
    #[module(skip)]
    pub config: ConvConfig,
    /// Extra rows and columns on one side of the output (below the stride); 0 by
    /// default, set with [`ConvTranspose2d::with_output_padding`].
    #[module(skip)]
    pub output_padding: usize,
}

impl ConvTranspose2d {
    /// A layer with a square `kernel_size × kernel_size` kernel. Panics on settings
    /// [`ConvTranspose2d::try_new`] rejects (the message names the layer and the
    /// numbers).
    #[track_caller]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        config: ConvConfig,
        device: &Device,
    ) -> ConvTranspose2d {
        ConvTranspose2d::try_new(in_channels, out_channels, [kernel_size; 2], config, device)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A layer with a `[kh, kw]` kernel; `Err` when a channel count does not divide
    /// by `groups`, a size is 0, or the device cannot hold the parameters.
    pub fn try_new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: [usize; 2],
        config: ConvConfig,
        device: &Device,
    ) -> Result<ConvTranspose2d> {
        let channels = (in_channels, out_channels);
        let (weight, bias) = init("ConvTranspose2d", channels, &kernel_size, &config, true, device)?;
        Ok(ConvTranspose2d {
            weight,
            bias,
            config,
            output_padding: 0,
        })
    }

    /// The layer with this `output_padding` (PyTorch's argument of that name); `Err`
    /// unless it is below the stride.
    pub fn with_output_padding(mut self, output_padding: usize) -> Result<ConvTranspose2d> {
        if output_padding >= self.config.stride {
            return Err(Error::InvalidSetting {
                setting: "output_padding",
                message: format!(
                    "ConvTranspose2d: output_padding {output_padding} must be smaller than the stride {}",
                    self.config.stride
                ),
            });
        }
        self.output_padding = output_padding;
        Ok(self)
    }
}

impl Module for ConvTranspose2d {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv_transpose2d(&self.weight, self.bias.as_ref(), self.config.args(self.output_padding))
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        let args = self.config.args(self.output_padding);
        spec(ConvKind::ConvTranspose2d, input, &self.weight, args)
    }

    fn name(&self) -> String {
        let w = self.weight.shape();
        describe(
            "ConvTranspose2d",
            (w[0], w[1] * self.config.groups),
            &w[2..],
            &self.config,
        )
    }
}

/// A convolution that computes `bn(conv(x))` of an evaluation-mode batch norm in one
/// product, as PyTorch's `torch.nn.utils.fusion.fuse_conv_bn_eval`: with
/// `s = γ / √(running_var + eps)`, the weight `W · s` per output channel and the bias
/// `(b − running_mean) · s + β` (in f64, rounded once). For inference: the result
/// is a new layer on the conv's device, trainable like any other, that does not
/// update running statistics. Its outputs are those of the pair up to rounding —
/// the products sum other numbers — within about 1e-6 relative (tested), not the
/// same bits. Reads the layers' values back once.
///
/// `Err` naming the numbers when the batch norm's channels are not the
/// convolution's output channels, or when it keeps no running statistics
/// (`track_running_stats: false` normalizes with each batch's own).
pub fn fuse_conv_bn_eval(conv: &Conv2d, bn: &super::BatchNorm2d) -> Result<Conv2d> {
    let fused = fuse_conv_bn_eval_async(conv, bn);
    crate::backend::wait::wait(fused, "fuse_conv_bn_eval", "fuse_conv_bn_eval_async")
}

/// Async form of [`fuse_conv_bn_eval`]: the layers' values are read back awaited (in
/// a browser, on WebGPU).
pub async fn fuse_conv_bn_eval_async(conv: &Conv2d, bn: &super::BatchNorm2d) -> Result<Conv2d> {
    let out = conv.weight.shape()[0];
    if bn.num_features() != out {
        return Err(Error::InvalidSetting {
            setting: "num_features",
            message: format!(
                "fuse_conv_bn_eval: the BatchNorm2d has {} channels, the Conv2d {out} output channels",
                bn.num_features()
            ),
        });
    }
    if !bn.config().track_running_stats {
        return Err(Error::InvalidSetting {
            setting: "track_running_stats",
            message: "fuse_conv_bn_eval: the BatchNorm2d keeps no running statistics (track_running_stats: false)"
                .into(),
        });
    }
    let wide = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
    let w = wide(conv.weight.to_vec_async().await?);
    let mean = wide(bn.running_mean.to_vec_async().await?);
    let var = wide(bn.running_var.to_vec_async().await?);
    let gamma = wide(bn.weight.to_vec_async().await?);
    let beta = wide(bn.bias.to_vec_async().await?);
    let b = match &conv.bias {
        Some(b) => wide(b.to_vec_async().await?),
        None => vec![0.0; out],
    };
    let scale: Vec<f64> = (0..out)
        .map(|o| gamma[o] / (var[o] + f64::from(bn.eps)).sqrt())
        .collect();
    let per = w.len() / out.max(1);
    let weight: Vec<f32> = w.iter().enumerate().map(|(i, v)| (v * scale[i / per]) as f32).collect();
    let bias: Vec<f32> = (0..out)
        .map(|o| ((b[o] - mean[o]) * scale[o] + beta[o]) as f32)
        .collect();
    let device = conv.weight.device();
    Ok(Conv2d {
        weight: Tensor::from_vec(weight, conv.weight.shape(), device)?.requires_grad()?,
        bias: Some(Tensor::from_vec(bias, &[out], device)?.requires_grad()?),
        config: ConvConfig {
            bias: true,
            ..conv.config
        },
        axes: conv.axes,
    })
}
