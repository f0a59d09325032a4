//! Normalization layers with PyTorch's names, layouts and defaults:
//! [`BatchNorm1d`], [`BatchNorm2d`], [`LayerNorm`], [`GroupNorm`]. Each is one fused
//! kernel forward and backward (`src/ops/norm.rs`).
//!
//! Batch norm keeps running statistics as buffers (`running_mean`, `running_var`,
//! `num_batches_tracked`): saved and loaded with the parameters under PyTorch's
//! names, moved by [`Module::to`], never optimized. In training mode a forward
//! normalizes with the batch's statistics and queues the in-place update of the
//! running ones (momentum, the **unbiased** batch variance, the count plus one); the
//! update runs last in the next plan on the device — in `fit` or a hand-written
//! loop, the optimizer step's plan, beside the parameter updates — and before any
//! read of a buffer (`crate::graph::deferred`). In evaluation mode (or inside
//! [`super::inference`]) it normalizes with the running statistics.

use super::{inference_mode, Member, MemberMut, Module, ModuleFields, TensorSpec};
use crate::{Device, Error, Result, Tensor};

/// PyTorch's default `eps` of every normalization layer.
const EPS: f32 = 1e-5;

/// A trainable leaf of this shape filled with `value` (an affine weight or bias).
fn filled(shape: &[usize], value: f32, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(vec![value; shape.iter().product()], shape, device)?.requires_grad()
}

/// Panics naming the layer unless `fits` holds for the input's shape (the check
/// `output_spec` makes, for a forward called directly).
#[track_caller]
fn expect_fit(layer: &dyn Module, x: &Tensor) {
    if let Err(why) = layer.output_spec(&TensorSpec::of(x)) {
        panic!("{} {why}", layer.name());
    }
}

/// The options of PyTorch's `nn.BatchNorm1d` / `nn.BatchNorm2d` after
/// `num_features`; `Default` is PyTorch's: eps 1e-5, momentum 0.1, affine, tracking
/// running statistics.
///
/// ```
/// use wgnn::nn::{BatchNorm1d, BatchNormConfig, Module};
/// use wgnn::{Device, Tensor};
///
/// # fn main() -> wgnn::Result<()> {
/// let dev = Device::cpu();
/// let config = BatchNormConfig { momentum: None, affine: false, ..Default::default() };
/// let bn = BatchNorm1d::with_config(2, config, &dev);
/// assert!(bn.parameters().is_empty()); // no weight or bias, as affine=False
/// bn.forward(&Tensor::new(&[[1.0f32, 10.0], [3.0, 30.0]], &dev)?).to_vec()?;
/// bn.forward(&Tensor::new(&[[5.0f32, 10.0], [7.0, 30.0]], &dev)?).to_vec()?;
/// // momentum None: the plain average of the batches' means (2 and 6)
/// assert_eq!(bn.running_mean.to_vec()?, [4.0, 20.0]);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance before the square root (PyTorch's 1e-5).
    pub eps: f32,
    /// Weight of each batch in the running statistics (PyTorch's 0.1); `None` is
    /// PyTorch's `momentum=None`, a cumulative moving average (batch `k` weighs
    /// `1 / k`).
    pub momentum: Option<f32>,
    /// PyTorch's `affine`: a trainable `weight` and `bias` per channel. Without,
    /// the layer has no parameters (the `weight` and `bias` fields hold the
    /// constants 1 and 0, outside `parameters()` and the `state_dict`).
    pub affine: bool,
    /// PyTorch's `track_running_stats`: keep `running_mean`, `running_var` and
    /// `num_batches_tracked`. Without, the layer has no buffers and normalizes with
    /// the batch's statistics in evaluation mode too (the buffer fields keep their
    /// initial values, outside the `state_dict`).
    pub track_running_stats: bool,
}

impl Default for BatchNormConfig {
    fn default() -> BatchNormConfig {
        BatchNormConfig {
            eps: EPS,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
        }
    }
}

