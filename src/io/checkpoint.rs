//! Checkpoints: a model's parameters, its optimizer's full state and the position of
//! the global random stream in one safetensors file, so that training resumes bit
//! for bit. `fit` adds its own state (epoch, data order, history, callbacks) under
//! `fit.`.
//!
//! Layout: the parameters under their `state_dict()` names (so the file is also a
//! model file for [`super::load_safetensors`] and for PyTorch), each optimizer state
//! buffer as `optimizer.<parameter index>.<buffer>` (shaped like its parameter), and
//! the scalars as strings in the safetensors metadata: `format = wgnn-checkpoint`,
//! `version`, `optimizer` (its kind), `optimizer.lr`, `optimizer.hyper`,
//! `optimizer.steps`, `optimizer.parameters`, `optimizer.buffers.<i>`, `rng`.
//! Numbers are written so that they read back to the same bits.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{f32_values, match_parameters, parse, serialize, write_atomically};
use crate::nn::Module;
use crate::optim::{Optimizer, OptimizerState};
use crate::{Error, Result, Tensor};

const FORMAT: &str = "wgnn-checkpoint";
const VERSION: &str = "1";
const OPTIMIZER: &str = "optimizer.";
const FIT: &str = "fit.";

/// What `fit` saves beside the model and the optimizer, opaque here: strings in the
/// metadata and f32 arrays, both stored under `fit.`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Extra {
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) arrays: BTreeMap<String, Vec<f32>>,
}

/// Whether a tensor name belongs to the checkpoint's own state, not to the model.
pub(crate) fn is_reserved(name: &str) -> bool {
    name.starts_with(OPTIMIZER) || name.starts_with(FIT)
}

/// Whether `bytes` are a safetensors file marked as a wgnn checkpoint.
pub(crate) fn is_checkpoint(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, m)| {
            m.metadata()
                .as_ref()
                .map(|m| m.get("format").map(String::as_str) == Some(FORMAT))
        })
        .unwrap_or(false)
}

/// Writes a checkpoint of `model` and `optimizer` to `path`: every parameter, the
/// optimizer's full state ([`Optimizer::state`]: moments, step count,
/// hyper-parameters with the current learning rate) and the position of the global
/// random stream (parameter init, shuffling, dropout keys). `optimizer` may be any
/// optimizer, `Box<dyn Optimizer>` too. The file is written to a temporary file in
/// the same folder, flushed to disk, renamed over `path` and the folder flushed, so
/// a crash at any moment leaves the old checkpoint or the new one, never a broken
/// one. The parameters also load with [`super::load_safetensors`] (and in PyTorch,
/// beside the `optimizer.*` tensors).
///
/// # Errors
/// If the optimizer does not support checkpoints, a parameter name starts with
/// `optimizer.` or `fit.` (reserved), a value cannot be read back, or the file
/// cannot be written.
pub fn save_checkpoint(model: &dyn Module, optimizer: &dyn Optimizer, path: impl AsRef<Path>) -> Result<()> {
    save_checkpoint_with(model, optimizer, &Extra::default(), path.as_ref())
}

/// Loads a checkpoint written by [`save_checkpoint`] (or by `fit`'s
/// `ModelCheckpoint`) into `model` and `optimizer`, and puts the global random
/// stream back where it was, so that the same steps that followed the save give the
/// same bits. Strict: the checkpoint must hold exactly the model's parameter names
/// and shapes and state for an optimizer of the same kind over the same shapes; on
/// any mismatch the error names every one, and neither the model, the optimizer nor
/// the random stream is changed.
pub fn load_checkpoint(model: &mut dyn Module, optimizer: &mut dyn Optimizer, path: impl AsRef<Path>) -> Result<()> {
    read_checkpoint(model, optimizer, path.as_ref())?.apply(optimizer)?;
    Ok(())
}

