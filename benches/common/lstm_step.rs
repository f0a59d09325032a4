//! One training step of an LSTM sequence regressor — input 64, hidden H, batch 32,
//! sequence 50, a Linear head on the last output, MSE, Adam — shared by
//! `examples/bench.rs` and `benches/gpu_vs_cpu.rs`, and timed the same way in
//! PyTorch by `benches/lstm_torch.py`. Included with `#[path = "…"] mod lstm_step;`.

// Each includer uses only part of this module.
#![allow(dead_code)]

use wgnn::nn::{self, Linear, Lstm, Module, RnnConfig};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::{Device, Result, Tensor};

/// Input features per time step.
pub const INPUT: usize = 64;
/// Batch size.
pub const BATCH: usize = 32;
/// Time steps.
pub const SEQ: usize = 50;

/// Matmul flops of one step (forward and backward, 3× the forward's GEMMs: the
/// input projection, the recurrent projections and the head).
pub fn flops(hidden: usize) -> f64 {
    let forward = 2.0 * (SEQ * BATCH * 4 * hidden * (INPUT + hidden) + BATCH * hidden) as f64;
    3.0 * forward
}

/// The model, its optimizer, a fixed random batch and a fence.
pub struct LstmStep {
    lstm: Lstm,
    head: Linear,
    opt: Adam,
    x: Tensor,
    y: Tensor,
    fence: Tensor,
}

impl LstmStep {
    /// An LSTM with `hidden` units (seed 0), Adam lr 1e-3, a batch `[32, 50, 64]`.
    pub fn new(hidden: usize, dev: &Device) -> Result<LstmStep> {
        wgnn::manual_seed(0);
        let cfg = RnnConfig {
            batch_first: true,
            ..Default::default()
        };
        let lstm = Lstm::try_new(INPUT, hidden, cfg, dev)?;
        let head = Linear::try_new(hidden, 1, true, dev)?;
        let mut params = lstm.parameters();
        params.extend(head.parameters());
        let opt = Adam::new(
            params,
            AdamConfig {
                lr: 1e-3,
                ..Default::default()
            },
        );
        let x = Tensor::randn(&[BATCH, SEQ, INPUT], 42, dev)?;
        let y = Tensor::randn(&[BATCH, 1], 43, dev)?;
        let fence = Tensor::from_vec(vec![0.0], &[1], dev)?.requires_grad()?;
        Ok(LstmStep {
            lstm,
            head,
            opt,
            x,
            y,
            fence,
        })
    }

    /// Forward (all 50 steps), backward through time and Adam: one plan, one submit.
    pub fn step(&mut self) -> Result<Tensor> {
        let (out, _) = self.lstm.forward_seq(&self.x, None);
        let last = out.select(1, SEQ - 1);
        let loss = nn::loss::mse(&self.head.forward(&last), &self.y);
        self.opt.step(&loss.backward()?)?;
        Ok(loss)
    }

    /// One step, waited for by a 4-byte fence read.
    pub fn step_and_wait(&mut self) -> Result<Vec<f32>> {
        let _loss = self.step()?;
        self.fence.to_vec()
    }
}
