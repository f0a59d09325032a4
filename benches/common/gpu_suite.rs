//! The wgnn half of `benches/gpu.sh`: `bench --gpu-suite [--quick] [--out DIR]
//! [--allow-software] [--adapter-only]` measures, on the GPU alone, what issue 10's
//! GPU targets name, and writes it to `DIR/wgnn.json` (rewritten after each section,
//! so a run cut short keeps what it measured) besides printing it:
//!
//! * `adapter`: the wgpu adapter. Refused (exit status 1) when it is software (type
//!   `Cpu`, e.g. llvmpipe) unless `--allow-software`.
//! * `first_step`: the MNIST MLP's step on a fresh device (its own plan cache, so the
//!   first step compiles shaders and pipelines): device creation, model upload, the
//!   first, second and third step, each waited for.
//! * `gemm`: `a[m,k]·b[k,n]` on random data: kernel time from GPU timestamps (profile
//!   mode), wall time per product when `K` are submitted back to back and waited for
//!   once, and the relative error of sampled rows against an f64 product on the host.
//! * `mlp`: the MLP step (784-128-10, Adam) in steady state: waited for each step
//!   (median), and pipelined (`K` steps back to back, one wait), with the host time
//!   spent in the step calls, the dispatches and submits per step, and so the host
//!   µs per dispatch of plan replay.
//! * `bandwidth`: elementwise ops and Adam on `N` floats, each launch's GPU time and
//!   GB/s (bytes as the kernel counts them: each binding read or written once), and
//!   the plan's GB/s on its ideal bytes (each input read once, each output written
//!   once) — what a fused kernel would move.
//! * `profile`: the `WGNN_PROFILE` table of one MLP step at batch 32 and 128.
//! * `gemm_tiles`: every GEMM tile the autotune offers on the adapter (the two-stage
//!   and warp-tiled forms on a GPU: `Device::debug_gemm_tiles`) forced one at a
//!   time at a few sizes, with its kernel time — the data to set a GPU's defaults
//!   from, where the autotune's own choice (in `gemm`'s launches) is one tile.
//!
//! `--quick` uses tiny sizes and budgets (a check of the script on lavapipe).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::mnist_step::MlpStep;
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::{Device, Error, Result, Tensor};

/// A JSON value, enough to write the suite's results (and `bench --json`'s).
pub enum J {
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
}

impl std::fmt::Display for J {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            J::Num(x) if x.is_finite() => write!(f, "{x}"),
            J::Num(_) => f.write_str("null"),
            J::Str(s) => write!(
                f,
                "\"{}\"",
                s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
            ),
            J::Arr(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    write!(f, "{}{x}", if i > 0 { ",\n " } else { "" })?;
                }
                f.write_str("]")
            }
            J::Obj(v) => {
                f.write_str("{")?;
                for (i, (k, x)) in v.iter().enumerate() {
                    write!(f, "{}\"{k}\": {x}", if i > 0 { ", " } else { "" })?;
                }
                f.write_str("}")
            }
        }
    }
}

pub fn num(x: impl Into<f64>) -> J {
    J::Num(x.into())
}

pub fn text(s: impl Into<String>) -> J {
    J::Str(s.into())
}

/// Sizes and budgets of one run.
struct Sizes {
    gemm: Vec<(usize, usize, usize)>,
    /// The products `gemm_tiles` times every tile at.
    tiles: Vec<(usize, usize, usize)>,
    batches: [usize; 2],
    elements: usize,
    /// Time spent per timed cell.
    time: Duration,
    profiled_runs: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                gemm: vec![(64, 64, 64), (32, 784, 128)],
                tiles: vec![(64, 64, 64)],
                batches: [32, 128],
                elements: 1 << 14,
                time: Duration::from_millis(100),
                profiled_runs: 2,
            }
        } else {
            Sizes {
                gemm: vec![
                    (1024, 1024, 1024),
                    (2048, 2048, 2048),
                    (4096, 4096, 4096),
                    (32, 784, 128),
                    (128, 784, 128),
                    (128, 32, 784),
                ],
                tiles: vec![(4096, 4096, 4096), (1024, 1024, 1024), (128, 784, 128)],
                batches: [32, 128],
                elements: 1 << 25,
                time: Duration::from_secs(1),
                profiled_runs: 10,
            }
        }
    }
}

