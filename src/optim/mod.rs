//! Optimizers with `torch.optim` semantics. A step is part of the plan that
//! computes the gradients: fused in-place update kernels run after the backward
//! pass, in the same submit, with no parameter readback. The step count lives on the
//! host, which computes each step's coefficients (the learning rate, Adam's bias
//! corrections) in f64 as PyTorch does; they reach the kernels through a small device
//! buffer, rewritten when they change, so changing the learning rate recompiles
//! nothing.
//!
//! One departure from `torch.optim`: a state value (a momentum buffer, Adam's
//! moments, RMSprop's averages) that decays below the smallest normal f32 — where a
//! gradient stays zero, as for a unit ReLU keeps off — is stored as zero instead of
//! as a subnormal number, on every device. Subnormal arithmetic is slow on x86 CPUs
//! (the seed MLP's epochs at batch 32 ran 1.4× longer once its dead units' moments
//! got there), and such a state moves its parameter by at most `lr · 1.2e-38 / eps`.

mod groups;
pub mod lr;
mod scaler;
mod state;

pub use groups::ParamGroup;
pub use scaler::{GradScaler, GradScalerConfig};
pub use state::OptimizerState;

use groups::GroupSettings;

use crate::graph::realize_all;
use crate::ops::UpdateKind;
use crate::{Error, Gradients, Result, Tensor};

/// Something that updates parameters from gradients. Object-safe.
pub trait Optimizer {
    /// Applies one update to every parameter that has a gradient in `grads`. On
    /// error, parameters and state are left as they were.
    fn step(&mut self, grads: &Gradients) -> Result<()>;
    /// The current learning rate (f64, as [`lr::LrSchedule`] computes it; the device
    /// applies it in f32).
    fn lr(&self) -> f64;
    /// Sets the learning rate for the following steps (no recompilation).
    fn set_lr(&mut self, lr: f64);
    /// The parameters this optimizer updates.
    fn parameters(&self) -> &[Tensor];
    /// Gradients are values here (not accumulated into parameters), so there is
    /// nothing to zero; kept for PyTorch habits.
    fn zero_grad(&mut self) {}
    /// The full state, read back from the device: kind, hyper-parameters (the
    /// current learning rate included), step count and every state buffer, as a
    /// checkpoint holds it ([`crate::io::save_checkpoint`]). The default says that
    /// this optimizer does not support checkpoints.
    fn state(&self) -> Result<OptimizerState> {
        Err(no_checkpoints(std::any::type_name::<Self>()))
    }
    /// Puts back a state taken by [`Optimizer::state`] (of an optimizer of the same
    /// kind over parameters of the same shapes). Strict: on any mismatch it returns
    /// an error naming every one and changes nothing.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let _ = state;
        Err(no_checkpoints(std::any::type_name::<Self>()))
    }
    /// The group of processes whose gradients this optimizer averages, for a
    /// [`crate::distributed::DistributedOptimizer`]; `None` (the default) for a
    /// single process. `fit` then trains each rank on its shard of every batch,
    /// reports global metrics and lets rank 0 alone print and write checkpoints.
    fn collective(&self) -> Option<std::rc::Rc<dyn crate::distributed::Collective>> {
        None
    }
}

fn no_checkpoints(name: &str) -> Error {
    Error::Invalid(format!(
        "optimizer {name} does not support checkpoints (it does not implement Optimizer::state and load_state)"
    ))
}

/// A boxed optimizer is an optimizer, so one chosen at run time can be passed where
/// `impl Optimizer` is expected (e.g. `Sequential::compile`).
impl Optimizer for Box<dyn Optimizer> {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        (**self).step(grads)
    }
    fn lr(&self) -> f64 {
        (**self).lr()
    }
    fn set_lr(&mut self, lr: f64) {
        (**self).set_lr(lr)
    }
    fn parameters(&self) -> &[Tensor] {
        (**self).parameters()
    }
    fn zero_grad(&mut self) {
        (**self).zero_grad()
    }
    fn state(&self) -> Result<OptimizerState> {
        (**self).state()
    }
    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        (**self).load_state(state)
    }
    fn collective(&self) -> Option<std::rc::Rc<dyn crate::distributed::Collective>> {
        (**self).collective()
    }
}

