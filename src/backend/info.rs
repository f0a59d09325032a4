//! What a device is, as the backends describe it: its kind, its name and the limits
//! that matter for kernels ([`DeviceInfo`]), and how a GPU device is asked for
//! ([`GpuOptions`]). Re-exported at the crate root.

/// Which kind of backend a device runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// The CPU reference backend.
    Cpu,
    /// A wgpu adapter (possibly a software one such as llvmpipe).
    Gpu,
}

/// What a device is and the limits that matter for kernels.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// CPU reference backend or wgpu GPU.
    pub kind: DeviceKind,
    /// Adapter name (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)") or "cpu".
    pub name: String,
    /// wgpu backend ("Vulkan", "Metal", "Dx12", "Gl") or "reference".
    pub backend: String,
    /// Driver name and version, where the adapter reports them.
    pub driver: String,
    /// Adapter type ("DiscreteGpu", "Cpu", …).
    pub device_type: String,
    /// Largest storage buffer a kernel can bind, in bytes: it bounds the largest
    /// tensor (wgpu's limit of that name; unbounded on the CPU).
    pub max_storage_buffer_binding_size: u64,
    /// Largest buffer that can be created, in bytes (wgpu's limit of that name).
    pub max_buffer_size: u64,
    /// Workgroup shared memory, in bytes (wgpu's limit of that name; 0 on the CPU).
    pub max_compute_workgroup_storage_size: u32,
    /// Threads per workgroup (wgpu's limit of that name; the available parallelism
    /// on the CPU).
    pub max_compute_invocations_per_workgroup: u32,
    /// Workgroups per dispatch dimension (wgpu's limit of that name).
    pub max_compute_workgroups_per_dimension: u32,
    /// Most storage buffers one kernel binds (wgpu's
    /// `max_storage_buffers_per_shader_stage`; unbounded on the CPU): it sets how many
    /// parameters one optimizer launch updates.
    pub max_storage_buffers_per_shader_stage: u32,
    /// Whether kernels may use half-precision floats (wgpu's `SHADER_F16`, unless
    /// [`GpuOptions::disable_f16`]): mixed precision ([`crate::amp`]) runs in f16
    /// only then, else in f32. Always on the CPU, whose twins round the same way.
    pub shader_f16: bool,
    /// Whether kernels may use subgroup operations (wgpu's `SUBGROUP`, unless
    /// [`GpuOptions::disable_subgroups`]; never on the CPU backend or in a browser).
    pub subgroups: bool,
    /// The adapter's smallest and largest subgroup, in invocations ((0, 0) on the CPU
    /// backend).
    pub subgroup_sizes: (u32, u32),
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            DeviceKind::Cpu => write!(f, "cpu (reference backend; large matmuls on every core)"),
            DeviceKind::Gpu => write!(
                f,
                "gpu: {} ({}, {}, driver {})",
                self.name, self.backend, self.device_type, self.driver
            ),
        }
    }
}

/// How to create a GPU device: which wgpu backends to try, and limits to lower below
/// the adapter's (to test how wgnn behaves on a smaller device).
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Comma-separated wgpu backends (`vulkan`, `metal`, `dx12`, `gl`); empty for all,
    /// `none` for none.
    pub backends: String,
    /// Lowers `max_storage_buffer_binding_size` (bytes) to this, if below the adapter's.
    pub max_storage_buffer_binding_size: Option<u64>,
    /// Lowers `max_buffer_size` (bytes) to this, if below the adapter's.
    pub max_buffer_size: Option<u64>,
    /// Never use subgroup operations, even where the adapter has `SUBGROUP`
    /// (reductions then combine through workgroup memory only).
    pub disable_subgroups: bool,
    /// Never use half-precision floats in kernels, even where the adapter has
    /// `SHADER_F16`: [`crate::amp::autocast`] then runs in f32 (and says so once).
    pub disable_f16: bool,
}
