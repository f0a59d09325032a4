//! Model selection, independent of how a model is trained: k-fold splits
//! ([`kfold_indices`], [`cross_validate`]), hyper-parameter search spaces sampled on a
//! [`grid`] or at [`random`], and a [`Leaderboard`] of trials ranked by one metric.
//!
//! Training is always a closure supplied by the caller that returns named scores
//! ([`Scores`], e.g. from [`crate::metrics::Metric::name`]), so the same machinery
//! serves any model and any metric. Everything is seeded and deterministic.

use std::collections::BTreeMap;
use std::fmt;

// Defined beside `History`, which records them; re-exported here, where it was first.
pub use super::history::Scores;
use crate::data::{permutation, Dataset};
use crate::error::{Error, Result};

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// `(train indices, validation indices)` for each of `k` folds of `0..n`, both sorted.
///
/// Rows are shuffled with `seed` first. Without `stratify` the shuffled rows are cut
/// into `k` consecutive folds whose sizes differ by at most one. With `stratify`
/// (a label per row) each class's shuffled rows are dealt round-robin over the folds,
/// continuing where the previous class stopped, so every fold gets about the same class
/// proportions (like scikit-learn's `StratifiedKFold`) and fold sizes still differ by at
/// most one. A class with fewer than `k` rows is simply missing from some folds.
pub fn kfold_indices(n: usize, k: usize, stratify: Option<&[u32]>, seed: u64) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    if k < 2 {
        return Err(invalid(format!("k-fold needs k >= 2, got {k}")));
    }
    if k > n {
        return Err(invalid(format!("k = {k} folds but only {n} samples")));
    }
    let order = permutation(n, seed);
    let mut fold_of = vec![0; n];
    match stratify {
        None => order.iter().enumerate().for_each(|(pos, &i)| fold_of[i] = pos * k / n),
        Some(labels) if labels.len() != n => {
            return Err(invalid(format!(
                "k-fold: {} stratification labels for {n} samples",
                labels.len()
            )));
        }
        Some(labels) => {
            let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
            for &i in &order {
                by_class.entry(labels[i]).or_default().push(i);
            }
            for (dealt, &i) in by_class.values().flatten().enumerate() {
                fold_of[i] = dealt % k;
            }
        }
    }
    Ok((0..k).map(|f| (0..n).partition(|&i| fold_of[i] != f)).collect())
}

/// Per-fold scores with their mean and standard deviation.
#[derive(Debug, Clone, PartialEq)]
pub struct CvReport {
    /// The scores of each fold, in fold order.
    pub folds: Vec<Scores>,
    /// Mean of each metric over the folds.
    pub mean: Scores,
    /// Population standard deviation (ddof = 0), as numpy's default and thus
    /// `cross_val_score(...).std()` in scikit-learn.
    pub std: Scores,
}

impl CvReport {
    /// Summarizes fold scores; errors if there are none or they name different metrics.
    pub fn from_folds(folds: Vec<Scores>) -> Result<CvReport> {
        let first = folds
            .first()
            .ok_or_else(|| invalid("cross-validation report with no folds"))?;
        for (f, s) in folds.iter().enumerate() {
            if !s.keys().eq(first.keys()) {
                return Err(invalid(format!(
                    "fold {f} returned metrics [{}] but fold 0 returned [{}]",
                    join_keys(s),
                    join_keys(first)
                )));
            }
        }
        let n = folds.len() as f64;
        let mut mean = Scores::new();
        let mut std = Scores::new();
        for name in first.keys() {
            let m = folds.iter().map(|s| s[name]).sum::<f64>() / n;
            let var = folds.iter().map(|s| (s[name] - m).powi(2)).sum::<f64>() / n;
            mean.insert(name.clone(), m);
            std.insert(name.clone(), var.sqrt());
        }
        Ok(CvReport { folds, mean, std })
    }
}

fn join_keys<V>(m: &BTreeMap<String, V>) -> String {
    m.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for CvReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.mean.keys().map(String::len).max().unwrap_or(0);
        for (name, m) in &self.mean {
            writeln!(f, "{name:<w$} {m:.3} ± {:.3}", self.std[name])?;
        }
        write!(f, "({} folds)", self.folds.len())
    }
}

