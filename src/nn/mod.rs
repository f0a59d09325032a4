//! Layers as [`Module`]s with PyTorch's parameter layout and names, so a
//! `state_dict()` saved by PyTorch loads here and gives the same outputs.

mod attention;
mod autoencoder;
mod conv;
pub mod loss;
mod norm;
mod normalize;
mod perceptron;
mod pool;
mod rnn;
mod stateless;
mod transformer;

pub use attention::{
    scaled_dot_product_attention, LearnedPositionalEmbedding, MhaConfig, MultiheadAttention,
    SinusoidalPositionalEncoding,
};
pub use autoencoder::Autoencoder;
pub use conv::{fuse_conv_bn_eval, fuse_conv_bn_eval_async, Conv1d, Conv2d, ConvConfig, ConvTranspose2d};
pub use norm::{BatchNorm1d, BatchNorm2d, BatchNormConfig, GroupNorm, LayerNorm};
pub(crate) use normalize::column_stats;
pub use normalize::Normalize;
pub use perceptron::Perceptron;
pub use pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool1d, MaxPool2d};
pub(crate) use rnn::GateProducts;
pub use rnn::{Embedding, Gru, Lstm, LstmState, Nonlinearity, Rnn, RnnConfig};
pub use stateless::{Flatten, Identity, Softmax, Unflatten};
pub use transformer::{Activation, TransformerConfig, TransformerEncoderLayer};

use crate::{DType, Device, Error, Result, Tensor};

/// `#[derive(Module)]`: implements [`ModuleFields`] for a struct from its fields, so
/// that `impl Module for T` needs only `forward`. See the [`Module`] trait's example.
pub use wgnn_derive::Module;

/// Deprecated: `#[derive(Module)]` on the struct names its children by field, and
/// a field cannot be forgotten. This macro still overrides
/// [`Module::named_parameters`] and [`Module::set_training`] with the listed fields
/// inside an `impl Module` block (the struct needs `#[derive(Module)]` all the same:
/// every `Module` is a [`ModuleFields`]).
///
/// ```
/// # #![allow(deprecated)]
/// use wgnn::nn::{Embedding, Linear, Lstm, Module, RnnConfig};
/// use wgnn::{Device, Tensor};
///
/// #[derive(Module)]
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
#[deprecated(since = "0.1.0", note = "put #[derive(Module)] on the struct instead")]
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
            DType::F16 => Err(format!(
                "expects f32 values, the data are f16 of shape {:?} (`float()` widens them)",
                self.shape
            )),
        }
    }
}

