//! Devices: the CPU reference backend and a wgpu GPU, how one is chosen, what it
//! reports about itself, and its counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) mod plans;
pub(crate) mod profile;

use plans::CompiledPlan;
use profile::Profiler;

use crate::backend::info::{DeviceInfo, DeviceKind, GpuOptions};
use crate::backend::wait::{wait, CAN_BLOCK};
use crate::backend::{cpu::CpuBackend, gpu::GpuBackend, Backend, Counters, Storage};
use crate::{Error, Result};

/// Counters of what a device has done, for checking that a training step is one
/// submit with no readback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Command buffers submitted (GPU) or plans run (CPU).
    pub submits: u64,
    /// Kernel launches.
    pub dispatches: u64,
    /// Bytes copied from the host to the device.
    pub bytes_uploaded: u64,
    /// Bytes read back from the device to the host.
    pub bytes_downloaded: u64,
    /// Bytes of buffers currently allocated on the device (pooled ones included).
    pub live_buffer_bytes: u64,
    /// Plans run from the plan cache (no compilation).
    pub plan_cache_hits: u64,
    /// Plans compiled (first run of a graph shape) and added to the cache.
    pub plan_cache_misses: u64,
    /// Host nanoseconds spent recording and submitting plan runs on a GPU (binding
    /// the inputs, encoding every launch, the submit; not waiting for the GPU), from
    /// which the host cost per launch (`(record_ns − upload_ns) / dispatches`); on the CPU backend,
    /// the plans' whole run time.
    pub record_ns: u64,
    /// The part of `record_ns` spent copying host data into a GPU plan's input
    /// buffers (a batch made on the host): `record_ns − upload_ns` is the recording
    /// of the launches and the submit. Zero on the CPU backend.
    pub upload_ns: u64,
    /// The part of `record_ns` spent in the GPU API after wgnn has recorded a plan's
    /// launches: `CommandEncoder::finish` (wgpu's validation, resource-state tracking
    /// and barriers, the driver's own recording) and `Queue::submit` (with wgpu's
    /// recycling of finished command buffers). `record_ns − upload_ns − submit_ns` is
    /// wgnn's own recording of the launches. Zero on the CPU backend.
    pub submit_ns: u64,
    /// Nanoseconds spent compiling new plans (scheduling, fusion, lowering, building
    /// the kernels and the autotune's timing): the first-step cost of a new graph.
    pub compile_ns: u64,
}

impl std::ops::Sub for Stats {
    type Output = Stats;
    /// Difference of two snapshots (live bytes: the later value minus the earlier).
    fn sub(self, earlier: Stats) -> Stats {
        Stats {
            submits: self.submits - earlier.submits,
            dispatches: self.dispatches - earlier.dispatches,
            bytes_uploaded: self.bytes_uploaded - earlier.bytes_uploaded,
            bytes_downloaded: self.bytes_downloaded - earlier.bytes_downloaded,
            live_buffer_bytes: self.live_buffer_bytes.wrapping_sub(earlier.live_buffer_bytes),
            plan_cache_hits: self.plan_cache_hits - earlier.plan_cache_hits,
            plan_cache_misses: self.plan_cache_misses - earlier.plan_cache_misses,
            record_ns: self.record_ns - earlier.record_ns,
            upload_ns: self.upload_ns - earlier.upload_ns,
            submit_ns: self.submit_ns - earlier.submit_ns,
            compile_ns: self.compile_ns - earlier.compile_ns,
        }
    }
}

/// Tolerance of shadow mode: a GPU value `g` and its CPU reference `c` agree when
/// `|g - c| <= atol + rtol * |c|` (as `numpy.allclose`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute tolerance.
    pub atol: f32,
    /// Relative tolerance.
    pub rtol: f32,
}

