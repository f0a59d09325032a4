//! The progress bar `fit` draws on a terminal: indicatif on native targets, nothing
//! in a browser tab (which has no terminal).

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