/// Settings of [`Sgd`], as `torch.optim.SGD`. The seed's momentum form
/// v = βv + (1−β)g is `momentum: β, dampening: β`; as in PyTorch, the first step
/// starts the velocity at g itself (not (1−β)g), so there is no warm-up bias.
#[derive(Clone, Copy, Debug)]
pub struct SgdConfig {
    /// Learning rate (default 0.01).
    pub lr: f32,
    /// Momentum factor β; 0 (the default) is plain SGD with no velocity buffer.
    pub momentum: f32,
    /// Dampening of the gradient added to the velocity, `v = βv + (1 − dampening)g`
    /// (default 0).
    pub dampening: f32,
    /// L2 penalty added to the gradient as `weight_decay · w` (default 0).
    pub weight_decay: f32,
    /// Nesterov momentum: step along `g + βv` instead of `v` (default false).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-2,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

/// Settings of [`Adam`] and [`AdamW`], as `torch.optim.Adam`/`AdamW`.
#[derive(Clone, Copy, Debug)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f32,
    /// Decay of the running mean of gradients, PyTorch's `betas[0]` (default 0.9).
    pub beta1: f32,
    /// Decay of the running mean of squared gradients, PyTorch's `betas[1]`
    /// (default 0.999).
    pub beta2: f32,
    /// Added to the denominator for numerical stability (default 1e-8).
    pub eps: f32,
    /// Weight decay: added to the gradient as `weight_decay · w` by [`Adam`],
    /// applied to the weights as `w ← w (1 − lr · weight_decay)` by [`AdamW`]
    /// (default 0).
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Most parameters one update launch takes (keeps its generated kernel short).
const MAX_PARAMS_PER_LAUNCH: usize = 32;

/// Shared machinery: parameters, their device-resident state, the settings and the
/// number of steps taken.
struct Core {
    /// Every group's parameters, group after group.
    params: Vec<Tensor>,
    kind: UpdateKind,
    state_buffers: usize,
    /// The hyper-parameters, learning rate first (the order of
    /// [`UpdateKind::coefficients`]), as f64: PyTorch's Python floats. The learning
    /// rate is the first group's, as last set.
    settings: Vec<f64>,
    /// The parameter groups (one when built by `new`).
    groups: Vec<GroupSettings>,
    /// Updates applied so far (PyTorch's `state["step"]`); each step's coefficients
    /// are computed from it on the host.
    steps: u64,
    /// Created on the first step (device allocation can fail; constructors cannot).
    resident: Option<Resident>,
}

struct Resident {
    state: Vec<Vec<Tensor>>,
    /// Each group's coefficients, which its update kernels read, on the device.
    coefficients: Vec<Tensor>,
    /// What `coefficients` holds: each is rewritten only when a step changes it.
    uploaded: Vec<Vec<f32>>,
    /// Parameters per update launch: as many as the device can bind (each brings its
    /// gradient, itself and its state; the coefficients are shared).
    per_launch: usize,
}

/// An f32 setting read as the decimal it was written as (0.9f32 gives 0.9, not
/// 0.8999999762), as PyTorch reads `betas=(0.9, 0.999)`: `1 − β` and `βᵗ` then come
/// out as PyTorch's.
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// Where the weight decay is among an update rule's settings.
fn weight_decay_index(kind: UpdateKind) -> usize {
    match kind {
        UpdateKind::Sgd { .. } | UpdateKind::RmsProp { .. } => 3,
        UpdateKind::Adam { .. } => 4,
        UpdateKind::Adagrad => 2,
    }
}

impl Core {
    fn new(params: Vec<Tensor>, kind: UpdateKind, state_buffers: usize, settings: &[f32]) -> Core {
        let group = GroupSettings {
            end: params.len(),
            lr: settings[0],
            weight_decay: settings[weight_decay_index(kind)],
        };
        Core {
            params,
            kind,
            state_buffers,
            settings: settings.iter().map(|&x| decimal(x)).collect(),
            groups: vec![group],
            steps: 0,
            resident: None,
        }
    }

    /// An optimizer core over parameter groups; `settings` are the defaults.
    fn with_groups(groups: Vec<ParamGroup>, kind: UpdateKind, state_buffers: usize, settings: &[f32]) -> Result<Core> {
        let wd = weight_decay_index(kind);
        let (params, groups) = groups::flatten(groups, settings[0], settings[wd])?;
        let mut core = Core::new(params, kind, state_buffers, settings);
        core.settings[0] = decimal(groups[0].lr);
        core.settings[wd] = decimal(groups[0].weight_decay);
        core.groups = groups;
        Ok(core)
    }

    /// Group `g`'s settings now: its weight decay, and its learning rate in the
    /// proportion to the first group's that they were configured in.
    fn group_settings(&self, g: usize) -> Vec<f64> {
        let mut settings = self.settings.clone();
        if g > 0 {
            let (first, this) = (decimal(self.groups[0].lr), decimal(self.groups[g].lr));
            settings[0] = if first == 0.0 {
                this
            } else {
                settings[0] * (this / first)
            };
            settings[weight_decay_index(self.kind)] = decimal(self.groups[g].weight_decay);
        }
        settings
    }

