//! Pruning: weights set to zero and kept there, so that a model gets smaller and
//! (once the zeros are removed or skipped) cheaper.
//!
//! * [`Pruning::magnitude`] zeroes the weights of smallest magnitude, per tensor
//!   ([`Scope::PerTensor`]) or over all the given tensors together
//!   ([`Scope::Global`]), at a sparsity in `[0, 1)`.
//! * [`Pruning::mask`] keeps them at zero through training: it multiplies each
//!   pruned tensor's gradient by its 0/1 mask, lazily, so the masking is part of the
//!   optimizer step's one plan. With the weights and the optimizer's state zero at
//!   the pruned places ([`Pruning::zero_optimizer_state`]), every update rule of
//!   `wgnn::optim` (SGD with momentum and weight decay, Adam, AdamW, RMSprop,
//!   Adagrad) leaves them exactly zero: their state stays zero and their update is
//!   `0 · …` or `0 / (0 + ε)`.
//! * [`GradualSchedule`] is Zhu and Gupta's (2017) schedule: the sparsity rises from
//!   `initial` to `final_sparsity` as `s_f + (s_i − s_f)(1 − progress)³` over
//!   `[start, end)` steps, re-pruned every `every` steps; [`Pruning::grow`] raises
//!   the sparsity of an existing pruning (what is pruned stays pruned).
//! * [`shrink_hidden`] is structured pruning: it removes whole hidden units of a
//!   `Linear → activation → Linear` pair (the rows of the first layer and the columns
//!   of the second with the smallest L2 norm), giving smaller layers: a smaller file
//!   and less work per step.
//! * [`sparsity_report`] counts the zeros per tensor.
//!
//! Masks are chosen on the host (a download of the weights at each pruning event,
//! not per step); ties in magnitude go to the lower index, so a pruning is the same
//! on every device.

use crate::nn::{Linear, Module};
use crate::optim::Optimizer;
use crate::{Error, Gradients, Result, Tensor};

/// Over what the magnitudes are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Each tensor loses the same share of its weights.
    PerTensor,
    /// One threshold over all the tensors: layers with smaller weights lose more.
    Global,
}

/// One pruned tensor: the tensor, its 0/1 mask on the device and on the host.
struct Entry {
    param: Tensor,
    mask: Tensor,
    keep: Vec<bool>,
}

/// Masks over some trainable tensors (see the module doc).
pub struct Pruning {
    entries: Vec<Entry>,
}

/// Zeros of one tensor, as [`sparsity_report`] gives them.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSparsity {
    /// The tensor's name (as `named_parameters` gives it).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// How many of its values are exactly zero.
    pub zeros: usize,
    /// How many values it has.
    pub numel: usize,
}

impl TensorSparsity {
    /// `zeros / numel`.
    pub fn sparsity(&self) -> f64 {
        self.zeros as f64 / self.numel.max(1) as f64
    }
}

fn check_sparsity(sparsity: f32, what: &str) -> Result<()> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(Error::InvalidSetting {
            setting: "sparsity",
            message: format!("{what}: sparsity {sparsity} is outside [0, 1) (the share of weights set to zero)"),
        });
    }
    Ok(())
}

/// The indices of the `count` smallest `|v|` (ties: lower index first).
fn smallest(values: &[(f32, usize)], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].0.abs().total_cmp(&values[b].0.abs()).then(a.cmp(&b)));
    order.truncate(count);
    order
}

