//! Why a model decided: attributions of a class score to the input features, with
//! Captum's definitions, for any [`Module`] (`Sequential`, derived modules,
//! convolutional and recurrent layers) on any device.
//!
//! * [`saliency`] — `|∂y[i, t_i] / ∂x|` (Captum's `Saliency`, `abs=True`);
//! * [`gradient_x_input`] — `x · ∂y[i, t_i] / ∂x` (`InputXGradient`);
//! * [`integrated_gradients`] — `(x − x₀) · ∫₀¹ ∂y/∂x(x₀ + α(x − x₀)) dα`
//!   (`IntegratedGradients`) by the trapezoid rule over `steps` intervals or
//!   Gauss–Legendre with `steps` nodes ([`IgRule`]). Every point of every row is one
//!   batch: one forward and one backward pass (one plan), not one per step. The
//!   result reports its **completeness gap**, `|Σ attributions − (y(x) − y(x₀))|`,
//!   which shrinks as the integral gets more points.
//!
//! * [`smoothgrad`] — the mean saliency over `samples` copies of `x` with seeded
//!   Gaussian noise (Captum's `NoiseTunnel` with `smoothgrad` over `Saliency`), all
//!   copies in one batch;
//! * [`occlusion`] — per feature, the mean drop of the score when a sliding window
//!   containing it is set to a baseline value (Captum's `Occlusion`: windows every
//!   `stride` from 0, the last ones cut at the edge), all windows in one batch.
//!
//! * [`permutation_importance`] — for tabular models, the drop in accuracy when one
//!   column is shuffled (scikit-learn's `permutation_importance` with accuracy),
//!   repeated with seeded shuffles; every shuffled copy in one batch.
//!
//! Each takes `x` `[N, …]` and one target class per row; the model must give
//! `[N, classes]` scores (logits or probabilities; attributions are of the value it
//! gives). Put the model in evaluation mode first (`model.eval()`): dropout and batch
//! statistics would otherwise change the function being explained. Gradients are
//! computed for the model's parameters too and dropped.
//!
//! `tests/fixtures/make_explain_fixture.py` records Captum's attributions.

use crate::nn::Module;
use crate::{Error, Result, Tensor};

/// The quadrature of [`integrated_gradients_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IgRule {
    /// The trapezoid rule over `steps` equal intervals (`steps + 1` points). Captum's
    /// `riemann_trapezoid` at `n_steps = steps + 1` takes the same points but weighs
    /// them by `1/n_steps` instead of `1/steps`, so its attributions are
    /// `steps/(steps + 1)` of these (and its convergence delta is larger).
    #[default]
    Trapezoid,
    /// Gauss–Legendre quadrature with `steps` nodes (Captum's `gausslegendre`):
    /// exact for polynomials of degree `2·steps − 1` along the path.
    GaussLegendre,
}

/// Integrated gradients and how well they add up.
#[derive(Clone, Debug)]
pub struct IntegratedGradients {
    /// The attributions, shaped like `x`.
    pub attributions: Tensor,
    /// Per row, `|Σ attributions − (y(x) − y(baseline))|` of its target class.
    pub row_gaps: Vec<f32>,
    /// The largest of `row_gaps`: more steps are needed when it is not small beside
    /// the score differences.
    pub completeness_gap: f32,
}

/// `|∂ model(x)[i, target[i]] / ∂x|`, shaped like `x` (Captum's `Saliency`).
///
/// `Err` when `target` does not hold one class per row of `x`, a class is out of the
/// model's range, or the model's output is not `[rows, classes]`.
pub fn saliency(model: &dyn Module, x: &Tensor, target: &[u32]) -> Result<Tensor> {
    Ok(input_gradients(model, x, target)?.0.abs())
}

/// `x · ∂ model(x)[i, target[i]] / ∂x` (Captum's `InputXGradient`); errors as
/// [`saliency`].
pub fn gradient_x_input(model: &dyn Module, x: &Tensor, target: &[u32]) -> Result<Tensor> {
    let (g, leaf) = input_gradients(model, x, target)?;
    Ok(&g * &leaf)
}

