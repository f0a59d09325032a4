//! Learning-rate schedules: [`StepLr`], [`ExponentialLr`], [`CosineAnnealingLr`] and
//! [`ReduceLrOnPlateau`]. Each follows the chainable `get_lr` of `torch.optim.lr_scheduler`
//! (the form PyTorch runs when `scheduler.step()` is called once per epoch), so the sequence
//! of learning rates equals PyTorch's to rounding. The schedule only computes the rate; the
//! training loop passes [`LrSchedule::lr`] to the optimizer.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use crate::{Error, Result};

/// What a schedule carries from epoch to epoch (current lr, epoch, best metric, …),
/// by name, as a checkpoint holds it.
pub type ScheduleState = BTreeMap<String, f64>;

/// The methods of a schedule whose state is its current lr and a step count (the
/// field names given): `lr`, `last_epoch`, `state`/`load_state` (keys `lr` and
/// `epoch`, errors naming the schedule by its PyTorch name) and `boxed_clone`.
macro_rules! lr_and_count {
    ($name:literal, $lr:ident, $count:ident) => {
        fn lr(&self) -> f64 {
            self.$lr
        }
        fn last_epoch(&self) -> usize {
            self.$count
        }
        fn boxed_clone(&self) -> Option<Box<dyn LrSchedule>> {
            Some(Box::new(self.clone()))
        }
        fn state(&self) -> ScheduleState {
            lr_epoch_state(self.$lr, self.$count)
        }
        fn load_state(&mut self, state: &ScheduleState) -> Result<()> {
            let (lr, count) = (
                state_value(state, "lr", $name)?,
                state_count(state, "epoch", $name)?,
            );
            (self.$lr, self.$count) = (lr, count);
            Ok(())
        }
    };
}

mod warmup;
pub use warmup::{Anneal, LinearLr, OneCycleConfig, OneCycleLr};

/// A learning-rate schedule, stepped once per epoch. Object safe: `Box<dyn LrSchedule>` works.
pub trait LrSchedule: Send {
    /// The current learning rate.
    fn lr(&self) -> f64;
    /// Advances one epoch.
    fn step(&mut self);
    /// Advances one epoch given a metric; schedules that ignore metrics just [`step`](Self::step).
    fn step_with(&mut self, metric: f64) {
        let _ = metric;
        self.step();
    }
    /// Epochs stepped so far (PyTorch's `last_epoch`; 0 right after construction).
    fn last_epoch(&self) -> usize;
    /// One-line summary of the settings and state, for logs.
    fn describe(&self) -> String;
    /// The learning rate the optimizer must hold when the schedule starts (its base,
    /// as `torch.optim.lr_scheduler` reads it from the optimizer); `fit` refuses a
    /// schedule whose base differs from the optimizer's rate. `None` (the default):
    /// not checked.
    fn initial_lr(&self) -> Option<f64> {
        None
    }
    /// A copy of this schedule (settings and state), so that a `FitConfig` holding
    /// it can be cloned; `None`, the default, for one that cannot be copied. Every
    /// schedule of this module can be.
    fn boxed_clone(&self) -> Option<Box<dyn LrSchedule>> {
        None
    }
    /// Why the lr changed at the latest step, if a schedule explains itself; `None` otherwise.
    fn last_change(&self) -> Option<String> {
        None
    }
    /// The state a resumed run needs (see `FitConfig::resume_from`); the settings
    /// given to the constructor are not part of it. The default, for a schedule with
    /// no state, is empty: override it and [`load_state`](Self::load_state) when the
    /// schedule changes as it steps.
    fn state(&self) -> ScheduleState {
        ScheduleState::new()
    }
    /// Puts back a state taken by [`state`](Self::state). The default accepts only
    /// an empty state.
    fn load_state(&mut self, state: &ScheduleState) -> Result<()> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(Error::StateMismatch {
                what: self.describe(),
                problems: vec![format!(
                    "this schedule does not restore state, the checkpoint holds {:?}",
                    state.keys().collect::<Vec<_>>()
                )],
            })
        }
    }
}

