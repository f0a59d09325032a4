//! Layers as [`Module`]s with PyTorch's parameter layout and names, so a
//! `state_dict()` saved by PyTorch loads here and gives the same outputs.

mod autoencoder;
pub mod loss;
mod perceptron;
mod rnn;

pub use autoencoder::Autoencoder;
pub use perceptron::Perceptron;
pub use rnn::{Embedding, Gru, Lstm, LstmState, Nonlinearity, Rnn, RnnConfig};

use crate::{DType, Device, Result, Tensor};

/// Implements [`Module::named_parameters`] and [`Module::set_training`] for a struct of
/// layers, inside its `impl Module` block: parameters get PyTorch's dotted names
/// (`lstm.weight_ih_l0`, `head.bias`), in field order, and training mode reaches
/// every listed field. List the fields that are modules.
///
/// ```
/// use wgnn::nn::{Embedding, Linear, Lstm, Module, RnnConfig};
/// use wgnn::{Device, Tensor};
///
/// struct CharModel {
///     embed: Embedding,
///     lstm: Lstm,
///     head: Linear,
/// }
///
/// impl Module for CharModel {
///     fn forward(&self, ids: &Tensor) -> Tensor {
///         let (b, t) = (ids.shape()[0], ids.shape()[1]);
///         let out = self.lstm.forward(&self.embed.forward(ids)); // [b, t, hidden]
///         self.head.forward(&out.reshape(&[b * t, 16]))
///     }
///     wgnn::module_fields!(embed, lstm, head);
/// }
///
/// let dev = Device::cpu();
/// let cfg = RnnConfig { batch_first: true, ..Default::default() };
/// let m = CharModel {
///     embed: Embedding::new(30, 8, &dev),
///     lstm: Lstm::new(8, 16, cfg, &dev),
///     head: Linear::new(16, 30, &dev),
/// };
/// let names: Vec<String> = m.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names[0], "embed.weight");
/// assert_eq!(names[1], "lstm.weight_ih_l0");
/// assert_eq!(names.last().unwrap(), "head.bias");
/// ```
#[macro_export]
macro_rules! module_fields {
    ($($field:ident),+ $(,)?) => {
        fn named_parameters(&self) -> ::std::vec::Vec<(::std::string::String, $crate::Tensor)> {
            let mut out = ::std::vec::Vec::new();
            $(
                for (name, t) in $crate::nn::Module::named_parameters(&self.$field) {
                    out.push((::std::format!("{}.{}", ::std::stringify!($field), name), t));
                }
            )+
            out
        }

        fn set_training(&mut self, training: bool) {
            $( $crate::nn::Module::set_training(&mut self.$field, training); )+
        }
    };
}

/// The shape and element type of a tensor: what [`Module::output_spec`] checks data
/// against without building a graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The shape, batch axis first.
    pub shape: Vec<usize>,
    /// The element type.
    pub dtype: DType,
}

impl TensorSpec {
    /// An f32 tensor of this shape.
    pub fn f32(shape: &[usize]) -> TensorSpec {
        TensorSpec {
            shape: shape.to_vec(),
            dtype: DType::F32,
        }
    }

    /// The spec of an existing tensor.
    pub fn of(t: &Tensor) -> TensorSpec {
        TensorSpec {
            shape: t.shape().to_vec(),
            dtype: t.dtype(),
        }
    }

    /// `Err` unless the values are f32 (the complaint names what the module expects).
    pub fn expect_f32(&self) -> std::result::Result<(), String> {
        match self.dtype {
            DType::F32 => Ok(()),
            DType::U32 => Err(format!(
                "expects f32 values, the data are u32 labels of shape {:?}",
                self.shape
            )),
        }
    }
}

/// A layer or model: a forward function and named trainable parameters.
pub trait Module {
    /// Applies the module to a batch.
    fn forward(&self, x: &Tensor) -> Tensor;

    /// What `forward` makes of an input of this shape and type, worked out without
    /// building a graph, or why the input does not fit ("expects 3 features, the data
    /// has 4"). `fit`, `evaluate` and `predict` call it on the data's shape so that
    /// data that does not fit the model is an error naming the layer, not a panic.
    ///
    /// `Ok(None)`, the default, means the module does not say: checking stops there,
    /// and a misfit is found when the graph is built (a panic, as for any tensor
    /// expression). Every layer of `wgnn::nn` says.
    fn output_spec(&self, _input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        Ok(None)
    }

