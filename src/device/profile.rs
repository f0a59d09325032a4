//! The profiler (`Device::set_profile`, `WGNN_PROFILE`): while it is on, every plan
//! run times each of its launches — by timestamp queries on a GPU that has them, by
//! the host clock otherwise — and the device adds the times up per plan. The report
//! ([`Device::profile_report`](crate::Device::profile_report)) gives per launch its mean time per run, its share of
//! the plan's, and its rate in GFLOP/s and GB/s, named by kernel, op, shape and the
//! source line that built the node. Off, it costs one flag load per plan run.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::kernel::Cost;
use crate::backend::{Clock, Timings};

/// Per-launch times of a device's plans, from [`Device::profile_report`](crate::Device::profile_report).
#[derive(Clone, Debug, Default)]
pub struct ProfileReport {
    /// Every plan run while profiling, in the order they first ran.
    pub plans: Vec<PlanProfile>,
}

/// One compiled plan (e.g. a training step: forward, backward and update) and its
/// launches.
#[derive(Clone, Debug)]
pub struct PlanProfile {
    /// Profiled runs.
    pub runs: u64,
    /// How the times were measured.
    pub clock: Clock,
    /// Its launches in execution order (optimizer updates last).
    pub launches: Vec<LaunchProfile>,
}

impl PlanProfile {
    /// Mean time of a run, in seconds: the sum of its launches' times (neither
    /// uploads nor the host's work between launches are counted).
    pub fn seconds_per_run(&self) -> f64 {
        self.launches.iter().map(|l| l.seconds).sum()
    }
}

/// One kernel launch of a plan.
#[derive(Clone, Debug)]
pub struct LaunchProfile {
    /// The kernel (its shader section, e.g. `matmul`, `binary`, `reduce_rows`).
    pub kernel: String,
    /// The op of the node it computes (e.g. `matmul`, `relu`, `adam`).
    pub op: String,
    /// The node's shape (for an optimizer update, the parameter's).
    pub shape: Vec<usize>,
    /// The source line that built the node; for a gradient node, the forward op it
    /// is the gradient of and where that was built.
    pub location: String,
    /// The variant the backend chose for it (the GPU autotune's GEMM tile, e.g.
    /// `128x64k8s3`: 128×64 outputs per workgroup, K slices of 8, K split in 3);
    /// empty where the kernel has one form only.
    pub variant: String,
    /// Dispatches per run (2 for a split-K GEMM: the products, then their sum).
    pub dispatches: u64,
    /// Mean time per run, in seconds.
    pub seconds: f64,
    /// Its share of the plan's time per run, in `[0, 1]`.
    pub share: f64,
    /// Floating-point operations per run (0 where the family counts none: its rate
    /// is judged by bytes).
    pub flops: u64,
    /// Bytes read and written per run (each binding once).
    pub bytes: u64,
}

impl LaunchProfile {
    /// GFLOP/s, for kernels that count their flops (GEMM: `2·m·n·k`).
    pub fn gflops(&self) -> Option<f64> {
        (self.flops > 0 && self.seconds > 0.0).then(|| self.flops as f64 / self.seconds * 1e-9)
    }

    /// GB/s of bytes read and written.
    pub fn gbytes_per_second(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.bytes as f64 / self.seconds * 1e-9)
    }
}

impl fmt::Display for ProfileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.plans.is_empty() {
            return writeln!(f, "wgnn profile: no plan has run while profiling");
        }
        for (i, plan) in self.plans.iter().enumerate() {
            writeln!(
                f,
                "wgnn profile: plan {} ({} launches), {} runs, {:.1} µs per run ({})",
                i + 1,
                plan.launches.len(),
                plan.runs,
                plan.seconds_per_run() * 1e6,
                plan.clock
            )?;
            plan.fmt(f)?;
        }
        Ok(())
    }
}

impl fmt::Display for PlanProfile {
    /// The table of launches, one per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  {:>10} {:>6} {:>8} {:>7}  {:<40} {:<12} built at",
            "µs/run", "share", "GFLOP/s", "GB/s", "kernel (op)", "shape"
        )?;
        let rate = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}"));
        for l in &self.launches {
            writeln!(
                f,
                "  {:>10.1} {:>5.1}% {:>8} {:>7}  {:<40} {:<12} {}",
                l.seconds * 1e6,
                l.share * 100.0,
                rate(l.gflops()),
                rate(l.gbytes_per_second()),
                format!("{} ({}) {}", l.kernel, l.op, l.variant).trim_end(),
                format!("{:?}", l.shape),
                l.location
            )?;
        }
        Ok(())
    }
}