impl Pruning {
    /// Masks that zero the `sparsity` share of the smallest-magnitude values of
    /// `params` (per tensor or globally), and zeroes those weights now. Usually the
    /// weights of a model's layers, not its biases: see [`prunable`].
    ///
    /// `Err` for a sparsity outside `[0, 1)`, no tensors, or a device error.
    pub fn magnitude(params: &[Tensor], sparsity: f32, scope: Scope) -> Result<Pruning> {
        check_sparsity(sparsity, "Pruning::magnitude")?;
        if params.is_empty() {
            return Err(Error::Invalid("Pruning::magnitude: no tensors to prune".into()));
        }
        let entries = params
            .iter()
            .map(|p| {
                Ok(Entry {
                    param: p.clone(),
                    mask: Tensor::ones(p.shape(), p.device()),
                    keep: vec![true; p.numel()],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut pruning = Pruning { entries };
        pruning.prune_to(sparsity, scope)?;
        Ok(pruning)
    }

    /// Raises the sparsity to `sparsity` (by magnitude, over the current weights):
    /// what is pruned stays pruned, as the pruned weights are zero and rank first.
    /// With `optimizer`, its state at the newly pruned places is zeroed too (see
    /// [`Pruning::zero_optimizer_state`]). `Err` for a sparsity outside `[0, 1)`.
    pub fn grow(&mut self, sparsity: f32, scope: Scope, optimizer: Option<&mut dyn Optimizer>) -> Result<()> {
        check_sparsity(sparsity, "Pruning::grow")?;
        self.prune_to(sparsity, scope)?;
        if let Some(opt) = optimizer {
            self.zero_optimizer_state(opt)?;
        }
        Ok(())
    }

    fn prune_to(&mut self, sparsity: f32, scope: Scope) -> Result<()> {
        let values: Vec<Vec<f32>> = self
            .entries
            .iter()
            .map(|e| {
                // Pruned places count as zero even if the tensor was changed since.
                let v = e.param.to_vec()?;
                Ok(v.iter().zip(&e.keep).map(|(&w, &k)| if k { w } else { 0.0 }).collect())
            })
            .collect::<Result<_>>()?;
        let count = |n: usize| ((n as f64) * f64::from(sparsity)).round() as usize;
        match scope {
            Scope::PerTensor => {
                for (e, v) in self.entries.iter_mut().zip(&values) {
                    let tagged: Vec<(f32, usize)> = v.iter().map(|&w| (w, 0)).collect();
                    let already = e.keep.iter().filter(|k| !**k).count();
                    for i in smallest(&tagged, count(v.len()).max(already)) {
                        e.keep[i] = false;
                    }
                }
            }
            Scope::Global => {
                let tagged: Vec<(f32, usize)> = values
                    .iter()
                    .enumerate()
                    .flat_map(|(t, v)| v.iter().map(move |&w| (w, t)))
                    .collect();
                let offsets: Vec<usize> = values
                    .iter()
                    .scan(0, |at, v| {
                        let start = *at;
                        *at += v.len();
                        Some(start)
                    })
                    .collect();
                let already: usize = self
                    .entries
                    .iter()
                    .map(|e| e.keep.iter().filter(|k| !**k).count())
                    .sum();
                for i in smallest(&tagged, count(tagged.len()).max(already)) {
                    let t = tagged[i].1;
                    self.entries[t].keep[i - offsets[t]] = false;
                }
            }
        }
        for (e, v) in self.entries.iter_mut().zip(values) {
            let mask: Vec<f32> = e.keep.iter().map(|&k| f32::from(u8::from(k))).collect();
            let pruned: Vec<f32> = v.iter().zip(&mask).map(|(w, m)| w * m).collect();
            e.param.assign(&pruned)?;
            e.mask = Tensor::from_vec(mask, e.param.shape(), e.param.device())?;
        }
        Ok(())
    }

    /// The gradients with each pruned tensor's gradient multiplied by its mask
    /// (lazy: computed in the step's plan). Pass the result to the optimizer.
    pub fn mask(&self, grads: &Gradients) -> Gradients {
        let pairs = grads
            .iter()
            .map(|(p, g)| match self.entries.iter().find(|e| e.param.id() == p.id()) {
                Some(e) => (p.clone(), g * &e.mask),
                None => (p.clone(), g.clone()),
            })
            .collect();
        grads.with_values(pairs)
    }

    /// Zeroes `optimizer`'s state buffers (momentum, Adam's moments, …) at the
    /// pruned places of the pruned tensors it updates, so that masked gradients keep
    /// those weights exactly zero (a state saved before pruning would move them). A
    /// download and an upload of the state; call it after pruning, not per step.
    /// `Err` when the optimizer does not expose its state.
    pub fn zero_optimizer_state(&self, optimizer: &mut dyn Optimizer) -> Result<()> {
        let mut state = optimizer.state()?;
        let params = optimizer.parameters().to_vec();
        for (p, buffers) in params.iter().zip(&mut state.buffers) {
            if let Some(e) = self.entries.iter().find(|e| e.param.id() == p.id()) {
                for (_, values) in buffers.iter_mut() {
                    for (v, &k) in values.iter_mut().zip(&e.keep) {
                        if !k {
                            *v = 0.0;
                        }
                    }
                }
            }
        }
        optimizer.load_state(&state)
    }

    /// The share of the pruned tensors' values that the masks zero.
    pub fn sparsity(&self) -> f64 {
        let (zeros, total) = self.entries.iter().fold((0, 0), |(z, t), e| {
            (z + e.keep.iter().filter(|k| !**k).count(), t + e.keep.len())
        });
        zeros as f64 / total.max(1) as f64
    }
}

/// The weights of `model` worth pruning: named parameters whose own name (after the
/// last dot) holds `weight`, with two or more axes — linear and convolution kernels,
/// recurrent weight matrices (`weight_ih_l0`, `weight_hh_l0_reverse`, …), attention's
/// `in_proj_weight`, embedding tables; not biases or normalization scales — with
/// their names.
pub fn prunable(model: &dyn Module) -> Vec<(String, Tensor)> {
    let own = |name: &str| name.rsplit('.').next().unwrap_or(name).contains("weight");
    model
        .named_parameters()
        .into_iter()
        .filter(|(name, p)| own(name) && p.shape().len() >= 2)
        .collect()
}

/// Zeros per parameter of `model` (all of them, biases included).
pub fn sparsity_report(model: &dyn Module) -> Result<Vec<TensorSparsity>> {
    model
        .named_parameters()
        .into_iter()
        .map(|(name, p)| {
            let v = p.to_vec()?;
            Ok(TensorSparsity {
                name,
                shape: p.shape().to_vec(),
                zeros: v.iter().filter(|&&x| x == 0.0).count(),
                numel: v.len(),
            })
        })
        .collect()
}

/// Zhu and Gupta's gradual pruning schedule (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradualSchedule {
    /// Sparsity at `start` (often 0).
    pub initial: f32,
    /// Sparsity from `end` on.
    pub final_sparsity: f32,
    /// The step at which pruning starts.
    pub start: usize,
    /// The step at which the final sparsity is reached.
    pub end: usize,
    /// Prune every this many steps in between.
    pub every: usize,
}

impl GradualSchedule {
    /// `Err` for sparsities outside `[0, 1)`, `initial > final_sparsity`,
    /// `end <= start`, or `every` 0.
    pub fn check(&self) -> Result<()> {
        check_sparsity(self.initial, "GradualSchedule initial")?;
        check_sparsity(self.final_sparsity, "GradualSchedule final")?;
        let bad = |setting, message: String| Err(Error::InvalidSetting { setting, message });
        if self.initial > self.final_sparsity {
            return bad(
                "initial",
                format!(
                    "GradualSchedule: initial sparsity {} above the final {}",
                    self.initial, self.final_sparsity
                ),
            );
        }
        if self.end <= self.start || self.every == 0 {
            return bad(
                "end",
                format!(
                    "GradualSchedule: steps {}..{} every {} (end must be after start, every at least 1)",
                    self.start, self.end, self.every
                ),
            );
        }
        Ok(())
    }

    /// The sparsity at `step`.
    pub fn sparsity_at(&self, step: usize) -> f32 {
        if step < self.start {
            return 0.0;
        }
        let t = step.min(self.end) - self.start;
        let progress = t as f64 / (self.end - self.start) as f64;
        let (si, sf) = (f64::from(self.initial), f64::from(self.final_sparsity));
        (sf + (si - sf) * (1.0 - progress).powi(3)) as f32
    }

    /// Whether the masks are updated at `step`: every `every` steps from `start`
    /// up to and including `end`.
    pub fn prunes_at(&self, step: usize) -> bool {
        step >= self.start && step <= self.end && (step - self.start).is_multiple_of(self.every)
    }
}

/// Structured pruning of a hidden layer: of the `first → activation → second`
/// pair, keeps the `keep` hidden units whose incoming weights (row of `first.weight`
/// and its bias) have the largest L2 norm, in their order, and returns the two
/// smaller layers (new trainable tensors on the same device); a removed unit's
/// outgoing column of `second` goes with it. The activation between the two must be
/// elementwise (ReLU, tanh, GELU…), so that each unit's output depends on its own
/// input only. The model changes (that is the point): fine-tune afterwards.
///
/// `Err` when `second` does not take `first`'s outputs, or `keep` is 0 or above
/// the hidden size.
pub fn shrink_hidden(first: &Linear, second: &Linear, keep: usize) -> Result<(Linear, Linear)> {
    let (hidden, inputs) = (first.weight.shape()[0], first.weight.shape()[1]);
    let (outputs, second_in) = (second.weight.shape()[0], second.weight.shape()[1]);
    if second_in != hidden {
        return Err(Error::Invalid(format!(
            "shrink_hidden: the second layer takes {second_in} features, the first gives {hidden}"
        )));
    }
    if keep == 0 || keep > hidden {
        return Err(Error::InvalidSetting {
            setting: "keep",
            message: format!("shrink_hidden: keep {keep} of {hidden} hidden units (1 to {hidden})"),
        });
    }
    let w1 = first.weight.to_vec()?;
    let b1 = first.bias.as_ref().map(Tensor::to_vec).transpose()?;
    let norms: Vec<f32> = (0..hidden)
        .map(|j| {
            let row = &w1[j * inputs..(j + 1) * inputs];
            let bias = b1.as_ref().map_or(0.0, |b| b[j] * b[j]);
            (row.iter().map(|w| w * w).sum::<f32>() + bias).sqrt()
        })
        .collect();
    // Largest norms first (ties: the lower index), then back into the layer's order.
    let mut kept: Vec<usize> = (0..hidden).collect();
    kept.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
    kept.truncate(keep);
    kept.sort_unstable();
    let dev = first.weight.device();
    let trainable = |data: Vec<f32>, shape: &[usize]| Tensor::from_vec(data, shape, dev)?.requires_grad();
    let rows: Vec<f32> = kept
        .iter()
        .flat_map(|&j| w1[j * inputs..(j + 1) * inputs].to_vec())
        .collect();
    let new_first = Linear {
        weight: trainable(rows, &[keep, inputs])?,
        bias: match &b1 {
            Some(b) => Some(trainable(kept.iter().map(|&j| b[j]).collect(), &[keep])?),
            None => None,
        },
    };
    let w2 = second.weight.to_vec()?;
    let columns: Vec<f32> = (0..outputs)
        .flat_map(|o| kept.iter().map(|&j| w2[o * hidden + j]).collect::<Vec<_>>())
        .collect();
    let new_second = Linear {
        weight: trainable(columns, &[outputs, keep])?,
        bias: match &second.bias {
            Some(b) => Some(trainable(b.to_vec()?, &[outputs])?),
            None => None,
        },
    };
    Ok((new_first, new_second))
}
