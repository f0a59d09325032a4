//! The training objective of a compiled model ([`Loss`]): which loss `fit` minimizes
//! (a built-in one, cross-entropy with class weights, or a function of the user's),
//! how sample weights enter it, and what it checks of the targets before anything
//! runs.

use std::fmt;
use std::sync::{Arc, Mutex};

use crate::nn::{loss, TensorSpec};
use crate::{DType, Error, Result, Tensor};

/// The training objective of a compiled model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Mean squared error against f32 targets shaped like the output.
    Mse,
    /// Binary cross-entropy on probabilities (sigmoid output `[n, 1]`, targets 0/1).
    BinaryCrossEntropy,
    /// Binary cross-entropy on logits (output `[n, 1]`, targets 0/1).
    BinaryCrossEntropyWithLogits,
    /// Softmax cross-entropy on logits `[n, classes]` against labels `[n]`.
    CrossEntropy,
    /// Softmax cross-entropy with a weight per class, as PyTorch's
    /// `CrossEntropyLoss(weight=w)`: `Σ w[yᵢ]·ceᵢ / Σ w[yᵢ]`. Made by
    /// [`Loss::cross_entropy_weighted`].
    WeightedCrossEntropy(ClassWeights),
    /// A loss written as a function of the output and the targets: [`Loss::custom`].
    Custom(CustomLoss),
}

/// The per-class weights of [`Loss::WeightedCrossEntropy`] (finite, not negative,
/// not all zero), with their copy on the device, uploaded once.
#[derive(Clone)]
pub struct ClassWeights {
    values: Arc<[f32]>,
    on_device: Arc<Mutex<Option<Tensor>>>,
}

impl ClassWeights {
    /// The weights, one per class.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The weights as a `[classes]` tensor on `device` (made once per device).
    fn tensor(&self, device: &crate::Device) -> Tensor {
        let mut cached = self.on_device.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some(t) if t.device().same(device) => t.clone(),
            _ => {
                let t = Tensor::from_vec(self.values.to_vec(), &[self.values.len()], device)
                    .expect("a few class weights fit on any device");
                *cached = Some(t.clone());
                t
            }
        }
    }
}

impl fmt::Debug for ClassWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.values.iter()).finish()
    }
}

/// Equal when the weights have the same bits.
impl PartialEq for ClassWeights {
    fn eq(&self, other: &ClassWeights) -> bool {
        let bits = |w: &ClassWeights| w.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        bits(self) == bits(other)
    }
}

impl Eq for ClassWeights {}

/// The function of a [`Loss::custom`]: `(prediction, target) -> loss`.
type LossFn = dyn Fn(&Tensor, &Tensor) -> Tensor + Send + Sync;

/// A loss function of the user's ([`Loss::custom`]), shared by the clones of the
/// loss; two are equal when they are clones of one.
#[derive(Clone)]
pub struct CustomLoss {
    f: Arc<LossFn>,
}

impl fmt::Debug for CustomLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomLoss")
    }
}

impl PartialEq for CustomLoss {
    fn eq(&self, other: &CustomLoss) -> bool {
        Arc::ptr_eq(&self.f, &other.f)
    }
}

impl Eq for CustomLoss {}

impl Loss {
    /// A loss written as a function, as a PyTorch user writes one: it gets the
    /// model's output and the batch's targets (f32 values, or u32 labels) and
    /// returns the batch's loss — a scalar (the mean over the batch), or one value
    /// per row `[batch]`, which `fit` averages (and weighs by the sample weights of
    /// [`FitConfig::sample_weight`](super::FitConfig::sample_weight), which need
    /// this form). Metrics are computed as for the built-in losses: regression
    /// metrics against f32 targets, classification metrics against labels.
    ///
    /// ```
    /// use wgnn::train::Loss;
    /// // Mean absolute error, per row.
    /// let mae = Loss::custom(|pred, target| (pred - target).abs().sum_axis(1, false));
    /// ```
    pub fn custom(f: impl Fn(&Tensor, &Tensor) -> Tensor + Send + Sync + 'static) -> Loss {
        Loss::Custom(CustomLoss { f: Arc::new(f) })
    }

    /// Softmax cross-entropy with one weight per class, PyTorch's
    /// `CrossEntropyLoss(weight=weights)` with its mean reduction: each row's loss is
    /// multiplied by the weight of its class and the sum is divided by the sum of
    /// the weights of the batch's classes. `fit` checks that there is one weight
    /// per class of the model's output.
    ///
    /// # Errors
    /// If `weights` is empty, holds a negative or non-finite value, or is all zero.
    pub fn cross_entropy_weighted(weights: &[f32]) -> Result<Loss> {
        let bad = weights.iter().position(|w| !w.is_finite() || *w < 0.0);
        if let Some(i) = bad {
            return Err(Error::Invalid(format!(
                "Loss::cross_entropy_weighted: the weight of class {i} is {}; weights must be finite and not negative",
                weights[i]
            )));
        }
        if weights.iter().all(|&w| w == 0.0) {
            return Err(Error::Invalid(
                "Loss::cross_entropy_weighted: needs at least one class weight above zero (none given, or all zero)"
                    .into(),
            ));
        }
        Ok(Loss::WeightedCrossEntropy(ClassWeights {
            values: weights.into(),
            on_device: Arc::default(),
        }))
    }

