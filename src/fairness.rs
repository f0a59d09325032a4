//! Group fairness of a binary classifier: per group of a sensitive feature, the
//! count, selection rate, accuracy, true and false positive rates and precision, and
//! the gaps users quote — with Fairlearn's definitions (`MetricFrame` by group,
//! `demographic_parity_difference`/`_ratio`, `equalized_odds_difference`,
//! `equal_opportunity_difference`, all "between groups": the largest group value
//! minus the smallest, or their ratio). A rate whose denominator is empty in a group
//! (no positives for the TPR, no negatives for the FPR, no predicted positives for
//! precision) is 0, as scikit-learn's confusion matrices give it to Fairlearn.
//!
//! Mitigations: [`group_thresholds`] post-processes scores with a threshold per group
//! (demographic parity or equal opportunity, deterministic); [`reweighing`] is
//! Kamiran and Calders' (2012) pre-processing: per-sample weights
//! `P(group) · P(label) / P(group, label)` that make label and group independent in
//! the weighted data, for `FitConfig::sample_weight`.
//!
//! `tests/fixtures/make_fairness_fixture.py` records Fairlearn's numbers; the tests
//! hold these to them.

use crate::{Error, Result};

/// The metrics of one group (or of all samples).
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMetrics {
    /// The group id (for the overall row: `u32::MAX`).
    pub group: u32,
    /// Samples in the group.
    pub count: usize,
    /// Share predicted positive, `P(ŷ = 1)`.
    pub selection_rate: f64,
    /// Share predicted right.
    pub accuracy: f64,
    /// True positive rate (recall), `P(ŷ = 1 | y = 1)`; 0 without positives.
    pub true_positive_rate: f64,
    /// False positive rate, `P(ŷ = 1 | y = 0)`; 0 without negatives.
    pub false_positive_rate: f64,
    /// Precision, `P(y = 1 | ŷ = 1)`; 0 without predicted positives.
    pub precision: f64,
}

impl GroupMetrics {
    fn of(group: u32, pairs: impl Iterator<Item = (u32, u32)>) -> GroupMetrics {
        let [mut tp, mut fp, mut tn, mut fneg] = [0usize; 4];
        for (y, p) in pairs {
            match (y, p) {
                (1, 1) => tp += 1,
                (0, 1) => fp += 1,
                (0, 0) => tn += 1,
                _ => fneg += 1,
            }
        }
        let count = tp + fp + tn + fneg;
        let rate = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        GroupMetrics {
            group,
            count,
            selection_rate: rate(tp + fp, count),
            accuracy: rate(tp + tn, count),
            true_positive_rate: rate(tp, tp + fneg),
            false_positive_rate: rate(fp, fp + tn),
            precision: rate(tp, tp + fp),
        }
    }
}

/// A per-group fairness report (see the module doc); [`report`] makes one.
#[derive(Clone, Debug, PartialEq)]
pub struct FairnessReport {
    /// One row per group id present, in increasing id.
    pub groups: Vec<GroupMetrics>,
    /// All samples together.
    pub overall: GroupMetrics,
}

/// The report of predictions `y_pred` against labels `y_true` (each 0 or 1) for the
/// group ids `group`, one per sample.
///
/// `Err` naming the problem when the lengths differ, there are no samples, or a label
/// or prediction is not 0 or 1 (its index and value).
pub fn report(y_true: &[u32], y_pred: &[u32], group: &[u32]) -> Result<FairnessReport> {
    let invalid = |message: String| Error::InvalidSetting {
        setting: "fairness::report",
        message,
    };
    if y_true.len() != y_pred.len() || y_true.len() != group.len() {
        return Err(invalid(format!(
            "fairness::report: {} labels, {} predictions and {} group ids (one of each per sample)",
            y_true.len(),
            y_pred.len(),
            group.len()
        )));
    }
    if y_true.is_empty() {
        return Err(invalid("fairness::report: no samples".into()));
    }
    for (what, values) in [("label", y_true), ("prediction", y_pred)] {
        if let Some((i, v)) = values.iter().enumerate().find(|(_, &v)| v > 1) {
            return Err(invalid(format!(
                "fairness::report: {what} {v} at sample {i}; a binary classifier's are 0 or 1"
            )));
        }
    }
    let mut ids: Vec<u32> = group.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let pairs = |g: u32| {
        (0..y_true.len())
            .filter(move |&i| group[i] == g)
            .map(|i| (y_true[i], y_pred[i]))
    };
    Ok(FairnessReport {
        groups: ids.iter().map(|&g| GroupMetrics::of(g, pairs(g))).collect(),
        overall: GroupMetrics::of(u32::MAX, y_true.iter().copied().zip(y_pred.iter().copied())),
    })
}