/// [`save_checkpoint`] with `fit`'s state.
pub(crate) fn save_checkpoint_with(
    model: &dyn Module,
    optimizer: &dyn Optimizer,
    extra: &Extra,
    path: &Path,
) -> Result<()> {
    let state = optimizer.state()?;
    let mut tensors = Vec::new();
    for (name, t) in super::state_tensors(model) {
        if is_reserved(&name) {
            return Err(Error::Invalid(format!(
                "save_checkpoint: parameter {name:?} starts with {OPTIMIZER:?} or {FIT:?}, which checkpoints reserve for their own state"
            )));
        }
        tensors.push((name, t.shape().to_vec(), super::Values::of(&t)?));
    }
    let mut meta = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("version".into(), VERSION.into()),
        ("optimizer".into(), state.kind.clone()),
        ("optimizer.lr".into(), format!("{:?}", state.lr)),
        ("optimizer.steps".into(), state.steps.to_string()),
        ("optimizer.parameters".into(), state.buffers.len().to_string()),
    ]);
    let hyper: Vec<String> = state.hyper.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
    meta.insert("optimizer.hyper".into(), hyper.join(","));
    let params = optimizer.parameters();
    for (i, buffers) in state.buffers.iter().enumerate() {
        let names: Vec<&str> = buffers.iter().map(|(n, _)| n.as_str()).collect();
        meta.insert(format!("optimizer.buffers.{i}"), names.join(","));
        for (name, values) in buffers {
            let shape = match params.get(i) {
                Some(p) if p.numel() == values.len() => p.shape().to_vec(),
                _ => vec![values.len()],
            };
            tensors.push((format!("{OPTIMIZER}{i}.{name}"), shape, values.clone().into()));
        }
    }
    let (seed, stream) = crate::rng::position();
    meta.insert("rng".into(), format!("{seed},{stream}"));
    for (key, value) in &extra.meta {
        meta.insert(format!("{FIT}{key}"), value.clone());
    }
    for (name, values) in &extra.arrays {
        tensors.push((format!("{FIT}{name}"), vec![values.len()], values.clone().into()));
    }
    write_atomically(path, &serialize(path, &tensors, Some(meta))?)
}

/// A checkpoint read and checked against a model and an optimizer, not yet applied.
pub(crate) struct Checkpoint {
    params: Vec<(Tensor, Vec<f32>)>,
    optimizer: OptimizerState,
    rng: (u64, u64),
    /// `fit`'s state (empty for a checkpoint from [`save_checkpoint`]).
    pub(crate) extra: Extra,
}

impl Checkpoint {
    /// Loads the optimizer state, the parameters and the random stream's position;
    /// returns `fit`'s state.
    pub(crate) fn apply(self, optimizer: &mut dyn Optimizer) -> Result<Extra> {
        optimizer.load_state(&self.optimizer)?;
        for (param, values) in self.params {
            param.assign(&values)?;
        }
        crate::rng::set_position(self.rng);
        Ok(self.extra)
    }
}

/// Reads `path` and checks it against `model` and `optimizer`, changing nothing:
/// every mismatch (parameter names and shapes, optimizer kind, state buffers) and
/// every malformed entry is reported in one [`Error::Load`].
pub(crate) fn read_checkpoint(model: &dyn Module, optimizer: &dyn Optimizer, path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = parse(path, &bytes)?;
    let load_error = |problems: Vec<String>| Error::Load {
        path: path.into(),
        problems,
    };
    let meta = SafeTensors::read_metadata(&bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().clone())
        .unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(load_error(vec![
            "not a wgnn checkpoint (no `format: wgnn-checkpoint` in its metadata); a plain model file loads with load_safetensors".into(),
        ]));
    }
    if meta.get("version").map(String::as_str) != Some(VERSION) {
        return Err(load_error(vec![format!(
            "checkpoint format version {:?}, this wgnn reads version {VERSION}",
            meta.get("version")
        )]));
    }
    let (mut model_tensors, mut optimizer_tensors, mut fit_tensors) = (HashMap::new(), HashMap::new(), HashMap::new());
    for (name, view) in file.tensors() {
        let bucket = if name.starts_with(OPTIMIZER) {
            &mut optimizer_tensors
        } else if let Some(rest) = name.strip_prefix(FIT) {
            fit_tensors.insert(rest.to_string(), view);
            continue;
        } else {
            &mut model_tensors
        };
        bucket.insert(name, view);
    }
    let mut problems = Vec::new();
    let params = match_parameters(&super::state_tensors(model), model_tensors).unwrap_or_else(|p| {
        problems.extend(p);
        Vec::new()
    });
    let given = optimizer_state(&meta, &mut optimizer_tensors, &mut problems);
    let mut leftover: Vec<&String> = optimizer_tensors.keys().collect();
    leftover.sort();
    problems.extend(leftover.into_iter().map(|n| format!("unexpected tensor {n:?}")));
    problems.extend(optimizer.state()?.mismatches(&given));
    let rng = meta
        .get("rng")
        .and_then(|r| r.split_once(','))
        .and_then(|(s, n)| Some((s.parse().ok()?, n.parse().ok()?)));
    if rng.is_none() {
        problems.push(format!("rng: {:?} is not `seed,stream`", meta.get("rng")));
    }
    let mut extra = Extra::default();
    for (key, value) in &meta {
        if let Some(rest) = key.strip_prefix(FIT) {
            extra.meta.insert(rest.to_string(), value.clone());
        }
    }
    for (name, view) in fit_tensors {
        match view.dtype() {
            Dtype::F32 => {
                extra.arrays.insert(name, f32_values(&view));
            }
            other => problems.push(format!("tensor \"{FIT}{name}\" is {other:?}, not F32")),
        }
    }
    if !problems.is_empty() {
        return Err(load_error(problems));
    }
    Ok(Checkpoint {
        params,
        optimizer: given,
        rng: rng.expect("checked"),
        extra,
    })
}

