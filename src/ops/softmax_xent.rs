//! Softmax cross-entropy family (`shaders/softmax_xent.wgsl`): fused per-row
//! log-softmax + negative log-likelihood, and its backward `(softmax − onehot)·g`.

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
                grad: false,
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
                grad: true,
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

/// Forward: reads [logits, labels], writes [loss per row]. Backward (`grad`): reads
/// [logits, labels, g], writes [grad logits].
#[derive(Debug)]
struct XentKernel {
    rows: usize,
    classes: usize,
    grad: bool,
}

impl Kernel for XentKernel {
    fn reads(&self) -> usize {
        2 + self.grad as usize
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let classes = self.classes;
        for r in 0..self.rows {
            let row = &x[0][r * classes..(r + 1) * classes];
            let label = x[1][r].to_bits() as usize;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
            if self.grad {
                let g = x[2][r];
                for c in 0..classes {
                    let p = (row[c] - max).exp() / sum;
                    out[0][r * classes + c] = (p - (c == label) as u32 as f32) * g;
                }
            } else {
                out[0][r] = if label < classes {
                    // log Σe^(x−m) − (x_label − m): x_label − m is exact or nearly, where
                    // (log Σ + m) − x_label would round log Σ to the ulp of m.
                    sum.ln() - (row[label] - max)
                } else {
                    f32::NAN
                };
            }
        }
    }

    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new().u32("rows", self.rows).u32("classes", self.classes);
        let entry = if self.grad { "xent_rows_grad" } else { "xent_rows" };
        Wgsl::new(SHADER, entry, u, Grid::Threads(self.rows))
    }
}

impl Tensor {
    pub(crate) fn cross_entropy_rows(logits: &Tensor, labels: &Tensor) -> Tensor {
        Tensor::from_node(
            Op::CrossEntropyRows(CrossEntropyRows),
            vec![logits.clone(), labels.clone()],
            vec![logits.shape()[0]],
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
