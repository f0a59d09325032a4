//! Host-side classification metrics: a [`ConfusionMatrix`] with accuracy, precision,
//! recall and F1 under several [`Average`]s, [`roc_auc`] for binary scores, and
//! [`Metric`], the names by which model selection refers to them.
//!
//! # Convention
//! Values match scikit-learn called with `labels=range(classes)` and `zero_division=0`:
//!
//! - a class nobody predicted has precision 0; a class absent from the truth has recall 0;
//!   F1 is 0 when precision + recall is 0;
//! - [`Average::Macro`] is the unweighted mean over **all** `classes`, including classes
//!   that occur neither in the truth nor in the predictions (they count as 0; scikit-learn
//!   without `labels=` would instead leave them out);
//! - [`Average::Weighted`] weights each class by its support (number of true samples),
//!   and is 0 when there are no samples;
//! - [`Average::Micro`] pools all classes; for single-label data it equals accuracy.
//!
//! No function here returns NaN.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Counts of (true class, predicted class) pairs: row = truth, column = prediction, as
/// in scikit-learn's `confusion_matrix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<u64>,
}

/// The counts as a table, rows = truth, columns = prediction.
impl fmt::Display for ConfusionMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .counts
            .iter()
            .max()
            .map_or(1, |m| m.to_string().len())
            .max(self.classes.to_string().len());
        write!(f, "{:>w$} |", "t\\p", w = width.max(3))?;
        for p in 0..self.classes {
            write!(f, " {p:>width$}")?;
        }
        for t in 0..self.classes {
            write!(f, "\n{t:>w$} |", w = width.max(3))?;
            for p in 0..self.classes {
                write!(f, " {:>width$}", self.get(t, p))?;
            }
        }
        Ok(())
    }
}

/// How per-class precision, recall or F1 are combined into one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Average {
    /// Only the given class counts as positive.
    Binary {
        /// The positive class (scikit-learn's `pos_label`).
        positive: usize,
    },
    /// Unweighted mean over all classes.
    Macro,
    /// Computed from pooled counts (equals accuracy for single-label data).
    Micro,
    /// Mean over classes weighted by support.
    Weighted,
}

/// `num / den`, or 0 when `den` is 0 (scikit-learn's `zero_division=0`).
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

