//! Softmax cross-entropy family (`shaders/softmax_xent.wgsl`): fused per-row
//! log-softmax + negative log-likelihood, and its backward `(softmax − onehot)·g`;
//! and the same with the batch mean taken in the kernel (`nn::loss::cross_entropy`),
//! so a classifier's loss is one launch forward and one backward.

use super::{Lowering, Op, Rule};
use crate::backend::kernel::{Grid, Kernel, Uniforms, Wgsl};
use crate::tensor::DType;
use crate::{Error, Result, Tensor};

const SHADER: &str = include_str!("../../shaders/softmax_xent.wgsl");

/// Per-row `-log_softmax(logits)[label]`: inputs logits `[B, C]`, labels `[B]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossEntropyRows;

/// Gradient of [`CrossEntropyRows`]: `(softmax(logits) - onehot) * g[row]`; inputs
/// logits, labels, g `[B]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossEntropyRowsGrad;

/// The batch mean of [`CrossEntropyRows`], a scalar: the rows' losses summed in the
/// order of a full `sum()` (256 strided partial sums, then a tree), times `1 / B`;
/// inputs logits `[B, C]`, labels `[B]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossEntropyMean;

/// Gradient of [`CrossEntropyMean`]: `(softmax(logits) - onehot) · (g · (1 / B))`;
/// inputs logits, labels, g (one element).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossEntropyMeanGrad;

/// Labels not below the class count are an error before anything runs (the kernels
/// would give NaN, never a fault).
fn check_labels(inputs: &[Tensor]) -> Result<()> {
    let (logits, labels) = (&inputs[0], &inputs[1]);
    let classes = logits.shape()[1];
    if let Some((label, index)) = labels.0.max_label {
        if label as usize >= classes {
            return Err(Error::LabelOutOfRange {
                op: "cross_entropy",
                label,
                index,
                classes,
            });
        }
    }
    Ok(())
}

impl Rule for CrossEntropyRows {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let (rows, classes) = (inputs[0][0], inputs[0][1]);
        Lowering::kernel(
            XentKernel {
                rows,
                classes,
                pass: Pass::Rows,
            },
            2,
        )
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(Tensor::cross_entropy_rows_grad(&inputs[0], &inputs[1], g)), None]
    }
    fn validate(&self, inputs: &[Tensor]) -> Result<()> {
        check_labels(inputs)
    }
}

impl Rule for CrossEntropyRowsGrad {
    fn name(&self) -> &'static str {
        "cross_entropy_grad"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let (rows, classes) = (inputs[0][0], inputs[0][1]);
        Lowering::kernel(
            XentKernel {
                rows,
                classes,
                pass: Pass::RowsGrad,
            },
            3,
        )
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        vec![None, None, None]
    }
    fn validate(&self, inputs: &[Tensor]) -> Result<()> {
        check_labels(inputs)
    }
}

impl Rule for CrossEntropyMean {
    fn name(&self) -> &'static str {
        "cross_entropy_mean"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        Lowering::kernel(XentKernel::new(inputs[0], Pass::Mean), 2)
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let grad = Tensor::from_node(
            Op::CrossEntropyMeanGrad(CrossEntropyMeanGrad),
            vec![inputs[0].clone(), inputs[1].clone(), g.clone()],
            inputs[0].shape().to_vec(),
            DType::F32,
        );
        vec![Some(grad), None]
    }
    fn validate(&self, inputs: &[Tensor]) -> Result<()> {
        check_labels(inputs)
    }
}

impl Rule for CrossEntropyMeanGrad {
    fn name(&self) -> &'static str {
        "cross_entropy_mean_grad"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        Lowering::kernel(XentKernel::new(inputs[0], Pass::MeanGrad), 3)
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        vec![None, None, None]
    }
    fn validate(&self, inputs: &[Tensor]) -> Result<()> {
        check_labels(inputs)
    }
}

/// Which of the family's kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// The loss of each row.
    Rows,
    /// Each row's gradient times its `g`.
    RowsGrad,
    /// The mean loss.
    Mean,
    /// The gradient of the mean loss times the one `g`.
    MeanGrad,
}

/// Forward: reads [logits, labels], writes [loss per row] (or [mean]). Backward (`grad`): reads
/// [logits, labels, g], writes [grad logits].
#[derive(Debug)]
struct XentKernel {
    rows: usize,
    classes: usize,
    pass: Pass,
}

/// Invocations of the mean's one workgroup (and partial sums of its CPU twin).
const MEAN_LANES: usize = 256;

impl XentKernel {
    fn new(logits: &[usize], pass: Pass) -> XentKernel {
        XentKernel {
            rows: logits[0],
            classes: logits[1],
            pass,
        }
    }