/// The results so far, written to `DIR/wgnn.json` after each section.
struct Results {
    out: Option<std::path::PathBuf>,
    sections: Vec<(&'static str, J)>,
}

impl Results {
    fn add(&mut self, name: &'static str, value: J) -> Result<()> {
        self.sections.push((name, value));
        let Some(dir) = &self.out else { return Ok(()) };
        let json = J::Obj(std::mem::take(&mut self.sections));
        let path = dir.join("wgnn.json");
        std::fs::write(&path, format!("{json}\n")).map_err(|source| Error::Io { path, source })?;
        let J::Obj(sections) = json else { unreachable!() };
        self.sections = sections;
        Ok(())
    }

    /// A section that failed: its error, recorded, so the others still run.
    fn add_or_error(&mut self, name: &'static str, value: Result<J>) -> Result<()> {
        let value = value.unwrap_or_else(|e| {
            println!("  {name}: FAILED: {e}");
            J::Obj(vec![("error", text(e.to_string()))])
        });
        self.add(name, value)
    }
}

/// The suite's flags, flattened into `bench`'s.
#[derive(clap::Args)]
pub struct Options {
    /// Run the GPU-only suite of benches/gpu.sh instead of the table (with --quick: tiny sizes).
    #[arg(long)]
    pub gpu_suite: bool,
    /// With --gpu-suite: write DIR/wgnn.json (rewritten after each section).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// With --gpu-suite: run on a software adapter (e.g. llvmpipe) too.
    #[arg(long)]
    pub allow_software: bool,
    /// With --gpu-suite: stop after the adapter section.
    #[arg(long)]
    pub adapter_only: bool,
}

/// Runs the suite (see the module doc); `quick` is `bench --quick`.
pub fn main(options: &Options, quick: bool) -> Result<()> {
    let out = options.out.clone();
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
    }
    let mut results = Results {
        out,
        sections: Vec::new(),
    };
    let sizes = Sizes::new(quick);
    let started = Instant::now();

    let made = Instant::now();
    let dev = Device::gpu()?;
    let create_ms = made.elapsed().as_secs_f64() * 1e3;
    let info = dev.info();
    println!("wgnn gpu suite{}: {dev}", if quick { " --quick" } else { "" });
    results.add(
        "adapter",
        J::Obj(vec![
            ("name", text(&info.name)),
            ("backend", text(&info.backend)),
            ("device_type", text(&info.device_type)),
            ("driver", text(&info.driver)),
            (
                "max_storage_buffer_binding_size",
                num(info.max_storage_buffer_binding_size as f64),
            ),
            ("device_create_ms", num(create_ms)),
            ("quick", text(quick.to_string())),
        ]),
    )?;
    if info.device_type == "Cpu" && !options.allow_software {
        return Err(Error::NoAdapter(format!(
            "the adapter is software ({}, type Cpu): these figures would say nothing about a GPU \
             (--allow-software, or WGNN_GPU_SH_ALLOW_SOFTWARE=1 for gpu.sh, to run anyway)",
            info.name
        )));
    }
    if options.adapter_only {
        return Ok(());
    }