/// `state[key]`, or an error naming `who` and the missing key.
pub(crate) fn state_value(state: &ScheduleState, key: &str, who: &str) -> Result<f64> {
    state.get(key).copied().ok_or_else(|| Error::StateMismatch {
        what: who.into(),
        problems: vec![format!(
            "the checkpoint's state lacks {key:?} (it has {:?})",
            state.keys().collect::<Vec<_>>()
        )],
    })
}

/// `state[key]` as a count, or an error naming `who` and the key.
pub(crate) fn state_count(state: &ScheduleState, key: &str, who: &str) -> Result<usize> {
    let v = state_value(state, key, who)?;
    if v >= 0.0 && v.fract() == 0.0 && v < 9.0e15 {
        Ok(v as usize)
    } else {
        Err(Error::StateMismatch {
            what: who.into(),
            problems: vec![format!("{key} = {v} in the checkpoint is not a count")],
        })
    }
}

/// The state of a schedule that keeps only its lr and its epoch.
fn lr_epoch_state(lr: f64, epoch: usize) -> ScheduleState {
    ScheduleState::from([("lr".into(), lr), ("epoch".into(), epoch as f64)])
}

#[track_caller]
fn check_nonneg(name: &str, v: f64) {
    assert!(v.is_finite() && v >= 0.0, "{name} must be finite and >= 0, got {v}");
}

/// Multiplies the lr by `gamma` every `step_size` epochs (`torch.optim.lr_scheduler.StepLR`).
#[derive(Clone, Debug)]
pub struct StepLr {
    lr: f64,
    step_size: usize,
    gamma: f64,
    epoch: usize,
}

impl StepLr {
    /// The schedule of an optimizer: its base is `optimizer.lr()`.
    #[track_caller]
    pub fn for_optimizer(optimizer: &dyn super::Optimizer, step_size: usize, gamma: f64) -> Self {
        Self::new(optimizer.lr(), step_size, gamma)
    }

    /// A schedule starting at `lr` that multiplies it by `gamma` every `step_size`
    /// epochs.
    ///
    /// # Panics
    /// If `lr` or `gamma` is negative or not finite, or `step_size` is 0.
    #[track_caller]
    pub fn new(lr: f64, step_size: usize, gamma: f64) -> Self {
        check_nonneg("lr", lr);
        check_nonneg("gamma", gamma);
        assert!(step_size > 0, "step_size must be > 0");
        Self {
            lr,
            step_size,
            gamma,
            epoch: 0,
        }
    }
}

impl LrSchedule for StepLr {
    lr_and_count!("StepLR", lr, epoch);
    fn initial_lr(&self) -> Option<f64> {
        if self.epoch == 0 {
            Some(self.lr)
        } else {
            None
        }
    }
    fn step(&mut self) {
        self.epoch += 1;
        if self.epoch.is_multiple_of(self.step_size) {
            self.lr *= self.gamma;
        }
    }
    fn describe(&self) -> String {
        format!(
            "StepLR(lr={}, step_size={}, gamma={}, epoch={})",
            self.lr, self.step_size, self.gamma, self.epoch
        )
    }
}

/// Multiplies the lr by `gamma` every epoch (`torch.optim.lr_scheduler.ExponentialLR`).
#[derive(Clone, Debug)]
pub struct ExponentialLr {
    lr: f64,
    gamma: f64,
    epoch: usize,
}

impl ExponentialLr {
    /// The schedule of an optimizer: its base is `optimizer.lr()`.
    #[track_caller]
    pub fn for_optimizer(optimizer: &dyn super::Optimizer, gamma: f64) -> Self {
        Self::new(optimizer.lr(), gamma)
    }

    /// A schedule starting at `lr` that multiplies it by `gamma` every epoch.
    ///
    /// # Panics
    /// If `lr` or `gamma` is negative or not finite.
    #[track_caller]
    pub fn new(lr: f64, gamma: f64) -> Self {
        check_nonneg("lr", lr);
        check_nonneg("gamma", gamma);
        Self { lr, gamma, epoch: 0 }
    }
}

impl LrSchedule for ExponentialLr {
    lr_and_count!("ExponentialLR", lr, epoch);
    fn initial_lr(&self) -> Option<f64> {
        if self.epoch == 0 {
            Some(self.lr)
        } else {
            None
        }
    }
    fn step(&mut self) {
        self.epoch += 1;
        self.lr *= self.gamma;
    }
    fn describe(&self) -> String {
        format!(
            "ExponentialLR(lr={}, gamma={}, epoch={})",
            self.lr, self.gamma, self.epoch
        )
    }
}

