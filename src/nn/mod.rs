//! Layers as [`Module`]s with PyTorch's parameter layout and names, so a
//! `state_dict()` saved by PyTorch loads here and gives the same outputs.

pub mod loss;

use crate::{Device, Result, Tensor};

/// A layer or model: a forward function and named trainable parameters.
pub trait Module {
    /// Applies the module to a batch.
    fn forward(&self, x: &Tensor) -> Tensor;

    /// Parameters with the names PyTorch's `state_dict()` would give them.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// The trainable parameters, in `named_parameters` order.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// Switches training-only behaviour (e.g. dropout) on or off.
    fn set_training(&mut self, _training: bool) {}

    /// Training mode (the default).
    fn train(&mut self) {
        self.set_training(true)
    }

    /// Evaluation mode.
    fn eval(&mut self) {
        self.set_training(false)
    }
}

/// `y = x·Wᵀ + b` with weight `[out, in]` and bias `[out]`, initialised as PyTorch's
/// `nn.Linear` (uniform in ±1/√in), from the global seed (`wgnn::manual_seed`).
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer with bias. Panics only if the device cannot hold the parameters; use
    /// [`Linear::try_new`] to get that as an error.
    pub fn new(in_features: usize, out_features: usize, device: &Device) -> Linear {
        Linear::try_new(in_features, out_features, true, device)
            .unwrap_or_else(|e| panic!("Linear::new({in_features}, {out_features}): {e}"))
    }

    /// A layer, with or without bias.
    pub fn try_new(in_features: usize, out_features: usize, bias: bool, device: &Device) -> Result<Linear> {
        let bound = 1.0 / (in_features.max(1) as f32).sqrt();
        let seed = crate::rng::next_seed();
        let weight = Tensor::rand(&[out_features, in_features], -bound, bound, seed, device)?.requires_grad()?;
        let bias = if bias {
            let seed = crate::rng::next_seed();
            Some(Tensor::rand(&[out_features], -bound, bound, seed, device)?.requires_grad()?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            out.push(("bias".to_string(), b.clone()));
        }
        out
    }
}

/// `max(x, 0)` (fused into a preceding `Linear`'s kernel).
#[derive(Clone, Copy, Debug, Default)]
pub struct Relu;
/// Hyperbolic tangent (fused into a preceding `Linear`'s kernel).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tanh;
/// Logistic function (fused into a preceding `Linear`'s kernel).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sigmoid;
/// Heaviside step (the perceptron's activation; zero gradient).
#[derive(Clone, Copy, Debug, Default)]
pub struct Step;
/// Softmax over the last axis.
#[derive(Clone, Copy, Debug, Default)]
pub struct Softmax;

impl Module for Relu {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.relu()
    }
}
impl Module for Tanh {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.tanh()
    }
}
impl Module for Sigmoid {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.sigmoid()
    }
}
impl Module for Step {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.step()
    }
}
impl Module for Softmax {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.softmax(x.shape().len().saturating_sub(1))
    }
}

/// Modules applied in order; parameters are named `"{index}.{name}"` as in
/// PyTorch's `nn.Sequential`.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// An empty stack.
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends a layer.
    #[allow(clippy::should_implement_trait)]
    pub fn add<M: Module + 'static>(mut self, layer: M) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.layers.iter().fold(x.clone(), |h, layer| layer.forward(&h))
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, layer)| {
                layer
                    .named_parameters()
                    .into_iter()
                    .map(move |(n, t)| (format!("{i}.{n}"), t))
            })
            .collect()
    }

    fn set_training(&mut self, training: bool) {
        self.layers.iter_mut().for_each(|l| l.set_training(training));
    }
}
