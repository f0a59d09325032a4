//! The normalization family's `Tensor` methods, `torch.nn.functional`'s
//! `layer_norm`, `group_norm` and `batch_norm`, with their shape rules: misuse panics
//! at the caller, naming the op and the shapes.

use super::{Norm, NormMode};
use crate::ops::Op;
use crate::tensor::DType;
use crate::Tensor;

/// The weight and bias (or the statistics, named by `names`) of a normalization of
/// `x`, of shape `shape`, flattened: the given ones, or ones and zeros.
#[track_caller]
fn affine(
    op: &str,
    x: &Tensor,
    shape: &[usize],
    [weight, bias]: [Option<&Tensor>; 2],
    names: [&str; 2],
) -> [Tensor; 2] {
    let channels = shape.iter().product();
    let pick = |t: Option<&Tensor>, what: &str, fill: f32| match t {
        Some(t) => {
            t.check_f32(op);
            x.check_same_device(t, op);
            assert!(
                t.shape() == shape,
                "{op}: the {what} has shape {:?}, the input {:?} needs {shape:?}",
                t.shape(),
                x.shape()
            );
            t.reshape(&[channels])
        }
        None => Tensor::full(&[channels], fill, x.device()),
    };
    [pick(weight, names[0], 1.0), pick(bias, names[1], 0.0)]
}

/// The names of the affine parameters in messages.
const WB: [&str; 2] = ["weight", "bias"];

/// Panics unless `x` is f32 `[N, C, …]`.
#[track_caller]
fn check_channels_first(op: &str, x: &Tensor) -> usize {
    x.check_f32(op);
    assert!(
        x.shape().len() >= 2,
        "{op}: expects an input [N, C, …] (batch, channels, …), got shape {:?}",
        x.shape()
    );
    x.shape()[1]
}

impl Tensor {
    /// Layer normalization over the last `normalized_shape.len()` axes, as
    /// `torch.nn.functional.layer_norm`: each row is standardized with its own mean
    /// and biased variance (`eps` added), then scaled by `weight` and shifted by
    /// `bias` (shape `normalized_shape`; `None`: 1 and 0). One fused kernel forward
    /// and one backward.
    ///
    /// # Panics
    /// If the input's trailing axes are not `normalized_shape` (or it is empty), or
    /// the weight or bias has another shape.
    #[track_caller]
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Tensor {
        self.check_f32("layer_norm");
        let rank = self.shape().len();
        assert!(
            !normalized_shape.is_empty()
                && normalized_shape.len() <= rank
                && self.shape()[rank - normalized_shape.len()..] == *normalized_shape,
            "layer_norm: normalized_shape {normalized_shape:?} is not the trailing axes of the input's shape {:?}",
            self.shape()
        );
        let d: usize = normalized_shape.iter().product();
        let rows = self.numel() / d.max(1);
        let [w, b] = affine("layer_norm", self, normalized_shape, [weight, bias], WB);
        let x = self.reshape(&[rows, d]);
        let y = Tensor::norm_forward(NormMode::Groups(1), eps, &[x, w, b]).swap_remove(0);
        y.reshape(self.shape())
    }

    /// Group normalization, as `torch.nn.functional.group_norm`: the input `[N, C,
    /// …]` has its `C` channels split into `groups` groups, each sample's group is
    /// standardized with its own mean and biased variance (`eps` added), then each
    /// channel is scaled by `weight` and shifted by `bias` (`[C]`; `None`: 1 and 0).
    ///
    /// # Panics
    /// If the input is not `[N, C, …]`, `groups` is 0 or does not divide `C`, or the
    /// weight or bias is not `[C]`.
    #[track_caller]
    pub fn group_norm(&self, groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Tensor {
        let c = check_channels_first("group_norm", self);
        assert!(
            groups > 0 && c.is_multiple_of(groups),
            "group_norm: {c} channels (input shape {:?}) do not split into {groups} groups",
            self.shape()
        );
        let [w, b] = affine("group_norm", self, &[c], [weight, bias], WB);
        let mut all = Tensor::norm_forward(NormMode::Groups(groups), eps, &[self.clone(), w, b]);
        all.swap_remove(0)
    }

    /// Batch normalization with the batch's statistics (training mode), as
    /// `torch.nn.functional.batch_norm(x, None, None, weight, bias, training=True)`:
    /// each channel of `[N, C, …]` is standardized with its mean and biased variance
    /// over the batch and every position (`eps` added), then scaled and shifted
    /// (`[C]`; `None`: 1 and 0).
    ///
    /// # Panics
    /// As [`Tensor::batch_norm_stats`].
    #[track_caller]
    pub fn batch_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Tensor {
        self.batch_norm_stats(weight, bias, eps).0
    }

    /// [`Tensor::batch_norm`], also giving the batch's statistics of each channel
    /// `[C]` from the same kernel: `(y, mean, unbiased variance)`, what the running
    /// statistics of `nn::BatchNorm2d` are updated with.
    ///
    /// # Panics
    /// If the input is not `[N, C, …]` with more than one value per channel (as
    /// PyTorch), or the weight or bias is not `[C]`.
    #[track_caller]
    pub fn batch_norm_stats(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> (Tensor, Tensor, Tensor) {
        let c = check_channels_first("batch_norm", self);
        assert!(
            self.numel() / c.max(1) > 1,
            "batch_norm: expects more than 1 value per channel in training mode, got input shape {:?}",
            self.shape()
        );
        let [w, b] = affine("batch_norm", self, &[c], [weight, bias], WB);
        let all = Tensor::norm_forward(NormMode::Batch, eps, &[self.clone(), w, b]);
        let [y, mean, _rstd, var] = <[Tensor; 4]>::try_from(all).expect("four outputs");
        (y, mean, var)
    }

    /// Batch normalization with given statistics (evaluation mode), as
    /// `torch.nn.functional.batch_norm(x, running_mean, running_var, weight, bias,
    /// training=False)`: `(x − mean) / √(var + eps) · weight + bias` per channel of
    /// `[N, C, …]`, all four `[C]` (`None`: weight 1, bias 0). No gradient flows to
    /// the statistics.
    ///
    /// # Panics
    /// If the input is not `[N, C, …]` or a statistic, the weight or the bias is not
    /// `[C]`.
    #[track_caller]
    pub fn batch_norm_eval(
        &self,
        running_mean: &Tensor,
        running_var: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Tensor {
        let c = check_channels_first("batch_norm", self);
        let [rm, rv] = affine(
            "batch_norm",
            self,
            &[c],
            [Some(running_mean), Some(running_var)],
            ["running mean", "running variance"],
        );
        let [w, b] = affine("batch_norm", self, &[c], [weight, bias], WB);
        Tensor::norm_forward(
            NormMode::BatchEval,
            eps,
            &[self.clone(), rm.detach(), rv.detach(), w, b],
        )
        .swap_remove(0)
    }

    /// The in-place update of batch norm's running statistics with a batch's mean
    /// and unbiased variance ([`Norm::RunningStats`]): an update node, run last in
    /// the plan that realizes it (`graph::realize_all`'s updates).
    /// `momentum` `None` is PyTorch's cumulative moving average.
    pub(crate) fn running_stats_update(batch: [&Tensor; 2], running: [&Tensor; 3], momentum: Option<f32>) -> Tensor {
        let inputs = batch.into_iter().chain(running).cloned().collect();
        let op = Norm::RunningStats {
            momentum: momentum.unwrap_or(0.0),
            cumulative: momentum.is_none(),
        };
        Tensor::from_node(Op::Norm(op), inputs, vec![], DType::F32)
    }
}
