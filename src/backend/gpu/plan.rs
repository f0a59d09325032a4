//! Compiled plans: every launch's pipeline, uniforms and bind group made once;
//! running one is a command encoder, one compute pass and one submit.

use super::*;

/// One launch of a compiled plan: one dispatch per pass of its kernel's variant.
pub(super) struct GpuStep {
    /// The kernel's entry (its section of the shader), for error messages.
    pub(super) name: &'static str,
    /// The variant chosen among the kernel's (empty: it has none).
    pub(super) variant: String,
    pub(super) passes: Vec<GpuPass>,
    pub(super) layout: Arc<wgpu::BindGroupLayout>,
    /// The kernel's buffers, then its variant's scratch buffer if it has one, each
    /// with its words (a view binds that many from its offset).
    pub(super) bindings: Vec<(Place, usize)>,
    /// The bind group of each pass, with the ids of the external buffers they were
    /// built for.
    pub(super) bind_groups: Mutex<Option<(Vec<u64>, Vec<wgpu::BindGroup>)>>,
}

/// One dispatch of a step.
pub(super) struct GpuPass {
    pub(super) pipeline: Arc<wgpu::ComputePipeline>,
    pub(super) params: wgpu::Buffer,
    pub(super) groups: (u32, u32, u32),
}

pub(super) struct GpuPlan {
    pub(super) shared: Arc<Shared>,
    pub(super) arena: Vec<wgpu::Buffer>,
    /// Plan-owned buffers that host data is uploaded into, per external.
    pub(super) host_inputs: Vec<Option<wgpu::Buffer>>,
    pub(super) steps: Vec<GpuStep>,
    pub(super) updates: Vec<GpuStep>,
    pub(super) kept: Vec<(Place, usize)>,
    pub(super) bytes: u64,
    /// Held from the upload of the host inputs to the submit: a cached plan run by
    /// two threads at once would otherwise have both uploads land before the first
    /// submit (queue writes run at the next submit), one run computing on the
    /// other's inputs.
    pub(super) running: Mutex<()>,
}

impl Drop for GpuPlan {
    fn drop(&mut self) {
        Counters::sub(&self.shared.counters.live_buffer_bytes, self.bytes);
    }
}

impl GpuBackend {
    pub(super) fn compile_scoped(&self, program: Program) -> Result<Box<GpuPlan>> {
        let s = &self.0;
        let mut bytes = 0;
        let mut make = |words: usize, what: &str| -> Result<wgpu::Buffer> {
            s.check_size(what, words)?;
            let size = buffer_bytes(words);
            bytes += size;
            Ok(s.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(what),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }))
        };
        let arena = program
            .arena
            .iter()
            .map(|&w| make(w, "wgnn arena"))
            .collect::<Result<Vec<_>>>()?;
        let host_inputs = program
            .externals
            .iter()
            .map(|e| {
                if e.host {
                    make(e.words, "wgnn input").map(Some)
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let max_groups = s.info.max_compute_workgroups_per_dimension;
        let mut scratch = Vec::new();
        let mut build = |step: &Step| -> Result<GpuStep> {
            let reads = step.kernel.reads();
            let mut writes = step.bindings.len() - reads;
            let subgroup_form = if s.subgroups {
                step.kernel.wgsl_subgroups()
            } else {
                None
            };
            let variant = match (step.kernel.tune(), subgroup_form) {
                (Some(tune), _) => s.choose(tune, step)?,
                (None, Some(w)) => Variant::new("subgroups", vec![w], 0),
                (None, None) => Variant::new("", vec![step.kernel.wgsl()], 0),
            };
            let mut bindings: Vec<(Place, usize)> =
                step.bindings.iter().copied().zip(step.words.iter().copied()).collect();
            if variant.scratch > 0 {
                bindings.push((
                    Place::start_of(Slot::Arena(arena.len() + scratch.len())),
                    variant.scratch,
                ));
                scratch.push(make(variant.scratch, "wgnn scratch")?);
                writes += 1;
            }
            let name = variant.passes[0].entry;
            let passes = variant
                .passes
                .iter()
                .map(|w| {
                    let mut l = launch(w, reads, writes, max_groups);
                    if let Some((from, to)) = s.patch.lock().unwrap().as_ref() {
                        l.source = l.source.replace(from.as_str(), to);
                    }
                    s.pass(&l, reads, writes)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(GpuStep {
                name,
                variant: variant.name,
                passes,
                layout: s.layout(reads, writes),
                bindings,
                bind_groups: Mutex::new(None),
            })
        };
        let steps = program.steps.iter().map(&mut build).collect::<Result<Vec<_>>>()?;
        let updates = program.updates.iter().map(&mut build).collect::<Result<Vec<_>>>()?;
        let mut arena = arena;
        arena.extend(scratch);
        Counters::add(&s.counters.live_buffer_bytes, bytes);
        Ok(Box::new(GpuPlan {
            shared: self.0.clone(),
            arena,
            host_inputs,
            steps,
            updates,
            kept: program.kept,
            bytes,
            running: Mutex::new(()),
        }))
    }
}

impl GpuPlan {
    pub(super) fn buffer<'a>(&'a self, slot: Slot, ext: &'a [Option<&'a Arc<GpuBuffer>>]) -> &'a wgpu::Buffer {
        match slot {
            Slot::Arena(a) => &self.arena[a],
            Slot::External(e) => match &self.host_inputs[e] {
                Some(b) => b,
                None => ext[e].expect("resident external").raw(),
            },
        }
    }

    pub(super) fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step: &GpuStep, ext: &[Option<&Arc<GpuBuffer>>]) {
        // The ids of the external buffers bound (0 for the plan's own): compared with
        // the cached bind groups' without allocating, on every replay.
        let ids = || {
            step.bindings.iter().map(|(place, _)| match place.slot {
                Slot::External(e) if self.host_inputs[e].is_none() => ext[e].map_or(0, |b| b.id),
                _ => 0,
            })
        };
        let mut cached = step.bind_groups.lock().unwrap();
        if cached.as_ref().is_none_or(|(have, _)| !have.iter().copied().eq(ids())) {
            let ids: Vec<u64> = ids().collect();
            let buffers: Vec<wgpu::BufferBinding<'_>> = step
                .bindings
                .iter()
                .map(|&(place, words)| binding(self.buffer(place.slot, ext), place.offset, words))
                .collect();
            let groups = step
                .passes
                .iter()
                .map(|p| bind_group(&self.shared.device, &step.layout, &p.params, &buffers))
                .collect();
            *cached = Some((ids, groups));
        }
        for (p, group) in step.passes.iter().zip(&cached.as_ref().unwrap().1) {
            pass.set_pipeline(&p.pipeline);
            pass.set_bind_group(0, group, &[]);
            pass.dispatch_workgroups(p.groups.0, p.groups.1, p.groups.2);
        }
    }
}

