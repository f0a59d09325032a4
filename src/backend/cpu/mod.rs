//! The CPU reference backend: runs each kernel's CPU twin (`src/ops/`), the ground
//! truth that the WGSL kernels in `shaders/` are tested against.

pub(crate) mod helper_thread;
pub(crate) mod packed_gemm;
mod plan_packs;
pub(crate) mod sgemm;
pub(crate) mod threads;
pub(crate) mod vmath;

use std::sync::{Arc, Mutex, RwLock};
use web_time::Instant;

use super::{BoxFuture, Clock, Counters, Executable, Program, Slot, Step, Storage, Timings, Watch};
use super::{DeviceInfo, DeviceKind};
use crate::{Error, Result};

/// A CPU buffer; its bytes count as live while it exists.
pub(crate) struct CpuBuffer {
    pub data: RwLock<Vec<f32>>,
    counters: Arc<Counters>,
    bytes: u64,
    /// Where its memory goes when it is dropped (values a plan handed out).
    pool: Option<Arc<Pool>>,
}

impl CpuBuffer {
    fn new(data: Vec<f32>, counters: &Arc<Counters>, pool: Option<&Arc<Pool>>) -> Arc<CpuBuffer> {
        let bytes = (data.len() * 4) as u64;
        Counters::add(&counters.live_buffer_bytes, bytes);
        Arc::new(CpuBuffer {
            data: RwLock::new(data),
            counters: counters.clone(),
            bytes,
            pool: pool.cloned(),
        })
    }
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        Counters::sub(&self.counters.live_buffer_bytes, self.bytes);
        if let Some(pool) = &self.pool {
            pool.give(std::mem::take(self.data.get_mut().unwrap_or_else(|e| e.into_inner())));
        }
    }
}

/// Memory of values that plans handed out and that were dropped since: a plan's
/// next run takes it back as arena memory, so a training step that hands out its
/// gradients moves them out of the arena instead of copying them, and allocates
/// nothing in steady state.
#[derive(Default)]
pub(crate) struct Pool(Mutex<Vec<Vec<f32>>>);

/// Most buffers a pool keeps.
const POOL_BUFFERS: usize = 64;

/// Smaller buffers are left to the allocator (cheap to make; pooling them would
/// crowd out the large ones).
const POOL_MIN_WORDS: usize = 4096;

impl Pool {
    fn give(&self, v: Vec<f32>) {
        if v.capacity() < POOL_MIN_WORDS {
            return;
        }
        let mut free = self.0.lock().unwrap();
        if free.len() < POOL_BUFFERS {
            free.push(v);
        }
    }

    /// A buffer of `words` zeros or old values, from the pool where one fits (the
    /// smallest such), else new.
    fn take(&self, words: usize) -> Vec<f32> {
        if words < POOL_MIN_WORDS {
            return vec![0.0; words];
        }
        // At most twice the size asked for: a large buffer stays for a large slot.
        let mut free = self.0.lock().unwrap();
        let best = (0..free.len())
            .filter(|&i| (words..=2 * words).contains(&free[i].capacity()))
            .min_by_key(|&i| free[i].capacity());
        match best {
            Some(i) => {
                let mut v = free.swap_remove(i);
                v.resize(words, 0.0);
                v
            }
            None => vec![0.0; words],
        }
    }
}

pub(crate) struct CpuBackend {
    counters: Arc<Counters>,
    pool: Arc<Pool>,
}

impl CpuBackend {
    pub(crate) fn new(counters: Arc<Counters>) -> CpuBackend {
        CpuBackend {
            counters,
            pool: Arc::new(Pool::default()),
        }
    }

    fn buffer<'a>(&self, storage: &'a Storage) -> Result<&'a Arc<CpuBuffer>> {
        match storage {
            Storage::Cpu(b) => Ok(b),
            _ => Err(Error::Invalid(
                "a CPU plan was given a value that lives on another device".into(),
            )),
        }
    }
}

impl super::Backend for CpuBackend {
    fn info(&self) -> DeviceInfo {
        DeviceInfo {
            kind: DeviceKind::Cpu,
            name: "cpu".into(),
            backend: "reference".into(),
            driver: format!("wgnn {}", env!("CARGO_PKG_VERSION")),
            device_type: "Cpu".into(),
            max_storage_buffer_binding_size: u64::MAX,
            max_buffer_size: u64::MAX,
            max_compute_workgroup_storage_size: 0,
            max_compute_invocations_per_workgroup: threads::get_num_threads() as u32,
            max_compute_workgroups_per_dimension: u32::MAX,
            max_storage_buffers_per_shader_stage: u32::MAX,
            shader_f16: true,
            subgroups: false,
            subgroup_sizes: (0, 0),
        }
    }

    fn stage(&self, data: Vec<f32>) -> Result<Storage> {
        Ok(Storage::Cpu(CpuBuffer::new(data, &self.counters, None)))
    }

    fn make_resident(&self, storage: Storage) -> Result<Storage> {
        Ok(storage)
    }

