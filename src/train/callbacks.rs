//! Callbacks that `Model::fit` runs after every epoch: early stopping, learning-rate
//! schedules and checkpoints, and the state they carry into a checkpoint.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::history::Scores;
use crate::metrics::Metric;
use crate::nn::Module;
use crate::optim::lr::{state_count, state_value, LrSchedule};
use crate::optim::Optimizer;
use crate::{Error, Result, Tensor};

/// What a callback may do at the end of an epoch.
pub struct Control<'a> {
    /// The model being trained.
    pub model: &'a dyn Module,
    /// Its optimizer (e.g. to change the learning rate).
    pub optimizer: &'a mut dyn Optimizer,
    pub(crate) stop: Option<String>,
    pub(crate) notes: Vec<String>,
    pub(crate) checkpoints: Vec<PathBuf>,
}

impl<'a> Control<'a> {
    pub(crate) fn new(model: &'a dyn Module, optimizer: &'a mut dyn Optimizer) -> Control<'a> {
        Control {
            model,
            optimizer,
            stop: None,
            notes: Vec::new(),
            checkpoints: Vec::new(),
        }
    }

    /// From [`Callback::on_epoch_end`], asks `fit` to write a full checkpoint to `path`
    /// at the end of this epoch, once every callback has run and the epoch is in the
    /// history (requests from `on_train_end` are ignored): parameters, optimizer
    /// state, random stream, epoch, data order, history and every callback's
    /// [`Callback::state`]. `FitConfig::resume_from` continues from it bit for bit.
    pub fn save_checkpoint(&mut self, path: impl Into<PathBuf>) {
        self.checkpoints.push(path.into());
    }

    /// Ends training after this epoch, saying why (shown in the history and report).
    pub fn stop(&mut self, reason: impl Into<String>) {
        self.stop = Some(reason.into());
    }

    /// Sets the learning rate for the next epoch, recording why.
    pub fn set_lr(&mut self, lr: f64, reason: impl Into<String>) {
        let old = self.optimizer.lr();
        self.optimizer.set_lr(lr);
        // A change below f32 resolution (an f32 setting read back as f64) is none.
        if (lr - old).abs() > 1e-6 * old.abs().max(lr.abs()) {
            self.notes.push(reason.into());
        }
    }
}

/// What a callback carries from one epoch to the next (counters, best values, kept
/// weights), by name, as a checkpoint holds it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallbackState {
    /// Numbers by name (counts are stored exactly as f64).
    pub values: BTreeMap<String, f64>,
    /// Arrays by name (e.g. the best weights early stopping keeps).
    pub arrays: BTreeMap<String, Vec<f32>>,
}

impl CallbackState {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.arrays.is_empty()
    }
}

/// Runs after every epoch of `Model::fit` with that epoch's logs (`loss`,
/// `accuracy`, …, and `val_…` for the validation set).
pub trait Callback {
    /// Called once per epoch (0-based `epoch`).
    fn on_epoch_end(&mut self, epoch: usize, logs: &Scores, control: &mut Control<'_>) -> Result<()>;
    /// Called once when training starts (not when it resumes from a checkpoint),
    /// before the first batch: an error stops `fit` before anything is trained.
    fn on_train_begin(&mut self, _control: &mut Control<'_>) -> Result<()> {
        Ok(())
    }
    /// Called after every optimizer step (a per-batch schedule steps here).
    fn on_batch_end(&mut self, _control: &mut Control<'_>) -> Result<()> {
        Ok(())
    }
    /// The log names this callback reads (e.g. `["val_loss"]`): `fit` checks them
    /// against the names it logs before the first step, so a typo is an error that
    /// lists the valid names. Default: none.
    fn monitors(&self) -> Vec<String> {
        Vec::new()
    }
    /// Called once when training ends, for whatever reason.
    fn on_train_end(&mut self, _control: &mut Control<'_>) -> Result<()> {
        Ok(())
    }
    /// A copy of this callback (settings and state), so that a `FitConfig` holding it
    /// can be cloned (one per fold or trial). `None`, the default, for a callback
    /// that cannot be copied: cloning a `FitConfig` with it then panics with its
    /// index. Every callback of `wgnn::train` can be copied.
    fn boxed_clone(&self) -> Option<Box<dyn Callback>> {
        None
    }
    /// The state a resumed `fit` needs to carry on as if never stopped (saved in
    /// checkpoints). The default is no state: override it and
    /// [`load_state`](Self::load_state) in a callback that remembers anything
    /// between epochs.
    fn state(&self) -> CallbackState {
        CallbackState::default()
    }
    /// Puts back a state taken by [`state`](Self::state) when `fit` resumes. The
    /// default accepts only an empty state.
    fn load_state(&mut self, state: &CallbackState) -> Result<()> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "a callback without state was given the checkpoint state {:?}",
                state.values.keys().chain(state.arrays.keys()).collect::<Vec<_>>()
            )))
        }
    }
}

