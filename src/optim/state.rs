//! [`OptimizerState`]: an optimizer's full state on the host, as a checkpoint holds
//! it, and how the built-in optimizers read it back from the device and restore it.

use super::Core;
use crate::ops::UpdateKind;
use crate::{Error, Result};

/// Everything an optimizer carries from one step to the next, read back to the host
/// (see [`super::Optimizer::state`]); loading it into a fresh optimizer of the same
/// kind continues the run bit for bit.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    /// Which update rule (`"SGD"`, `"SGD with momentum"`, `"Adam"`, `"AdamW"`,
    /// `"RMSprop"` and its momentum and centered forms, `"Adagrad"`): a state loads
    /// only into an optimizer of the same kind.
    pub kind: String,
    /// The learning rate as last set (f64, as [`super::Optimizer::lr`] gives it).
    pub lr: f64,
    /// Every hyper-parameter by name as configured (f32; the optimizer reads each as
    /// the decimal it was written as, see [`super::AdamConfig`]), the learning rate
    /// first.
    pub hyper: Vec<(String, f32)>,
    /// Updates applied so far.
    pub steps: u64,
    /// Per parameter, in [`super::Optimizer::parameters`] order, its state buffers by
    /// PyTorch's names (`momentum_buffer`; `exp_avg`, `exp_avg_sq`; `square_avg`,
    /// `grad_avg`; `sum`), each holding as
    /// many values as the parameter.
    pub buffers: Vec<Vec<(String, Vec<f32>)>>,
}

impl OptimizerState {
    /// Every reason why `given` cannot be loaded where this state lives (kind,
    /// hyper-parameter names, number of parameters, buffer names and sizes), one
    /// message each; empty when it fits.
    pub fn mismatches(&self, given: &OptimizerState) -> Vec<String> {
        if given.kind != self.kind {
            return vec![format!(
                "optimizer: the checkpoint holds {} state, the optimizer is {}",
                given.kind, self.kind
            )];
        }
        let mut problems = Vec::new();
        let names = |h: &[(String, f32)]| h.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        if names(&given.hyper) != names(&self.hyper) {
            problems.push(format!(
                "optimizer: hyper-parameters {:?}, {} has {:?}",
                names(&given.hyper),
                self.kind,
                names(&self.hyper)
            ));
        }
        if given.buffers.len() != self.buffers.len() {
            problems.push(format!(
                "optimizer: the checkpoint has state for {} parameters, the optimizer updates {}",
                given.buffers.len(),
                self.buffers.len()
            ));
        }
        for (i, (want, got)) in self.buffers.iter().zip(&given.buffers).enumerate() {
            let names = |b: &[(String, Vec<f32>)]| b.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
            if names(got) != names(want) {
                problems.push(format!(
                    "optimizer: parameter {i} has state {:?}, {} keeps {:?}",
                    names(got),
                    self.kind,
                    names(want)
                ));
                continue;
            }
            for ((name, w), (_, g)) in want.iter().zip(got) {
                if w.len() != g.len() {
                    problems.push(format!(
                        "optimizer: {name} of parameter {i} has {} values, the parameter has {}",
                        g.len(),
                        w.len()
                    ));
                }
            }
        }
        problems
    }
}

/// The state's kind, hyper-parameter and buffer names of an update rule.
fn layout(kind: UpdateKind) -> (&'static str, &'static [&'static str], &'static [&'static str]) {
    match kind {
        UpdateKind::Sgd { momentum } => (
            if momentum { "SGD with momentum" } else { "SGD" },
            &["lr", "momentum", "dampening", "weight_decay", "nesterov"],
            if momentum { &["momentum_buffer"] } else { &[] },
        ),
        UpdateKind::Adam { decoupled } => (
            if decoupled { "AdamW" } else { "Adam" },
            &["lr", "beta1", "beta2", "eps", "weight_decay"],
            &["exp_avg", "exp_avg_sq"],
        ),
        UpdateKind::RmsProp { momentum, centered } => (
            match (momentum, centered) {
                (false, false) => "RMSprop",
                (true, false) => "RMSprop with momentum",
                (false, true) => "centered RMSprop",
                (true, true) => "centered RMSprop with momentum",
            },
            &["lr", "alpha", "eps", "weight_decay", "momentum", "centered"],
            match (momentum, centered) {
                (false, false) => &["square_avg"],
                (true, false) => &["square_avg", "momentum_buffer"],
                (false, true) => &["square_avg", "grad_avg"],
                (true, true) => &["square_avg", "momentum_buffer", "grad_avg"],
            },
        ),
        UpdateKind::Adagrad => (
            "Adagrad",
            &["lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"],
            &["sum"],
        ),
    }
}

impl Core {
    /// The hyper-parameters by name, and with several groups each group's lr and
    /// weight decay (`group1.lr`, `group1.weight_decay`, …), as configured.
    fn hyper(&self, names: &[&str]) -> Vec<(String, f32)> {
        let mut hyper: Vec<(String, f32)> = names
            .iter()
            .zip(&self.settings)
            .map(|(n, v)| (n.to_string(), *v as f32))
            .collect();
        if self.groups.len() > 1 {
            for (g, group) in self.groups.iter().enumerate() {
                hyper.push((format!("group{g}.lr"), group.lr));
                hyper.push((format!("group{g}.weight_decay"), group.weight_decay));
            }
        }
        hyper
    }

    /// The state of a fresh optimizer (every buffer at its initial value: zeros, or
    /// Adagrad's `initial_accumulator_value`), without reading the device.
    fn zero_state(&self) -> OptimizerState {
        let (kind, hyper_names, buffer_names) = layout(self.kind);
        let initial = self.kind.initial_state(&self.settings);
        OptimizerState {
            kind: kind.into(),
            lr: self.settings[0],
            hyper: self.hyper(hyper_names),
            steps: 0,
            buffers: self
                .params
                .iter()
                .map(|p| {
                    buffer_names
                        .iter()
                        .map(|n| (n.to_string(), vec![initial; p.shape().iter().product()]))
                        .collect()
                })
                .collect(),
        }
    }

    pub(super) fn state(&self) -> Result<OptimizerState> {
        let mut state = self.zero_state();
        state.steps = self.steps;
        let Some(r) = &self.resident else {
            return Ok(state);
        };
        for (bufs, tensors) in state.buffers.iter_mut().zip(&r.state) {
            for ((_, values), t) in bufs.iter_mut().zip(tensors) {
                *values = t.to_vec()?;
            }
        }
        Ok(state)
    }

    pub(super) fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let problems = self.zero_state().mismatches(state);
        if !problems.is_empty() {
            return Err(Error::StateMismatch {
                what: "Optimizer::load_state".into(),
                problems,
            });
        }
        if let Some(device) = self.params.first().map(|p| p.device().clone()) {
            self.make_resident(&device)?;
            let r = self.resident.as_ref().expect("made resident");
            for (bufs, tensors) in state.buffers.iter().zip(&r.state) {
                for ((_, values), t) in bufs.iter().zip(tensors) {
                    t.assign(values)?;
                }
            }
        }
        // The coefficients follow from these at the next step.
        self.steps = state.steps;
        let settings = self.settings.len();
        self.settings = state.hyper[..settings]
            .iter()
            .map(|(_, v)| super::decimal(*v))
            .collect();
        self.settings[0] = state.lr;
        for (group, pair) in self.groups.iter_mut().zip(state.hyper[settings..].chunks(2)) {
            (group.lr, group.weight_decay) = (pair[0].1, pair[1].1);
        }
        Ok(())
    }
}
