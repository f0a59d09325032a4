//! [`DataLoader`]: mini-batches over in-memory data, with seeded shuffling.
//!
//! Batch gradient descent, mini-batch and stochastic gradient descent are one setting
//! here: `batch_size = n`, `1 < batch_size < n`, and `batch_size = 1`. A last partial
//! batch has its own shape, so it gets its own plan, compiled once and then taken from
//! the plan cache every epoch.
//!
//! Rows live where they were given: tensors already on the device stay there and each
//! batch is gathered there by index ([`DataLoader::on_device`]; only the batch's row
//! numbers cross the bus), host rows are copied into batches on a background thread
//! while the device works (see `prefetch.rs`).

use std::sync::Arc;

use super::prefetch::{Batch, HostRows};
use super::{permutation, Dataset};
use crate::tensor::DType;
use crate::{Device, Error, Result, Tensor};

/// Where a loader's rows live.
#[derive(Clone, Debug)]
enum Rows {
    /// On the host: batches are copied out and uploaded.
    Host(HostRows),
    /// On a device: batches are gathered there (`index_select`).
    Device {
        x: Tensor,
        y: Tensor,
        w: Option<Tensor>,
        /// What was found scanning the values that were still on the host.
        scan: Scan,
    },
}

/// The checks of device rows done on the host, from values that were staged there
/// before their one upload (`None`: the value was resident, check it on the device).
#[derive(Clone, Debug, Default)]
struct Scan {
    /// The first non-finite input or f32 target, if any.
    bad_value: Option<Option<(&'static str, usize, usize, f32)>>,
    /// The labels (as words), to check against the number of classes.
    labels: Option<Arc<Vec<f32>>>,
}

/// The target types of a [`Dataset`]: u32 class labels and f32 regression values.
pub trait Target: Copy + sealed::Sealed {
    /// The tensor type of the targets.
    const DTYPE: DType;
    /// The target as the 32-bit word a tensor stores.
    fn word(self) -> f32;
}

impl Target for u32 {
    const DTYPE: DType = DType::U32;
    fn word(self) -> f32 {
        f32::from_bits(self)
    }
}

impl Target for f32 {
    const DTYPE: DType = DType::F32;
    fn word(self) -> f32 {
        self
    }
}

mod sealed {
    /// Only the target types wgnn knows.
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for f32 {}
}

/// Mini-batches of `(x, y)` rows, reshuffled every epoch when a seed is given.
#[derive(Clone, Debug)]
pub struct DataLoader {
    rows: Rows,
    x_row: Vec<usize>,
    y_row: Vec<usize>,
    y_dtype: DType,
    n: usize,
    batch_size: usize,
    shuffle: Option<u64>,
    drop_last: bool,
    epoch: u64,
    /// This process's rank and the number of ranks: each global batch of
    /// `batch_size · ranks` rows is cut into equal parts, one per rank.
    shard: (usize, usize),
    /// Whether host rows are batched on a background thread.
    prefetch: bool,
}

/// Checks that `x` and `y` have the same number of rows.
fn same_rows(x: &Tensor, y: &Tensor) -> Result<()> {
    let (n, ny) = (x.shape().first().copied(), y.shape().first().copied());
    if n.is_none() || n != ny {
        return Err(Error::ShapeMismatch {
            op: "DataLoader::new: x and y must have the same number of rows".into(),
            expected: x.shape().to_vec(),
            got: y.shape().to_vec(),
        });
    }
    Ok(())
}

impl DataLoader {
    /// Batches of rows of `x` (`[n, …]`) with the matching rows of `y` (labels `[n]`
    /// or values `[n, …]`). Both are read to the host once, and batches are copied
    /// out there (on a background thread) and uploaded.
    pub fn new(x: &Tensor, y: &Tensor, batch_size: usize) -> Result<DataLoader> {
        same_rows(x, y)?;
        let y_words = match y.dtype() {
            DType::U32 => y.to_labels()?.into_iter().map(f32::from_bits).collect(),
            DType::F32 | DType::F16 => y.to_vec()?,
        };
        DataLoader::from_parts(x.to_vec()?, x.shape(), y_words, y.shape(), y.dtype(), batch_size)
    }