impl FairnessReport {
    fn spread(&self, f: impl Fn(&GroupMetrics) -> f64) -> (f64, f64) {
        let values: Vec<f64> = self.groups.iter().map(f).collect();
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    }

    /// Largest minus smallest selection rate (Fairlearn's
    /// `demographic_parity_difference`); 0 is parity.
    pub fn demographic_parity_difference(&self) -> f64 {
        let (lo, hi) = self.spread(|g| g.selection_rate);
        hi - lo
    }

    /// Smallest over largest selection rate (`demographic_parity_ratio`; the "80 %
    /// rule" asks for ≥ 0.8); 0 when no group is selected at all.
    pub fn demographic_parity_ratio(&self) -> f64 {
        let (lo, hi) = self.spread(|g| g.selection_rate);
        if hi == 0.0 {
            0.0
        } else {
            lo / hi
        }
    }

    /// The larger of the TPR and FPR spreads (`equalized_odds_difference`,
    /// worst case).
    pub fn equalized_odds_difference(&self) -> f64 {
        let (tl, th) = self.spread(|g| g.true_positive_rate);
        let (fl, fh) = self.spread(|g| g.false_positive_rate);
        (th - tl).max(fh - fl)
    }

    /// Largest minus smallest true positive rate (`equal_opportunity_difference`).
    pub fn equal_opportunity_difference(&self) -> f64 {
        let (lo, hi) = self.spread(|g| g.true_positive_rate);
        hi - lo
    }

    /// The report as a Markdown table (a row per group, then all), followed by the
    /// four gaps.
    pub fn to_markdown(&self) -> String {
        let mut out = String::from(
            "| group | count | selection rate | accuracy | TPR | FPR | precision |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for g in self.groups.iter().chain(std::iter::once(&self.overall)) {
            let name = if g.group == u32::MAX {
                "all".to_string()
            } else {
                g.group.to_string()
            };
            out += &format!(
                "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                g.count, g.selection_rate, g.accuracy, g.true_positive_rate, g.false_positive_rate, g.precision
            );
        }
        out += &format!(
            "\ndemographic parity difference {:.3}, ratio {:.3}; equalized odds difference {:.3}; \
             equal opportunity difference {:.3}\n",
            self.demographic_parity_difference(),
            self.demographic_parity_ratio(),
            self.equalized_odds_difference(),
            self.equal_opportunity_difference()
        );
        out
    }
}

impl FairnessReport {
    /// Writes the per-group rates (selection rate, accuracy, TPR, FPR, precision) as
    /// grouped bars, `{stem}.png` and `{stem}.svg` in `dir`, with `name` naming the
    /// groups (e.g. `|g| ["female", "male"][g as usize].into()`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn write_png(&self, dir: impl AsRef<std::path::Path>, stem: &str, name: impl Fn(u32) -> String) -> Result<()> {
        let categories: Vec<String> = self
            .groups
            .iter()
            .map(|g| format!("{} ({})", name(g.group), g.count))
            .collect();
        let column = |f: fn(&GroupMetrics) -> f64| self.groups.iter().map(f).collect::<Vec<f64>>();
        let series = vec![
            ("selection rate".to_string(), column(|g| g.selection_rate)),
            ("accuracy".to_string(), column(|g| g.accuracy)),
            ("TPR".to_string(), column(|g| g.true_positive_rate)),
            ("FPR".to_string(), column(|g| g.false_positive_rate)),
            ("precision".to_string(), column(|g| g.precision)),
        ];
        crate::train::report::write_bars(dir, stem, "rate per group", &categories, &series)
    }
}

