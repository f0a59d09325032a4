//! Forward + backward + an SGD step of single layers — scaled-dot-product attention,
//! `MultiheadAttention` and `Conv2d` — at the shapes issue 21 names, shared by
//! `examples/bench.rs` (`--only attention|conv2d`) and timed the same way in PyTorch
//! by `benches/layers_torch.py`. Included with `#[path = "…"] mod layers;`.
//!
//! Each step computes `loss = (layer(x) · g).sum()` for a fixed random `g`, its
//! gradients with respect to the layer's parameters **and its input** (an inner layer
//! of a network needs both), and applies plain SGD (lr 1e-6, so values stay put):
//! one plan, one submit, waited for by a 4-byte fence read.

// Each includer uses only part of this module.
#![allow(dead_code)]

use wgnn::nn::{self, Conv2d, ConvConfig, MhaConfig, Module, MultiheadAttention};
use wgnn::optim::{Optimizer, Sgd, SgdConfig};
use wgnn::{Device, Result, Tensor};

/// A layer case: what it is called in the tables and in PyTorch's output.
#[derive(Clone, Copy, Debug)]
pub enum Case {
    /// `scaled_dot_product_attention` on q, k, v `[b, heads, t, d/heads]`.
    Sdpa {
        b: usize,
        heads: usize,
        t: usize,
        d: usize,
        causal: bool,
    },
    /// Self-attention of `MultiheadAttention(d, heads, batch_first)` on `[b, t, d]`.
    Mha { b: usize, heads: usize, t: usize, d: usize },
    /// `Conv2d(cin, cout, k, padding k/2)` on `[b, cin, hw, hw]`.
    Conv2d {
        b: usize,
        cin: usize,
        cout: usize,
        k: usize,
        hw: usize,
    },
}

/// The attention rows: issue 21's T = 256, d = 256, 4 heads, batch 16.
pub const ATTENTION: [Case; 3] = [
    Case::Sdpa {
        b: 16,
        heads: 4,
        t: 256,
        d: 256,
        causal: false,
    },
    Case::Sdpa {
        b: 16,
        heads: 4,
        t: 256,
        d: 256,
        causal: true,
    },
    Case::Mha {
        b: 16,
        heads: 4,
        t: 256,
        d: 256,
    },
];

/// The conv rows: the CNN example's two convolutions (batch 64) and a ResNet-like
/// 64 → 64 3×3 on 32×32 at batch 32.
pub const CONV2D: [Case; 3] = [
    Case::Conv2d {
        b: 64,
        cin: 1,
        cout: 16,
        k: 3,
        hw: 28,
    },
    Case::Conv2d {
        b: 64,
        cin: 16,
        cout: 32,
        k: 3,
        hw: 14,
    },
    Case::Conv2d {
        b: 32,
        cin: 64,
        cout: 64,
        k: 3,
        hw: 32,
    },
];

impl Case {
    /// The name PyTorch's script prints for the same case.
    pub fn name(&self) -> String {
        match *self {
            Case::Sdpa { b, heads, t, d, causal } => {
                format!("sdpa{} b{b} h{heads} t{t} d{d}", if causal { " causal" } else { "" })
            }
            Case::Mha { b, heads, t, d } => format!("mha b{b} h{heads} t{t} d{d}"),
            Case::Conv2d { b, cin, cout, k, hw } => format!("conv2d b{b} {cin}>{cout} k{k} {hw}x{hw}"),
        }
    }

    /// The arguments of `benches/layers_torch.py` for this case.
    pub fn torch_args(&self) -> String {
        match *self {
            Case::Sdpa { b, heads, t, d, causal } => format!("sdpa:{b}:{heads}:{t}:{d}:{}", causal as u8),
            Case::Mha { b, heads, t, d } => format!("mha:{b}:{heads}:{t}:{d}"),
            Case::Conv2d { b, cin, cout, k, hw } => format!("conv2d:{b}:{cin}:{cout}:{k}:{hw}"),
        }
    }

