//! Dynamic loss scaling with the semantics of PyTorch's `torch.amp.GradScaler`: the
//! loss is multiplied by a scale before the backward pass so that small gradients
//! survive half-precision storage; the gradients are divided by it again before the
//! update; a step whose gradients hold an infinity or a NaN is skipped and the scale
//! backed off, and after `growth_interval` clean steps in a row the scale grows.

use super::Optimizer;
use crate::{Error, Gradients, Result, Tensor};

/// Settings of [`GradScaler`], PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradScalerConfig {
    /// The first scale (default 65536 = 2¹⁶).
    pub init_scale: f32,
    /// Multiplies the scale after `growth_interval` clean steps (default 2).
    pub growth_factor: f32,
    /// Multiplies the scale after a step with inf/NaN gradients (default 0.5).
    pub backoff_factor: f32,
    /// Clean steps in a row before the scale grows (default 2000).
    pub growth_interval: usize,
}

impl Default for GradScalerConfig {
    fn default() -> Self {
        GradScalerConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

/// Dynamic loss scaling (see the module doc).
///
/// ```
/// use wgnn::optim::{GradScaler, GradScalerConfig, Optimizer, Sgd, SgdConfig};
/// use wgnn::{Device, Tensor};
/// let dev = Device::cpu();
/// let w = Tensor::from_vec(vec![1.0, -2.0], &[2], &dev).unwrap().requires_grad().unwrap();
/// let mut sgd = Sgd::new(vec![w.clone()], SgdConfig { lr: 0.1, ..Default::default() });
/// let mut scaler = GradScaler::new(GradScalerConfig::default()).unwrap();
/// let loss = w.square().sum();
/// let grads = scaler.scale(&loss).backward().unwrap();
/// assert!(scaler.step(&mut sgd, &grads).unwrap()); // applied: the gradients were finite
/// ```
#[derive(Clone, Debug)]
pub struct GradScaler {
    config: GradScalerConfig,
    scale: f32,
    clean_steps: usize,
    skipped: usize,
}

impl GradScaler {
    /// `Err` naming the setting for a scale that is not positive and finite, a
    /// growth factor not above 1, a backoff factor outside (0, 1), or an interval of 0.
    pub fn new(config: GradScalerConfig) -> Result<GradScaler> {
        let bad = |setting, message: String| Err(Error::InvalidSetting { setting, message });
        if !(config.init_scale > 0.0 && config.init_scale.is_finite()) {
            return bad(
                "init_scale",
                format!(
                    "GradScaler: init_scale {} must be positive and finite",
                    config.init_scale
                ),
            );
        }
        if !(config.growth_factor > 1.0 && config.growth_factor.is_finite()) {
            return bad(
                "growth_factor",
                format!("GradScaler: growth_factor {} must be above 1", config.growth_factor),
            );
        }
        if !(config.backoff_factor > 0.0 && config.backoff_factor < 1.0) {
            return bad(
                "backoff_factor",
                format!("GradScaler: backoff_factor {} must be in (0, 1)", config.backoff_factor),
            );
        }
        if config.growth_interval == 0 {
            return bad(
                "growth_interval",
                "GradScaler: growth_interval must be at least 1".into(),
            );
        }
        Ok(GradScaler {
            scale: config.init_scale,
            config,
            clean_steps: 0,
            skipped: 0,
        })
    }

    /// `loss · scale`: differentiate this instead of the loss.
    pub fn scale(&self, loss: &Tensor) -> Tensor {
        loss.mul_scalar(self.scale)
    }

    /// The current scale.
    pub fn current_scale(&self) -> f32 {
        self.scale
    }

    /// Steps skipped so far for inf/NaN gradients.
    pub fn skipped_steps(&self) -> usize {
        self.skipped
    }

    /// Divides the gradients of the scaled loss by the scale and, when all of them
    /// are finite, lets `optimizer` apply them (returning `true`); otherwise skips the
    /// step, leaves parameters and optimizer state untouched, and backs the scale off
    /// (returning `false`). Then updates the scale as PyTorch's `update()` does.
    /// Checking costs one scalar read back per step (as `GradScaler` in PyTorch,
    /// whose `step` synchronizes on `found_inf`).
    pub fn step(&mut self, optimizer: &mut dyn Optimizer, grads: &Gradients) -> Result<bool> {
        let unscaled = self.unscale(grads);
        self.step_unscaled(optimizer, &unscaled)
    }

    /// The gradients of the scaled loss divided by the scale (lazily), as PyTorch's
    /// `unscale_`: to clip them before [`GradScaler::step_unscaled`].
    pub fn unscale(&self, grads: &Gradients) -> Gradients {
        let inv = 1.0 / self.scale;
        grads.with_values(grads.iter().map(|(p, g)| (p.clone(), g.mul_scalar(inv))).collect())
    }

    /// [`GradScaler::step`] for gradients already unscaled ([`GradScaler::unscale`],
    /// then e.g. `clip_norm`): skipped when any is inf or NaN, the scale updated.
    pub fn step_unscaled(&mut self, optimizer: &mut dyn Optimizer, grads: &Gradients) -> Result<bool> {
        // How many gradient values are inf or NaN (read from their bits).
        let found_inf = grads
            .iter()
            .map(|(_, g)| g.non_finite().sum())
            .reduce(|a, b| &a + &b)
            .map(|t| t.item())
            .transpose()?
            .is_some_and(|count| count != 0.0);
        if found_inf {
            self.scale *= self.config.backoff_factor;
            self.clean_steps = 0;
            self.skipped += 1;
            return Ok(false);
        }
        optimizer.step(grads)?;
        self.clean_steps += 1;
        if self.clean_steps == self.config.growth_interval {
            let grown = self.scale * self.config.growth_factor;
            // PyTorch keeps the scale when growing it would overflow.
            if grown.is_finite() {
                self.scale = grown;
            }
            self.clean_steps = 0;
        }
        Ok(true)
    }
}
