//! The settings of `Model::fit` ([`FitConfig`]), written as Keras' `fit` keywords
//! read, and how much `fit` prints ([`Verbosity`], Keras' `verbose`).

use super::callbacks::Callback;
use crate::Tensor;

/// How much `fit` prints, Keras' `verbose`: `FitConfig::new().verbose(2)`.
/// `verbose(0)`/`verbose(false)` is silent; `verbose(true)` is [`Verbosity::Auto`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verbosity {
    /// A progress bar on a terminal, one line per epoch when standard output is
    /// not a terminal (CI logs, `tee`): the default.
    #[default]
    Auto,
    /// Nothing (`verbose=0`).
    Silent,
    /// A progress bar while an epoch runs (drawn on a terminal only), then the
    /// epoch's line (`verbose=1`).
    ProgressBar,
    /// One line per epoch: epoch, time, loss, metrics, validation metrics
    /// (`verbose=2`).
    EpochLines,
}

impl Verbosity {
    /// What `fit` does: `Auto` resolved by whether standard output is a terminal,
    /// and everything silent unless `verbose`.
    pub(crate) fn resolve(self, verbose: bool, terminal: bool) -> Verbosity {
        match self {
            _ if !verbose => Verbosity::Silent,
            Verbosity::Auto if terminal => Verbosity::ProgressBar,
            Verbosity::Auto => Verbosity::EpochLines,
            level => level,
        }
    }
}

/// `true` is [`Verbosity::Auto`], `false` silent.
impl From<bool> for Verbosity {
    fn from(on: bool) -> Verbosity {
        if on {
            Verbosity::Auto
        } else {
            Verbosity::Silent
        }
    }
}

/// Keras' levels: 0 silent, 1 progress bar, 2 (or more) one line per epoch.
impl From<u8> for Verbosity {
    fn from(level: u8) -> Verbosity {
        match level {
            0 => Verbosity::Silent,
            1 => Verbosity::ProgressBar,
            _ => Verbosity::EpochLines,
        }
    }
}

/// Keras' levels, as an integer literal is typed: 0 (or less) silent, 1 progress
/// bar, 2 (or more) one line per epoch.
impl From<i32> for Verbosity {
    fn from(level: i32) -> Verbosity {
        Verbosity::from(level.clamp(0, 2) as u8)
    }
}

/// Settings of [`Model::fit`](super::Model::fit).
pub struct FitConfig {
    /// Epochs to run, at least 1 (a callback may stop earlier); default 1.
    pub epochs: usize,
    /// 1 is stochastic, the number of rows is batch gradient descent. With a
    /// [`crate::distributed::DistributedOptimizer`] this is the batch of each rank:
    /// a step then averages `batch_size · ranks` rows.
    pub batch_size: usize,
    /// Fraction of the rows, taken from the end before shuffling (as Keras does), held
    /// out for validation; ignored when `validation_data` is given.
    pub validation_split: f32,
    /// Explicit validation inputs and targets.
    pub validation_data: Option<(Tensor, Tensor)>,
    /// Reshuffle the training rows every epoch.
    pub shuffle: bool,
    /// Seed of the shuffling (default: drawn from the thread's seed stream).
    pub seed: Option<u64>,
    /// Called after every epoch, in order (early stopping, schedules, checkpoints).
    pub callbacks: Vec<Box<dyn Callback>>,
    /// Whether `fit` prints anything (`false` is silent, whatever `verbosity` says).
    pub verbose: bool,
    /// What `fit` prints when `verbose`: [`Verbosity::Auto`] by default.
    pub verbosity: Verbosity,
    /// One weight per training row (`[rows]`, finite, not negative), Keras'
    /// `sample_weight`: each row's loss is multiplied by its weight, and the batch's
    /// loss is the sum divided by the batch size (see [`Loss`](super::Loss) for
    /// class-weighted cross-entropy). The rows held out by `validation_split` keep
    /// their weights in the validation loss.
    pub sample_weight: Option<Tensor>,
    /// After training, compute per-layer gradient norms and dead/saturated units for
    /// the report (one more forward and backward pass on up to 256 rows).
    pub layer_stats: bool,
    /// Continue the run that wrote this checkpoint (`ModelCheckpoint`,
    /// `Control::save_checkpoint`): parameters, optimizer state, random stream, the
    /// epoch, the data order, the callbacks' state and the history come from it, so
    /// the result equals the uninterrupted run bit for bit. Give the same data,
    /// settings and callbacks (in the same order) as that run; `epochs` is the total,
    /// and the returned `History` holds every epoch, those before the checkpoint too.
    pub resume_from: Option<std::path::PathBuf>,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 1,
            batch_size: 32,
            validation_split: 0.0,
            validation_data: None,
            shuffle: true,
            seed: None,
            callbacks: Vec::new(),
            verbose: true,
            verbosity: Verbosity::Auto,
            sample_weight: None,
            layer_stats: true,
            resume_from: None,
        }
    }
}