    /// `1 / B` as `mean()` takes it.
    fn scale(&self) -> f32 {
        1.0 / self.rows.max(1) as f32
    }
}

/// Row `r`'s largest logit, `Σ exp(x − max)` and label; the terms `exp(x − max)` left
/// in `exps` (`classes` words), so that the backward divides them by the sum instead
/// of computing each a second time.
fn row_stats<'a>(
    logits: &'a [f32],
    labels: &[f32],
    classes: usize,
    r: usize,
    exps: &mut [f32],
) -> (&'a [f32], f32, f32, usize) {
    let row = &logits[r * classes..(r + 1) * classes];
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for (e, &v) in exps.iter_mut().zip(row) {
        *e = (v - max).exp();
    }
    let sum: f32 = exps[..classes].iter().sum();
    (row, max, sum, labels[r].to_bits() as usize)
}

/// Row `r`'s loss: `log Σe^(x−m) − (x_label − m)` (x_label − m is exact or nearly,
/// where `(log Σ + m) − x_label` would round log Σ to the ulp of m); NaN for a label
/// out of range.
fn row_loss(logits: &[f32], labels: &[f32], classes: usize, r: usize, exps: &mut [f32]) -> f32 {
    let (row, max, sum, label) = row_stats(logits, labels, classes, r, exps);
    if label < classes {
        sum.ln() - (row[label] - max)
    } else {
        f32::NAN
    }
}

impl Kernel for XentKernel {
    fn reads(&self) -> usize {
        match self.pass {
            Pass::Rows | Pass::Mean => 2,
            Pass::RowsGrad | Pass::MeanGrad => 3,
        }
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let classes = self.classes;
        let mut exps = vec![0f32; classes];
        match self.pass {
            Pass::Rows => {
                for (r, loss) in out[0][..self.rows].iter_mut().enumerate() {
                    *loss = row_loss(x[0], x[1], classes, r, &mut exps);
                }
            }
            Pass::Mean => {
                // The kernel's order: strided partial sums, then a tree.
                let mut partial = [0f32; MEAN_LANES];
                for r in 0..self.rows {
                    partial[r % MEAN_LANES] += row_loss(x[0], x[1], classes, r, &mut exps);
                }
                let mut s = MEAN_LANES / 2;
                while s > 0 {
                    for i in 0..s {
                        partial[i] += partial[i + s];
                    }
                    s /= 2;
                }
                out[0][0] = partial[0] * self.scale();
            }
            Pass::RowsGrad | Pass::MeanGrad => {
                for r in 0..self.rows {
                    let (_, _, sum, label) = row_stats(x[0], x[1], classes, r, &mut exps);
                    let g = match self.pass {
                        Pass::RowsGrad => x[2][r],
                        _ => x[2][0] * self.scale(),
                    };
                    let grads = &mut out[0][r * classes..(r + 1) * classes];
                    for (c, (d, &e)) in grads.iter_mut().zip(&exps).enumerate() {
                        *d = (e / sum - (c == label) as u32 as f32) * g;
                    }
                }
            }
        }
    }

    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new()
            .u32("rows", self.rows)
            .u32("classes", self.classes)
            .f32("scale", self.scale());
        let (entry, grid) = match self.pass {
            Pass::Rows => ("xent_rows", Grid::Threads(self.rows)),
            Pass::RowsGrad => ("xent_rows_grad", Grid::Threads(self.rows)),
            Pass::Mean => ("xent_mean", Grid::Groups(1)),
            Pass::MeanGrad => ("xent_mean_grad", Grid::Threads(self.rows)),
        };
        Wgsl::new(SHADER, entry, u, grid)
    }
}

impl Tensor {
    #[track_caller]
    pub(crate) fn cross_entropy_rows(logits: &Tensor, labels: &Tensor) -> Tensor {
        Tensor::from_node(
            Op::CrossEntropyRows(CrossEntropyRows),
            vec![logits.clone(), labels.clone()],
            vec![logits.shape()[0]],
            DType::F32,
        )
    }

    #[track_caller]
    pub(crate) fn cross_entropy_mean(logits: &Tensor, labels: &Tensor) -> Tensor {
        Tensor::from_node(
            Op::CrossEntropyMean(CrossEntropyMean),
            vec![logits.clone(), labels.clone()],
            Vec::new(),
            DType::F32,
        )
    }

    pub(crate) fn cross_entropy_rows_grad(logits: &Tensor, labels: &Tensor, g: &Tensor) -> Tensor {
        let inputs = vec![logits.clone(), labels.clone(), g.clone()];
        Tensor::from_node(
            Op::CrossEntropyRowsGrad(CrossEntropyRowsGrad),
            inputs,
            logits.shape().to_vec(),
            DType::F32,
        )
    }
}