/// The two batch norm layers: the same members and code, different input ranks.
macro_rules! batch_norm {
    ($(#[$doc:meta])* $ty:ident, $torch:literal, $ranks:expr, $layout:literal) => {
        $(#[$doc])*
        pub struct $ty {
            /// `[C]`, trainable, initialized to 1; `state_dict()` name `weight`
            /// (without `affine`: the constant 1, not a parameter).
            pub weight: Tensor,
            /// `[C]`, trainable, initialized to 0; `state_dict()` name `bias`
            /// (without `affine`: the constant 0, not a parameter).
            pub bias: Tensor,
            /// `[C]` buffer, initialized to 0.
            pub running_mean: Tensor,
            /// `[C]` buffer, initialized to 1.
            pub running_var: Tensor,
            /// `[]` buffer of u32 (saved as PyTorch's I64): training batches seen.
            pub num_batches_tracked: Tensor,
            /// Weight of each batch in the running statistics (PyTorch's 0.1); not
            /// read by a layer made with `momentum: None` ([`BatchNormConfig`]).
            pub momentum: f32,
            /// Added to the variance before the square root (PyTorch's 1e-5).
            pub eps: f32,
            /// PyTorch's `momentum=None`: a cumulative moving average.
            cumulative: bool,
            affine: bool,
            track_running_stats: bool,
            training: bool,
        }

        impl $ty {
            #[doc = concat!("`", $torch, "(num_features)` with PyTorch's defaults, in training mode.")]
            /// Panics only if the device cannot hold the parameters; see `try_new`.
            #[track_caller]
            pub fn new(num_features: usize, device: &Device) -> $ty {
                $ty::try_new(num_features, device)
                    .unwrap_or_else(|e| panic!("{}::new({num_features}): {e}", stringify!($ty)))
            }

            /// As `new`, with a failing device as an error.
            pub fn try_new(num_features: usize, device: &Device) -> Result<$ty> {
                $ty::try_with_config(num_features, BatchNormConfig::default(), device)
            }

            #[doc = concat!("`", $torch, "(num_features, eps, momentum, affine, track_running_stats)`,")]
            /// in training mode. Panics only if the device cannot hold the tensors.
            #[track_caller]
            pub fn with_config(num_features: usize, config: BatchNormConfig, device: &Device) -> $ty {
                $ty::try_with_config(num_features, config, device)
                    .unwrap_or_else(|e| panic!("{}::with_config({num_features}): {e}", stringify!($ty)))
            }

            /// As `with_config`; `Err` for a momentum outside [0, 1], or a failing device.
            pub fn try_with_config(num_features: usize, config: BatchNormConfig, device: &Device) -> Result<$ty> {
                if let Some(m) = config.momentum.filter(|m| !(0.0..=1.0).contains(m)) {
                    return Err(Error::InvalidSetting {
                        setting: "momentum",
                        message: format!("{}: momentum {m} is outside [0, 1]", stringify!($ty)),
                    });
                }
                let zeros = Tensor::from_vec(vec![0.0; num_features], &[num_features], device)?;
                let ones = Tensor::from_vec(vec![1.0; num_features], &[num_features], device)?;
                let constant = |t: &Tensor| -> Result<Tensor> {
                    match config.affine {
                        true => t.clone().requires_grad(),
                        false => Ok(t.clone()),
                    }
                };
                Ok($ty {
                    weight: constant(&Tensor::from_vec(vec![1.0; num_features], &[num_features], device)?)?,
                    bias: constant(&Tensor::from_vec(vec![0.0; num_features], &[num_features], device)?)?,
                    running_mean: zeros,
                    running_var: ones,
                    num_batches_tracked: Tensor::from_labels_shaped(&[0], &[], device)?,
                    momentum: config.momentum.unwrap_or(0.1),
                    eps: config.eps,
                    cumulative: config.momentum.is_none(),
                    affine: config.affine,
                    track_running_stats: config.track_running_stats,
                    training: true,
                })
            }

            /// Channels (`num_features`).
            pub fn num_features(&self) -> usize {
                self.weight.shape()[0]
            }

            /// The layer's options (`momentum` and `eps` as the fields hold them now).
            pub fn config(&self) -> BatchNormConfig {
                BatchNormConfig {
                    eps: self.eps,
                    momentum: (!self.cumulative).then_some(self.momentum),
                    affine: self.affine,
                    track_running_stats: self.track_running_stats,
                }
            }
        }

        /// `weight`, `bias` (with `affine`), then the buffers (with
        /// `track_running_stats`): PyTorch's `state_dict` order.
        impl ModuleFields for $ty {
            fn members(&self) -> Vec<(String, Member<'_>)> {
                let mut out = Vec::new();
                if self.affine {
                    out.push(("weight".to_string(), Member::Parameter(&self.weight)));
                    out.push(("bias".to_string(), Member::Parameter(&self.bias)));
                }
                if self.track_running_stats {
                    out.push(("running_mean".to_string(), Member::Buffer(&self.running_mean)));
                    out.push(("running_var".to_string(), Member::Buffer(&self.running_var)));
                    out.push(("num_batches_tracked".to_string(), Member::Buffer(&self.num_batches_tracked)));
                }
                out
            }

            fn members_mut(&mut self) -> Vec<(String, MemberMut<'_>)> {
                let mut out = Vec::new();
                if self.affine {
                    out.push(("weight".to_string(), MemberMut::Parameter(&mut self.weight)));
                    out.push(("bias".to_string(), MemberMut::Parameter(&mut self.bias)));
                }
                if self.track_running_stats {
                    out.push(("running_mean".to_string(), MemberMut::Buffer(&mut self.running_mean)));
                    out.push(("running_var".to_string(), MemberMut::Buffer(&mut self.running_var)));
                    out.push(("num_batches_tracked".to_string(), MemberMut::Buffer(&mut self.num_batches_tracked)));
                }
                out
            }
        }

        impl $ty {
            /// Whether a forward now normalizes with the batch's statistics.
            fn batch_statistics(&self) -> bool {
                (self.training && !inference_mode()) || !self.track_running_stats
            }
        }

        impl Module for $ty {
            #[track_caller]
            fn forward(&self, x: &Tensor) -> Tensor {
                expect_fit(self, x);
                let (w, b) = match self.affine {
                    true => (Some(&self.weight), Some(&self.bias)),
                    false => (None, None),
                };
                let running = [&self.running_mean, &self.running_var, &self.num_batches_tracked];
                if !self.batch_statistics() {
                    return batch_norm_eval(x, w, b, self.eps, running);
                }
                let momentum = (!self.cumulative).then_some(self.momentum);
                // Without running statistics (or outside training) nothing is updated.
                let update = (self.track_running_stats && self.training && !inference_mode()).then_some(running);
                batch_norm_train(x, w, b, self.eps, momentum, update)
            }

            fn name(&self) -> String {
                let mut out = format!("{}({}", stringify!($ty), self.num_features());
                if self.cumulative {
                    out += ", momentum=None";
                }
                if !self.affine {
                    out += ", affine=False";
                }
                if !self.track_running_stats {
                    out += ", track_running_stats=False";
                }
                out + ")"
            }

            fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
                input.expect_f32()?;
                let batch = self.batch_statistics();
                batch_norm_spec(input, self.num_features(), &$ranks, $layout, batch).map(Some)
            }

            fn set_training(&mut self, training: bool) {
                self.training = training;
            }

            fn is_training(&self) -> bool {
                self.training
            }

            fn as_any(&self) -> Option<&dyn std::any::Any> {
                Some(self)
            }
        }
    };
}

batch_norm!(
    /// `torch.nn.BatchNorm1d`: each channel of `[N, C]` or `[N, C, L]` normalized
    /// with the batch's statistics in training (over N and L), the running ones in
    /// evaluation; see the module doc for the running statistics.
    ///
    /// ```
    /// use wgnn::nn::{BatchNorm1d, Module};
    /// use wgnn::{Device, Tensor};
    ///
    /// # fn main() -> wgnn::Result<()> {
    /// let dev = Device::cpu();
    /// let mut bn = BatchNorm1d::new(2, &dev);
    /// let x = Tensor::new(&[[1.0f32, 10.0], [3.0, 30.0]], &dev)?;
    /// let y = bn.forward(&x).to_vec2()?; // batch statistics: ±1 (to eps)
    /// assert!((y[0][0] + 1.0).abs() < 1e-4 && (y[1][1] - 1.0).abs() < 1e-4);
    /// // running_mean = 0.9 · 0 + 0.1 · batch mean, unbiased variance alike
    /// assert_eq!(bn.running_mean.to_vec()?, [0.2, 2.0]);
    /// assert_eq!(bn.num_batches_tracked.to_vec()?, [1.0]);
    /// bn.eval(); // from now on the running statistics
    /// # Ok(()) }
    /// ```
    BatchNorm1d, "torch.nn.BatchNorm1d", [2, 3], "[N, C] or [N, C, L]"
);

batch_norm!(
    /// `torch.nn.BatchNorm2d`: each channel of `[N, C, H, W]` normalized with the
    /// batch's statistics in training (over N, H and W), the running ones in
    /// evaluation; see the module doc for the running statistics.
    BatchNorm2d, "torch.nn.BatchNorm2d", [4], "[N, C, H, W]"
);

/// Batch norm with the batch's statistics and, where `running` is given, the queued
/// update of the running ones (`crate::graph::deferred`); `momentum` `None` is a
/// cumulative average.
#[track_caller]
fn batch_norm_train(
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    eps: f32,
    momentum: Option<f32>,
    running: Option<[&Tensor; 3]>,
) -> Tensor {
    let (y, mean, var) = x.batch_norm_stats(w, b, eps);
    let Some(running) = running else {
        return y;
    };
    // In-place updates need resident buffers (a loaded or moved buffer is staged on
    // the host); a device that cannot hold them fails the plan with that error.
    for buffer in running {
        let _ = buffer.keep_resident();
    }
    crate::graph::deferred::defer(Tensor::running_stats_update([&mean, &var], running, momentum));
    y
}

/// Evaluation-mode batch norm: the running statistics, after any queued update of
/// them (an error there stays queued and is reported by the next plan).
#[track_caller]
fn batch_norm_eval(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f32, running: [&Tensor; 3]) -> Tensor {
    let _ = crate::graph::deferred::flush_writing(running[0]);
    x.batch_norm_eval(running[0], running[1], w, b, eps)
}

/// The output spec of a batch norm over `channels` channels taking inputs of the
/// given ranks (`layout` names them), or why the input does not fit.
fn batch_norm_spec(
    input: &TensorSpec,
    channels: usize,
    ranks: &[usize],
    layout: &str,
    training: bool,
) -> std::result::Result<TensorSpec, String> {
    let shape = &input.shape;
    if !ranks.contains(&shape.len()) || shape[1] != channels {
        return Err(format!(
            "expects {layout} with C = {channels} channels, the data has shape {shape:?}"
        ));
    }
    if training && shape.iter().product::<usize>() / channels <= 1 {
        return Err(format!(
            "expects more than 1 value per channel in training mode, the data has shape {shape:?}"
        ));
    }
    Ok(input.clone())
}

/// `torch.nn.LayerNorm(normalized_shape)`: each sample standardized over its last
/// axes (`normalized_shape`), then scaled and shifted elementwise (`weight` 1,
/// `bias` 0, of shape `normalized_shape`), `eps` 1e-5.
///
/// ```
/// use wgnn::nn::{LayerNorm, Module};
/// use wgnn::{Device, Tensor};
///
/// # fn main() -> wgnn::Result<()> {
/// let dev = Device::cpu();
/// let ln = LayerNorm::new(&[2], &dev);
/// let y = ln.forward(&Tensor::new(&[[1.0f32, 3.0]], &dev)?).to_vec2()?;
/// assert!((y[0][0] + 1.0).abs() < 1e-4 && (y[0][1] - 1.0).abs() < 1e-4);
/// # Ok(()) }
/// ```
#[derive(Module)]
pub struct LayerNorm {
    /// `normalized_shape`, trainable, initialized to 1; `state_dict()` name `weight`.
    pub weight: Tensor,
    /// `normalized_shape`, trainable, initialized to 0; `state_dict()` name `bias`.
    pub bias: Tensor,
    /// Added to the variance before the square root (PyTorch's 1e-5).
    #[module(skip)]
    pub eps: f32,
}

impl LayerNorm {
    /// `torch.nn.LayerNorm(normalized_shape)` with PyTorch's defaults. Panics only
    /// if the device cannot hold the parameters.
    #[track_caller]
    pub fn new(normalized_shape: &[usize], device: &Device) -> LayerNorm {
        let make = |v| filled(normalized_shape, v, device);
        match (make(1.0), make(0.0)) {
            (Ok(weight), Ok(bias)) => LayerNorm { weight, bias, eps: EPS },
            (Err(e), _) | (_, Err(e)) => panic!("LayerNorm::new({normalized_shape:?}): {e}"),
        }
    }
}

impl Module for LayerNorm {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x.layer_norm(self.weight.shape(), Some(&self.weight), Some(&self.bias), self.eps)
    }

    fn name(&self) -> String {
        format!("LayerNorm({:?})", self.weight.shape())
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        input.expect_f32()?;
        let normalized = self.weight.shape();
        if input.shape.len() < normalized.len() || !input.shape.ends_with(normalized) {
            return Err(format!(
                "normalizes the last axes {normalized:?}, the data has shape {:?}",
                input.shape
            ));
        }
        Ok(Some(input.clone()))
    }
}

