//! In-place updates that a forward pass asks for — batch norm's running statistics
//! in training mode — and that run last in the **next plan on their device**, beside
//! the optimizer's updates: a training step's forward, backward, parameter updates
//! and running-statistics updates are one plan (one submit on the GPU).
//!
//! A forward takes `&self`, so a layer cannot write its buffers then; it builds an
//! update node ([`defer`]) instead. Reading a buffer that such an update writes
//! (`to_vec`, saving, `Module::to`, an evaluation-mode forward) first runs the
//! pending updates ([`flush_writing`]), so a value is never read before the update
//! PyTorch would have applied in its forward. If the plan that carries them fails,
//! they are dropped with it (the error is reported once, by that plan).

use std::sync::Mutex;

use super::plan::realize_all;
use crate::{Device, Result, Tensor};

/// Update nodes waiting for the next plan of their device.
static DEFERRED: Mutex<Vec<Tensor>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<Tensor>> {
    DEFERRED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Queues an in-place update node (its op has `in_place_from`) for the next plan on
/// its device.
pub(crate) fn defer(update: Tensor) {
    pending().push(update);
}

/// Takes the queued updates of `device`, in the order they were queued.
pub(crate) fn take(device: &Device) -> Vec<Tensor> {
    let mut all = pending();
    let (mine, others): (Vec<Tensor>, Vec<Tensor>) = all.drain(..).partition(|u| u.device().same(device));
    *all = others;
    mine
}

/// Runs the queued updates of `t`'s device now if one of them writes `t`. On an
/// error they stay queued, so the next plan on the device reports it.
pub(crate) fn flush_writing(t: &Tensor) -> Result<()> {
    let writes = |u: &Tensor| {
        let from = u.0.op.in_place_from().unwrap_or(u.0.inputs.len());
        u.0.inputs[from..].iter().any(|w| w.id() == t.id())
    };
    if !pending().iter().any(writes) {
        return Ok(());
    }
    let updates = take(t.device());
    realize_all(&[], &updates).inspect_err(|_| pending().extend(updates.iter().cloned()))
}