/// Cosine from the initial lr down to `eta_min` over `t_max` epochs, then back up, with period
/// `2 * t_max` (`torch.optim.lr_scheduler.CosineAnnealingLR`, no restarts).
#[derive(Clone, Debug)]
pub struct CosineAnnealingLr {
    base_lr: f64,
    lr: f64,
    t_max: usize,
    eta_min: f64,
    epoch: usize,
}

impl CosineAnnealingLr {
    /// The schedule of an optimizer: its base is `optimizer.lr()`.
    #[track_caller]
    pub fn for_optimizer(optimizer: &dyn super::Optimizer, t_max: usize, eta_min: f64) -> Self {
        Self::new(optimizer.lr(), t_max, eta_min)
    }

    /// A schedule from `lr` down to `eta_min` over `t_max` epochs.
    ///
    /// # Panics
    /// If `lr` or `eta_min` is negative or not finite, or `t_max` is 0.
    #[track_caller]
    pub fn new(lr: f64, t_max: usize, eta_min: f64) -> Self {
        check_nonneg("lr", lr);
        check_nonneg("eta_min", eta_min);
        assert!(t_max > 0, "t_max must be > 0");
        Self {
            base_lr: lr,
            lr,
            t_max,
            eta_min,
            epoch: 0,
        }
    }
}

impl LrSchedule for CosineAnnealingLr {
    lr_and_count!("CosineAnnealingLR", lr, epoch);
    fn initial_lr(&self) -> Option<f64> {
        Some(self.base_lr)
    }
    fn step(&mut self) {
        self.epoch += 1;
        let (e, t) = (self.epoch as f64, self.t_max as f64);
        // PyTorch's `(last_epoch - 1 - T_max) % (2 * T_max) == 0` (Python modulo, never negative):
        // there the recursive ratio would divide by 1 + cos(pi) = 0, so it adds the step instead.
        if (self.epoch as i64 - 1 - self.t_max as i64).rem_euclid(2 * self.t_max as i64) == 0 {
            self.lr += (self.base_lr - self.eta_min) * (1.0 - (PI / t).cos()) / 2.0;
        } else {
            self.lr = (1.0 + (PI * e / t).cos()) / (1.0 + (PI * (e - 1.0) / t).cos()) * (self.lr - self.eta_min)
                + self.eta_min;
        }
    }
    fn describe(&self) -> String {
        format!(
            "CosineAnnealingLR(lr={}, t_max={}, eta_min={}, epoch={})",
            self.lr, self.t_max, self.eta_min, self.epoch
        )
    }
}

/// Whether the monitored metric should go down ([`Min`](Self::Min), a loss) or up ([`Max`](Self::Max)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlateauMode {
    /// Lower is better (a loss); the default.
    #[default]
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// How `threshold` defines a real improvement: relative to `best` ([`Rel`](Self::Rel)) or absolute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ThresholdMode {
    /// Better means beyond `best · (1 ∓ threshold)`; the default.
    #[default]
    Rel,
    /// Better means beyond `best ∓ threshold`.
    Abs,
}

