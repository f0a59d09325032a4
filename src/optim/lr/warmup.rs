//! Schedules usually stepped per batch: a linear warm-up (`LinearLR`) and the
//! one-cycle policy (`OneCycleLR`, Smith & Topin), with `torch.optim.lr_scheduler`'s
//! formulas so that the sequences are PyTorch's.

use std::f64::consts::PI;

use super::{lr_epoch_state, state_count, state_value, LrSchedule, ScheduleState};
use crate::Result;

/// The rate multiplied by a factor going linearly from `start_factor` to
/// `end_factor` over `total_iters` steps, then constant (`LinearLR`): with a start
/// factor below 1, a warm-up.
#[derive(Clone, Debug)]
pub struct LinearLr {
    base_lr: f64,
    lr: f64,
    start_factor: f64,
    end_factor: f64,
    total_iters: usize,
    epoch: usize,
}

impl LinearLr {
    /// From `base_lr · start_factor` to `base_lr · end_factor` in `total_iters` steps.
    ///
    /// # Panics
    /// If a factor is not in (0, 1] (the start) or [0, 1] (the end), as PyTorch
    /// refuses, or `base_lr` is negative or not finite.
    #[track_caller]
    pub fn new(base_lr: f64, start_factor: f64, end_factor: f64, total_iters: usize) -> LinearLr {
        super::check_nonneg("base_lr", base_lr);
        assert!(
            start_factor > 0.0 && start_factor <= 1.0,
            "LinearLr: start_factor {start_factor} is not in (0, 1]"
        );
        assert!(
            (0.0..=1.0).contains(&end_factor),
            "LinearLr: end_factor {end_factor} is not in [0, 1]"
        );
        LinearLr {
            base_lr,
            lr: base_lr * start_factor,
            start_factor,
            end_factor,
            total_iters,
            epoch: 0,
        }
    }

    /// A warm-up from the optimizer's own rate: its base is `optimizer.lr()`.
    #[track_caller]
    pub fn for_optimizer(
        optimizer: &dyn crate::optim::Optimizer,
        start_factor: f64,
        end_factor: f64,
        total_iters: usize,
    ) -> LinearLr {
        LinearLr::new(optimizer.lr(), start_factor, end_factor, total_iters)
    }
}

impl LrSchedule for LinearLr {
    lr_and_count!("LinearLR", lr, epoch);
    fn initial_lr(&self) -> Option<f64> {
        // The optimizer holds the base; the schedule scales it from the first step.
        Some(self.base_lr)
    }
    fn step(&mut self) {
        self.epoch += 1;
        if self.epoch > self.total_iters {
            return;
        }
        // PyTorch's recursive form (its rounding, not the closed form's).
        let (s, e, t) = (self.start_factor, self.end_factor, self.total_iters as f64);
        self.lr *= 1.0 + (e - s) / (t * s + (self.epoch as f64 - 1.0) * (e - s));
    }
    fn describe(&self) -> String {
        format!(
            "LinearLR(start_factor={}, end_factor={}, total_iters={}, lr={}, step={})",
            self.start_factor, self.end_factor, self.total_iters, self.lr, self.epoch
        )
    }
}

/// How [`OneCycleLr`] moves between its rates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Anneal {
    /// Half a cosine (PyTorch's default `'cos'`).
    #[default]
    Cos,
    /// A straight line (`'linear'`).
    Linear,
}

/// Settings of [`OneCycleLr`] besides its peak and length, PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycleConfig {
    /// Fraction of the steps spent rising to the peak (default 0.3).
    pub pct_start: f64,
    /// The first rate is `max_lr / div_factor` (default 25).
    pub div_factor: f64,
    /// The last rate is the first divided by this (default 1e4).
    pub final_div_factor: f64,
    /// Cosine or linear (default cosine).
    pub anneal: Anneal,
}

impl Default for OneCycleConfig {
    fn default() -> Self {
        OneCycleConfig {
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            anneal: Anneal::Cos,
        }
    }
}

/// The one-cycle policy (`OneCycleLR` without momentum cycling, two phases): from
/// `max_lr / div_factor` up to `max_lr` over the first `pct_start` of
/// `total_steps`, then down to the first rate `/ final_div_factor`; meant to be
/// stepped once per batch. Its first rate is the optimizer's (PyTorch overwrites the
/// optimizer's; here `fit` refuses a mismatch, so build the optimizer with
/// [`LrSchedule::lr`] of the schedule). Past `total_steps` it stays at the last rate.
#[derive(Clone, Debug)]
pub struct OneCycleLr {
    max_lr: f64,
    total_steps: usize,
    config: OneCycleConfig,
    lr: f64,
    step: usize,
}

