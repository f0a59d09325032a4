//! The autotune: the variant of a launch chosen by timing each once per adapter and
//! shape class (the tune cache keeps the choice), or forced for tests.

use super::*;

impl Shared {
    /// The variant of `tune` to run `step` with: the cached choice for its shape
    /// class, else the fastest when timed, else the first.
    pub(super) fn choose(&self, tune: Tune, step: &Step) -> Result<Variant> {
        let cpu = self.info.device_type == "Cpu";
        let subgroups8 = self.info.subgroups && self.info.subgroup_sizes == (8, 8);
        let mut variants = tune.variants;
        let forced = self.forced.lock().unwrap().clone();
        if let Some(prefix) = forced {
            // Tests may force any form this adapter can run, offered here or not (the
            // shuffle tiles need 8-lane subgroups).
            let runs = |v: &Variant| v.offer != Offer::CpuSubgroups8 || subgroups8;
            if let Some(i) = variants.iter().position(|v| v.name.starts_with(&prefix) && runs(v)) {
                return Ok(variants.swap_remove(i));
            }
        }
        // The variants offered on this adapter, in the order they are timed: on a CPU
        // adapter its own forms right after the untimed default, so that a timing
        // cut short by its budget (a large product) still tries them; on a GPU the
        // two-stage forms last.
        let order = |i: usize, v: &Variant| match (v.offer, cpu) {
            (_, _) if i == 0 => Some(0),
            (Offer::CpuSubgroups8, true) if subgroups8 => Some(1),
            (Offer::CpuAdapter, true) => Some(2),
            (Offer::Everywhere, _) => Some(3),
            (Offer::GpuAdapter, false) => Some(4),
            _ => None,
        };
        let offered = |variants: Vec<Variant>| -> Vec<Variant> {
            let mut offered: Vec<(usize, Variant)> = variants
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| order(i, &v).map(|rank| (rank, v)))
                .collect();
            offered.sort_by_key(|(rank, _)| *rank); // stable: each class keeps its order
            offered.into_iter().map(|(_, v)| v).collect()
        };
        let mut variants = offered(variants);
        // A choice holds for the variants it was timed among: another set (a variant
        // added, a kernel's code changed) is timed again. The fingerprint is the
        // shape class's (its canonical variants') where the kernel gives them.
        let print = match tune.canonical {
            Some(canonical) => fingerprint(&offered(canonical)),
            None => fingerprint(&variants),
        };
        let key = format!("{} #{print:016x}", tune.key);
        let named = |name: &str| variants.iter().position(|v| v.name == name);
        if let Some(i) = self.tune.get(&key).and_then(|n| named(&n)) {
            return Ok(variants.swap_remove(i));
        }
        if !(CAN_BLOCK && self.tune.timing() && tune.worth_timing && variants.len() > 1) {
            return Ok(variants.swap_remove(0));
        }
        let (best, steady) = self.fastest(&variants, step)?;
        self.tune.set(&key, &variants[best].name, steady);
        Ok(variants.swap_remove(best))
    }

    /// Times each variant on scratch buffers of the step's sizes (the contents do
    /// not matter: every variant does the same work) and returns the fastest, or the
    /// first (the default) unless another is 10 % faster. A
    /// variant the adapter cannot build is skipped; after about two seconds of
    /// timing (a huge product on a slow adapter) the rest are not tried. With it,
    /// whether the timing was steady ([`steady`]): the default and the choice each
    /// timed once more at the end, within 25 % of what they measured before, and
    /// their repeated runs within 25 % of each other.
    pub(super) fn fastest(&self, variants: &[Variant], step: &Step) -> Result<(usize, bool)> {
        let raw = |words: usize| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgnn autotune"),
                size: buffer_bytes(words),
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let buffers: Vec<wgpu::Buffer> = step.words.iter().map(|&w| raw(w)).collect();
        let reads = step.kernel.reads();
        let max_groups = self.info.max_compute_workgroups_per_dimension;
        /// A run this long is measured once.
        const LONG_RUN: f64 = 0.05;
        /// Past this many seconds, the variants not yet timed are not tried.
        const TIME_BUDGET: f64 = 2.0;
        /// Another variant replaces the default (the first) only when it is this much
        /// faster: timing noise alone never moves a choice off it.
        const MARGIN: f64 = 1.1;
        let mut best = (f64::INFINITY, 0);
        let mut default = f64::INFINITY;
        let mut spent = 0.0;
        // Per variant timed: its passes, bind groups and repetitions per run, for the
        // recheck, and its runs' seconds (per repetition).
        let mut timed: Vec<Option<Timed>> = (0..variants.len()).map(|_| None).collect();
        for (i, v) in variants.iter().enumerate() {
            if spent > TIME_BUDGET {
                break;
            }
            let scratch = (v.scratch > 0).then(|| raw(v.scratch));
            let writes = step.bindings.len() - reads + scratch.is_some() as usize;
            let built: Result<Vec<GpuPass>> = v
                .passes
                .iter()
                .map(|w| self.pass(&launch(w, reads, writes, max_groups), reads, writes))
                .collect();
            let Ok(passes) = built else { continue };
            let layout = self.layout(reads, writes);
            let refs: Vec<wgpu::BufferBinding<'_>> = buffers
                .iter()
                .chain(&scratch)
                .map(wgpu::Buffer::as_entire_buffer_binding)
                .collect();
            let groups: Vec<wgpu::BindGroup> = passes
                .iter()
                .map(|p| bind_group(&self.device, &layout, &p.params, &refs))
                .collect();
            let run = |reps: usize| self.time_passes(&passes, &groups, reps);
            // One run first: a variant three times slower than the best so far is
            // out; a long kernel (a huge product on a slow adapter) is judged on it.
            let first = run(1)?;
            spent += first;
            let (seconds, reps, runs) = if first > 3.0 * best.0 {
                continue;
            } else if first > LONG_RUN {
                (first, 1, vec![first])
            } else {
                // Enough repetitions for about 20 ms of work (submission overhead
                // amortized), best of three.
                let reps = ((0.02 / first.max(1e-6)).ceil() as usize).clamp(2, 200);
                let times = [run(reps)?, run(reps)?, run(reps)?];
                spent += times.iter().sum::<f64>();
                let runs: Vec<f64> = times.iter().map(|t| t / reps as f64).collect();
                (runs.iter().copied().fold(f64::INFINITY, f64::min), reps, runs)
            };
            timed[i] = Some((passes, groups, reps, runs));
            if i == 0 {
                default = seconds;
            }
            if seconds < best.0 {
                best = (seconds, i);
            }
        }
        let chosen = if best.0 * MARGIN > default { 0 } else { best.1 };
        // The default and the choice timed once more, after all the others.
        let mut checks = Vec::new();
        for i in [0, chosen] {
            if let Some((passes, groups, reps, runs)) = &timed[i] {
                let again = self.time_passes(passes, groups, *reps)? / *reps as f64;
                checks.push((runs.clone(), again));
            }
            if chosen == 0 {
                break;
            }
        }
        self.faults.check("timing kernel variants")?;
        Ok((chosen, steady(&checks)))
    }

    /// Seconds to run `passes` (with their bind `groups`) `reps` times over, in one
    /// submit, waited for.
    fn time_passes(&self, passes: &[GpuPass], groups: &[wgpu::BindGroup], reps: usize) -> Result<f64> {
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for _ in 0..reps {
                for (p, g) in passes.iter().zip(groups) {
                    pass.set_pipeline(&p.pipeline);
                    pass.set_bind_group(0, g, &[]);
                    pass.dispatch_workgroups(p.groups.0, p.groups.1, p.groups.2);
                }
            }
        }
        let start = Instant::now();
        self.queue.submit([encoder.finish()]);
        self.wait_idle("timing kernel variants")?;
        Ok(start.elapsed().as_secs_f64())
    }
}

