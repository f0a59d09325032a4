//! One training step of the issue-21 models — the `cnn` example's CNN (conv 3×3 16 ·
//! BN · ReLU · pool, conv 3×3 32 · BN · ReLU · pool, Linear; batch 64 of 28×28) and
//! the `transformer_text` model (4 pre-norm causal layers, d 64, 4 heads, GELU, a
//! window of 64 characters, batch 32, 80 symbols) — on fixed random data with Adam:
//! forward, cross-entropy, backward and the update, one plan, one submit, waited for
//! by a 4-byte fence read. For `examples/bench.rs` (`--only cnn_step|transformer_step`).

// Each includer uses only part of this module.
#![allow(dead_code)]

use wgnn::nn::{
    self, Activation, BatchNorm2d, Conv2d, ConvConfig, Embedding, Flatten, LayerNorm, LearnedPositionalEmbedding,
    Linear, MaxPool2d, Module, Sequential, TransformerConfig, TransformerEncoderLayer,
};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::{Device, Result, Tensor};

/// The CNN's batch.
pub const CNN_BATCH: usize = 64;
/// Steps of an epoch of the CNN example's default data (4000 training images).
pub const CNN_STEPS_PER_EPOCH: usize = 4000usize.div_ceil(CNN_BATCH);
/// The transformer's batch of windows, window, width, layers, heads and vocabulary.
pub const TF: (usize, usize, usize, usize, usize, usize) = (32, 64, 64, 4, 4, 80);

/// Which model.
#[derive(Clone, Copy, Debug)]
pub enum Which {
    /// The `cnn` example's CNN.
    Cnn,
    /// The `transformer_text` example's transformer.
    Transformer,
}

/// A model, its optimizer, one batch and a fence.
pub struct ModelStep {
    which: Which,
    layers: Vec<Box<dyn Module>>,
    blocks: Vec<TransformerEncoderLayer>,
    opt: Adam,
    x: Tensor,
    y: Tensor,
    fence: Tensor,
}

impl ModelStep {
    /// The model (seed 0) with Adam lr 1e-3 and a fixed random batch on `dev`.
    pub fn new(which: Which, dev: &Device) -> Result<ModelStep> {
        wgnn::manual_seed(0);
        let mut blocks = Vec::new();
        let (layers, x, y): (Vec<Box<dyn Module>>, Tensor, Tensor) = match which {
            Which::Cnn => {
                let conv = |i, o| {
                    Conv2d::try_new(
                        i,
                        o,
                        [3, 3],
                        ConvConfig {
                            padding: 1,
                            ..Default::default()
                        },
                        dev,
                    )
                };
                let net = Sequential::new()
                    .add(conv(1, 16)?)
                    .add(BatchNorm2d::try_new(16, dev)?)
                    .add(nn::Relu)
                    .add(MaxPool2d::new(2, 2))
                    .add(conv(16, 32)?)
                    .add(BatchNorm2d::try_new(32, dev)?)
                    .add(nn::Relu)
                    .add(MaxPool2d::new(2, 2))
                    .add(Flatten)
                    .add(Linear::try_new(32 * 7 * 7, 10, true, dev)?);
                let labels: Vec<u32> = (0..CNN_BATCH as u32).map(|i| i % 10).collect();
                let x = Tensor::randn(&[CNN_BATCH, 1, 28, 28], 1, dev)?;
                (vec![Box::new(net)], x, Tensor::from_labels(&labels, dev)?)
            }
            Which::Transformer => {
                let (b, t, d, n, heads, vocab) = TF;
                let config = TransformerConfig {
                    dim_feedforward: 4 * d,
                    dropout: 0.0,
                    activation: Activation::Gelu,
                    batch_first: true,
                    norm_first: true,
                    ..Default::default()
                };
                let layers: Vec<Box<dyn Module>> = vec![
                    Box::new(Embedding::new(vocab, d, dev)),
                    Box::new(LearnedPositionalEmbedding::new(t, d, dev)?),
                    Box::new(LayerNorm::new(&[d], dev)),
                    Box::new(Linear::try_new(d, vocab, true, dev)?),
                ];
                for _ in 0..n {
                    blocks.push(TransformerEncoderLayer::try_new(d, heads, config, dev)?);
                }
                let ids =
                    |seed: u32| -> Vec<u32> { (0..(b * t) as u32).map(|i| (i * 7 + seed) % vocab as u32).collect() };
                let x = Tensor::from_labels(&ids(1), dev)?.reshape(&[b, t]);
                (layers, x, Tensor::from_labels(&ids(2), dev)?)
            }
        };
        let mut params: Vec<Tensor> = layers.iter().flat_map(|l| l.parameters()).collect();
        params.extend(blocks.iter().flat_map(|l| l.parameters()));
        let opt = Adam::new(
            params,
            AdamConfig {
                lr: 1e-3,
                ..Default::default()
            },
        );
        let fence = Tensor::from_vec(vec![0.0], &[1], dev)?;
        Ok(ModelStep {
            which,
            layers,
            blocks,
            opt,
            x,
            y,
            fence,
        })
    }

    /// Forward, loss, backward and Adam: one plan, one submit.
    pub fn step(&mut self) -> Result<()> {
        let logits = match self.which {
            Which::Cnn => self.layers[0].forward(&self.x),
            Which::Transformer => {
                let (b, t, d, ..) = TF;
                let (emb, pos) = (&self.layers[0], &self.layers[1]);
                let mut h = pos.forward(&emb.forward(&self.x));
                for block in &self.blocks {
                    h = block.forward_causal(&h);
                }
                let h = self.layers[2].forward(&h).reshape(&[b * t, d]);
                self.layers[3].forward(&h)
            }
        };
        let loss = nn::loss::cross_entropy(&logits, &self.y);
        self.opt.step(&loss.backward()?)
    }

    /// One step, waited for by a 4-byte fence read.
    pub fn step_and_wait(&mut self) -> Result<()> {
        self.step()?;
        self.fence.to_vec().map(|_| ())
    }
}
