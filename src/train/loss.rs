//! The training objective of a compiled model ([`Loss`]): which loss `fit` minimizes,
//! and what it checks of the targets before anything runs.

use crate::nn::{loss, TensorSpec};
use crate::{DType, Tensor};

/// The training objective of a compiled model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Mean squared error against f32 targets shaped like the output.
    Mse,
    /// Binary cross-entropy on probabilities (sigmoid output `[n, 1]`, targets 0/1).
    BinaryCrossEntropy,
    /// Binary cross-entropy on logits (output `[n, 1]`, targets 0/1).
    BinaryCrossEntropyWithLogits,
    /// Softmax cross-entropy on logits `[n, classes]` against labels `[n]`.
    CrossEntropy,
}

impl Loss {
    pub(crate) fn of(self, out: &Tensor, y: &Tensor) -> Tensor {
        match self {
            Loss::Mse => loss::mse(out, y),
            Loss::BinaryCrossEntropy => loss::binary_cross_entropy(out, y),
            Loss::BinaryCrossEntropyWithLogits => loss::binary_cross_entropy_with_logits(out, y),
            Loss::CrossEntropy => loss::cross_entropy(out, y),
        }
    }

    /// Why targets `y` cannot be scored against outputs `out`, if they cannot.
    pub(crate) fn check(self, out: &TensorSpec, y: &TensorSpec) -> std::result::Result<(), String> {
        let name = match self {
            Loss::CrossEntropy => {
                return match (&out.shape[..], y.dtype, &y.shape[..]) {
                    ([n, _], DType::U32, [m]) if n == m => Ok(()),
                    ([_, _], DType::U32, _) => Err(format!(
                        "cross-entropy needs one label per row (shape [batch]), the targets have shape {:?}",
                        y.shape
                    )),
                    ([_, _], DType::F32, _) => Err(
                        "cross-entropy needs class labels (`Tensor::from_labels`), the targets are f32 values".into(),
                    ),
                    _ => Err(format!(
                        "cross-entropy needs logits [batch, classes], the model gives {:?}",
                        out.shape
                    )),
                };
            }
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

    pub(crate) fn binary(self) -> bool {
        matches!(self, Loss::BinaryCrossEntropy | Loss::BinaryCrossEntropyWithLogits)
    }
}
