//! Saving and loading module parameters as safetensors files whose tensor names are
//! PyTorch's `state_dict()` keys, and checkpoints ([`save_checkpoint`],
//! [`load_checkpoint`]) that hold everything needed to resume training. Every file is
//! written crash-safely: to a temporary file in the same folder, flushed to disk,
//! then renamed over the old one.

mod checkpoint;

pub use checkpoint::{load_checkpoint, save_checkpoint};
pub(crate) use checkpoint::{read_checkpoint, save_checkpoint_with, Extra};

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::nn::Module;
use crate::{DType, Error, Result, Tensor};

/// The tensors a model file holds: every parameter, then every buffer (running
/// statistics, a `Normalize` layer's mean and std), with `state_dict()` names.
pub(crate) fn state_tensors(module: &dyn Module) -> Vec<(String, Tensor)> {
    let mut all = module.named_parameters();
    all.extend(module.named_buffers());
    all
}

/// Writes every parameter and buffer of `module` (names as `state_dict()`) to
/// `path`: f32 values as F32, integer buffers (batch norm's `num_batches_tracked`)
/// as I64, PyTorch's dtype for them, so that `load_state_dict(strict=True)` gets
/// the dtypes of its own `state_dict()`.
/// The file is written to a temporary name, flushed to disk and renamed, so a crash
/// never leaves a half-written file.
pub fn save_safetensors(module: &dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let tensors = state_tensors(module)
        .into_iter()
        .map(|(name, t)| Ok((name, t.shape().to_vec(), Values::of(&t)?)))
        .collect::<Result<Vec<_>>>()?;
    let bytes = serialize(path, &tensors, None)?;
    write_atomically(path, &bytes)
}

/// Replaces `path` by `bytes` so that a crash at any moment leaves either the old
/// file or the new one: the bytes go to `<name>.tmp` in the same folder, which is
/// flushed to disk (`fsync`), renamed over `path`, and the folder is flushed so the
/// rename itself survives a power loss.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let Some(name) = path.file_name() else {
        return Err(Error::Invalid(format!("{}: not a file name", path.display())));
    };
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        // Closed at the block's end, before the rename (Windows renames no open file).
        let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    sync_folder(path)
}

/// Flushes the folder holding `path`, so that a rename in it is on disk.
#[cfg(unix)]
fn sync_folder(path: &Path) -> Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(folder)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(folder, e))
}

/// Folders cannot be opened for flushing here; the rename is as durable as the
/// file system makes it.
#[cfg(not(unix))]
fn sync_folder(_: &Path) -> Result<()> {
    Ok(())
}

/// Loads parameters and buffers saved by [`save_safetensors`] or by PyTorch
/// (`safetensors.torch.save_file(model.state_dict(), path)`), or the parameters of a
/// checkpoint ([`save_checkpoint`], `ModelCheckpoint`). Strict: every missing,
/// unexpected or wrongly shaped tensor is reported at once, and on any error the
/// module is left untouched.
///
/// Tensors stored as F32, F64, F16 or BF16 load, converted to f32 (wgnn computes in
/// f32): F16 and BF16 exactly, F64 rounded to the nearest f32 as PyTorch's
/// `tensor.float()` does (beyond f32's range it becomes ±∞, below it 0 or a
/// subnormal). Integer buffers (batch norm's `num_batches_tracked`, u32 here) load
/// from I64 (PyTorch's), I32 or U32 values in u32's range. Any other dtype is
/// reported as a problem.
pub fn load_safetensors(module: &mut dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = parse(path, &bytes)?;
    let mut found: HashMap<String, TensorView<'_>> = file.tensors().into_iter().collect();
    if checkpoint::is_checkpoint(&bytes) {
        found.retain(|name, _| !checkpoint::is_reserved(name));
    }
    let values = match_parameters(&state_tensors(module), found).map_err(|problems| Error::Load {
        path: path.into(),
        problems,
    })?;
    for (param, data) in values {
        param.assign(&data)?;
    }
    Ok(())
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| {
        // The crate's messages are terse ("invalid header length"): say what the file
        // is, and what its first 8 bytes (the header length) claim.
        let claimed = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .map_or(String::new(), |n| {
                format!(", whose first 8 bytes give a header of {n} bytes")
            });
        Error::SafeTensors {
            path: path.into(),
            reason: format!(
                "{e} (a file of {} bytes{claimed}: cut short, or not a safetensors file)",
                bytes.len()
            ),
        }
    })
}

/// The values of `found` for each of `params`, or every missing, unexpected, wrongly
/// shaped or typed tensor, one message each.
fn match_parameters(
    params: &[(String, Tensor)],
    mut found: HashMap<String, TensorView<'_>>,
) -> std::result::Result<Vec<(Tensor, Vec<f32>)>, Vec<String>> {
    let mut problems = Vec::new();
    let mut values = Vec::new();
    for (name, param) in params {
        match found.remove(name) {
            None => problems.push(format!("missing tensor {name:?} (shape {:?})", param.shape())),
            Some(view) if view.shape() != param.shape() => problems.push(format!(
                "tensor {name:?} has shape {:?}, the module expects {:?}",
                view.shape(),
                param.shape()
            )),
            Some(view) if param.dtype() == DType::U32 => match to_counts(view.dtype(), view.data()) {
                // Written as the u32 bits they are.
                Some(data) => values.push((param.clone(), data.into_iter().map(f32::from_bits).collect())),
                None => problems.push(format!(
                    "tensor {name:?} is {:?}; an integer buffer loads from I64, I32 or U32 values in u32's range",
                    view.dtype()
                )),
            },
            Some(view) => match to_f32(view.dtype(), view.data()) {
                Some(data) => values.push((param.clone(), data)),
                None => problems.push(format!(
                    "tensor {name:?} is {:?}; F32, F64, F16 and BF16 are supported",
                    view.dtype()
                )),
            },
        }
    }
    let mut unexpected: Vec<_> = found.keys().cloned().collect();
    unexpected.sort();
    problems.extend(unexpected.into_iter().map(|n| format!("unexpected tensor {n:?}")));
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}