impl Default for Tolerance {
    /// `atol 1e-5, rtol 1e-4`: well above the rounding differences of the WGSL
    /// kernels (fused multiply-adds, `exp`/`log` approximations) on one node.
    fn default() -> Tolerance {
        Tolerance { atol: 1e-5, rtol: 1e-4 }
    }
}

/// The numerical debugging modes of a device (`src/graph/debug.rs`).
#[derive(Default)]
pub(crate) struct DebugModes {
    pub check_nan: AtomicBool,
    pub shadow: Mutex<Option<Tolerance>>,
    /// Whether `shadow` is set: the one flag a plan run reads when all is off.
    pub shadow_on: AtomicBool,
}

impl DebugModes {
    /// The modes `WGNN_CHECK_NAN` and `WGNN_SHADOW` ask for.
    fn from_env() -> DebugModes {
        DebugModes::from_vars(
            std::env::var("WGNN_CHECK_NAN").ok().as_deref(),
            std::env::var("WGNN_SHADOW").ok().as_deref(),
        )
    }

    /// The modes asked for by these values of `WGNN_CHECK_NAN` and `WGNN_SHADOW`:
    /// unset, empty or `0` is off; `WGNN_SHADOW=atol,rtol` sets the tolerance, any
    /// other value turns shadow mode on with the default one.
    fn from_vars(check_nan: Option<&str>, shadow: Option<&str>) -> DebugModes {
        fn on(v: Option<&str>) -> Option<&str> {
            v.filter(|v| !v.is_empty() && *v != "0")
        }
        let modes = DebugModes::default();
        modes.check_nan.store(on(check_nan).is_some(), Ordering::Relaxed);
        if let Some(v) = on(shadow) {
            let numbers: Vec<f32> = v.split(',').filter_map(|n| n.trim().parse().ok()).collect();
            let tolerance = match numbers[..] {
                [atol, rtol] => Tolerance { atol, rtol },
                _ => Tolerance::default(),
            };
            modes.set_shadow(Some(tolerance));
        }
        modes
    }

    fn set_shadow(&self, tolerance: Option<Tolerance>) {
        *self.shadow.lock().unwrap() = tolerance;
        self.shadow_on.store(tolerance.is_some(), Ordering::Relaxed);
    }
}

pub(crate) struct DeviceInner {
    id: u64,
    backend: Box<dyn Backend>,
    counters: Arc<Counters>,
    plans: Mutex<HashMap<String, Arc<CompiledPlan>>>,
    /// A resident 1.0, made once: the seed of every backward pass.
    one: OnceLock<Storage>,
    debug: DebugModes,
    profiler: Profiler,
}

/// A compute device: the CPU reference backend or a wgpu GPU. Cheap to clone;
/// tensors on the same device can be combined.
#[derive(Clone)]
pub struct Device(Arc<DeviceInner>);

static NEXT_DEVICE: AtomicU64 = AtomicU64::new(1);
static CPU: OnceLock<Device> = OnceLock::new();
static GPU: OnceLock<std::result::Result<Device, String>> = OnceLock::new();

impl Device {
    fn new(make: impl FnOnce(Arc<Counters>) -> Box<dyn Backend>) -> Device {
        let counters = Arc::new(Counters::default());
        Device::with_backend(make(counters.clone()), counters)
    }

    fn with_backend(backend: Box<dyn Backend>, counters: Arc<Counters>) -> Device {
        Device(Arc::new(DeviceInner {
            id: NEXT_DEVICE.fetch_add(1, Ordering::Relaxed),
            backend,
            counters,
            plans: Mutex::new(HashMap::new()),
            one: OnceLock::new(),
            debug: DebugModes::from_env(),
            profiler: Profiler::from_env(),
        }))
    }

    /// The CPU reference backend (always available; one per process).
    pub fn cpu() -> Device {
        CPU.get_or_init(|| Device::new(|c| Box::new(CpuBackend::new(c))))
            .clone()
    }