/// A binding of `buffer` from word `offset` on: the whole buffer where the offset
/// is 0 (or the value empty), else a view of `words` words.
fn binding(buffer: &wgpu::Buffer, offset: usize, words: usize) -> wgpu::BufferBinding<'_> {
    match (offset, wgpu::BufferSize::new(words as u64 * 4)) {
        (0, _) | (_, None) => buffer.as_entire_buffer_binding(),
        (offset, size) => wgpu::BufferBinding {
            buffer,
            offset: offset as u64 * 4,
            size,
        },
    }
}

/// The bind group of one pass: its uniforms, then `buffers`.
pub(super) fn bind_group(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    params: &wgpu::Buffer,
    buffers: &[wgpu::BufferBinding<'_>],
) -> wgpu::BindGroup {
    let mut entries = vec![wgpu::BindGroupEntry {
        binding: 0,
        resource: params.as_entire_binding(),
    }];
    for (i, b) in buffers.iter().enumerate() {
        entries.push(wgpu::BindGroupEntry {
            binding: 1 + i as u32,
            resource: wgpu::BindingResource::Buffer(b.clone()),
        });
    }
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("wgnn kernel"),
        layout,
        entries: &entries,
    })
}

/// Dispatches per run of `steps`.
pub(super) fn dispatches(steps: &[GpuStep]) -> u64 {
    steps.iter().map(|s| s.passes.len() as u64).sum()
}

impl GpuPlan {
    /// Records `steps` as one compute pass.
    pub(super) fn encode_pass(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        label: &str,
        steps: &[GpuStep],
        ext: &[Option<&Arc<GpuBuffer>>],
    ) {
        if steps.is_empty() {
            return;
        }
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        for step in steps {
            self.encode(&mut pass, step, ext);
        }
    }
}