/// The values of an F32 tensor (little-endian, as safetensors stores them).
fn f32_values(view: &TensorView<'_>) -> Vec<f32> {
    view.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A tensor's values as a file stores them.
pub(crate) enum Values {
    /// f32 data (parameters, statistics, optimizer state).
    F32(Vec<f32>),
    /// Integer buffers (u32 here), stored as PyTorch's I64.
    I64(Vec<i64>),
    /// f32 data rounded to IEEE binary16 (bits).
    F16(Vec<u16>),
    /// f32 data rounded to bfloat16 (bits).
    BF16(Vec<u16>),
}

/// The float format [`save_safetensors_as`] writes f32 values in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatFormat {
    /// As they are (what [`save_safetensors`] writes).
    F32,
    /// IEEE half precision, rounded to nearest (ties to even): half the bytes;
    /// values beyond ±65504 become ±∞, below 6e-8 zero.
    F16,
    /// bfloat16 (f32's range, 8 bits of mantissa), rounded to nearest (ties to even).
    BF16,
}

/// [`save_safetensors`] with every f32 parameter and buffer rounded to `format`
/// (integer buffers stay I64): a file of about half the size that PyTorch loads as
/// `float16`/`bfloat16` tensors and [`load_safetensors`] reads back into f32.
pub fn save_safetensors_as(module: &dyn Module, path: impl AsRef<Path>, format: FloatFormat) -> Result<()> {
    let path = path.as_ref();
    let tensors = state_tensors(module)
        .into_iter()
        .map(|(name, t)| {
            let values = match (Values::of(&t)?, format) {
                (Values::F32(v), FloatFormat::F16) => {
                    Values::F16(v.into_iter().map(|x| half::f16::from_f32(x).to_bits()).collect())
                }
                (Values::F32(v), FloatFormat::BF16) => {
                    Values::BF16(v.into_iter().map(|x| half::bf16::from_f32(x).to_bits()).collect())
                }
                (values, _) => values,
            };
            Ok((name, t.shape().to_vec(), values))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = serialize(path, &tensors, None)?;
    write_atomically(path, &bytes)
}

impl Values {
    /// The values of `t` (read back once): an f32 tensor's as F32, a u32 one's as I64.
    pub(crate) fn of(t: &Tensor) -> Result<Values> {
        Ok(match t.dtype() {
            DType::F32 | DType::F16 => Values::F32(t.to_vec()?),
            DType::U32 => Values::I64(t.to_labels()?.into_iter().map(i64::from).collect()),
        })
    }
}

impl From<Vec<f32>> for Values {
    fn from(values: Vec<f32>) -> Values {
        Values::F32(values)
    }
}

/// Serializes named tensors and string metadata into safetensors bytes.
fn serialize(
    path: &Path,
    tensors: &[(String, Vec<usize>, Values)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let bad = |e: safetensors::SafeTensorError| Error::SafeTensors {
        path: path.into(),
        reason: e.to_string(),
    };
    let views = tensors
        .iter()
        .map(|(name, shape, values)| {
            let (dtype, bytes) = match values {
                Values::F32(v) => (Dtype::F32, bytemuck::cast_slice(v)),
                Values::I64(v) => (Dtype::I64, bytemuck::cast_slice(v)),
                Values::F16(v) => (Dtype::F16, bytemuck::cast_slice(v)),
                Values::BF16(v) => (Dtype::BF16, bytemuck::cast_slice(v)),
            };
            TensorView::new(dtype, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(bad)?;
    safetensors::tensor::serialize(views, metadata).map_err(bad)
}

/// Little-endian integer `bytes` of `dtype` as u32 values, or `None` for another
/// dtype or a value outside u32's range.
fn to_counts(dtype: Dtype, bytes: &[u8]) -> Option<Vec<u32>> {
    match dtype {
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|c| u32::try_from(i64::from_le_bytes(c.try_into().unwrap())).ok())
            .collect(),
        Dtype::I32 => bytes
            .chunks_exact(4)
            .map(|c| u32::try_from(i32::from_le_bytes(c.try_into().unwrap())).ok())
            .collect(),
        Dtype::U32 => Some(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        _ => None,
    }
}

/// Little-endian `bytes` of `dtype` as f32 values, or `None` for a dtype that does not
/// convert (integers, bool, f8). The safetensors crate has checked that the length
/// is the shape's element count times the dtype's size.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let halves = || bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        // `as` rounds to nearest, ties to even, as C's cast that PyTorch uses.
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::F16 => halves().map(f16_to_f32).collect(),
        // bf16 is the top half of an f32.
        Dtype::BF16 => halves().map(|h| f32::from_bits(u32::from(h) << 16)).collect(),
        _ => return None,
    })
}

/// IEEE 754 binary16 to f32, exactly (every f16 is an f32), NaN payloads kept.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exponent = u32::from((h >> 10) & 0x1f);
    let mantissa = u32::from(h & 0x3ff);
    match exponent {
        // Zero or subnormal: mantissa · 2⁻²⁴, exact in f32.
        0 => {
            let magnitude = mantissa as f32 * f32::from_bits(0x3380_0000); // 2^-24
            f32::from_bits(sign | magnitude.to_bits())
        }
        // ±∞ and NaN.
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (mantissa << 13)),
        // Normal: rebias the exponent from 15 to 127.
        _ => f32::from_bits(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13)),
    }
}
