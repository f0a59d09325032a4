//! [`History`]: what `Model::fit` returns, per epoch, and the report made from it.

use std::collections::BTreeMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::{Path, PathBuf};

#[cfg(not(target_arch = "wasm32"))]
use super::report::{write_report, Curve, ReportData};
use crate::metrics::ConfusionMatrix;
#[cfg(not(target_arch = "wasm32"))]
use crate::Result;

/// Metric name → value (`"loss"`, `"val_accuracy"`, …): one epoch's logs, as
/// [`History`] records them and callbacks see them, or the scores of one
/// evaluation, cross-validation fold or search trial.
pub type Scores = BTreeMap<String, f64>;

/// Health of one layer at the end of training.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerStat {
    /// Index and name of the layer, with a following activation appended
    /// (e.g. `"0 Linear(784, 128) + ReLU"`).
    pub name: String,
    /// L2 norm of the layer's gradients on one batch (all its parameters together).
    pub grad_norm: f64,
    /// L2 norm of the layer's parameters.
    pub weight_norm: f64,
    /// Fraction (0..1) of ReLU units that never fired.
    pub dead_relu: Option<f64>,
    /// Fraction (0..1) of sigmoid/tanh units that are saturated.
    pub saturated: Option<f64>,
}

/// A change of the learning rate, made at the end of `epoch` (1-based).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LrChange {
    /// The epoch (1-based) at whose end the rate changed.
    pub epoch: usize,
    /// The rate before.
    pub from: f64,
    /// The rate after.
    pub to: f64,
    /// Why, as the callback that changed it says.
    pub reason: String,
}

/// Per-epoch logs of a `fit`, as Keras' `History.history`: `"loss"`, `"accuracy"`,
/// `"val_loss"`, … each with one value per epoch run.
#[derive(Debug, Default)]
pub struct History {
    /// Log name → one value per epoch (`val_` prefixed for the validation data).
    pub history: BTreeMap<String, Vec<f64>>,
    /// The learning rate of each epoch.
    pub lr: Vec<f64>,
    /// Learning-rate changes and their reasons.
    pub lr_changes: Vec<LrChange>,
    /// Why training ended early, if it did.
    pub stop_reason: Option<String>,
    /// Confusion counts of the last evaluation (validation if there was one).
    pub confusion: Option<ConfusionMatrix>,
    /// Gradient and weight norms, dead and saturated units, after training.
    pub layers: Vec<LayerStat>,
    /// Seed, device, driver, wgnn version and settings, for the report.
    pub meta: Vec<(String, String)>,
}

impl History {
    pub(crate) fn new(meta: Vec<(String, String)>) -> History {
        History {
            meta,
            ..History::default()
        }
    }

    pub(crate) fn push(&mut self, logs: &Scores, lr: f64) {
        for (k, v) in logs {
            self.history.entry(k.clone()).or_default().push(*v);
        }
        self.lr.push(lr);
    }

    /// The values of one log (`"loss"`, `"val_accuracy"`, …), one per epoch.
    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.history.get(name).map(Vec::as_slice)
    }

    /// Epochs run.
    pub fn epochs(&self) -> usize {
        self.lr.len()
    }

    /// Writes PNG and SVG plots of every curve (train and validation), the learning
    /// rate and the confusion matrix, and a `summary.md` linking them, into `dir`.
    /// Returns the path of the summary. Native targets only (a browser tab has no
    /// files).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn write_report(&self, dir: impl AsRef<Path>, title: &str) -> Result<PathBuf> {
        let mut names: Vec<&String> = self
            .history
            .keys()
            .filter(|k| !k.starts_with("val_") && *k != "samples_per_sec")
            .collect();
        names.sort_by_key(|k| (*k != "loss", k.to_string()));
        let curves = names
            .into_iter()
            .map(|name| Curve {
                name: name.clone(),
                train: self.history[name].clone(),
                val: self.history.get(&format!("val_{name}")).cloned().unwrap_or_default(),
            })
            .collect();
        let mut meta = self.meta.clone();
        meta.push(("epochs run".into(), self.epochs().to_string()));
        write_report(
            dir,
            &ReportData {
                title: title.into(),
                curves,
                lr: self.lr.clone(),
                lr_changes: self.lr_changes.clone(),
                confusion: self.confusion.as_ref().map(|c| (c.classes(), c.counts().to_vec())),
                class_names: Vec::new(),
                layers: self.layers.clone(),
                stop_reason: self.stop_reason.clone(),
                meta,
            },
        )
    }
}
