//! `Model::fit`, in named steps: prepare the data (checks, validation split, sample
//! weights, shuffling, sharding, the names callbacks monitor), begin (or resume),
//! run epochs, end. A training step is the same single plan as a hand-written loop
//! (forward, backward, update) that also adds the batch's loss and confusion counts
//! to running sums on the device, so an epoch reads back only its totals. `fit`
//! leaves the model in the train/eval mode it found it in, also when it fails.

use std::io::IsTerminal;

use web_time::Instant;

use super::callbacks::{Callback, Control};
use super::config::{FitConfig, Verbosity};
use super::history::{History, LrChange, Scores};
use super::layer_stats::layer_stats;
use super::model::{Clip, Model, Penalty};
use super::progress::{epoch_line, Progress};
use super::resume;
use super::tally::Tally;
use crate::backend::wait::wait;
use crate::data::{DataLoader, Dataset, Target};
use crate::metrics::{ConfusionMatrix, Metric};
use crate::nn::{loss, Module};
use crate::{Error, Result, Tensor};

/// A run of `fit` once its data is prepared.
struct Run {
    train: DataLoader,
    val: Option<DataLoader>,
    rank: usize,
    ranks: usize,
    verbosity: Verbosity,
}

impl<M: Module> Model<M> {
    /// Trains for `config.epochs` epochs (fewer if a callback stops it) and returns the
    /// per-epoch loss and metrics, on the training rows and the validation rows.
    /// Tensors on the model's device are batched there (`index_select`), never read
    /// back; others are read to the host once and batched on a background thread.
    pub fn fit(&mut self, x: &Tensor, y: &Tensor, config: FitConfig) -> Result<History> {
        wait(self.fit_async(x, y, config), "Model::fit", "Model::fit_async")
    }

    /// [`Model::fit`] on a [`Dataset`] in host memory (class labels, or f32 targets
    /// `[n, 1]` for a regression): batches are copied out on a background thread
    /// while the device runs the step before.
    pub fn fit_dataset<T: Target>(&mut self, data: &Dataset<T>, config: FitConfig) -> Result<History> {
        let all = DataLoader::from_dataset(data, config.batch_size)?;
        wait(self.fit_loader(all, config), "Model::fit_dataset", "Model::fit_async")
    }

    /// Async form of [`Model::fit`], the one a browser (wasm32) needs for a GPU
    /// model: each epoch's totals are read back with an await, so the page's event
    /// loop runs (and redraws) between epochs. Callbacks still run synchronously; a
    /// callback that reads GPU values (e.g. `restore_best_weights`) is native-only.
    pub async fn fit_async(&mut self, x: &Tensor, y: &Tensor, config: FitConfig) -> Result<History> {
        let all = self.loader(x, y, config.batch_size)?;
        self.fit_loader(all, config).await
    }

    /// Trains on `all`, then puts every module's train/eval flag back as it was.
    async fn fit_loader(&mut self, all: DataLoader, config: FitConfig) -> Result<History> {
        let mut modes = Vec::new();
        self.net.training_modes(&mut modes);
        let result = self.fit_steps(all, config).await;
        self.net.restore_training_modes(&mut modes.into_iter());
        result
    }

    async fn fit_steps(&mut self, all: DataLoader, mut config: FitConfig) -> Result<History> {
        let mut run = self.prepare(all, &mut config).await?;
        let mut history = self.history_header(&run);
        let start = self.begin(&mut run, &mut config, &mut history)?;
        for epoch in start..config.epochs {
            if self.epoch(epoch, &mut run, &mut config, &mut history).await? {
                break;
            }
        }
        self.end(&mut run, &mut config, &mut history).await?;
        Ok(history)
    }

