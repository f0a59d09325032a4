//! Batches of host rows: copied out of the data set ([`HostRows::pick`]) and
//! uploaded, either in turn or on a background thread that prepares the next
//! batches while the device runs the current step ([`prefetched`]). Both paths copy
//! with the same function, so they give the same batches.

use std::sync::Arc;

use crate::tensor::DType;
use crate::{Device, Result, Tensor};

/// One batch: inputs, targets, and the rows' sample weights if the data has them.
pub(crate) struct Batch {
    /// Inputs `[rows, …]`.
    pub x: Tensor,
    /// Targets: labels `[rows]` or values `[rows, …]`.
    pub y: Tensor,
    /// Sample weights `[rows]`.
    pub w: Option<Tensor>,
}

/// Rows held on the host: inputs, targets as words (u32 label bits when the targets
/// are labels), optional sample weights, and the shape of one row of each.
#[derive(Clone, Debug)]
pub(crate) struct HostRows {
    pub x: Arc<Vec<f32>>,
    pub x_row: Vec<usize>,
    pub y: Arc<Vec<f32>>,
    pub y_row: Vec<usize>,
    pub y_dtype: DType,
    pub w: Option<Arc<Vec<f32>>>,
}

/// A batch copied out on the host, not yet on a device.
pub(crate) struct Picked {
    x: (Vec<f32>, Vec<usize>),
    y: (Vec<f32>, Vec<usize>),
    w: Option<Vec<f32>>,
}

impl Picked {
    /// The inputs, targets and weights, as a new host data set holds them.
    #[allow(clippy::type_complexity)]
    pub(crate) fn into_parts(self) -> (Arc<Vec<f32>>, Arc<Vec<f32>>, Option<Arc<Vec<f32>>>) {
        (Arc::new(self.x.0), Arc::new(self.y.0), self.w.map(Arc::new))
    }
}

/// Copies of `data`'s rows at `rows` (each `row` shaped), with their shape.
fn pick(data: &[f32], row: &[usize], rows: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let width: usize = row.iter().product();
    let mut out = Vec::with_capacity(rows.len() * width);
    for &r in rows {
        out.extend_from_slice(&data[r * width..(r + 1) * width]);
    }
    let mut shape = vec![rows.len()];
    shape.extend_from_slice(row);
    (out, shape)
}

impl HostRows {
    /// The rows at `rows` (in range: the caller checked), copied.
    pub(crate) fn pick(&self, rows: &[usize]) -> Picked {
        Picked {
            x: pick(&self.x, &self.x_row, rows),
            y: pick(&self.y, &self.y_row, rows),
            w: self.w.as_ref().map(|w| pick(w, &[], rows).0),
        }
    }

    /// `picked` as tensors on `device` (staged; uploaded by the plan that uses them).
    pub(crate) fn upload(&self, picked: Picked, device: &Device) -> Result<Batch> {
        let Picked { x, y, w } = picked;
        let x = Tensor::from_vec(x.0, &x.1, device)?;
        let y = match self.y_dtype {
            DType::U32 => Tensor::from_labels(&y.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), device)?,
            DType::F32 | DType::F16 => Tensor::from_vec(y.0, &y.1, device)?,
        };
        let w = match w {
            Some(w) => {
                let rows = w.len();
                Some(Tensor::from_vec(w, &[rows], device)?)
            }
            None => None,
        };
        Ok(Batch { x, y, w })
    }
}

/// The batches at `plan` (row lists), copied out by a background thread at most
/// two batches ahead (a bounded channel) and uploaded here, in order.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn prefetched<'a>(
    rows: &'a HostRows,
    plan: Vec<Vec<usize>>,
    device: &'a Device,
) -> Box<dyn Iterator<Item = Result<Batch>> + 'a> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Picked>(2);
    let expected = plan.len();
    let source = rows.clone();
    // Stops when the consumer is dropped (its next send fails) or the plan is done.
    let spawned = std::thread::Builder::new().name("wgnn-batches".into()).spawn(move || {
        for batch in plan {
            if tx.send(source.pick(&batch)).is_err() {
                break;
            }
        }
    });
    if let Err(e) = spawned {
        let err = crate::Error::Invalid(format!("DataLoader: cannot start the batching thread: {e}"));
        return Box::new(std::iter::once(Err(err)));
    }
    Box::new((0..expected).map_while(move |i| match rx.recv() {
        Ok(picked) => Some(rows.upload(picked, device)),
        Err(_) => Some(Err(crate::Error::Invalid(format!(
            "DataLoader: the batching thread stopped after {i} of {expected} batches"
        )))),
    }))
}