/// Kamiran–Calders reweighing: the weight of each sample,
/// `P(group) · P(label) / P(group, label)` from the data's own frequencies (any
/// labels, not only binary), so that in the weighted data the label does not depend
/// on the group; pass them to `FitConfig::sample_weight`. `Err` when the lengths
/// differ or there are no samples.
pub fn reweighing(y_true: &[u32], group: &[u32]) -> Result<Vec<f32>> {
    if y_true.len() != group.len() || y_true.is_empty() {
        return Err(Error::InvalidSetting {
            setting: "fairness::reweighing",
            message: format!(
                "fairness::reweighing: {} labels and {} group ids (one of each per sample, at least one)",
                y_true.len(),
                group.len()
            ),
        });
    }
    use std::collections::HashMap;
    let n = y_true.len() as f64;
    let (mut by_group, mut by_label, mut joint) = (HashMap::new(), HashMap::new(), HashMap::new());
    for (&y, &g) in y_true.iter().zip(group) {
        *by_group.entry(g).or_insert(0usize) += 1;
        *by_label.entry(y).or_insert(0usize) += 1;
        *joint.entry((g, y)).or_insert(0usize) += 1;
    }
    Ok(y_true
        .iter()
        .zip(group)
        .map(|(&y, &g)| (by_group[&g] as f64 * by_label[&y] as f64 / (n * joint[&(g, y)] as f64)) as f32)
        .collect())
}

/// What [`group_thresholds`] equalizes across groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    /// The selection rate, `P(ŷ = 1 | group)` (demographic parity).
    Selection,
    /// The true positive rate, `P(ŷ = 1 | y = 1, group)` (equal opportunity).
    TruePositives,
}

/// Post-processing: one score threshold per group (`(group, threshold)`, in
/// increasing id) such that predicting `score ≥ threshold` gives each group the rate
/// `target` (in [0, 1]) of what `parity` equalizes, as nearly as its size allows:
/// within a group, the `round(target · n)` highest scores (of its positives, for
/// [`Parity::TruePositives`]) are selected and the threshold sits halfway between the
/// last selected and the next score. Deterministic, unlike Fairlearn's
/// `ThresholdOptimizer`, which randomizes between two thresholds to hit a rate
/// exactly; the gap left is at most one sample's share of the smallest group.
///
/// `Err` when the lengths differ, there are no samples, `target` is outside [0, 1],
/// a label is not 0 or 1, or (for true positives) a group has no positive sample.
pub fn group_thresholds(
    scores: &[f32],
    y_true: &[u32],
    group: &[u32],
    parity: Parity,
    target: f64,
) -> Result<Vec<(u32, f32)>> {
    let invalid = |message: String| Error::InvalidSetting {
        setting: "fairness::group_thresholds",
        message,
    };
    if scores.len() != group.len() || y_true.len() != group.len() || group.is_empty() {
        return Err(invalid(format!(
            "fairness::group_thresholds: {} scores, {} labels and {} group ids (one of each per sample, at least one)",
            scores.len(),
            y_true.len(),
            group.len()
        )));
    }
    if !(0.0..=1.0).contains(&target) {
        return Err(invalid(format!(
            "fairness::group_thresholds: target rate {target} is outside [0, 1]"
        )));
    }
    if let Some((i, v)) = y_true.iter().enumerate().find(|(_, &v)| v > 1) {
        return Err(invalid(format!(
            "fairness::group_thresholds: label {v} at sample {i}; they are 0 or 1"
        )));
    }
    let mut ids: Vec<u32> = group.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.iter()
        .map(|&g| {
            let mut s: Vec<f32> = (0..group.len())
                .filter(|&i| group[i] == g && (parity == Parity::Selection || y_true[i] == 1))
                .map(|i| scores[i])
                .collect();
            if s.is_empty() {
                return Err(invalid(format!(
                    "fairness::group_thresholds: group {g} has no positive sample, so no true positive rate"
                )));
            }
            s.sort_by(|a, b| b.total_cmp(a));
            let k = (target * s.len() as f64).round() as usize;
            let threshold = match k {
                0 => s[0] + (s[0].abs() + 1.0) * f32::EPSILON * 4.0,
                k if k >= s.len() => s[s.len() - 1],
                k => (s[k - 1] + s[k]) / 2.0,
            };
            Ok((g, threshold))
        })
        .collect()
}

/// Predictions `score ≥ threshold of the sample's group` (thresholds from
/// [`group_thresholds`]); `Err` naming a group without a threshold.
pub fn apply_thresholds(scores: &[f32], group: &[u32], thresholds: &[(u32, f32)]) -> Result<Vec<u32>> {
    scores
        .iter()
        .zip(group)
        .map(|(&s, g)| match thresholds.iter().find(|(id, _)| id == g) {
            Some(&(_, t)) => Ok(u32::from(s >= t)),
            None => Err(Error::InvalidSetting {
                setting: "fairness::apply_thresholds",
                message: format!("fairness::apply_thresholds: no threshold for group {g}"),
            }),
        })
        .collect()
}