    /// The parameters of each group, as ranges of `params`.
    fn group_ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let starts = std::iter::once(0).chain(self.groups.iter().map(|g| g.end));
        starts.zip(self.groups.iter().map(|g| g.end)).map(|(a, b)| a..b)
    }

    fn step(&mut self, grads: &Gradients) -> Result<()> {
        let Some(first) = self.params.first() else {
            return Ok(());
        };
        if let Some(i) = self.params.iter().position(|p| !p.is_trainable()) {
            return Err(Error::FrozenParameter {
                index: i,
                shape: self.params[i].shape().to_vec(),
            });
        }
        let device = first.device().clone();
        self.make_resident(&device)?;
        for g in 0..self.groups.len() {
            let coefficients = self.kind.coefficients(&self.group_settings(g), self.steps);
            let r = self.resident.as_mut().unwrap();
            if r.uploaded[g] != coefficients {
                r.coefficients[g].assign(&coefficients)?;
                r.uploaded[g] = coefficients;
            }
        }
        let r = self.resident.as_ref().unwrap();
        let mut updates = Vec::new();
        for (g, range) in self.group_ranges().enumerate() {
            let mut group = Vec::new();
            for (param, state) in self.params[range.clone()].iter().zip(&r.state[range]) {
                let Some(grad) = grads.get(param) else { continue };
                if grad.shape() != param.shape() {
                    return Err(Error::ShapeMismatch {
                        op: "optimizer step".into(),
                        expected: param.shape().to_vec(),
                        got: grad.shape().to_vec(),
                    });
                }
                group.push((grad, param, state.as_slice()));
            }
            let coefficients = &r.coefficients[g];
            let launch = |chunk: &[_]| Tensor::optimizer_update_many(self.kind, coefficients, chunk);
            updates.extend(group.chunks(r.per_launch).map(launch));
        }
        if updates.is_empty() {
            return Ok(());
        }
        // The loss is computed in the same plan (before the updates overwrite the
        // parameters it reads).
        realize_all(&grads.step_roots(), &updates)?;
        self.steps += 1;
        Ok(())
    }

    /// Creates the zeroed state buffers and the coefficient buffers on `device`,
    /// unless they exist.
    fn make_resident(&mut self, device: &crate::Device) -> Result<()> {
        if self.resident.is_some() {
            return Ok(());
        }
        let initial = self.kind.initial_state(&self.settings);
        let zeros = |shape: &[usize]| Tensor::resident(vec![initial; shape.iter().product()], shape, device);
        let state = self
            .params
            .iter()
            .map(|p| {
                (0..self.state_buffers)
                    .map(|_| zeros(p.shape()))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let uploaded: Vec<Vec<f32>> = (0..self.groups.len())
            .map(|g| self.kind.coefficients(&self.group_settings(g), self.steps))
            .collect();
        let coefficients = uploaded
            .iter()
            .map(|c| Tensor::resident(c.clone(), &[c.len()], device))
            .collect::<Result<_>>()?;
        let bindings = device.info().max_storage_buffers_per_shader_stage as usize;
        self.resident = Some(Resident {
            state,
            coefficients,
            uploaded,
            per_launch: (bindings.saturating_sub(1) / (2 + self.state_buffers)).clamp(1, MAX_PARAMS_PER_LAUNCH),
        });
        Ok(())
    }
}

/// Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.
pub struct Sgd {
    core: Core,
}

impl Sgd {
    /// The update rule and its settings, in the order of [`UpdateKind::coefficients`].
    fn rule(c: &SgdConfig) -> (UpdateKind, Vec<f32>) {
        let kind = UpdateKind::Sgd {
            momentum: c.momentum != 0.0,
        };
        let nesterov = c.nesterov as u32 as f32;
        (kind, vec![c.lr, c.momentum, c.dampening, c.weight_decay, nesterov])
    }
}

/// Adam (`torch.optim.Adam`: L2 weight decay added to the gradient).
pub struct Adam {
    core: Core,
}

impl Adam {
    /// The update rule and its settings, in the order of [`UpdateKind::coefficients`].
    fn rule(c: &AdamConfig) -> (UpdateKind, Vec<f32>) {
        let kind = UpdateKind::Adam { decoupled: false };
        (kind, vec![c.lr, c.beta1, c.beta2, c.eps, c.weight_decay])
    }
}

/// AdamW (`torch.optim.AdamW`: decoupled weight decay). PyTorch's default
/// weight decay for AdamW is 0.01; set it in the config.
pub struct AdamW {
    core: Core,
}

impl AdamW {
    /// The update rule and its settings, in the order of [`UpdateKind::coefficients`].
    fn rule(c: &AdamConfig) -> (UpdateKind, Vec<f32>) {
        let kind = UpdateKind::Adam { decoupled: true };
        (kind, vec![c.lr, c.beta1, c.beta2, c.eps, c.weight_decay])
    }
}

/// Settings of [`RmsProp`], `torch.optim.RMSprop`'s names and defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate (default 0.01).
    pub lr: f32,
    /// Smoothing constant of the squared-gradient average (default 0.99).
    pub alpha: f32,
    /// Added to the denominator (default 1e-8).
    pub eps: f32,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f32,
    /// Momentum factor (default 0: no momentum buffer).
    pub momentum: f32,
    /// Normalize by the gradient's estimated variance instead of its second moment
    /// (default false).
    pub centered: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }
}

