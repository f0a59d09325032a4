//! What `fit` prints: the progress bar it draws on a terminal (indicatif on native
//! targets, nothing in a browser tab, which has no terminal) and the line it prints
//! per epoch (Keras' `verbose=2`).

use super::history::Scores;

/// `epoch 3/20 - 1.52s - loss 0.3121, accuracy 0.9012, val_loss …, 5021 samples/s`:
/// the line `fit` prints after an epoch (0-based `epoch`) that took `seconds`.
pub(crate) fn epoch_line(epoch: usize, epochs: usize, seconds: f64, logs: &Scores) -> String {
    format!("epoch {}/{epochs} - {seconds:.2}s - {}", epoch + 1, format_logs(logs))
}

/// `loss 0.3121, accuracy 0.9012, val_loss …` in a stable order: the training
/// loss, its metrics, the validation loss and metrics, then the rate.
fn format_logs(logs: &Scores) -> String {
    let order = |k: &str| (k.starts_with("val_"), k != "loss" && k != "val_loss", k.to_string());
    let mut keys: Vec<&String> = logs.keys().filter(|k| *k != "samples_per_sec").collect();
    keys.sort_by_key(|k| order(k));
    let mut parts: Vec<String> = keys.iter().map(|k| format!("{k} {:.4}", logs[*k])).collect();
    if let Some(r) = logs.get("samples_per_sec") {
        parts.push(format!("{r:.0} samples/s"));
    }
    parts.join(", ")
}

/// One epoch's progress bar; hidden unless `show`.
pub(crate) struct Progress {
    #[cfg(not(target_arch = "wasm32"))]
    bar: indicatif::ProgressBar,
}

#[cfg(not(target_arch = "wasm32"))]
impl Progress {
    /// A bar over `batches` batches of epoch `epoch` (0-based) of `epochs`.
    pub(crate) fn new(show: bool, batches: usize, epoch: usize, epochs: usize) -> Progress {
        if !show {
            return Progress {
                bar: indicatif::ProgressBar::hidden(),
            };
        }
        let bar = indicatif::ProgressBar::new(batches as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{epochs}", epoch + 1));
        Progress { bar }
    }

    /// One more batch done.
    pub(crate) fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// The text after the bar.
    pub(crate) fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Removes the bar.
    pub(crate) fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(target_arch = "wasm32")]
impl Progress {
    /// Nothing to draw in a browser tab.
    pub(crate) fn new(_show: bool, _batches: usize, _epoch: usize, _epochs: usize) -> Progress {
        Progress {}
    }

    /// Nothing to draw in a browser tab.
    pub(crate) fn inc(&self, _n: u64) {}

    /// Nothing to draw in a browser tab.
    pub(crate) fn set_message(&self, _message: String) {}

    /// Nothing to draw in a browser tab.
    pub(crate) fn finish_and_clear(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_line_names_the_epoch_time_loss_metrics_and_validation_in_order() {
        let logs: Scores = [
            ("val_accuracy", 0.875),
            ("accuracy", 0.9),
            ("val_loss", 0.33),
            ("loss", 0.25),
            ("samples_per_sec", 1234.4),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(
            epoch_line(2, 20, 1.5, &logs),
            "epoch 3/20 - 1.50s - loss 0.2500, accuracy 0.9000, val_loss 0.3300, val_accuracy 0.8750, 1234 samples/s"
        );
    }
}
