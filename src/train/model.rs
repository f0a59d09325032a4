//! Keras-style training: [`Sequential::compile`] gives a [`Model`] with `fit`,
//! `evaluate` and `predict`. A training step is the same single plan as a
//! hand-written loop (forward, backward, update) that also adds the batch's loss and
//! confusion counts to running sums on the device, so an epoch reads back only its
//! totals.

use std::io::IsTerminal;

use web_time::Instant;

use super::callbacks::{Callback, Control};
use super::history::{History, LrChange, Scores};
use super::layer_stats::layer_stats;
use super::loss::Loss;
use super::progress::Progress;
use super::resume;
use super::tally::Tally;
use crate::backend::wait::wait;
use crate::data::DataLoader;
use crate::metrics::{ConfusionMatrix, Metric};
use crate::nn::{loss, Autoencoder, Module, Sequential};
use crate::optim::Optimizer;
use crate::{Device, Error, Result, Tensor};

/// A penalty added to the loss: `λ Σ|w|` or `λ Σw²`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Penalty {
    /// `λ Σ|w|` with this λ (see [`crate::nn::loss::l1_penalty`]): sparse weights.
    L1(f32),
    /// `λ Σw²` with this λ (see [`crate::nn::loss::l2_penalty`]): small weights.
    L2(f32),
}

/// Gradient clipping applied before every update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clip {
    /// Scale all gradients so their global L2 norm is at most this.
    Norm(f32),
    /// Clamp every gradient element to ±this.
    Value(f32),
}