    /// Checks the data and the settings, splits off the validation rows, attaches
    /// the sample weights, and shuffles and shards the training rows.
    async fn prepare(&mut self, all: DataLoader, config: &mut FitConfig) -> Result<Run> {
        if config.epochs == 0 {
            return Err(Error::InvalidSetting {
                setting: "epochs",
                message: "fit: epochs must be at least 1".into(),
            });
        }
        self.check_data("fit", &all, true).await?;
        let all = match &config.sample_weight {
            Some(w) => all.with_sample_weight(w)?,
            None => all,
        };
        let (train, val) = self.split(all, config).await?;
        self.check_monitors(&config.callbacks, val.is_some())?;
        let comm = self.optimizer.collective();
        let mut train = train;
        if config.shuffle {
            let mut seed = config.seed.unwrap_or_else(crate::rng::next_seed);
            if let Some(c) = &comm {
                // Every rank must draw the same row order.
                let mut bytes = seed.to_le_bytes().to_vec();
                c.broadcast_bytes(&mut bytes, 0)?;
                seed = u64::from_le_bytes(bytes[..].try_into().map_err(|_| {
                    Error::Distributed(format!("fit: rank 0 sent a shuffle seed of {} bytes", bytes.len()))
                })?);
            }
            train = train.shuffle(seed);
        }
        let (rank, ranks) = comm.as_ref().map_or((0, 1), |c| (c.rank(), c.size()));
        if ranks > 1 {
            train = train.shard(rank, ranks)?;
        }
        let terminal = std::io::stdout().is_terminal();
        let verbosity = match rank {
            0 => config.verbosity.resolve(config.verbose, terminal),
            _ => Verbosity::Silent,
        };
        Ok(Run {
            train,
            val,
            rank,
            ranks,
            verbosity,
        })
    }

    /// The training rows and the validation rows: `validation_data`, or the last
    /// `validation_split` of the rows (before shuffling, as Keras takes them).
    async fn split(&self, all: DataLoader, config: &mut FitConfig) -> Result<(DataLoader, Option<DataLoader>)> {
        let n = all.samples();
        if let Some((vx, vy)) = config.validation_data.take() {
            let val = self.loader(&vx, &vy, 1024)?;
            self.check_data("fit (validation_data)", &val, true).await?;
            return Ok((all, Some(val)));
        }
        if config.validation_split <= 0.0 {
            return Ok((all, None));
        }
        let split = config.validation_split;
        let n_val = (n as f64 * split as f64).round() as usize;
        if !(0.0..1.0).contains(&split) || n_val == 0 || n_val >= n {
            return Err(Error::InvalidSetting {
                setting: "validation_split",
                message: format!("fit: validation_split {split} of {n} rows leaves no training or no validation rows"),
            });
        }
        let val_rows: Vec<usize> = ((n - n_val)..n).collect();
        let train_rows: Vec<usize> = (0..n - n_val).collect();
        let val = all.subset(&val_rows, 1024)?;
        Ok((all.subset(&train_rows, config.batch_size)?, Some(val)))
    }

    /// The names `fit` logs each epoch: `loss`, the metrics, their `val_` twins with
    /// validation data, and `samples_per_sec`.
    fn logged_names(&self, validation: bool) -> Vec<String> {
        // ROC-AUC needs the scores of a whole pass: only the validation pass keeps them.
        let train = self.metrics.iter().filter(|m| **m != Metric::RocAuc).map(Metric::name);
        let mut names: Vec<String> = std::iter::once("loss".to_string()).chain(train).collect();
        if validation {
            names.push("val_loss".into());
            names.extend(self.metrics.iter().map(|m| format!("val_{}", m.name())));
        }
        names.push("samples_per_sec".into());
        names
    }