impl GpuPlan {
    /// The external buffers of a run (`None`: host data, uploaded into the plan's
    /// input buffer here).
    pub(super) fn bind_externals<'a>(&self, externals: &'a [Storage]) -> Result<Vec<Option<&'a Arc<GpuBuffer>>>> {
        let s = &self.shared;
        let mut ext = Vec::with_capacity(externals.len());
        for (e, storage) in externals.iter().enumerate() {
            match (storage, &self.host_inputs[e]) {
                (Storage::Host(data), Some(input)) => {
                    s.upload(input, data);
                    ext.push(None);
                }
                (Storage::Gpu(b), None) => ext.push(Some(b)),
                _ => {
                    return Err(Error::Invalid(
                        "a GPU plan was given a value of another kind or device".into(),
                    ))
                }
            }
        }
        Ok(ext)
    }

    /// Fresh buffers for the kept values.
    pub(super) fn kept_buffers(&self) -> Result<Vec<Arc<GpuBuffer>>> {
        self.kept
            .iter()
            .map(|&(_, words)| self.shared.buffer(words, false))
            .collect()
    }

    /// Copies the kept values into their buffers.
    pub(super) fn copy_kept(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        ext: &[Option<&Arc<GpuBuffer>>],
        kept: &[Arc<GpuBuffer>],
    ) {
        for (&(place, words), dst) in self.kept.iter().zip(kept) {
            let source = self.buffer(place.slot, ext);
            let offset = place.offset as u64 * 4;
            encoder.copy_buffer_to_buffer(
                source,
                offset,
                dst.raw(),
                0,
                buffer_bytes(words).min(dst.raw().size()).min(source.size() - offset),
            );
        }
    }

    pub(super) fn new_encoder(&self) -> wgpu::CommandEncoder {
        self.shared
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgnn plan"),
            })
    }
}

impl Executable for GpuPlan {
    fn run(&self, externals: &[Storage], watch: Option<Watch<'_>>) -> Result<Vec<Storage>> {
        let s = &self.shared;
        s.faults.check("running a plan")?;
        if watch.is_some() && !CAN_BLOCK {
            return Err(blocking_mode("NaN-check and shadow modes"));
        }
        let _running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let started = web_time::Instant::now();
        let ext = self.bind_externals(externals)?;
        Counters::add(&s.counters.upload_ns, started.elapsed().as_nanos() as u64);
        let kept = self.kept_buffers()?;
        let mut encoder = self.new_encoder();
        let mut done = 0;
        if let Some(w) = watch {
            // Debugging modes: run up to each probe, read its values back, hand them out.
            let mut first = 0;
            while first < w.probes.len() {
                let after = w.probes[first].after;
                let end = first + w.probes[first..].iter().take_while(|p| p.after == after).count();
                self.encode_pass(&mut encoder, "wgnn compute", &self.steps[done..after], &ext);
                Counters::add(&s.counters.dispatches, dispatches(&self.steps[done..after]));
                done = after;
                let sources: Vec<(&wgpu::Buffer, u64)> = w.probes[first..end]
                    .iter()
                    .map(|p| (self.buffer(p.slot, &ext), buffer_bytes(p.words)))
                    .collect();
                let read = s.readback(std::mem::replace(&mut encoder, self.new_encoder()), &sources);
                let values = wait(read, "NaN-check and shadow modes", "the native build")?;
                for (k, v) in (first..end).zip(values) {
                    (w.observe)(k, &v[..w.probes[k].words])?;
                }
                first = end;
            }
        }
        self.encode_pass(&mut encoder, "wgnn compute", &self.steps[done..], &ext);
        self.copy_kept(&mut encoder, &ext, &kept);
        self.encode_pass(&mut encoder, "wgnn update", &self.updates, &ext);
        let finishing = web_time::Instant::now();
        s.queue.submit([encoder.finish()]);
        Counters::add(&s.counters.submit_ns, finishing.elapsed().as_nanos() as u64);
        Counters::add(&s.counters.submits, 1);
        Counters::add(
            &s.counters.dispatches,
            dispatches(&self.steps[done..]) + dispatches(&self.updates),
        );
        s.faults.check("running a plan")?;
        Ok(kept.into_iter().map(Storage::Gpu).collect())
    }

    fn run_profiled(&self, externals: &[Storage]) -> Result<(Vec<Storage>, Timings)> {
        let s = &self.shared;
        s.faults.check("running a plan")?;
        if !CAN_BLOCK {
            return Err(blocking_mode("profile mode"));
        }
        let _running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let ext = self.bind_externals(externals)?;
        let kept = self.kept_buffers()?;
        let (clock, seconds) = if s.timestamps {
            (Clock::GpuTimestamps, self.run_timestamped(&ext, &kept)?)
        } else {
            (Clock::HostPerLaunch, self.run_host_timed(&ext, &kept)?)
        };
        Counters::add(
            &s.counters.dispatches,
            dispatches(&self.steps) + dispatches(&self.updates),
        );
        s.faults.check("running a plan")?;
        let kept = kept.into_iter().map(Storage::Gpu).collect();
        let variants = self
            .steps
            .iter()
            .chain(&self.updates)
            .map(|st| (st.variant.clone(), st.passes.len() as u64))
            .collect();
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
