//! One training step of the MNIST MLP (784 → 128 relu → 10, cross-entropy, Adam) on
//! a fixed random batch, shared by `examples/bench.rs` and `benches/gpu_vs_cpu.rs`.
//! Examples and benches are separate crates, so each includes this file as a module
//! with `#[path = "…"] mod mnist_step;`.

// Each includer uses only part of this module.
#![allow(dead_code)]

use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::{Device, Result, Tensor};

/// Input features: 28×28 pixels.
pub const IN: usize = 784;
/// Hidden units.
pub const HIDDEN: usize = 128;
/// Output classes (digits).
pub const CLASSES: usize = 10;

/// The MNIST MLP, 784 → 128 relu → 10, initialised from the global seed.
pub fn mlp(dev: &Device) -> Sequential {
    Sequential::new()
        .add(Linear::new(IN, HIDDEN, dev))
        .add(nn::Relu)
        .add(Linear::new(HIDDEN, CLASSES, dev))
}

/// A one-element tensor in a resident device buffer. Reading it back submits a
/// 4-byte copy and waits for the device queue to drain, i.e. for everything
/// submitted before it (on the CPU the read is trivial: work is synchronous).
pub fn fence(dev: &Device) -> Result<Tensor> {
    Tensor::from_vec(vec![0.0], &[1], dev)?.requires_grad()
}

/// The MNIST MLP, its optimizer and a fixed random batch (fixed seeds, so every
/// device starts from the same weights and data).
pub struct MlpStep {
    model: Sequential,
    opt: Adam,
    x: Tensor,
    labels: Tensor,
    fence: Tensor,
}

impl MlpStep {
    /// The model (seed 0), Adam with lr 1e-3, and a batch of `batch` uniform random
    /// "images" with random labels.
    pub fn new(batch: usize, dev: &Device) -> Result<MlpStep> {
        wgnn::manual_seed(0);
        let model = mlp(dev);
        let opt = Adam::new(
            model.parameters(),
            AdamConfig {
                lr: 1e-3,
                ..Default::default()
            },
        );
        let pixels = wgnn::rng::uniform(42, batch * IN, 0.0, 1.0);
        let x = Tensor::from_vec(pixels, &[batch, IN], dev)?;
        let labels: Vec<u32> = wgnn::rng::uniform(43, batch, 0.0, CLASSES as f32)
            .into_iter()
            .map(|v| (v as u32).min(CLASSES as u32 - 1))
            .collect();
        let labels = Tensor::from_labels(&labels, dev)?;
        let fence = fence(dev)?;
        Ok(MlpStep {
            model,
            opt,
            x,
            labels,
            fence,
        })
    }

    /// Forward, backward and Adam update as one plan (on the GPU one submit that
    /// returns without waiting). `Optimizer::step` computes the loss in the same plan
    /// (`Gradients::loss`), so the returned loss is already computed: reading it is
    /// one small readback, with no further plan.
    pub fn step(&mut self) -> Result<Tensor> {
        let loss = nn::loss::cross_entropy(&self.model.forward(&self.x), &self.labels);
        let grads = loss.backward()?;
        self.opt.step(&grads)?;
        Ok(loss)
    }

    /// One step, finished: the 4-byte fence read (returned) waits for the step's
    /// submit. The loss is held through the step, as a loop that logs it would, but
    /// not read, so the run ends the same way as a timed matmul.
    pub fn step_and_wait(&mut self) -> Result<Vec<f32>> {
        let _loss = self.step()?;
        self.fence.to_vec()
    }

    /// One step and its loss, read back (which also waits for the step).
    pub fn step_and_read_loss(&mut self) -> Result<f32> {
        Ok(self.step()?.to_vec()?[0])
    }
}