/// What the profiler knows of a launch before it runs.
#[derive(Debug)]
pub(crate) struct Label {
    pub(crate) kernel: String,
    pub(crate) op: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) location: String,
    pub(crate) cost: Cost,
}

/// A device's profiler: the switch, and the times added up per plan.
#[derive(Default)]
pub(crate) struct Profiler {
    on: AtomicBool,
    /// Print each plan's table to stderr after its 10th, 100th, 1000th… run
    /// (`WGNN_PROFILE`).
    print: AtomicBool,
    plans: Mutex<HashMap<u64, PlanTotals>>,
}

/// The times of one plan, added up.
struct PlanTotals {
    /// When it first ran while profiling (the report's order).
    first: usize,
    labels: Arc<Vec<Label>>,
    clock: Clock,
    runs: u64,
    seconds: Vec<f64>,
    variants: Vec<(String, u64)>,
}

impl Profiler {
    /// The profiler `WGNN_PROFILE` asks for.
    pub(crate) fn from_env() -> Profiler {
        Profiler::from_var(std::env::var("WGNN_PROFILE").ok().as_deref())
    }

    /// Unset, empty or `0`: off; anything else: on, printing each plan's table to
    /// stderr after its 10th, 100th, 1000th… run.
    fn from_var(value: Option<&str>) -> Profiler {
        let on = value.is_some_and(|v| !v.is_empty() && v != "0");
        let profiler = Profiler::default();
        profiler.on.store(on, Ordering::Relaxed);
        profiler.print.store(on, Ordering::Relaxed);
        profiler
    }

    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    pub(crate) fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    pub(crate) fn reset(&self) {
        self.plans.lock().unwrap().clear();
    }

    pub(crate) fn report(&self) -> ProfileReport {
        let plans = self.plans.lock().unwrap();
        let mut totals: Vec<&PlanTotals> = plans.values().collect();
        totals.sort_by_key(|t| t.first);
        ProfileReport {
            plans: totals.into_iter().map(PlanTotals::profile).collect(),
        }
    }

    /// Adds a run's timings to plan `id`'s (labelled, the first time, by `labels`);
    /// prints the plan's table when `WGNN_PROFILE` asked and its run count is a
    /// power of ten from 10.
    pub(crate) fn record(&self, id: u64, labels: impl FnOnce() -> Arc<Vec<Label>>, timings: Timings) {
        let mut plans = self.plans.lock().unwrap();
        let first = plans.len();
        let totals = plans.entry(id).or_insert_with(|| {
            let labels = labels();
            PlanTotals {
                first,
                seconds: vec![0.0; labels.len()],
                labels,
                clock: timings.clock,
                variants: timings.variants.clone(),
                runs: 0,
            }
        });
        totals.runs += 1;
        for (total, t) in totals.seconds.iter_mut().zip(&timings.seconds) {
            *total += t;
        }
        let runs = totals.runs;
        if self.print.load(Ordering::Relaxed) && runs >= 10 && 10u64.pow(runs.ilog10()) == runs {
            let plan = totals.profile();
            eprint!(
                "wgnn profile: plan {} ({} launches) after {runs} runs: {:.1} µs per run ({})\n{plan}",
                totals.first + 1,
                plan.launches.len(),
                plan.seconds_per_run() * 1e6,
                plan.clock
            );
        }
    }
}

impl PlanTotals {
    fn profile(&self) -> PlanProfile {
        let runs = self.runs.max(1) as f64;
        let total: f64 = self.seconds.iter().sum();
        let launches = self
            .labels
            .iter()
            .zip(&self.seconds)
            .enumerate()
            .map(|(i, (label, &seconds))| LaunchProfile {
                kernel: label.kernel.clone(),
                op: label.op.clone(),
                shape: label.shape.clone(),
                location: label.location.clone(),
                variant: self.variants.get(i).map(|v| v.0.clone()).unwrap_or_default(),
                dispatches: self.variants.get(i).map_or(1, |v| v.1),
                seconds: seconds / runs,
                share: if total > 0.0 { seconds / total } else { 0.0 },
                flops: label.cost.flops,
                bytes: label.cost.bytes,
            })
            .collect();
        PlanProfile {
            runs: self.runs,
            clock: self.clock,
            launches,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiling_follows_its_environment_variable() {
        let on = |v| Profiler::from_var(v).is_on();
        assert!(!on(None));
        assert!(!on(Some("")));
        assert!(!on(Some("0")));
        assert!(on(Some("1")));
        assert!(on(Some("yes")));
    }
}
