//! Bringing up a device: the adapter, its real limits and features, the device and
//! queue, the error callbacks and the caches.

use super::*;

impl GpuBackend {
    /// Finds an adapter and creates its device (async: a browser answers both
    /// requests later, from its event loop).
    pub(crate) async fn new(options: &GpuOptions, counters: Arc<Counters>) -> Result<GpuBackend> {
        let adapter = find_adapter(&options.backends).await?;
        let a = adapter.get_info();
        let mut limits = adapter.limits();
        if let Some(max) = options.max_storage_buffer_binding_size {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(max);
        }
        if let Some(max) = options.max_buffer_size {
            limits.max_buffer_size = limits.max_buffer_size.min(max);
        }
        let (device, queue) = open_device(&adapter, &limits, options).await?;
        let timestamps = device.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let subgroups = device.features().contains(wgpu::Features::SUBGROUP);
        let disk_cache = DiskCache::open(&device, &a);
        let mut info = device_info(&a, &limits);
        info.shader_f16 = device.features().contains(wgpu::Features::SHADER_F16);
        info.subgroups = subgroups;
        let tune = TuneCache::open(&format!("{} {} {}", info.name, info.backend, info.driver));
        let faults = watch_faults(&device);
        Ok(GpuBackend(Arc::new(Shared {
            device,
            queue,
            info,
            counters,
            pool: Arc::new(Mutex::new(HashMap::new())),
            pipelines: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            faults,
            patch: Mutex::new(None),
            forced: Mutex::new(None),
            max_uniform_bytes: limits.max_uniform_buffer_binding_size as u64,
            timestamps,
            subgroups,
            disk_cache,
            tune,
        })))
    }
}

/// The high-performance adapter among the wgpu backends `backends` names (a comma list;
/// empty: all; `none`: none).
async fn find_adapter(backends: &str) -> Result<wgpu::Adapter> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    let mask = match backends.trim() {
        "" => wgpu::Backends::all(),
        "none" => wgpu::Backends::empty(),
        list => wgpu::Backends::from_comma_list(list),
    };
    if mask.is_empty() {
        return Err(Error::NoAdapter(format!("no wgpu backend enabled by {backends:?}")));
    }
    desc.backends = mask;
    super::super::headless::quiet_device_select_layer();
    let instance = wgpu::Instance::new(desc);
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::NoAdapter(format!("backends {mask:?}: {e}")))
}

/// A device on `adapter` with `limits`, and with timestamp queries (the profiler's
/// clock), subgroups, half-precision shaders and the pipeline cache where the adapter has them; a device that
/// refuses those is made without.
async fn open_device(
    adapter: &wgpu::Adapter,
    limits: &wgpu::Limits,
    options: &GpuOptions,
) -> Result<(wgpu::Device, wgpu::Queue)> {
    let request = |features| {
        adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgnn"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        })
    };
    let mut wanted = wgpu::Features::TIMESTAMP_QUERY;
    // In a browser a subgroup kernel would need `enable subgroups;`, which naga
    // does not parse yet: the plain kernels run there.
    if !options.disable_subgroups && !cfg!(target_arch = "wasm32") {
        wanted |= wgpu::Features::SUBGROUP;
    }
    if !options.disable_f16 {
        wanted |= wgpu::Features::SHADER_F16;
    }
    let optional = (adapter.features() & wanted) | DiskCache::feature(adapter);
    let made = match request(optional).await {
        Err(_) if !optional.is_empty() => request(wgpu::Features::empty()).await,
        made => made,
    };
    made.map_err(|e| Error::DeviceCreation {
        adapter: adapter.get_info().name,
        reason: e.to_string(),
    })
}

/// What a device reports about itself, from its adapter and the limits it was made with.
fn device_info(a: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> DeviceInfo {
    DeviceInfo {
        kind: DeviceKind::Gpu,
        name: a.name.clone(),
        backend: format!("{:?}", a.backend),
        driver: format!("{} {}", a.driver, a.driver_info).trim().to_string(),
        device_type: format!("{:?}", a.device_type),
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_buffer_size: limits.max_buffer_size,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
        shader_f16: false,
        subgroups: false,
        subgroup_sizes: (a.subgroup_min_size, a.subgroup_max_size),
    }
}

/// The faults `device` will report (uncaptured errors, loss), recorded as they come.
fn watch_faults(device: &wgpu::Device) -> Arc<Faults> {
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        f.error.lock().unwrap().get_or_insert_with(|| e.to_string());
        f.any.store(true, Ordering::Release);
    }));
    let f = faults.clone();
    device.set_device_lost_callback(move |reason, message| {
        let reason = format!("{reason:?}");
        *f.lost.lock().unwrap() = Some(if message.is_empty() {
            reason
        } else {
            format!("{reason}: {message}")
        });
        f.any.store(true, Ordering::Release);
    });
    faults
}
