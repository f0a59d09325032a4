//! Differential privacy's accounting: how much privacy (ε at a given δ) a run of the
//! sampled Gaussian mechanism spends — DP-SGD's per-step noise on clipped
//! per-sample gradients, with each example in a batch with probability
//! `sample_rate` — by Rényi differential privacy (Mironov 2017; Mironov, Talwar and
//! Zhang 2019), as Opacus' `RDPAccountant` computes it:
//!
//! * the RDP of one step at each order α (`compute_rdp`: the integer-order binomial
//!   sum, the fractional-order series with log-erfc tails), times the steps;
//! * the conversion to (ε, δ) of Balle et al. 2020 (Theorem 21),
//!   `ε = rdp − (ln δ + ln α)/(α − 1) + ln((α − 1)/α)`, minimized over Opacus'
//!   default orders `1.1, 1.2, …, 10.9, 12, 13, …, 63`;
//! * [`noise_multiplier_for`]: Opacus' `get_noise_multiplier` bisection.
//!
//! `tests/fixtures/make_privacy_fixture.py` records Opacus' numbers; the tests hold
//! these functions to them. All arithmetic is f64 on the host.

mod dp_sgd;

pub use dp_sgd::{poisson_batch, DpConfig, DpSgd, DpTape};

use crate::{Error, Result};

/// Opacus' `RDPAccountant.DEFAULT_ALPHAS`: 1.1 to 10.9 by 0.1, then 12 to 63.
pub fn default_orders() -> Vec<f64> {
    (1..100)
        .map(|x| 1.0 + f64::from(x) / 10.0)
        .chain((12..64).map(f64::from))
        .collect()
}

/// The ε spent by `steps` steps of the sampled Gaussian mechanism with noise
/// `noise_multiplier` (σ, in units of the clipping norm) and sampling rate
/// `sample_rate` (q, the chance that an example is in a batch), at `delta` — the
/// number Opacus' `RDPAccountant` gives for that history (`get_epsilon(delta)`).
/// No noise gives ∞, no step 0.
///
/// # Panics
/// If `sample_rate` is outside (0, 1], `noise_multiplier` is negative or `delta` is
/// outside (0, 1) (see [`try_rdp_epsilon`] for an error instead).
#[track_caller]
pub fn rdp_epsilon(noise_multiplier: f64, sample_rate: f64, steps: usize, delta: f64) -> f64 {
    try_rdp_epsilon(noise_multiplier, sample_rate, steps, delta).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`rdp_epsilon`], with an error naming the setting that is out of range.
pub fn try_rdp_epsilon(noise_multiplier: f64, sample_rate: f64, steps: usize, delta: f64) -> Result<f64> {
    check(noise_multiplier, sample_rate, delta)?;
    Ok(epsilon(noise_multiplier, sample_rate, steps, delta, &default_orders()).0)
}

/// The ε at `delta` and the order α that gives it, for `steps` steps at
/// `noise_multiplier` and `sample_rate`, minimized over `orders` (each > 1).
pub fn rdp_epsilon_with_orders(
    noise_multiplier: f64,
    sample_rate: f64,
    steps: usize,
    delta: f64,
    orders: &[f64],
) -> Result<(f64, f64)> {
    check(noise_multiplier, sample_rate, delta)?;
    if orders.is_empty() || orders.iter().any(|&a| a <= 1.0 || !a.is_finite()) {
        return Err(invalid(
            "orders",
            format!("RDP orders must be finite and above 1, got {orders:?}"),
        ));
    }
    Ok(epsilon(noise_multiplier, sample_rate, steps, delta, orders))
}

/// The noise multiplier σ that spends at most `target_epsilon` at `delta` over
/// `steps` steps at `sample_rate`, within `epsilon_tolerance` below the target:
/// Opacus' `get_noise_multiplier` (σ doubled from 20 until ε is under the target,
/// then bisected), so it returns the same σ.
///
/// `Err` for a target ε that is not positive, a setting out of range, or a budget
/// that needs σ above 10⁶ (Opacus' limit).
pub fn noise_multiplier_for(
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    steps: usize,
    epsilon_tolerance: f64,
) -> Result<f64> {
    check(0.0, sample_rate, delta)?;
    if target_epsilon.is_nan() || target_epsilon <= 0.0 || epsilon_tolerance.is_nan() || epsilon_tolerance <= 0.0 {
        return Err(invalid(
            "target_epsilon",
            format!(
                "noise_multiplier_for: target ε {target_epsilon} and tolerance {epsilon_tolerance} must be positive"
            ),
        ));
    }
    let orders = default_orders();
    let eps = |sigma: f64| epsilon(sigma, sample_rate, steps, delta, &orders).0;
    let (mut low, mut high, mut eps_high) = (0.0, 10.0, f64::INFINITY);
    while eps_high > target_epsilon {
        high *= 2.0;
        eps_high = eps(high);
        if high > 1e6 {
            return Err(invalid(
                "target_epsilon",
                format!(
                    "noise_multiplier_for: ε {target_epsilon} at δ {delta} over {steps} steps at sample rate \
                     {sample_rate} needs a noise multiplier above 1e6 (the privacy budget is too low)"
                ),
            ));
        }
    }
    while target_epsilon - eps_high > epsilon_tolerance {
        let sigma = (low + high) / 2.0;
        let e = eps(sigma);
        if e < target_epsilon {
            high = sigma;
            eps_high = e;
        } else {
            low = sigma;
        }
    }
    Ok(high)
}

fn invalid(setting: &'static str, message: String) -> Error {
    Error::InvalidSetting { setting, message }
}