fn monitored(logs: &Scores, monitor: &str) -> Result<f64> {
    logs.get(monitor).copied().ok_or_else(|| {
        let known: Vec<&str> = logs.keys().map(String::as_str).collect();
        Error::Invalid(format!(
            "callback monitors '{monitor}', which is not computed; the logs have: {}",
            known.join(", ")
        ))
    })
}

/// Whether the logged value `name` (`loss`, `val_rmse`, …) is better when larger: as
/// its metric says (losses and regression errors are better smaller).
fn higher_is_better(name: &str) -> bool {
    let metric = name.strip_prefix("val_").unwrap_or(name);
    metric
        .parse::<Metric>()
        .map_or(!name.ends_with("loss"), |m| m.higher_is_better())
}

/// Stops when `monitor` has not improved by `min_delta` for `patience` epochs, as
/// Keras' `EarlyStopping`; with `restore_best_weights` the parameters go back to the
/// best epoch's values (kept on the host, read once per improvement).
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    /// The log watched (e.g. `"val_loss"`, `"val_rmse"`, `"val_accuracy"`); whether
    /// lower or higher is better comes from its metric.
    pub monitor: String,
    /// Epochs without improvement tolerated before stopping.
    pub patience: usize,
    /// Smallest change that counts as an improvement (default 0).
    pub min_delta: f64,
    /// Whether the best epoch's weights are put back when training stops early.
    pub restore_best_weights: bool,
    best: Option<(usize, f64)>,
    wait: usize,
    best_weights: Vec<Vec<f32>>,
}

impl EarlyStopping {
    /// Early stopping on `monitor` (e.g. `"val_loss"`), direction from its name.
    pub fn new(monitor: &str, patience: usize) -> EarlyStopping {
        EarlyStopping {
            monitor: monitor.into(),
            patience,
            min_delta: 0.0,
            restore_best_weights: false,
            best: None,
            wait: 0,
            best_weights: Vec::new(),
        }
    }

    /// Puts the best epoch's weights back when training ends.
    pub fn restore_best_weights(mut self) -> EarlyStopping {
        self.restore_best_weights = true;
        self
    }

    /// Smallest change that counts as an improvement.
    pub fn min_delta(mut self, min_delta: f64) -> EarlyStopping {
        self.min_delta = min_delta;
        self
    }
}

impl Callback for EarlyStopping {
    fn boxed_clone(&self) -> Option<Box<dyn Callback>> {
        Some(Box::new(self.clone()))
    }

    fn monitors(&self) -> Vec<String> {
        vec![self.monitor.clone()]
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Scores, control: &mut Control<'_>) -> Result<()> {
        let value = monitored(logs, &self.monitor)?;
        let improved = match self.best {
            None => true,
            Some((_, best)) if higher_is_better(&self.monitor) => value > best + self.min_delta,
            Some((_, best)) => value < best - self.min_delta,
        };
        if improved {
            self.best = Some((epoch, value));
            self.wait = 0;
            if self.restore_best_weights {
                self.best_weights = control
                    .model
                    .parameters()
                    .iter()
                    .map(Tensor::to_vec)
                    .collect::<Result<_>>()?;
            }
        } else {
            self.wait += 1;
            if self.wait >= self.patience {
                let (at, best) = self.best.unwrap();
                control.stop(format!(
                    "early stopping: {} did not improve for {} epochs after epoch {} (best {best:.4})",
                    self.monitor,
                    self.patience,
                    at + 1
                ));
            }
        }
        Ok(())
    }

    fn state(&self) -> CallbackState {
        let mut values = BTreeMap::from([("wait".to_string(), self.wait as f64)]);
        if let Some((epoch, best)) = self.best {
            values.insert("best_epoch".into(), epoch as f64);
            values.insert("best".into(), best);
        }
        let arrays = (self.best_weights.iter().enumerate())
            .map(|(i, w)| (format!("best_weights.{i}"), w.clone()))
            .collect();
        CallbackState { values, arrays }
    }

