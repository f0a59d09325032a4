//! Running sums of one pass over data, kept on the device: rows, loss × rows and
//! confusion counts (onehot(y)ᵀ·onehot(argmax), or the Gram matrix of [y, ŷ] for a
//! binary output). A training step realizes the next sums in its own plan; the pass
//! reads them back once, at the end, in one download.

use super::history::Scores;
use super::loss::Loss;
use crate::distributed::{self, Collective};
use crate::metrics::{roc_auc, ConfusionMatrix, Metric};
use crate::{DType, Device, Result, Tensor};

/// What a pass counts besides the loss, decided by the loss and the targets.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scoring {
    /// Confusion counts of labels against the argmax of the output.
    Classes,
    /// Confusion counts of 0/1 targets against the output thresholded here.
    Binary(f32),
    /// Per output column: Σ|e|, Σe², Σy, Σy².
    Regression,
    /// Nothing (no metric needs it).
    Nothing,
}

/// Device-side running sums over batches: rows, loss · rows, confusion counts.
pub(crate) struct Tally {
    rows: usize,
    loss_sum: Tensor,
    counts: Option<Tensor>,
    scoring: Scoring,
    scores: Vec<Tensor>,
    truth: Vec<u32>,
    /// The rows [1, 0] and [0, 1], resident, to place y and ŷ side by side without an
    /// upload per step.
    basis: (Tensor, Tensor),
    /// Whether to sum what the regression metrics need.
    regression: bool,
}

impl Tally {
    /// Zero sums on `device`, for `metrics`.
    pub(crate) fn new(device: &Device, metrics: &[Metric]) -> Result<Tally> {
        let loss_sum = Tensor::zeros(&[1], device);
        loss_sum.realize()?;
        Ok(Tally {
            rows: 0,
            loss_sum,
            counts: None,
            scoring: Scoring::Nothing,
            scores: Vec::new(),
            truth: Vec::new(),
            basis: (
                Tensor::resident(vec![1.0, 0.0], &[1, 2], device)?,
                Tensor::resident(vec![0.0, 1.0], &[1, 2], device)?,
            ),
            regression: metrics.iter().any(Metric::is_regression),
        })
    }

    /// What to count for outputs `out` against targets `y` under `loss`.
    fn scoring(&self, loss: &Loss, out: &Tensor, y: &Tensor) -> Scoring {
        let rows = out.shape()[0];
        match loss {
            l if l.softmax_classes() => Scoring::Classes,
            Loss::BinaryCrossEntropy if out.numel() == rows => Scoring::Binary(0.5),
            Loss::BinaryCrossEntropyWithLogits if out.numel() == rows => Scoring::Binary(0.0),
            Loss::Mse if self.regression => Scoring::Regression,
            Loss::Custom(_) if y.dtype() == DType::U32 && out.shape().len() == 2 => Scoring::Classes,
            Loss::Custom(_) if y.dtype() == DType::F32 && self.regression && out.shape() == y.shape() => {
                Scoring::Regression
            }
            _ => Scoring::Nothing,
        }
    }

    /// The batch's additions to a tally: the new running loss sum and counts.
    /// Realize the returned values (in the step's plan) and [`Tally::commit`] them.
    pub(crate) fn add(
        &mut self,
        loss: &Loss,
        out: &Tensor,
        y: &Tensor,
        data_loss: &Tensor,
    ) -> (Tensor, Option<Tensor>) {
        let rows = out.shape()[0];
        let loss_sum = &self.loss_sum + &data_loss.reshape(&[1]).mul_scalar(rows as f32);
        self.scoring = self.scoring(loss, out, y);
        let counts = match self.scoring {
            Scoring::Classes => {
                let classes = out.shape()[1];
                // Row = true class, column = predicted: onehot(y)ᵀ · onehot(argmax).
                Some(
                    y.one_hot(classes)
                        .matmul_t(&out.argmax(1).one_hot(classes), true, false),
                )
            }
            Scoring::Binary(threshold) => {
                // [y, ŷ] per row; its Gram matrix is [[Σy, Σyŷ], [Σyŷ, Σŷ]].
                let yhat = out
                    .reshape(&[rows, 1])
                    .ge_mask(&Tensor::full(&[], threshold, out.device()));
                let (e0, e1) = &self.basis;
                let pair = &(&y.reshape(&[rows, 1]) * e0) + &(&yhat * e1);
                Some(pair.matmul_t(&pair, true, false))
            }
            Scoring::Regression => {
                // Per output column: Σ|e|, Σe², Σy, Σy² (e = ŷ − y), `[4, columns]`.
                let columns = out.numel() / rows.max(1);
                let (yhat, y) = (out.reshape(&[rows, columns]), y.reshape(&[rows, columns]));
                let e = &yhat - &y;
                let parts = [e.abs(), e.square(), y.clone(), y.square()];
                Some(Tensor::stack(&parts.iter().collect::<Vec<_>>(), 0).sum_axis(1, false))
            }
            Scoring::Nothing => None,
        };
        let counts = match (counts, &self.counts) {
            (Some(c), Some(prev)) => Some(prev + &c),
            (c, _) => c,
        };
        (loss_sum, counts)
    }

