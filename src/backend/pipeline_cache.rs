//! The on-disk pipeline cache: the driver's compiled kernels (wgpu's
//! `PIPELINE_CACHE`, on Vulkan), saved per adapter so that a later process skips the
//! driver's compile of every kernel it has seen before: lavapipe's LLVM, a GPU
//! driver's backend compiler. The cold start of a plan is then mostly WGSL
//! translation.
//!
//! The folder is `$WGNN_CACHE_DIR`, else `$XDG_CACHE_HOME/wgnn`, else
//! `$HOME/.cache/wgnn`; `WGNN_CACHE_DIR=off` turns the cache off. One file per
//! adapter (`wgpu::util::pipeline_cache_key`: backend, vendor and device); the
//! driver checks its own version inside the data and ignores a stale file. A cache
//! never fails a computation: a file that cannot be read or written is skipped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// A device's pipeline cache and the file it is kept in.
pub(crate) struct DiskCache {
    cache: wgpu::PipelineCache,
    path: PathBuf,
    /// Pipelines were added since the last save.
    dirty: AtomicBool,
}

/// The folder the cache lives in, unless it is turned off.
pub(crate) fn folder() -> Option<PathBuf> {
    match std::env::var_os("WGNN_CACHE_DIR") {
        Some(dir) if dir == "off" || dir.is_empty() => None,
        Some(dir) => Some(dir.into()),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("wgnn")),
    }
}

impl DiskCache {
    /// The device feature to ask for: `PIPELINE_CACHE` where the adapter has it
    /// and the cache is on.
    pub(crate) fn feature(adapter: &wgpu::Adapter) -> wgpu::Features {
        let has = adapter.features() & wgpu::Features::PIPELINE_CACHE;
        if folder().is_some() && wgpu::util::pipeline_cache_key(&adapter.get_info()).is_some() {
            has
        } else {
            wgpu::Features::empty()
        }
    }

    /// The cache of `device`, seeded from its file when there is one; `None` when
    /// the device lacks the feature or the cache is off.
    pub(crate) fn open(device: &wgpu::Device, adapter: &wgpu::AdapterInfo) -> Option<DiskCache> {
        if !device.features().contains(wgpu::Features::PIPELINE_CACHE) {
            return None;
        }
        let path = folder()?.join(wgpu::util::pipeline_cache_key(adapter)?);
        let data = std::fs::read(&path).ok();
        // SAFETY: the data was written by `save` from `PipelineCache::get_data` for an
        // adapter with the same cache key (the file name); wgpu checks its header and
        // the driver its own version, and `fallback` gives an empty cache when the
        // data is not used.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("wgnn pipeline cache"),
                data: data.as_deref(),
                fallback: true,
            })
        };
        Some(DiskCache {
            cache,
            path,
            dirty: AtomicBool::new(false),
        })
    }

    /// The cache, for `ComputePipelineDescriptor::cache`; a pipeline made with it
    /// should be reported with [`DiskCache::added`].
    pub(crate) fn cache(&self) -> &wgpu::PipelineCache {
        &self.cache
    }

    /// Notes that a pipeline was compiled through the cache.
    pub(crate) fn added(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the cache to its file if pipelines were added since the last save:
    /// to a temporary file in the same folder, then renamed, so a reader never sees
    /// half a file.
    pub(crate) fn save(&self) {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let Some(data) = self.cache.get_data() else { return };
        let Some(dir) = self.path.parent() else { return };
        let tmp = self.path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, &data))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}
