//! The one error type of wgnn: everything that touches the outside world returns
//! `Result<_, wgnn::Error>`, and each variant names what was wrong and where.

use std::path::PathBuf;

/// Errors returned at every boundary with the outside world.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No wgpu adapter could be found (no GPU, no driver, or the backend mask is empty).
    #[error("no GPU adapter found ({0})")]
    NoAdapter(String),
    /// The adapter was found but the device could not be created.
    #[error("could not create the GPU device on {adapter}: {reason}")]
    DeviceCreation { adapter: String, reason: String },
    /// A GPU operation failed (validation, out of memory, lost device, failed mapping).
    #[error("GPU error in {context}: {reason}")]
    Gpu { context: String, reason: String },
    /// A buffer would exceed what the device allows.
    #[error("{what} needs {needed} bytes but the device allows at most {limit} bytes ({limit_name})")]
    DeviceLimit {
        what: String,
        needed: u64,
        limit: u64,
        limit_name: &'static str,
    },
    /// Data handed to a constructor does not match the shape asked for.
    #[error("{op}: {len} values do not fill shape {shape:?} ({expected} values)")]
    ShapeData {
        op: &'static str,
        len: usize,
        shape: Vec<usize>,
        expected: usize,
    },
    /// Two shapes that must agree do not.
    #[error("{op}: shape {got:?} does not match the expected {expected:?}")]
    ShapeMismatch {
        op: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// A class label is not below the number of classes.
    #[error("{op}: label {label} at index {index} is out of range for {classes} classes")]
    LabelOutOfRange {
        op: &'static str,
        label: u32,
        index: usize,
        classes: usize,
    },
    /// Tensors from different devices were combined.
    #[error("{op}: tensors live on different devices ({a} and {b})")]
    DeviceMismatch { op: &'static str, a: String, b: String },
    /// A parameter was changed in place (by an optimizer step or a load) after a
    /// pending graph read it, so that graph can no longer give the value it had.
    #[error(
        "{0}: a parameter it reads was updated in place after the graph was built; realize the value before the step"
    )]
    StaleParameter(String),
    /// A value was asked for that the graph cannot give (e.g. backward of a non-scalar).
    #[error("{0}")]
    Invalid(String),
    /// A file or stream could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data file is malformed (wrong magic number, truncated payload, bad row).
    #[error("{path}: {reason} (at byte {offset})")]
    Format { path: PathBuf, offset: u64, reason: String },
    /// A model file does not fit the module it is loaded into.
    #[error("cannot load {path} into the module: {}", problems.join("; "))]
    Load { path: PathBuf, problems: Vec<String> },
    /// The safetensors crate refused a file.
    #[error("{path}: safetensors: {reason}")]
    SafeTensors { path: PathBuf, reason: String },
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