    /// Batches of rows of `x` and `y` gathered where they are, on their device
    /// (`index_select`): data still on the host is uploaded once, into buffers that
    /// stay on the device, and is never read back or uploaded again; each batch
    /// uploads only its row numbers. What `fit` does with tensors that live on
    /// the model's device. A batch asked for on another device is copied there.
    ///
    /// # Errors
    /// If `x` and `y` differ in rows or devices, there are no rows, or `batch_size`
    /// is 0.
    pub fn on_device(x: &Tensor, y: &Tensor, batch_size: usize) -> Result<DataLoader> {
        same_rows(x, y)?;
        if !x.device().same(y.device()) {
            return Err(Error::DeviceMismatch {
                op: "DataLoader::on_device (x and y)",
                a: x.device().to_string(),
                b: y.device().to_string(),
            });
        }
        // Computed values are computed once, data from the host uploaded once (and
        // checked there, where NaN is NaN; a GPU may assume finite values).
        x.realize()?;
        y.realize()?;
        let (xs, ys) = (x.keep_resident()?, y.keep_resident()?);
        let labels = y.dtype() == DType::U32;
        let row = |t: &Tensor| t.shape()[1..].to_vec();
        let scan = Scan {
            bad_value: match (&xs, &ys) {
                (Some(xs), Some(ys)) => Some(super::checks::first_non_finite_host(xs, &row(x), ys, &row(y), labels)),
                _ => None,
            },
            labels: ys.filter(|_| labels).map(Arc::new),
        };
        let rows = Rows::Device {
            x: x.clone(),
            y: y.clone(),
            w: None,
            scan,
        };
        DataLoader::with_rows(rows, x.shape(), y.shape(), y.dtype(), batch_size)
    }

    /// Batches of inputs only (for prediction): the targets are empty `[batch, 0]`
    /// tensors, and `x` is read to the host once.
    pub(crate) fn inputs(x: &Tensor, batch_size: usize) -> Result<DataLoader> {
        let n = x.shape().first().copied().unwrap_or(0);
        DataLoader::from_parts(x.to_vec()?, x.shape(), Vec::new(), &[n, 0], DType::F32, batch_size)
    }

    /// Batches of a [`Dataset`]: features `[batch, dim]`, and labels `[batch]` (a
    /// classification set) or values `[batch, 1]` (a regression set).
    pub fn from_dataset<T: Target>(data: &Dataset<T>, batch_size: usize) -> Result<DataLoader> {
        let targets = data.labels.iter().map(|&l| l.word()).collect();
        let y_shape: &[usize] = match T::DTYPE {
            DType::U32 => &[data.n],
            DType::F32 | DType::F16 => &[data.n, 1],
        };
        DataLoader::from_parts(
            data.features.clone(),
            &[data.n, data.dim],
            targets,
            y_shape,
            T::DTYPE,
            batch_size,
        )
    }

    fn from_parts(
        x: Vec<f32>,
        x_shape: &[usize],
        y: Vec<f32>,
        y_shape: &[usize],
        y_dtype: DType,
        batch_size: usize,
    ) -> Result<DataLoader> {
        let rows = Rows::Host(HostRows {
            x: Arc::new(x),
            x_row: x_shape[1..].to_vec(),
            y: Arc::new(y),
            y_row: y_shape[1..].to_vec(),
            y_dtype,
            w: None,
        });
        DataLoader::with_rows(rows, x_shape, y_shape, y_dtype, batch_size)
    }

    fn with_rows(
        rows: Rows,
        x_shape: &[usize],
        y_shape: &[usize],
        y_dtype: DType,
        batch_size: usize,
    ) -> Result<DataLoader> {
        let n = x_shape.first().copied().unwrap_or(0);
        if n == 0 {
            return Err(Error::Invalid("DataLoader: the data set has no rows".into()));
        }
        if batch_size == 0 {
            return Err(Error::InvalidSetting {
                setting: "batch_size",
                message: "DataLoader: batch_size must be at least 1".into(),
            });
        }
        Ok(DataLoader {
            rows,
            x_row: x_shape[1..].to_vec(),
            y_row: y_shape[1..].to_vec(),
            y_dtype,
            n,
            batch_size: batch_size.min(n),
            shuffle: None,
            drop_last: false,
            epoch: 0,
            shard: (0, 1),
            prefetch: true,
        })
    }

