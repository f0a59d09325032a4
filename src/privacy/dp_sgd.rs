//! DP-SGD (Abadi et al. 2016) as Opacus runs it: each example's gradient clipped to
//! norm `C`, the clipped gradients summed, Gaussian noise `σ·C·N(0, 1)` added, the
//! sum divided by the (expected) batch size, and the result handed to any optimizer —
//! all of it graph ops in the step's one plan.
//!
//! Per-sample gradients come without a batch of plans: a `Linear` layer
//! `z = a·Wᵀ + b` on a `[N, in]` input has per-sample gradients `g_i ⊗ a_i` (weight)
//! and `g_i` (bias), where `g_i = ∂L_i/∂z_i` is row `i` of `∂L/∂z` when the loss `L`
//! is the *sum* of the per-sample losses. Autograd returns gradients of trainable
//! leaves only, so [`DpTape::linear`] adds a zero trainable "probe" `p` (`[N, out]`)
//! to the layer's output, `z + p`, whose gradient is exactly `∂L/∂z`. Then
//!
//! * `‖per-sample gradient_i‖² = Σ_layers ‖g_i‖²·‖a_i‖² + ‖g_i‖²` (bias), without
//!   forming any per-sample gradient;
//! * `c_i = min(1, C / (‖·‖_i + 1e-6))` (Opacus' factor);
//! * the clipped sums are `(c ⊙ g)ᵀ·a` and `Σ_i c_i g_i`: two products per layer.
//!
//! Covered: [`Linear`] layers on 2-D inputs, each used once per step, recorded
//! through the tape; layers without parameters (activations, dropout…) anywhere
//! between them. Any other trainable tensor the loss reaches (a convolution, an
//! embedding, a `Linear` called directly) is an error that names it, never a silently
//! unclipped gradient.

use std::cell::RefCell;
use std::collections::HashSet;

use crate::nn::Linear;
use crate::rng::{philox4x32, SplitMix64};
use crate::{Error, Gradients, Result, Tensor};

/// The settings of [`DpSgd`] (Opacus' `make_private` arguments).
#[derive(Clone, Copy, Debug)]
pub struct DpConfig {
    /// `C`, the bound on each example's gradient norm (Opacus' `max_grad_norm`);
    /// `f32::INFINITY` turns clipping off (then `noise_multiplier` must be 0).
    pub max_grad_norm: f32,
    /// `σ`: the noise's standard deviation in units of `C` (0: no noise).
    pub noise_multiplier: f32,
    /// `q`, the chance that an example is in a batch (`batch / N` for shuffled
    /// fixed batches), for the accountant ([`DpSgd::epsilon`]) and [`poisson_batch`].
    pub sample_rate: f64,
    /// What the noisy sum is divided by: the batch size, or with Poisson sampling
    /// the expected one `q·N` (Opacus' `expected_batch_size`, so that the noise does
    /// not depend on how many examples were drawn).
    pub expected_batch_size: usize,
    /// The noise's seed: step `t` draws from a stream keyed by it and `t`.
    pub seed: u64,
}

fn invalid(setting: &'static str, message: String) -> Error {
    Error::InvalidSetting { setting, message }
}