    let first = first_step(&sizes);
    results.add_or_error("first_step", first)?;
    let gemm = gemm(&dev, &sizes);
    results.add_or_error("gemm", gemm)?;
    let mlp = mlp(&dev, &sizes);
    results.add_or_error("mlp", mlp)?;
    let bandwidth = bandwidth(&dev, &sizes);
    results.add_or_error("bandwidth", bandwidth)?;
    let profile = profile(&dev, &sizes);
    results.add_or_error("profile", profile)?;
    let tiles = gemm_tiles(&dev, &sizes);
    results.add_or_error("gemm_tiles", tiles)?;
    println!("wgnn gpu suite took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The MLP step on a fresh device per batch size (nothing compiled yet).
fn first_step(sizes: &Sizes) -> Result<J> {
    let backends = std::env::var("WGPU_BACKEND").unwrap_or_default();
    let mut rows = Vec::new();
    println!("first step (fresh device each):");
    for batch in sizes.batches {
        let t = Instant::now();
        let dev = Device::gpu_with_backends(&backends)?;
        let create = ms(t.elapsed());
        let t = Instant::now();
        let mut mlp = MlpStep::new(batch, &dev)?;
        let upload = ms(t.elapsed());
        let mut steps = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            mlp.step_and_wait()?;
            steps.push(ms(t.elapsed()));
        }
        println!(
            "  b{batch}: device {create:.1} ms, model+batch upload {upload:.1} ms, steps {:.2} / {:.2} / {:.2} ms",
            steps[0], steps[1], steps[2]
        );
        rows.push(J::Obj(vec![
            ("batch", num(batch as f64)),
            ("device_create_ms", num(create)),
            ("upload_ms", num(upload)),
            ("first_ms", num(steps[0])),
            ("second_ms", num(steps[1])),
            ("third_ms", num(steps[2])),
        ]));
    }
    Ok(J::Arr(rows))
}

/// Times `run` (which submits work without waiting) `k` times back to back and then
/// waits once, `repeats` times after one such warm-up; the median seconds per run.
fn pipelined(dev: &Device, sizes: &Sizes, mut run: impl FnMut() -> Result<()>) -> Result<(f64, usize)> {
    let fence = crate::mnist_step::fence(dev)?;
    let wait = || fence.to_vec().map(|_| ());
    run()?;
    wait()?;
    let t = Instant::now();
    run()?;
    wait()?;
    let one = t.elapsed().as_secs_f64().max(1e-6);
    let per_repeat = sizes.time.as_secs_f64() / 5.0;
    let k = ((per_repeat / one) as usize).clamp(1, 1000);
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < 3 || (started.elapsed() < sizes.time && samples.len() < 20) {
        let t = Instant::now();
        for _ in 0..k {
            run()?;
        }
        wait()?;
        samples.push(t.elapsed().as_secs_f64() / k as f64);
    }
    Ok((median(samples), k))
}

/// Runs `run` `n` times in profile mode; the plans that ran, with their launches.
fn profiled(dev: &Device, n: usize, mut run: impl FnMut() -> Result<()>) -> Result<wgnn::ProfileReport> {
    dev.reset_profile();
    dev.set_profile(true);
    let result = (0..n).try_for_each(|_| run());
    dev.set_profile(false);
    result?;
    Ok(dev.profile_report())
}

/// The launches of the plan that ran most often, as JSON, and its GPU seconds per run.
fn main_plan(report: &wgnn::ProfileReport) -> Option<(f64, J)> {
    let plan = report.plans.iter().max_by_key(|p| p.runs)?;
    let launches = plan
        .launches
        .iter()
        .map(|l| {
            J::Obj(vec![
                ("kernel", text(&l.kernel)),
                ("op", text(&l.op)),
                ("shape", text(format!("{:?}", l.shape))),
                ("variant", text(&l.variant)),
                ("us", num(l.seconds * 1e6)),
                ("bytes", num(l.bytes as f64)),
                ("gbs", num(l.gbytes_per_second().unwrap_or(f64::NAN))),
                ("gflops", num(l.gflops().unwrap_or(f64::NAN))),
            ])
        })
        .collect();
    let clock = text(plan.clock.to_string());
    Some((
        plan.seconds_per_run(),
        J::Obj(vec![("clock", clock), ("launches", J::Arr(launches))]),
    ))
}

/// Relative error ‖c − ref‖/‖ref‖ over a few rows of `a·b`, the reference in f64.
fn gemm_error(a: &[f32], b: &[f32], c: &[f32], (m, k, n): (usize, usize, usize)) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for row in [0, m / 3, m / 2, m - 1] {
        let mut acc = vec![0.0f64; n];
        for (p, &x) in a[row * k..(row + 1) * k].iter().enumerate() {
            for (s, &y) in acc.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *s += x as f64 * y as f64;
            }
        }
        for (j, &r) in acc.iter().enumerate() {
            let got = c[row * n + j] as f64;
            err += (got - r) * (got - r);
            norm += r * r;
        }
    }
    if c.iter().any(|x| !x.is_finite()) {
        f64::NAN
    } else {
        (err / norm).sqrt()
    }
}