/// The optimizer state the metadata and the `optimizer.` tensors describe (taking
/// the tensors it uses out of `tensors`); what is missing or malformed goes to
/// `problems`.
fn optimizer_state(
    meta: &HashMap<String, String>,
    tensors: &mut HashMap<String, TensorView<'_>>,
    problems: &mut Vec<String>,
) -> OptimizerState {
    let mut field = |key: &str| {
        let value = meta.get(key).cloned();
        if value.is_none() {
            problems.push(format!("metadata {key:?} is missing"));
        }
        value.unwrap_or_default()
    };
    let (kind, lr, steps, count, hyper) = (
        field("optimizer"),
        field("optimizer.lr"),
        field("optimizer.steps"),
        field("optimizer.parameters"),
        field("optimizer.hyper"),
    );
    // f64 and f32 each parsed as their own type: the text reads back to the same bits.
    let lr = lr.parse::<f64>().unwrap_or_else(|_| {
        if !lr.is_empty() {
            problems.push(format!("metadata \"optimizer.lr\": {lr:?} is not a number"));
        }
        f64::NAN
    });
    let steps = steps.parse::<u64>().ok();
    let count = count.parse::<usize>().ok();
    let mut hyper_values = Vec::new();
    for entry in hyper.split(',').filter(|h| !h.is_empty()) {
        match entry.split_once('=').map(|(n, v)| (n, v.parse::<f32>())) {
            Some((name, Ok(value))) => hyper_values.push((name.to_string(), value)),
            _ => problems.push(format!("metadata \"optimizer.hyper\": {entry:?} is not `name=number`")),
        }
    }
    if steps.is_none() || count.is_none() {
        problems.push("metadata \"optimizer.steps\" or \"optimizer.parameters\" is not a count".into());
    }
    let count = count.unwrap_or(0);
    let mut buffers = Vec::new();
    // Each parameter has a `optimizer.buffers.<i>` entry: a larger count is malformed.
    for i in 0..count.min(meta.len()) {
        let names = meta.get(&format!("optimizer.buffers.{i}")).cloned().unwrap_or_default();
        let mut bufs = Vec::new();
        for name in names.split(',').filter(|n| !n.is_empty()) {
            let key = format!("{OPTIMIZER}{i}.{name}");
            match tensors.remove(&key) {
                Some(view) if view.dtype() == Dtype::F32 => bufs.push((name.to_string(), f32_values(&view))),
                Some(view) => problems.push(format!("tensor {key:?} is {:?}, not F32", view.dtype())),
                None => problems.push(format!("missing tensor {key:?}")),
            }
        }
        buffers.push(bufs);
    }
    OptimizerState {
        kind,
        lr,
        hyper: hyper_values,
        steps: steps.unwrap_or(0),
        buffers,
    }
}