impl DpConfig {
    fn check(&self) -> Result<()> {
        let c = self.max_grad_norm;
        if c.is_nan() || c <= 0.0 {
            return Err(invalid(
                "max_grad_norm",
                format!("DP-SGD: the clipping norm C = {c} must be positive (f32::INFINITY: no clipping)"),
            ));
        }
        let s = self.noise_multiplier;
        if !s.is_finite() || s < 0.0 {
            return Err(invalid(
                "noise_multiplier",
                format!("DP-SGD: the noise multiplier σ = {s} must be finite and not negative"),
            ));
        }
        if s > 0.0 && c.is_infinite() {
            return Err(invalid(
                "noise_multiplier",
                format!("DP-SGD: noise σ·C with σ = {s} needs a finite clipping norm C, got ∞"),
            ));
        }
        let q = self.sample_rate;
        if q.is_nan() || q <= 0.0 || q > 1.0 {
            return Err(invalid(
                "sample_rate",
                format!("DP-SGD: sample rate {q} is outside (0, 1] (the chance that an example is in a batch)"),
            ));
        }
        if self.expected_batch_size == 0 {
            return Err(invalid(
                "expected_batch_size",
                "DP-SGD: the expected batch size must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// DP-SGD's gradients, step after step: see the module doc. It counts its steps for
/// the accountant and keeps the probes between steps of one batch size (they stay
/// zero, so a steady step uploads nothing new).
///
/// ```
/// use wgnn::nn::{loss, Linear};
/// use wgnn::optim::{Optimizer, Sgd, SgdConfig};
/// use wgnn::privacy::{DpConfig, DpSgd};
/// use wgnn::{Device, Tensor};
///
/// let dev = Device::cpu();
/// let (l1, l2) = (Linear::new(4, 8, &dev), Linear::new(8, 3, &dev));
/// let mut sgd = Sgd::new(vec![l1.weight.clone(), l1.bias.clone().unwrap(),
///                             l2.weight.clone(), l2.bias.clone().unwrap()], SgdConfig::default());
/// let config = DpConfig { max_grad_norm: 1.0, noise_multiplier: 1.1, sample_rate: 0.01,
///                         expected_batch_size: 2, seed: 7 };
/// let mut dp = DpSgd::new(config).unwrap();
/// let x = Tensor::from_vec(vec![0.5; 8], &[2, 4], &dev).unwrap();
/// let y = Tensor::from_labels(&[0, 2], &dev).unwrap();
/// let grads = dp
///     .gradients(|tape| {
///         let h = tape.linear(&l1, &x).relu();
///         loss::cross_entropy_per_row(&tape.linear(&l2, &h), &y) // one loss per example
///     })
///     .unwrap();
/// sgd.step(&grads).unwrap();
/// assert!(dp.epsilon(1e-5).unwrap() > 0.0);
/// ```
pub struct DpSgd {
    config: DpConfig,
    steps: usize,
    /// The zero probes of the last step, by use: reused while the shapes hold.
    probes: Vec<Tensor>,
}

/// One use of a `Linear` layer in a step: its parameters, input and probe.
struct Use {
    weight: Tensor,
    bias: Option<Tensor>,
    input: Tensor,
    probe: Tensor,
}

/// What a step's forward records: the `Linear` layers it runs through
/// [`DpTape::linear`]. Given to the closure of [`DpSgd::gradients`].
pub struct DpTape {
    uses: RefCell<Vec<Use>>,
    probes: RefCell<Vec<Tensor>>,
    problem: RefCell<Option<Error>>,
}

impl DpTape {
    /// `layer.forward(x)` for `x` of shape `[N, in]`, recorded so that its
    /// per-sample gradients are clipped. Use it for every `Linear` of the model, each
    /// once per step. (A problem — another input rank, a layer used twice, a device
    /// that cannot hold the probe — is returned by [`DpSgd::gradients`].)
    #[track_caller]
    pub fn linear(&self, layer: &Linear, x: &Tensor) -> Tensor {
        let z = x.linear(&layer.weight, layer.bias.as_ref());
        let fail = |message: String| {
            self.problem
                .borrow_mut()
                .get_or_insert(Error::Invalid(format!("DP-SGD: {message}")));
        };
        if x.shape().len() != 2 {
            fail(format!(
                "per-sample gradients cover Linear layers on [batch, features] inputs, got {:?}",
                x.shape()
            ));
            return z;
        }
        let mut uses = self.uses.borrow_mut();
        if uses.iter().any(|u| u.weight.id() == layer.weight.id()) {
            fail(format!(
                "the Linear layer with weight {:?} is used twice in one step (shared weights are not covered)",
                layer.weight.shape()
            ));
            return z;
        }
        let k = uses.len();
        let mut probes = self.probes.borrow_mut();
        let reusable = probes
            .get(k)
            .is_some_and(|p| p.shape() == z.shape() && p.device() == z.device());
        if !reusable {
            let probe = Tensor::from_vec(vec![0.0; z.numel()], z.shape(), z.device()).and_then(Tensor::requires_grad);
            match probe {
                Ok(p) if k < probes.len() => probes[k] = p,
                Ok(p) => probes.push(p),
                Err(e) => {
                    self.problem.borrow_mut().get_or_insert(e);
                    return z;
                }
            }
        }
        let probe = probes[k].clone();
        uses.push(Use {
            weight: layer.weight.clone(),
            bias: layer.bias.clone(),
            input: x.clone(),
            probe: probe.clone(),
        });
        &z + &probe
    }
}

impl DpSgd {
    /// `Err` naming the setting for `C ≤ 0` (or NaN), `σ < 0` (or not finite), noise
    /// without clipping, a sample rate outside (0, 1] or an expected batch size of 0.
    pub fn new(config: DpConfig) -> Result<DpSgd> {
        config.check()?;
        Ok(DpSgd {
            config,
            steps: 0,
            probes: Vec::new(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &DpConfig {
        &self.config
    }

    /// The steps taken (calls of [`DpSgd::gradients`] that succeeded).
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The ε spent so far at `delta`: [`super::try_rdp_epsilon`] of σ, q and the
    /// steps (∞ without noise).
    pub fn epsilon(&self, delta: f64) -> Result<f64> {
        super::try_rdp_epsilon(
            f64::from(self.config.noise_multiplier),
            self.config.sample_rate,
            self.steps,
            delta,
        )
    }

    /// One step's private gradients. `forward` runs the model on the batch with
    /// every `Linear` through the tape and returns the per-sample losses, `[N]` (e.g.
    /// [`crate::nn::loss::cross_entropy_per_row`]); their sum is differentiated. The
    /// result holds, for each recorded layer's weight and bias, the clipped, noised
    /// sum over the batch divided by `expected_batch_size` — lazy, so that an
    /// optimizer's step computes it all in one plan — and the summed loss as its
    /// [`Gradients::loss`].
    ///
    /// With `C = ∞` and `σ = 0` these are the gradients of the mean loss computed as
    /// sum-then-divide: the same bits as plain backward of the mean when the batch
    /// size is a power of two (the division is then exact); otherwise within the
    /// rounding of that one division.
    ///
    /// `Err` when the losses are not one per example of every recorded layer's
    /// batch, when no layer was recorded, when the loss reaches a trainable tensor
    /// that is not a recorded layer's weight or bias (its per-sample gradients would
    /// escape clipping), or for a problem the tape met.
    pub fn gradients(&mut self, forward: impl FnOnce(&DpTape) -> Tensor) -> Result<Gradients> {
        let tape = DpTape {
            uses: RefCell::new(Vec::new()),
            probes: RefCell::new(std::mem::take(&mut self.probes)),
            problem: RefCell::new(None),
        };
        let losses = forward(&tape);
        let DpTape { uses, probes, problem } = tape;
        self.probes = probes.into_inner();
        if let Some(e) = problem.into_inner() {
            return Err(e);
        }
        let uses = uses.into_inner();
        if uses.is_empty() {
            return Err(Error::Invalid(
                "DP-SGD: the forward recorded no Linear layer (call tape.linear for each)".into(),
            ));
        }
        let n = uses[0].input.shape()[0];
        if losses.shape() != [n] || uses.iter().any(|u| u.input.shape()[0] != n) {
            let rows: Vec<usize> = uses.iter().map(|u| u.input.shape()[0]).collect();
            return Err(Error::Invalid(format!(
                "DP-SGD: the forward must return one loss per example, [{n}], got {:?} (the layers' batches: {rows:?})",
                losses.shape()
            )));
        }
        if n == 0 {
            return Err(Error::Invalid(
                "DP-SGD: an empty batch (Poisson sampling drew no example); skip the step or draw again".into(),
            ));
        }
        let grads = losses.sum().backward()?;
        let covered: HashSet<u64> = uses
            .iter()
            .flat_map(|u| std::iter::once(u.weight.id()).chain(u.bias.as_ref().map(Tensor::id)))
            .chain(uses.iter().map(|u| u.probe.id()))
            .collect();
        // Named in creation order, so the message is the same every run.
        let mut uncovered: Vec<&Tensor> = grads
            .iter()
            .map(|(p, _)| p)
            .filter(|p| !covered.contains(&p.id()))
            .collect();
        uncovered.sort_by_key(|p| p.id());
        if let Some(p) = uncovered.first() {
            return Err(Error::Invalid(format!(
                "DP-SGD: the loss depends on a trainable tensor of shape {:?}{} that is not the weight or bias of a \
                 Linear recorded by tape.linear; its per-sample gradients are not covered",
                p.shape(),
                match uncovered.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                }
            )));
        }
        let output_grads: Vec<Tensor> = uses
            .iter()
            .map(|u| grads.get(&u.probe).cloned())
            .collect::<Option<_>>()
            .ok_or_else(|| Error::Invalid("DP-SGD: a recorded Linear layer's output does not reach the loss".into()))?;
        let c = self.config.max_grad_norm;
        let scaled: Vec<Tensor> = if c.is_infinite() {
            output_grads
        } else {
            let factor = clip_factors(&uses, &output_grads, c).reshape(&[n, 1]);
            output_grads.iter().map(|g| g * &factor).collect()
        };
        let mut pairs = Vec::new();
        for (u, g) in uses.iter().zip(&scaled) {
            // The products and sums of `Linear`'s own gradient rule, so the bits match.
            pairs.push((u.weight.clone(), g.matmul_t(&u.input, true, false)));
            if let Some(b) = &u.bias {
                pairs.push((b.clone(), g.sum_axis(0, false)));
            }
        }
        let (sigma, batch) = (self.config.noise_multiplier, self.config.expected_batch_size as f32);
        for (k, (_, g)) in pairs.iter_mut().enumerate() {
            if sigma > 0.0 {
                let seed = noise_seed(self.config.seed, self.steps as u64, k as u64);
                let noise = Tensor::randn(g.shape(), seed, g.device())?;
                *g = &*g + &noise.mul_scalar(sigma * c);
            }
            *g = &*g / batch;
        }
        self.steps += 1;
        Ok(grads.with_values(pairs))
    }
}

/// Opacus' clip factors `min(1, C / (‖per-sample gradient‖ + 1e-6))`, `[N]`.
fn clip_factors(uses: &[Use], output_grads: &[Tensor], c: f32) -> Tensor {
    let mut squares = uses.iter().zip(output_grads).map(|(u, g)| {
        let g2 = g.square().sum_axis(1, false);
        let weight = &g2 * &u.input.square().sum_axis(1, false);
        match u.bias {
            Some(_) => &weight + &g2,
            None => weight,
        }
    });
    let first = squares.next().expect("one layer at least");
    let norms = squares.fold(first, |acc, s| &acc + &s).sqrt();
    (c / &norms.add_scalar(1e-6)).clamp(0.0, 1.0)
}

/// The noise seed of parameter `k` at step `step` (a Philox block of both).
fn noise_seed(seed: u64, step: u64, k: u64) -> u64 {
    let b = philox4x32(
        [step as u32, (step >> 32) as u32, k as u32, 0x4450_5347],
        [seed as u32, (seed >> 32) as u32],
    );
    (u64::from(b[0]) << 32) | u64::from(b[1])
}

/// Poisson sampling: the rows of a data set of `n` examples in step `step`'s batch,
/// each independently with probability `sample_rate` (so the batch size varies, and
/// may be 0), in order, from a stream keyed by `seed` and `step`. This is the
/// sampling the accountant's `q` assumes.
pub fn poisson_batch(n: usize, sample_rate: f64, seed: u64, step: u64) -> Result<Vec<usize>> {
    if sample_rate.is_nan() || sample_rate <= 0.0 || sample_rate > 1.0 {
        return Err(invalid(
            "sample_rate",
            format!("poisson_batch: sample rate {sample_rate} is outside (0, 1]"),
        ));
    }
    let mut rng = SplitMix64(noise_seed(seed, step, u64::MAX));
    Ok((0..n).filter(|_| rng.unit() < sample_rate).collect())
}
