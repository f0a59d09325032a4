//! Keras-style training: [`Sequential::compile`] gives a [`Model`] with `fit`
//! (in fit.rs), `evaluate` and `predict`. Evaluation adds each batch's loss and
//! confusion counts to running sums on the device, so a pass reads back only its
//! totals.

use super::history::Scores;
use super::loss::Loss;
use super::tally::Tally;
use crate::backend::wait::wait;
use crate::data::DataLoader;
use crate::metrics::{ConfusionMatrix, Metric};
use crate::nn::{Autoencoder, Module, Sequential};
use crate::optim::{GradScaler, GradScalerConfig, Optimizer};
use crate::{DType, Device, Error, Result, Tensor};

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

/// A network with its optimizer, loss and metrics: [`Model::new`] for any
/// [`Module`], [`Sequential::compile`] as Keras writes it.
pub struct Model<M = Sequential> {
    /// The network being trained.
    pub net: M,
    /// The optimizer updating `net`'s parameters.
    pub optimizer: Box<dyn Optimizer>,
    pub(crate) loss: Loss,
    pub(crate) metrics: Vec<Metric>,
    pub(crate) penalties: Vec<(Penalty, Vec<Tensor>)>,
    pub(crate) clip: Option<Clip>,
    pub(crate) device: Device,
    /// Mixed precision ([`Model::mixed_precision`]): the loss scaler.
    pub(crate) scaler: Option<GradScaler>,
    /// Knowledge distillation ([`Model::distill_from`]): the teacher.
    pub(crate) teacher: Option<Teacher>,
}

/// A teacher for [`Model::distill_from`] and its loss's settings.
pub(crate) struct Teacher {
    pub(crate) net: Box<dyn Module>,
    pub(crate) temperature: f32,
    pub(crate) alpha: f32,
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
            let ok = match (m, &loss) {
                (Metric::Loss, _) => true,
                (Metric::RocAuc, loss) => loss.binary(),
                (_, Loss::Custom(_)) => true, // checked against the targets by `fit`
                (m, loss) if m.is_regression() => *loss == Loss::Mse,
                (_, loss) => *loss != Loss::Mse,
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
            scaler: None,
            teacher: None,
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
                    return Err(Error::UnknownName {
                        what: "parameter".into(),
                        name: name.to_string(),
                        valid: all.iter().map(|(n, _)| n.clone()).collect(),
                        context: " (penalty_on)".into(),
                    });
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

    /// Trains and evaluates in mixed precision (Keras' `mixed_float16` policy, PyTorch's
    /// AMP recipe): forward passes under [`crate::amp::autocast`] (f16 inputs to every
    /// GEMM, f32 accumulation; f32 where the device has no f16), the loss scaled by a
    /// [`GradScaler`] with `config`, the gradients unscaled before clipping, and a step
    /// whose gradients overflow skipped (the scaler's state is not checkpointed: a
    /// resumed run starts from `config.init_scale`). Errors for an invalid `config`.
    pub fn mixed_precision(mut self, config: GradScalerConfig) -> Result<Model<M>> {
        self.scaler = Some(GradScaler::new(config)?);
        Ok(self)
    }

    /// Trains by knowledge distillation from `teacher` (Hinton et al.): each training
    /// batch's loss is [`crate::nn::loss::distillation`] of the network's logits, the
    /// teacher's (computed on the same batch, in inference mode, no gradient) at
    /// `temperature`, and the labels with weight `1 − alpha` — the epoch loss `fit`
    /// logs is that loss; validation and `evaluate` score the plain cross-entropy.
    /// `Err` unless the loss is [`Loss::CrossEntropy`], the teacher's parameters live
    /// on the model's device, `temperature` is positive and finite and `alpha` in
    /// `[0, 1]`; a teacher with another number of outputs fails the first step, naming
    /// both shapes.
    pub fn distill_from(mut self, teacher: impl Module + 'static, temperature: f32, alpha: f32) -> Result<Model<M>> {
        if self.loss != Loss::CrossEntropy {
            return Err(Error::Invalid(format!(
                "distill_from: distillation needs Loss::CrossEntropy (logits and labels), the model has {:?}",
                self.loss
            )));
        }
        if let Some(p) = teacher.parameters().iter().find(|p| !p.device().same(&self.device)) {
            return Err(Error::Invalid(format!(
                "distill_from: the teacher's parameters are on {}, the student's on {}: move it with `to`",
                p.device().info(),
                self.device.info()
            )));
        }
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(Error::InvalidSetting {
                setting: "temperature",
                message: format!("distill_from: temperature {temperature} must be positive and finite"),
            });
        }
        if !(0.0..=1.0).contains(&alpha) {
            return Err(Error::InvalidSetting {
                setting: "alpha",
                message: format!("distill_from: alpha {alpha} must be in [0, 1]"),
            });
        }
        self.teacher = Some(Teacher {
            net: Box::new(teacher),
            temperature,
            alpha,
        });
        Ok(self)
    }