/// `torch.nn.GroupNorm(num_groups, num_channels)`: the channels of `[N, C, …]`
/// split into groups, each sample's group standardized, then each channel scaled
/// and shifted (`weight` 1, `bias` 0, `[C]`), `eps` 1e-5.
#[derive(Module)]
pub struct GroupNorm {
    /// `[C]`, trainable, initialized to 1; `state_dict()` name `weight`.
    pub weight: Tensor,
    /// `[C]`, trainable, initialized to 0; `state_dict()` name `bias`.
    pub bias: Tensor,
    /// Groups of channels.
    #[module(skip)]
    pub num_groups: usize,
    /// Added to the variance before the square root (PyTorch's 1e-5).
    #[module(skip)]
    pub eps: f32,
}

impl GroupNorm {
    /// `torch.nn.GroupNorm(num_groups, num_channels)` with PyTorch's defaults.
    ///
    /// # Panics
    /// As [`GroupNorm::try_new`]'s errors.
    #[track_caller]
    pub fn new(num_groups: usize, num_channels: usize, device: &Device) -> GroupNorm {
        GroupNorm::try_new(num_groups, num_channels, device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`GroupNorm::new`].
    ///
    /// # Errors
    /// If `num_groups` is 0 or does not divide `num_channels`, or the device cannot
    /// hold the parameters.
    pub fn try_new(num_groups: usize, num_channels: usize, device: &Device) -> Result<GroupNorm> {
        if num_groups == 0 || !num_channels.is_multiple_of(num_groups) {
            return Err(Error::Invalid(format!(
                "GroupNorm::new: {num_channels} channels do not split into {num_groups} groups"
            )));
        }
        Ok(GroupNorm {
            weight: filled(&[num_channels], 1.0, device)?,
            bias: filled(&[num_channels], 0.0, device)?,
            num_groups,
            eps: EPS,
        })
    }
}

impl Module for GroupNorm {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        expect_fit(self, x);
        x.group_norm(self.num_groups, Some(&self.weight), Some(&self.bias), self.eps)
    }

    fn name(&self) -> String {
        format!("GroupNorm({}, {})", self.num_groups, self.weight.shape()[0])
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        input.expect_f32()?;
        let channels = self.weight.shape()[0];
        match input.shape.get(1) {
            Some(&c) if c == channels => Ok(Some(input.clone())),
            _ => Err(format!(
                "expects [N, C, …] with C = {channels} channels, the data has shape {:?}",
                input.shape
            )),
        }
    }
}