fn harmonic(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

impl ConfusionMatrix {
    /// An all-zero matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        ConfusionMatrix {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Counts the pairs `(truth[i], pred[i])`.
    pub fn from_labels(truth: &[u32], pred: &[u32], classes: usize) -> Result<Self> {
        if truth.len() != pred.len() {
            return Err(Error::Invalid(format!(
                "ConfusionMatrix::from_labels: {} true labels but {} predictions",
                truth.len(),
                pred.len()
            )));
        }
        let mut cm = Self::new(classes);
        for (index, (&t, &p)) in truth.iter().zip(pred).enumerate() {
            for (label, op) in [
                (t, "ConfusionMatrix::from_labels (truth)"),
                (p, "ConfusionMatrix::from_labels (pred)"),
            ] {
                if label as usize >= classes {
                    return Err(Error::LabelOutOfRange {
                        op,
                        label,
                        index,
                        classes,
                    });
                }
            }
            cm.counts[t as usize * classes + p as usize] += 1;
        }
        Ok(cm)
    }

    /// A matrix from row-major counts (`classes * classes` of them).
    pub fn from_counts(classes: usize, counts: Vec<u64>) -> Result<Self> {
        if counts.len() != classes * classes {
            return Err(Error::Invalid(format!(
                "ConfusionMatrix::from_counts: {} counts for {classes} classes (needs {})",
                counts.len(),
                classes * classes
            )));
        }
        Ok(ConfusionMatrix { classes, counts })
    }

    /// Number of classes (the matrix is `classes × classes`).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Number of samples of true class `t` predicted as `p`.
    ///
    /// # Panics
    /// If `t` or `p` is not below `classes()`.
    pub fn get(&self, t: usize, p: usize) -> u64 {
        assert!(
            t < self.classes && p < self.classes,
            "ConfusionMatrix::get({t}, {p}) with {} classes",
            self.classes
        );
        self.counts[t * self.classes + p]
    }

    /// Row-major counts.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Number of samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another matrix's counts (e.g. to pool batches or folds).
    pub fn add(&mut self, other: &ConfusionMatrix) -> Result<()> {
        if other.classes != self.classes {
            return Err(Error::Invalid(format!(
                "ConfusionMatrix::add: {} classes added to {} classes",
                other.classes, self.classes
            )));
        }
        self.counts.iter_mut().zip(&other.counts).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn correct(&self) -> u64 {
        (0..self.classes).map(|c| self.get(c, c)).sum()
    }

    /// Number of true samples of each class (row sums).
    pub fn support(&self) -> Vec<u64> {
        self.counts
            .chunks(self.classes.max(1))
            .map(|row| row.iter().sum())
            .collect()
    }

    /// Number of predictions of each class (column sums).
    pub fn predicted(&self) -> Vec<u64> {
        (0..self.classes)
            .map(|p| (0..self.classes).map(|t| self.get(t, p)).sum())
            .collect()
    }

    /// Fraction of samples on the diagonal (0 for an empty matrix).
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.total())
    }

    /// Precision of each class: correct predictions of it / predictions of it.
    pub fn precision_per_class(&self) -> Vec<f64> {
        self.predicted()
            .iter()
            .enumerate()
            .map(|(c, &n)| ratio(self.get(c, c), n))
            .collect()
    }

    /// Recall of each class: correct predictions of it / true samples of it.
    pub fn recall_per_class(&self) -> Vec<f64> {
        self.support()
            .iter()
            .enumerate()
            .map(|(c, &n)| ratio(self.get(c, c), n))
            .collect()
    }

    /// F1 of each class: harmonic mean of its precision and recall.
    pub fn f1_per_class(&self) -> Vec<f64> {
        let r = self.recall_per_class();
        self.precision_per_class()
            .iter()
            .zip(&r)
            .map(|(&p, &r)| harmonic(p, r))
            .collect()
    }

    /// Combines per-class values as `avg` says. Micro is pooled precision = recall = F1
    /// = accuracy, since every wrong prediction is one false positive and one false negative.
    fn average(&self, per_class: Vec<f64>, avg: Average, what: &str) -> Result<f64> {
        match avg {
            Average::Binary { positive } => per_class.get(positive).copied().ok_or_else(|| {
                Error::Invalid(format!(
                    "{what}: positive class {positive} is out of range for {} classes",
                    self.classes
                ))
            }),
            Average::Macro if per_class.is_empty() => Ok(0.0),
            Average::Macro => Ok(per_class.iter().sum::<f64>() / per_class.len() as f64),
            Average::Micro => Ok(self.accuracy()),
            Average::Weighted => {
                let support = self.support();
                let total: u64 = support.iter().sum();
                let sum: f64 = per_class.iter().zip(&support).map(|(&v, &s)| v * s as f64).sum();
                Ok(if total == 0 { 0.0 } else { sum / total as f64 })
            }
        }
    }

    /// Precision averaged as `avg` says; errors if a binary positive class is out of range.
    pub fn precision(&self, avg: Average) -> Result<f64> {
        self.average(self.precision_per_class(), avg, "precision")
    }

    /// Recall averaged as `avg` says; errors if a binary positive class is out of range.
    pub fn recall(&self, avg: Average) -> Result<f64> {
        self.average(self.recall_per_class(), avg, "recall")
    }

    /// F1 averaged as `avg` says (macro F1 is the mean of per-class F1, as in scikit-learn).
    pub fn f1(&self, avg: Average) -> Result<f64> {
        self.average(self.f1_per_class(), avg, "f1")
    }

    /// The value of a metric that depends on hard predictions only; [`Metric::RocAuc`] and
    /// [`Metric::Loss`] need scores and are an error here.
    pub fn score(&self, metric: Metric) -> Result<f64> {
        match metric {
            Metric::Accuracy => Ok(self.accuracy()),
            Metric::Precision(a) => self.precision(a),
            Metric::Recall(a) => self.recall(a),
            Metric::F1(a) => self.f1(a),
            Metric::RocAuc | Metric::Loss | Metric::Mae | Metric::Rmse | Metric::R2 => Err(Error::Invalid(format!(
                "{} cannot be computed from a confusion matrix",
                metric.name()
            ))),
        }
    }
}

