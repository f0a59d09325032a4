//! Int8 post-training quantization of `Linear` layers: weights per output channel,
//! symmetric (`w ≈ s_w[o] · q`, `q ∈ [−127, 127]`, `s_w[o] = max|w[o, :]| / 127`),
//! activations per tensor with a scale calibrated on sample data ([`Calibration`]:
//! the largest magnitude, or a percentile of the magnitudes that ignores outliers),
//! and an int8 × int8 → i32 GEMM with the dequantization and the bias in its
//! epilogue (`src/ops/quant.rs`: the same integers on the CPU and the GPU).
//!
//! [`QuantizedSequential::quantize`] turns a trained [`Sequential`] whose trainable
//! layers are `Linear` and ungrouped `Conv2d` ones ([`QuantizedConv2d`]: the int8 GEMM
//! of the unfolded input; a `BatchNorm2d` right after a convolution is folded into it
//! first), with activations, pooling, dropout, flatten… between them, into an int8
//! model for inference; [`QuantizedLstm`] and [`QuantizedGru`] run a recurrent
//! layer's gate products in int8; [`QuantizedSequential::half`] into one with
//! half-precision weights ([`HalfLinear`]: f16 storage, f32 arithmetic);
//! [`QuantizedSequential::save`] writes its codes as safetensors I8 (a quarter of the
//! f32 file) or F16 (half), and [`QuantizedSequential::load`] reads them into the same
//! architecture.
//!
//! Error bound: with `|x| ≤ 127·s_x` (no clipping), each output differs from the
//! f32 layer's by at most `½·s_x·Σ|w| + ½·Σ|x|·s_w + ¼·k·s_x·s_w` (the rounding of
//! each code by at most half a step), which the tests check against an f64
//! reference.

mod conv;
mod recurrent;

pub use conv::QuantizedConv2d;
pub use recurrent::{QuantizedGru, QuantizedLstm};

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::backend::wait::wait;
use crate::nn::{BatchNorm2d, Conv2d, Linear, Module, Sequential};
use crate::tensor::DType;
use crate::{Device, Error, Result, Tensor};

/// How an activation scale is chosen from calibration data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Calibration {
    /// `max|x| / 127`: nothing is clipped.
    MinMax,
    /// The given percentile (in `(0, 100]`) of `|x|`, over 127: the rare largest
    /// values are clipped, the rest resolved more finely.
    Percentile(f32),
}

/// The activation scale of `values` by `method`. `Err` for no values, a percentile
/// outside `(0, 100]`, or non-finite values. All zeros give scale 1.
pub fn activation_scale(values: &[f32], method: Calibration) -> Result<f32> {
    if values.is_empty() {
        return Err(Error::Invalid(
            "quantize: no calibration data (an activation scale needs sample inputs)".into(),
        ));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "quantize: calibration value {i} is {}",
            values[i]
        )));
    }
    let mut mags: Vec<f32> = values.iter().map(|v| v.abs()).collect();
    let top = match method {
        Calibration::MinMax => mags.iter().copied().fold(0.0, f32::max),
        Calibration::Percentile(p) => {
            if !(p > 0.0 && p <= 100.0) {
                return Err(Error::InvalidSetting {
                    setting: "percentile",
                    message: format!("quantize: percentile {p} is outside (0, 100]"),
                });
            }
            mags.sort_by(f32::total_cmp);
            let rank = ((f64::from(p) / 100.0) * mags.len() as f64).ceil() as usize;
            mags[rank.clamp(1, mags.len()) - 1]
        }
    };
    Ok(if top > 0.0 { top / 127.0 } else { 1.0 })
}

/// A `Linear` layer in int8 (see the module doc).
pub struct QuantizedLinear {
    /// Packed codes, `[out, ⌈in/4⌉]` u32 words, four int8 codes each.
    weight: Tensor,
    /// Per output channel, `[out]`.
    weight_scale: Tensor,
    /// `[out]` (zeros for a layer without bias).
    bias: Tensor,
    /// The input's scale.
    input_scale: f32,
    in_features: usize,
    /// The codes on the host, `[out, in]`, for saving.
    codes: Vec<i8>,
}