    /// Gives each row a weight (`[n]`, finite, not negative), batched with it:
    /// `fit`'s `sample_weight`. Kept where the rows are (device rows: on the device).
    pub(crate) fn with_sample_weight(mut self, w: &Tensor) -> Result<DataLoader> {
        if w.dtype() != DType::F32 || w.shape() != [self.n] {
            return Err(Error::ShapeMismatch {
                op: format!(
                    "fit: sample_weight needs one f32 weight per training row ({} rows)",
                    self.n
                ),
                expected: vec![self.n],
                got: w.shape().to_vec(),
            });
        }
        let bad = |values: &[f32]| {
            values
                .iter()
                .position(|v| !v.is_finite() || *v < 0.0)
                .map(|i| (i, values[i]))
        };
        let found = match &mut self.rows {
            Rows::Host(h) => {
                let values = w.to_vec()?;
                let found = bad(&values);
                h.w = Some(Arc::new(values));
                found
            }
            Rows::Device { x, w: dw, .. } => {
                let w = w.to(x.device())?;
                w.realize()?;
                let found = match w.keep_resident()? {
                    Some(staged) => bad(&staged),
                    None => super::checks::first_bad_weight(&w)?,
                };
                *dw = Some(w);
                found
            }
        };
        if let Some((i, v)) = found {
            return Err(Error::Invalid(format!(
                "fit: sample_weight {i} is {v}; weights must be finite and not negative"
            )));
        }
        Ok(self)
    }

    /// Whether host rows are copied into batches on a background thread while the
    /// device works (the default on native targets; the batches are the same either
    /// way). Rows on a device are gathered there and never need it.
    pub fn prefetch(mut self, on: bool) -> DataLoader {
        self.prefetch = on;
        self
    }

    /// The shape and type of a batch of `rows` inputs.
    pub(crate) fn x_spec(&self, rows: usize) -> crate::nn::TensorSpec {
        crate::nn::TensorSpec::f32(&[&[rows][..], &self.x_row].concat())
    }

    /// The shape and type of a batch of `rows` targets.
    pub(crate) fn y_spec(&self, rows: usize) -> crate::nn::TensorSpec {
        crate::nn::TensorSpec {
            shape: [&[rows][..], &self.y_row].concat(),
            dtype: self.y_dtype,
        }
    }

    /// The first NaN or infinite value, inputs first, then f32 targets: `(what, row,
    /// column, value)`, the column counted within the row's values. Rows on a device
    /// are checked there (one number read back) and read only to locate a culprit.
    pub(crate) async fn first_non_finite(&self) -> Result<Option<(&'static str, usize, usize, f32)>> {
        let labels = self.y_dtype == DType::U32;
        Ok(match &self.rows {
            Rows::Host(h) => super::checks::first_non_finite_host(&h.x, &h.x_row, &h.y, &h.y_row, labels),
            Rows::Device { scan, .. } if scan.bad_value.is_some() => scan.bad_value.unwrap(),
            Rows::Device { x, y, .. } => super::checks::first_non_finite_device(x, y, labels).await?,
        })
    }

    /// The first label that is not below `classes`: `(row, label)`.
    pub(crate) async fn first_label_out_of_range(&self, classes: usize) -> Result<Option<(usize, u32)>> {
        if self.y_dtype != DType::U32 {
            return Ok(None);
        }
        Ok(match &self.rows {
            Rows::Host(h) => first_above(&h.y, classes),
            Rows::Device {
                scan: Scan {
                    labels: Some(labels), ..
                },
                ..
            } => first_above(labels, classes),
            Rows::Device { y, .. } => super::checks::first_label_out_of_range_device(y, classes).await?,
        })
    }