/// Area under the ROC curve of `scores` for binary `truth` (0 or 1; higher score = more
/// likely 1), via the Mann–Whitney U statistic with tied scores given their average rank.
/// Equals scikit-learn's `roc_auc_score`, and like it refuses data with only one class.
pub fn roc_auc(scores: &[f32], truth: &[u32]) -> Result<f64> {
    if scores.len() != truth.len() {
        return Err(Error::Invalid(format!(
            "roc_auc: {} scores but {} labels",
            scores.len(),
            truth.len()
        )));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::Invalid(format!("roc_auc: score at index {i} is NaN")));
    }
    if let Some(i) = truth.iter().position(|&t| t > 1) {
        return Err(Error::Invalid(format!(
            "roc_auc: label {} at index {i} is not 0 or 1",
            truth[i]
        )));
    }
    let n_pos = truth.iter().filter(|&&t| t == 1).count();
    let n_neg = truth.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(Error::Invalid(format!(
            "roc_auc: only one class present ({n_pos} positives, {n_neg} negatives); ROC AUC is undefined"
        )));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let avg_rank = (start + 1 + end) as f64 / 2.0;
        rank_sum += avg_rank * order[start..end].iter().filter(|&&i| truth[i] == 1).count() as f64;
        start = end;
    }
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Ok(u / (n_pos as f64 * n_neg as f64))
}

/// A metric by name, as model selection asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Fraction of correct predictions.
    Accuracy,
    /// Correct predictions of a class / predictions of it, averaged as given.
    Precision(Average),
    /// Correct predictions of a class / true samples of it, averaged as given.
    Recall(Average),
    /// Harmonic mean of precision and recall, averaged as given.
    F1(Average),
    /// Area under the ROC curve of binary scores ([`roc_auc`]); needs scores, not a
    /// confusion matrix (in `compile`, a binary loss).
    RocAuc,
    /// The loss the model was compiled with (lower is better); not computable from a
    /// confusion matrix.
    Loss,
    /// Regression: mean absolute error over every output (lower is better).
    Mae,
    /// Regression: root of the mean squared error over every output (lower is better).
    Rmse,
    /// Regression: coefficient of determination, 1 − SSE/SST per output column, then
    /// averaged over the columns (scikit-learn's `r2_score`, `uniform_average`).
    R2,
}

const AVERAGED: [&str; 3] = ["precision", "recall", "f1"];

impl Metric {
    /// The scikit-learn style name: `accuracy`, `precision` (binary, positive class 1),
    /// `precision_pos<k>` (binary, positive class k), `precision_macro`, `precision_micro`,
    /// `precision_weighted` (and likewise for `recall`, `f1`), `roc_auc`, `loss`.
    pub fn name(&self) -> String {
        let (base, avg) = match self {
            Metric::Accuracy => return "accuracy".into(),
            Metric::RocAuc => return "roc_auc".into(),
            Metric::Loss => return "loss".into(),
            Metric::Mae => return "mae".into(),
            Metric::Rmse => return "rmse".into(),
            Metric::R2 => return "r2".into(),
            Metric::Precision(a) => ("precision", a),
            Metric::Recall(a) => ("recall", a),
            Metric::F1(a) => ("f1", a),
        };
        match avg {
            Average::Binary { positive: 1 } => base.into(),
            Average::Binary { positive } => format!("{base}_pos{positive}"),
            Average::Macro => format!("{base}_macro"),
            Average::Micro => format!("{base}_micro"),
            Average::Weighted => format!("{base}_weighted"),
        }
    }

    /// Whether a larger value is better (false for the loss and the regression
    /// errors).
    pub fn higher_is_better(&self) -> bool {
        !matches!(self, Metric::Loss | Metric::Mae | Metric::Rmse)
    }

    /// Whether it scores a regression (needs a regression loss, e.g. MSE).
    pub fn is_regression(&self) -> bool {
        matches!(self, Metric::Mae | Metric::Rmse | Metric::R2)
    }

