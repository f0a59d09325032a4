//! Which products of a CPU plan read their B packed once per run
//! ([`FastPath::PackedOperand`], `packed_gemm.rs`): decided when the plan is
//! compiled, from its steps alone. A B qualifies when it is an input of the plan
//! (an external: a parameter) that no step writes — only the updates, which run
//! after every step, may — so one packing per run serves every product that reads
//! it. The packed copies are kept from run to run and packed again at the first
//! product of each run (the updates have changed B since).
//!
//! The automatic choice takes a product of at most [`MAX_ROWS`] rows of A, where one
//! of the SIMD tiles runs, when its B is read by two products or more (an RNN's
//! recurrent weight, read at every time step: one packing for all of them) or read
//! transposed (a layer's weight `[out, in]` in `x·Wᵀ`, which `matrixmultiply`
//! packs with a strided gather at every product: the seed MLP's first layer at
//! batch 128, 197 → 152 µs a step with the packing, on a 2-vCPU AMD EPYC). A B read
//! once untransposed (the batch in a weight's gradient) stays with `matrixmultiply`,
//! which was faster there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use super::packed_gemm;
use crate::backend::kernel::Packable;
use crate::backend::{Counters, Slot, Step};
use crate::fast_path::{self, FastPath};

/// Products with more rows of A than this are left to `matrixmultiply` (whose own
/// packing and cache blocking of A pay off there) unless the path is forced on.
const MAX_ROWS: usize = 128;

/// The packs of one plan.
pub(super) struct PlanPacks {
    /// Per step: its pack and whether the automatic choice takes it.
    of_step: Vec<Option<(usize, bool)>>,
    /// Per pack: the external it packs and the form.
    packs: Vec<(usize, Packable)>,
    /// Per pack: its packed words (empty until first used), kept from run to run.
    buffers: Mutex<Vec<Vec<f32>>>,
    counters: Arc<Counters>,
}

impl PlanPacks {
    /// The packs of `steps`: one per external B and form that some product reads and
    /// no step writes.
    pub(super) fn new(steps: &[Step], counters: &Arc<Counters>) -> PlanPacks {
        let written: Vec<usize> = steps
            .iter()
            .flat_map(|s| &s.bindings[s.kernel.reads()..])
            .filter_map(|place| match place.slot {
                Slot::External(e) => Some(e),
                Slot::Arena(_) => None,
            })
            .collect();
        let mut index: HashMap<(usize, usize, usize, bool), usize> = HashMap::new();
        let mut packs = Vec::new();
        let mut readers = Vec::new();
        let mut of_step: Vec<Option<(usize, bool)>> = steps
            .iter()
            .map(|step| {
                let form = step.kernel.packable()?;
                let b = step.bindings[form.input];
                let (Slot::External(e), 0) = (b.slot, b.offset) else {
                    return None;
                };
                if written.contains(&e) {
                    return None;
                }
                let pack = *index.entry((e, form.k, form.n, form.tb)).or_insert_with(|| {
                    packs.push((e, form));
                    readers.push(0);
                    packs.len() - 1
                });
                readers[pack] += 1;
                Some((pack, form.m <= MAX_ROWS))
            })
            .collect();
        let fma = packed_gemm::worth_packing();
        for (pack, auto) in of_step.iter_mut().flatten() {
            *auto &= fma && (readers[*pack] >= 2 || packs[*pack].1.tb);
        }
        PlanPacks {
            of_step,
            buffers: Mutex::new(vec![Vec::new(); packs.len()]),
            packs,
            counters: counters.clone(),
        }
    }

    /// Per pack, whether it was packed in this run: all false at a run's start.
    pub(super) fn fresh_run(&self) -> Vec<bool> {
        vec![false; self.packs.len()]
    }

    /// Runs step `i` (`None`: an update) from its packed B where it takes the path
    /// (packing B first if this run has not yet), else as [`super::run_step`] does.
    pub(super) fn run_step(
        &self,
        i: Option<usize>,
        step: &Step,
        arena: &mut [Vec<f32>],
        ext: &[&RwLock<Vec<f32>>],
        packed: &mut [bool],
    ) {
        let Some((pack, auto)) = i.and_then(|i| self.of_step[i]) else {
            return super::run_step(step, arena, ext, None);
        };
        if !fast_path::choose(FastPath::PackedOperand, auto) {
            return super::run_step(step, arena, ext, None);
        }
        let (e, form) = self.packs[pack];
        let mut buffers = self.buffers.lock().unwrap();
        let buffer = &mut buffers[pack];
        if !packed[pack] {
            let words = packed_gemm::packed_words(form.k, form.n);
            if buffer.len() != words {
                Counters::sub(&self.counters.live_buffer_bytes, (buffer.len() * 4) as u64);
                *buffer = vec![0.0; words];
                Counters::add(&self.counters.live_buffer_bytes, (words * 4) as u64);
            }
            let b = ext[e].read().unwrap();
            packed_gemm::pack(form.k, form.n, form.tb, &b[..step.words[form.input]], buffer);
            packed[pack] = true;
        }
        super::run_step(step, arena, ext, Some(buffer))
    }
}

impl Drop for PlanPacks {
    fn drop(&mut self) {
        let words: usize = self.buffers.get_mut().map_or(0, |b| b.iter().map(Vec::len).sum());
        Counters::sub(&self.counters.live_buffer_bytes, (words * 4) as u64);
    }
}