    /// A loader over some of the rows (copied, in the given order: on the device for
    /// device rows), with the same batch size; not shuffled until asked.
    ///
    /// # Errors
    /// If `rows` is empty or an index is out of range.
    pub fn subset(&self, rows: &[usize], batch_size: usize) -> Result<DataLoader> {
        self.check_rows("DataLoader::subset", rows)?;
        let (x_shape, y_shape) = self.shapes(rows.len());
        let kept = match &self.rows {
            Rows::Host(h) => {
                let picked = h.pick(rows);
                let mut h = h.clone();
                (h.x, h.y, h.w) = picked.into_parts();
                Rows::Host(h)
            }
            Rows::Device { x, y, w, .. } => {
                let idx = indices(rows, x.device())?;
                let keep = |t: &Tensor| -> Result<Tensor> {
                    let kept = t.index_select(0, &idx);
                    kept.realize()?;
                    Ok(kept)
                };
                let w = match w {
                    Some(w) => Some(keep(w)?),
                    None => None,
                };
                Rows::Device {
                    x: keep(x)?,
                    y: keep(y)?,
                    w,
                    scan: Scan::default(),
                }
            }
        };
        let mut loader = DataLoader::with_rows(kept, &x_shape, &y_shape, self.y_dtype, batch_size)?;
        loader.prefetch = self.prefetch;
        Ok(loader)
    }

    /// The shapes of `rows` rows of inputs and of targets.
    fn shapes(&self, rows: usize) -> (Vec<usize>, Vec<usize>) {
        ([&[rows][..], &self.x_row].concat(), [&[rows][..], &self.y_row].concat())
    }