    fn overwrite(&self, storage: Storage, data: &[f32]) -> Result<Storage> {
        self.buffer(&storage)?.data.write().unwrap().copy_from_slice(data);
        Ok(storage)
    }

    fn read<'a>(&'a self, storage: &'a Storage) -> BoxFuture<'a, Result<Vec<f32>>> {
        Box::pin(async move { Ok(self.buffer(storage)?.data.read().unwrap().clone()) })
    }

    fn compile(&self, program: Program) -> Result<Box<dyn Executable>> {
        let arena = program.arena.iter().map(|&w| vec![0.0; w]).collect();
        let bytes: usize = program.arena.iter().sum::<usize>() * 4;
        Counters::add(&self.counters.live_buffer_bytes, bytes as u64);
        // Per arena slot, the largest kept value from its start (the first of equals)
        // is handed out whole where it fills at least half of the slot; the slot's
        // other kept values (views: ranges of it, or of what it held before) are
        // copied out first, and so is a value too small for its slot (an LSTM's
        // 512 KB input-weight gradient, handed out with the 13 MB slot of the input
        // projection, held 13 MB, and the slot's replacement from the pool was
        // zero-filled back to 13 MB each run: h512 steps 65.5–67.4 → 61.7–64.3 ms,
        // alternated, profiled).
        let kept = &program.kept;
        let movable = (0..kept.len())
            .map(|i| {
                let (place, words) = kept[i];
                let starts = |j: usize| kept[j].0.slot == place.slot && kept[j].0.offset == 0 && j != i;
                matches!(place.slot, Slot::Arena(s) if words * 2 >= program.arena[s])
                    && place.offset == 0
                    && (0..kept.len()).filter(|&j| starts(j)).all(|j| {
                        let other = kept[j].1;
                        other < words || (other == words && j > i)
                    })
            })
            .collect();
        let packs = plan_packs::PlanPacks::new(&program.steps, &self.counters);
        Ok(Box::new(CpuPlan {
            packs,
            program,
            arena: Mutex::new(arena),
            counters: self.counters.clone(),
            bytes: bytes as u64,
            pool: self.pool.clone(),
            movable,
        }))
    }
}

struct CpuPlan {
    program: Program,
    arena: Mutex<Vec<Vec<f32>>>,
    counters: Arc<Counters>,
    bytes: u64,
    pool: Arc<Pool>,
    /// Per kept value: its arena slot is handed out (replaced by pool memory)
    /// rather than copied.
    movable: Vec<bool>,
    /// The products that read a B packed once per run.
    packs: plan_packs::PlanPacks,
}

impl Drop for CpuPlan {
    fn drop(&mut self) {
        Counters::sub(&self.counters.live_buffer_bytes, self.bytes);
    }
}

impl Executable for CpuPlan {
    fn run(&self, externals: &[Storage], watch: Option<Watch<'_>>) -> Result<Vec<Storage>> {
        self.run_timed(externals, watch, None)
    }

    fn run_profiled(&self, externals: &[Storage]) -> Result<(Vec<Storage>, Timings)> {
        let mut seconds = Vec::with_capacity(self.program.steps.len() + self.program.updates.len());
        let kept = self.run_timed(externals, None, Some(&mut seconds))?;
        let clock = Clock::CpuWall;
        let variants = vec![(String::new(), 1); seconds.len()];
        Ok((
            kept,
            Timings {
                clock,
                seconds,
                variants,
            },
        ))
    }
}

