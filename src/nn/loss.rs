//! Losses with PyTorch's mean reduction, composed from primitive ops (the softmax
//! cross-entropy uses its fused kernel).

use crate::tensor::DType;
use crate::Tensor;

/// Mean squared error, `MSELoss()`.
#[track_caller]
pub fn mse(pred: &Tensor, target: &Tensor) -> Tensor {
    assert!(
        pred.shape() == target.shape(),
        "mse: prediction {:?} and target {:?} differ",
        pred.shape(),
        target.shape()
    );
    (pred - target).square().mean()
}

/// Binary cross-entropy on probabilities, `BCELoss()` (logs clamped at -100 as
/// PyTorch does, so p = 0 or 1 gives a finite loss).
#[track_caller]
pub fn binary_cross_entropy(p: &Tensor, target: &Tensor) -> Tensor {
    binary_cross_entropy_elements(p, target).mean()
}

/// [`binary_cross_entropy`] of each element, unreduced (`reduction='none'`).
#[track_caller]
pub fn binary_cross_entropy_elements(p: &Tensor, target: &Tensor) -> Tensor {
    assert!(
        p.shape() == target.shape(),
        "binary_cross_entropy: prediction {:?} and target {:?} differ",
        p.shape(),
        target.shape()
    );
    let floor = Tensor::full(&[], -100.0, p.device());
    let log_p = p.log().maximum(&floor);
    let log_q = p.neg().add_scalar(1.0).log().maximum(&floor);
    (target * &log_p + &(target.neg().add_scalar(1.0) * log_q)).neg()
}

/// Binary cross-entropy on logits, `BCEWithLogitsLoss()`: stable for any logit.
#[track_caller]
pub fn binary_cross_entropy_with_logits(z: &Tensor, target: &Tensor) -> Tensor {
    binary_cross_entropy_with_logits_elements(z, target).mean()
}

/// [`binary_cross_entropy_with_logits`] of each element, unreduced
/// (`reduction='none'`).
#[track_caller]
pub fn binary_cross_entropy_with_logits_elements(z: &Tensor, target: &Tensor) -> Tensor {
    assert!(
        z.shape() == target.shape(),
        "binary_cross_entropy_with_logits: logits {:?} and target {:?} differ",
        z.shape(),
        target.shape()
    );
    // max(z, 0) - z·t + log(1 + e^-|z|), the last term with log1p (as PyTorch): for a
    // confident logit, 1 + e^-|z| rounds to 1 and log would give 0.
    z.relu() - z * target + z.abs().neg().exp().log1p()
}

/// Softmax cross-entropy of logits `[batch, classes]` against class labels
/// `[batch]`, `CrossEntropyLoss()`: one fused kernel forward and backward. Labels
/// out of range are reported as `Error::LabelOutOfRange` when the loss is computed.
#[track_caller]
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    check_cross_entropy(logits, labels);
    Tensor::cross_entropy_mean(logits, labels)
}

/// [`cross_entropy`] of each row, `[batch]` (`reduction='none'`).
#[track_caller]
pub fn cross_entropy_per_row(logits: &Tensor, labels: &Tensor) -> Tensor {
    check_cross_entropy(logits, labels);
    Tensor::cross_entropy_rows(logits, labels)
}

/// Logits `[batch, classes]` and labels `[batch]`, or a panic naming both.
#[track_caller]
fn check_cross_entropy(logits: &Tensor, labels: &Tensor) {
    assert!(
        logits.shape().len() == 2,
        "cross_entropy: logits must be [batch, classes], got {:?}",
        logits.shape()
    );
    assert!(
        labels.dtype() == DType::U32 && labels.shape() == [logits.shape()[0]],
        "cross_entropy: labels must be a label tensor of shape [{}], got {:?} {:?}",
        logits.shape()[0],
        labels.dtype(),
        labels.shape()
    );
}

/// Softmax cross-entropy with a weight per class (`weights`, `[classes]`), as
/// PyTorch's `CrossEntropyLoss(weight=weights)`: each row's loss times the weight of
/// its class, summed, divided by the sum of those weights (not by the batch size).
#[track_caller]
pub fn cross_entropy_weighted(logits: &Tensor, labels: &Tensor, weights: &Tensor) -> Tensor {
    let classes = logits.shape().get(1).copied().unwrap_or(0);
    assert!(
        weights.shape() == [classes],
        "cross_entropy_weighted: weights must be [classes] = [{classes}], got {:?}",
        weights.shape()
    );
    let w = weights.index_select(0, labels);
    (&cross_entropy_per_row(logits, labels) * &w).sum() / w.sum()
}