/// Settings of [`Model::fit`].
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
    /// Seed of the shuffling (default: drawn from the global seed).
    pub seed: Option<u64>,
    /// Called after every epoch, in order (early stopping, schedules, checkpoints).
    pub callbacks: Vec<Box<dyn Callback>>,
    /// Show a progress bar (only ever on a terminal).
    pub verbose: bool,
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

    /// Whether to show progress.
    pub fn verbose(mut self, verbose: bool) -> FitConfig {
        self.verbose = verbose;
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

/// A network with its optimizer, loss and metrics: [`Model::new`] for any
/// [`Module`], [`Sequential::compile`] as Keras writes it.
pub struct Model<M = Sequential> {
    /// The network being trained.
    pub net: M,
    /// The optimizer updating `net`'s parameters.
    pub optimizer: Box<dyn Optimizer>,
    loss: Loss,
    metrics: Vec<Metric>,
    penalties: Vec<(Penalty, Vec<Tensor>)>,
    clip: Option<Clip>,
    device: Device,
}

impl Sequential {
    /// Pairs the network with an optimizer (built on `self.parameters()`), a loss and
    /// the metrics to log: [`Model::new`], as Keras' `model.compile` reads.
    pub fn compile(self, optimizer: impl Optimizer + 'static, loss: Loss, metrics: &[Metric]) -> Result<Model> {
        Model::new(self, optimizer, loss, metrics)
    }
}

impl Autoencoder {
    /// A model that trains this autoencoder (through a shared clone) with the input as
    /// the target: `model.fit(&x, &x, config)`. Parameters keep their names
    /// (`encoder.*`, `decoder.*`).
    pub fn compile(&self, optimizer: impl Optimizer + 'static, loss: Loss) -> Result<Model<Autoencoder>> {
        Model::new(self.clone(), optimizer, loss, &[])
    }
}

impl<M: Module> Model<M> {
    /// Pairs any network with an optimizer (built on `net.parameters()`), a loss and
    /// the metrics to log; parameter names stay the network's own. Errors when the
    /// network has no parameters or a metric cannot be computed for this loss
    /// (classification metrics need a cross-entropy loss; ROC-AUC a binary one).
    pub fn new(net: M, optimizer: impl Optimizer + 'static, loss: Loss, metrics: &[Metric]) -> Result<Model<M>> {
        let Some(first) = net.parameters().first().cloned() else {
            return Err(Error::Invalid("compile: the network has no parameters to train".into()));
        };
        for m in metrics {
            let ok = match m {
                Metric::Loss => true,
                Metric::RocAuc => loss.binary(),
                m if m.is_regression() => loss == Loss::Mse,
                _ => loss != Loss::Mse,
            };
            if !ok {
                return Err(Error::Invalid(format!(
                    "compile: metric '{}' is not computed for {loss:?} (it needs {})",
                    m.name(),
                    if *m == Metric::RocAuc {
                        "a binary cross-entropy loss"
                    } else if m.is_regression() {
                        "a regression loss (Loss::Mse)"
                    } else {
                        "a classification loss"
                    }
                )));
            }
        }
        Ok(Model {
            net,
            optimizer: Box::new(optimizer),
            loss,
            metrics: metrics.iter().copied().filter(|m| *m != Metric::Loss).collect(),
            penalties: Vec::new(),
            clip: None,
            device: first.device().clone(),
        })
    }

    /// Adds `penalty` over every weight matrix (parameters named `weight`, not biases).
    pub fn penalty(self, penalty: Penalty) -> Model<M> {
        let names: Vec<String> = self
            .net
            .named_parameters()
            .into_iter()
            .filter(|(n, t)| n.ends_with("weight") && t.shape().len() >= 2)
            .map(|(n, _)| n)
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.penalty_on(penalty, &names)
            .expect("weight names come from the model")
    }

    /// Adds `penalty` over the named parameters (names as in `named_parameters`).
    pub fn penalty_on(mut self, penalty: Penalty, names: &[&str]) -> Result<Model<M>> {
        let all = self.net.named_parameters();
        let mut chosen = Vec::new();
        for name in names {
            match all.iter().find(|(n, _)| n == name) {
                Some((_, t)) => chosen.push(t.clone()),
                None => {
                    let known: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(Error::Invalid(format!(
                        "penalty_on: no parameter named '{name}'; the model has {}",
                        known.join(", ")
                    )));
                }
            }
        }
        if !chosen.is_empty() {
            self.penalties.push((penalty, chosen));
        }
        Ok(self)
    }

    /// Clips gradients before every update.
    pub fn clip_gradients(mut self, clip: Clip) -> Model<M> {
        self.clip = Some(clip);
        self
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Checks data against the model before anything runs, so that a misfit is an
    /// error naming the layer (or the loss) instead of a panic, and bad values are an
    /// error instead of a NaN model: shapes and types through [`Module::output_spec`],
    /// every value finite, class labels below the number of classes.
    fn check_data(&self, op: &'static str, data: &DataLoader, with_targets: bool) -> Result<()> {
        if let Some((what, row, column, value)) = data.first_non_finite() {
            return Err(Error::NonFiniteData {
                op: op.into(),
                what,
                row,
                column,
                value,
            });
        }
        let rows = data.batch_size();
        let shape_error = |reason: String| Error::DataShape { op: op.into(), reason };
        let Some(out) = self.net.output_spec(&data.x_spec(rows)).map_err(shape_error)? else {
            return Ok(()); // a module that does not say: misuse shows when the graph is built
        };
        if !with_targets {
            return Ok(());
        }
        self.loss
            .check(&out, &data.y_spec(rows))
            .map_err(|why| shape_error(format!("the {:?} loss: {why}", self.loss)))?;
        if self.loss == Loss::CrossEntropy {
            if let Some((index, label)) = data.first_label_out_of_range(out.shape[1]) {
                return Err(Error::LabelOutOfRange {
                    op,
                    label,
                    index,
                    classes: out.shape[1],
                });
            }
        }
        Ok(())
    }

    /// Loss and metrics on `(x, y)` in evaluation behaviour (no dropout, whatever the
    /// model's mode: [`crate::nn::inference`]), in chunks of 1024 rows; the running
    /// sums stay on the device until the end.
    pub fn evaluate(&self, x: &Tensor, y: &Tensor) -> Result<Scores> {
        wait(self.evaluate_async(x, y), "Model::evaluate", "Model::evaluate_async")
    }

    /// Async form of [`Model::evaluate`]: the readback of the totals is awaited, as
    /// a browser (wasm32) needs for a GPU model.
    pub async fn evaluate_async(&self, x: &Tensor, y: &Tensor) -> Result<Scores> {
        let mut logs = Scores::new();
        self.evaluate_into(x, y, "", &mut logs).await?;
        Ok(logs)
    }

    async fn evaluate_into(
        &self,
        x: &Tensor,
        y: &Tensor,
        prefix: &str,
        logs: &mut Scores,
    ) -> Result<Option<ConfusionMatrix>> {
        let mut loader = DataLoader::new(x, y, 1024)?;
        self.check_data("evaluate", &loader, true)?;
        self.evaluate_loader(&mut loader, prefix, logs).await
    }

    async fn evaluate_loader(
        &self,
        loader: &mut DataLoader,
        prefix: &str,
        logs: &mut Scores,
    ) -> Result<Option<ConfusionMatrix>> {
        let want_scores = self.metrics.contains(&Metric::RocAuc);
        let mut tally = Tally::new(&self.device, &self.metrics)?;
        let device = self.device.clone();
        for batch in loader.epoch(&device) {
            let (xb, yb) = batch?;
            let out = crate::nn::inference(|| self.net.forward(&xb));
            let data_loss = self.loss.of(&out, &yb);
            let (loss_sum, counts) = tally.add(self.loss, &out, &yb, &data_loss);
            let mut roots = vec![loss_sum.clone()];
            roots.extend(counts.iter().cloned());
            if want_scores {
                let score = if self.loss == Loss::BinaryCrossEntropyWithLogits {
                    out.sigmoid()
                } else {
                    out.clone()
                };
                roots.push(score.clone());
                tally.keep_scores(score, &yb).await?;
            }
            crate::graph::realize_all(&roots, &[])?;
            tally.commit(xb.shape()[0], loss_sum, counts);
        }
        tally.read(self.loss, &self.metrics, prefix, logs, None).await
    }

    /// The confusion matrix of the model's predictions on `(x, y)` (row = true class,
    /// column = predicted), counted on the device. Errors for a regression loss.
    pub fn confusion_matrix(&self, x: &Tensor, y: &Tensor) -> Result<ConfusionMatrix> {
        let mut logs = Scores::new();
        let evaluated = wait(
            self.evaluate_into(x, y, "", &mut logs),
            "Model::confusion_matrix",
            "Model::evaluate_async",
        )?;
        evaluated.ok_or_else(|| {
            Error::Invalid(format!(
                "confusion_matrix: {:?} is not a classification loss",
                self.loss
            ))
        })
    }

    /// Outputs for `x` in evaluation behaviour (no dropout; the model's mode is left
    /// alone), rows in chunks of 1024.
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        let mut loader = DataLoader::inputs(x, 1024)?;
        self.check_data("predict", &loader, false)?;
        let rows = x.shape()[0];
        if rows <= 1024 {
            let xb = loader.batch(&(0..rows).collect::<Vec<_>>(), &self.device)?.0;
            let out = crate::nn::inference(|| self.net.forward(&xb));
            out.realize()?;
            return Ok(out);
        }
        let (mut values, mut shape) = (Vec::new(), Vec::new());
        for batch in loader.epoch(&self.device.clone()) {
            let xb = batch?.0;
            let out = crate::nn::inference(|| self.net.forward(&xb));
            shape = out.shape().to_vec();
            values.extend(out.to_vec()?);
        }
        shape[0] = rows;
        Tensor::from_vec(values, &shape, &self.device)
    }

    /// Trains for `config.epochs` epochs (fewer if a callback stops it) and returns the
    /// per-epoch loss and metrics, on the training rows and the validation rows.
    pub fn fit(&mut self, x: &Tensor, y: &Tensor, config: FitConfig) -> Result<History> {
        wait(self.fit_async(x, y, config), "Model::fit", "Model::fit_async")
    }

    /// Async form of [`Model::fit`], the one a browser (wasm32) needs for a GPU
    /// model: each epoch's totals are read back with an await, so the page's event
    /// loop runs (and redraws) between epochs. Callbacks still run synchronously; a
    /// callback that reads GPU values (e.g. `restore_best_weights`) is native-only.
    pub async fn fit_async(&mut self, x: &Tensor, y: &Tensor, mut config: FitConfig) -> Result<History> {
        if config.epochs == 0 {
            return Err(Error::Invalid("fit: epochs must be at least 1".into()));
        }
        let all = DataLoader::new(x, y, config.batch_size)?;
        self.check_data("fit", &all, true)?;
        let n = all.samples();
        let (train_rows, mut val) = match config.validation_data.take() {
            Some((vx, vy)) => {
                let val = DataLoader::new(&vx, &vy, 1024)?;
                self.check_data("fit (validation_data)", &val, true)?;
                ((0..n).collect::<Vec<_>>(), Some(val))
            }
            None if config.validation_split > 0.0 => {
                let split = config.validation_split;
                let n_val = (n as f64 * split as f64).round() as usize;
                if !(0.0..1.0).contains(&split) || n_val == 0 || n_val >= n {
                    return Err(Error::Invalid(format!(
                        "fit: validation_split {split} of {n} rows leaves no training or no validation rows"
                    )));
                }
                let val_rows: Vec<usize> = ((n - n_val)..n).collect();
                ((0..n - n_val).collect(), Some(all.subset(&val_rows, 1024)?))
            }
            None => ((0..n).collect(), None),
        };
        let mut train = if train_rows.len() == n {
            all
        } else {
            all.subset(&train_rows, config.batch_size)?
        };
        let comm = self.optimizer.collective();
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
        let info = self.device.info();
        let mut history = History::new(vec![
            ("seed".into(), crate::rng::seed().to_string()),
            ("device".into(), format!("{} ({})", info.name, info.backend)),
            ("driver".into(), info.driver.clone()),
            ("wgnn".into(), env!("CARGO_PKG_VERSION").into()),
            ("loss".into(), format!("{:?}", self.loss)),
            ("batch size".into(), train.batch_size().to_string()),
            ("ranks".into(), ranks.to_string()),
            ("training rows".into(), train.samples().to_string()),
            (
                "validation rows".into(),
                val.as_ref().map_or(0, |v| v.samples()).to_string(),
            ),
        ]);
        let show = config.verbose && rank == 0 && std::io::stdout().is_terminal();
        let start = match &config.resume_from {
            Some(path) => resume::restore(self, path, &mut train, &mut config.callbacks, &mut history)?,
            None => 0,
        };
        if start == 0 {
            let mut control = Control::new(&self.net, self.optimizer.as_mut());
            for cb in config.callbacks.iter_mut() {
                cb.on_train_begin(&mut control)?;
            }
        }
        for epoch in start..config.epochs {
            let started = Instant::now();
            let lr = self.optimizer.lr();
            let mut logs = Scores::new();
            let cm = self
                .train_epoch(
                    &mut train,
                    (epoch, config.epochs),
                    show,
                    &mut config.callbacks,
                    &mut logs,
                )
                .await?;
            history.confusion = cm;
            if let Some(v) = val.as_mut() {
                history.confusion = self.evaluate_loader(v, "val_", &mut logs).await?;
            }
            let seconds = started.elapsed().as_secs_f64();
            logs.insert("samples_per_sec".into(), train.samples() as f64 / seconds.max(1e-9));
            let mut control = Control::new(&self.net, self.optimizer.as_mut());
            for cb in config.callbacks.iter_mut() {
                cb.on_epoch_end(epoch, &logs, &mut control)?;
            }
            let (stop, notes) = (control.stop.take(), std::mem::take(&mut control.notes));
            let checkpoints = std::mem::take(&mut control.checkpoints);
            let new_lr = self.optimizer.lr();
            if show {
                println!("epoch {}/{}: {}", epoch + 1, config.epochs, format_logs(&logs));
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
            for path in checkpoints.iter().filter(|_| rank == 0) {
                resume::save(self, path, epoch + 1, &train, &config.callbacks, &history)?;
            }
            if let Some(reason) = stop {
                history.stop_reason = Some(reason);
                break;
            }
        }
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
            let rows: Vec<usize> = (0..train.samples().min(256)).collect();
            let (xs, ys) = train.batch(&rows, &self.device)?;
            self.net.eval();
            if let Some(layers) = self.net.as_sequential() {
                history.layers = layer_stats(layers, self.loss, &xs, &ys).await?;
            }
        }
        self.net.eval();
        Ok(history)
    }

    async fn train_epoch(
        &mut self,
        train: &mut DataLoader,
        (epoch, epochs): (usize, usize),
        show: bool,
        callbacks: &mut [Box<dyn Callback>],
        logs: &mut Scores,
    ) -> Result<Option<ConfusionMatrix>> {
        self.net.train();
        let bar = Progress::new(show, train.len(), epoch, epochs);
        let mut tally = Tally::new(&self.device, &self.metrics)?;
        let started = Instant::now();
        let mut last_shown = Instant::now();
        let device = self.device.clone();
        for batch in train.epoch(&device) {
            let (xb, yb) = batch?;
            let out = self.net.forward(&xb);
            let data_loss = self.loss.of(&out, &yb);
            let mut objective = data_loss.clone();
            for (penalty, params) in &self.penalties {
                objective = objective
                    + match penalty {
                        Penalty::L1(l) => loss::l1_penalty(params, *l),
                        Penalty::L2(l) => loss::l2_penalty(params, *l),
                    };
            }
            let (loss_sum, counts) = tally.add(self.loss, &out, &yb, &data_loss);
            let mut grads = objective.backward()?;
            grads = match self.clip {
                Some(Clip::Norm(c)) => grads.clip_norm(c),
                Some(Clip::Value(c)) => grads.clip_value(c),
                None => grads,
            };
            let mut outputs = vec![loss_sum.clone()];
            outputs.extend(counts.iter().cloned());
            self.optimizer.step(&grads.with_outputs(&outputs))?;
            tally.commit(xb.shape()[0], loss_sum, counts);
            if !callbacks.is_empty() {
                let mut control = Control::new(&self.net, self.optimizer.as_mut());
                for cb in callbacks.iter_mut() {
                    cb.on_batch_end(&mut control)?;
                }
            }
            bar.inc(1);
            // Reading the running loss is a download: only for a visible bar, 4× a second.
            if show && last_shown.elapsed().as_millis() > 250 {
                last_shown = Instant::now();
                let loss = tally.mean_loss()?;
                let rate = tally.rows() as f64 / started.elapsed().as_secs_f64();
                bar.set_message(format!("loss {loss:.4}, {rate:.0} samples/s"));
            }
        }
        bar.finish_and_clear();
        let comm = self.optimizer.collective();
        tally.read(self.loss, &self.metrics, "", logs, comm.as_deref()).await
    }
}

/// `loss 0.3121, accuracy 0.9012, val_loss …` in a stable order.
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