impl CpuPlan {
    /// Runs the program; with `times`, pushes the wall time of each launch.
    fn run_timed(
        &self,
        externals: &[Storage],
        mut watch: Option<Watch<'_>>,
        mut times: Option<&mut Vec<f64>>,
    ) -> Result<Vec<Storage>> {
        let mut packed = self.packs.fresh_run();
        // `i`: the step's index, `None` for an update.
        let mut run_step = |i: Option<usize>, step: &Step, arena: &mut [Vec<f32>], ext: &[&RwLock<Vec<f32>>]| {
            let start = times.is_some().then(Instant::now);
            self.packs.run_step(i, step, arena, ext, &mut packed);
            if let (Some(times), Some(start)) = (times.as_mut(), start) {
                times.push(start.elapsed().as_secs_f64());
            }
        };
        let ext: Vec<&Arc<CpuBuffer>> = externals
            .iter()
            .map(|s| match s {
                Storage::Cpu(b) => Ok(b),
                _ => Err(Error::Invalid(
                    "a CPU plan was given a value that lives on another device".into(),
                )),
            })
            .collect::<Result<_>>()?;
        let ext_data: Vec<&RwLock<Vec<f32>>> = ext.iter().map(|b| &b.data).collect();
        let mut arena = self.arena.lock().unwrap();
        let mut probe = 0;
        for (done, step) in (1..).zip(&self.program.steps) {
            run_step(Some(done - 1), step, &mut arena, &ext_data);
            if let Some(w) = watch.as_mut() {
                while let Some(p) = w.probes.get(probe).filter(|p| p.after == done) {
                    match p.slot {
                        Slot::Arena(s) => (w.observe)(probe, &arena[s][..p.words])?,
                        Slot::External(e) => (w.observe)(probe, &ext_data[e].read().unwrap()[..p.words])?,
                    }
                    probe += 1;
                }
            }
        }
        // Copies first (the updates may overwrite an external); the updates write
        // externals only, so arena slots can be handed out after them.
        let mut kept: Vec<Option<Vec<f32>>> = self
            .program
            .kept
            .iter()
            .zip(&self.movable)
            .map(|(&(place, words), &movable)| {
                let range = place.offset..place.offset + words;
                // Into pool memory (a dropped value's): no fresh pages each run.
                let copy = |from: &[f32]| {
                    let mut to = self.pool.take(words);
                    to.copy_from_slice(&from[range.clone()]);
                    to
                };
                match place.slot {
                    _ if movable => None,
                    Slot::Arena(s) => Some(copy(&arena[s])),
                    Slot::External(e) => Some(copy(&ext_data[e].read().unwrap())),
                }
            })
            .collect();
        for step in &self.program.updates {
            run_step(None, step, &mut arena, &ext_data);
        }
        for ((value, &(place, words)), _) in kept.iter_mut().zip(&self.program.kept).zip(&self.movable) {
            if let (None, Slot::Arena(s)) = (&value, place.slot) {
                let fresh = self.pool.take(self.program.arena[s]);
                let mut data = std::mem::replace(&mut arena[s], fresh);
                data.truncate(words);
                *value = Some(data);
            }
        }
        let kept = kept
            .into_iter()
            .map(|v| {
                Storage::Cpu(CpuBuffer::new(
                    v.expect("every kept value"),
                    &self.counters,
                    Some(&self.pool),
                ))
            })
            .collect();
        let launches = (self.program.steps.len() + self.program.updates.len()) as u64;
        Counters::add(&self.counters.dispatches, launches);
        Counters::add(&self.counters.submits, 1);
        Ok(kept)
    }
}

/// Runs one step: takes the written buffers out (arena) or locks them (externals),
/// borrows the read ones, and calls the kernel's CPU function with each binding cut
/// to exactly its value's words (`Step::words`): an arena slot reused by liveness may
/// be longer than the value it holds now, and a kernel may derive row lengths from
/// its slices. (Also the CPU half of shadow mode, `src/graph/debug.rs`.)
pub(crate) fn run_step_plain(step: &Step, arena: &mut [Vec<f32>], ext: &[&RwLock<Vec<f32>>]) {
    run_step(step, arena, ext, None)
}

/// [`run_step_plain`], or with B already `packed` ([`plan_packs`]): the kernel's
/// [`cpu_packed`](super::kernel::Kernel::cpu_packed) twin.
fn run_step(step: &Step, arena: &mut [Vec<f32>], ext: &[&RwLock<Vec<f32>>], packed: Option<&[f32]>) {
    let reads = step.kernel.reads();
    let mut taken: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut ext_guards = Vec::new();
    for place in &step.bindings[reads..] {
        match place.slot {
            Slot::Arena(s) => taken.push((s, std::mem::take(&mut arena[s]))),
            Slot::External(e) => ext_guards.push(ext[e].write().unwrap()),
        }
    }
    {
        let read_guards: Vec<_> = step.bindings[..reads]
            .iter()
            .map(|place| match place.slot {
                Slot::External(e) => Some(ext[e].read().unwrap()),
                Slot::Arena(_) => None,
            })
            .collect();
        let inputs: Vec<&[f32]> = step.bindings[..reads]
            .iter()
            .zip(&read_guards)
            .zip(&step.words)
            .map(|((place, guard), &words)| {
                let range = place.offset..place.offset + words;
                match (place.slot, guard) {
                    (_, Some(g)) => &g[range],
                    (Slot::Arena(s), None) => &arena[s][range],
                    _ => unreachable!(),
                }
            })
            .collect();
        // The written bindings in binding order: arena slots and externals may
        // interleave.
        let mut arena_out = taken.iter_mut();
        let mut ext_out = ext_guards.iter_mut();
        let mut outputs: Vec<&mut [f32]> = step.bindings[reads..]
            .iter()
            .zip(&step.words[reads..])
            .map(|(place, &words)| {
                let range = place.offset..place.offset + words;
                match place.slot {
                    Slot::Arena(_) => &mut arena_out.next().expect("taken per arena write").1[range],
                    Slot::External(_) => &mut ext_out.next().expect("locked per external write")[range],
                }
            })
            .collect();
        match packed {
            Some(packed) => step.kernel.cpu_packed(&inputs, packed, &mut outputs),
            None => step.kernel.cpu(&inputs, &mut outputs),
        }
    }
    for (s, v) in taken {
        arena[s] = v;
    }
}
