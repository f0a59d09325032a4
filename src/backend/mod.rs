//! What a backend is: storage for values, and a compiler from a backend-neutral
//! [`Program`] (a list of [`Kernel`] launches over buffer slots) to something it can
//! run. A kernel brings its own CPU function and WGSL launch (`src/ops/`), so neither
//! backend knows any op: the CPU backend is the reference; the GPU backend runs the
//! same programs with the WGSL kernels in `shaders/`.

pub(crate) mod cpu;
pub(crate) mod gpu;
mod headless;
pub(crate) mod info;
pub(crate) mod kernel;
mod pipeline_cache;
mod tune_cache;
pub(crate) mod wait;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub(crate) use kernel::Kernel;

pub(crate) use info::{DeviceInfo, DeviceKind, GpuOptions};

use crate::Result;

/// Where a value lives.
#[derive(Clone)]
pub(crate) enum Storage {
    /// Data still on the host, uploaded into a plan's input buffer when a GPU plan
    /// reads it (batches: one upload per use, nothing else allocated).
    Host(Arc<Vec<f32>>),
    /// A CPU backend buffer.
    Cpu(Arc<cpu::CpuBuffer>),
    /// A resident GPU buffer.
    Gpu(Arc<gpu::GpuBuffer>),
}

impl Storage {
    pub(crate) fn is_host(&self) -> bool {
        matches!(self, Storage::Host(_))
    }
}

/// A buffer reference inside a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Plan-owned scratch buffer, reused by liveness.
    Arena(usize),
    /// A value from outside the plan (a leaf or an earlier plan's result).
    External(usize),
}

/// Where a binding or a kept value lies: from word `offset` of `slot`. The offset is
/// 0 but for a view: a node whose value is a contiguous range of another's buffer
/// ([`crate::ops::Rule::views`]), which binds that buffer there instead of copying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Place {
    pub slot: Slot,
    /// In words.
    pub offset: usize,
}

impl Place {
    /// The whole of `slot`, from its first word.
    pub(crate) fn start_of(slot: Slot) -> Place {
        Place { slot, offset: 0 }
    }
}

/// An input of a program that comes from outside it.
#[derive(Clone, Debug)]
pub(crate) struct ExternalSpec {
    pub words: usize,
    /// Host data (uploaded into a plan-owned buffer) rather than a resident buffer.
    pub host: bool,
}

/// One kernel launch: bindings are the kernel's reads, then its writes.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub kernel: Arc<dyn Kernel>,
    pub bindings: Vec<Place>,
    /// Words of each binding that the launch uses (the profiler's bytes moved).
    pub words: Vec<usize>,
    /// The node it computes: its index in the plan's schedule, updates after the
    /// nodes (the profiler's names).
    pub node: usize,
}

/// A backend-neutral program: the lowered form of a plan.
#[derive(Clone, Debug, Default)]
pub(crate) struct Program {
    /// Words per arena slot.
    pub arena: Vec<usize>,
    pub externals: Vec<ExternalSpec>,
    /// Compute steps, in order.
    pub steps: Vec<Step>,
    /// In-place updates, run after `kept` values are copied out.
    pub updates: Vec<Step>,
    /// Values copied into fresh buffers for the nodes that outlive the plan.
    pub kept: Vec<(Place, usize)>,
    /// For each node of the plan that launches kernels: where its value is complete
    /// (the numbers of the debugging modes, `src/graph/debug.rs`).
    pub probes: Vec<Probe>,
}

/// Where a node's value can be read during a run: after the first `after` steps,
/// in the first `words` words of `slot`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe {
    /// The node's index in the plan's schedule.
    pub node: usize,
    pub after: usize,
    pub slot: Slot,
    pub words: usize,
}

/// A run that hands values out as they are computed (the debugging modes): after
/// each probe's step, `observe(probe index, values)`; an error from it stops the
/// run before any value is kept or any update runs.
pub(crate) struct Watch<'a> {
    /// Sorted by `after`.
    pub probes: &'a [Probe],
    pub observe: &'a mut dyn FnMut(usize, &[f32]) -> Result<()>,
}