    /// `Err` listing the names `fit` logs when a callback monitors another one.
    fn check_monitors(&self, callbacks: &[Box<dyn Callback>], validation: bool) -> Result<()> {
        let names = self.logged_names(validation);
        for (i, cb) in callbacks.iter().enumerate() {
            for monitor in cb.monitors() {
                if !names.contains(&monitor) {
                    let hint = match monitor.starts_with("val_") && !validation {
                        true => " (there is no validation data: give validation_split or validation_data)",
                        false => "",
                    };
                    return Err(Error::UnknownName {
                        what: "monitor".into(),
                        name: monitor.to_string(),
                        valid: names.iter().map(|n| n.to_string()).collect(),
                        context: format!(" (fit: callback {i} monitors it, and fit does not log it{hint})"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The history's header: what ran, where, on how many rows.
    fn history_header(&self, run: &Run) -> History {
        let info = self.device.info();
        History::new(vec![
            ("seed".into(), crate::rng::seed().to_string()),
            ("device".into(), format!("{} ({})", info.name, info.backend)),
            ("driver".into(), info.driver.clone()),
            ("wgnn".into(), env!("CARGO_PKG_VERSION").into()),
            ("loss".into(), format!("{:?}", self.loss)),
            ("batch size".into(), run.train.batch_size().to_string()),
            ("ranks".into(), run.ranks.to_string()),
            ("training rows".into(), run.train.samples().to_string()),
            (
                "validation rows".into(),
                run.val.as_ref().map_or(0, |v| v.samples()).to_string(),
            ),
        ])
    }

    /// Resumes from `config.resume_from`, or starts the callbacks: the first epoch.
    fn begin(&mut self, run: &mut Run, config: &mut FitConfig, history: &mut History) -> Result<usize> {
        if let Some(path) = &config.resume_from {
            let start = resume::restore(self, path, &mut run.train, &mut config.callbacks, history)?;
            if start > 0 {
                return Ok(start);
            }
        }
        let mut control = Control::new(&self.net, self.optimizer.as_mut());
        for cb in config.callbacks.iter_mut() {
            cb.on_train_begin(&mut control)?;
        }
        Ok(0)
    }

    /// One epoch: training, validation, callbacks, the line printed, the history,
    /// checkpoints. Returns whether a callback stopped training.
    async fn epoch(
        &mut self,
        epoch: usize,
        run: &mut Run,
        config: &mut FitConfig,
        history: &mut History,
    ) -> Result<bool> {
        let started = Instant::now();
        let lr = self.optimizer.lr();
        let mut logs = Scores::new();
        let position = (epoch, config.epochs);
        history.confusion = (self.train_epoch(
            &mut run.train,
            position,
            run.verbosity,
            &mut config.callbacks,
            &mut logs,
        ))
        .await?;
        if let Some(v) = run.val.as_mut() {
            history.confusion = self.evaluate_loader(v, "val_", &mut logs).await?;
        }
        let seconds = started.elapsed().as_secs_f64();
        logs.insert("samples_per_sec".into(), run.train.samples() as f64 / seconds.max(1e-9));
        let mut control = Control::new(&self.net, self.optimizer.as_mut());
        for cb in config.callbacks.iter_mut() {
            cb.on_epoch_end(epoch, &logs, &mut control)?;
        }
        let (stop, notes) = (control.stop.take(), std::mem::take(&mut control.notes));
        let checkpoints = std::mem::take(&mut control.checkpoints);
        let new_lr = self.optimizer.lr();
        if run.verbosity != Verbosity::Silent {
            println!("{}", epoch_line(epoch, config.epochs, seconds, &logs));
        }
        history.push(&logs, lr);
        for reason in notes {
            history.lr_changes.push(LrChange {
                epoch: epoch + 1,
                from: lr,
                to: new_lr,
                reason,
            });
        }
        for path in checkpoints.iter().filter(|_| run.rank == 0) {
            resume::save(self, path, epoch + 1, &run.train, &config.callbacks, history)?;
        }
        if let Some(reason) = &stop {
            history.stop_reason = Some(reason.clone());
        }
        Ok(stop.is_some())
    }

    /// Ends the callbacks, notes why training ended, and takes per-layer statistics.
    async fn end(&mut self, run: &mut Run, config: &mut FitConfig, history: &mut History) -> Result<()> {
        let mut control = Control::new(&self.net, self.optimizer.as_mut());
        for cb in config.callbacks.iter_mut() {
            cb.on_train_end(&mut control)?;
        }
        if !control.notes.is_empty() {
            let ended = history
                .stop_reason
                .take()
                .unwrap_or_else(|| format!("ran all {} epochs", history.epochs()));
            history.stop_reason = Some(format!("{ended}; {}", control.notes.join("; ")));
        }
        // Per-layer statistics need layers applied in turn: a `Sequential`.
        if config.layer_stats && self.net.as_sequential().is_some() {
            let rows: Vec<usize> = (0..run.train.samples().min(256)).collect();
            let (xs, ys) = run.train.batch(&rows, &self.device)?;
            self.net.eval();
            if let Some(layers) = self.net.as_sequential() {
                history.layers = layer_stats(layers, &self.loss, &xs, &ys).await?;
            }
        }
        Ok(())
    }

    /// One pass over the training rows: a step per batch, the callbacks' batch ends,
    /// the progress bar.
    async fn train_epoch(
        &mut self,
        train: &mut DataLoader,
        (epoch, epochs): (usize, usize),
        verbosity: Verbosity,
        callbacks: &mut [Box<dyn Callback>],
        logs: &mut Scores,
    ) -> Result<Option<ConfusionMatrix>> {
        self.net.train();
        let show_bar = verbosity == Verbosity::ProgressBar;
        let bar = Progress::new(show_bar, train.len(), epoch, epochs);
        let mut tally = Tally::new(&self.device, &self.metrics)?;
        let started = Instant::now();
        let mut last_shown = Instant::now();
        let device = self.device.clone();
        for batch in train.batches(&device) {
            let batch = batch?;
            self.step(&batch, &mut tally)?;
            if !callbacks.is_empty() {
                let mut control = Control::new(&self.net, self.optimizer.as_mut());
                for cb in callbacks.iter_mut() {
                    cb.on_batch_end(&mut control)?;
                }
            }
            bar.inc(1);
            // Reading the running loss is a download: only for a visible bar, 4× a second.
            if show_bar && last_shown.elapsed().as_millis() > 250 {
                last_shown = Instant::now();
                let loss = tally.mean_loss()?;
                let rate = tally.rows() as f64 / started.elapsed().as_secs_f64();
                bar.set_message(format!("loss {loss:.4}, {rate:.0} samples/s"));
            }
        }
        bar.finish_and_clear();
        let comm = self.optimizer.collective();
        tally.read(&self.metrics, "", logs, comm.as_deref()).await
    }

    /// One training step on `batch`: forward, loss (with penalties), backward,
    /// clipping, the update, and the running sums, in one plan.
    fn step(&mut self, batch: &crate::data::Batch, tally: &mut Tally) -> Result<()> {
        let out = self.forward(&batch.x);
        let data_loss = match &self.teacher {
            None => self.loss.of(&out, &batch.y, batch.w.as_ref())?,
            Some(_) if batch.w.is_some() => {
                return Err(Error::Invalid(
                    "fit: sample weights are not supported with distillation (distill_from)".into(),
                ));
            }
            Some(t) => {
                let _amp = self.scaler.is_some().then(|| crate::amp::autocast(&self.device));
                let soft = crate::nn::inference(|| t.net.forward(&batch.x)).detach();
                loss::distillation(&out, &soft, &batch.y, t.temperature, t.alpha)?
            }
        };
        let mut objective = data_loss.clone();
        for (penalty, params) in &self.penalties {
            objective = objective
                + match penalty {
                    Penalty::L1(l) => loss::l1_penalty(params, *l),
                    Penalty::L2(l) => loss::l2_penalty(params, *l),
                };
        }
        let (loss_sum, counts) = tally.add(&self.loss, &out, &batch.y, &data_loss);
        let mut grads = match &self.scaler {
            Some(scaler) => scaler.unscale(&scaler.scale(&objective).backward()?),
            None => objective.backward()?,
        };
        grads = match self.clip {
            Some(Clip::Norm(c)) => grads.clip_norm(c),
            Some(Clip::Value(c)) => grads.clip_value(c),
            None => grads,
        };
        let mut outputs = vec![loss_sum.clone()];
        outputs.extend(counts.iter().cloned());
        let grads = grads.with_outputs(&outputs);
        match &mut self.scaler {
            Some(scaler) => {
                scaler.step_unscaled(&mut *self.optimizer, &grads)?;
            }
            None => self.optimizer.step(&grads)?,
        }
        tally.commit(batch.x.shape()[0], loss_sum, counts);
        Ok(())
    }
}