/// One member of a module, as [`ModuleFields::members`] lists it.
pub enum Member<'a> {
    /// A child module; its parameters are named `"{member}.{name}"`.
    Child(&'a dyn Module),
    /// A trainable parameter of the module itself.
    Parameter(&'a Tensor),
    /// Non-trainable state (e.g. running statistics): saved and moved, never optimized.
    Buffer(&'a Tensor),
}

/// One member of a module, mutable: [`ModuleFields::members_mut`].
pub enum MemberMut<'a> {
    /// A child module.
    Child(&'a mut dyn Module),
    /// A trainable parameter of the module itself.
    Parameter(&'a mut Tensor),
    /// Non-trainable state of the module itself.
    Buffer(&'a mut Tensor),
}

/// A module's members — child modules, parameters, buffers — by name: what
/// `#[derive(Module)]` writes from a struct's fields (a field of type `Tensor` or
/// `Option<Tensor>` is a parameter, a `Vec` of modules is a list of children named
/// `field.0`, `field.1`, …, `#[module(buffer)]` marks a buffer, `#[module(skip)]` a
/// plain field, any other field is a child). [`Module`]'s default methods —
/// parameter names, buffers, training mode, [`Module::to`] — are built on it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not list its members for `Module`",
    note = "add `#[derive(Module)]` to `{Self}` (it names the child modules and parameters by field; a layer without any derives it too)"
)]
pub trait ModuleFields {
    /// The members, in order (which is the order of `named_parameters`).
    fn members(&self) -> Vec<(String, Member<'_>)>;
    /// The members, mutable, in the same order as [`ModuleFields::members`].
    fn members_mut(&mut self) -> Vec<(String, MemberMut<'_>)>;
}

/// A layer or model: a forward function over named members (child modules,
/// parameters, buffers). `#[derive(Module)]` lists the members from the struct's
/// fields; the `impl` writes `forward` and gets names, parameters, buffers,
/// train/eval and [`Module::to`] from them.
///
/// ```
/// use wgnn::nn::{Linear, Lstm, Module, RnnConfig};
/// use wgnn::{Device, Tensor};
///
/// #[derive(Module)]
/// struct Regressor {
///     lstm: Lstm,
///     head: Linear,
///     #[module(skip)]
///     hidden: usize,
/// }
///
/// impl Module for Regressor {
///     fn forward(&self, x: &Tensor) -> Tensor {
///         let out = self.lstm.forward(x); // [B, T, H] (batch first)
///         let last = out.select(1, out.shape()[1] - 1);
///         self.head.forward(&last)
///     }
/// }
///
/// let dev = Device::cpu();
/// let config = RnnConfig { batch_first: true, ..Default::default() };
/// let net = Regressor { lstm: Lstm::new(1, 8, config, &dev), head: Linear::new(8, 1, &dev), hidden: 8 };
/// let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.bias_ih_l0", "lstm.bias_hh_l0",
///                    "head.weight", "head.bias"]);
/// ```
pub trait Module: ModuleFields {
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

    /// Parameters with the names PyTorch's `state_dict()` would give them: the
    /// module's own, then each child's prefixed with the child's name, in member
    /// order.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, member) in self.members() {
            match member {
                Member::Parameter(t) => out.push((name, t.clone())),
                Member::Child(child) => out.extend(prefixed(&name, child.named_parameters())),
                Member::Buffer(_) => {}
            }
        }
        out
    }

    /// Non-trainable state (running statistics) with PyTorch's `state_dict()` names:
    /// saved and loaded with the parameters, moved by [`Module::to`], never optimized.
    /// By default the module's own buffers and its children's, prefixed.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, member) in self.members() {
            match member {
                Member::Buffer(t) => out.push((name, t.clone())),
                Member::Child(child) => out.extend(prefixed(&name, child.named_buffers())),
                Member::Parameter(_) => {}
            }
        }
        out
    }

    /// The parameters, in `named_parameters` order (frozen ones too, as PyTorch's).
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// The parameters named `prefix` or under it (`"head"` gives `head.weight` and
    /// `head.bias`; `"head.bias"` that one tensor), for a
    /// [`ParamGroup`](crate::optim::ParamGroup) of an optimizer. An error that lists
    /// the parameters' names when none matches.
    fn parameters_under(&self, prefix: &str) -> Result<Vec<Tensor>> {
        let named = self.named_parameters();
        let under = |name: &str| name == prefix || name.strip_prefix(prefix).is_some_and(|r| r.starts_with('.'));
        let found: Vec<Tensor> = named.iter().filter(|(n, _)| under(n)).map(|(_, t)| t.clone()).collect();
        if found.is_empty() {
            let names = named.iter().map(|(n, _)| n.as_str());
            return Err(Error::UnknownName {
                what: "parameter prefix".into(),
                name: prefix.into(),
                valid: names.into_iter().map(String::from).collect(),
                context: String::new(),
            });
        }
        Ok(found)
    }

    /// The parameters that are not frozen: what an optimizer should get after
    /// [`Module::freeze`] of a part of the model.
    fn trainable_parameters(&self) -> Vec<Tensor> {
        self.parameters().into_iter().filter(Tensor::is_trainable).collect()
    }

    /// Freezes every parameter (fine-tuning: freeze a pretrained part, train the
    /// rest): graphs built from now on compute no gradient for them.
    fn freeze(&self) -> Result<()> {
        self.parameters().iter().try_for_each(|p| p.set_requires_grad(false))
    }

    /// Unfreezes every parameter.
    fn unfreeze(&self) -> Result<()> {
        self.parameters().iter().try_for_each(|p| p.set_requires_grad(true))
    }

    /// The layer as [`std::any::Any`], for code that rebuilds layers of known types
    /// (`quantize` turns a `Linear` or a `Conv2d` into its int8 form and folds a
    /// `BatchNorm2d` into the convolution before it): `None` by default; `Linear`,
    /// `Conv2d`, `BatchNorm1d` and `BatchNorm2d` return themselves.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// A short name for summaries and reports, e.g. `Linear(784, 128)` or `ReLU`.
    fn name(&self) -> String {
        let full = std::any::type_name::<Self>();
        full.rsplit("::").next().unwrap_or(full).to_string()
    }

    /// Moves every parameter and buffer to `device` (a copy of its value; trainable
    /// parameters stay trainable). Nothing is moved unless everything can be: on an
    /// error (e.g. a lost device) the module is as it was. Build optimizers after the
    /// move: one built before holds the old tensors.
    fn to(&mut self, device: &Device) -> Result<()> {
        let mut tensors = Vec::new();
        self.collect_tensors(&mut tensors);
        let moved = tensors.iter().map(|t| t.to(device)).collect::<Result<Vec<_>>>()?;
        self.put_tensors(&mut moved.into_iter());
        Ok(())
    }

    /// Every parameter and buffer, depth first in member order (what [`Module::to`]
    /// copies).
    #[doc(hidden)]
    fn collect_tensors(&self, out: &mut Vec<Tensor>) {
        for (_, member) in self.members() {
            match member {
                Member::Parameter(t) | Member::Buffer(t) => out.push(t.clone()),
                Member::Child(child) => child.collect_tensors(out),
            }
        }
    }

    /// Replaces every parameter and buffer, in [`Module::collect_tensors`]' order,
    /// with the next tensor of `with`.
    #[doc(hidden)]
    fn put_tensors(&mut self, with: &mut dyn Iterator<Item = Tensor>) {
        for (_, member) in self.members_mut() {
            match member {
                MemberMut::Parameter(t) | MemberMut::Buffer(t) => {
                    *t = with.next().expect("one tensor per parameter and buffer")
                }
                MemberMut::Child(child) => child.put_tensors(with),
            }
        }
    }

    /// Switches training-only behaviour (e.g. dropout) on or off: by default in
    /// every child.
    fn set_training(&mut self, training: bool) {
        for (_, member) in self.members_mut() {
            if let MemberMut::Child(child) = member {
                child.set_training(training);
            }
        }
    }

    /// Whether the module is in training mode, PyTorch's `module.training`: the flag
    /// of a layer with training-only behaviour (`Dropout`), else whether every child
    /// is in training mode (`true` for a module without any: training is the default).
    /// A module that keeps its own flag in [`Module::set_training`] reports it here.
    fn is_training(&self) -> bool {
        self.members().into_iter().all(|(_, member)| match member {
            Member::Child(child) => child.is_training(),
            _ => true,
        })
    }

    /// The training flag of this module and of every module under it, depth first:
    /// what `fit` puts back ([`Module::restore_training_modes`]) when it ends.
    #[doc(hidden)]
    fn training_modes(&self, out: &mut Vec<bool>) {
        out.push(self.is_training());
        for (_, member) in self.members() {
            if let Member::Child(child) = member {
                child.training_modes(out);
            }
        }
    }

    /// Puts back flags taken by [`Module::training_modes`]: each module's own, then
    /// its children's, so that a model in mixed modes comes back as it was.
    #[doc(hidden)]
    fn restore_training_modes(&mut self, modes: &mut dyn Iterator<Item = bool>) {
        if let Some(own) = modes.next() {
            self.set_training(own);
        }
        for (_, member) in self.members_mut() {
            if let MemberMut::Child(child) = member {
                child.restore_training_modes(modes);
            }
        }
    }

    /// The stack of layers this module is, if it is a [`Sequential`] (per-layer
    /// statistics of `fit`'s report).
    #[doc(hidden)]
    fn as_sequential(&self) -> Option<&Sequential> {
        None
    }

    /// Training mode (the default).
    fn train(&mut self) {
        self.set_training(true)
    }

    /// Evaluation mode.
    fn eval(&mut self) {
        self.set_training(false)
    }
}