impl OneCycleLr {
    /// A cycle peaking at `max_lr` over `total_steps` steps, PyTorch's defaults.
    #[track_caller]
    pub fn new(max_lr: f64, total_steps: usize) -> OneCycleLr {
        OneCycleLr::with(max_lr, total_steps, OneCycleConfig::default())
    }

    /// A cycle with other settings.
    ///
    /// # Panics
    /// If `total_steps` is 0, `pct_start` not in (0, 1), a factor not positive, or
    /// `max_lr` negative or not finite.
    #[track_caller]
    pub fn with(max_lr: f64, total_steps: usize, config: OneCycleConfig) -> OneCycleLr {
        super::check_nonneg("max_lr", max_lr);
        assert!(total_steps > 0, "OneCycleLr: total_steps must be > 0");
        assert!(
            config.pct_start > 0.0 && config.pct_start < 1.0,
            "OneCycleLr: pct_start {} is not in (0, 1)",
            config.pct_start
        );
        assert!(
            config.div_factor > 0.0 && config.final_div_factor > 0.0,
            "OneCycleLr: div_factor and final_div_factor must be > 0"
        );
        let mut s = OneCycleLr {
            max_lr,
            total_steps,
            config,
            lr: 0.0,
            step: 0,
        };
        s.lr = s.rate(0);
        s
    }

    /// PyTorch's `get_lr` at step `step`.
    fn rate(&self, step: usize) -> f64 {
        let c = &self.config;
        let initial = self.max_lr / c.div_factor;
        let min = initial / c.final_div_factor;
        let phases = [
            (c.pct_start * self.total_steps as f64 - 1.0, initial, self.max_lr),
            (self.total_steps as f64 - 1.0, self.max_lr, min),
        ];
        let step_num = step.min(self.total_steps - 1) as f64;
        let mut start_step = 0.0;
        for (i, &(end_step, start, end)) in phases.iter().enumerate() {
            if step_num <= end_step || i == phases.len() - 1 {
                let pct = (step_num - start_step) / (end_step - start_step);
                return match c.anneal {
                    Anneal::Cos => end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0),
                    Anneal::Linear => (end - start) * pct + start,
                };
            }
            start_step = end_step;
        }
        unreachable!("the last phase always answers")
    }
}

impl LrSchedule for OneCycleLr {
    lr_and_count!("OneCycleLR", lr, step);
    fn initial_lr(&self) -> Option<f64> {
        Some(self.rate(0))
    }
    fn step(&mut self) {
        self.step += 1;
        self.lr = self.rate(self.step);
    }
    fn describe(&self) -> String {
        format!(
            "OneCycleLR(max_lr={}, total_steps={}, pct_start={}, lr={}, step={})",
            self.max_lr, self.total_steps, self.config.pct_start, self.lr, self.step
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mut s: impl LrSchedule, want: &[f64]) {
        for (i, &w) in want.iter().enumerate() {
            let got = s.lr();
            assert!(
                (got - w).abs() <= 1e-15 * w.abs().max(1e-3),
                "step {i}: {got} != PyTorch's {w}"
            );
            s.step();
        }
    }

    #[test]
    fn linear_warm_up_matches_pytorch() {
        // LinearLR(SGD(lr=0.1), start_factor=0.25, end_factor=1.0, total_iters=4), torch 2.15.
        let want = [
            0.025,
            0.043750000000000004,
            0.06250000000000001,
            0.08125000000000002,
            0.10000000000000002,
            0.10000000000000002,
            0.10000000000000002,
        ];
        check(LinearLr::new(0.1, 0.25, 1.0, 4), &want);
        assert_eq!(LinearLr::new(0.1, 0.25, 1.0, 4).initial_lr(), Some(0.1));
    }

    #[test]
    fn one_cycle_matches_pytorch_cosine_and_linear() {
        // OneCycleLR(SGD(lr=0.1), max_lr=0.1, total_steps=10, cycle_momentum=False), torch 2.15.
        #[rustfmt::skip]
        let cos = [
            0.0040000000000000036, 0.052000000000000005, 0.1, 0.09504846320134738, 0.0811745653949763,
            0.06112620219362893, 0.03887419780637107, 0.0188258346050237, 0.004951936798652629, 4e-07,
        ];
        check(OneCycleLr::new(0.1, 10), &cos);
        // max_lr=0.5, total_steps=12, pct_start=0.25, anneal_strategy='linear', div_factor=10,
        // final_div_factor=100.
        #[rustfmt::skip]
        let linear = [
            0.05, 0.275, 0.5, 0.4445, 0.389, 0.3335, 0.278, 0.22249999999999998, 0.16700000000000004,
            0.11149999999999999, 0.05600000000000005, 0.0005000000000000004,
        ];
        let config = OneCycleConfig {
            pct_start: 0.25,
            div_factor: 10.0,
            final_div_factor: 100.0,
            anneal: Anneal::Linear,
        };
        check(OneCycleLr::with(0.5, 12, config), &linear);
    }
}