/// k-fold cross-validation: calls `train_eval(train, validation)` once per fold of
/// [`kfold_indices`] (stratified by label if asked) and summarizes the scores.
pub fn cross_validate<F>(data: &Dataset, k: usize, stratified: bool, seed: u64, mut train_eval: F) -> Result<CvReport>
where
    F: FnMut(&Dataset, &Dataset) -> Result<Scores>,
{
    let strat = stratified.then_some(&data.labels[..]);
    let folds = kfold_indices(data.len(), k, strat, seed)?
        .iter()
        .map(|(tr, va)| train_eval(&data.select(tr), &data.select(va)))
        .collect::<Result<Vec<_>>>()?;
    CvReport::from_folds(folds)
}

/// One hyper-parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A float (from `Uniform`, `LogUniform` or a choice).
    F(f64),
    /// An integer (from `IntRange` or a choice).
    I(i64),
    /// A name, e.g. of an optimizer or an activation.
    S(String),
    /// e.g. hidden layer sizes.
    List(Vec<i64>),
}

/// So that string choices read `Param::Choice(vec!["adam".into(), "sgd".into()])`.
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::S(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I(v)
    }
}

impl From<&[i64]> for Value {
    fn from(v: &[i64]) -> Self {
        Value::List(v.to_vec())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Four significant digits: enough to tell grid points apart, short in tables.
            Value::F(v) if *v == 0.0 => f.write_str("0"),
            Value::F(v) if !(1e-4..1e6).contains(&v.abs()) => write!(f, "{v:.3e}"),
            Value::F(v) => {
                let digits = (3 - v.abs().log10().floor() as i32).max(0) as usize;
                let s = format!("{v:.digits$}");
                let s = if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.')
                } else {
                    &s
                };
                f.write_str(s)
            }
            Value::I(v) => write!(f, "{v}"),
            Value::S(s) => f.write_str(s),
            Value::List(l) => write!(f, "[{}]", l.iter().map(i64::to_string).collect::<Vec<_>>().join(",")),
        }
    }
}

/// How one hyper-parameter is drawn. Ranges must have `low < high`; `IntRange` includes both.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// Uniform in the logarithm (learning rates, weight decay); `low > 0`.
    LogUniform {
        /// Smallest value.
        low: f64,
        /// Largest value.
        high: f64,
    },
    /// Uniform between `low` and `high`.
    Uniform {
        /// Smallest value.
        low: f64,
        /// Largest value.
        high: f64,
    },
    /// One of the given values, each equally likely (non-empty).
    Choice(Vec<Value>),
    /// An integer from `low` to `high`, both included, each equally likely.
    IntRange {
        /// Smallest value.
        low: i64,
        /// Largest value (included).
        high: i64,
    },
}

/// Named parameters to search over, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchSpace {
    params: Vec<(String, Param)>,
}

impl SearchSpace {
    /// An empty space, to fill with [`SearchSpace::add`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter (builder style); problems are reported by [`grid`] / [`random`].
    pub fn add(mut self, name: impl Into<String>, param: Param) -> Self {
        self.params.push((name.into(), param));
        self
    }

    /// The parameters, with their names, in the order they were added.
    pub fn params(&self) -> &[(String, Param)] {
        &self.params
    }

    fn validate(&self) -> Result<()> {
        if self.params.is_empty() {
            return Err(invalid("search space is empty"));
        }
        for (i, (name, p)) in self.params.iter().enumerate() {
            if self.params[..i].iter().any(|(n, _)| n == name) {
                return Err(invalid(format!("parameter '{name}' is added twice")));
            }
            let bad = match p {
                Param::Uniform { low, high } | Param::LogUniform { low, high } if !(low < high && high.is_finite()) => {
                    format!("needs finite low < high, got low = {low}, high = {high}")
                }
                Param::LogUniform { low, .. } if *low <= 0.0 => format!("LogUniform needs low > 0, got {low}"),
                Param::IntRange { low, high } if low >= high => format!("needs low < high, got {low}..={high}"),
                Param::Choice(v) if v.is_empty() => "Choice has no values".into(),
                _ => continue,
            };
            return Err(invalid(format!("parameter '{name}': {bad}")));
        }
        Ok(())
    }
}

