//! Parameter groups (`torch.optim`'s `param_groups`): parts of a model trained with
//! their own learning rate and weight decay by one optimizer, in one step — a smaller
//! rate for a pretrained body than for a new head, no weight decay on biases.
//!
//! A group's learning rate is a fixed multiple of the first group's: a schedule or
//! `set_lr` sets the first group's rate and the others follow in proportion, as a
//! multiplicative schedule (`StepLR`, `ExponentialLR`, warm-up, …) moves each of
//! PyTorch's groups. (A schedule with a floor, such as `CosineAnnealingLR`'s
//! `eta_min`, moves PyTorch's groups by their own bases instead.)

use std::collections::HashMap;

use crate::{Error, Result, Tensor};

/// Some parameters and the settings they are trained with where they differ from the
/// optimizer's config: `ParamGroup::new(net.parameters_under("head")?).lr(1e-3)`.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    pub(crate) params: Vec<Tensor>,
    pub(crate) lr: Option<f32>,
    pub(crate) weight_decay: Option<f32>,
}

impl ParamGroup {
    /// A group of `params` with the optimizer's settings (change them with
    /// [`lr`](Self::lr) and [`weight_decay`](Self::weight_decay)).
    pub fn new(params: Vec<Tensor>) -> ParamGroup {
        ParamGroup {
            params,
            lr: None,
            weight_decay: None,
        }
    }

    /// This group's learning rate (at the start: schedules scale it with the first
    /// group's).
    pub fn lr(mut self, lr: f32) -> ParamGroup {
        self.lr = Some(lr);
        self
    }

    /// This group's weight decay.
    pub fn weight_decay(mut self, weight_decay: f32) -> ParamGroup {
        self.weight_decay = Some(weight_decay);
        self
    }
}

/// One group as the optimizer holds it.
#[derive(Clone, Debug)]
pub(crate) struct GroupSettings {
    /// Its parameters are `params[start..end]` of the optimizer.
    pub(crate) end: usize,
    /// Its learning rate and weight decay as configured (f32, as a checkpoint keeps them).
    pub(crate) lr: f32,
    pub(crate) weight_decay: f32,
}

/// Checks `groups` (no empty group, no tensor in two groups, settings finite and ≥ 0,
/// a first rate above 0 when the rates differ) and returns their parameters, in order,
/// with each group's settings (`lr`, `weight_decay` the optimizer's defaults).
pub(crate) fn flatten(
    groups: Vec<ParamGroup>,
    lr: f32,
    weight_decay: f32,
) -> Result<(Vec<Tensor>, Vec<GroupSettings>)> {
    let bad = |reason: String| {
        Err(Error::InvalidSetting {
            setting: "param groups",
            message: format!("optimizer param groups: {reason}"),
        })
    };
    if groups.is_empty() {
        return bad("no group given".into());
    }
    let mut params = Vec::new();
    let mut settings = Vec::new();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (g, group) in groups.into_iter().enumerate() {
        if group.params.is_empty() {
            return bad(format!("group {g} has no parameter"));
        }
        let (lr, weight_decay) = (group.lr.unwrap_or(lr), group.weight_decay.unwrap_or(weight_decay));
        for (name, v) in [("lr", lr), ("weight_decay", weight_decay)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("group {g} has {name} = {v}; it must be finite and >= 0"));
            }
        }
        for p in &group.params {
            if let Some(other) = seen.insert(p.id(), g) {
                return bad(format!(
                    "a tensor of shape {:?} is in group {other} and in group {g}; each parameter belongs to one group",
                    p.shape()
                ));
            }
        }
        params.extend(group.params);
        settings.push(GroupSettings {
            end: params.len(),
            lr,
            weight_decay,
        });
    }
    if settings[0].lr == 0.0 && settings.iter().any(|s| s.lr != 0.0) {
        return bad("the first group's lr is 0: the other groups' rates follow it in proportion".into());
    }
    Ok((params, settings))
}
