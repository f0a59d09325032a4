//! The wgpu backend. Every wgpu call of the crate lives in this folder. A compiled
//! plan owns its scratch buffers, pipelines, uniform parameters and bind groups;
//! running it is one command encoder and one submit, with no readback. Kernels bring
//! their WGSL launch (`Kernel::wgsl`); `shader.rs` only assembles the source (bindings,
//! uniform struct, generated definitions, `common.wgsl`, the kernel's section) and
//! folds grids into the adapter's limits.

mod adapter;
mod faults;
mod memory;
mod plan;
mod profile;
mod shader;
mod tune;

use faults::*;
pub(crate) use memory::GpuBuffer;
use memory::*;
use plan::*;
use shader::*;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use web_time::Instant;

use super::pipeline_cache::DiskCache;
use super::tune_cache::TuneCache;
use super::wait::{blocking_mode, wait, CAN_BLOCK};
use super::{BoxFuture, Clock, Counters, Executable, Place, Program, Slot, Step, Storage, Timings, Watch};
use super::{DeviceInfo, DeviceKind, GpuOptions};
use crate::backend::kernel::{Grid, Offer, Tune, Variant, Wgsl};
use crate::{Error, Result};

struct Shared {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: DeviceInfo,
    counters: Arc<Counters>,
    pool: Arc<Pool>,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    layouts: Mutex<HashMap<(usize, usize), Arc<wgpu::BindGroupLayout>>>,
    /// What went wrong outside an error scope (wgpu's uncaptured errors, device
    /// loss), reported by the next call instead of wgpu's default panic.
    faults: Arc<Faults>,
    /// A test-only patch of kernel sources (`Device::debug_patch_wgsl`).
    patch: Mutex<Option<(String, String)>>,
    /// A test-only choice of kernel variants (`Device::debug_kernel_variant`).
    forced: Mutex<Option<String>>,
    /// Largest uniform buffer (wgpu's `max_uniform_buffer_binding_size`).
    max_uniform_bytes: u64,
    /// Whether the device has timestamp queries (the profiler's clock).
    timestamps: bool,
    /// Whether kernels may use subgroup operations.
    subgroups: bool,
    /// The driver's compiled kernels, kept on disk across processes.
    disk_cache: Option<DiskCache>,
    /// The autotune's choices of kernel variants.
    tune: TuneCache,
}

pub(crate) struct GpuBackend(Arc<Shared>);

/// Rounded buffer size: a multiple of 16 bytes, never zero.
fn buffer_bytes(words: usize) -> u64 {
    ((words.max(1) * 4) as u64).div_ceil(16) * 16
}

impl super::Backend for GpuBackend {
    fn info(&self) -> DeviceInfo {
        self.0.info.clone()
    }

    fn autotune_cache(&self) -> (usize, Option<std::path::PathBuf>) {
        self.0.tune.summary()
    }

    fn shader_f16(&self) -> bool {
        self.0.info.shader_f16
    }

    fn stage(&self, data: Vec<f32>) -> Result<Storage> {
        self.0.check_size("a tensor", data.len())?;
        Ok(Storage::Host(Arc::new(data)))
    }

    fn make_resident(&self, storage: Storage) -> Result<Storage> {
        match storage {
            Storage::Host(data) => {
                let buffer = self.0.buffer(data.len(), true)?;
                self.0.upload(buffer.raw(), &data);
                Ok(Storage::Gpu(buffer))
            }
            other => Ok(other),
        }
    }

    fn overwrite(&self, storage: Storage, data: &[f32]) -> Result<Storage> {
        match storage {
            Storage::Gpu(b) => {
                self.0.faults.check("overwriting a value")?;
                self.0.upload(b.raw(), data);
                Ok(Storage::Gpu(b))
            }
            _ => Ok(Storage::Host(Arc::new(data.to_vec()))),
        }
    }

    fn read<'a>(&'a self, storage: &'a Storage) -> BoxFuture<'a, Result<Vec<f32>>> {
        Box::pin(async move {
            let source = match storage {
                Storage::Host(data) => return Ok(data.to_vec()),
                Storage::Gpu(b) => b,
                Storage::Cpu(_) => return Err(Error::Invalid("a GPU read was given a CPU value".into())),
            };
            let s = &self.0;
            s.faults.check("reading a value back")?;
            let encoder = s.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgnn readback"),
            });
            let mut values = s.readback(encoder, &[(source.raw(), source.raw().size())]).await?;
            Ok(values.pop().expect("one buffer read"))
        })
    }

    fn view_alignment(&self) -> usize {
        (self.0.device.limits().min_storage_buffer_offset_alignment as usize / 4).max(1)
    }

    fn debug_destroy(&self) {
        self.0.device.destroy();
    }

    fn debug_patch_wgsl(&self, from: &str, to: &str) {
        *self.0.patch.lock().unwrap() = Some((from.into(), to.into()));
    }

    fn debug_kernel_variant(&self, prefix: Option<&str>) {
        *self.0.forced.lock().unwrap() = prefix.map(str::to_string);
    }

    fn compile(&self, program: Program) -> Result<Box<dyn Executable>> {
        let s = &self.0;
        s.faults.check("compiling a plan")?;
        let scopes = s.push_scopes();
        let plan = self.compile_scoped(program)?;
        let names: Vec<&str> = plan.steps.iter().chain(&plan.updates).map(|st| st.name).collect();
        let context = || format!("compiling a plan of kernels {names:?}");
        match scopes {
            Some(scopes) => scopes.pop(&s.faults, context)?,
            None => s.faults.check(&context())?,
        }
        if let Some(c) = &s.disk_cache {
            c.save();
        }
        s.tune.save();
        Ok(plan)
    }
}
