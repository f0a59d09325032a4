//! The one error type of wgnn: everything that touches the outside world returns
//! `Result<_, wgnn::Error>`, and each variant names what was wrong and where.

use std::path::PathBuf;

/// Errors returned at every boundary with the outside world. Non-exhaustive: new
/// kinds of error are added without a breaking change, so a `match` needs a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No wgpu adapter could be found (no GPU, no driver, or the backend mask is
    /// empty): returned by `Device::gpu` and the like; `Device::best` falls back to the
    /// CPU instead.
    #[error("no GPU adapter found ({0})")]
    NoAdapter(String),
    /// The adapter was found but the device could not be created (it refused the
    /// features or limits asked for).
    #[error("could not create the GPU device on {adapter}: {reason}")]
    DeviceCreation {
        /// The adapter's name, as the driver reports it.
        adapter: String,
        /// wgpu's message.
        reason: String,
    },
    /// A GPU operation failed (validation, out of memory, lost device, failed mapping):
    /// while compiling a kernel, running a plan or reading a buffer back.
    #[error("GPU error in {context}: {reason}")]
    Gpu {
        /// What was being done (e.g. "mapping a readback buffer").
        context: String,
        /// wgpu's message.
        reason: String,
    },
    /// A buffer would exceed what the device allows (checked before it is created).
    #[error("{what} needs {needed} bytes but the device allows at most {limit} bytes ({limit_name})")]
    DeviceLimit {
        /// What the buffer was for.
        what: String,
        /// Bytes the buffer needs.
        needed: u64,
        /// Bytes the device allows.
        limit: u64,
        /// The name of the wgpu limit (e.g. `max_storage_buffer_binding_size`).
        limit_name: &'static str,
    },
    /// Data handed to a constructor, or to `Tensor::assign`, does not have as many
    /// values as the shape asked for.
    #[error("{op}: {len} values do not fill shape {shape:?} ({expected} values)")]
    ShapeData {
        /// The function that was called.
        op: &'static str,
        /// Values given.
        len: usize,
        /// The shape asked for.
        shape: Vec<usize>,
        /// Values the shape holds.
        expected: usize,
    },
    /// Two shapes that must agree do not (e.g. a gradient and its parameter in an
    /// optimizer step, or the row counts of inputs and targets in a `DataLoader`).
    #[error("{op}: shape {got:?} does not match the expected {expected:?}")]
    ShapeMismatch {
        /// Where the shapes met.
        op: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape given.
        got: Vec<usize>,
    },
    /// A class label is not below the number of classes (cross-entropy when it is
    /// computed, metrics, the perceptron).
    #[error("{op}: label {label} at index {index} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The function that read the label.
        op: &'static str,
        /// The offending label.
        label: u32,
        /// Its position among the labels.
        index: usize,
        /// Number of classes: labels must be below it.
        classes: usize,
    },
    /// Tensors from different devices were combined in one graph (found when it is
    /// realized).
    #[error("{op}: tensors live on different devices ({a} and {b})")]
    DeviceMismatch {
        /// The function that found them.
        op: &'static str,
        /// One device.
        a: String,
        /// The other device.
        b: String,
    },
    /// A parameter was changed in place (by an optimizer step or a load) after a
    /// pending graph read it, so that graph can no longer give the value it had.
    #[error(
        "{0}: a parameter it reads was updated in place after the graph was built; realize the value before the step"
    )]
    StaleParameter(String),
    /// An argument or request that cannot be honoured: a value the graph cannot give
    /// (e.g. backward of a non-scalar), or a bad setting (zero epochs, an empty search
    /// space, a callback monitoring a log that is not computed, …). The message says
    /// which.
    #[error("{0}")]
    Invalid(String),
    /// A name that is none of the valid ones: a device (`WGNN_DEVICE`), a metric, the
    /// log a callback monitors, a parameter path. `valid` lists what would have been
    /// accepted, for a "did you mean".
    #[error("unknown {what} '{name}'{context}; the valid names are: {}", valid.join(", "))]
    UnknownName {
        /// What kind of name (`"device"`, `"metric"`, `"parameter prefix"`).
        what: String,
        /// The name given.
        name: String,
        /// Every name that is valid there.
        valid: Vec<String>,
        /// Where it was given, when that helps (`" (callback 1 monitors it)"`); often empty.
        context: String,
    },
    /// A setting outside what it can be: zero epochs, a batch size of 0, a validation
    /// split that leaves no rows, a schedule that does not start from the optimizer's
    /// rate, a parameter group with no tensor or a tensor in two groups.
    #[error("{message}")]
    InvalidSetting {
        /// Which setting, named as the caller wrote it (`"epochs"`, `"batch_size"`,
        /// `"validation_split"`, `"lr schedule"`, `"param groups"`).
        setting: &'static str,
        /// What is wrong with it and where, in full.
        message: String,
    },
    /// An optimizer was asked to update a parameter that is frozen
    /// (`Tensor::set_requires_grad(false)`, `Module::freeze`); nothing was updated.
    #[error(
        "optimizer step: parameter {index} (shape {shape:?}) is frozen; build the optimizer from the \
         trainable ones (Module::trainable_parameters)"
    )]
    FrozenParameter {
        /// Its position in the optimizer's parameters.
        index: usize,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A saved state (an optimizer's, a schedule's, a callback's) does not fit what
    /// it is loaded into; nothing was changed.
    #[error("{what}: the state does not fit: {}", problems.join("; "))]
    StateMismatch {
        /// What it was loaded into.
        what: String,
        /// Every mismatch, one each.
        problems: Vec<String>,
    },
    /// A read of a tensor as nested rows, or as one value, of another rank or size.
    #[error("{op}: needs a tensor of {needs}, this one has shape {shape:?}")]
    WrongRank {
        /// The method (`"Tensor::to_vec2"`).
        op: &'static str,
        /// What it needs (`"rank 2"`, `"one element"`).
        needs: String,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// A file or stream could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// A data file is malformed (wrong magic number, truncated payload, bad row).
    #[error("{path}: {reason} (at byte {offset})")]
    Format {
        /// The file.
        path: PathBuf,
        /// Where in the (decompressed) stream the problem was found.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A model file does not fit the module it is loaded into (missing or unexpected
    /// tensors, wrong shapes or dtypes); nothing is loaded then.
    #[error("cannot load {path} into the module: {}", problems.join("; "))]
    Load {
        /// The file.
        path: PathBuf,
        /// Every mismatch found, one message each.
        problems: Vec<String>,
    },
    /// The safetensors crate refused a file (when saving, or parsing one to load).
    #[error("{path}: safetensors: {reason}")]
    SafeTensors {
        /// The file.
        path: PathBuf,
        /// The safetensors crate's message.
        reason: String,
    },
    /// Data given to a model (`fit`, `evaluate`, `predict`) does not fit it: the reason
    /// names the layer, what it expects and what the data has.
    #[error("{op}: {reason}")]
    DataShape {
        /// The function that was called.
        op: String,
        /// What does not fit, e.g. "layer 0 `Linear(3, 8)` expects 3 features, the
        /// data has 4".
        reason: String,
    },
    /// A NaN or infinite value in data given to a model, at the first place it occurs.
    #[error("{op}: the {what} hold {value} at row {row}, column {column}; remove or impute it first")]
    NonFiniteData {
        /// The function that was called.
        op: String,
        /// `features` or `targets`.
        what: &'static str,
        /// The row (sample) index.
        row: usize,
        /// The index of the value within its row (flattened for rows of rank > 1).
        column: usize,
        /// The value found.
        value: f32,
    },
    /// NaN-check mode (`WGNN_CHECK_NAN=1` or `Device::set_check_nan`): a node of the
    /// graph computed NaN or ±Inf. It is the first such node in execution order, so
    /// its inputs were finite (or came from outside the plan). Nothing of the plan was
    /// kept and no in-place update ran.
    #[error(
        "{op} {shape:?} built at {location} produced {value} at index {index} ({count} of its {numel} values are not finite); it is the first node of the plan to produce a non-finite value"
    )]
    NonFinite {
        /// The op (e.g. `Unary(Log)`).
        op: String,
        /// The node's shape.
        shape: Vec<usize>,
        /// The source line of the builder call (`file:line:column`); for a gradient
        /// node, the forward node whose backward built it.
        location: String,
        /// The first non-finite value (NaN, inf or -inf).
        value: f32,
        /// Its flat index.
        index: usize,
        /// How many of the node's values are not finite.
        count: usize,
        /// The node's number of values.
        numel: usize,
    },
    /// Shadow mode (`WGNN_SHADOW=1` or `Device::set_shadow`): a node computed on the
    /// GPU differs from the CPU reference run of the same kernels on the same inputs
    /// by more than the tolerance. It is the first such node in execution order.
    #[error(
        "{op} {shape:?} built at {location} differs between the GPU and the CPU reference: at index {index} the GPU gave {gpu}, the CPU {cpu} (max abs diff {max_abs:e}, max rel diff {max_rel:e}; tolerance abs {atol:e} + rel {rtol:e})"
    )]
    Divergence {
        /// The op.
        op: String,
        /// The node's shape.
        shape: Vec<usize>,
        /// The source line of the builder call, as in [`Error::NonFinite`].
        location: String,
        /// The flat index of the worst value.
        index: usize,
        /// The GPU's value there.
        gpu: f32,
        /// The CPU reference's value there.
        cpu: f32,
        /// Largest `|gpu - cpu|` over the node.
        max_abs: f32,
        /// Largest `|gpu - cpu| / |cpu|` over the node.
        max_rel: f32,
        /// Absolute tolerance.
        atol: f32,
        /// Relative tolerance.
        rtol: f32,
    },
    /// The GPU device was lost (driver reset, device removed or destroyed) or its
    /// device reported an unrecoverable error. Every value on it is gone; nothing of
    /// the failed step was applied.
    #[error(
        "the GPU device was lost ({reason}); its buffers are gone. Resume on a fresh device: create one (Device::gpu_with_backends, or Device::cpu), build the model and optimizer on it and load your last checkpoint with wgnn::io::load_checkpoint(&mut model, &mut opt, path)"
    )]
    DeviceLost {
        /// What the driver or wgpu reported.
        reason: String,
    },
    /// Distributed training failed: ranks out of step, a message too large for MPI,
    /// or a rank that can take part in no more collectives after an earlier failure.
    #[error("distributed training: {0}")]
    Distributed(String),
    /// A blocking call in a browser (wasm32), whose thread cannot wait for the GPU:
    /// reading a GPU value back is only possible with the async form.
    #[error("{what} would wait for the GPU, which a browser tab cannot do: use {instead}")]
    WouldBlock {
        /// The blocking call (e.g. `Tensor::to_vec`).
        what: &'static str,
        /// Its async form (e.g. `Tensor::to_vec_async`).
        instead: &'static str,
    },
}

/// `Result` with [`Error`] as its error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn format(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}