    /// A CPU device of its own (separate counters and plan cache), e.g. to measure
    /// one workload while others run.
    pub fn cpu_private() -> Device {
        Device::new(|c| Box::new(CpuBackend::new(c)))
    }

    /// The first wgpu adapter (Vulkan, Metal, DX12 or GL), with the adapter's real
    /// limits; one per process. `Err(Error::NoAdapter)` when there is none.
    /// `WGPU_BACKEND` (e.g. `vulkan`, `gl`) restricts the backends tried.
    ///
    /// In a browser (wasm32) the device is made by [`Device::gpu_async`]; until it
    /// has been, this returns [`Error::WouldBlock`], and afterwards the same device.
    pub fn gpu() -> Result<Device> {
        if !CAN_BLOCK && GPU.get().is_none() {
            return Err(Error::WouldBlock {
                what: "Device::gpu",
                instead: "Device::gpu_async",
            });
        }
        let result = GPU.get_or_init(|| {
            let backends = std::env::var("WGPU_BACKEND").unwrap_or_default();
            Device::gpu_with_backends(&backends).map_err(|e| match e {
                crate::Error::NoAdapter(reason) => reason,
                other => other.to_string(),
            })
        });
        match result {
            Ok(d) => Ok(d.clone()),
            Err(e) => Err(crate::Error::NoAdapter(e.clone())),
        }
    }

    /// Async form of [`Device::gpu`], the one a browser (wasm32) needs: there the
    /// adapter is the browser's WebGPU (`backend` "BrowserWebGpu"), and
    /// `Err(Error::NoAdapter)` means the browser has none (or it is turned off).
    /// Later calls, and [`Device::gpu`], return the same device.
    pub async fn gpu_async() -> Result<Device> {
        if GPU.get().is_none() {
            let backends = std::env::var("WGPU_BACKEND").unwrap_or_default();
            let options = GpuOptions {
                backends,
                ..GpuOptions::default()
            };
            let made = Device::gpu_with_async(&options).await.map_err(|e| match e {
                crate::Error::NoAdapter(reason) => reason,
                other => other.to_string(),
            });
            let _ = GPU.set(made);
        }
        Device::gpu()
    }

    /// A new GPU device on the named wgpu backends (comma-separated: `vulkan`, `metal`,
    /// `dx12`, `gl`; empty for all; `none` for none, which simulates a machine
    /// without a GPU).
    pub fn gpu_with_backends(backends: &str) -> Result<Device> {
        Device::gpu_with(&GpuOptions {
            backends: backends.into(),
            ..GpuOptions::default()
        })
    }

    /// A new GPU device made as `options` say, e.g. with limits lowered below the
    /// adapter's: a tensor or plan buffer above them is then refused with
    /// [`crate::Error::DeviceLimit`] before anything is created or dispatched.
    pub fn gpu_with(options: &GpuOptions) -> Result<Device> {
        wait(
            Device::gpu_with_async(options),
            "Device::gpu_with",
            "Device::gpu_with_async",
        )
    }

    /// Async form of [`Device::gpu_with`] (for the browser, see [`Device::gpu_async`]).
    pub async fn gpu_with_async(options: &GpuOptions) -> Result<Device> {
        let counters = Arc::new(Counters::default());
        let backend = GpuBackend::new(options, counters.clone()).await?;
        Ok(Device::with_backend(Box::new(backend), counters))
    }