/// Parameter name → value for one trial, with typed getters whose errors name the key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trial(pub BTreeMap<String, Value>);

impl Trial {
    /// An empty trial, to fill with [`Trial::with`] (e.g. a hand-picked default).
    pub fn new() -> Trial {
        Trial::default()
    }

    /// The trial with `key` set to `value`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Trial {
        self.0.insert(key.into(), value.into());
        self
    }

    /// The value of `key`; an error naming the keys there are if it is missing.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.0.get(key).ok_or_else(|| {
            invalid(format!(
                "trial has no parameter '{key}' (it has: {})",
                join_keys(&self.0)
            ))
        })
    }

    fn mistyped(&self, key: &str, want: &str) -> Error {
        invalid(format!("parameter '{key}' is {:?}, not {want}", self.0[key]))
    }

    /// A float (an integer value is converted).
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        match self.get(key)? {
            Value::F(v) => Ok(*v),
            Value::I(v) => Ok(*v as f64),
            _ => Err(self.mistyped(key, "a number")),
        }
    }

    /// An integer (a float value is an error, not truncated).
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        match self.get(key)? {
            Value::I(v) => Ok(*v),
            _ => Err(self.mistyped(key, "an integer")),
        }
    }

    /// A non-negative integer, e.g. a layer size or a batch size.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        usize::try_from(self.get_i64(key)?).map_err(|_| self.mistyped(key, "a non-negative integer"))
    }

    /// A string, e.g. the name of an optimizer.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.get(key)? {
            Value::S(s) => Ok(s),
            _ => Err(self.mistyped(key, "a string")),
        }
    }

    /// A list of non-negative integers, e.g. layer sizes.
    pub fn get_list(&self, key: &str) -> Result<Vec<usize>> {
        match self.get(key)? {
            Value::List(l) => l.iter().map(|&v| usize::try_from(v)).collect::<Result<_, _>>(),
            _ => return Err(self.mistyped(key, "a list")),
        }
        .map_err(|_| self.mistyped(key, "a list of non-negative integers"))
    }
}

impl fmt::Display for Trial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(" "))
    }
}

/// Largest grid [`grid`] builds, so that a typo cannot allocate without bound.
const MAX_GRID: usize = 1_000_000;

/// Every combination of parameter values: all values of a `Choice` and an `IntRange`,
/// and `points_per_continuous` evenly spaced points from `low` to `high` for a range
/// (geometrically spaced for `LogUniform`). The last parameter varies fastest.
pub fn grid(space: &SearchSpace, points_per_continuous: usize) -> Result<Vec<Trial>> {
    space.validate()?;
    let mut axes: Vec<Vec<Value>> = Vec::new();
    for (name, p) in &space.params {
        let continuous = matches!(p, Param::Uniform { .. } | Param::LogUniform { .. });
        if continuous && points_per_continuous < 2 {
            return Err(invalid(format!(
                "grid: parameter '{name}' needs at least 2 points (low and high), got {points_per_continuous}"
            )));
        }
        let last = points_per_continuous.saturating_sub(1) as f64;
        axes.push(match p {
            Param::Uniform { low, high } => (0..points_per_continuous)
                .map(|i| Value::F(low + (high - low) * i as f64 / last))
                .collect(),
            Param::LogUniform { low, high } => (0..points_per_continuous)
                .map(|i| Value::F(low * (high / low).powf(i as f64 / last)))
                .collect(),
            Param::Choice(v) => v.clone(),
            Param::IntRange { low, high } => {
                if high.abs_diff(*low) >= MAX_GRID as u64 {
                    return Err(invalid(format!(
                        "grid: parameter '{name}' has more than {MAX_GRID} values"
                    )));
                }
                (*low..=*high).map(Value::I).collect()
            }
        });
    }
    let total = axes
        .iter()
        .try_fold(1usize, |acc, a| acc.checked_mul(a.len()).filter(|&t| t <= MAX_GRID))
        .ok_or_else(|| invalid(format!("grid: more than {MAX_GRID} combinations")))?;
    Ok((0..total)
        .map(|mut t| {
            let mut trial = BTreeMap::new();
            for ((name, _), axis) in space.params.iter().zip(&axes).rev() {
                trial.insert(name.clone(), axis[t % axis.len()].clone());
                t /= axis.len();
            }
            Trial(trial)
        })
        .collect())
}