    /// The loss scaler of a mixed-precision model (its scale, its skipped steps).
    pub fn grad_scaler(&self) -> Option<&GradScaler> {
        self.scaler.as_ref()
    }

    /// `forward` of the network, under autocast when the model is mixed-precision.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let _amp = self.scaler.is_some().then(|| crate::amp::autocast(&self.device));
        self.net.forward(x)
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Checks data against the model before anything runs, so that a misfit is an
    /// error naming the layer (or the loss) instead of a panic, and bad values are an
    /// error instead of a NaN model: shapes and types through [`Module::output_spec`],
    /// every value finite, class labels below the number of classes, metrics that
    /// the targets can give.
    pub(crate) async fn check_data(&self, op: &'static str, data: &DataLoader, with_targets: bool) -> Result<()> {
        if let Some((what, row, column, value)) = data.first_non_finite().await? {
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
        let y = data.y_spec(rows);
        if with_targets {
            self.check_metrics_against(&y).map_err(shape_error)?;
        }
        let Some(out) = self.net.output_spec(&data.x_spec(rows)).map_err(shape_error)? else {
            return Ok(()); // a module that does not say: misuse shows when the graph is built
        };
        if !with_targets {
            return Ok(());
        }
        self.loss
            .check(&out, &y)
            .map_err(|why| shape_error(format!("the {:?} loss: {why}", self.loss)))?;
        if self.loss.softmax_classes() || (matches!(self.loss, Loss::Custom(_)) && out.shape.len() == 2) {
            if let Some((index, label)) = data.first_label_out_of_range(out.shape[1]).await? {
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

    /// For a custom loss, whether the metrics fit the targets: regression metrics
    /// need f32 values, classification metrics labels.
    fn check_metrics_against(&self, y: &crate::nn::TensorSpec) -> std::result::Result<(), String> {
        if !matches!(self.loss, Loss::Custom(_)) {
            return Ok(());
        }
        let labels = y.dtype == DType::U32;
        match self.metrics.iter().find(|m| m.is_regression() == labels) {
            Some(m) => Err(format!(
                "metric '{}' needs {} for a custom loss, the targets are {}",
                m.name(),
                if labels { "f32 targets" } else { "class labels" },
                if labels { "class labels" } else { "f32 values" }
            )),
            None => Ok(()),
        }
    }

    /// A loader over `(x, y)` in batches of `batch_size`: on the device when both
    /// live on the model's device (batches gathered there), else on the host.
    pub(crate) fn loader(&self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<DataLoader> {
        if x.device().same(&self.device) && y.device().same(&self.device) {
            DataLoader::on_device(x, y, batch_size)
        } else {
            DataLoader::new(x, y, batch_size)
        }
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
        let mut loader = self.loader(x, y, 1024)?;
        self.check_data("evaluate", &loader, true).await?;
        self.evaluate_loader(&mut loader, prefix, logs).await
    }

    pub(crate) async fn evaluate_loader(
        &self,
        loader: &mut DataLoader,
        prefix: &str,
        logs: &mut Scores,
    ) -> Result<Option<ConfusionMatrix>> {
        let want_scores = self.metrics.contains(&Metric::RocAuc);
        let mut tally = Tally::new(&self.device, &self.metrics)?;
        let device = self.device.clone();
        for batch in loader.batches(&device) {
            let batch = batch?;
            let out = crate::nn::inference(|| self.forward(&batch.x));
            let data_loss = self.loss.of(&out, &batch.y, batch.w.as_ref())?;
            let (loss_sum, counts) = tally.add(&self.loss, &out, &batch.y, &data_loss);
            let mut roots = vec![loss_sum.clone()];
            roots.extend(counts.iter().cloned());
            if want_scores {
                let score = if self.loss == Loss::BinaryCrossEntropyWithLogits {
                    out.sigmoid()
                } else {
                    out.clone()
                };
                roots.push(score.clone());
                tally.keep_scores(score, &batch.y).await?;
            }
            crate::graph::realize_all(&roots, &[])?;
            tally.commit(batch.x.shape()[0], loss_sum, counts);
        }
        tally.read(&self.metrics, prefix, logs, None).await
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
        wait(
            self.check_data("predict", &loader, false),
            "Model::predict",
            "Model::evaluate_async",
        )?;
        let rows = x.shape()[0];
        if rows <= 1024 {
            let xb = loader.batch(&(0..rows).collect::<Vec<_>>(), &self.device)?.0;
            let out = crate::nn::inference(|| self.forward(&xb));
            out.realize()?;
            return Ok(out);
        }
        let (mut values, mut shape) = (Vec::new(), Vec::new());
        for batch in loader.epoch(&self.device.clone()) {
            let xb = batch?.0;
            let out = crate::nn::inference(|| self.forward(&xb));
            shape = out.shape().to_vec();
            values.extend(out.to_vec()?);
        }
        shape[0] = rows;
        Tensor::from_vec(values, &shape, &self.device)
    }
}