/// A variant as timed: its passes, their bind groups, the repetitions in one run,
/// and each run's seconds per repetition.
type Timed = (Vec<GpuPass>, Vec<wgpu::BindGroup>, usize, Vec<f64>);

/// Whether a timing was steady, from the variants that decided it (the default and
/// the choice): each one's runs (seconds per repetition) and its time when run once
/// more at the end. Steady when, for each, the slowest of its runs and the recheck
/// are within 25 % of its fastest run, and the recheck is not 25 % faster than it:
/// the machine ran at one speed throughout.
fn steady(checks: &[(Vec<f64>, f64)]) -> bool {
    const SPREAD: f64 = 1.25;
    !checks.is_empty()
        && checks.iter().all(|(runs, again)| {
            let fastest = runs.iter().copied().fold(f64::INFINITY, f64::min);
            let slowest = runs.iter().copied().fold(*again, f64::max);
            fastest.is_finite() && slowest <= SPREAD * fastest && again * SPREAD >= fastest
        })
}

/// A fingerprint of the variants offered, in their order: each one's name, and its
/// passes' kernels (the shader file, the entry, the generated definitions).
fn fingerprint(variants: &[Variant]) -> u64 {
    let mut text = String::new();
    for v in variants {
        text += &v.name;
        for pass in &v.passes {
            text += &format!("|{:016x}|{}|{}", shader_hash(pass.shader), pass.entry, pass.defs);
        }
        text.push('\n');
    }
    crate::backend::tune_cache::fnv1a(&text)
}

/// The FNV-1a hash of a shader file, computed once per file.
fn shader_hash(shader: &'static str) -> u64 {
    static HASHES: Mutex<Vec<(usize, u64)>> = Mutex::new(Vec::new());
    let at = shader.as_ptr() as usize;
    let mut hashes = HASHES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, h)) = hashes.iter().find(|(p, _)| *p == at) {
        return h;
    }
    let h = crate::backend::tune_cache::fnv1a(shader);
    hashes.push((at, h));
    h
}

#[cfg(test)]
mod tests {
    use super::steady;

    #[test]
    fn a_timing_is_steady_only_when_every_run_and_the_recheck_agree_within_a_quarter() {
        // The default alone (it was chosen): three runs and a recheck.
        assert!(steady(&[(vec![1.0, 1.1, 1.05], 1.2)]));
        assert!(!steady(&[(vec![1.0, 1.4, 1.05], 1.0)]), "a slow run among the three");
        assert!(
            !steady(&[(vec![1.0, 1.1, 1.05], 1.3)]),
            "the recheck slower: the machine slowed"
        );
        assert!(
            !steady(&[(vec![1.0, 1.1, 1.05], 0.7)]),
            "the recheck faster: the runs were slow"
        );
        // A long variant, run once, and its recheck.
        assert!(steady(&[(vec![0.2], 0.22)]));
        assert!(!steady(&[(vec![0.2], 0.3)]));
        // The default and another choice: both must agree.
        assert!(steady(&[(vec![1.0, 1.0, 1.0], 1.1), (vec![0.5, 0.52, 0.5], 0.55)]));
        assert!(!steady(&[(vec![1.0, 1.0, 1.0], 1.1), (vec![0.5, 0.52, 0.5], 0.7)]));
        // Nothing timed (no variant could be built): nothing to save.
        assert!(!steady(&[]));
    }
}