/// `n_trials` independent random draws from the space (ranges uniform, `LogUniform`
/// uniform in the log, choices equally likely), the same for the same `seed`.
pub fn random(space: &SearchSpace, n_trials: usize, seed: u64) -> Result<Vec<Trial>> {
    space.validate()?;
    if n_trials == 0 {
        return Err(invalid("random search needs n_trials >= 1, got 0"));
    }
    let mut rng = crate::rng::SplitMix64(seed);
    let mut draw = |p: &Param| match p {
        Param::Uniform { low, high } => Value::F((low + (high - low) * rng.unit()).clamp(*low, *high)),
        Param::LogUniform { low, high } => Value::F((low * (high / low).powf(rng.unit())).clamp(*low, *high)),
        Param::Choice(v) => v[rng.below(v.len() as u128) as usize].clone(),
        Param::IntRange { low, high } => {
            let width = u128::from(high.abs_diff(*low)) + 1;
            Value::I((i128::from(*low) + rng.below(width) as i128) as i64)
        }
    };
    Ok((0..n_trials)
        .map(|_| Trial(space.params.iter().map(|(name, p)| (name.clone(), draw(p))).collect()))
        .collect())
}

/// What one trial's evaluation gives: scores, and their spread when cross-validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The scores (for a cross-validated trial, their mean over the folds).
    pub scores: Scores,
    /// Their standard deviation over the folds, when cross-validated.
    pub std: Option<Scores>,
}

impl From<Scores> for Evaluation {
    fn from(scores: Scores) -> Self {
        Evaluation { scores, std: None }
    }
}

impl From<CvReport> for Evaluation {
    fn from(r: CvReport) -> Self {
        Evaluation {
            scores: r.mean,
            std: Some(r.std),
        }
    }
}

/// Trials ranked by one metric, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaderboard {
    /// The metric the trials are ranked by.
    pub metric: String,
    /// Whether a larger value of `metric` ranks first.
    pub higher_is_better: bool,
    /// Every trial with its evaluation, best first.
    pub rows: Vec<(Trial, Evaluation)>,
}

impl Leaderboard {
    /// The best trial.
    ///
    /// # Panics
    /// If `rows` is empty (never for a board returned by [`search`]).
    pub fn best(&self) -> &Trial {
        &self.rows[0].0
    }
}

/// Evaluates every trial and ranks them by `metric` (ties keep trial order; NaN ranks
/// last). `evaluate` may return plain [`Scores`] or a [`CvReport`] (then the table shows
/// mean ± std). Errors from `evaluate` stop the search and are returned.
pub fn search<F, R>(trials: Vec<Trial>, metric: &str, higher_is_better: bool, mut evaluate: F) -> Result<Leaderboard>
where
    F: FnMut(&Trial) -> Result<R>,
    R: Into<Evaluation>,
{
    if trials.is_empty() {
        return Err(invalid("search: no trials to evaluate"));
    }
    let mut rows = Vec::with_capacity(trials.len());
    for (i, trial) in trials.into_iter().enumerate() {
        let eval: Evaluation = evaluate(&trial)?.into();
        if !eval.scores.contains_key(metric) {
            return Err(invalid(format!(
                "metric '{metric}' is not computed; trials return: {} (trial {i}: {trial})",
                join_keys(&eval.scores)
            )));
        }
        rows.push((trial, eval));
    }
    let value = |row: &(Trial, Evaluation)| row.1.scores[metric];
    rows.sort_by(|a, b| {
        let (x, y) = (value(a), value(b));
        let best_first = if higher_is_better {
            y.total_cmp(&x)
        } else {
            x.total_cmp(&y)
        };
        x.is_nan().cmp(&y.is_nan()).then(best_first)
    });
    Ok(Leaderboard {
        metric: metric.to_string(),
        higher_is_better,
        rows,
    })
}