    /// Matmul flops of forward and backward (3× the forward's products; the causal
    /// kernel is counted as the full one).
    pub fn flops(&self) -> f64 {
        match *self {
            Case::Sdpa { b, t, d, .. } => 3.0 * 2.0 * 2.0 * (b * t * t * d) as f64,
            Case::Mha { b, t, d, .. } => 3.0 * (2.0 * 2.0 * (b * t * t * d) as f64 + 2.0 * (4 * b * t * d * d) as f64),
            Case::Conv2d { b, cin, cout, k, hw } => 3.0 * 2.0 * (b * cout * hw * hw * cin * k * k) as f64,
        }
    }
}

/// One case ready to step: its layer, inputs, the output weights `g` and the optimizer.
pub struct LayerStep {
    case: Case,
    inputs: Vec<Tensor>,
    layer: Option<Box<dyn Module>>,
    g: Tensor,
    opt: Sgd,
    fence: Tensor,
}

impl LayerStep {
    /// The case's layer (seed 0) and random inputs on `dev`.
    pub fn new(case: Case, dev: &Device) -> Result<LayerStep> {
        wgnn::manual_seed(0);
        let leaf = |shape: &[usize], seed: u64| Tensor::randn(shape, seed, dev)?.requires_grad();
        let (inputs, layer, out_shape): (Vec<Tensor>, Option<Box<dyn Module>>, Vec<usize>) = match case {
            Case::Sdpa { b, heads, t, d, .. } => {
                let shape = [b, heads, t, d / heads];
                (
                    vec![leaf(&shape, 1)?, leaf(&shape, 2)?, leaf(&shape, 3)?],
                    None,
                    shape.to_vec(),
                )
            }
            Case::Mha { b, heads, t, d } => {
                let cfg = MhaConfig {
                    batch_first: true,
                    ..Default::default()
                };
                let mha = MultiheadAttention::try_new(d, heads, cfg, dev)?;
                (vec![leaf(&[b, t, d], 1)?], Some(Box::new(mha)), vec![b, t, d])
            }
            Case::Conv2d { b, cin, cout, k, hw } => {
                let cfg = ConvConfig {
                    padding: k / 2,
                    ..Default::default()
                };
                let conv = Conv2d::try_new(cin, cout, [k, k], cfg, dev)?;
                (
                    vec![leaf(&[b, cin, hw, hw], 1)?],
                    Some(Box::new(conv)),
                    vec![b, cout, hw, hw],
                )
            }
        };
        let mut params = inputs.clone();
        if let Some(l) = &layer {
            params.extend(l.parameters());
        }
        let opt = Sgd::new(
            params,
            SgdConfig {
                lr: 1e-6,
                ..Default::default()
            },
        );
        Ok(LayerStep {
            case,
            inputs,
            layer,
            g: Tensor::randn(&out_shape, 9, dev)?,
            opt,
            fence: Tensor::from_vec(vec![0.0], &[1], dev)?,
        })
    }

    /// Forward, backward and the SGD step: one plan, one submit.
    pub fn step(&mut self) -> Result<()> {
        let y = match (&self.case, &self.layer) {
            (Case::Sdpa { causal, .. }, _) => {
                let [q, k, v] = &self.inputs[..] else { unreachable!() };
                nn::scaled_dot_product_attention(q, k, v, None, *causal, 0.0)
            }
            (_, Some(layer)) => layer.forward(&self.inputs[0]),
            (_, None) => unreachable!("every case but sdpa has a layer"),
        };
        let loss = (&y * &self.g).sum();
        self.opt.step(&loss.backward()?)
    }

    /// One step, waited for by a 4-byte fence read.
    pub fn step_and_wait(&mut self) -> Result<()> {
        self.step()?;
        self.fence.to_vec().map(|_| ())
    }
}