impl Clone for FitConfig {
    /// A copy for another fold or trial: the callbacks are copied with their state
    /// ([`Callback::boxed_clone`]).
    ///
    /// # Panics
    /// If a callback cannot be copied (its `boxed_clone` is `None`).
    fn clone(&self) -> FitConfig {
        let callbacks = (self.callbacks.iter().enumerate())
            .map(|(i, c)| {
                c.boxed_clone().unwrap_or_else(|| {
                    panic!("FitConfig::clone: callback {i} cannot be copied (implement Callback::boxed_clone for it)")
                })
            })
            .collect();
        FitConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            validation_split: self.validation_split,
            validation_data: self.validation_data.clone(),
            shuffle: self.shuffle,
            seed: self.seed,
            callbacks,
            verbose: self.verbose,
            verbosity: self.verbosity,
            sample_weight: self.sample_weight.clone(),
            layer_stats: self.layer_stats,
            resume_from: self.resume_from.clone(),
        }
    }
}

/// Builder methods, as Keras' `fit` keywords read:
/// `FitConfig::new().epochs(20).batch_size(64).validation_split(0.1).callback(EarlyStopping::new("val_loss", 3))`.
impl FitConfig {
    /// The defaults: 1 epoch, batches of 32, shuffled, no validation, verbose.
    pub fn new() -> FitConfig {
        FitConfig::default()
    }

    /// Epochs to run (at least 1).
    pub fn epochs(mut self, epochs: usize) -> FitConfig {
        self.epochs = epochs;
        self
    }

    /// Rows per batch.
    pub fn batch_size(mut self, batch_size: usize) -> FitConfig {
        self.batch_size = batch_size;
        self
    }

    /// The fraction of rows, from the end, held out for validation.
    pub fn validation_split(mut self, fraction: f32) -> FitConfig {
        self.validation_split = fraction;
        self
    }

    /// Explicit validation inputs and targets.
    pub fn validation_data(mut self, x: &Tensor, y: &Tensor) -> FitConfig {
        self.validation_data = Some((x.clone(), y.clone()));
        self
    }

    /// Whether to reshuffle the training rows every epoch.
    pub fn shuffle(mut self, shuffle: bool) -> FitConfig {
        self.shuffle = shuffle;
        self
    }

    /// The seed of the shuffling.
    pub fn seed(mut self, seed: u64) -> FitConfig {
        self.seed = Some(seed);
        self
    }

    /// Adds a callback, run after every epoch in the order added.
    pub fn callback(mut self, callback: impl Callback + 'static) -> FitConfig {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// What to print, as Keras' `verbose`: `0` silent, `1` a progress bar, `2` one
    /// line per epoch; `true` (the default) a bar on a terminal and lines
    /// elsewhere, `false` silent. A [`Verbosity`] works too.
    pub fn verbose(mut self, level: impl Into<Verbosity>) -> FitConfig {
        self.verbosity = level.into();
        self.verbose = self.verbosity != Verbosity::Silent;
        self
    }

    /// One weight per training row, Keras' `sample_weight` (see the field).
    pub fn sample_weight(mut self, weights: &Tensor) -> FitConfig {
        self.sample_weight = Some(weights.clone());
        self
    }

    /// Whether to compute per-layer statistics after training.
    pub fn layer_stats(mut self, on: bool) -> FitConfig {
        self.layer_stats = on;
        self
    }

    /// Continues the run that wrote this checkpoint.
    pub fn resume_from(mut self, path: impl Into<std::path::PathBuf>) -> FitConfig {
        self.resume_from = Some(path.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_levels_and_booleans_resolve_by_the_terminal() {
        let level = |v: Verbosity, terminal| FitConfig::new().verbose(v).verbosity.resolve(true, terminal);
        assert_eq!(Verbosity::Auto.resolve(true, true), Verbosity::ProgressBar);
        assert_eq!(Verbosity::Auto.resolve(true, false), Verbosity::EpochLines);
        assert_eq!(Verbosity::EpochLines.resolve(false, true), Verbosity::Silent);
        assert_eq!(level(Verbosity::from(0), true), Verbosity::Silent);
        assert_eq!(level(Verbosity::from(1), false), Verbosity::ProgressBar);
        assert_eq!(level(Verbosity::from(2), true), Verbosity::EpochLines);
        let quiet = FitConfig::new().verbose(false);
        assert_eq!((quiet.verbose, quiet.verbosity), (false, Verbosity::Silent));
        let two = FitConfig::new().verbose(2);
        assert_eq!((two.verbose, two.verbosity), (true, Verbosity::EpochLines));
        assert_eq!(FitConfig::new().verbose(true).verbosity, Verbosity::Auto);
    }
}