impl fmt::Display for Leaderboard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let others: Vec<&String> = self
            .rows
            .first()
            .map_or(vec![], |r| r.1.scores.keys().filter(|k| **k != self.metric).collect());
        let mut header = vec!["rank".to_string(), self.metric.clone()];
        header.extend(others.iter().map(|s| s.to_string()));
        header.push("params".into());
        let mut table = vec![header];
        for (rank, (trial, e)) in self.rows.iter().enumerate() {
            let cell = |name: &str| match (e.scores.get(name), e.std.as_ref().and_then(|s| s.get(name))) {
                (Some(m), Some(s)) => format!("{m:.4} ± {s:.4}"),
                (Some(m), None) => format!("{m:.4}"),
                (None, _) => "-".into(),
            };
            let mut row = vec![(rank + 1).to_string(), cell(&self.metric)];
            row.extend(others.iter().map(|n| cell(n)));
            row.push(trial.to_string());
            table.push(row);
        }
        let widths: Vec<usize> = (0..table[0].len())
            .map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &table {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            writeln!(f, "{}", cells.join("  ").trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    fn scores(pairs: &[(&str, f64)]) -> Scores {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn folds_partition_every_index_once() {
        for (n, k) in [(7, 3), (10, 10), (23, 5)] {
            let folds = kfold_indices(n, k, None, 42).unwrap();
            let mut seen = vec![0; n];
            for (train, val) in &folds {
                assert_eq!(train.len() + val.len(), n);
                assert!(val.len() == n / k || val.len() == n / k + 1);
                assert!(train.iter().all(|i| !val.contains(i)));
                val.iter().for_each(|&i| seen[i] += 1);
            }
            assert!(seen.iter().all(|&c| c == 1), "n = {n}, k = {k}: {seen:?}");
        }
        assert_eq!(
            kfold_indices(9, 3, None, 1).unwrap(),
            kfold_indices(9, 3, None, 1).unwrap()
        );
        assert_ne!(
            kfold_indices(9, 3, None, 1).unwrap(),
            kfold_indices(9, 3, None, 2).unwrap()
        );
    }

    #[test]
    fn stratified_folds_keep_class_proportions() {
        let labels: Vec<u32> = (0..40).map(|i| u32::from(i % 4 == 3)).collect(); // 30 zeros, 10 ones
        let folds = kfold_indices(40, 5, Some(&labels), 7).unwrap();
        let mut seen = [0; 40];
        for (_, val) in &folds {
            let ones = val.iter().filter(|&&i| labels[i] == 1).count();
            assert_eq!((val.len() - ones, ones), (6, 2));
            val.iter().for_each(|&i| seen[i] += 1);
        }
        assert!(seen.iter().all(|&c| c == 1));
    }

    #[test]
    fn kfold_errors() {
        assert!(err(kfold_indices(5, 1, None, 0)).contains("k-fold needs k >= 2, got 1"));
        assert!(err(kfold_indices(7, 10, None, 0)).contains("k = 10 folds but only 7 samples"));
        assert!(err(kfold_indices(4, 2, Some(&[0, 1]), 0)).contains("2 stratification labels for 4 samples"));
    }

    fn toy(n: usize) -> Dataset {
        Dataset {
            features: (0..n).map(|i| i as f32).collect(),
            labels: (0..n as u32).map(|i| i % 2).collect(),
            n,
            dim: 1,
        }
    }

    #[test]
    fn cross_validate_summarizes_with_population_std() {
        let mut fold = 0.0;
        let report = cross_validate(&toy(8), 2, true, 3, |train, val| {
            assert_eq!((train.len(), val.len()), (4, 4));
            assert_eq!(val.labels.iter().filter(|&&l| l == 1).count(), 2);
            fold += 1.0;
            Ok(scores(&[("accuracy", 0.5 + 0.2 * fold), ("loss", 1.0)]))
        })
        .unwrap();
        // Folds give 0.7 and 0.9: mean 0.8, population std 0.1.
        assert!((report.mean["accuracy"] - 0.8).abs() < 1e-12);
        assert!((report.std["accuracy"] - 0.1).abs() < 1e-12);
        assert_eq!(report.std["loss"], 0.0);
        assert!(report
            .to_string()
            .starts_with("accuracy 0.800 ± 0.100\nloss     1.000 ± 0.000"));

        let mut fold = 0;
        let e = err(cross_validate(&toy(6), 3, false, 0, |_, _| {
            fold += 1;
            Ok(scores(if fold == 2 {
                &[("loss", 1.0)]
            } else {
                &[("accuracy", 1.0)]
            }))
        }));
        assert!(
            e.contains("fold 1 returned metrics [loss] but fold 0 returned [accuracy]"),
            "{e}"
        );
        let e = err(cross_validate(&toy(6), 3, false, 0, |_, _| {
            Err(invalid("training diverged"))
        }));
        assert_eq!(e, "training diverged");
    }

    fn space() -> SearchSpace {
        SearchSpace::new()
            .add("lr", Param::LogUniform { low: 1e-4, high: 1e-1 })
            .add("optimizer", Param::Choice(vec!["adam".into(), "sgd".into()]))
    }

    #[test]
    fn grid_covers_all_combinations() {
        let trials = grid(&space(), 3).unwrap();
        assert_eq!(trials.len(), 6);
        let lrs: Vec<f64> = trials.iter().map(|t| t.get_f64("lr").unwrap()).collect();
        let expected = [1e-4, 1e-4, 10f64.powf(-2.5), 10f64.powf(-2.5), 1e-1, 1e-1];
        assert!(lrs.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-15), "{lrs:?}");
        assert_eq!(trials[1].to_string(), "lr=0.0001 optimizer=sgd");
        assert_eq!(trials[2].to_string(), "lr=0.003162 optimizer=adam");
        let ints = grid(
            &SearchSpace::new().add("layers", Param::IntRange { low: 1, high: 3 }),
            0,
        )
        .unwrap();
        assert_eq!(
            ints.iter().map(|t| t.get_usize("layers").unwrap()).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(err(grid(&space(), 1)).contains("parameter 'lr' needs at least 2 points"));
    }

    #[test]
    fn random_is_seeded_and_in_bounds() {
        let s = space()
            .add("dropout", Param::Uniform { low: 0.0, high: 0.5 })
            .add("width", Param::IntRange { low: -2, high: 2 });
        let a = random(&s, 200, 9).unwrap();
        assert_eq!(a, random(&s, 200, 9).unwrap());
        assert_ne!(a, random(&s, 200, 10).unwrap());
        for t in &a {
            assert!((1e-4..=1e-1).contains(&t.get_f64("lr").unwrap()));
            assert!((0.0..0.5).contains(&t.get_f64("dropout").unwrap()));
            assert!((-2..=2).contains(&t.get_i64("width").unwrap()));
            assert!(["adam", "sgd"].contains(&t.get_str("optimizer").unwrap()));
        }
        // Every integer and choice is drawn, and the log scale puts about a third below 1e-3.
        assert!((-2..=2).all(|w| a.iter().any(|t| t.get_i64("width").unwrap() == w)));
        let small = a.iter().filter(|t| t.get_f64("lr").unwrap() < 1e-3).count();
        assert!((40..95).contains(&small), "{small}");
    }

    #[test]
    fn space_errors() {
        assert_eq!(err(grid(&SearchSpace::new(), 3)), "search space is empty");
        assert_eq!(err(random(&SearchSpace::new(), 3, 0)), "search space is empty");
        assert!(err(random(&space(), 0, 0)).contains("n_trials >= 1, got 0"));
        let one = |p: Param| err(random(&SearchSpace::new().add("x", p), 1, 0));
        assert!(one(Param::Uniform { low: 1.0, high: 1.0 }).contains("'x': needs finite low < high"));
        assert!(one(Param::LogUniform { low: 0.0, high: 1.0 }).contains("LogUniform needs low > 0, got 0"));
        assert!(one(Param::IntRange { low: 3, high: 2 }).contains("got 3..=2"));
        assert!(one(Param::Choice(vec![])).contains("'x': Choice has no values"));
        let twice = space().add("lr", Param::Uniform { low: 0.0, high: 1.0 });
        assert!(err(grid(&twice, 2)).contains("'lr' is added twice"));
    }

    #[test]
    fn trial_getters_name_the_key() {
        let t = Trial(BTreeMap::from([
            ("hidden".to_string(), Value::List(vec![64, 32])),
            ("lr".to_string(), Value::F(0.0031)),
            ("optimizer".to_string(), Value::from("adam")),
        ]));
        assert_eq!(t.to_string(), "hidden=[64,32] lr=0.0031 optimizer=adam");
        assert_eq!(t.get_list("hidden").unwrap(), [64, 32]);
        assert!(err(t.get_f64("momentum")).contains("no parameter 'momentum' (it has: hidden, lr, optimizer)"));
        assert!(err(t.get_usize("optimizer")).contains("'optimizer' is S(\"adam\"), not an integer"));
        assert!(err(t.get_str("lr")).contains("not a string"));
        assert_eq!(Value::F(2.5e-7).to_string(), "2.500e-7");
        assert_eq!(Value::F(128.0).to_string(), "128");
        assert_eq!(Value::F(-0.5).to_string(), "-0.5");
        assert_eq!(Value::F(0.0).to_string(), "0");
    }

    fn lr_trials() -> Vec<Trial> {
        [0.1, 0.3, 0.2]
            .iter()
            .map(|&lr| Trial(BTreeMap::from([("lr".to_string(), Value::F(lr))])))
            .collect()
    }

    #[test]
    fn leaderboard_sorts_both_ways() {
        // Score = lr, loss = 1 - lr: accuracy ranks 0.3, 0.2, 0.1; loss the same way round.
        let eval = |t: &Trial| {
            let lr = t.get_f64("lr")?;
            Ok(scores(&[("accuracy", lr), ("loss", 1.0 - lr)]))
        };
        let up = search(lr_trials(), "accuracy", true, eval).unwrap();
        let down = search(lr_trials(), "loss", false, eval).unwrap();
        for board in [&up, &down] {
            let order: Vec<f64> = board.rows.iter().map(|r| r.0.get_f64("lr").unwrap()).collect();
            assert_eq!(order, [0.3, 0.2, 0.1]);
            assert_eq!(board.best().get_f64("lr").unwrap(), 0.3);
        }
        let worst_first = search(lr_trials(), "accuracy", false, eval).unwrap();
        assert_eq!(worst_first.best().get_f64("lr").unwrap(), 0.1);
        let table = up.to_string();
        assert!(
            table.starts_with("rank  accuracy  loss    params\n1     0.3000    0.7000  lr=0.3\n"),
            "{table}"
        );
    }

    #[test]
    fn leaderboard_from_cross_validation_shows_std() {
        let board = search(lr_trials(), "accuracy", true, |t| {
            let lr = t.get_f64("lr")?;
            CvReport::from_folds(vec![
                scores(&[("accuracy", lr - 0.05)]),
                scores(&[("accuracy", lr + 0.05)]),
            ])
        })
        .unwrap();
        assert!((board.rows[0].1.std.as_ref().unwrap()["accuracy"] - 0.05).abs() < 1e-12);
        assert!(board.to_string().contains("1     0.3000 ± 0.0500  lr=0.3"), "{board}");
    }

    #[test]
    fn search_errors() {
        let eval = |_: &Trial| Ok(scores(&[("accuracy", 1.0), ("loss", 0.0)]));
        let e = err(search(lr_trials(), "f1_macro", true, eval));
        assert!(
            e.starts_with("metric 'f1_macro' is not computed; trials return: accuracy, loss"),
            "{e}"
        );
        assert_eq!(
            err(search(vec![], "accuracy", true, eval)),
            "search: no trials to evaluate"
        );
    }
}