impl QuantizedLinear {
    /// Quantizes `layer`'s weights per output channel; inputs will be quantized with
    /// `input_scale` (from [`activation_scale`]). `Err` for a scale that is not
    /// positive and finite, or a device error.
    pub fn new(layer: &Linear, input_scale: f32) -> Result<QuantizedLinear> {
        QuantizedLinear::from_weight(&layer.weight, layer.bias.as_ref(), input_scale)
    }

    /// Async form of [`QuantizedLinear::new`] (the weights are read back awaited, as
    /// a browser needs).
    pub async fn new_async(layer: &Linear, input_scale: f32) -> Result<QuantizedLinear> {
        QuantizedLinear::from_weight_async(&layer.weight, layer.bias.as_ref(), input_scale).await
    }

    /// [`QuantizedLinear::new`] for a weight matrix `[out, in]` and an optional bias.
    pub(crate) fn from_weight(weight: &Tensor, bias: Option<&Tensor>, input_scale: f32) -> Result<QuantizedLinear> {
        let made = QuantizedLinear::from_weight_async(weight, bias, input_scale);
        wait(made, "QuantizedLinear::new", "QuantizedLinear::new_async")
    }

    async fn from_weight_async(weight: &Tensor, bias: Option<&Tensor>, input_scale: f32) -> Result<QuantizedLinear> {
        let (out, inp) = (weight.shape()[0], weight.shape()[1]);
        let w = weight.to_vec_async().await?;
        let scales: Vec<f32> = (0..out)
            .map(|o| {
                let m = w[o * inp..(o + 1) * inp].iter().fold(0.0f32, |a, v| a.max(v.abs()));
                if m > 0.0 {
                    m / 127.0
                } else {
                    1.0
                }
            })
            .collect();
        let codes: Vec<i8> = (0..out * inp)
            .map(|i| (w[i] / scales[i / inp]).round_ties_even().clamp(-127.0, 127.0) as i8)
            .collect();
        let bias = match bias {
            Some(b) => b.to_vec_async().await?,
            None => vec![0.0; out],
        };
        QuantizedLinear::from_codes(codes, scales, bias, input_scale, inp, weight.device())
    }

    fn from_codes(
        codes: Vec<i8>,
        scales: Vec<f32>,
        bias: Vec<f32>,
        input_scale: f32,
        in_features: usize,
        device: &Device,
    ) -> Result<QuantizedLinear> {
        if !(input_scale > 0.0 && input_scale.is_finite()) {
            return Err(Error::InvalidSetting {
                setting: "input_scale",
                message: format!("QuantizedLinear: input scale {input_scale} must be positive and finite"),
            });
        }
        let (out, words) = (scales.len(), in_features.div_ceil(4));
        let packed = crate::ops::quant::pack_codes(&codes, in_features);
        let storage = device.backend().stage(packed)?;
        let weight = Tensor::leaf(storage, vec![out, words], DType::U32, device, None);
        Ok(QuantizedLinear {
            weight,
            weight_scale: Tensor::from_vec(scales, &[out], device)?,
            bias: Tensor::from_vec(bias, &[out], device)?,
            input_scale,
            in_features,
            codes,
        })
    }

