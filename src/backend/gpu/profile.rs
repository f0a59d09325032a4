//! Profiled runs: each launch timed by GPU timestamp queries, or on the host with a
//! submit and wait per launch where the adapter has none.

use super::*;

impl GpuPlan {
    /// A profiled run on the device's clock: each launch in a compute pass of its
    /// own, timestamped at its beginning and end.
    pub(super) fn run_timestamped(&self, ext: &[Option<&Arc<GpuBuffer>>], kept: &[Arc<GpuBuffer>]) -> Result<Vec<f64>> {
        /// Launches per query set (two queries each; wgpu allows 4096 per set).
        const PER_SET: usize = 2048;
        let s = &self.shared;
        let n = self.steps.len() + self.updates.len();
        let sets: Vec<(wgpu::QuerySet, u32)> = (0..n.div_ceil(PER_SET))
            .map(|k| {
                let count = (2 * (n - k * PER_SET).min(PER_SET)) as u32;
                let set = s.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("wgnn profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                });
                (set, count)
            })
            .collect();
        let mut encoder = self.new_encoder();
        let timed = |encoder: &mut wgpu::CommandEncoder, i: usize, step: &GpuStep| {
            let at = (2 * (i % PER_SET)) as u32;
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wgnn profile"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &sets[i / PER_SET].0,
                    beginning_of_pass_write_index: Some(at),
                    end_of_pass_write_index: Some(at + 1),
                }),
            });
            self.encode(&mut pass, step, ext);
        };
        for (i, step) in self.steps.iter().enumerate() {
            timed(&mut encoder, i, step);
        }
        self.copy_kept(&mut encoder, ext, kept);
        for (i, step) in (self.steps.len()..).zip(&self.updates) {
            timed(&mut encoder, i, step);
        }
        let set_bytes = (2 * PER_SET * 8) as u64;
        let resolved = s.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgnn profile"),
            size: set_bytes * sets.len().max(1) as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        for (k, (set, count)) in sets.iter().enumerate() {
            encoder.resolve_query_set(set, 0..*count, &resolved, k as u64 * set_bytes);
        }
        let sources = [(&resolved, resolved.size())];
        let words = wait(s.readback(encoder, &sources), "profile mode", "the native build")?.remove(0);
        let ns_per_tick = s.queue.get_timestamp_period() as f64;
        let tick = |i: usize| {
            let at = (i / PER_SET) * 4 * PER_SET + 4 * (i % PER_SET);
            let word = |j: usize| words[at + j].to_bits() as u64;
            (word(0) | word(1) << 32, word(2) | word(3) << 32)
        };
        Ok((0..n)
            .map(|i| {
                let (begin, end) = tick(i);
                end.saturating_sub(begin) as f64 * ns_per_tick * 1e-9
            })
            .collect())
    }

    /// A profiled run without timestamp queries: each launch submitted alone and
    /// waited for, timed on the host (includes the submission and the wait).
    pub(super) fn run_host_timed(&self, ext: &[Option<&Arc<GpuBuffer>>], kept: &[Arc<GpuBuffer>]) -> Result<Vec<f64>> {
        let s = &self.shared;
        let submit = |encoder: wgpu::CommandEncoder| -> Result<f64> {
            let start = Instant::now();
            s.queue.submit([encoder.finish()]);
            Counters::add(&s.counters.submits, 1);
            s.wait_idle("waiting for a profiled launch")?;
            s.faults.check("running a profiled launch")?;
            Ok(start.elapsed().as_secs_f64())
        };
        let mut seconds = Vec::with_capacity(self.steps.len() + self.updates.len());
        for step in &self.steps {
            let mut encoder = self.new_encoder();
            self.encode_pass(&mut encoder, "wgnn profile", std::slice::from_ref(step), ext);
            seconds.push(submit(encoder)?);
        }
        let mut encoder = self.new_encoder();
        self.copy_kept(&mut encoder, ext, kept);
        submit(encoder)?;
        for step in &self.updates {
            let mut encoder = self.new_encoder();
            self.encode_pass(&mut encoder, "wgnn profile", std::slice::from_ref(step), ext);
            seconds.push(submit(encoder)?);
        }
        Ok(seconds)
    }
}