    /// The batch's loss of outputs `out` against targets `y`, each row weighted by
    /// `sample_weight` (`[batch]`) when given: `Σ sᵢ·lᵢ / batch` (Keras' rule), and
    /// for class weights `Σ sᵢ·w[yᵢ]·ceᵢ / Σ w[yᵢ]`, so that sample weights of one
    /// change nothing.
    pub(crate) fn of(&self, out: &Tensor, y: &Tensor, sample_weight: Option<&Tensor>) -> Result<Tensor> {
        let Some(s) = sample_weight else {
            return Ok(match self {
                Loss::Mse => loss::mse(out, y),
                Loss::BinaryCrossEntropy => loss::binary_cross_entropy(out, y),
                Loss::BinaryCrossEntropyWithLogits => loss::binary_cross_entropy_with_logits(out, y),
                Loss::CrossEntropy => loss::cross_entropy(out, y),
                Loss::WeightedCrossEntropy(w) => loss::cross_entropy_weighted(out, y, &w.tensor(out.device())),
                Loss::Custom(c) => custom_mean(&(c.f)(out, y), out)?,
            });
        };
        let rows = out.shape()[0];
        let per_row = match self {
            Loss::Mse => row_means(&(out - y).square()),
            Loss::BinaryCrossEntropy => row_means(&loss::binary_cross_entropy_elements(out, y)),
            Loss::BinaryCrossEntropyWithLogits => row_means(&loss::binary_cross_entropy_with_logits_elements(out, y)),
            Loss::CrossEntropy => loss::cross_entropy_per_row(out, y),
            Loss::WeightedCrossEntropy(w) => {
                let wy = w.tensor(out.device()).index_select(0, y);
                let weighted = &loss::cross_entropy_per_row(out, y) * &wy;
                return Ok((&weighted * s).sum() / wy.sum());
            }
            Loss::Custom(c) => {
                let l = (c.f)(out, y);
                if l.shape() != [rows] {
                    return Err(Error::Invalid(format!(
                        "fit: with sample weights, a custom loss must return one value per row (shape [{rows}]), it returned shape {:?}",
                        l.shape()
                    )));
                }
                l
            }
        };
        Ok((&per_row * s).sum().mul_scalar(1.0 / rows as f32))
    }

    /// Why targets `y` cannot be scored against outputs `out`, if they cannot.
    pub(crate) fn check(&self, out: &TensorSpec, y: &TensorSpec) -> std::result::Result<(), String> {
        let name = match self {
            Loss::CrossEntropy => return check_labels(out, y),
            Loss::WeightedCrossEntropy(w) => {
                check_labels(out, y)?;
                let classes = out.shape[1];
                if w.values.len() != classes {
                    return Err(format!(
                        "{} class weights were given, the model has {classes} classes (outputs {:?})",
                        w.values.len(),
                        out.shape
                    ));
                }
                return Ok(());
            }
            Loss::Custom(_) => return Ok(()),
            Loss::Mse => "mean squared error",
            Loss::BinaryCrossEntropy | Loss::BinaryCrossEntropyWithLogits => "binary cross-entropy",
        };
        if y.dtype != DType::F32 {
            return Err(format!(
                "{name} needs f32 targets shaped like the output {:?}, the targets are u32 labels {:?}",
                out.shape, y.shape
            ));
        }
        if out.shape != y.shape {
            return Err(format!(
                "{name} needs targets shaped like the output: the model gives {:?} per batch, the targets are {:?}",
                out.shape, y.shape
            ));
        }
        Ok(())
    }

    pub(crate) fn binary(&self) -> bool {
        matches!(self, Loss::BinaryCrossEntropy | Loss::BinaryCrossEntropyWithLogits)
    }

    /// Whether the targets are class labels scored by a softmax over the output.
    pub(crate) fn softmax_classes(&self) -> bool {
        matches!(self, Loss::CrossEntropy | Loss::WeightedCrossEntropy(_))
    }
}

/// Why labels `y` do not fit logits `out` of a cross-entropy, if they do not.
fn check_labels(out: &TensorSpec, y: &TensorSpec) -> std::result::Result<(), String> {
    match (&out.shape[..], y.dtype, &y.shape[..]) {
        ([n, _], DType::U32, [m]) if n == m => Ok(()),
        ([_, _], DType::U32, _) => Err(format!(
            "cross-entropy needs one label per row (shape [batch]), the targets have shape {:?}",
            y.shape
        )),
        ([_, _], DType::F32, _) => {
            Err("cross-entropy needs class labels (`Tensor::from_labels`), the targets are f32 values".into())
        }
        _ => Err(format!(
            "cross-entropy needs logits [batch, classes], the model gives {:?}",
            out.shape
        )),
    }
}

/// The mean over every axis but the first: `[n, …]` → `[n]`.
fn row_means(t: &Tensor) -> Tensor {
    let rows = t.shape()[0];
    let width = t.numel() / rows.max(1);
    t.reshape(&[rows, width])
        .sum_axis(1, false)
        .mul_scalar(1.0 / width as f32)
}

/// A custom loss's value as a scalar: itself, or the mean of its per-row values.
fn custom_mean(l: &Tensor, out: &Tensor) -> Result<Tensor> {
    let rows = out.shape()[0];
    match l.shape() {
        [] => Ok(l.clone()),
        [1] => Ok(l.reshape(&[])),
        [n] if *n == rows => Ok(l.mean()),
        shape => Err(Error::Invalid(format!(
            "fit: a custom loss must return a scalar or one value per row (shape [{rows}]), it returned shape {shape:?}"
        ))),
    }
}
