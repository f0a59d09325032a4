//! A tensor's value, from the graph's side: realizing it through a plan, reading it
//! back, copying it to another device, and backpropagating from it. These `Tensor`
//! methods live here, above the tensor handle, because they run the planner and
//! autograd; the handle itself (`crate::tensor`) knows neither.

use super::autograd::Gradients;
use super::plan::realize_all;
use crate::backend::wait::wait;
use crate::backend::Storage;
use crate::tensor::DType;
use crate::{Device, Error, Result, Tensor};

impl Tensor {
    /// Computes the value (if it is not yet) and reads it back. Labels come back as
    /// their integer values converted to f32. In a browser (wasm32) a GPU value can
    /// only be read with [`Tensor::to_vec_async`]: this returns
    /// [`crate::Error::WouldBlock`] for it (CPU values read as on native targets).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        wait(self.to_vec_async(), "Tensor::to_vec", "Tensor::to_vec_async")
    }

    /// Async form of [`Tensor::to_vec`] (the readback is awaited, not blocked on).
    pub async fn to_vec_async(&self) -> Result<Vec<f32>> {
        let storage = self.realized_storage()?;
        let mut words = self.0.device.backend().read(&storage).await?;
        words.truncate(self.words());
        Ok(match self.0.dtype {
            DType::F32 => words,
            DType::U32 => words.into_iter().map(|w| w.to_bits() as f32).collect(),
            DType::F16 => crate::ops::cast::unpack_halves(&words, self.numel()),
        })
    }

    /// Reads a label tensor (e.g. the result of `argmax`) as integers.
    pub fn to_labels(&self) -> Result<Vec<u32>> {
        let storage = self.realized_storage()?;
        let read = self.0.device.backend().read(&storage);
        let mut words = wait(read, "Tensor::to_labels", "Tensor::to_vec_async")?;
        words.truncate(self.numel());
        Ok(words
            .into_iter()
            .map(|w| {
                if self.0.dtype == DType::U32 {
                    w.to_bits()
                } else {
                    w as u32
                }
            })
            .collect())
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        let v = self.to_vec()?;
        if v.len() != 1 {
            return Err(Error::WrongRank {
                op: "Tensor::item",
                needs: "one element".into(),
                shape: self.shape().to_vec(),
            });
        }
        Ok(v[0])
    }

    /// Computes the value on the device without reading it back.
    pub fn realize(&self) -> Result<()> {
        self.realized_storage().map(|_| ())
    }

    pub(crate) fn realized_storage(&self) -> Result<Storage> {
        // A buffer that a queued running-statistics update writes is read after it.
        super::deferred::flush_writing(self)?;
        if let Some(s) = self.0.storage.lock().unwrap().as_ref() {
            return Ok(s.clone());
        }
        realize_all(std::slice::from_ref(self), &[])?;
        Ok(self.0.storage.lock().unwrap().clone().expect("realized"))
    }

    /// Backpropagates from this scalar: the gradient of every trainable tensor it
    /// depends on, as graph nodes (nothing runs until they are read or applied).
    pub fn backward(&self) -> Result<Gradients> {
        super::autograd::backward(self)
    }
    /// This tensor's value on `device`: the tensor itself when it lives there
    /// already, else a new leaf holding a copy of its value (read back once), trainable
    /// when this one is. The copy is a new tensor: gradients and optimizers refer to
    /// one or the other (`Module::to` moves a whole model).
    pub fn to(&self, device: &Device) -> Result<Tensor> {
        if self.device().same(device) {
            return Ok(self.clone());
        }
        let moved = match self.dtype() {
            DType::F32 => Tensor::from_vec(self.to_vec()?, self.shape(), device)?,
            DType::U32 => Tensor::from_labels_shaped(&self.to_labels()?, self.shape(), device)?,
            DType::F16 => Tensor::from_vec(self.to_vec()?, self.shape(), device)?.half(),
        };
        if self.is_trainable() {
            moved.requires_grad()
        } else {
            Ok(moved)
        }
    }

    /// The values of a rank-2 tensor as rows (one readback).
    pub fn to_vec2(&self) -> Result<Vec<Vec<f32>>> {
        let [rows, cols] = self.shape()[..] else {
            return Err(self.rank_error("Tensor::to_vec2", 2));
        };
        let flat = self.to_vec()?;
        Ok((0..rows).map(|r| flat[r * cols..(r + 1) * cols].to_vec()).collect())
    }

    /// The values of a rank-3 tensor as nested rows (one readback).
    pub fn to_vec3(&self) -> Result<Vec<Vec<Vec<f32>>>> {
        let [a, b, c] = self.shape()[..] else {
            return Err(self.rank_error("Tensor::to_vec3", 3));
        };
        let flat = self.to_vec()?;
        let row = |i: usize, j: usize| flat[(i * b + j) * c..(i * b + j + 1) * c].to_vec();
        Ok((0..a).map(|i| (0..b).map(|j| row(i, j)).collect()).collect())
    }

    fn rank_error(&self, op: &'static str, rank: usize) -> Error {
        Error::WrongRank {
            op,
            needs: format!("rank {rank}"),
            shape: self.shape().to_vec(),
        }
    }
}
