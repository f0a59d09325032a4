//! WGSL assembly and pipelines: a kernel's section of its family's file with the
//! bindings, the named uniform struct, generated definitions and `common.wgsl`; bind
//! group layouts; compute pipelines (cached in memory and through the driver's disk
//! cache); grids folded into the adapter's per-dimension limit.

use super::*;

pub(super) const COMMON: &str = include_str!("../../../shaders/common.wgsl");

impl Shared {
    pub(super) fn layout(&self, reads: usize, writes: usize) -> Arc<wgpu::BindGroupLayout> {
        let mut layouts = self.layouts.lock().unwrap();
        layouts
            .entry((reads, writes))
            .or_insert_with(|| {
                let mut entries = vec![wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                }];
                for i in 0..reads + writes {
                    entries.push(wgpu::BindGroupLayoutEntry {
                        binding: 1 + i as u32,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Storage { read_only: i < reads },
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    });
                }
                Arc::new(self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some("wgnn kernel"),
                    entries: &entries,
                }))
            })
            .clone()
    }

    /// The pipeline for a kernel source, compiled once per device.
    ///
    /// A launch that proves its indices in range ([`Wgsl::in_bounds`]) is built
    /// without runtime bounds checks; every other keeps them.
    pub(super) fn pipeline(&self, launch: &Launch, reads: usize, writes: usize) -> Result<Arc<wgpu::ComputePipeline>> {
        let (name, source) = (launch.entry, launch.source.as_str());
        if let Some(p) = self.pipelines.lock().unwrap().get(source) {
            return Ok(p.clone());
        }
        let layout = self.layout(reads, writes);
        let scope = CAN_BLOCK.then(|| self.device.push_error_scope(wgpu::ErrorFilter::Validation));
        let descriptor = wgpu::ShaderModuleDescriptor {
            label: Some("wgnn kernel"),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        let module = if launch.in_bounds {
            // SAFETY: the kernel's family proves every index it makes inside the
            // buffers it binds (the plan binds buffers at least as large as the
            // words it declares), and its loops are bounded by uniform sizes, so
            // neither bounds checks nor loop bounding are needed.
            unsafe {
                self.device
                    .create_shader_module_trusted(descriptor, wgpu::ShaderRuntimeChecks::unchecked())
            }
        } else {
            self.device.create_shader_module(descriptor)
        };
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("wgnn kernel"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: self.disk_cache.as_ref().map(DiskCache::cache),
        });
        if let Some(c) = &self.disk_cache {
            c.added();
        }
        let popped = async {
            Ok(match scope {
                Some(scope) => scope.pop().await,
                None => None,
            })
        };
        if let Some(e) = wait(popped, "compiling a kernel", "the native build")? {
            return Err(Error::Gpu {
                context: format!("compiling kernel {name}:\n{source}"),
                reason: e.to_string(),
            });
        }
        let pipeline = Arc::new(pipeline);
        self.pipelines
            .lock()
            .unwrap()
            .insert(source.to_string(), pipeline.clone());
        Ok(pipeline)
    }

    /// A dispatch of `l`: its pipeline and its uniform buffer.
    pub(super) fn pass(&self, l: &Launch, reads: usize, writes: usize) -> Result<GpuPass> {
        let pipeline = self.pipeline(l, reads, writes)?;
        let uniform_bytes = (l.params.len() * 4) as u64;
        if uniform_bytes > self.max_uniform_bytes {
            return Err(Error::DeviceLimit {
                what: format!("the parameters of kernel {}", l.entry),
                needed: uniform_bytes,
                limit: self.max_uniform_bytes,
                limit_name: "max_uniform_buffer_binding_size",
            });
        }
        let params = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgnn params"),
            size: uniform_bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&params, 0, bytemuck::cast_slice(&l.params));
        Ok(GpuPass {
            pipeline,
            params,
            groups: l.groups,
        })
    }
}

/// The body of `//#kernel name` in a shader file, after the file's shared prelude.
pub(super) fn section(file: &str, name: &str) -> String {
    let marker = format!("//#kernel {name}\n");
    let prelude_end = file.find("//#kernel ").unwrap_or(file.len());
    let start = file
        .find(&marker)
        .unwrap_or_else(|| panic!("shader section {name} is missing"))
        + marker.len();
    let end = file[start..].find("//#kernel ").map_or(file.len(), |e| start + e);
    format!("{}\n{}", &file[..prelude_end], &file[start..end])
}

/// A launch ready to build: the full WGSL source, the uniform words and the grid.
pub(super) struct Launch {
    /// The kernel's section name.
    pub(super) entry: &'static str,
    pub(super) source: String,
    pub(super) params: Vec<u32>,
    pub(super) groups: (u32, u32, u32),
    /// Built without runtime bounds checks (the kernel proves its indices in range).
    pub(super) in_bounds: bool,
}

/// Folds `n` workgroups into a 2-D grid of at most `max` per dimension.
pub(super) fn fold(n: usize, max: u32) -> (u32, u32, u32) {
    let n = n.max(1) as u32;
    if n <= max {
        (n, 1, 1)
    } else {
        (max, n.div_ceil(max), 1)
    }
}

/// The launch's source: its bindings (`reads` read-only, then `writes`), its
/// uniform struct, its generated definitions, `common.wgsl` and its section of the
/// family's shader.
pub(super) fn launch(w: &Wgsl, reads: usize, writes: usize, max_groups: u32) -> Launch {
    let mut source = String::new();
    let ty = |i: usize| w.types.get(i).copied().unwrap_or(w.element);
    // Half-precision bindings need the extension (only built where the device has
    // `SHADER_F16`).
    if w.types.iter().any(|t| t.contains("f16")) {
        source += "enable f16;\n";
    }
    for i in 0..reads {
        source += &format!(
            "@group(0) @binding({}) var<storage, read> in{i}: array<{}>;\n",
            1 + i,
            ty(i)
        );
    }
    for i in 0..writes {
        source += &format!(
            "@group(0) @binding({}) var<storage, read_write> out{i}: array<{}>;\n",
            1 + reads + i,
            ty(reads + i)
        );
    }
    source += &w.uniforms.wgsl();
    source += &w.defs;
    source += &format!("\n{COMMON}\n{}", section(w.shader, w.entry));
    let groups = match w.grid {
        Grid::Threads(n) => fold(n.div_ceil(256), max_groups),
        Grid::Groups(n) => fold(n, max_groups),
        Grid::Tiles(x, y, z) => (x.max(1) as u32, y.max(1) as u32, z.max(1) as u32),
    };
    Launch {
        entry: w.entry,
        source,
        params: w.uniforms.words(),
        groups,
        in_bounds: w.in_bounds,
    }
}
