//! Device buffers: the pool of freed buffers by size, new and resident buffers,
//! uploads, size checks against the adapter's limits, and readback.

use super::*;

pub(super) static NEXT_BUFFER: AtomicU64 = AtomicU64::new(1);

/// Freed buffers by size, for reuse (creating buffers is slow on most drivers).
pub(super) type Pool = Mutex<HashMap<u64, Vec<wgpu::Buffer>>>;

/// A resident device buffer; returns to the pool when dropped.
pub(crate) struct GpuBuffer {
    pub(super) buffer: Option<wgpu::Buffer>,
    pub(super) id: u64,
    pub(super) pool: Arc<Pool>,
}

impl GpuBuffer {
    pub(super) fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("live buffer")
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.lock().unwrap().entry(b.size()).or_default().push(b);
        }
    }
}

impl Shared {
    /// Waits until the queue has run everything submitted; a lost device is an
    /// error naming `context` (what was waited for).
    pub(super) fn wait_idle(&self, context: &str) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu {
                context: context.into(),
                reason: e.to_string(),
            })
    }

    /// Refuses, before anything is created or dispatched, a storage buffer the
    /// device cannot create or bind.
    pub(super) fn check_size(&self, what: &str, words: usize) -> Result<()> {
        let bytes = buffer_bytes(words);
        for (limit, limit_name) in [
            (self.info.max_buffer_size, "max_buffer_size"),
            (
                self.info.max_storage_buffer_binding_size,
                "max_storage_buffer_binding_size",
            ),
        ] {
            if bytes > limit {
                return Err(Error::DeviceLimit {
                    what: what.into(),
                    needed: bytes,
                    limit,
                    limit_name,
                });
            }
        }
        Ok(())
    }

    /// Catches validation and out-of-memory errors until `Scopes::pop`.
    pub(super) fn push_scopes(&self) -> Option<Scopes> {
        CAN_BLOCK.then(|| {
            let out_of_memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            Scopes {
                validation: self.device.push_error_scope(wgpu::ErrorFilter::Validation),
                out_of_memory,
            }
        })
    }

    /// Copies each `(buffer, bytes)` into a staging buffer in `encoder`, submits it
    /// and reads them back.
    pub(super) async fn readback(
        &self,
        mut encoder: wgpu::CommandEncoder,
        sources: &[(&wgpu::Buffer, u64)],
    ) -> Result<Vec<Vec<f32>>> {
        let staging: Vec<wgpu::Buffer> = sources
            .iter()
            .map(|&(source, bytes)| {
                let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgnn readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                encoder.copy_buffer_to_buffer(source, 0, &staging, 0, bytes);
                staging
            })
            .collect();
        self.queue.submit([encoder.finish()]);
        Counters::add(&self.counters.submits, 1);
        self.faults.check("submitting a readback")?;
        let receivers: Vec<_> = staging
            .iter()
            .map(|b| {
                let (tx, rx) = futures::channel::oneshot::channel();
                b.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                    let _ = tx.send(r);
                });
                rx
            })
            .collect();
        self.wait_idle("waiting for a readback")?;
        self.faults.check("waiting for a readback")?;
        let mut out = Vec::with_capacity(staging.len());
        for (b, rx) in staging.iter().zip(receivers) {
            rx.await
                .map_err(|_| Error::Gpu {
                    context: "readback".into(),
                    reason: "the mapping callback was dropped".into(),
                })?
                .map_err(|e| Error::Gpu {
                    context: "mapping a readback buffer".into(),
                    reason: e.to_string(),
                })?;
            let data: Vec<f32> = {
                let view = b.slice(..).get_mapped_range().map_err(|e| Error::Gpu {
                    context: "reading a mapped buffer".into(),
                    reason: format!("{e:?}"),
                })?;
                bytemuck::cast_slice(&view).to_vec()
            };
            b.unmap();
            Counters::add(&self.counters.bytes_downloaded, b.size());
            out.push(data);
        }
        Ok(out)
    }

    /// A storage buffer of at least `words` words; from the pool unless `fresh`
    /// (fresh buffers are zero-filled by wgpu).
    pub(super) fn buffer(&self, words: usize, fresh: bool) -> Result<Arc<GpuBuffer>> {
        self.faults.check("creating a buffer")?;
        self.check_size("a buffer", words)?;
        let bytes = buffer_bytes(words);
        let pooled = if fresh {
            None
        } else {
            self.pool.lock().unwrap().get_mut(&bytes).and_then(Vec::pop)
        };
        let buffer = match pooled {
            Some(b) => b,
            None => {
                Counters::add(&self.counters.live_buffer_bytes, bytes);
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgnn value"),
                    size: bytes,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }
        };
        Ok(Arc::new(GpuBuffer {
            buffer: Some(buffer),
            id: NEXT_BUFFER.fetch_add(1, Ordering::Relaxed),
            pool: self.pool.clone(),
        }))
    }

    pub(super) fn upload(&self, buffer: &wgpu::Buffer, data: &[f32]) {
        self.queue.write_buffer(buffer, 0, bytemuck::cast_slice(data));
        Counters::add(&self.counters.bytes_uploaded, (data.len() * 4) as u64);
    }
}