/// Settings of [`ReduceLrOnPlateau`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlateauConfig {
    /// Whether the metric should go down or up (default [`PlateauMode::Min`]).
    pub mode: PlateauMode,
    /// new lr = lr * factor; must be < 1.
    pub factor: f64,
    /// Bad epochs tolerated before reducing.
    pub patience: usize,
    /// How much better than the best a value must be to count as an improvement
    /// (default 1e-4).
    pub threshold: f64,
    /// Whether `threshold` is relative to the best value or absolute (default
    /// [`ThresholdMode::Rel`]).
    pub threshold_mode: ThresholdMode,
    /// Epochs after a reduction during which bad epochs are not counted.
    pub cooldown: usize,
    /// Lower bound on the lr.
    pub min_lr: f64,
    /// A reduction smaller than this is skipped.
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        Self {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

/// Reduces the lr when a metric stops improving (`torch.optim.lr_scheduler.ReduceLROnPlateau`).
/// Step it with [`LrSchedule::step_with`]; plain [`LrSchedule::step`] has no metric and does nothing.
/// A NaN metric never improves, so it counts as a bad epoch, as in PyTorch.
#[derive(Clone, Debug)]
pub struct ReduceLrOnPlateau {
    lr: f64,
    cfg: PlateauConfig,
    best: f64,
    num_bad_epochs: usize,
    cooldown_counter: usize,
    epoch: usize,
    change: Option<String>,
}

impl ReduceLrOnPlateau {
    /// The schedule of an optimizer: its base is `optimizer.lr()`.
    #[track_caller]
    pub fn for_optimizer(optimizer: &dyn super::Optimizer, cfg: PlateauConfig) -> Self {
        Self::new(optimizer.lr(), cfg)
    }

    /// A scheduler starting at `lr` (usually the optimizer's `lr()`).
    ///
    /// # Panics
    /// If `factor` is not in `[0, 1)` (PyTorch: "Factor should be < 1.0."), or `lr`, `threshold`,
    /// `min_lr` or `eps` is negative or not finite.
    #[track_caller]
    pub fn new(lr: f64, cfg: PlateauConfig) -> Self {
        check_nonneg("lr", lr);
        assert!(
            (0.0..1.0).contains(&cfg.factor),
            "factor should be in [0, 1), got {}",
            cfg.factor
        );
        check_nonneg("threshold", cfg.threshold);
        check_nonneg("min_lr", cfg.min_lr);
        check_nonneg("eps", cfg.eps);
        let best = match cfg.mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        };
        Self {
            lr,
            cfg,
            best,
            num_bad_epochs: 0,
            cooldown_counter: 0,
            epoch: 0,
            change: None,
        }
    }

    /// The best metric seen so far (±inf before the first step).
    pub fn best(&self) -> f64 {
        self.best
    }

    /// Bad epochs counted since the last improvement, reduction or cooldown.
    pub fn num_bad_epochs(&self) -> usize {
        self.num_bad_epochs
    }

    fn is_better(&self, a: f64) -> bool {
        let (best, th) = (self.best, self.cfg.threshold);
        match (self.cfg.mode, self.cfg.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < best * (1.0 - th),
            (PlateauMode::Min, ThresholdMode::Abs) => a < best - th,
            (PlateauMode::Max, ThresholdMode::Rel) => a > best * (th + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => a > best + th,
        }
    }
}

impl ReduceLrOnPlateau {
    /// [`LrSchedule::step_with`] for any metric that widens to f64 (an f32 loss from
    /// `Tensor::item`, or an f64 from a `History`).
    pub fn step_with(&mut self, metric: impl Into<f64>) {
        LrSchedule::step_with(self, metric.into())
    }
}

impl LrSchedule for ReduceLrOnPlateau {
    fn initial_lr(&self) -> Option<f64> {
        (self.last_epoch() == 0).then_some(self.lr)
    }
    fn boxed_clone(&self) -> Option<Box<dyn LrSchedule>> {
        Some(Box::new(self.clone()))
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    /// Does nothing: this schedule needs a metric, see [`LrSchedule::step_with`].
    fn step(&mut self) {}
    fn step_with(&mut self, metric: f64) {
        self.epoch += 1;
        self.change = None;
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.cfg.patience {
            let old = self.lr;
            let new = (old * self.cfg.factor).max(self.cfg.min_lr);
            if old - new > self.cfg.eps {
                self.lr = new;
                self.change = Some(format!(
                    "metric did not improve for {} epochs (best {:.6}): lr {old} -> {new}",
                    self.num_bad_epochs, self.best
                ));
            }
            self.cooldown_counter = self.cfg.cooldown;
            self.num_bad_epochs = 0;
        }
    }
    fn last_epoch(&self) -> usize {
        self.epoch
    }
    fn describe(&self) -> String {
        format!(
            "ReduceLROnPlateau(lr={}, best={}, bad_epochs={}, epoch={}, {:?})",
            self.lr, self.best, self.num_bad_epochs, self.epoch, self.cfg
        )
    }
    fn last_change(&self) -> Option<String> {
        self.change.clone()
    }
    fn state(&self) -> ScheduleState {
        let mut state = lr_epoch_state(self.lr, self.epoch);
        state.insert("best".into(), self.best);
        state.insert("num_bad_epochs".into(), self.num_bad_epochs as f64);
        state.insert("cooldown_counter".into(), self.cooldown_counter as f64);
        state
    }
    fn load_state(&mut self, state: &ScheduleState) -> Result<()> {
        let who = "ReduceLROnPlateau";
        let lr = state_value(state, "lr", who)?;
        let best = state_value(state, "best", who)?;
        let bad = state_count(state, "num_bad_epochs", who)?;
        let cooldown = state_count(state, "cooldown_counter", who)?;
        let epoch = state_count(state, "epoch", who)?;
        (
            self.lr,
            self.best,
            self.num_bad_epochs,
            self.cooldown_counter,
            self.epoch,
        ) = (lr, best, bad, cooldown, epoch);
        self.change = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values below were computed in Python (f64) by re-implementing the chainable
    // `get_lr` / `step` of each class in `torch/optim/lr_scheduler.py`.

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= 1e-7 * want.abs().max(f64::MIN_POSITIVE)
    }

    /// `want[0]` is the lr before any step, `want[i]` the lr after `i` steps.
    fn check(mut s: Box<dyn LrSchedule>, want: &[f64]) {
        for (i, &w) in want.iter().enumerate() {
            if i > 0 {
                s.step();
            }
            assert!(close(s.lr(), w), "epoch {i}: want {w}, {}", s.describe());
            assert_eq!(s.last_epoch(), i);
        }
    }

    /// `want[i]` is the lr after `step_with(metrics[i])`.
    fn check_plateau(lr: f64, cfg: PlateauConfig, metrics: &[f64], want: &[f64]) -> ReduceLrOnPlateau {
        let mut s = ReduceLrOnPlateau::new(lr, cfg);
        for (i, (&m, &w)) in metrics.iter().zip(want).enumerate() {
            s.step_with(m);
            assert!(close(s.lr(), w), "step {i}: want {w}, {}", s.describe());
        }
        s
    }

    #[test]
    fn step_lr_matches_pytorch() {
        // StepLR.get_lr: lr * gamma when last_epoch > 0 and last_epoch % step_size == 0.
        #[rustfmt::skip]
        let want = [
            0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125, 0.0125, 0.0125, 0.00625, 0.00625, 0.00625,
            0.003125, 0.003125, 0.003125, 0.0015625, 0.0015625, 0.0015625, 0.00078125, 0.00078125, 0.00078125,
            0.000390625, 0.000390625,
        ];
        check(Box::new(StepLr::new(0.1, 3, 0.5)), &want);
    }

    #[test]
    fn exponential_lr_matches_pytorch() {
        // ExponentialLR.get_lr: lr * gamma at every step.
        #[rustfmt::skip]
        let want = [
            0.1, 0.09000000000000001, 0.08100000000000002, 0.07290000000000002, 0.06561000000000002,
            0.05904900000000002, 0.05314410000000002, 0.04782969000000002, 0.043046721000000024, 0.03874204890000002,
            0.03486784401000002, 0.03138105960900001, 0.028242953648100012, 0.025418658283290013, 0.022876792454961013,
            0.020589113209464913, 0.01853020188851842, 0.01667718169966658, 0.015009463529699923, 0.013508517176729932,
            0.01215766545905694, 0.010941898913151246, 0.009847709021836121, 0.00886293811965251, 0.007976644307687259,
            0.007178979876918534,
        ];
        check(Box::new(ExponentialLr::new(0.1, 0.9)), &want);
    }

    #[test]
    fn cosine_annealing_matches_pytorch_past_t_max() {
        // CosineAnnealingLR.get_lr, recursive form: (1 + cos(pi e / T)) / (1 + cos(pi (e-1) / T)) * (lr - eta_min)
        // + eta_min, or lr + (base_lr - eta_min) * (1 - cos(pi / T)) / 2 when (e - 1 - T) % 2T == 0 (e = 11 here).
        #[rustfmt::skip]
        let want = [
            0.1, 0.09757729755661011, 0.0905463412215599, 0.07959536998847742, 0.0657963412215599, 0.0505,
            0.03520365877844011, 0.02140463001152259, 0.010453658778440109, 0.0034227024433899004, 0.001,
            0.0034227024433899004, 0.01045365877844014, 0.02140463001152267, 0.035203658778440255, 0.05050000000000022,
            0.06579634122156018, 0.07959536998847777, 0.09054634122156031, 0.09757729755661054, 0.10000000000000045,
            0.09757729755661054, 0.09054634122156033, 0.07959536998847778, 0.0657963412215602, 0.050500000000000225,
        ];
        check(Box::new(CosineAnnealingLr::new(0.1, 10, 0.001)), &want);
    }

    #[test]
    fn plateau_min_rel_patience_cooldown_min_lr() {
        // ReduceLROnPlateau.step / _is_better ("min", "rel": a < best * (1 - threshold)) / _reduce_lr
        // (new = max(lr * factor, min_lr), applied if old - new > eps). 0.895 is not 1% below 0.9: a bad epoch.
        let cfg = PlateauConfig {
            factor: 0.5,
            patience: 2,
            threshold: 0.01,
            cooldown: 1,
            min_lr: 0.02,
            ..Default::default()
        };
        #[rustfmt::skip]
        let metrics = [
            1.0, 0.9, 0.895, 0.9, 0.91, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7,
            0.7,
        ];
        #[rustfmt::skip]
        let want = [
            0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.025, 0.02, 0.02,
            0.02, 0.02, 0.02,
        ];
        let s = check_plateau(0.1, cfg, &metrics, &want);
        assert_eq!(s.last_epoch(), 20);
        assert_eq!(s.best(), 0.7);
        assert_eq!(s.last_change(), None, "clamped at min_lr: no change at the last step");
    }

    #[test]
    fn plateau_max_abs() {
        // ReduceLROnPlateau with mode="max", threshold_mode="abs": better iff a > best + threshold.
        let cfg = PlateauConfig {
            mode: PlateauMode::Max,
            factor: 0.1,
            patience: 1,
            threshold: 0.05,
            threshold_mode: ThresholdMode::Abs,
            min_lr: 1e-3,
            ..Default::default()
        };
        #[rustfmt::skip]
        let metrics = [
            0.5, 0.52, 0.56, 0.6, 0.62, 0.61, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.8,
        ];
        #[rustfmt::skip]
        let want = [
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002,
            0.0010000000000000002, 0.0010000000000000002, 0.0010000000000000002,
        ];
        check_plateau(1.0, cfg, &metrics, &want);
    }

    #[test]
    fn plateau_skips_reduction_below_eps() {
        // _reduce_lr: old - new = 5e-9 is not > eps = 1e-8, so the lr stays.
        let cfg = PlateauConfig {
            factor: 0.5,
            patience: 0,
            min_lr: 0.1 - 5e-9,
            ..Default::default()
        };
        check_plateau(0.1, cfg, &[1.0, 2.0, 2.0, 2.0], &[0.1; 4]);
    }

    #[test]
    fn plateau_explains_change_and_ignores_plain_step() {
        let cfg = PlateauConfig {
            patience: 1,
            ..Default::default()
        };
        let mut s: Box<dyn LrSchedule> = Box::new(ReduceLrOnPlateau::new(0.1, cfg));
        s.step();
        assert_eq!((s.lr(), s.last_epoch()), (0.1, 0));
        for m in [0.5, 0.6, 0.6] {
            s.step_with(m);
        }
        assert!(close(s.lr(), 0.01));
        let msg = s.last_change().expect("lr changed");
        assert!(
            msg.contains("2 epochs") && msg.contains("best 0.5") && msg.contains("-> 0.01"),
            "{msg}"
        );
        s.step_with(0.7);
        assert_eq!(s.last_change(), None);
        assert!(s.describe().starts_with("ReduceLROnPlateau("));
    }

    #[test]
    #[should_panic(expected = "factor")]
    fn plateau_rejects_factor_one() {
        ReduceLrOnPlateau::new(
            0.1,
            PlateauConfig {
                factor: 1.0,
                ..Default::default()
            },
        );
    }

    #[test]
    #[should_panic(expected = "step_size")]
    fn step_lr_rejects_zero_step_size() {
        StepLr::new(0.1, 0, 0.5);
    }

    #[test]
    #[should_panic(expected = "lr must be finite")]
    fn rejects_nan_lr() {
        CosineAnnealingLr::new(f64::NAN, 10, 0.0);
    }
}
