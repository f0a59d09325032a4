//! Profiled plan runs (`Device::set_profile`, `WGNN_PROFILE`): each launch is timed and
//! labelled by the node it was lowered from (kernel, op, shape, the source line that
//! built it); the device's profiler (`device/profile.rs`) adds the times up.

use std::sync::{Arc, OnceLock};

use crate::backend::{Executable, Program, Storage};
use crate::device::profile::Label;
use crate::{Device, Result, Tensor};

/// The labels of a program's launches (steps, then updates), from the nodes of the
/// schedule it was lowered from (updates after the nodes).
fn labels(program: &Program, nodes: &[&Tensor]) -> Vec<Label> {
    program
        .steps
        .iter()
        .chain(&program.updates)
        .map(|step| {
            let node = nodes[step.node];
            let origin = &node.0.origin;
            let location = match origin.grad_of.as_ref().and_then(std::sync::Weak::upgrade) {
                Some(forward) => format!("grad of {} at {}", forward.op.name(), forward.origin.at),
                None => origin.at.to_string(),
            };
            // An in-place update is named by the first tensor it writes (the parameter).
            let shape = match node.0.op.in_place_from() {
                Some(from) => node.0.inputs[from].shape(),
                None => node.shape(),
            };
            Label {
                kernel: step.kernel.wgsl().entry.to_string(),
                op: node.0.op.name().to_string(),
                shape: shape.to_vec(),
                location,
                cost: step.kernel.cost(&step.words),
            }
        })
        .collect()
}

/// Runs a compiled plan with each launch timed, and adds the times to the device's
/// profile. `id` names the plan; `labels` caches its launches' labels.
pub(crate) fn run(
    exec: &dyn Executable,
    program: &Program,
    (id, labels_cache): (u64, &OnceLock<Arc<Vec<Label>>>),
    nodes: &[&Tensor],
    externals: &[Storage],
    device: &Device,
) -> Result<Vec<Storage>> {
    let (kept, timings) = exec.run_profiled(externals)?;
    let labels = || labels_cache.get_or_init(|| Arc::new(labels(program, nodes))).clone();
    device.profiler().record(id, labels, timings);
    Ok(kept)
}