fn gemm(dev: &Device, sizes: &Sizes) -> Result<J> {
    let mut rows = Vec::new();
    println!("gemm (f32, random data):");
    println!(
        "  {:>16} {:>11} {:>11} {:>11} {:>11} {:>10}",
        "m x k x n", "kernel ms", "GFLOP/s", "wall ms", "GFLOP/s", "rel err"
    );
    for &(m, k, n) in &sizes.gemm {
        let a = Tensor::randn(&[m, k], 1, dev)?;
        let b = Tensor::randn(&[k, n], 2, dev)?;
        let c = a.matmul(&b);
        let err = gemm_error(&a.to_vec()?, &b.to_vec()?, &c.to_vec()?, (m, k, n));
        let fence = crate::mnist_step::fence(dev)?;
        let report = profiled(dev, sizes.profiled_runs, || {
            a.matmul(&b).realize()?;
            fence.to_vec().map(|_| ())
        })?;
        let (kernel_s, launches) = main_plan(&report).ok_or_else(|| Error::Invalid("no plan profiled".into()))?;
        let (wall_s, k_runs) = pipelined(dev, sizes, || a.matmul(&b).realize())?;
        let flops = 2.0 * (m * k * n) as f64;
        println!(
            "  {:>16} {:>11.4} {:>11.1} {:>11.4} {:>11.1} {:>10.2e}",
            format!("{m}x{k}x{n}"),
            kernel_s * 1e3,
            flops / kernel_s * 1e-9,
            wall_s * 1e3,
            flops / wall_s * 1e-9,
            err
        );
        rows.push(J::Obj(vec![
            ("m", num(m as f64)),
            ("k", num(k as f64)),
            ("n", num(n as f64)),
            ("kernel_ms", num(kernel_s * 1e3)),
            ("kernel_gflops", num(flops / kernel_s * 1e-9)),
            ("wall_ms", num(wall_s * 1e3)),
            ("wall_gflops", num(flops / wall_s * 1e-9)),
            ("back_to_back", num(k_runs as f64)),
            ("rel_err", num(err)),
            ("plan", launches),
        ]));
    }
    Ok(J::Arr(rows))
}

/// Every GEMM tile offered on `dev`'s adapter forced in turn at each of `sizes.tiles`:
/// its kernel GFLOP/s (GPU timestamps, profile mode), largest products first.
fn gemm_tiles(dev: &Device, sizes: &Sizes) -> Result<J> {
    let names = dev.debug_gemm_tiles();
    println!("gemm tiles, each forced (kernel GFLOP/s):");
    println!(
        "  {:>16} {}",
        "m x k x n",
        names.iter().map(|n| format!("{n:>11}")).collect::<String>()
    );
    let mut rows = Vec::new();
    for &(m, k, n) in &sizes.tiles {
        let a = Tensor::randn(&[m, k], 1, dev)?;
        let b = Tensor::randn(&[k, n], 2, dev)?;
        let fence = crate::mnist_step::fence(dev)?;
        let mut line = format!("  {:>16}", format!("{m}x{k}x{n}"));
        let mut cells = Vec::new();
        for name in &names {
            dev.clear_plan_cache();
            dev.debug_kernel_variant(Some(name));
            let timed = profiled(dev, sizes.profiled_runs, || {
                a.matmul(&b).realize()?;
                fence.to_vec().map(|_| ())
            });
            dev.debug_kernel_variant(None);
            let (kernel_s, _) = main_plan(&timed?).ok_or_else(|| Error::Invalid("no plan profiled".into()))?;
            let gflops = 2.0 * (m * k * n) as f64 / kernel_s * 1e-9;
            let _ = write!(line, " {gflops:>11.1}");
            cells.push(J::Obj(vec![("tile", text(name)), ("kernel_gflops", num(gflops))]));
        }
        println!("{line}");
        rows.push(J::Obj(vec![
            ("m", num(m as f64)),
            ("k", num(k as f64)),
            ("n", num(n as f64)),
            ("tiles", J::Arr(cells)),
        ]));
    }
    dev.clear_plan_cache();
    Ok(J::Arr(rows))
}