    fn valid_names() -> Vec<String> {
        let mut names = vec!["accuracy".to_string()];
        for base in AVERAGED {
            names.extend(["", "_macro", "_micro", "_weighted", "_pos<k>"].map(|s| format!("{base}{s}")));
        }
        names.extend(["roc_auc", "loss", "mae", "rmse", "r2"].map(String::from));
        names
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Metric {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "accuracy" => return Ok(Metric::Accuracy),
            "roc_auc" => return Ok(Metric::RocAuc),
            "loss" => return Ok(Metric::Loss),
            "mae" => return Ok(Metric::Mae),
            "rmse" => return Ok(Metric::Rmse),
            "r2" => return Ok(Metric::R2),
            _ => {}
        }
        let unknown = || Error::UnknownName {
            what: "metric".into(),
            name: s.into(),
            valid: Metric::valid_names(),
            context: String::new(),
        };
        let (base, suffix) = AVERAGED
            .iter()
            .find_map(|b| s.strip_prefix(b).map(|rest| (*b, rest)))
            .ok_or_else(unknown)?;
        let avg = match suffix {
            "" => Average::Binary { positive: 1 },
            "_macro" => Average::Macro,
            "_micro" => Average::Micro,
            "_weighted" => Average::Weighted,
            _ => {
                let k = suffix
                    .strip_prefix("_pos")
                    .and_then(|k| k.parse().ok())
                    .ok_or_else(unknown)?;
                Average::Binary { positive: k }
            }
        };
        Ok(match base {
            "precision" => Metric::Precision(avg),
            "recall" => Metric::Recall(avg),
            _ => Metric::F1(avg),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn three_classes_all_averages() {
        // truth 0 0 0 1 1 2 2 2 2 2, predictions below. Matrix (row = truth):
        //   [2 1 0]   support   3 2 5
        //   [0 1 1]   predicted 3 2 5
        //   [1 0 4]   correct   2 1 4 → accuracy 7/10
        let truth = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2];
        let pred = [0, 0, 1, 1, 2, 0, 2, 2, 2, 2];
        let cm = ConfusionMatrix::from_labels(&truth, &pred, 3).unwrap();
        assert_eq!(cm.counts(), &[2, 1, 0, 0, 1, 1, 1, 0, 4]);
        assert_eq!((cm.total(), cm.get(2, 0)), (10, 1));
        close(cm.accuracy(), 0.7);
        // precision 2/3, 1/2, 4/5; recall 2/3, 1/2, 4/5 (same here); F1 equal to both.
        let per = [2.0 / 3.0, 0.5, 0.8];
        for (got, want) in cm.precision_per_class().iter().zip(per) {
            close(*got, want);
        }
        // macro = (2/3 + 1/2 + 4/5) / 3 = 59/90; weighted = (3·2/3 + 2·1/2 + 5·4/5)/10 = 7/10.
        for m in [
            cm.precision(Average::Macro),
            cm.recall(Average::Macro),
            cm.f1(Average::Macro),
        ] {
            close(m.unwrap(), 59.0 / 90.0);
        }
        close(cm.recall(Average::Weighted).unwrap(), 0.7);
        close(cm.f1(Average::Weighted).unwrap(), 0.7);
        close(cm.precision(Average::Micro).unwrap(), 0.7);
        close(cm.f1(Average::Micro).unwrap(), 0.7);
        close(cm.precision(Average::Binary { positive: 2 }).unwrap(), 0.8);
    }

    #[test]
    fn asymmetric_precision_recall_and_f1() {
        // truth 0 0 0 0 1 1, pred 0 0 1 1 1 1: class 1 precision 2/4, recall 2/2,
        // F1 = 2·(1/2)·1/(3/2) = 2/3; class 0 precision 1, recall 1/2, F1 2/3.
        let cm = ConfusionMatrix::from_labels(&[0, 0, 0, 0, 1, 1], &[0, 0, 1, 1, 1, 1], 2).unwrap();
        close(cm.precision(Average::Binary { positive: 1 }).unwrap(), 0.5);
        close(cm.recall(Average::Binary { positive: 1 }).unwrap(), 1.0);
        close(cm.f1(Average::Binary { positive: 1 }).unwrap(), 2.0 / 3.0);
        // weighted precision = (4·1 + 2·0.5)/6 = 5/6; macro recall = (0.5 + 1)/2.
        close(cm.precision(Average::Weighted).unwrap(), 5.0 / 6.0);
        close(cm.recall(Average::Macro).unwrap(), 0.75);
    }

    #[test]
    fn absent_class_counts_as_zero_never_nan() {
        // Class 3 occurs nowhere; class 2 is predicted once but never true.
        // truth 0 1 1 0, pred 0 1 2 1 → precision 1, 1/2, 0, 0; recall 1/2, 1/2, 0, 0;
        // F1 2/3, 1/2, 0, 0. scikit-learn with labels=[0,1,2,3], zero_division=0 gives
        // macro precision 0.375, recall 0.25, F1 (2/3 + 1/2)/4 = 7/24.
        let cm = ConfusionMatrix::from_labels(&[0, 1, 1, 0], &[0, 1, 2, 1], 4).unwrap();
        close(cm.precision(Average::Macro).unwrap(), 0.375);
        close(cm.recall(Average::Macro).unwrap(), 0.25);
        close(cm.f1(Average::Macro).unwrap(), 7.0 / 24.0);
        // Weighted ignores zero-support classes: F1 = (2·2/3 + 2·1/2)/4 = 7/12.
        close(cm.f1(Average::Weighted).unwrap(), 7.0 / 12.0);
        close(cm.f1(Average::Binary { positive: 3 }).unwrap(), 0.0);
        let empty = ConfusionMatrix::new(3);
        for avg in [Average::Macro, Average::Micro, Average::Weighted] {
            close(empty.f1(avg).unwrap(), 0.0);
        }
        close(empty.accuracy(), 0.0);
    }

    #[test]
    fn add_and_from_counts() {
        let mut a = ConfusionMatrix::from_labels(&[0, 1], &[0, 0], 2).unwrap();
        let b = ConfusionMatrix::from_counts(2, vec![0, 1, 0, 3]).unwrap();
        a.add(&b).unwrap();
        assert_eq!(a.counts(), &[1, 1, 1, 3]);
        assert!(a.add(&ConfusionMatrix::new(3)).is_err());
        let e = ConfusionMatrix::from_counts(2, vec![1, 2, 3]).unwrap_err().to_string();
        assert!(e.contains("3 counts for 2 classes"), "{e}");
    }

    #[test]
    fn label_errors() {
        let e = ConfusionMatrix::from_labels(&[0, 1], &[0], 2).unwrap_err().to_string();
        assert!(e.contains("2 true labels but 1 predictions"), "{e}");
        let e = ConfusionMatrix::from_labels(&[0, 1, 0], &[0, 1, 5], 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("(pred)") && e.contains("label 5 at index 2"), "{e}");
        let cm = ConfusionMatrix::new(2);
        let e = cm.precision(Average::Binary { positive: 2 }).unwrap_err().to_string();
        assert!(e.contains("positive class 2"), "{e}");
        assert!(cm.score(Metric::RocAuc).is_err());
    }

    #[test]
    fn roc_auc_ranks_and_ties() {
        close(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).unwrap(), 0.75);
        // Ties: ranks 2,2,2,4; positives 2 + 4 − 3 = 3 of 4 pairs.
        close(roc_auc(&[0.5, 0.5, 0.5, 0.9], &[0, 1, 0, 1]).unwrap(), 0.75);
        close(roc_auc(&[0.3, 0.3], &[1, 0]).unwrap(), 0.5);
        close(roc_auc(&[0.9, 0.1, 0.8], &[0, 1, 0]).unwrap(), 0.0);
        close(roc_auc(&[f32::NEG_INFINITY, 1.0], &[0, 1]).unwrap(), 1.0);
    }

    #[test]
    fn roc_auc_errors() {
        let msg = |s: &[f32], t: &[u32]| roc_auc(s, t).unwrap_err().to_string();
        assert!(msg(&[0.1, 0.2], &[1, 1]).contains("only one class"));
        assert!(msg(&[0.1], &[1, 0]).contains("1 scores but 2 labels"));
        assert!(msg(&[0.1, 0.2], &[0, 2]).contains("label 2 at index 1"));
        assert!(msg(&[0.1, f32::NAN], &[0, 1]).contains("index 1 is NaN"));
    }

    #[test]
    fn metric_names_round_trip() {
        let all = [
            (Metric::Accuracy, "accuracy"),
            (Metric::Precision(Average::Binary { positive: 1 }), "precision"),
            (Metric::Recall(Average::Binary { positive: 0 }), "recall_pos0"),
            (Metric::Precision(Average::Macro), "precision_macro"),
            (Metric::Recall(Average::Micro), "recall_micro"),
            (Metric::F1(Average::Weighted), "f1_weighted"),
            (Metric::F1(Average::Binary { positive: 1 }), "f1"),
            (Metric::RocAuc, "roc_auc"),
            (Metric::Loss, "loss"),
            (Metric::Mae, "mae"),
            (Metric::Rmse, "rmse"),
            (Metric::R2, "r2"),
        ];
        for (m, name) in all {
            assert_eq!(m.name(), name);
            assert_eq!(name.parse::<Metric>().unwrap(), m);
            assert_eq!(
                m.higher_is_better(),
                !matches!(m, Metric::Loss | Metric::Mae | Metric::Rmse)
            );
        }
        for bad in ["f2", "f1_", "precision_posx", "Accuracy"] {
            let e = bad.parse::<Metric>().unwrap_err().to_string();
            assert!(
                e.contains(&format!("'{bad}'")) && e.contains("f1_macro, f1_micro"),
                "{e}"
            );
        }
    }
}