    /// The layer on `x` (`[batch, in]`): quantize, int8 GEMM, dequantize, bias.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        assert!(
            x.shape().len() == 2 && x.shape()[1] == self.in_features,
            "QuantizedLinear: input {:?}, the layer takes [batch, {}]",
            x.shape(),
            self.in_features
        );
        self.product(x, None)
    }

    /// `x` through the int8 GEMM plus `bias` (`[out]`; the layer's own when `None`).
    pub(crate) fn product(&self, x: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let q = x.quantize_rows(self.input_scale);
        let bias = bias.unwrap_or(&self.bias);
        q.int8_matmul(&self.weight, &self.weight_scale, bias, self.input_scale, false)
    }

    /// The i32 accumulators `Σ x_q · w_q` of `x` (`[batch, out]`, as u32 words):
    /// the integer part of [`QuantizedLinear::forward`], to compare exactly.
    pub fn accumulators(&self, x: &Tensor) -> Result<Vec<i32>> {
        let q = x.quantize_rows(self.input_scale);
        let raw = q.int8_matmul(&self.weight, &self.weight_scale, &self.bias, self.input_scale, true);
        Ok(raw.to_labels()?.into_iter().map(|w| w as i32).collect())
    }

    /// The weight codes, `[out, in]` row-major.
    pub fn codes(&self) -> &[i8] {
        &self.codes
    }

    /// The per-channel weight scales.
    pub fn weight_scales(&self) -> Result<Vec<f32>> {
        self.weight_scale.to_vec()
    }

    /// The input scale.
    pub fn input_scale(&self) -> f32 {
        self.input_scale
    }

    /// Output features (weight rows).
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }
}

/// A `Linear` layer with half-precision weights (IEEE binary16, rounded to nearest
/// even) packed two to a word: half the weight bytes, inputs and accumulation in
/// f32, on every adapter (WGSL's core `unpack2x16float`, no `SHADER_F16` needed).
pub struct HalfLinear {
    /// `[out, ⌈in/2⌉]` u32 words.
    weight: Tensor,
    bias: Tensor,
    in_features: usize,
    /// The f16 bits, `[out, in]`, for saving.
    halves: Vec<u16>,
}

impl HalfLinear {
    /// `layer` with its weights rounded to f16. `Err` for a device error.
    pub fn new(layer: &Linear) -> Result<HalfLinear> {
        let halves: Vec<u16> = layer
            .weight
            .to_vec()?
            .into_iter()
            .map(|w| half::f16::from_f32(w).to_bits())
            .collect();
        let bias = match &layer.bias {
            Some(b) => b.to_vec()?,
            None => vec![0.0; layer.weight.shape()[0]],
        };
        HalfLinear::from_halves(halves, bias, layer.weight.shape()[1], layer.weight.device())
    }

    fn from_halves(halves: Vec<u16>, bias: Vec<f32>, in_features: usize, device: &Device) -> Result<HalfLinear> {
        let out = bias.len();
        let words = in_features.div_ceil(2);
        let mut packed = vec![0f32; out * words];
        for o in 0..out {
            for t in 0..words {
                let lo = u32::from(halves[o * in_features + 2 * t]);
                let hi = if 2 * t + 1 < in_features {
                    u32::from(halves[o * in_features + 2 * t + 1])
                } else {
                    0
                };
                packed[o * words + t] = f32::from_bits(lo | (hi << 16));
            }
        }
        let storage = device.backend().stage(packed)?;
        Ok(HalfLinear {
            weight: Tensor::leaf(storage, vec![out, words], DType::U32, device, None),
            bias: Tensor::from_vec(bias, &[out], device)?,
            in_features,
            halves,
        })
    }

    /// The layer on `x` (`[batch, in]`).
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        assert!(
            x.shape().len() == 2 && x.shape()[1] == self.in_features,
            "HalfLinear: input {:?}, the layer takes [batch, {}]",
            x.shape(),
            self.in_features
        );
        x.half_matmul(&self.weight, &self.bias)
    }

    /// The weights as f32 (each exactly its f16 value), `[out, in]` row-major.
    pub fn weights(&self) -> Vec<f32> {
        self.halves.iter().map(|&h| half::f16::from_bits(h).to_f32()).collect()
    }
}

/// One layer of a [`QuantizedSequential`].
enum Layer {
    Int8(QuantizedLinear),
    Int8Conv(QuantizedConv2d),
    Half(HalfLinear),
    Float(Box<dyn Module>),
    /// A `BatchNorm2d` folded into the int8 convolution before it: the identity
    /// (kept so that layer indices stay the model's).
    Folded,
}

/// A [`Sequential`] with every `Linear` in int8 (see the module doc).
pub struct QuantizedSequential {
    layers: Vec<Layer>,
}