fn mlp(dev: &Device, sizes: &Sizes) -> Result<J> {
    let mut rows = Vec::new();
    println!("mlp step (784-128-10, Adam), steady state:");
    for batch in sizes.batches {
        let mut mlp = MlpStep::new(batch, dev)?;
        for _ in 0..10 {
            mlp.step_and_wait()?;
        }
        // Waited for each step.
        let mut waited = Vec::new();
        let started = Instant::now();
        while waited.len() < 5 || (started.elapsed() < sizes.time && waited.len() < 2000) {
            let t = Instant::now();
            mlp.step_and_wait()?;
            waited.push(ms(t.elapsed()));
        }
        // Pipelined: steps submitted back to back, one wait; the host time is that of
        // the step calls alone (building the graph, finding the plan, encoding and
        // submitting its dispatches).
        let steps = if sizes.time >= Duration::from_secs(1) { 1000 } else { 20 };
        let before = dev.stats();
        let t = Instant::now();
        for _ in 0..steps {
            mlp.step()?;
        }
        let host = t.elapsed();
        mlp.step_and_wait()?;
        let total = t.elapsed();
        let after = dev.stats();
        let per = |x: u64| x as f64 / (steps + 1) as f64;
        let dispatches = per(after.dispatches - before.dispatches);
        let submits = per(after.submits - before.submits);
        let host_us = host.as_secs_f64() * 1e6 / steps as f64;
        let row = J::Obj(vec![
            ("batch", num(batch as f64)),
            ("waited_ms", num(median(waited.clone()))),
            ("waited_runs", num(waited.len() as f64)),
            ("pipelined_ms", num(ms(total) / (steps + 1) as f64)),
            ("pipelined_steps", num(steps as f64)),
            ("host_us_per_step", num(host_us)),
            ("dispatches_per_step", num(dispatches)),
            ("submits_per_step", num(submits)),
            ("host_us_per_dispatch", num(host_us / dispatches)),
        ]);
        println!(
            "  b{batch}: waited {:.3} ms (median of {}), pipelined {:.3} ms/step over {steps}; host {host_us:.1} µs/step, \
             {dispatches:.1} dispatches and {submits:.1} submits per step, {:.2} µs per dispatch",
            median(waited.clone()),
            waited.len(),
            ms(total) / (steps + 1) as f64,
            host_us / dispatches
        );
        rows.push(row);
    }
    Ok(J::Arr(rows))
}