    /// Parameters with the names PyTorch's `state_dict()` would give them.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// The trainable parameters, in `named_parameters` order.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// A short name for summaries and reports, e.g. `Linear(784, 128)` or `ReLU`.
    fn name(&self) -> String {
        let full = std::any::type_name::<Self>();
        full.rsplit("::").next().unwrap_or(full).to_string()
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
    /// `[out_features, in_features]`, trainable; `state_dict()` name `weight`.
    pub weight: Tensor,
    /// `[out_features]`, trainable, if the layer has one; `state_dict()` name `bias`.
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

    fn name(&self) -> String {
        let s = self.weight.shape();
        format!("Linear({}, {})", s[1], s[0])
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        affine_spec(input, &self.weight).map(Some)
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
    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        same_spec(input)
    }
    fn name(&self) -> String {
        "ReLU".into()
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.relu()
    }
}
impl Module for Tanh {
    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        same_spec(input)
    }
    fn name(&self) -> String {
        "Tanh".into()
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.tanh()
    }
}
impl Module for Sigmoid {
    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        same_spec(input)
    }
    fn name(&self) -> String {
        "Sigmoid".into()
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.sigmoid()
    }
}
impl Module for Step {
    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        same_spec(input)
    }
    fn name(&self) -> String {
        "Step".into()
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.step()
    }
}
impl Module for Softmax {
    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        same_spec(input)
    }
    fn name(&self) -> String {
        "Softmax".into()
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.softmax(x.shape().len().saturating_sub(1))
    }
}

/// Inverted dropout (Srivastava et al. 2014): in training each activation is zeroed
/// with probability `p` and the survivors are scaled by `1 / (1 − p)`; in evaluation
/// it is the identity.
///
/// The original paper keeps activations unscaled in training and multiplies the
/// weights by `1 − p` at inference instead. Both make the expected input of the next
/// layer equal in training and inference; scaling during training leaves inference
/// untouched (no rescaled copy of the model), which is why PyTorch and Keras do it.
///
/// Each forward call in training draws a fresh key from the global random stream
/// (`wgnn::manual_seed`), so a run is reproducible and the CPU and the GPU drop the
/// same units.
#[derive(Clone, Debug)]
pub struct Dropout {
    p: f32,
    training: bool,
}

impl Dropout {
    /// Dropout with drop probability `p`, in training mode.
    ///
    /// # Panics
    /// If `p` is not in `[0, 1]`.
    #[track_caller]
    pub fn new(p: f32) -> Dropout {
        assert!(
            (0.0..=1.0).contains(&p),
            "nn::Dropout::new: p = {p} is not a probability in [0, 1]"
        );
        Dropout { p, training: true }
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// Whether it currently drops (training mode).
    pub fn is_training(&self) -> bool {
        self.training
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Tensor {
        if self.training && self.p > 0.0 {
            x.dropout(self.p, crate::rng::next_seed())
        } else {
            x.clone()
        }
    }

    fn name(&self) -> String {
        format!("Dropout({})", self.p)
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        same_spec(input)
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
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

    /// The layers, in order.
    pub fn layers(&self) -> &[Box<dyn Module>] {
        &self.layers
    }

    /// One line per layer with its parameter count, and the total, as Keras'
    /// `model.summary()`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut total = 0;
        for (i, layer) in self.layers.iter().enumerate() {
            let n: usize = layer.parameters().iter().map(Tensor::numel).sum();
            total += n;
            out += &format!("{i:>3}  {:<28} {n:>10}\n", layer.name());
        }
        out += &format!("     {:<28} {total:>10}", "total parameters");
        out
    }

    /// The output of every layer for input `x` (the last one is `forward(x)`).
    pub fn trace(&self, x: &Tensor) -> Vec<Tensor> {
        let mut h = x.clone();
        self.layers
            .iter()
            .map(|layer| {
                h = layer.forward(&h);
                h.clone()
            })
            .collect()
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.layers.iter().fold(x.clone(), |h, layer| layer.forward(&h))
    }

    /// Each layer's spec in turn; a misfit names the layer by index and name
    /// ("layer 0 `Linear(3, 8)` expects 3 features, the data has 4").
    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        let mut spec = input.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            match layer.output_spec(&spec) {
                Ok(Some(next)) => spec = next,
                Ok(None) => return Ok(None),
                Err(why) => return Err(format!("layer {i} `{}` {why}", layer.name())),
            }
        }
        Ok(Some(spec))
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

/// The spec of an elementwise layer: f32 in, the same shape out.
fn same_spec(input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
    input.expect_f32()?;
    Ok(Some(input.clone()))
}

/// The spec of `x · wᵀ (+ b)` for a weight `[out, in]`: `[batch, in]` f32 in,
/// `[batch, out]` out.
pub(crate) fn affine_spec(input: &TensorSpec, weight: &Tensor) -> std::result::Result<TensorSpec, String> {
    input.expect_f32()?;
    let (out, features) = (weight.shape()[0], weight.shape()[1]);
    match input.shape[..] {
        [batch, f] if f == features => Ok(TensorSpec::f32(&[batch, out])),
        [_, f] => Err(format!("expects {features} features, the data has {f}")),
        _ => Err(format!(
            "expects rows of {features} features (shape [batch, {features}]), the data has shape {:?}",
            input.shape
        )),
    }
}