    fn load_state(&mut self, state: &CallbackState) -> Result<()> {
        let who = "EarlyStopping";
        let wait = state_count(&state.values, "wait", who)?;
        let best = match state.values.contains_key("best") {
            true => Some((
                state_count(&state.values, "best_epoch", who)?,
                state_value(&state.values, "best", who)?,
            )),
            false => None,
        };
        let weights: Vec<Vec<f32>> = (0..)
            .map_while(|i| state.arrays.get(&format!("best_weights.{i}")).cloned())
            .collect();
        if weights.len() != state.arrays.len() {
            return Err(Error::Invalid(format!(
                "{who}: unexpected arrays in the checkpoint's state: {:?}",
                state.arrays.keys().collect::<Vec<_>>()
            )));
        }
        (self.wait, self.best, self.best_weights) = (wait, best, weights);
        Ok(())
    }

    fn on_train_end(&mut self, control: &mut Control<'_>) -> Result<()> {
        if self.restore_best_weights && !self.best_weights.is_empty() {
            for (p, w) in control.model.parameters().iter().zip(&self.best_weights) {
                p.assign(w)?;
            }
            let (at, _) = self.best.unwrap();
            control.notes.push(format!("restored the weights of epoch {}", at + 1));
        }
        Ok(())
    }
}

/// Steps a learning-rate schedule once per epoch (PyTorch's habit) and hands its
/// rate to the optimizer; `ReduceLrOnPlateau` reads `monitor` from the logs.
pub struct LrScheduler {
    schedule: Box<dyn LrSchedule>,
    monitor: Option<String>,
    /// Stepped after every batch rather than every epoch.
    per_batch: bool,
}

impl LrScheduler {
    /// A schedule stepped without a metric (`StepLr`, `ExponentialLr`, `CosineAnnealingLr`).
    pub fn new(schedule: impl LrSchedule + 'static) -> LrScheduler {
        LrScheduler {
            schedule: Box::new(schedule),
            monitor: None,
            per_batch: false,
        }
    }

    /// A schedule stepped after every batch (warm-up, `OneCycleLr`, a cosine over the
    /// steps of the run).
    pub fn per_batch(schedule: impl LrSchedule + 'static) -> LrScheduler {
        LrScheduler {
            schedule: Box::new(schedule),
            monitor: None,
            per_batch: true,
        }
    }

    /// A schedule stepped with a metric from the logs (`ReduceLrOnPlateau`).
    pub fn on_metric(schedule: impl LrSchedule + 'static, monitor: &str) -> LrScheduler {
        LrScheduler {
            schedule: Box::new(schedule),
            monitor: Some(monitor.into()),
            per_batch: false,
        }
    }
}

impl Callback for LrScheduler {
    fn boxed_clone(&self) -> Option<Box<dyn Callback>> {
        Some(Box::new(LrScheduler {
            schedule: self.schedule.boxed_clone()?,
            monitor: self.monitor.clone(),
            per_batch: self.per_batch,
        }))
    }

    fn monitors(&self) -> Vec<String> {
        self.monitor.iter().cloned().collect()
    }

    /// Refuses a schedule whose base differs from the optimizer's rate (one learning
    /// rate: the optimizer's, as `torch.optim.lr_scheduler` reads it).
    fn on_train_begin(&mut self, control: &mut Control<'_>) -> Result<()> {
        let (Some(base), lr) = (self.schedule.initial_lr(), control.optimizer.lr()) else {
            return Ok(());
        };
        // Within f32 rounding: a rate given as f32 and widened is the same rate.
        if (base - lr).abs() > 1e-6 * lr.abs().max(base.abs()) {
            return Err(Error::InvalidSetting {
                setting: "lr schedule",
                message: format!(
                    "fit: the schedule {} starts from lr {base}, the optimizer's rate is {lr}; \
                     build the schedule from the optimizer (e.g. StepLr::for_optimizer(&opt, ..)) \
                     or the optimizer with the schedule's rate",
                    self.schedule.describe()
                ),
            });
        }
        // The rate of the first step (a warm-up's base · start_factor), as PyTorch's
        // scheduler sets it when it is made.
        control.optimizer.set_lr(self.schedule.lr());
        Ok(())
    }