fn bandwidth(dev: &Device, sizes: &Sizes) -> Result<J> {
    // Largest power of two up to `sizes.elements` whose buffer fits one binding.
    let limit = (dev.info().max_storage_buffer_binding_size / 4) as usize;
    let n = sizes.elements.min(1 << (usize::BITS - 1 - limit.leading_zeros()));
    let a = Tensor::randn(&[n], 1, dev)?;
    let b = Tensor::randn(&[n], 2, dev)?;
    let word = 4.0 * n as f64;
    println!(
        "bandwidth ({n} floats, {:.0} MiB per tensor; GPU timestamps):",
        word / 1048576.0
    );
    let mut rows = Vec::new();
    let fence = crate::mnist_step::fence(dev)?;
    let mut record = |name: &str, ideal_words: f64, report: wgnn::ProfileReport| -> Result<()> {
        let (plan_s, launches) = main_plan(&report).ok_or_else(|| Error::Invalid("no plan profiled".into()))?;
        let ideal = ideal_words * word;
        println!(
            "  {name:<28} plan {:>9.1} µs, {:>8.1} GB/s on ideal bytes ({ideal_words} x n x 4)",
            plan_s * 1e6,
            ideal / plan_s * 1e-9
        );
        if let J::Obj(fields) = &launches {
            if let Some((_, J::Arr(ls))) = fields.iter().find(|(k, _)| *k == "launches") {
                for l in ls {
                    println!("      {l}");
                }
            }
        }
        rows.push(J::Obj(vec![
            ("name", text(name)),
            ("elements", num(n as f64)),
            ("plan_us", num(plan_s * 1e6)),
            ("ideal_bytes", num(ideal)),
            ("ideal_gbs", num(ideal / plan_s * 1e-9)),
            ("plan", launches),
        ]));
        Ok(())
    };
    let runs = sizes.profiled_runs;
    let wait = || fence.to_vec().map(|_| ());
    let report = profiled(dev, runs, || {
        (&a + &b).realize()?;
        wait()
    })?;
    record("add (a + b)", 3.0, report)?;
    let report = profiled(dev, runs, || {
        a.relu().realize()?;
        wait()
    })?;
    record("relu(a)", 2.0, report)?;
    let report = profiled(dev, runs, || {
        (&a.mul_scalar(2.0) + &b).relu().realize()?;
        wait()
    })?;
    record("relu(2a + b) chain", 3.0, report)?;
    // Adam on one parameter of n floats: loss = sum(p * w), so the gradient is w.
    let p = Tensor::randn(&[n], 3, dev)?.requires_grad()?;
    let mut opt = Adam::new(vec![p.clone()], AdamConfig::default());
    let mut step = || -> Result<()> {
        opt.step(&(&p * &b).sum().backward()?)?;
        wait()
    };
    step()?;
    let report = profiled(dev, runs, &mut step)?;
    // Adam alone reads p, g, m, v and writes p, m, v: 7 words per element.
    record("adam step (sum(p*w) + adam)", 7.0, report.clone())?;
    for plan in &report.plans {
        for l in plan
            .launches
            .iter()
            .filter(|l| l.op.contains("optim") || l.kernel.contains("adam"))
        {
            let ideal = 7.0 * word;
            println!(
                "  adam kernel alone: {:.1} µs, {:.1} GB/s on 7 x n x 4 bytes ({:.1} GB/s on its own count)",
                l.seconds * 1e6,
                ideal / l.seconds * 1e-9,
                l.gbytes_per_second().unwrap_or(f64::NAN)
            );
            rows.push(J::Obj(vec![
                ("name", text("adam kernel")),
                ("elements", num(n as f64)),
                ("plan_us", num(l.seconds * 1e6)),
                ("ideal_bytes", num(ideal)),
                ("ideal_gbs", num(ideal / l.seconds * 1e-9)),
            ]));
        }
    }
    Ok(J::Arr(rows))
}

fn profile(dev: &Device, sizes: &Sizes) -> Result<J> {
    let mut tables = Vec::new();
    for batch in sizes.batches {
        let mut mlp = MlpStep::new(batch, dev)?;
        for _ in 0..10 {
            mlp.step_and_wait()?;
        }
        let report = profiled(dev, 10 * sizes.profiled_runs, || mlp.step_and_wait().map(|_| ()))?;
        let mut table = String::new();
        let _ = writeln!(table, "{dev}: MLP 784-128-10, batch {batch}, Adam");
        let _ = write!(table, "{report}");
        print!("{table}");
        tables.push(J::Obj(vec![("batch", num(batch as f64)), ("table", text(table))]));
    }
    Ok(J::Arr(tables))
}