/// L1 penalty `λ Σ|w|` over `params`, to add to a loss. Its (sub)gradient `λ·sign(w)`
/// is the same size for small and large weights, so it pushes weights that do not
/// help all the way to zero: L1 gives sparse models.
///
/// # Panics
/// If `params` is empty.
#[track_caller]
pub fn l1_penalty(params: &[Tensor], lambda: f32) -> Tensor {
    penalty("l1_penalty", params, lambda, |w| w.abs().sum())
}

/// L2 penalty `λ Σw²` over `params`, to add to a loss. Its gradient `2λw` shrinks
/// in proportion to the weight, so weights become small but rarely exactly zero.
/// (The optimizers' `weight_decay` adds `wd·w` to the gradient instead, which is
/// this penalty with `λ = wd / 2`.)
///
/// # Panics
/// If `params` is empty.
#[track_caller]
pub fn l2_penalty(params: &[Tensor], lambda: f32) -> Tensor {
    penalty("l2_penalty", params, lambda, |w| w.square().sum())
}

#[track_caller]
fn penalty(name: &str, params: &[Tensor], lambda: f32, term: impl Fn(&Tensor) -> Tensor) -> Tensor {
    assert!(!params.is_empty(), "{name}: no parameters given");
    let mut terms = params.iter().map(term);
    let first = terms.next().unwrap();
    terms.fold(first, |acc, t| &acc + &t).mul_scalar(lambda)
}

/// Knowledge distillation (Hinton, Vinyals and Dean 2015): a student learns from a
/// teacher's softened outputs and the true labels,
///
/// `α · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − α) · CE(student, labels)`,
///
/// the KL divergence averaged over the batch (PyTorch's `F.kl_div(log_softmax(s / T),
/// softmax(t / T), reduction="batchmean")`), `T²` keeping its gradients the size of
/// the hard loss's as `T` grows. The teacher's logits are detached: no gradient
/// reaches the teacher. Run the teacher on the same device (e.g. in
/// [`crate::nn::inference`]).
///
/// `Err` naming both shapes when the teacher's and the student's logits differ in
/// shape (another number of classes) or are not `[batch, classes]`, when the labels
/// are not one per row, for a temperature that is not positive and finite, or an
/// `alpha` outside `[0, 1]`.
pub fn distillation(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    temperature: f32,
    alpha: f32,
) -> crate::Result<Tensor> {
    use crate::Error;
    if student.shape().len() != 2 || teacher.shape() != student.shape() {
        return Err(Error::Invalid(format!(
            "distillation: the student's logits {:?} and the teacher's {:?} must both be [batch, classes] with the \
             same number of classes",
            student.shape(),
            teacher.shape()
        )));
    }
    if labels.dtype() != DType::U32 || labels.shape() != [student.shape()[0]] {
        return Err(Error::Invalid(format!(
            "distillation: labels must be a label tensor of shape [{}], got {:?} {:?}",
            student.shape()[0],
            labels.dtype(),
            labels.shape()
        )));
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::InvalidSetting {
            setting: "temperature",
            message: format!("distillation: temperature {temperature} must be positive and finite"),
        });
    }
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::InvalidSetting {
            setting: "alpha",
            message: format!("distillation: alpha {alpha} is outside [0, 1] (the soft loss's weight)"),
        });
    }
    let inv_t = 1.0 / temperature;
    let soft_teacher = teacher.detach().mul_scalar(inv_t);
    let log_p_teacher = soft_teacher.log_softmax(1);
    let p_teacher = log_p_teacher.exp();
    let log_p_student = student.mul_scalar(inv_t).log_softmax(1);
    let batch = student.shape()[0] as f32;
    let kl = (&p_teacher * &(&log_p_teacher - &log_p_student)).sum() / batch;
    let soft = kl.mul_scalar(alpha * temperature * temperature);
    if alpha == 1.0 {
        return Ok(soft);
    }
    Ok(&soft + &cross_entropy(student, labels).mul_scalar(1.0 - alpha))
}