/// A compiled program, ready to run many times.
pub(crate) trait Executable: Send + Sync {
    /// Runs the program on these external values and returns the kept values;
    /// with a watch, hands the probed values out as it goes (slower: the GPU
    /// submits and reads back at each probe).
    fn run(&self, externals: &[Storage], watch: Option<Watch<'_>>) -> Result<Vec<Storage>>;

    /// Runs the program as `run` does and times each launch (steps, then updates):
    /// the profiler (`src/graph/profile.rs`).
    fn run_profiled(&self, externals: &[Storage]) -> Result<(Vec<Storage>, Timings)>;
}

/// The time of each launch of a profiled run (steps, then updates), and how it was
/// measured.
#[derive(Clone, Debug)]
pub(crate) struct Timings {
    pub clock: Clock,
    pub seconds: Vec<f64>,
    /// Per launch: the variant the backend runs (the autotune's choice, e.g. a GEMM
    /// tile; empty where there is no choice) and its dispatches.
    pub variants: Vec<(String, u64)>,
}

/// How a profile's times were measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// GPU timestamp queries around each launch (one compute pass per launch): time
    /// on the device itself.
    GpuTimestamps,
    /// An adapter without timestamp queries: each launch submitted alone and waited
    /// for, timed on the host, so each time includes a submit and a wait (an upper
    /// bound, far above the kernel's own time for small launches).
    HostPerLaunch,
    /// The CPU backend: wall time of each kernel call.
    CpuWall,
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Clock::GpuTimestamps => "GPU timestamps",
            Clock::HostPerLaunch => "host clock, one submit and wait per launch (no timestamp queries)",
            Clock::CpuWall => "CPU wall clock",
        })
    }
}

/// A boxed future, for object-safe async readback.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A compute backend.
pub(crate) trait Backend: Send + Sync {
    fn info(&self) -> DeviceInfo;
    /// Whether kernels may use half-precision floats ([`DeviceInfo::shader_f16`],
    /// without copying the whole description).
    fn shader_f16(&self) -> bool {
        self.info().shader_f16
    }
    /// The autotune's choices held, and the file they are saved to (none on the CPU).
    fn autotune_cache(&self) -> (usize, Option<std::path::PathBuf>) {
        (0, None)
    }
    /// Takes ownership of host data for a new leaf.
    fn stage(&self, data: Vec<f32>) -> Result<Storage>;
    /// Moves a value into a resident buffer that optimizers can update in place.
    fn make_resident(&self, storage: Storage) -> Result<Storage>;
    /// Overwrites a value with `data` (same length), in place where it is resident.
    fn overwrite(&self, storage: Storage, data: &[f32]) -> Result<Storage>;
    /// Reads a value back to the host.
    fn read<'a>(&'a self, storage: &'a Storage) -> BoxFuture<'a, Result<Vec<f32>>>;
    fn compile(&self, program: Program) -> Result<Box<dyn Executable>>;
    /// The word offsets a view may start at are multiples of this (the GPU's
    /// `min_storage_buffer_offset_alignment`, in words; 1 on the CPU). A view that
    /// would start elsewhere is a copy.
    fn view_alignment(&self) -> usize {
        1
    }
    /// Destroys the device as a driver reset would (tests of device loss; GPU only).
    fn debug_destroy(&self) {}
    /// Replaces `from` with `to` in kernel sources compiled from now on (tests of
    /// shadow mode; GPU only).
    fn debug_patch_wgsl(&self, _from: &str, _to: &str) {}
    /// Forces the kernel variants whose names start with `prefix` (tests of every
    /// variant; GPU only).
    fn debug_kernel_variant(&self, _prefix: Option<&str>) {}
}

/// The counters behind `Device::stats`.
#[derive(Default, Debug)]
pub(crate) struct Counters {
    pub submits: AtomicU64,
    pub dispatches: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub bytes_downloaded: AtomicU64,
    pub live_buffer_bytes: AtomicU64,
    pub plan_cache_hits: AtomicU64,
    pub plan_cache_misses: AtomicU64,
    pub record_ns: AtomicU64,
    pub upload_ns: AtomicU64,
    pub submit_ns: AtomicU64,
    pub compile_ns: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
}