/// Integrated gradients from `baseline` (shaped like `x`, or like one row of it:
/// `[1, …]`) by the trapezoid rule over `steps` intervals; see
/// [`integrated_gradients_with`].
pub fn integrated_gradients(
    model: &dyn Module,
    x: &Tensor,
    baseline: &Tensor,
    target: &[u32],
    steps: usize,
) -> Result<IntegratedGradients> {
    integrated_gradients_with(model, x, baseline, target, steps, IgRule::Trapezoid)
}

/// Integrated gradients with the given quadrature: all points of all rows in one
/// batch of `points · N` rows (one plan). `Err` as [`saliency`], and for `steps` 0
/// (or 1 with the trapezoid rule… which is allowed: two points) or a baseline of
/// another shape.
pub fn integrated_gradients_with(
    model: &dyn Module,
    x: &Tensor,
    baseline: &Tensor,
    target: &[u32],
    steps: usize,
    rule: IgRule,
) -> Result<IntegratedGradients> {
    let n = rows(x, target)?;
    let row_shape = &x.shape()[1..];
    let width: usize = row_shape.iter().product();
    if baseline.shape() != x.shape() && (baseline.shape().first() != Some(&1) || &baseline.shape()[1..] != row_shape) {
        return Err(invalid(format!(
            "integrated_gradients: a baseline of shape {:?} for inputs {:?} (it needs the inputs' shape or one row of it)",
            baseline.shape(),
            x.shape()
        )));
    }
    if steps == 0 {
        return Err(invalid("integrated_gradients: 0 steps (at least 1)".into()));
    }
    let (alphas, weights) = quadrature(steps, rule);
    let xs = x.to_vec()?;
    let b = baseline.to_vec()?;
    let base = |i: usize, j: usize| if b.len() == xs.len() { b[i * width + j] } else { b[j] };
    // Points along the path, point-major: row k·N + i is x₀ + α_k (x − x₀) of row i;
    // then the baseline and x themselves, for the completeness check.
    let mut path = Vec::with_capacity((alphas.len() + 2) * n * width);
    for &a in alphas.iter().chain(&[0.0, 1.0]) {
        for i in 0..n {
            for j in 0..width {
                let (x0, x1) = (base(i, j), xs[i * width + j]);
                path.push(x0 + a as f32 * (x1 - x0));
            }
        }
    }
    let points = alphas.len() + 2;
    let mut shape = vec![points * n];
    shape.extend_from_slice(row_shape);
    let leaf = Tensor::from_vec(path, &shape, x.device())?.requires_grad()?;
    let targets: Vec<u32> = (0..points).flat_map(|_| target.iter().copied()).collect();
    let (picked, scores) = pick(model, &leaf, &targets)?;
    let grads = picked.sum().backward()?;
    let g = grads.get(&leaf).expect("the input is a leaf of the scores").to_vec()?;
    let scores = scores.to_vec()?;
    let mut attributions = vec![0.0f32; n * width];
    let mut row_gaps = Vec::with_capacity(n);
    for i in 0..n {
        let mut sum = 0.0f64;
        for j in 0..width {
            let avg: f64 = weights
                .iter()
                .enumerate()
                .map(|(k, w)| w * f64::from(g[(k * n + i) * width + j]))
                .sum();
            let a = f64::from(xs[i * width + j] - base(i, j)) * avg;
            attributions[i * width + j] = a as f32;
            sum += a;
        }
        let (at_base, at_x) = (scores[(points - 2) * n + i], scores[(points - 1) * n + i]);
        row_gaps.push((sum - f64::from(at_x - at_base)).abs() as f32);
    }
    let completeness_gap = row_gaps.iter().copied().fold(0.0, f32::max);
    Ok(IntegratedGradients {
        attributions: Tensor::from_vec(attributions, x.shape(), x.device())?,
        row_gaps,
        completeness_gap,
    })
}

