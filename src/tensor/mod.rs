//! `Tensor`: a handle to a node of the lazy graph. Building ops records nodes;
//! nothing runs until a value is read (`to_vec`) or an optimizer step is applied.

mod axis;

pub use axis::Axis;

use std::cell::Cell;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::backend::Storage;
use crate::ops::{Fill, Op};
use crate::{Device, Error, Result};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit floats: data, parameters, activations.
    F32,
    /// Class indices (stored as 32-bit words like f32 data).
    U32,
    /// Half-precision floats (IEEE binary16), packed two to a 32-bit word, the lower
    /// half first: the inputs of mixed-precision GEMMs ([`Tensor::half`],
    /// [`crate::amp`]). Only [`Tensor::float`], matmuls, reshapes and reads take them.
    F16,
}

impl DType {
    /// The 32-bit words `numel` elements of this type take.
    pub(crate) fn words(self, numel: usize) -> usize {
        match self {
            DType::F32 | DType::U32 => numel,
            DType::F16 => numel.div_ceil(2),
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Where a node was built, for the errors of the numerical debugging modes: the
/// source line of the builder call (the public builders are `#[track_caller]`), and
/// for a node of a backward pass, the forward node whose gradient rule built it.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    pub at: &'static Location<'static>,
    /// The forward node, for gradient nodes (weak: it must not keep it alive).
    pub grad_of: Option<Weak<Node>>,
}

thread_local! {
    /// The forward node whose gradient rule is being expanded on this thread.
    static GRAD_OF: Cell<Option<Weak<Node>>> = const { Cell::new(None) };
}

impl Origin {
    #[track_caller]
    fn here() -> Origin {
        let grad_of = GRAD_OF.with(|c| {
            let current = c.take();
            c.set(current.clone());
            current
        });
        Origin {
            at: Location::caller(),
            grad_of,
        }
    }

    /// Until the guard is dropped, nodes built on this thread are gradient nodes of
    /// `forward` (autograd holds it while expanding `forward`'s gradient rule).
    pub(crate) fn backward_of(forward: &Tensor) -> BackwardOf {
        BackwardOf(GRAD_OF.with(|c| c.replace(Some(Arc::downgrade(&forward.0)))))
    }
}

/// Restores the previous attribution when dropped (see [`Origin::backward_of`]).
pub(crate) struct BackwardOf(Option<Weak<Node>>);

impl Drop for BackwardOf {
    fn drop(&mut self) {
        GRAD_OF.with(|c| c.set(self.0.take()));
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.grad_of.as_ref().and_then(Weak::upgrade) {
            None => write!(f, "{}", self.at),
            Some(forward) => write!(
                f,
                "{} (in the backward of the {:?} built at {})",
                self.at, forward.op, forward.origin
            ),
        }
    }
}

/// One node of the graph.
pub(crate) struct Node {
    pub id: u64,
    pub op: Op,
    pub inputs: Vec<Tensor>,
    /// Versions of leaf inputs when this node was built (0 for non-leaves).
    pub input_versions: Vec<u64>,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub device: Device,
    /// The source line that built it.
    pub origin: Origin,
    pub requires_grad: AtomicBool,
    /// The realized value, once computed (always set for leaves).
    pub storage: Mutex<Option<Storage>>,
    /// Bumped whenever a leaf is written in place.
    pub version: AtomicU64,
    /// For label leaves: the largest label, checked against the class count.
    pub max_label: Option<(u32, usize)>,
    /// For an op with several outputs: its outputs after the first (`Op::Output`
    /// nodes that read it), weakly, so plans realize them together.
    pub others: OnceLock<Vec<Weak<Node>>>,
}

/// A lazily evaluated n-dimensional array of f32 (or u32 class labels) on a [`Device`].
///
/// Cloning is cheap (a reference count). Arithmetic is available on references:
/// `&a + &b`, `&a * &b`, ….
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Node>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({}, {:?}, {:?})",
            self.0.op.name(),
            self.0.shape,
            self.0.dtype
        )
    }
}

/// What the panic for f16 data given to another op adds.
const F16_TAKERS: &str = " (only matmul, reshape and `float()` take f16)";

pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    #[track_caller]
    pub(crate) fn from_node(op: Op, inputs: Vec<Tensor>, shape: Vec<usize>, dtype: DType) -> Tensor {
        let device = inputs
            .first()
            .map(|t| t.0.device.clone())
            .expect("an op node has inputs");
        Tensor::new_node(op, inputs, shape, dtype, device)
    }

    /// A node of an op with several outputs: the first output is the node itself,
    /// output `k` an `Op::Output` node reading it. One kernel writes them all.
    #[track_caller]
    pub(crate) fn from_node_outputs(op: Op, inputs: Vec<Tensor>, outputs: Vec<(Vec<usize>, DType)>) -> Vec<Tensor> {
        let mut outputs = outputs.into_iter();
        let (shape, dtype) = outputs.next().expect("an op has an output");
        let first = Tensor::from_node(op, inputs, shape, dtype);
        let mut all = vec![first.clone()];
        for (index, (shape, dtype)) in outputs.enumerate() {
            let op = Op::Output(crate::ops::Output { index: index + 1 });
            all.push(Tensor::from_node(op, vec![first.clone()], shape, dtype));
        }
        let others = all[1..].iter().map(|t| Arc::downgrade(&t.0)).collect();
        first.0.others.set(others).expect("a new node has no outputs yet");
        all
    }

    /// The other outputs of a multi-output node that are still held somewhere.
    pub(crate) fn other_outputs(&self) -> Vec<Option<Tensor>> {
        self.0
            .others
            .get()
            .map_or_else(Vec::new, |o| o.iter().map(|w| w.upgrade().map(Tensor)).collect())
    }

    #[track_caller]
    pub(crate) fn new_node(op: Op, inputs: Vec<Tensor>, shape: Vec<usize>, dtype: DType, device: Device) -> Tensor {
        if let Some(t) = inputs.iter().find(|t| t.dtype() == DType::F16) {
            assert!(
                matches!(op, Op::MatMul(_) | Op::Cast(_) | Op::Reshape | Op::Detach),
                "{}: expects f32 data, got an f16 tensor of shape {:?}{F16_TAKERS}",
                op.name(),
                t.shape()
            );
        }
        let requires_grad = inputs.iter().any(|t| t.is_trainable());
        let input_versions = inputs
            .iter()
            .map(|t| {
                if t.0.op == Op::Leaf {
                    t.0.version.load(Ordering::Acquire)
                } else {
                    0
                }
            })
            .collect();
        Tensor(Arc::new(Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            op,
            inputs,
            input_versions,
            shape,
            dtype,
            device,
            origin: Origin::here(),
            requires_grad: AtomicBool::new(requires_grad),
            storage: Mutex::new(None),
            version: AtomicU64::new(0),
            max_label: None,
            others: OnceLock::new(),
        }))
    }

    #[track_caller]
    pub(crate) fn leaf(
        storage: Storage,
        shape: Vec<usize>,
        dtype: DType,
        device: &Device,
        max_label: Option<(u32, usize)>,
    ) -> Tensor {
        Tensor(Arc::new(Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            op: Op::Leaf,
            inputs: Vec::new(),
            input_versions: Vec::new(),
            shape,
            dtype,
            device: device.clone(),
            origin: Origin::here(),
            requires_grad: AtomicBool::new(false),
            storage: Mutex::new(Some(storage)),
            version: AtomicU64::new(0),
            max_label,
            others: OnceLock::new(),
        }))
    }

    /// A tensor holding `data` in row-major order; `data.len()` must equal the
    /// product of `shape`.
    #[track_caller]
    pub fn from_vec(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
        let expected = numel(shape);
        if data.len() != expected {
            return Err(Error::ShapeData {
                op: "Tensor::from_vec",
                len: data.len(),
                shape: shape.to_vec(),
                expected,
            });
        }
        let storage = device.backend().stage(data)?;
        Ok(Tensor::leaf(storage, shape.to_vec(), DType::F32, device, None))
    }

    /// A tensor from nested arrays or vectors of `f32`, its shape theirs:
    /// `Tensor::new(&[[1.0, 2.0], [3.0, 4.0]], &dev)?` is `[2, 2]` (rank 1 to 4 and
    /// beyond). Nested arrays are regular by their type; nested `Vec`s of unequal
    /// lengths are an error naming the first row that differs.
    #[track_caller]
    pub fn new<D: TensorData + ?Sized>(data: &D, device: &Device) -> Result<Tensor> {
        let shape = data.data_shape()?;
        let mut flat = Vec::with_capacity(numel(&shape));
        data.flatten_into(&mut flat);
        Tensor::from_vec(flat, &shape, device)
    }

    /// A tensor holding a copy of `data` in row-major order (see [`Tensor::from_vec`]).
    #[track_caller]
    pub fn from_slice(data: &[f32], shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// A 1-D tensor of class indices, for `cross_entropy` and metrics.
    #[track_caller]
    pub fn from_labels(labels: &[u32], device: &Device) -> Result<Tensor> {
        Tensor::from_labels_shaped(labels, &[labels.len()], device)
    }

    /// A leaf of u32 values of any shape (`labels.len()` is its element count): a
    /// label tensor, or an integer buffer such as batch norm's `num_batches_tracked`.
    #[track_caller]
    pub(crate) fn from_labels_shaped(labels: &[u32], shape: &[usize], device: &Device) -> Result<Tensor> {
        debug_assert_eq!(labels.len(), numel(shape), "one label per element");
        let data: Vec<f32> = labels.iter().map(|&l| f32::from_bits(l)).collect();
        let storage = device.backend().stage(data)?;
        let max_label = labels
            .iter()
            .copied()
            .enumerate()
            .max_by_key(|&(i, l)| (l, std::cmp::Reverse(i)))
            .map(|(i, l)| (l, i));
        Ok(Tensor::leaf(storage, shape.to_vec(), DType::U32, device, max_label))
    }

    /// A tensor filled with `value`, generated on the device (nothing is uploaded).
    #[track_caller]
    pub fn full(shape: &[usize], value: f32, device: &Device) -> Tensor {
        Tensor::new_node(
            Op::Fill(Fill(value)),
            Vec::new(),
            shape.to_vec(),
            DType::F32,
            device.clone(),
        )
    }

    /// Zeros of the given shape (generated on the device).
    #[track_caller]
    pub fn zeros(shape: &[usize], device: &Device) -> Tensor {
        Tensor::full(shape, 0.0, device)
    }

    /// Ones of the given shape (generated on the device).
    #[track_caller]
    pub fn ones(shape: &[usize], device: &Device) -> Tensor {
        Tensor::full(shape, 1.0, device)
    }

    /// Uniform values in `[low, high)` from a counter-based generator keyed by `seed`
    /// (the same seed gives the same values on every device).
    #[track_caller]
    pub fn rand(shape: &[usize], low: f32, high: f32, seed: u64, device: &Device) -> Result<Tensor> {
        let data = crate::rng::uniform(seed, numel(shape), low, high);
        Tensor::from_vec(data, shape, device)
    }

    /// Standard normal values from a counter-based generator keyed by `seed`.
    #[track_caller]
    pub fn randn(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
        let data = crate::rng::normal(seed, numel(shape));
        Tensor::from_vec(data, shape, device)
    }

    /// Marks a leaf as trainable: `backward` returns its gradient and optimizers may
    /// update it in place. Its data moves into a resident device buffer.
    pub fn requires_grad(self) -> Result<Tensor> {
        if self.0.op != Op::Leaf {
            return Err(Error::Invalid(
                "requires_grad: only leaf tensors (made from data) can be trainable".into(),
            ));
        }
        {
            let mut storage = self.0.storage.lock().unwrap();
            let current = storage.take().expect("a leaf has storage");
            *storage = Some(self.0.device.backend().make_resident(current)?);
        }
        self.0.requires_grad.store(true, Ordering::Release);
        Ok(self)
    }

    /// Moves a leaf's value into a resident device buffer, in place: uploaded once
    /// here instead of by every plan that reads it (what `fit` does to a data set it
    /// batches on the device). Returns the values it found staged on the host (so
    /// the caller can check them without a readback), `None` when the value was
    /// resident already or the tensor is not a leaf. On an error the leaf is
    /// unchanged.
    pub(crate) fn keep_resident(&self) -> Result<Option<Vec<f32>>> {
        if self.0.op != Op::Leaf {
            return Ok(None);
        }
        let mut storage = self.0.storage.lock().unwrap();
        let current = storage.take().expect("a leaf has storage");
        let staged = match &current {
            Storage::Host(values) => Some(values.to_vec()),
            _ => None,
        };
        match self.0.device.backend().make_resident(current.clone()) {
            Ok(resident) => *storage = Some(resident),
            Err(e) => {
                *storage = Some(current);
                return Err(e);
            }
        }
        Ok(staged)
    }

    /// Freezes (`false`) or unfreezes (`true`) a leaf, as PyTorch's
    /// `requires_grad_`: graphs built from now on compute no gradient for a frozen
    /// tensor, and an optimizer refuses to step it. Errors for a tensor computed
    /// from others (only leaves are trainable) and, unfreezing, when the device
    /// cannot hold its value.
    pub fn set_requires_grad(&self, on: bool) -> Result<()> {
        if on {
            return self.clone().requires_grad().map(|_| ());
        }
        if self.0.op != Op::Leaf {
            return Err(Error::Invalid(
                "set_requires_grad: only leaf tensors (made from data) can be frozen".into(),
            ));
        }
        self.0.requires_grad.store(false, Ordering::Release);
        Ok(())
    }

    /// Whether gradients flow to this tensor.
    pub fn is_trainable(&self) -> bool {
        self.0.requires_grad.load(Ordering::Acquire)
    }

    /// The shape (row-major).
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }

    /// Whether this is a node whose value is not computed yet (never a leaf): what a
    /// plan computes, and what a builder may still rewrite.
    pub(crate) fn is_pending(&self) -> bool {
        self.0.op != Op::Leaf && self.0.storage.lock().unwrap().is_none()
    }

    /// A leaf's version (bumped by every in-place update), `None` for other nodes.
    pub(crate) fn leaf_version(&self) -> Option<u64> {
        (self.0.op == Op::Leaf).then(|| self.0.version.load(Ordering::Acquire))
    }

    /// The 32-bit words the value takes (the element count, half of it for f16).
    pub(crate) fn words(&self) -> usize {
        self.0.dtype.words(self.numel())
    }

    /// The device the tensor lives on.
    pub fn device(&self) -> &Device {
        &self.0.device
    }

    /// A stable identity for this node (used to look up gradients).
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Overwrites a leaf's data in place (e.g. when loading weights); pending graphs
    /// that read the old value will report [`Error::StaleParameter`].
    pub fn assign(&self, data: &[f32]) -> Result<()> {
        if self.0.op != Op::Leaf {
            return Err(Error::Invalid("assign: only leaf tensors can be overwritten".into()));
        }
        if data.len() != self.numel() {
            return Err(Error::ShapeData {
                op: "Tensor::assign",
                len: data.len(),
                shape: self.shape().to_vec(),
                expected: self.numel(),
            });
        }
        let mut storage = self.0.storage.lock().unwrap();
        let current = storage.take().expect("a leaf has storage");
        let backend = self.0.device.backend();
        let updated = backend.overwrite(current.clone(), data);
        match updated {
            Ok(s) => *storage = Some(s),
            Err(e) => {
                *storage = Some(current);
                return Err(e);
            }
        }
        self.0.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

impl Tensor {
    /// Panics (at the caller) unless this is f32 data.
    #[track_caller]
    pub(crate) fn check_f32(&self, op: &str) {
        assert!(
            self.dtype() == DType::F32,
            "{op}: expects f32 data, got {} of shape {:?}{}",
            if self.dtype() == DType::F16 {
                "an f16 tensor"
            } else {
                "a label tensor"
            },
            self.shape(),
            if self.dtype() == DType::F16 { F16_TAKERS } else { "" }
        );
    }

    /// Panics (at the caller) unless both operands live on the same device.
    #[track_caller]
    pub(crate) fn check_same_device(&self, other: &Tensor, op: &str) {
        assert!(
            self.device().same(other.device()),
            "{op}: operands live on different devices ({} and {}); shapes {:?} and {:?}",
            self.device(),
            other.device(),
            self.shape(),
            other.shape()
        );
    }

    /// A leaf in a resident device buffer (optimizer state, hyper-parameters).
    #[track_caller]
    pub(crate) fn resident(data: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
        let backend = device.backend();
        let storage = backend.make_resident(backend.stage(data)?)?;
        Ok(Tensor::leaf(storage, shape.to_vec(), DType::F32, device, None))
    }
}

/// Nested arrays, slices or vectors of `f32` that [`Tensor::new`] takes: their shape
/// and their values in row-major order.
pub trait TensorData {
    /// The shape, outermost axis first; an error for rows of unequal lengths.
    fn data_shape(&self) -> Result<Vec<usize>>;
    /// Appends the values, row-major.
    fn flatten_into(&self, out: &mut Vec<f32>);
}

impl TensorData for f32 {
    fn data_shape(&self) -> Result<Vec<usize>> {
        Ok(Vec::new())
    }
    fn flatten_into(&self, out: &mut Vec<f32>) {
        out.push(*self);
    }
}

impl<T: TensorData> TensorData for [T] {
    fn data_shape(&self) -> Result<Vec<usize>> {
        let mut shape = vec![self.len()];
        if let Some(first) = self.first() {
            let inner = first.data_shape()?;
            for (i, row) in self.iter().enumerate().skip(1) {
                let got = row.data_shape()?;
                if got != inner {
                    return Err(Error::Invalid(format!(
                        "Tensor::new: ragged data: row {i} has shape {got:?}, row 0 has {inner:?}"
                    )));
                }
            }
            shape.extend(inner);
        }
        Ok(shape)
    }
    fn flatten_into(&self, out: &mut Vec<f32>) {
        self.iter().for_each(|row| row.flatten_into(out));
    }
}

impl<T: TensorData, const N: usize> TensorData for [T; N] {
    fn data_shape(&self) -> Result<Vec<usize>> {
        self[..].data_shape()
    }
    fn flatten_into(&self, out: &mut Vec<f32>) {
        self[..].flatten_into(out)
    }
}

impl<T: TensorData> TensorData for Vec<T> {
    fn data_shape(&self) -> Result<Vec<usize>> {
        self[..].data_shape()
    }
    fn flatten_into(&self, out: &mut Vec<f32>) {
        self[..].flatten_into(out)
    }
}
