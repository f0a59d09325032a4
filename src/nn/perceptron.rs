//! Rosenblatt's perceptron (1958): a step unit trained by the perceptron rule, not
//! by gradient descent.

use super::{Module, TensorSpec};
use crate::optim::{Optimizer, Sgd, SgdConfig};
use crate::{Device, Error, Result, Tensor};

/// A single threshold unit `ŷ = step(x·wᵀ + b)` for labels 0 and 1.
///
/// Training uses the perceptron rule, one sample at a time: `w ← w + η (y − ŷ) x`,
/// `b ← b + η (y − ŷ)`. A sample that is already classified correctly changes
/// nothing. The rule is applied by the optimizer's in-place update kernel, with
/// `(ŷ − y) x` in place of a gradient, so it runs on either backend with one plan per
/// sample and no readback. On linearly separable data it stops making mistakes
/// after finitely many updates (Novikoff 1962); on XOR it never can, since no line
/// separates XOR's classes.
#[derive(Module)]
pub struct Perceptron {
    /// `[1, in_features]`, starting at zero; `state_dict()` name `weight`.
    pub weight: Tensor,
    /// `[1]`, starting at zero; `state_dict()` name `bias`.
    pub bias: Tensor,
    #[module(skip)]
    rule: Sgd,
}

impl Perceptron {
    /// A perceptron with zero weights and learning rate `lr`.
    pub fn new(in_features: usize, lr: f32, device: &Device) -> Result<Perceptron> {
        let weight = Tensor::from_vec(vec![0.0; in_features], &[1, in_features], device)?.requires_grad()?;
        let bias = Tensor::from_vec(vec![0.0], &[1], device)?.requires_grad()?;
        let rule = Sgd::new(
            vec![weight.clone(), bias.clone()],
            SgdConfig {
                lr,
                ..Default::default()
            },
        );
        Ok(Perceptron { weight, bias, rule })
    }

    /// One pass of the perceptron rule over the rows of `x` (`[n, in]`), in order,
    /// with labels `y` (0 or 1). Returns nothing: count mistakes with [`Perceptron::errors`].
    pub fn train_epoch(&mut self, x: &[f32], y: &[u32]) -> Result<()> {
        let dim = self.weight.shape()[1];
        check(x, y, dim)?;
        let dev = self.weight.device().clone();
        for (row, &label) in x.chunks(dim).zip(y) {
            let xi = Tensor::from_vec(row.to_vec(), &[1, dim], &dev)?;
            let z = xi.linear(&self.weight, Some(&self.bias));
            // (ŷ − y) is a constant; the "gradient" of (ŷ − y)·z is (ŷ − y)·[x, 1].
            let miss = z.step().detach().add_scalar(-(label as f32));
            let surrogate = (&miss * &z).sum();
            self.rule.step(&surrogate.backward()?)?;
        }
        Ok(())
    }

    /// Predicted labels (0 or 1) for the rows of `x`.
    pub fn predict(&self, x: &[f32]) -> Result<Vec<u32>> {
        let dim = self.weight.shape()[1];
        let xt = Tensor::from_vec(x.to_vec(), &[x.len() / dim.max(1), dim], self.weight.device())?;
        Ok(self.forward(&xt).to_vec()?.iter().map(|&v| v as u32).collect())
    }

    /// Number of rows the perceptron currently gets wrong.
    pub fn errors(&self, x: &[f32], y: &[u32]) -> Result<usize> {
        check(x, y, self.weight.shape()[1])?;
        Ok(self.predict(x)?.iter().zip(y).filter(|(p, t)| p != t).count())
    }

    /// Runs up to `max_epochs` epochs, stopping after the first epoch that ends with
    /// no mistakes; returns the mistakes after each epoch.
    pub fn fit(&mut self, x: &[f32], y: &[u32], max_epochs: usize) -> Result<Vec<usize>> {
        let mut errors = Vec::new();
        for _ in 0..max_epochs {
            self.train_epoch(x, y)?;
            errors.push(self.errors(x, y)?);
            if errors.last() == Some(&0) {
                break;
            }
        }
        Ok(errors)
    }
}

fn check(x: &[f32], y: &[u32], dim: usize) -> Result<()> {
    if dim == 0 || x.len() != y.len() * dim {
        return Err(Error::Invalid(format!(
            "Perceptron: {} feature values do not make {} rows of {dim}",
            x.len(),
            y.len()
        )));
    }
    if let Some(i) = y.iter().position(|&l| l > 1) {
        return Err(Error::LabelOutOfRange {
            op: "Perceptron",
            label: y[i],
            index: i,
            classes: 2,
        });
    }
    Ok(())
}

impl Module for Perceptron {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, Some(&self.bias)).step()
    }

    fn name(&self) -> String {
        format!("Perceptron({})", self.weight.shape()[1])
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        super::affine_spec(input, &self.weight).map(Some)
    }
}