    /// Reads a tally's totals into logs (`prefix` is "" or "val_"): one download,
    /// awaited. With a group of ranks (`comm`), the totals are summed over the ranks
    /// first, so the logs hold the global loss and metrics, the same on every rank.
    pub(crate) async fn read(
        &self,
        metrics: &[Metric],
        prefix: &str,
        logs: &mut Scores,
        comm: Option<&dyn Collective>,
    ) -> Result<Option<ConfusionMatrix>> {
        let comm = comm.filter(|c| c.size() > 1);
        let rows = match comm {
            Some(c) => distributed::all_reduce_sum_u64(c, self.rows as u64)? as usize,
            None => self.rows,
        };
        // The loss sum and the counts in one download.
        let totals = match &self.counts {
            Some(counts) => Tensor::cat(&[&self.loss_sum, &counts.reshape(&[counts.numel()])], 0),
            None => self.loss_sum.clone(),
        };
        let mut totals = totals.to_vec_async().await?;
        if let Some(c) = comm {
            distributed::all_reduce_sum(c, &mut totals)?;
        }
        let mean_loss = totals[0] / rows.max(1) as f32;
        logs.insert(format!("{prefix}loss"), f64::from(mean_loss));
        let Some(counts) = &self.counts else {
            return Ok(None);
        };
        let c = &totals[1..];
        if self.scoring == Scoring::Regression {
            for m in metrics.iter().filter(|m| m.is_regression()) {
                logs.insert(format!("{prefix}{}", m.name()), regression_score(*m, c, rows));
            }
            return Ok(None);
        }
        let cm = if self.scoring == Scoring::Classes {
            let classes = counts.shape()[0];
            ConfusionMatrix::from_counts(classes, c.iter().map(|&v| v.round() as u64).collect())?
        } else {
            let (sy, tp, sp) = (c[0].round() as u64, c[1].round() as u64, c[3].round() as u64);
            let n = rows as u64;
            ConfusionMatrix::from_counts(2, vec![n + tp - sy - sp, sp - tp, sy - tp, tp])?
        };
        for m in metrics {
            let value = match m {
                Metric::RocAuc if self.scores.is_empty() => continue,
                Metric::RocAuc => {
                    let mut scores = Vec::with_capacity(self.rows);
                    for s in &self.scores {
                        scores.extend(s.to_vec_async().await?);
                    }
                    let mut truth = self.truth.clone();
                    if let Some(c) = comm {
                        scores = distributed::all_gather(c, &scores)?.concat();
                        let words: Vec<f32> = truth.iter().map(|&t| f32::from_bits(t)).collect();
                        truth = distributed::all_gather(c, &words)?
                            .concat()
                            .iter()
                            .map(|w| w.to_bits())
                            .collect();
                    }
                    roc_auc(&scores, &truth)?
                }
                m if m.is_regression() => continue,
                m => cm.score(*m)?,
            };
            logs.insert(format!("{prefix}{}", m.name()), value);
        }
        Ok(Some(cm))
    }

    /// Takes the totals of a realized batch, detached: the sums carried to the next
    /// batch hold their values only, not the graph of the step that made them (the
    /// batch's outputs and loss, and through them its inputs and gradients), which a
    /// running sum would otherwise keep alive for a whole epoch — every step's
    /// buffers then new memory instead of the ones the step before gave back.
    pub(crate) fn commit(&mut self, rows: usize, loss_sum: Tensor, counts: Option<Tensor>) {
        self.rows += rows;
        self.loss_sum = loss_sum.detach();
        self.counts = counts.map(|c| c.detach());
    }

    /// Keeps a batch's scores and binary targets for ROC-AUC.
    pub(crate) async fn keep_scores(&mut self, scores: Tensor, y: &Tensor) -> Result<()> {
        self.truth.extend(y.to_vec_async().await?.iter().map(|&v| v as u32));
        self.scores.push(scores);
        Ok(())
    }

    /// Rows so far.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The mean loss so far (a download).
    pub(crate) fn mean_loss(&self) -> Result<f32> {
        Ok(self.loss_sum.item()? / self.rows.max(1) as f32)
    }
}

/// A regression metric from the sums `[Σ|e|, Σe², Σy, Σy²]` of each of the output
/// columns (`sums` holds the four rows one after the other) over `rows` rows.
fn regression_score(metric: Metric, sums: &[f32], rows: usize) -> f64 {
    let columns = sums.len() / 4;
    let row = |k: usize| sums[k * columns..(k + 1) * columns].iter().map(|&v| f64::from(v));
    let n = rows.max(1) as f64;
    let outputs = n * columns.max(1) as f64;
    match metric {
        Metric::Mae => row(0).sum::<f64>() / outputs,
        Metric::Rmse => (row(1).sum::<f64>() / outputs).sqrt(),
        _ => {
            // 1 − SSE/SST per column (a constant column scores 0 unless it is fitted
            // exactly, as scikit-learn does), averaged.
            let r2: f64 = row(1)
                .zip(row(2).zip(row(3)))
                .map(|(sse, (sy, syy))| {
                    let sst = syy - sy * sy / n;
                    match (sst > 0.0, sse > 0.0) {
                        (true, _) => 1.0 - sse / sst,
                        (false, false) => 1.0,
                        (false, true) => 0.0,
                    }
                })
                .sum();
            r2 / columns.max(1) as f64
        }
    }
}