fn check(noise_multiplier: f64, sample_rate: f64, delta: f64) -> Result<()> {
    if sample_rate.is_nan() || sample_rate <= 0.0 || sample_rate > 1.0 {
        return Err(invalid(
            "sample_rate",
            format!("sample rate {sample_rate} is outside (0, 1] (the chance that an example is in a batch)"),
        ));
    }
    if noise_multiplier.is_nan() || noise_multiplier < 0.0 {
        return Err(invalid(
            "noise_multiplier",
            format!("noise multiplier {noise_multiplier} is negative or not a number"),
        ));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(invalid("delta", format!("δ {delta} is outside (0, 1)")));
    }
    Ok(())
}

/// Balle et al.'s conversion minimized over `orders`: (ε, α).
fn epsilon(sigma: f64, q: f64, steps: usize, delta: f64, orders: &[f64]) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::NAN);
    for &a in orders {
        let rdp = rdp(q, sigma, a) * steps as f64;
        let eps = rdp - (delta.ln() + a.ln()) / (a - 1.0) + ((a - 1.0) / a).ln();
        // NaN (0 · ∞) never wins, as numpy's nanargmin; the first of equal ones does.
        if eps < best.0 {
            best = (eps, a);
        }
    }
    best
}

/// The RDP of one step at order `alpha` (Opacus' `_compute_rdp`).
fn rdp(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    if alpha.is_infinite() {
        return f64::INFINITY;
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    log_a / (alpha - 1.0)
}

/// `ln(e^x + e^y)`.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = (x.min(y), x.max(y));
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// `ln(e^x − e^y)` for `x ≥ y` (−∞ for equal ones).
fn log_sub(x: f64, y: f64) -> f64 {
    if y == f64::NEG_INFINITY {
        return x;
    }
    if x <= y {
        return f64::NEG_INFINITY;
    }
    let d = (x - y).exp_m1();
    if d.is_infinite() {
        return x;
    }
    d.ln() + y
}

/// `C(alpha, i)` for real `alpha` and whole `i` (the product formula).
fn binom(alpha: f64, i: u64) -> f64 {
    (0..i).fold(1.0, |c, k| c * (alpha - k as f64) / (k + 1) as f64)
}

/// `ln A_α` for whole α: `Σ_i C(α, i) q^i (1 − q)^(α−i) e^((i² − i)/(2σ²))` in logs.
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    for i in 0..=alpha {
        let (fi, fa) = (i as f64, alpha as f64);
        let log_coef = ln_binom_int(alpha, i) + fi * q.ln() + (fa - fi) * (1.0 - q).ln();
        log_a = log_add(log_a, log_coef + (fi * fi - fi) / (2.0 * sigma * sigma));
    }
    log_a
}

/// `ln C(n, k)` for whole `n`, `k` (through ln Γ, as `log(scipy.special.binom)`).
fn ln_binom_int(n: u64, k: u64) -> f64 {
    binom(n as f64, k).ln()
}

/// `ln A_α` for fractional α: the two-sided series of Mironov et al. (2019), §3.3.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let mut i = 0u64;
    loop {
        let coef = binom(alpha, i);
        let log_coef = coef.abs().ln();
        let (fi, j) = (i as f64, alpha - i as f64);
        let log_t0 = log_coef + fi * q.ln() + j * (1.0 - q).ln();
        let log_t1 = log_coef + j * q.ln() + fi * (1.0 - q).ln();
        let log_e0 = 0.5f64.ln() + log_erfc((fi - z0) / (std::f64::consts::SQRT_2 * sigma));
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / (std::f64::consts::SQRT_2 * sigma));
        let log_s0 = log_t0 + (fi * fi - fi) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        if coef > 0.0 {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        i += 1;
        if log_s0.max(log_s1) < -30.0 {
            break;
        }
    }
    log_add(log_a0, log_a1)
}

/// `ln erfc(x)`, accurate where erfc underflows (an asymptotic series beyond 20).
fn log_erfc(x: f64) -> f64 {
    if x < 20.0 {
        return libm::erfc(x).ln();
    }
    // erfc(x) = e^(−x²)/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸) …)
    let t = 1.0 / (2.0 * x * x);
    let series = 1.0 - t * (1.0 - 3.0 * t * (1.0 - 5.0 * t * (1.0 - 7.0 * t)));
    -x * x - (x * std::f64::consts::PI.sqrt()).ln() + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RDP of the Gaussian mechanism without sampling is α/(2σ²); its ε is the
    /// conversion's minimum over the orders.
    #[test]
    fn without_sampling_the_rdp_is_that_of_the_gaussian_mechanism() {
        assert_eq!(rdp(1.0, 2.0, 3.0), 3.0 / 8.0);
        assert_eq!(rdp(0.0, 2.0, 3.0), 0.0); // Opacus' rule; the public functions refuse q = 0
        assert_eq!(rdp(0.5, 0.0, 3.0), f64::INFINITY);
        let (eps, a) = epsilon(2.0, 1.0, 1, 1e-5, &[2.0, 4.0, 8.0]);
        let want = |a: f64| a / 8.0 - (1e-5f64.ln() + a.ln()) / (a - 1.0) + ((a - 1.0) / a).ln();
        assert_eq!((eps, a), (want(8.0), 8.0));
    }

    /// ln erfc matches erfc itself, and its series (from 20 on, before erfc underflows
    /// near 26.5) agrees with erfc where both are defined.
    #[test]
    fn log_erfc_is_continuous_at_its_switch() {
        for x in [20.0, 22.5, 25.0] {
            let (series, direct) = (log_erfc(x), libm::erfc(x).ln());
            assert!(
                (series - direct).abs() < 1e-9 * direct.abs(),
                "{x}: {series} vs {direct}"
            );
        }
        assert!((log_erfc(1.0) - libm::erfc(1.0).ln()).abs() < 1e-15);
    }
}