    /// The names [`Device::from_name`] and `WGNN_DEVICE` accept.
    pub const NAMES: [&'static str; 3] = ["cpu", "gpu", "auto"];

    /// The device a name asks for, case-insensitive: `cpu`, `gpu` (an error when no
    /// adapter works), or `auto` (as [`Device::best`], silently). An unknown name is an
    /// error that lists the names there are.
    pub fn from_name(name: &str) -> Result<Device> {
        match name.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::cpu()),
            "gpu" => Device::gpu(),
            "auto" | "" => Ok(Device::choose().0),
            other => Err(Error::UnknownName {
                what: "device".into(),
                name: other.into(),
                valid: Device::NAMES.iter().map(|n| n.to_string()).collect(),
                context: String::new(),
            }),
        }
    }

    /// The device `WGNN_DEVICE` names (see [`Device::from_name`]), or `auto` when it is
    /// unset: unlike [`Device::best`], an unknown name or `gpu` without a working
    /// adapter is an error.
    pub fn from_env() -> Result<Device> {
        let wanted = std::env::var("WGNN_DEVICE").unwrap_or_default();
        Device::from_name(&wanted).map_err(|e| match e {
            Error::UnknownName { what, name, valid, .. } => Error::UnknownName {
                what,
                name,
                valid,
                context: " (from WGNN_DEVICE)".into(),
            },
            e => Error::Invalid(format!("WGNN_DEVICE={wanted}: {e}")),
        })
    }

    /// The GPU if one works, else the CPU; `WGNN_DEVICE=cpu|gpu|auto` overrides. An
    /// adapter that is itself software on the CPU (Mesa's llvmpipe, WARP,
    /// SwiftShader) is not preferred over the CPU backend, which is much faster at the
    /// same work; `WGNN_DEVICE=gpu` still picks it. Prints the choice once to stderr
    /// (silence with `WGNN_QUIET=1`). Never fails: `WGNN_DEVICE=gpu` without an adapter
    /// or an unknown name falls back, saying so; [`Device::from_env`] errors instead.
    pub fn best() -> Device {
        static SAID: std::sync::Once = std::sync::Once::new();
        let wanted = std::env::var("WGNN_DEVICE").unwrap_or_default().to_ascii_lowercase();
        let (device, why) = match wanted.as_str() {
            "cpu" => (Device::cpu(), "WGNN_DEVICE=cpu".to_string()),
            "gpu" => match Device::gpu() {
                Ok(d) => (d, "WGNN_DEVICE=gpu".into()),
                Err(e) => (Device::cpu(), format!("WGNN_DEVICE=gpu but {e}; falling back")),
            },
            "" | "auto" => Device::choose(),
            other => {
                let (d, why) = Device::choose();
                let names = Device::NAMES.join(", ");
                (d, format!("WGNN_DEVICE={other} is not one of {names}, so chose: {why}"))
            }
        };
        SAID.call_once(|| {
            if std::env::var_os("WGNN_QUIET").is_none() {
                eprintln!("wgnn: using {} ({why})", device.info());
            }
        });
        device
    }

    /// The automatic choice and why it was made.
    fn choose() -> (Device, String) {
        match Device::gpu() {
            Ok(d) if d.info().device_type == "Cpu" => (
                Device::cpu(),
                format!(
                    "the only adapter, {}, is software on the CPU; WGNN_DEVICE=gpu uses it",
                    d.info().name
                ),
            ),
            Ok(d) => (d, "GPU found".into()),
            Err(e) => (Device::cpu(), format!("{e}")),
        }
    }

    /// What the device is and its limits.
    pub fn info(&self) -> DeviceInfo {
        self.0.backend.info()
    }

    /// Whether kernels may use half-precision floats: [`DeviceInfo::shader_f16`],
    /// asked without copying the whole description (the GEMM builders ask it).
    pub(crate) fn shader_f16(&self) -> bool {
        self.0.backend.shader_f16()
    }

    /// The GPU autotune's cache: how many kernel shape classes have a chosen variant
    /// kept across processes (a choice whose timing was unsteady holds for this
    /// process only and is not counted), and the file the choices are kept in
    /// (`WGNN_CACHE_DIR`; `None` in memory only, or on the CPU, which has no
    /// autotune). `bench --tune` fills it ahead of time.
    pub fn autotune_cache(&self) -> (usize, Option<std::path::PathBuf>) {
        self.0.backend.autotune_cache()
    }

    /// CPU or GPU.
    pub fn kind(&self) -> DeviceKind {
        self.info().kind
    }

    /// A snapshot of the device's counters.
    pub fn stats(&self) -> Stats {
        let c = &self.0.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            submits: get(&c.submits),
            dispatches: get(&c.dispatches),
            bytes_uploaded: get(&c.bytes_uploaded),
            bytes_downloaded: get(&c.bytes_downloaded),
            live_buffer_bytes: get(&c.live_buffer_bytes),
            plan_cache_hits: get(&c.plan_cache_hits),
            plan_cache_misses: get(&c.plan_cache_misses),
            record_ns: get(&c.record_ns),
            upload_ns: get(&c.upload_ns),
            submit_ns: get(&c.submit_ns),
            compile_ns: get(&c.compile_ns),
        }
    }

    /// Whether two handles name the same device.
    pub fn same(&self, other: &Device) -> bool {
        self.0.id == other.0.id
    }

    /// Drops every cached plan (their scratch buffers are freed).
    pub fn clear_plan_cache(&self) {
        self.0.plans.lock().unwrap().clear();
    }

    /// NaN-check mode: every plan run on this device checks each node it computes,
    /// and the first (in execution order) holding NaN or ±Inf stops the run with
    /// [`crate::Error::NonFinite`], naming its op, shape and the source line that
    /// built it. Nothing of that run is kept or applied (an optimizer step leaves
    /// parameters and state as they were). Slow: on the GPU the plan runs node by
    /// node with a readback after each. Also on when `WGNN_CHECK_NAN` is set (to
    /// anything but `0`) when the device is created.
    ///
    /// Every computed value is checked, so an op that legitimately makes an infinity
    /// (e.g. `log(0)` on purpose, or a `-inf` fill) is reported too; a leaf's data is
    /// not checked (it was not computed).
    pub fn set_check_nan(&self, on: bool) {
        self.0.debug.check_nan.store(on, Ordering::Relaxed);
    }

    /// Whether NaN-check mode is on.
    pub fn check_nan(&self) -> bool {
        self.0.debug.check_nan.load(Ordering::Relaxed)
    }

    /// Shadow mode (GPU devices): every plan also runs on the CPU reference, kernel by
    /// kernel on the same inputs (each node's CPU inputs are the GPU's values), and the
    /// first node whose GPU values differ from the CPU's beyond `tolerance` stops the
    /// run with [`crate::Error::Divergence`], naming the node and the differences.
    /// `None` turns it off. Label (u32) values must agree exactly. In-place optimizer
    /// updates are not compared (the gradients they read are). Nothing of a run that
    /// fails is kept or applied. Slow (a readback per node). Also on when
    /// `WGNN_SHADOW` is set when the device is created: `1` for the default tolerance,
    /// or `atol,rtol` (e.g. `WGNN_SHADOW=1e-4,1e-3`). On the CPU device it does
    /// nothing (the CPU is the reference).
    pub fn set_shadow(&self, tolerance: Option<Tolerance>) {
        self.0.debug.set_shadow(tolerance);
    }

    /// The shadow-mode tolerance, if shadow mode is on.
    pub fn shadow(&self) -> Option<Tolerance> {
        *self.0.debug.shadow.lock().unwrap()
    }

    /// Profile mode: every plan run on this device times each of its kernel
    /// launches — by GPU timestamp queries where the adapter has them, on the CPU
    /// backend by the wall clock around each kernel — and adds the times up per plan,
    /// for [`Device::profile_report`]. Results are unchanged; on a GPU each launch
    /// gets a compute pass of its own and the run waits for its timestamps, so steps
    /// are slower than unprofiled ones. An adapter without timestamp queries is timed
    /// on the host, one submit and wait per launch ([`crate::Clock::HostPerLaunch`]).
    /// The debugging modes ([`Device::set_check_nan`], [`Device::set_shadow`]) take
    /// precedence: while one is on, runs are not profiled.
    ///
    /// Also on when `WGNN_PROFILE` is set (to anything but `0`) when the device is
    /// created; then each plan's table is also printed to stderr after its 10th,
    /// 100th, 1000th… run.
    pub fn set_profile(&self, on: bool) {
        self.0.profiler.set(on);
    }

    /// Whether profile mode is on.
    pub fn profile(&self) -> bool {
        self.0.profiler.is_on()
    }

    /// The per-launch times of every plan run while profiling, since the device was
    /// made or [`Device::reset_profile`]: mean time per run, share of the plan's
    /// time, GFLOP/s and GB/s, named by kernel, op, shape and source line. Its
    /// `Display` is a table per plan.
    pub fn profile_report(&self) -> crate::ProfileReport {
        self.0.profiler.report()
    }

    /// Forgets the profile so far (e.g. after warm-up steps, to report the steady
    /// state).
    pub fn reset_profile(&self) {
        self.0.profiler.reset();
    }

    pub(crate) fn profiler(&self) -> &Profiler {
        &self.0.profiler
    }

    /// Destroys the underlying wgpu device, as a driver reset would: for tests of
    /// device loss (the next run returns `Error::DeviceLost`). No-op on the CPU.
    #[doc(hidden)]
    pub fn debug_destroy(&self) {
        self.0.backend.debug_destroy();
    }

    /// Replaces `from` with `to` in every kernel source this GPU device compiles from
    /// now on (cached plans keep theirs: clear the cache first): breaks a kernel on
    /// purpose, for tests of shadow mode. No-op on the CPU.
    #[doc(hidden)]
    pub fn debug_patch_wgsl(&self, from: &str, to: &str) {
        self.0.backend.debug_patch_wgsl(from, to);
    }

    /// Makes every kernel this GPU device compiles from now on that offers variants
    /// (the GEMM's tiles, e.g. `"32x32k16"`; the convolution's, e.g. `"16x64"`; the
    /// one-launch or per-input forms of joins and optimizer updates) run the one
    /// whose name starts with `prefix`, when it has one, instead of the autotune's
    /// choice; `None` restores the autotune. For tests that every variant is right
    /// and gives the same bits (cached plans keep theirs: clear the cache first).
    /// No-op on the CPU.
    #[doc(hidden)]
    pub fn debug_kernel_variant(&self, prefix: Option<&str>) {
        self.0.backend.debug_kernel_variant(prefix);
    }

    pub(crate) fn debug_modes(&self) -> &DebugModes {
        &self.0.debug
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.0.backend
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.0.counters
    }

    /// A 1.0 in a resident buffer made once per device (nothing ever writes it):
    /// backward's seed is an input of the step's plan, not a fill launch per step.
    pub(crate) fn one(&self) -> Result<Storage> {
        if let Some(storage) = self.0.one.get() {
            return Ok(storage.clone());
        }
        let backend = self.backend();
        let made = backend.make_resident(backend.stage(vec![1.0])?)?;
        Ok(self.0.one.get_or_init(|| made).clone())
    }

    pub(crate) fn plan_cache(&self) -> &Mutex<HashMap<String, Arc<CompiledPlan>>> {
        &self.0.plans
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Device) -> bool {
        self.same(other)
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.info())
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.info())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debugging_modes_follow_their_environment_variables() {
        let modes = |nan, shadow| {
            let m = DebugModes::from_vars(nan, shadow);
            let tolerance = *m.shadow.lock().unwrap();
            (m.check_nan.load(Ordering::Relaxed), tolerance)
        };
        assert_eq!(modes(None, None), (false, None));
        assert_eq!(modes(Some("0"), Some("")), (false, None));
        assert_eq!(modes(Some("1"), Some("1")), (true, Some(Tolerance::default())));
        let tolerance = Tolerance { atol: 1e-4, rtol: 1e-3 };
        assert_eq!(modes(Some("yes"), Some("1e-4, 1e-3")), (true, Some(tolerance)));
    }
}