/// RMSprop (`torch.optim.RMSprop`, Hinton's lecture 6e): the step divided by a running
/// root mean square of the gradient; optionally centered and with momentum.
pub struct RmsProp {
    core: Core,
}

impl RmsProp {
    /// The update rule and its settings, in the order of [`UpdateKind::coefficients`].
    fn rule(c: &RmsPropConfig) -> (UpdateKind, Vec<f32>) {
        let kind = UpdateKind::RmsProp {
            momentum: c.momentum != 0.0,
            centered: c.centered,
        };
        let centered = c.centered as u32 as f32;
        (kind, vec![c.lr, c.alpha, c.eps, c.weight_decay, c.momentum, centered])
    }
}

/// Settings of [`Adagrad`], `torch.optim.Adagrad`'s names and defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdagradConfig {
    /// Learning rate (default 0.01).
    pub lr: f32,
    /// The rate at step t is `lr / (1 + (t − 1)·lr_decay)` (default 0).
    pub lr_decay: f32,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f32,
    /// What the sum of squared gradients starts from (default 0).
    pub initial_accumulator_value: f32,
    /// Added to the denominator (default 1e-10).
    pub eps: f32,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
        }
    }
}

/// Adagrad (`torch.optim.Adagrad`, Duchi et al. 2011): each weight's step divided by
/// the root of the sum of its squared gradients so far.
pub struct Adagrad {
    core: Core,
}

impl Adagrad {
    /// The update rule and its settings, in the order of [`UpdateKind::coefficients`].
    fn rule(c: &AdagradConfig) -> (UpdateKind, Vec<f32>) {
        let settings = vec![c.lr, c.lr_decay, c.weight_decay, c.initial_accumulator_value, c.eps];
        (UpdateKind::Adagrad, settings)
    }
}

/// The constructors and the `Optimizer` impl of an optimizer type over `Core`, from its
/// config type and its `rule`.
macro_rules! impl_optimizer {
    ($t:ident, $config:ty) => {
        impl $t {
            /// An optimizer for `params` (usually `model.parameters()` or
            /// `trainable_parameters()`); its state buffers are created on the device
            /// on the first step.
            pub fn new(params: Vec<Tensor>, config: $config) -> $t {
                let (kind, settings) = Self::rule(&config);
                $t {
                    core: Core::new(params, kind, kind.state_buffers(), &settings),
                }
            }

            /// An optimizer for parameter groups, each with its own learning rate and
            /// weight decay where it sets them, `config`'s otherwise (PyTorch's
            /// `param_groups`; see [`ParamGroup`]). An error for an empty group, a
            /// tensor in two groups, or a setting that is negative or not finite.
            pub fn with_groups(groups: Vec<ParamGroup>, config: $config) -> Result<$t> {
                let (kind, settings) = Self::rule(&config);
                Ok($t {
                    core: Core::with_groups(groups, kind, kind.state_buffers(), &settings)?,
                })
            }
        }

        impl Optimizer for $t {
            fn step(&mut self, grads: &Gradients) -> Result<()> {
                self.core.step(grads)
            }
            fn lr(&self) -> f64 {
                self.core.settings[0]
            }
            fn set_lr(&mut self, lr: f64) {
                self.core.settings[0] = lr;
            }
            fn parameters(&self) -> &[Tensor] {
                &self.core.params
            }
            fn state(&self) -> Result<OptimizerState> {
                self.core.state()
            }
            fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
                self.core.load_state(state)
            }
        }
    };
}
impl_optimizer!(Sgd, SgdConfig);
impl_optimizer!(Adam, AdamConfig);
impl_optimizer!(AdamW, AdamConfig);
impl_optimizer!(RmsProp, RmsPropConfig);
impl_optimizer!(Adagrad, AdagradConfig);