    fn on_batch_end(&mut self, control: &mut Control<'_>) -> Result<()> {
        if self.per_batch {
            self.schedule.step();
            control.optimizer.set_lr(self.schedule.lr());
        }
        Ok(())
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Scores, control: &mut Control<'_>) -> Result<()> {
        if self.per_batch {
            return Ok(());
        }
        let before = self.schedule.lr();
        match &self.monitor {
            Some(m) => self.schedule.step_with(monitored(logs, m)?),
            None => self.schedule.step(),
        }
        let after = self.schedule.lr();
        let why = match (self.schedule.last_change(), &self.monitor) {
            (Some(why), Some(m)) => why.replacen("metric", m, 1),
            (Some(why), None) => why,
            (None, _) => format!("{}: lr {before:.3e} -> {after:.3e}", self.schedule.describe()),
        };
        control.set_lr(after, format!("after epoch {}: {why}", epoch + 1));
        Ok(())
    }

    /// The schedule's [`LrSchedule::state`].
    fn state(&self) -> CallbackState {
        CallbackState {
            values: self.schedule.state(),
            arrays: BTreeMap::new(),
        }
    }

    fn load_state(&mut self, state: &CallbackState) -> Result<()> {
        if !state.arrays.is_empty() {
            return Err(Error::Invalid(format!(
                "LrScheduler: unexpected arrays in the checkpoint's state: {:?}",
                state.arrays.keys().collect::<Vec<_>>()
            )));
        }
        self.schedule.load_state(&state.values)
    }
}

/// Saves a full checkpoint (see [`crate::io::save_checkpoint`]) after each epoch,
/// or only when `monitor` improves: parameters, optimizer state, random stream, and
/// `fit`'s epoch, data order, history and callback states, so that
/// `FitConfig::resume_from` continues the run bit for bit. The file is a safetensors
/// file whose parameters also load with [`crate::io::load_safetensors`]; it is written
/// to a temporary file, flushed and renamed, so a crash never leaves a half-written
/// checkpoint. The optimizer must support checkpoints ([`Optimizer::state`]; every
/// built-in one does), and so must every callback that keeps state.
#[derive(Clone, Debug)]
pub struct ModelCheckpoint {
    /// The checkpoint file written.
    pub path: PathBuf,
    /// The log that must improve for a save (direction from its name, as in
    /// [`EarlyStopping`]); `None` saves after every epoch.
    pub monitor: Option<String>,
    best: Option<f64>,
}

impl ModelCheckpoint {
    /// Saves after every epoch.
    pub fn every_epoch(path: impl Into<PathBuf>) -> ModelCheckpoint {
        ModelCheckpoint {
            path: path.into(),
            monitor: None,
            best: None,
        }
    }

    /// Saves only when `monitor` improves.
    pub fn best_only(path: impl Into<PathBuf>, monitor: &str) -> ModelCheckpoint {
        ModelCheckpoint {
            path: path.into(),
            monitor: Some(monitor.into()),
            best: None,
        }
    }
}

impl Callback for ModelCheckpoint {
    fn boxed_clone(&self) -> Option<Box<dyn Callback>> {
        Some(Box::new(self.clone()))
    }

    fn monitors(&self) -> Vec<String> {
        self.monitor.iter().cloned().collect()
    }

    fn on_epoch_end(&mut self, _epoch: usize, logs: &Scores, control: &mut Control<'_>) -> Result<()> {
        if let Some(m) = &self.monitor {
            let v = monitored(logs, m)?;
            let better = match self.best {
                None => true,
                Some(b) if higher_is_better(m) => v > b,
                Some(b) => v < b,
            };
            if !better {
                return Ok(());
            }
            self.best = Some(v);
        }
        control.save_checkpoint(self.path.clone());
        Ok(())
    }

    fn state(&self) -> CallbackState {
        CallbackState {
            values: self.best.map(|b| ("best".to_string(), b)).into_iter().collect(),
            arrays: BTreeMap::new(),
        }
    }

    fn load_state(&mut self, state: &CallbackState) -> Result<()> {
        let unexpected = state.values.keys().chain(state.arrays.keys()).any(|k| k != "best");
        if unexpected {
            return Err(Error::Invalid(format!(
                "ModelCheckpoint: unexpected state in the checkpoint: {state:?}"
            )));
        }
        self.best = state.values.get("best").copied();
        Ok(())
    }
}