/// SmoothGrad: the mean over `samples` noisy copies `x + N(0, sigma²)` (noise from
/// `seed`, so a run repeats) of [`saliency`]; all copies in one batch (one plan).
/// `Err` as [`saliency`], and for 0 samples or a negative `sigma`.
pub fn smoothgrad(
    model: &dyn Module,
    x: &Tensor,
    target: &[u32],
    samples: usize,
    sigma: f32,
    seed: u64,
) -> Result<Tensor> {
    let n = rows(x, target)?;
    if samples == 0 || sigma.is_nan() || sigma < 0.0 {
        return Err(invalid(format!(
            "smoothgrad: {samples} samples at noise σ {sigma} (at least one sample, σ ≥ 0)"
        )));
    }
    let xs = x.to_vec()?;
    let mut shape = x.shape().to_vec();
    shape[0] = samples * n;
    let noise = Tensor::randn(&shape, seed, &crate::Device::cpu())?.to_vec()?;
    let noisy: Vec<f32> = noise
        .iter()
        .enumerate()
        .map(|(i, e)| xs[i % xs.len()] + sigma * e)
        .collect();
    let targets: Vec<u32> = (0..samples).flat_map(|_| target.iter().copied()).collect();
    let g = saliency(model, &Tensor::from_vec(noisy, &shape, x.device())?, &targets)?.to_vec()?;
    let mut mean = vec![0.0f32; xs.len()];
    for (i, v) in g.iter().enumerate() {
        mean[i % xs.len()] += v / samples as f32;
    }
    Tensor::from_vec(mean, x.shape(), x.device())
}

/// Occlusion: for each window of shape `window` (one size per axis after the
/// batch's) placed every `strides` along each axis from 0 (the last windows of an
/// axis cut at its edge, as Captum's), the drop of each row's target score when the
/// window's features are set to `baseline`; each feature's attribution is the mean
/// drop over the windows that contain it. All windows of all rows run as one batch.
/// `Err` as [`saliency`], and for a window or stride of another rank, a zero, a
/// window larger than its axis or a stride larger than the window.
pub fn occlusion(
    model: &dyn Module,
    x: &Tensor,
    target: &[u32],
    window: &[usize],
    strides: &[usize],
    baseline: f32,
) -> Result<Tensor> {
    let n = rows(x, target)?;
    let dims = &x.shape()[1..];
    let fits = window.len() == dims.len()
        && strides.len() == dims.len()
        && window
            .iter()
            .zip(strides)
            .zip(dims)
            .all(|((&w, &s), &d)| w >= 1 && s >= 1 && w <= d && s <= w);
    if !fits {
        return Err(invalid(format!(
            "occlusion: window {window:?} with strides {strides:?} over features {dims:?} (one size per axis;              1 ≤ stride ≤ window ≤ axis)"
        )));
    }
    // Window starts per axis: k·stride for k ≤ ⌈(d − w)/s⌉.
    let starts: Vec<Vec<usize>> = dims
        .iter()
        .zip(window)
        .zip(strides)
        .map(|((&d, &w), &s)| (0..=(d - w).div_ceil(s)).map(|k| k * s).collect())
        .collect();
    let width: usize = dims.iter().product();
    let mut windows: Vec<Vec<bool>> = Vec::new();
    let count: usize = starts.iter().map(Vec::len).product();
    for mut k in 0..count {
        let mut at = vec![0usize; dims.len()];
        for (a, s) in at.iter_mut().zip(&starts) {
            *a = s[k % s.len()];
            k /= s.len();
        }
        let inside: Vec<bool> = (0..width)
            .map(|mut f| {
                let mut inside = true;
                for ax in (0..dims.len()).rev() {
                    let c = f % dims[ax];
                    f /= dims[ax];
                    inside &= c >= at[ax] && c < at[ax] + window[ax];
                }
                inside
            })
            .collect();
        windows.push(inside);
    }
    let xs = x.to_vec()?;
    // Rows: the inputs themselves, then each window over every row.
    let mut batch = xs.clone();
    for inside in &windows {
        for i in 0..n {
            batch.extend((0..width).map(|f| if inside[f] { baseline } else { xs[i * width + f] }));
        }
    }
    let mut shape = x.shape().to_vec();
    shape[0] = (windows.len() + 1) * n;
    let targets: Vec<u32> = (0..=windows.len()).flat_map(|_| target.iter().copied()).collect();
    let leaf = Tensor::from_vec(batch, &shape, x.device())?;
    let scores = pick(model, &leaf, &targets)?.1.to_vec()?;
    let mut sum = vec![0.0f64; n * width];
    let mut covered = vec![0usize; width];
    for (w, inside) in windows.iter().enumerate() {
        for f in (0..width).filter(|&f| inside[f]) {
            covered[f] += 1;
            for i in 0..n {
                sum[i * width + f] += f64::from(scores[i] - scores[(w + 1) * n + i]);
            }
        }
    }
    let attributions = sum
        .iter()
        .enumerate()
        .map(|(k, s)| (s / covered[k % width] as f64) as f32)
        .collect();
    Tensor::from_vec(attributions, x.shape(), x.device())
}

