//! [`DataLoader`]: mini-batches over in-memory data, with seeded shuffling.
//!
//! Batch gradient descent, mini-batch and stochastic gradient descent are one setting
//! here: `batch_size = n`, `1 < batch_size < n`, and `batch_size = 1`. A last partial
//! batch has its own shape, so it gets its own plan, compiled once and then taken from
//! the plan cache every epoch.

use std::sync::Arc;

use super::{permutation, Dataset};
use crate::tensor::DType;
use crate::{Device, Error, Result, Tensor};

/// Mini-batches of `(x, y)` rows, reshuffled every epoch when a seed is given.
#[derive(Clone, Debug)]
pub struct DataLoader {
    x: Arc<Vec<f32>>,
    x_row: Vec<usize>,
    /// Targets as words: u32 label bits when `y_dtype` is `U32`, else values.
    y: Arc<Vec<f32>>,
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
}

impl DataLoader {
    /// Batches of rows of `x` (`[n, …]`) with the matching rows of `y` (labels `[n]`
    /// or values `[n, …]`). Both are read to the host once.
    pub fn new(x: &Tensor, y: &Tensor, batch_size: usize) -> Result<DataLoader> {
        let (n, ny) = (x.shape().first().copied(), y.shape().first().copied());
        if n.is_none() || n != ny {
            return Err(Error::ShapeMismatch {
                op: "DataLoader::new: x and y must have the same number of rows".into(),
                expected: x.shape().to_vec(),
                got: y.shape().to_vec(),
            });
        }
        let y_words = match y.dtype() {
            DType::U32 => y.to_labels()?.into_iter().map(f32::from_bits).collect(),
            DType::F32 => y.to_vec()?,
        };
        DataLoader::from_parts(x.to_vec()?, x.shape(), y_words, y.shape(), y.dtype(), batch_size)
    }

    /// Batches of inputs only (for prediction): the targets are empty `[batch, 0]`
    /// tensors, and `x` is read to the host once.
    pub(crate) fn inputs(x: &Tensor, batch_size: usize) -> Result<DataLoader> {
        let n = x.shape().first().copied().unwrap_or(0);
        DataLoader::from_parts(x.to_vec()?, x.shape(), Vec::new(), &[n, 0], DType::F32, batch_size)
    }

    /// Batches of a classification [`Dataset`]: features `[batch, dim]`, labels `[batch]`.
    pub fn from_dataset(data: &Dataset, batch_size: usize) -> Result<DataLoader> {
        let labels = data.labels.iter().map(|&l| f32::from_bits(l)).collect();
        DataLoader::from_parts(
            data.features.clone(),
            &[data.n, data.dim],
            labels,
            &[data.n],
            DType::U32,
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
        let n = x_shape.first().copied().unwrap_or(0);
        if n == 0 {
            return Err(Error::Invalid("DataLoader: the data set has no rows".into()));
        }
        if batch_size == 0 {
            return Err(Error::Invalid("DataLoader: batch_size must be at least 1".into()));
        }
        Ok(DataLoader {
            x: Arc::new(x),
            x_row: x_shape[1..].to_vec(),
            y: Arc::new(y),
            y_row: y_shape[1..].to_vec(),
            y_dtype,
            n,
            batch_size: batch_size.min(n),
            shuffle: None,
            drop_last: false,
            epoch: 0,
            shard: (0, 1),
        })
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
    /// column, value)`, the column counted within the row's values.
    pub(crate) fn first_non_finite(&self) -> Option<(&'static str, usize, usize, f32)> {
        let find = |what, data: &[f32], row: &[usize]| {
            let width = row.iter().product::<usize>().max(1);
            let i = data.iter().position(|v| !v.is_finite())?;
            Some((what, i / width, i % width, data[i]))
        };
        find("features", &self.x, &self.x_row).or_else(|| match self.y_dtype {
            DType::F32 => find("targets", &self.y, &self.y_row),
            DType::U32 => None,
        })
    }

    /// The first label that is not below `classes`: `(row, label)`.
    pub(crate) fn first_label_out_of_range(&self, classes: usize) -> Option<(usize, u32)> {
        if self.y_dtype != DType::U32 {
            return None;
        }
        let i = self.y.iter().position(|v| v.to_bits() as usize >= classes)?;
        Some((i, self.y[i].to_bits()))
    }

    /// A loader over some of the rows (copied, in the given order), with the same
    /// batch size; not shuffled until asked.
    ///
    /// # Errors
    /// If `rows` is empty or an index is out of range.
    pub fn subset(&self, rows: &[usize], batch_size: usize) -> Result<DataLoader> {
        let ((xs, x_shape), (ys, y_shape)) = self.gather("DataLoader::subset", rows)?;
        DataLoader::from_parts(xs, &x_shape, ys, &y_shape, self.y_dtype, batch_size)
    }

    /// Copies of the x and y rows at `rows`, with their shapes.
    #[allow(clippy::type_complexity)]
    fn gather(&self, op: &str, rows: &[usize]) -> Result<((Vec<f32>, Vec<usize>), (Vec<f32>, Vec<usize>))> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.n) {
            return Err(Error::Invalid(format!(
                "{op}: row {bad} is out of range for {} rows",
                self.n
            )));
        }
        let pick = |data: &[f32], row: &[usize]| {
            let width: usize = row.iter().product();
            let mut out = Vec::with_capacity(rows.len() * width);
            for &r in rows {
                out.extend_from_slice(&data[r * width..(r + 1) * width]);
            }
            let mut shape = vec![rows.len()];
            shape.extend_from_slice(row);
            (out, shape)
        };
        Ok((pick(&self.x, &self.x_row), pick(&self.y, &self.y_row)))
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

    /// The row order of the next epoch, then advances the epoch counter.
    fn next_order(&mut self) -> Vec<usize> {
        let order = match self.shuffle {
            Some(seed) => permutation(self.n, seed ^ self.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            None => (0..self.n).collect(),
        };
        self.epoch += 1;
        order
    }

    /// One epoch of batches on `device`, as `(x, y)` tensors; the data of each batch
    /// is staged when the batch is made and uploaded by the plan that uses it.
    pub fn epoch<'a>(&'a mut self, device: &'a Device) -> impl Iterator<Item = Result<(Tensor, Tensor)>> + 'a {
        let order = self.next_order();
        let batches = self.len();
        let this = &*self;
        let (rank, ranks) = this.shard;
        let global = this.batch_size * ranks;
        (0..batches).map(move |b| {
            let rows = &order[b * global..((b + 1) * global).min(this.n)];
            let (start, end) = crate::distributed::shard_range(rows.len(), rank, ranks);
            this.batch(&rows[start..end], device)
        })
    }

    /// The rows at `rows` as one batch.
    ///
    /// # Errors
    /// If an index is out of range, or the device cannot hold the batch.
    pub fn batch(&self, rows: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let ((xs, x_shape), (ys, y_shape)) = self.gather("DataLoader::batch", rows)?;
        let x = Tensor::from_vec(xs, &x_shape, device)?;
        let y = match self.y_dtype {
            DType::U32 => Tensor::from_labels(&ys.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), device)?,
            DType::F32 => Tensor::from_vec(ys, &y_shape, device)?,
        };
        Ok((x, y))
    }
}
