//! Int8 convolutions: a [`Conv2d`] as the int8 GEMM of its unfolded input. The
//! input is padded and its kernel taps gathered into the column matrix
//! `[batch·OH·OW, C·kh·kw]` (im2col, from pads, narrows and a stack: stride and
//! dilation come from where the taps start and how far apart they are), quantized per
//! tensor, multiplied with the per-output-channel int8 kernels `[O, C·kh·kw]` in
//! i32, dequantized with the bias in the GEMM's epilogue, and laid back out as
//! `[batch, O, OH, OW]`. Grouped convolutions are refused. Inference only.

use super::QuantizedLinear;
use crate::nn::Conv2d;
use crate::ops::Conv2dArgs;
use crate::{Error, Result, Tensor};

/// A [`Conv2d`] in int8 (see the module doc).
pub struct QuantizedConv2d {
    /// The kernels as rows `[O, C·kh·kw]`, with the bias.
    gemm: QuantizedLinear,
    in_channels: usize,
    kernel: [usize; 2],
    args: Conv2dArgs,
}

impl QuantizedConv2d {
    /// Quantizes `conv`'s kernels per output channel; inputs will be quantized with
    /// `input_scale` (from [`super::activation_scale`]). `Err` for a grouped
    /// convolution (naming it), a scale that is not positive and finite, or a device
    /// error.
    pub fn new(conv: &Conv2d, input_scale: f32) -> Result<QuantizedConv2d> {
        let (rows, geometry) = QuantizedConv2d::rows(conv)?;
        let gemm = QuantizedLinear::from_weight(&rows, conv.bias.as_ref(), input_scale)?;
        Ok(geometry.with(gemm))
    }

    /// Async form of [`QuantizedConv2d::new`] (weights read back awaited).
    pub async fn new_async(conv: &Conv2d, input_scale: f32) -> Result<QuantizedConv2d> {
        let (rows, geometry) = QuantizedConv2d::rows(conv)?;
        let gemm = QuantizedLinear::from_weight_async(&rows, conv.bias.as_ref(), input_scale).await?;
        Ok(geometry.with(gemm))
    }

    /// The kernels as GEMM rows, and the layer's geometry (its GEMM a placeholder).
    fn rows(conv: &Conv2d) -> Result<(Tensor, Geometry)> {
        let args = conv.args();
        if args.groups != 1 {
            return Err(Error::Invalid(format!(
                "quantize: {} has {} groups; only ungrouped convolutions are quantized",
                crate::nn::Module::name(conv),
                args.groups
            )));
        }
        let w = conv.weight.shape();
        let rows = conv.weight.reshape(&[w[0], w[1] * w[2] * w[3]]);
        Ok((
            rows,
            Geometry {
                in_channels: w[1],
                kernel: [w[2], w[3]],
                args,
            },
        ))
    }

    /// Built from a GEMM over the kernels' rows and the layer's geometry (loading).
    pub(crate) fn from_parts(gemm: QuantizedLinear, conv: &Conv2d) -> Result<QuantizedConv2d> {
        let (_, geometry) = QuantizedConv2d::rows(conv)?;
        Ok(geometry.with(gemm))
    }

    /// The layer on `x` (`[batch, C, H, W]`).
    ///
    /// # Panics
    /// If `x` is not 4-D with the layer's input channels, or smaller than the
    /// (dilated) kernel after padding.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.shape();
        assert!(
            s.len() == 4 && s[1] == self.in_channels,
            "QuantizedConv2d: input {s:?}, the layer takes [batch, {}, H, W]",
            self.in_channels
        );
        let Conv2dArgs {
            stride,
            padding,
            dilation,
            ..
        } = self.args;
        let out = |axis: usize| {
            let span = dilation[axis] * (self.kernel[axis] - 1) + 1;
            let padded = s[2 + axis] + 2 * padding[axis];
            assert!(
                padded >= span,
                "QuantizedConv2d: input {s:?} padded by {padding:?} is smaller than the kernel {:?} (dilation {dilation:?})",
                self.kernel
            );
            (padded - span) / stride[axis] + 1
        };
        let (oh, ow) = (out(0), out(1));
        // Padded, with room at the end for the last tap's strided run.
        let mut xp = x.clone();
        for axis in 0..2 {
            let (o, k) = ([oh, ow][axis], self.kernel[axis]);
            let need = dilation[axis] * (k - 1) + o * stride[axis];
            let padded = s[2 + axis] + 2 * padding[axis];
            xp = xp.pad(2 + axis, padding[axis], padding[axis] + need.saturating_sub(padded));
        }
        let mut taps = Vec::with_capacity(self.kernel[0] * self.kernel[1]);
        for ki in 0..self.kernel[0] {
            let rows = every(&xp, 2, ki * dilation[0], oh, stride[0]);
            for kj in 0..self.kernel[1] {
                taps.push(every(&rows, 3, kj * dilation[1], ow, stride[1]));
            }
        }
        let (b, c, k) = (s[0], s[1], taps.len());
        let columns = Tensor::stack(&taps.iter().collect::<Vec<_>>(), 2) // [B, C, k, OH, OW]
            .permute(&[0, 3, 4, 1, 2])
            .reshape(&[b * oh * ow, c * k]);
        let o = self.gemm.out_features();
        self.gemm
            .forward(&columns)
            .reshape(&[b, oh, ow, o])
            .permute(&[0, 3, 1, 2])
    }

    /// The GEMM over the kernels' rows: codes `[O, C·kh·kw]`, scales, bias.
    pub fn gemm(&self) -> &QuantizedLinear {
        &self.gemm
    }
}

/// The geometry part of a [`QuantizedConv2d`].
struct Geometry {
    in_channels: usize,
    kernel: [usize; 2],
    args: Conv2dArgs,
}

impl Geometry {
    fn with(self, gemm: QuantizedLinear) -> QuantizedConv2d {
        QuantizedConv2d {
            gemm,
            in_channels: self.in_channels,
            kernel: self.kernel,
            args: self.args,
        }
    }
}

/// Elements `start + stride·i`, `i < count`, along `axis` (the tensor long enough).
fn every(x: &Tensor, axis: usize, start: usize, count: usize, stride: usize) -> Tensor {
    let run = x.narrow(axis, start, count * stride);
    if stride == 1 {
        return run;
    }
    let mut shape = run.shape().to_vec();
    shape[axis] = count;
    shape.insert(axis + 1, stride);
    run.reshape(&shape).select(axis + 1, 0)
}