/// The importance of one feature column: the mean and standard deviation over the
/// repeats of the accuracy drop when it is shuffled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Importance {
    /// Mean accuracy drop (positive: the model relies on the column).
    pub mean: f64,
    /// Population standard deviation of the drops (scikit-learn's `importances_std`).
    pub std: f64,
}

/// Permutation feature importance of a classifier on `x` `[N, F]` with true
/// `labels`: for each column, `repeats` times, the rows' values of that column are
/// shuffled (a seeded Fisher–Yates permutation per column and repeat) and the drop
/// of the accuracy (of the arg-max class) from the unshuffled accuracy is taken.
/// All `F · repeats` shuffled copies are scored in one batch. `Err` when the shapes
/// do not fit (labels per row, a rank-2 `x`), or `repeats` is 0.
pub fn permutation_importance(
    model: &dyn Module,
    x: &Tensor,
    labels: &[u32],
    repeats: usize,
    seed: u64,
) -> Result<Vec<Importance>> {
    let n = rows(x, labels)?;
    let [_, f] = x.shape()[..] else {
        return Err(invalid(format!(
            "permutation_importance: inputs of shape {:?}; it needs [rows, features]",
            x.shape()
        )));
    };
    if repeats == 0 {
        return Err(invalid("permutation_importance: 0 repeats (at least 1)".into()));
    }
    let xs = x.to_vec()?;
    let mut batch = xs.clone();
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for col in 0..f {
        for _ in 0..repeats {
            let mut perm: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                perm.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            for i in 0..n {
                batch.extend((0..f).map(|j| if j == col { xs[perm[i] * f + j] } else { xs[i * f + j] }));
            }
        }
    }
    let copies = 1 + f * repeats;
    let scores = model.forward(&Tensor::from_vec(batch, &[copies * n, f], x.device())?);
    if scores.shape().len() != 2 || scores.shape()[0] != copies * n {
        return Err(invalid(format!(
            "permutation_importance: the model gives {:?} for {} rows; it needs [rows, classes]",
            scores.shape(),
            copies * n
        )));
    }
    let predicted = scores.argmax(1).to_labels()?;
    let accuracy = |copy: usize| {
        let hits = (0..n).filter(|&i| predicted[copy * n + i] == labels[i]).count();
        hits as f64 / n as f64
    };
    let base = accuracy(0);
    Ok((0..f)
        .map(|col| {
            let drops: Vec<f64> = (0..repeats).map(|r| base - accuracy(1 + col * repeats + r)).collect();
            let mean = drops.iter().sum::<f64>() / repeats as f64;
            let var = drops.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / repeats as f64;
            Importance { mean, std: var.sqrt() }
        })
        .collect())
}

/// The points α in [0, 1] and weights of a rule with `steps` intervals or nodes.
fn quadrature(steps: usize, rule: IgRule) -> (Vec<f64>, Vec<f64>) {
    match rule {
        IgRule::Trapezoid => {
            let h = 1.0 / steps as f64;
            let alphas = (0..=steps).map(|k| k as f64 * h).collect();
            let weights = (0..=steps)
                .map(|k| if k == 0 || k == steps { h / 2.0 } else { h })
                .collect();
            (alphas, weights)
        }
        IgRule::GaussLegendre => {
            let (nodes, w) = gauss_legendre(steps);
            (
                nodes.iter().map(|t| 0.5 * (t + 1.0)).collect(),
                w.iter().map(|w| 0.5 * w).collect(),
            )
        }
    }
}