/// `layer` as a `T` of wgnn's, if it is one.
fn as_layer<T: 'static>(layer: &dyn Module) -> Option<&T> {
    layer.as_any().and_then(|a| a.downcast_ref::<T>())
}

/// Whether layer `i` of `layers` is a `BatchNorm2d` right after a `Conv2d` (folded
/// into it when quantizing).
fn folds_into_conv(layers: &[Box<dyn Module>], i: usize) -> bool {
    i > 0 && as_layer::<BatchNorm2d>(&*layers[i]).is_some() && as_layer::<Conv2d>(&*layers[i - 1]).is_some()
}

/// `Err` naming the first layer with parameters that is not one of `what`.
fn only_parameters_of(model: &Sequential, convs: bool) -> Result<()> {
    let layers = model.layers();
    let covered = |i: usize, l: &dyn Module| {
        as_layer::<Linear>(l).is_some()
            || (convs && (as_layer::<Conv2d>(l).is_some() || folds_into_conv(layers, i)))
            || l.parameters().is_empty()
    };
    let what = if convs {
        "Linear and ungrouped Conv2d layers (a BatchNorm2d right after a Conv2d folded into it)"
    } else {
        "Linear layers"
    };
    match layers.iter().enumerate().find(|(i, l)| !covered(*i, &***l)) {
        Some((i, l)) => Err(Error::Invalid(format!(
            "quantize: layer {i} `{}` has parameters and is not covered; only {what} are converted",
            l.name()
        ))),
        None => Ok(()),
    }
}

impl QuantizedSequential {
    /// Quantizes every `Linear` of `model`, each input scale calibrated by `method`
    /// on what reaches that layer when the float model runs on `calibration`
    /// (`[samples, …]`, a few hundred rows of training data). Each `Conv2d` becomes a
    /// [`QuantizedConv2d`], a `BatchNorm2d` right after it folded into it (its running
    /// statistics: put the model in eval mode's terms). `Err` when the calibration
    /// data is empty, when another layer has trainable parameters (naming it: it would
    /// stay f32 — not covered), for a grouped convolution, or a bad percentile.
    pub fn quantize(model: Sequential, calibration: &Tensor, method: Calibration) -> Result<QuantizedSequential> {
        let made = QuantizedSequential::quantize_async(model, calibration, method);
        wait(
            made,
            "QuantizedSequential::quantize",
            "QuantizedSequential::quantize_async",
        )
    }

    /// Async form of [`QuantizedSequential::quantize`]: the calibration activations
    /// and the weights are read back awaited (in a browser, on WebGPU).
    pub async fn quantize_async(
        model: Sequential,
        calibration: &Tensor,
        method: Calibration,
    ) -> Result<QuantizedSequential> {
        if calibration.shape().first().copied().unwrap_or(0) == 0 {
            return Err(Error::Invalid(format!(
                "quantize: the calibration data has shape {:?}: no samples to calibrate the activation scales on",
                calibration.shape()
            )));
        }
        only_parameters_of(&model, true)?;
        let inputs: Vec<Tensor> = {
            let trace = crate::nn::inference(|| model.trace(calibration));
            std::iter::once(calibration.clone()).chain(trace).collect()
        };
        let all = model.into_layers();
        // Each layer's converted form (`None`: it stays as it is).
        let mut converted = Vec::with_capacity(all.len());
        for (i, layer) in all.iter().enumerate() {
            let scale = || async { activation_scale(&inputs[i].to_vec_async().await?, method) };
            converted.push(if let Some(linear) = as_layer::<Linear>(&**layer) {
                Some(Layer::Int8(QuantizedLinear::new_async(linear, scale().await?).await?))
            } else if let Some(conv) = as_layer::<Conv2d>(&**layer) {
                let folded = match all.get(i + 1).filter(|_| folds_into_conv(&all, i + 1)) {
                    Some(bn) => {
                        let bn = as_layer(&**bn).expect("a BatchNorm2d");
                        Some(crate::nn::fuse_conv_bn_eval_async(conv, bn).await?)
                    }
                    None => None,
                };
                let conv = folded.as_ref().unwrap_or(conv);
                Some(Layer::Int8Conv(QuantizedConv2d::new_async(conv, scale().await?).await?))
            } else if folds_into_conv(&all, i) {
                Some(Layer::Folded)
            } else {
                None
            });
        }
        let layers = all
            .into_iter()
            .zip(converted)
            .map(|(layer, c)| c.unwrap_or(Layer::Float(layer)))
            .collect();
        Ok(QuantizedSequential { layers })
    }

