//! Saving and loading module parameters as safetensors files whose tensor names are
//! PyTorch's `state_dict()` keys.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::nn::Module;
use crate::{Error, Result};

/// Writes every parameter of `module` (f32, names as `state_dict()`) to `path`.
/// The file is written to a temporary name and renamed, so a crash never leaves a
/// half-written file.
pub fn save_safetensors(module: &dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in module.named_parameters() {
        let values = t.to_vec()?;
        data.push((name, t.shape().to_vec(), bytemuck::cast_slice(&values).to_vec()));
    }
    let views = data
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::SafeTensors {
                    path: path.into(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::tensor::serialize(views, None).map_err(|e| Error::SafeTensors {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Loads parameters saved by [`save_safetensors`] or by PyTorch
/// (`safetensors.torch.save_file(model.state_dict(), path)`). Strict: every missing,
/// unexpected or wrongly shaped tensor is reported at once, and on any error the
/// module is left untouched.
pub fn load_safetensors(module: &mut dyn Module, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| Error::SafeTensors {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let params = module.named_parameters();
    let mut found: HashMap<String, TensorView<'_>> = file.tensors().into_iter().collect();
    let mut problems = Vec::new();
    let mut values = Vec::new();
    for (name, param) in &params {
        match found.remove(name) {
            None => problems.push(format!("missing tensor {name:?} (shape {:?})", param.shape())),
            Some(view) if view.shape() != param.shape() => problems.push(format!(
                "tensor {name:?} has shape {:?}, the module expects {:?}",
                view.shape(),
                param.shape()
            )),
            Some(view) if view.dtype() != Dtype::F32 => {
                problems.push(format!("tensor {name:?} is {:?}, only F32 is supported", view.dtype()))
            }
            Some(view) => {
                let data: Vec<f32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                values.push((param.clone(), data));
            }
        }
    }
    let mut unexpected: Vec<_> = found.keys().cloned().collect();
    unexpected.sort();
    problems.extend(unexpected.into_iter().map(|n| format!("unexpected tensor {n:?}")));
    if !problems.is_empty() {
        return Err(Error::Load {
            path: path.into(),
            problems,
        });
    }
    for (param, data) in values {
        param.assign(&data)?;
    }
    Ok(())
}