/// The nodes (increasing) and weights of `n`-point Gauss–Legendre quadrature on
/// [−1, 1], by Newton's method on the Legendre polynomial (as numpy's `leggauss`).
fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut nodes, mut weights) = (vec![0.0; n], vec![0.0; n]);
    for i in 0..n {
        let mut t = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 1.0;
        for _ in 0..100 {
            // P_n(t) and its derivative by the three-term recurrence.
            let (mut p0, mut p1) = (1.0, t);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * t * p1 - (k - 1) as f64 * p0) / k as f64;
                (p0, p1) = (p1, p2);
            }
            let p = if n == 0 { 1.0 } else { p1 };
            let prev = if n <= 1 { 1.0 } else { p0 };
            dp = n as f64 * (t * p - prev) / (t * t - 1.0);
            let step = p / dp;
            t -= step;
            if step.abs() < 1e-16 {
                break;
            }
        }
        nodes[n - 1 - i] = t;
        weights[n - 1 - i] = 2.0 / ((1.0 - t * t) * dp * dp);
    }
    (nodes, weights)
}

fn invalid(message: String) -> Error {
    Error::InvalidSetting {
        setting: "explain",
        message,
    }
}

/// The rows of `x`, checked against the targets.
fn rows(x: &Tensor, target: &[u32]) -> Result<usize> {
    let n = *x.shape().first().unwrap_or(&0);
    if x.shape().len() < 2 || n != target.len() {
        return Err(invalid(format!(
            "explain: inputs of shape {:?} and {} targets (one class per row of [N, …] inputs)",
            x.shape(),
            target.len()
        )));
    }
    Ok(n)
}

/// The model's score of each row's target class `[rows]`, and the same values
/// detached for reading.
fn pick(model: &dyn Module, x: &Tensor, target: &[u32]) -> Result<(Tensor, Tensor)> {
    let y = model.forward(x);
    let [rows, classes] = y.shape()[..] else {
        return Err(invalid(format!(
            "explain: the model gives {:?} for inputs {:?}; it needs [rows, classes]",
            y.shape(),
            x.shape()
        )));
    };
    if rows != target.len() {
        return Err(invalid(format!(
            "explain: the model gives {rows} rows for {} inputs",
            target.len()
        )));
    }
    if let Some((i, &t)) = target.iter().enumerate().find(|(_, &t)| t as usize >= classes) {
        return Err(invalid(format!(
            "explain: target class {t} of row {i} is outside the model's {classes} classes"
        )));
    }
    let labels = Tensor::from_labels(target, x.device())?;
    let picked = (&y * &labels.one_hot(classes)).sum_axis(1, false);
    let scores = picked.detach();
    Ok((picked, scores))
}

/// The gradient of each row's target score with respect to the row, and the input
/// as the leaf it was taken at.
fn input_gradients(model: &dyn Module, x: &Tensor, target: &[u32]) -> Result<(Tensor, Tensor)> {
    rows(x, target)?;
    let leaf = Tensor::from_vec(x.to_vec()?, x.shape(), x.device())?.requires_grad()?;
    let (picked, _) = pick(model, &leaf, target)?;
    let grads = picked.sum().backward()?;
    let g = grads.get(&leaf).expect("the input is a leaf of the scores").clone();
    Ok((g, leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gauss–Legendre integrates polynomials up to degree 2n − 1 exactly; its nodes
    /// are numpy's `leggauss(3)`.
    #[test]
    fn gauss_legendre_nodes_and_weights_are_exact_for_polynomials() {
        let (t, w) = gauss_legendre(3);
        let r = (0.6f64).sqrt();
        for (a, b) in t.iter().zip([-r, 0.0, r]) {
            assert!((a - b).abs() < 1e-15, "{t:?}");
        }
        for (a, b) in w.iter().zip([5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0]) {
            assert!((a - b).abs() < 1e-15, "{w:?}");
        }
        let (alphas, weights) = quadrature(4, IgRule::GaussLegendre);
        let integral: f64 = alphas.iter().zip(&weights).map(|(a, w)| w * a.powi(7)).sum();
        assert!((integral - 1.0 / 8.0).abs() < 1e-14, "∫ α⁷ = {integral}");
        let (alphas, weights) = quadrature(4, IgRule::Trapezoid);
        assert_eq!(alphas, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(weights, vec![0.125, 0.25, 0.25, 0.25, 0.125]);
    }
}