    /// `Err` (naming `op`) if `rows` is empty or an index is out of range.
    fn check_rows(&self, op: &str, rows: &[usize]) -> Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.n) {
            return Err(Error::Invalid(format!(
                "{op}: row {bad} is out of range for {} rows",
                self.n
            )));
        }
        if rows.is_empty() {
            return Err(Error::Invalid(format!("{op}: no rows given")));
        }
        Ok(())
    }

    /// Reshuffles the rows at the start of every epoch, from `seed` and the epoch
    /// number (the same seed gives the same batches in every run).
    pub fn shuffle(mut self, seed: u64) -> DataLoader {
        self.shuffle = Some(seed);
        self
    }

    /// Skips a last batch smaller than `batch_size`.
    pub fn drop_last(mut self, drop_last: bool) -> DataLoader {
        self.drop_last = drop_last;
        self
    }

    /// Makes this the loader of rank `rank` of `ranks` in data-parallel training:
    /// every epoch, all ranks draw the same row order (give them the same shuffle
    /// seed), take global batches of `batch_size · ranks` rows from it and each keep
    /// its own equal, disjoint part of every one, so the ranks together see each row
    /// once per epoch, as one process with batch `batch_size · ranks` would. A last
    /// global batch whose rows do not divide evenly loses its remainder (fewer than
    /// `ranks` rows, different ones each epoch when shuffled); `fit` does this itself
    /// when its optimizer is a [`crate::distributed::DistributedOptimizer`].
    ///
    /// # Errors
    /// If `rank` is not below `ranks`, or the data has fewer rows than ranks.
    pub fn shard(mut self, rank: usize, ranks: usize) -> Result<DataLoader> {
        if rank >= ranks || self.n < ranks {
            return Err(Error::Invalid(format!(
                "DataLoader::shard: rank {rank} of {ranks} ranks over {} rows (ranks must be at most the rows, the rank below the ranks)",
                self.n
            )));
        }
        self.batch_size = self.batch_size.min(self.n / ranks);
        self.shard = (rank, ranks);
        Ok(self)
    }

    /// This loader's rank and the number of ranks (`(0, 1)` unless sharded).
    pub fn shard_of(&self) -> (usize, usize) {
        self.shard
    }

    /// Rows per batch (at most the number of rows); per rank when sharded.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Rows in the data set.
    pub fn samples(&self) -> usize {
        self.n
    }

    /// Batches per epoch (the same on every rank when sharded).
    pub fn len(&self) -> usize {
        let ranks = self.shard.1;
        let global = self.batch_size * ranks;
        let (full, rest) = (self.n / global, self.n % global);
        full + usize::from(!self.drop_last && rest >= ranks)
    }

    /// Whether an epoch yields no batch (`drop_last` with fewer rows than a batch
    /// cannot happen: `batch_size` is capped at the number of rows).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shuffling seed and the number of epochs begun: all that decides the row
    /// order of the epochs to come (saved in `fit`'s checkpoints).
    pub(crate) fn order_state(&self) -> (Option<u64>, u64) {
        (self.shuffle, self.epoch)
    }

    /// Puts back an [`order_state`](Self::order_state), so the next epoch has the
    /// order it would have had in the run that saved it.
    pub(crate) fn set_order_state(&mut self, (shuffle, epoch): (Option<u64>, u64)) {
        (self.shuffle, self.epoch) = (shuffle, epoch);
    }

    /// The rows of each batch of the next epoch (this rank's part of each), then
    /// advances the epoch counter.
    fn next_plan(&mut self) -> Vec<Vec<usize>> {
        let order = match self.shuffle {
            Some(seed) => permutation(self.n, seed ^ self.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            None => (0..self.n).collect(),
        };
        self.epoch += 1;
        let (rank, ranks) = self.shard;
        let global = self.batch_size * ranks;
        (0..self.len())
            .map(|b| {
                let rows = &order[b * global..((b + 1) * global).min(self.n)];
                let (start, end) = crate::distributed::shard_range(rows.len(), rank, ranks);
                rows[start..end].to_vec()
            })
            .collect()
    }

    /// One epoch of batches on `device`, as `(x, y)` tensors; the data of each batch
    /// is staged when the batch is made and uploaded by the plan that uses it.
    pub fn epoch<'a>(&'a mut self, device: &'a Device) -> impl Iterator<Item = Result<(Tensor, Tensor)>> + 'a {
        self.batches(device).map(|b| b.map(|b| (b.x, b.y)))
    }

    /// One epoch of batches on `device`, with their sample weights.
    pub(crate) fn batches<'a>(&'a mut self, device: &'a Device) -> Box<dyn Iterator<Item = Result<Batch>> + 'a> {
        let plan = self.next_plan();
        let this = &*self;
        #[cfg(not(target_arch = "wasm32"))]
        if let Rows::Host(h) = &this.rows {
            if this.prefetch && plan.len() > 1 {
                return super::prefetch::prefetched(h, plan, device);
            }
        }
        Box::new(plan.into_iter().map(move |rows| this.batch_of(&rows, device)))
    }

    /// The rows at `rows` (in range) as one batch on `device`.
    fn batch_of(&self, rows: &[usize], device: &Device) -> Result<Batch> {
        match &self.rows {
            Rows::Host(h) => h.upload(h.pick(rows), device),
            Rows::Device { x, y, w, .. } => {
                let idx = indices(rows, x.device())?;
                let pick = |t: &Tensor| {
                    let picked = t.index_select(0, &idx);
                    if picked.device().same(device) {
                        Ok(picked)
                    } else {
                        picked.to(device)
                    }
                };
                let w = match w {
                    Some(w) => Some(pick(w)?),
                    None => None,
                };
                Ok(Batch {
                    x: pick(x)?,
                    y: pick(y)?,
                    w,
                })
            }
        }
    }

    /// The rows at `rows` as one batch.
    ///
    /// # Errors
    /// If an index is out of range, or the device cannot hold the batch.
    pub fn batch(&self, rows: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        self.check_rows("DataLoader::batch", rows)?;
        let b = self.batch_of(rows, device)?;
        Ok((b.x, b.y))
    }
}

/// The first label (of labels as words) not below `classes`: `(row, label)`.
fn first_above(labels: &[f32], classes: usize) -> Option<(usize, u32)> {
    let i = labels.iter().position(|v| v.to_bits() as usize >= classes)?;
    Some((i, labels[i].to_bits()))
}

/// Row numbers as an index tensor on `device`.
fn indices(rows: &[usize], device: &Device) -> Result<Tensor> {
    let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    Tensor::from_labels(&idx, device)
}
