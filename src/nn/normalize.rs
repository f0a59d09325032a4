//! [`Normalize`]: standardization as the model's first layer, Keras'
//! `layers.Normalization`, so that the statistics of the training data are saved,
//! loaded and moved with the model instead of living beside it in the program.

use super::{Module, TensorSpec};
use crate::{Device, Error, Result, Tensor};

/// `(x − mean) / std` per feature (the last axis), with `mean` and `std` held as
/// buffers: saved and loaded with the parameters (`mean`, `std` under the layer's
/// name, e.g. `norm.mean`), moved by [`Module::to`], never trained.
///
/// ```
/// use wgnn::nn::{Linear, Module, Normalize, Sequential};
/// use wgnn::{Device, Tensor};
///
/// # fn main() -> wgnn::Result<()> {
/// let dev = Device::cpu();
/// let x = Tensor::new(&[[1.0f32, 10.0], [3.0, 30.0]], &dev)?;
/// let norm = Normalize::adapt(&x)?; // mean [2, 20], std [1, 10] (population)
/// assert_eq!(norm.forward(&x).to_vec2()?, [[-1.0, -1.0], [1.0, 1.0]]);
/// let model = Sequential::new().add(norm).add(Linear::new(2, 1, &dev));
/// let names: Vec<String> = model.named_buffers().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["0.mean", "0.std"]);
/// # Ok(()) }
/// ```
#[derive(Module)]
pub struct Normalize {
    /// The mean of each feature, `[features]`.
    #[module(buffer)]
    pub mean: Tensor,
    /// The standard deviation of each feature, `[features]` (positive).
    #[module(buffer)]
    pub std: Tensor,
}

impl Normalize {
    /// The identity over `features` features (mean 0, std 1): the layer to load
    /// saved statistics into.
    pub fn new(features: usize, device: &Device) -> Normalize {
        Normalize::from_stats(&vec![0.0; features], &vec![1.0; features], device)
            .unwrap_or_else(|e| panic!("Normalize::new({features}): {e}"))
    }

    /// The layer for statistics computed elsewhere, e.g. the `(mean, std)` that
    /// [`crate::data::standardize`] returns.
    ///
    /// # Errors
    /// If the two have different lengths or none, a mean is not finite, or a std
    /// is not finite and positive.
    pub fn from_stats(mean: &[f32], std: &[f32], device: &Device) -> Result<Normalize> {
        if mean.len() != std.len() || mean.is_empty() {
            return Err(Error::Invalid(format!(
                "Normalize::from_stats: {} means and {} standard deviations (one of each per feature, at least one)",
                mean.len(),
                std.len()
            )));
        }
        let bad_mean = mean.iter().position(|m| !m.is_finite());
        let bad_std = std.iter().position(|s| !(s.is_finite() && *s > 0.0));
        if let Some(i) = bad_mean.or(bad_std) {
            return Err(Error::Invalid(format!(
                "Normalize::from_stats: feature {i} has mean {} and std {}; a mean must be finite, a std finite and positive",
                mean[i], std[i]
            )));
        }
        Ok(Normalize {
            mean: Tensor::from_vec(mean.to_vec(), &[mean.len()], device)?,
            std: Tensor::from_vec(std.to_vec(), &[std.len()], device)?,
        })
    }

    /// The layer for the columns of `x` (`[rows, features]`), on `x`'s device, as
    /// Keras' `Normalization.adapt`: the same statistics as
    /// [`crate::data::standardize`] (population std; a constant column gets std 1).
    /// `x` is read back once.
    ///
    /// # Errors
    /// If `x` is not `[rows, features]` f32 with a row, or holds a NaN or infinity.
    pub fn adapt(x: &Tensor) -> Result<Normalize> {
        let [rows, features] = x.shape()[..] else {
            return Err(Error::Invalid(format!(
                "Normalize::adapt: needs rows of features [rows, features], got shape {:?}",
                x.shape()
            )));
        };
        if rows == 0 || x.dtype() != crate::DType::F32 {
            return Err(Error::Invalid(format!(
                "Normalize::adapt: needs f32 data with at least one row, got {:?} {:?}",
                x.dtype(),
                x.shape()
            )));
        }
        let values = x.to_vec()?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "Normalize::adapt: the data hold {} at row {}, column {}",
                values[i],
                i / features,
                i % features
            )));
        }
        let (mean, std) = column_stats(&values, features);
        let narrow = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<_>>();
        Normalize::from_stats(&narrow(mean), &narrow(std), x.device())
    }

    /// Features per row.
    pub fn features(&self) -> usize {
        self.mean.shape()[0]
    }
}

impl Module for Normalize {
    fn forward(&self, x: &Tensor) -> Tensor {
        &(x - &self.mean) / &self.std
    }

    fn name(&self) -> String {
        format!("Normalize({})", self.features())
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        input.expect_f32()?;
        let features = self.features();
        match input.shape.last() {
            Some(&f) if f == features && input.shape.len() >= 2 => Ok(Some(input.clone())),
            _ => Err(format!(
                "expects rows of {features} features (shape [batch, {features}]), the data has shape {:?}",
                input.shape
            )),
        }
    }
}

/// The mean and the population standard deviation of each of the `dim` columns of
/// row-major `values` (in f64); a column with no spread (or no rows) gets std 1, so
/// that it is only centred. What [`crate::data::standardize`] and
/// [`Normalize::adapt`] use.
pub(crate) fn column_stats(values: &[f32], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let mut sum = vec![0f64; dim];
    let mut sq = vec![0f64; dim];
    if dim == 0 {
        return (sum, sq);
    }
    let n = (values.len() / dim).max(1) as f64;
    for row in values.chunks_exact(dim) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s += f64::from(v);
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    for row in values.chunks_exact(dim) {
        for ((q, &v), m) in sq.iter_mut().zip(row).zip(&mean) {
            let d = f64::from(v) - m;
            *q += d * d;
        }
    }
    let std = sq
        .iter()
        .map(|q| {
            let s = (q / n).sqrt();
            if s > 0.0 && s.is_finite() {
                s
            } else {
                1.0
            }
        })
        .collect();
    (mean, std)
}