    /// `model` with every `Linear` in half precision ([`HalfLinear`]); the other
    /// layers as they are. `Err` as [`QuantizedSequential::quantize`] for a layer with
    /// parameters that is not a `Linear`.
    pub fn half(model: Sequential) -> Result<QuantizedSequential> {
        only_parameters_of(&model, false)?;
        let mut layers = Vec::new();
        for layer in model.into_layers() {
            match as_layer::<Linear>(&*layer) {
                Some(linear) => layers.push(Layer::Half(HalfLinear::new(linear)?)),
                None => layers.push(Layer::Float(layer)),
            }
        }
        Ok(QuantizedSequential { layers })
    }

    /// The model on `x`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.layers.iter().fold(x.clone(), |h, l| match l {
            Layer::Int8(q) => q.forward(&h),
            Layer::Int8Conv(q) => q.forward(&h),
            Layer::Half(q) => q.forward(&h),
            Layer::Float(f) => f.forward(&h),
            Layer::Folded => h,
        })
    }

    /// The int8 layers, in order.
    pub fn quantized_layers(&self) -> Vec<&QuantizedLinear> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                Layer::Int8(q) => Some(q),
                _ => None,
            })
            .collect()
    }

    /// The int8 convolutions, in order.
    pub fn quantized_convs(&self) -> Vec<&QuantizedConv2d> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                Layer::Int8Conv(q) => Some(q),
                _ => None,
            })
            .collect()
    }

    /// The half-precision layers, in order.
    pub fn half_layers(&self) -> Vec<&HalfLinear> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                Layer::Half(h) => Some(h),
                _ => None,
            })
            .collect()
    }

    /// Writes the quantized layers to `path` as safetensors: for an int8 layer `i`,
    /// `{i}.weight` I8 `[out, in]`, `{i}.weight_scale` and `{i}.bias` F32 `[out]`,
    /// `{i}.input_scale` F32 `[1]`; for a half-precision one `{i}.weight` F16 and
    /// `{i}.bias` F32 (written atomically, as `io::save_safetensors`).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            if let Layer::Half(h) = l {
                let out = h.halves.len() / h.in_features;
                owned.push((
                    format!("{i}.weight"),
                    Dtype::F16,
                    vec![out, h.in_features],
                    bytemuck::cast_slice(&h.halves).to_vec(),
                ));
                let bias = h.bias.to_vec()?;
                owned.push((
                    format!("{i}.bias"),
                    Dtype::F32,
                    vec![out],
                    bytemuck::cast_slice::<f32, u8>(&bias).to_vec(),
                ));
                continue;
            }
            let q = match l {
                Layer::Int8(q) => q,
                Layer::Int8Conv(c) => c.gemm(),
                _ => continue,
            };
            let scales = q.weight_scales()?;
            let out = scales.len();
            let f32_bytes = |v: &[f32]| bytemuck::cast_slice::<f32, u8>(v).to_vec();
            owned.push((
                format!("{i}.weight"),
                Dtype::I8,
                vec![out, q.in_features],
                bytemuck::cast_slice(&q.codes).to_vec(),
            ));
            owned.push((format!("{i}.weight_scale"), Dtype::F32, vec![out], f32_bytes(&scales)));
            owned.push((format!("{i}.bias"), Dtype::F32, vec![out], f32_bytes(&q.bias.to_vec()?)));
            owned.push((
                format!("{i}.input_scale"),
                Dtype::F32,
                vec![1],
                f32_bytes(&[q.input_scale]),
            ));
        }
        let bad = |e: safetensors::SafeTensorError| Error::SafeTensors {
            path: path.into(),
            reason: e.to_string(),
        };
        let views = owned
            .iter()
            .map(|(name, dtype, shape, bytes)| TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.clone(), v)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(bad)?;
        let meta = HashMap::from([("format".to_string(), "wgnn int8".to_string())]);
        let bytes = safetensors::tensor::serialize(views, Some(meta)).map_err(bad)?;
        crate::io::write_atomically(path, &bytes)
    }

    /// Reads a file written by [`QuantizedSequential::save`] into `model`'s
    /// architecture (its `Linear` layers are replaced by the file's; their f32
    /// weights are not used). `Err` naming the tensor for a missing one, another
    /// shape or dtype, or a file that is not safetensors.
    pub fn load(model: Sequential, path: impl AsRef<Path>) -> Result<QuantizedSequential> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| Error::SafeTensors {
            path: path.into(),
            reason: e.to_string(),
        })?;
        let wrong = |name: &str, why: String| Error::SafeTensors {
            path: path.into(),
            reason: format!("tensor {name:?}: {why}"),
        };
        let get = |name: &str, dtype: Dtype, shape: &[usize]| {
            let view = file.tensor(name).map_err(|_| wrong(name, "missing".into()))?;
            if view.dtype() != dtype || view.shape() != shape {
                return Err(wrong(
                    name,
                    format!("{:?} {:?}, expected {dtype:?} {shape:?}", view.dtype(), view.shape()),
                ));
            }
            Ok(view.data().to_vec())
        };
        let f32s = |b: Vec<u8>| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let int8 = |i: usize, out: usize, inp: usize, device: &Device| -> Result<QuantizedLinear> {
            let codes: Vec<i8> = get(&format!("{i}.weight"), Dtype::I8, &[out, inp])?
                .into_iter()
                .map(|b| b as i8)
                .collect();
            let scales = f32s(get(&format!("{i}.weight_scale"), Dtype::F32, &[out])?);
            let bias = f32s(get(&format!("{i}.bias"), Dtype::F32, &[out])?);
            let input_scale = f32s(get(&format!("{i}.input_scale"), Dtype::F32, &[1])?)[0];
            QuantizedLinear::from_codes(codes, scales, bias, input_scale, inp, device)
        };
        let all = model.into_layers();
        let mut converted = Vec::with_capacity(all.len());
        for (i, layer) in all.iter().enumerate() {
            if let Some(conv) = as_layer::<Conv2d>(&**layer) {
                let w = conv.weight.shape();
                let gemm = int8(i, w[0], w[1] * w[2] * w[3], conv.weight.device())?;
                converted.push(Some(Layer::Int8Conv(QuantizedConv2d::from_parts(gemm, conv)?)));
                continue;
            }
            if folds_into_conv(&all, i) {
                converted.push(Some(Layer::Folded));
                continue;
            }
            let Some(lin) = as_layer::<Linear>(&**layer) else {
                converted.push(None);
                continue;
            };
            let (out, inp) = (lin.weight.shape()[0], lin.weight.shape()[1]);
            let weight_name = format!("{i}.weight");
            if file.tensor(&weight_name).is_ok_and(|v| v.dtype() == Dtype::F16) {
                let bytes = get(&weight_name, Dtype::F16, &[out, inp])?;
                let halves: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let bias = f32s(get(&format!("{i}.bias"), Dtype::F32, &[out])?);
                let half = HalfLinear::from_halves(halves, bias, inp, lin.weight.device())?;
                converted.push(Some(Layer::Half(half)));
                continue;
            }
            converted.push(Some(Layer::Int8(int8(i, out, inp, lin.weight.device())?)));
        }
        let layers = all
            .into_iter()
            .zip(converted)
            .map(|(layer, c)| c.unwrap_or(Layer::Float(layer)))
            .collect();
        Ok(QuantizedSequential { layers })
    }
}