thread_local! {
    static INFERENCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every module on this thread behaving as in evaluation mode (no
/// dropout), whatever its training flag: what `Model::evaluate` and `predict` do, so
/// that they take `&self` and leave the model's mode alone.
pub fn inference<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INFERENCE.with(|i| i.set(self.0));
        }
    }
    let _restore = Restore(INFERENCE.with(|i| i.replace(true)));
    f()
}

/// Whether this thread is inside [`inference`]: a module with training-only
/// behaviour checks it beside its training flag.
pub fn inference_mode() -> bool {
    INFERENCE.with(std::cell::Cell::get)
}

/// `(prefix.name, t)` for each `(name, t)`.
fn prefixed(prefix: &str, named: Vec<(String, Tensor)>) -> impl Iterator<Item = (String, Tensor)> + '_ {
    named.into_iter().map(move |(n, t)| (format!("{prefix}.{n}"), t))
}

/// `y = x·Wᵀ + b` with weight `[out, in]` and bias `[out]`, initialised as PyTorch's
/// `nn.Linear` (uniform in ±1/√in), from the thread's seed stream (`wgnn::manual_seed`). As
/// there, `x` may have any rank from 1: `[.., in]` gives `[.., out]` (the leading axes
/// are rows of one product).
#[derive(Module)]
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
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

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
}

