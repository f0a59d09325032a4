//! In-place updates that a forward pass asks for — batch norm's running statistics
//! in training mode — and that run last in the **next plan that the same thread runs
//! on their device**, beside the optimizer's updates: a training step's forward,
//! backward, parameter updates and running-statistics updates are one plan (one
//! submit on the GPU).
//!
//! A forward takes `&self`, so a layer cannot write its buffers then; it builds an
//! update node ([`defer`]) instead. Reading a buffer that such an update writes
//! (`to_vec`, saving, `Module::to`, an evaluation-mode forward) first runs the
//! pending updates that write it ([`flush_writing`]), so a value is never read
//! before the update PyTorch would have applied in its forward. If the plan that
//! carries them fails, they are dropped with it (the error is reported once, by
//! that plan).
//!
//! Updates belong to the thread that queued them: models trained on several threads
//! at once over one device each see their own updates applied by their own plans,
//! in the order they were queued — a plan on another thread never takes them (it
//! could run them after a later update of the same buffer, or after this thread read
//! the buffer).

use std::sync::Mutex;
use std::thread::ThreadId;

use super::plan::realize_all;
use crate::{Device, Result, Tensor};

/// Update nodes waiting for a plan, with the thread that queued each.
static DEFERRED: Mutex<Vec<(ThreadId, Tensor)>> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Vec<(ThreadId, Tensor)>> {
    DEFERRED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes and returns the queued updates `pick` selects, in the order they were
/// queued.
fn take_where(pick: impl Fn(ThreadId, &Tensor) -> bool) -> Vec<Tensor> {
    let mut all = pending();
    let (mine, others): (Vec<_>, Vec<_>) = all.drain(..).partition(|(thread, u)| pick(*thread, u));
    *all = others;
    mine.into_iter().map(|(_, u)| u).collect()
}

/// Queues an in-place update node (its op has `in_place_from`) for the next plan
/// this thread runs on its device.
pub(crate) fn defer(update: Tensor) {
    pending().push((std::thread::current().id(), update));
}

/// Takes the updates this thread queued on `device`, in the order they were queued.
pub(crate) fn take(device: &Device) -> Vec<Tensor> {
    let me = std::thread::current().id();
    take_where(|thread, u| thread == me && u.device().same(device))
}

/// Whether the in-place update `u` writes `t`.
fn writes(u: &Tensor, t: &Tensor) -> bool {
    let from = u.0.op.in_place_from().unwrap_or(u.0.inputs.len());
    u.0.inputs[from..].iter().any(|w| w.id() == t.id())
}

/// Runs the queued updates that write `t` (whichever thread queued them) now, in
/// the order they were queued — the plan adds this thread's other updates on the
/// device. On an error they stay queued, so the next plan on the device reports it.
pub(crate) fn flush_writing(t: &Tensor) -> Result<()> {
    if !pending().iter().any(|(_, u)| writes(u, t)) {
        return Ok(());
    }
    let updates = take_where(|_, u| writes(u, t));
    realize_all(&[], &updates).inspect_err(|_| {
        let me = std::thread::current().id();
        pending().splice(0..0, updates.iter().map(|u| (me, u.clone())));
    })
}
