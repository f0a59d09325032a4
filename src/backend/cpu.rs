//! The CPU reference backend: runs each kernel's CPU twin (`src/ops/`), the ground
//! truth that the WGSL kernels in `shaders/` are tested against.

use std::sync::{Arc, Mutex, RwLock};
use web_time::Instant;

use super::{BoxFuture, Counters, Executable, Program, Slot, Step, Storage, Timings, Watch};
use crate::{Clock, DeviceInfo, DeviceKind, Error, Result};

/// A CPU buffer; its bytes count as live while it exists.
pub(crate) struct CpuBuffer {
    pub data: RwLock<Vec<f32>>,
    counters: Arc<Counters>,
    bytes: u64,
}

impl CpuBuffer {
    fn new(data: Vec<f32>, counters: &Arc<Counters>) -> Arc<CpuBuffer> {
        let bytes = (data.len() * 4) as u64;
        Counters::add(&counters.live_buffer_bytes, bytes);
        Arc::new(CpuBuffer {
            data: RwLock::new(data),
            counters: counters.clone(),
            bytes,
        })
    }
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        Counters::sub(&self.counters.live_buffer_bytes, self.bytes);
    }
}

pub(crate) struct CpuBackend {
    counters: Arc<Counters>,
}

impl CpuBackend {
    pub(crate) fn new(counters: Arc<Counters>) -> CpuBackend {
        CpuBackend { counters }
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
            max_compute_invocations_per_workgroup: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            max_compute_workgroups_per_dimension: u32::MAX,
            max_storage_buffers_per_shader_stage: u32::MAX,
        }
    }

    fn stage(&self, data: Vec<f32>) -> Result<Storage> {
        Ok(Storage::Cpu(CpuBuffer::new(data, &self.counters)))
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
        Ok(Box::new(CpuPlan {
            program,
            arena: Mutex::new(arena),
            counters: self.counters.clone(),
            bytes: bytes as u64,
        }))
    }
}

struct CpuPlan {
    program: Program,
    arena: Mutex<Vec<Vec<f32>>>,
    counters: Arc<Counters>,
    bytes: u64,
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
        let mut run_step = |step: &Step, arena: &mut [Vec<f32>], ext: &[&RwLock<Vec<f32>>]| match times.as_mut() {
            None => run_step(step, arena, ext),
            Some(times) => {
                let start = Instant::now();
                run_step(step, arena, ext);
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
            run_step(step, &mut arena, &ext_data);
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
        let kept = self
            .program
            .kept
            .iter()
            .map(|&(slot, words)| {
                let data = match slot {
                    Slot::Arena(s) => arena[s][..words].to_vec(),
                    Slot::External(e) => ext_data[e].read().unwrap()[..words].to_vec(),
                };
                Storage::Cpu(CpuBuffer::new(data, &self.counters))
            })
            .collect();
        for step in &self.program.updates {
            run_step(step, &mut arena, &ext_data);
        }
        let launches = (self.program.steps.len() + self.program.updates.len()) as u64;
        Counters::add(&self.counters.dispatches, launches);
        Counters::add(&self.counters.submits, 1);
        Ok(kept)
    }
}

/// Runs one step: takes the written buffers out (arena) or locks them (externals),
/// borrows the read ones, and calls the kernel's CPU function. (Also the CPU half of
/// shadow mode, `src/graph/debug.rs`.)
pub(crate) fn run_step(step: &Step, arena: &mut [Vec<f32>], ext: &[&RwLock<Vec<f32>>]) {
    let reads = step.kernel.reads();
    let mut taken: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut ext_guards = Vec::new();
    for slot in &step.bindings[reads..] {
        match *slot {
            Slot::Arena(s) => taken.push((s, std::mem::take(&mut arena[s]))),
            Slot::External(e) => ext_guards.push(ext[e].write().unwrap()),
        }
    }
    {
        let read_guards: Vec<_> = step.bindings[..reads]
            .iter()
            .map(|slot| match *slot {
                Slot::External(e) => Some(ext[e].read().unwrap()),
                Slot::Arena(_) => None,
            })
            .collect();
        let inputs: Vec<&[f32]> = step.bindings[..reads]
            .iter()
            .zip(&read_guards)
            .map(|(slot, guard)| match (slot, guard) {
                (_, Some(g)) => &g[..],
                (Slot::Arena(s), None) => &arena[*s][..],
                _ => unreachable!(),
            })
            .collect();
        let mut outputs: Vec<&mut [f32]> = taken
            .iter_mut()
            .map(|(_, v)| &mut v[..])
            .chain(ext_guards.iter_mut().map(|g| &mut g[..]))
            .collect();
        step.kernel.cpu(&inputs, &mut outputs);
    }
    for (s, v) in taken {
        arena[s] = v;
    }
}