/// An elementwise activation layer: a unit struct, its name and its map (f32 in, the
/// same shape out).
macro_rules! activation {
    ($(#[$doc:meta])* $ty:ident, $name:literal, |$x:ident| $map:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, Module)]
        pub struct $ty;

        impl Module for $ty {
            fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
                same_spec(input)
            }
            fn name(&self) -> String {
                $name.into()
            }
            fn forward(&self, $x: &Tensor) -> Tensor {
                $map
            }
        }
    };
}

activation!(
    /// `max(x, 0)` (fused into a preceding `Linear`'s kernel).
    Relu, "ReLU", |x| x.relu()
);
activation!(
    /// Hyperbolic tangent (fused into a preceding `Linear`'s kernel).
    Tanh, "Tanh", |x| x.tanh()
);
activation!(
    /// Logistic function (fused into a preceding `Linear`'s kernel).
    Sigmoid, "Sigmoid", |x| x.sigmoid()
);
activation!(
    /// Heaviside step (the perceptron's activation; zero gradient).
    Step, "Step", |x| x.step()
);
activation!(
    /// GELU in its exact erf form, `x·Φ(x)`, as `nn.GELU()` (PyTorch's default
    /// `approximate='none'`; [`Tensor::gelu_tanh`] is the tanh form).
    Gelu, "GELU", |x| x.gelu()
);

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
#[derive(Clone, Debug, Module)]
pub struct Dropout {
    #[module(skip)]
    p: f32,
    #[module(skip)]
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
        if self.training && !inference_mode() && self.p > 0.0 {
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

    fn is_training(&self) -> bool {
        self.training
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

    /// The layers, taken out of the stack (e.g. to rebuild it with some replaced, as
    /// `quantize::QuantizedSequential` does).
    pub fn into_layers(self) -> Vec<Box<dyn Module>> {
        self.layers
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

    fn as_sequential(&self) -> Option<&Sequential> {
        Some(self)
    }
}

/// The layers are children named by index, as in PyTorch's `nn.Sequential`.
impl ModuleFields for Sequential {
    fn members(&self) -> Vec<(String, Member<'_>)> {
        let layers = self.layers.iter().enumerate();
        layers.map(|(i, l)| (i.to_string(), Member::Child(&**l))).collect()
    }
    fn members_mut(&mut self) -> Vec<(String, MemberMut<'_>)> {
        let layers = self.layers.iter_mut().enumerate();
        layers
            .map(|(i, l)| (i.to_string(), MemberMut::Child(&mut **l)))
            .collect()
    }
}

/// The spec of an elementwise layer: f32 in, the same shape out.
fn same_spec(input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
    input.expect_f32()?;
    Ok(Some(input.clone()))
}

/// The spec of `x · wᵀ (+ b)` for a weight `[out, in]`: `[.., in]` f32 in (usually
/// `[batch, in]`), `[.., out]` out.
pub(crate) fn affine_spec(input: &TensorSpec, weight: &Tensor) -> std::result::Result<TensorSpec, String> {
    input.expect_f32()?;
    let (out, features) = (weight.shape()[0], weight.shape()[1]);
    match input.shape[..] {
        [batch, f] if f == features => Ok(TensorSpec::f32(&[batch, out])),
        [_, f] => Err(format!("expects {features} features, the data has {f}")),
        // Any other rank from 1, as `torch.nn.Linear`: `[.., in]` → `[.., out]`.
        [.., f] if f == features => {
            let mut shape = input.shape.clone();
            *shape.last_mut().expect("rank 1 or more") = out;
            Ok(TensorSpec::f32(&shape))
        }
        _ => Err(format!(
            "expects rows of {features} features (shape [.., {features}]), the data has shape {:?}",
            input.shape
        )),
    }
}
