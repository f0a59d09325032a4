//! GPU vs CPU: square f32 matmul and one training step of an MNIST MLP, timed on
//! the CPU reference backend and on the wgpu GPU, printed as one table; then one
//! epoch of the MNIST subset trained by a hand-written loop and by `Model::fit`.
//!
//! `cargo run --release --example bench [-- --quick] [--torch] [--only OP] [--json PATH]`
//! (`--torch` also times the LSTM step in PyTorch on the CPU, `benches/lstm_torch.py`,
//! in the same run; `--only matmul|matmul_f16|train_step|lstm_step|attention|conv2d|cnn_step|transformer_step`
//! runs one op's rows (`cnn_step`, `transformer_step`: a training step of the `cnn` and
//! `transformer_text` examples' models, `benches/common/model_steps.rs`)
//! (`benches/common/layers.rs`; with `--torch`, `benches/layers_torch.py` times the same
//! layer steps in PyTorch); `--json`
//! also writes the table, the devices and PyTorch's LSTM times to PATH)
//!
//! `bench --gpu-suite [--quick] [--out DIR]` instead runs the GPU-only suite of
//! `benches/gpu.sh` (GEMM up to 4096³, first and steady MLP steps, bandwidth, host
//! time per dispatch, the profile of one step; `benches/common/gpu_suite.rs`).
//!
//! `bench --peer-mlp cpu|gpu BATCH EPOCHS [SUBSET] [IDX_DIR] [--fit]` trains the seed's
//! MLP on Fashion-MNIST under the protocol of the peer programs (Burn, Candle,
//! PyTorch), for `benches/peers.sh` (`benches/common/peer_mlp.rs`).
//!
//! `bench --tune` instead fills the GPU autotune's cache file ahead of time: it runs
//! every workload of the table on the GPU (the first run of each new GEMM shape
//! class times its variants) and prints the cache's size and path, so that a later
//! process's first epoch pays no timing.
//!
//! `cargo run --release --example bench -- --soak STEPS` instead trains the MNIST MLP
//! for STEPS steps on each device (a fresh batch of 32 uploaded every step, Adam, the
//! loss read at each report) and prints, ten times along the way, the steps per
//! second, the device's live buffer bytes and the process's resident memory, then
//! their growth after the first tenth (warm-up): a leak shows as a steady climb.
//!
//! Method, per cell (one op, one size, one device):
//!
//! * **Warm-up.** The op runs untimed first, which compiles its plan (shaders,
//!   pipelines, arena buffers) and fills the plan cache; a second warm-up run
//!   follows when the first took under 0.2 s (not with `--quick`). Timed runs
//!   then reuse the cached plan, as a training loop does.
//! * **Every timed run waits for completion.** On the GPU, `realize` and
//!   `Optimizer::step` only submit work and return, so each timed run ends in a
//!   tiny readback, which submits a copy and blocks until the queue is idle (the
//!   queue runs in order, so that means until the measured work has finished):
//!   - matmul: `c.realize()`, then a 4-byte read of a one-element resident
//!     "fence" tensor (reading all of `c` would add an n²-word copy to the time);
//!   - train_step: forward, `backward`, `Adam::step` (one plan, one submit, which
//!     also computes the loss: `Optimizer::step` realizes `Gradients::loss` in the
//!     same plan, before the update), then the same 4-byte fence read, so both ops
//!     end alike. Reading the loss instead (`loss.to_vec()`) is also one small
//!     readback and runs no further plan. The lines after the table show the
//!     counters of both and the time of a step that reads its loss.
//!
//!   The CPU backend computes synchronously; it ends its runs the same way.
//! * **Median of N runs**, N adaptive: at least 3, and more until about 1 s has
//!   been spent in the cell. `--quick`: at least 1, until about 0.1 s (a slow
//!   cell, such as a 2048 matmul on a software GPU, then costs one warm-up and
//!   one timed run instead of one and three).
//!
//! Columns: median ms per op on each device; GFLOP/s on each device (matmul:
//! 2n³ flops; train_step: the matmul flops of forward and backward, 2·F1 + 3·F2
//! with F = 2·batch·in·out per layer, so elementwise, loss and Adam work are not
//! counted); GPU/CPU is GPU time over CPU time (below 1: the GPU is faster). With
//! no GPU adapter the GPU columns show "n/a". After the table, the device counters
//! of one GPU training step show that a step is one submit with no readback.

#[path = "../benches/common/gpu_suite.rs"]
mod gpu_suite;
#[path = "../benches/common/layers.rs"]
mod layers;
#[path = "../benches/common/lstm_step.rs"]
mod lstm_step;
#[path = "../benches/common/mnist_step.rs"]
mod mnist_step;
#[path = "../benches/common/model_steps.rs"]
mod model_steps;
#[path = "../benches/common/peer_mlp.rs"]
mod peer_mlp;

use clap::Parser;
use std::time::{Duration, Instant};

use mnist_step::{fence, MlpStep, CLASSES, HIDDEN, IN};
use wgnn::nn::{self, Module};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::{Device, Result, Stats, Tensor};

const MATMUL_SIZES: [usize; 4] = [128, 512, 1024, 2048];
const TRAIN_BATCHES: [usize; 2] = [32, 128];
const LSTM_HIDDEN: [usize; 2] = [128, 512];

/// How much timing each cell gets.
#[derive(Clone, Copy)]
struct Budget {
    warmup_runs: usize,
    min_runs: usize,
    max_runs: usize,
    time: Duration,
}

/// What one cell measured.
#[derive(Clone, Copy)]
struct Timing {
    median: Duration,
    runs: usize,
}

impl Timing {
    fn ms(&self) -> f64 {
        self.median.as_secs_f64() * 1e3
    }
}

/// Warms up (at least one untimed run, which compiles the plan; more, up to
/// `warmup_runs`, while warming has taken under a fifth of `time`), then times `run`
/// until both `min_runs` runs and `time` have passed (at most `max_runs`), and
/// returns the median. `run` must itself wait for its work to finish (module doc).
fn measure(budget: Budget, mut run: impl FnMut() -> Result<()>) -> Result<Timing> {
    let warming = Instant::now();
    for i in 0..budget.warmup_runs.max(1) {
        if i > 0 && warming.elapsed() >= budget.time / 5 {
            break;
        }
        run()?;
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < budget.min_runs || (started.elapsed() < budget.time && samples.len() < budget.max_runs) {
        let t = Instant::now();
        run()?;
        samples.push(t.elapsed());
    }
    samples.sort();
    let mid = samples.len() / 2;
    let median = if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2
    };
    Ok(Timing {
        median,
        runs: samples.len(),
    })
}

/// Median time of an `n×n · n×n` matmul on `dev`, each run realized and waited for.
/// `n³` products; with `half`, of f16 operands (rounded once, before timing: the
/// mixed-precision GEMM alone, f32 accumulation).
fn time_matmul(n: usize, dev: &Device, budget: Budget, half: bool) -> Result<Timing> {
    let mut a = Tensor::randn(&[n, n], 1, dev)?;
    let mut b = Tensor::randn(&[n, n], 2, dev)?;
    if half {
        (a, b) = (a.half(), b.half());
        a.realize()?;
        b.realize()?;
    }
    let fence = fence(dev)?;
    measure(budget, || {
        let c = a.matmul(&b);
        c.realize()?; // on the GPU: submitted, not finished
        fence.to_vec()?; // waits for the matmul to finish
        Ok(())
    })
}

/// Matmul flops of one training step (see the module doc).
fn train_flops(batch: usize) -> f64 {
    let f1 = 2.0 * (batch * IN * HIDDEN) as f64;
    let f2 = 2.0 * (batch * HIDDEN * CLASSES) as f64;
    2.0 * f1 + 3.0 * f2
}

fn time_train_step(batch: usize, dev: &Device, budget: Budget) -> Result<Timing> {
    let mut mlp = MlpStep::new(batch, dev)?;
    measure(budget, || mlp.step_and_wait().map(|_| ()))
}

/// The host's share of a GPU step (`step` runs one and waits for it; its model is
/// made, its plan not yet compiled): microseconds per launch that recording and
/// submitting a replayed plan cost (`Stats::record_ns` less `Stats::upload_ns` over
/// `replays` steps' dispatches), split into wgnn's recording and wgpu's finish and
/// submit (`Stats::submit_ns`), launches per step, microseconds per step copying
/// host data in (`upload_ns` per step), and the milliseconds a new plan's first
/// step spends compiling (`Stats::compile_ns`, the plan cache cleared first).
fn host_costs(dev: &Device, replays: usize, step: &mut dyn FnMut() -> Result<()>) -> Result<HostCosts> {
    dev.clear_plan_cache();
    let before = dev.stats();
    step()?;
    let first = dev.stats() - before;
    let before = dev.stats();
    for _ in 0..replays {
        step()?;
    }
    let replay = dev.stats() - before;
    // Per step, not per submit: each step's fence read is a submit of its own.
    let steps = replays.max(1) as f64;
    let per_launch = |ns: u64| ns as f64 / 1e3 / replay.dispatches.max(1) as f64;
    Ok(HostCosts {
        per_launch: per_launch(replay.record_ns - replay.upload_ns),
        wgpu: per_launch(replay.submit_ns),
        launches: replay.dispatches as f64 / steps,
        upload: replay.upload_ns as f64 / 1e3 / steps,
        compile: first.compile_ns as f64 / 1e6,
    })
}

/// What [`host_costs`] measured.
struct HostCosts {
    per_launch: f64,
    /// The part of `per_launch` spent in wgpu's `CommandEncoder::finish` and `Queue::submit`.
    wgpu: f64,
    launches: f64,
    upload: f64,
    compile: f64,
}

impl HostCosts {
    /// The report line for `what`.
    fn line(&self, what: &str) -> String {
        let HostCosts {
            per_launch,
            wgpu,
            launches,
            upload,
            compile,
        } = self;
        format!(
            "host cost, gpu {what}: {per_launch:.2} µs per launch in plan replay ({launches:.0} launches a step \
             recorded, submit: wgnn's recording {:.2}, wgpu's finish and submit {wgpu:.2}), {upload:.1} µs per \
             step uploading host data; a new plan's first step {compile:.1} ms to compile (autotune cache warm)",
            per_launch - wgpu
        )
    }
}

fn time_lstm_step(hidden: usize, dev: &Device, budget: Budget) -> Result<Timing> {
    let mut lstm = lstm_step::LstmStep::new(hidden, dev)?;
    measure(budget, || lstm.step_and_wait().map(|_| ()))
}

fn time_model(which: model_steps::Which, dev: &Device, budget: Budget) -> Result<Timing> {
    let mut step = model_steps::ModelStep::new(which, dev)?;
    measure(budget, || step.step_and_wait())
}

fn time_layer(case: layers::Case, dev: &Device, budget: Budget) -> Result<Timing> {
    let mut step = layers::LayerStep::new(case, dev)?;
    measure(budget, || step.step_and_wait())
}

/// PyTorch's CPU time for the same layer step (`benches/layers_torch.py`), or why it
/// could not run.
fn torch_layer_ms(case: &layers::Case) -> std::result::Result<f64, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/layers_torch.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(case.torch_args())
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ms = text
        .lines()
        .find_map(|l| l.split("\"ms\": ").nth(1)?.split(',').next()?.trim().parse().ok());
    ms.ok_or_else(|| {
        let err = String::from_utf8_lossy(&out.stderr);
        err.lines().last().unwrap_or("no time printed").to_string()
    })
}

/// PyTorch's CPU time for the same LSTM steps (`benches/lstm_torch.py`), by hidden
/// size, or why it could not run.
fn torch_lstm_ms() -> std::result::Result<Vec<(usize, f64)>, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/lstm_torch.py");
    let sizes: Vec<String> = LSTM_HIDDEN.iter().map(|h| h.to_string()).collect();
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(&sizes)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("failed").to_string());
    }
    let field = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(&format!("\"{key}\": "))? + key.len() + 4..];
        rest.split([',', '}']).next()?.trim().parse().ok()
    };
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| Some((field(l, "hidden")? as usize, field(l, "ms")?)))
        .collect())
}

/// One row of the table.
struct Row {
    op: &'static str,
    size: String,
    flops: f64,
    cpu: Timing,
    gpu: Option<Timing>,
}

/// `--json PATH`: the devices, every row of the table (median ms, runs and GFLOP/s
/// per device; `null` where a device is missing) and PyTorch's LSTM step times.
fn write_json(path: &str, cpu: &Device, gpu: Option<&Device>, rows: &[Row], torch: &[(usize, f64)]) -> Result<()> {
    use gpu_suite::{num, text, J};
    let timing = |t: Option<Timing>, flops: f64| match t {
        Some(t) => J::Obj(vec![
            ("ms", num(t.ms())),
            ("runs", num(t.runs as f64)),
            ("gflops", num(gflops(flops, t))),
        ]),
        None => J::Num(f64::NAN),
    };
    let rows = rows
        .iter()
        .map(|r| {
            J::Obj(vec![
                ("op", text(r.op)),
                ("size", text(r.size.clone())),
                ("flops", num(r.flops)),
                ("cpu", timing(Some(r.cpu), r.flops)),
                ("gpu", timing(r.gpu, r.flops)),
            ])
        })
        .collect();
    let torch = torch
        .iter()
        .map(|&(hidden, ms)| J::Obj(vec![("hidden", num(hidden as f64)), ("ms", num(ms))]))
        .collect();
    let json = J::Obj(vec![
        ("cpu", text(cpu.info().to_string())),
        ("gpu", gpu.map_or(J::Num(f64::NAN), |g| text(g.info().to_string()))),
        ("rows", J::Arr(rows)),
        ("torch_lstm_step_cpu", J::Arr(torch)),
    ]);
    std::fs::write(path, format!("{json}\n")).map_err(|source| wgnn::Error::Io {
        path: path.into(),
        source,
    })
}

fn gflops(flops: f64, t: Timing) -> f64 {
    flops / t.median.as_secs_f64() / 1e9
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<10} {:>9} {:>11} {:>11} {:>12} {:>12} {:>8} {:>11}",
        "op", "size", "CPU ms", "GPU ms", "CPU GFLOP/s", "GPU GFLOP/s", "GPU/CPU", "runs c/g"
    );
    println!("{}", "-".repeat(91));
    for r in rows {
        let na = || "n/a".to_string();
        let gpu_ms = r.gpu.map_or_else(na, |g| format!("{:.3}", g.ms()));
        let gpu_gf = r.gpu.map_or_else(na, |g| format!("{:.2}", gflops(r.flops, g)));
        let ratio = r.gpu.map_or_else(na, |g| format!("{:.2}", g.ms() / r.cpu.ms()));
        let runs = format!(
            "{}/{}",
            r.cpu.runs,
            r.gpu.map_or_else(|| "-".to_string(), |g| g.runs.to_string())
        );
        println!(
            "{:<10} {:>9} {:>11.3} {:>11} {:>12.2} {:>12} {:>8} {:>11}",
            r.op,
            r.size,
            r.cpu.ms(),
            gpu_ms,
            gflops(r.flops, r.cpu),
            gpu_gf,
            ratio,
            runs
        );
    }
}

/// Counters of one GPU training step (no readback), then of reading its loss.
fn step_stats(dev: &Device, batch: usize) -> Result<(Stats, Stats)> {
    let mut mlp = MlpStep::new(batch, dev)?;
    mlp.step_and_read_loss()?; // compile and warm both plans
    let before = dev.stats();
    let loss = mlp.step()?;
    let after_step = dev.stats();
    loss.to_vec()?;
    let after_read = dev.stats();
    Ok((after_step - before, after_read - after_step))
}

/// The largest |difference| between the CPU and GPU results of a small matmul
/// and of a first training step's loss (a sanity check that both compute the same).
fn agreement(gpu: &Device) -> Result<(f32, f32)> {
    let cpu = Device::cpu();
    let mm = |dev: &Device| -> Result<Vec<f32>> {
        let a = Tensor::randn(&[128, 128], 1, dev)?;
        let b = Tensor::randn(&[128, 128], 2, dev)?;
        a.matmul(&b).to_vec()
    };
    let (c, g) = (mm(&cpu)?, mm(gpu)?);
    let mm_diff = c.iter().zip(&g).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    let loss_diff =
        (MlpStep::new(32, &cpu)?.step_and_read_loss()? - MlpStep::new(32, gpu)?.step_and_read_loss()?).abs();
    Ok((mm_diff, loss_diff))
}

/// Resident memory of this process in MiB (Linux `/proc/self/statm`, 4 KiB pages;
/// NaN elsewhere).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |pages| pages * 4096.0 / 1048576.0)
}

/// `--soak STEPS`: trains the MNIST MLP for `steps` steps on `dev`, reporting ten
/// times (see the module doc).
fn soak(dev: &Device, steps: usize) -> Result<()> {
    const BATCH: usize = 32;
    println!("soak on {dev}: {steps} steps of the MNIST MLP, batch {BATCH}");
    wgnn::manual_seed(0);
    let model = mnist_step::mlp(dev);
    let mut opt = Adam::new(model.parameters(), AdamConfig::default());
    // 16 batches of random "images", cycled; each step uploads its batch anew.
    let pixels = wgnn::rng::uniform(42, 16 * BATCH * IN, 0.0, 1.0);
    let labels: Vec<u32> = (0..16 * BATCH).map(|i| (i * 7 % CLASSES) as u32).collect();
    let every = (steps / 10).max(1);
    let (mut last, mut warm) = (Instant::now(), None);
    println!(
        "{:>8} {:>9} {:>9} {:>14} {:>9}",
        "step", "steps/s", "loss", "device bytes", "rss MiB"
    );
    for step in 0..steps {
        let b = step % 16;
        let x = Tensor::from_vec(pixels[b * BATCH * IN..(b + 1) * BATCH * IN].to_vec(), &[BATCH, IN], dev)?;
        let y = Tensor::from_labels(&labels[b * BATCH..(b + 1) * BATCH], dev)?;
        let loss = nn::loss::cross_entropy(&model.forward(&x), &y);
        opt.step(&loss.backward()?)?;
        if (step + 1) % every == 0 {
            let loss = loss.item()?; // waits for the device
            let rate = every as f64 / last.elapsed().as_secs_f64();
            let (bytes, rss) = (dev.stats().live_buffer_bytes, rss_mib());
            println!("{:>8} {rate:>9.1} {loss:>9.4} {bytes:>14} {rss:>9.2}", step + 1);
            let (warm_bytes, warm_rss) = *warm.get_or_insert((bytes, rss));
            if step + 1 == every * 10 {
                println!(
                    "after warm-up (step {every} to {}): device bytes {:+}, rss {:+.2} MiB",
                    step + 1,
                    bytes as i64 - warm_bytes as i64,
                    rss - warm_rss
                );
            }
            last = Instant::now();
        }
    }
    println!();
    Ok(())
}

/// `bench --tune`: every workload of the table run twice on the GPU (the first run
/// times the GEMM variants of each new shape class; the choices are saved to the
/// cache file at once, those timed steadily), then the cache's size and file.
fn tune() -> Result<()> {
    let gpu = Device::gpu()?;
    println!("tuning on {}", gpu.info());
    let (before, _) = gpu.autotune_cache();
    let started = Instant::now();
    let run = |what: String, mut step: Box<dyn FnMut() -> Result<()>>| -> Result<()> {
        let t = Instant::now();
        step()?;
        step()?;
        println!("  {what:<24} {:>8.2} s", t.elapsed().as_secs_f64());
        Ok(())
    };
    for batch in TRAIN_BATCHES {
        let mut mlp = MlpStep::new(batch, &gpu)?;
        run(
            format!("mlp b{batch}"),
            Box::new(move || mlp.step_and_wait().map(|_| ())),
        )?;
    }
    for hidden in LSTM_HIDDEN {
        let mut lstm = lstm_step::LstmStep::new(hidden, &gpu)?;
        run(
            format!("lstm h{hidden}"),
            Box::new(move || lstm.step_and_wait().map(|_| ())),
        )?;
    }
    for (name, which) in [
        ("cnn", model_steps::Which::Cnn),
        ("transformer", model_steps::Which::Transformer),
    ] {
        let mut step = model_steps::ModelStep::new(which, &gpu)?;
        run(format!("{name} step"), Box::new(move || step.step_and_wait()))?;
    }
    for n in MATMUL_SIZES {
        let (a, b) = (Tensor::randn(&[n, n], 1, &gpu)?, Tensor::randn(&[n, n], 2, &gpu)?);
        run(
            format!("matmul {n}"),
            Box::new(move || a.matmul(&b).to_vec().map(|_| ())),
        )?;
    }
    let (after, path) = gpu.autotune_cache();
    let place = path.map_or("memory only (WGNN_CACHE_DIR=off or no cache folder)".into(), |p| {
        p.display().to_string()
    });
    println!(
        "autotune cache: {after} choices ({} new) in {place}; {:.1} s \
         (a choice timed while the machine's speed changed is not saved: run --tune again on a quiet machine)",
        after - before,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// GPU vs CPU: matmul, an MNIST MLP's training step and an LSTM step timed on both devices, then
/// one epoch by a hand-written loop and by `fit` (or one of the other modes below).
#[derive(Parser)]
#[command(name = "bench")]
struct Args {
    /// Small budgets: at least 1 timed run per cell, until about 0.1 s (also for --gpu-suite).
    #[arg(long)]
    quick: bool,
    /// Also time the LSTM step in PyTorch on the CPU (benches/lstm_torch.py).
    #[arg(long)]
    torch: bool,
    /// Only the rows of one op.
    #[arg(long, value_name = "OP", value_parser = ["matmul", "matmul_f16", "train_step", "lstm_step", "attention", "conv2d", "cnn_step", "transformer_step"])]
    only: Option<String>,
    /// Also write the table, the devices and PyTorch's LSTM times as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<String>,
    #[command(flatten)]
    gpu_suite: gpu_suite::Options,
    /// Instead: the peers' MLP protocol of benches/peers.sh; DEVICE is cpu or gpu, then
    /// BATCH (32), EPOCHS (3), SUBSET (0: all) and IDX_DIR (/usr/share/datasets/fashion-mnist).
    #[arg(long, num_args = 1..=5, value_names = ["DEVICE", "BATCH", "EPOCHS", "SUBSET", "IDX_DIR"])]
    peer_mlp: Option<Vec<String>>,
    /// With --peer-mlp: train with `Model::fit` instead of the PyTorch-style loop.
    #[arg(long)]
    fit: bool,
    /// Instead: fill the GPU autotune's cache ahead of time (the GEMMs of the MLP at
    /// batch 32 and 128, the LSTM steps, the CNN and transformer steps, the square
    /// products of the table) and print how many choices it holds and where.
    #[arg(long)]
    tune: bool,
    /// Instead: train the MNIST MLP STEPS steps on each device, printing speed and memory (a leak check).
    #[arg(long, value_name = "STEPS", num_args = 0..=1, default_missing_value = "10000")]
    soak: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let quick = args.quick;
    if args.gpu_suite.gpu_suite {
        return gpu_suite::main(&args.gpu_suite, quick);
    }
    if let Some(values) = &args.peer_mlp {
        return peer_mlp::main(&peer_mlp::Args::from_values(values), args.fit);
    }
    if args.tune {
        return tune();
    }
    if let Some(steps) = args.soak {
        soak(&Device::cpu(), steps)?;
        match Device::gpu() {
            Ok(gpu) => soak(&gpu, steps)?,
            Err(e) => println!("no GPU soak: {e}"),
        }
        return Ok(());
    }
    let only = args.only;
    let wanted = |op: &str| only.as_deref().is_none_or(|o| o == op);
    let budget = if quick {
        Budget {
            warmup_runs: 1,
            min_runs: 1,
            max_runs: 20,
            time: Duration::from_millis(100),
        }
    } else {
        Budget {
            warmup_runs: 2,
            min_runs: 3,
            max_runs: 1000,
            time: Duration::from_secs(1),
        }
    };
    let started = Instant::now();
    let cpu = Device::cpu();
    let gpu = match Device::gpu() {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("no GPU ({e}); GPU columns will show n/a");
            None
        }
    };

    println!(
        "wgnn bench{}: median of >= {} waited-for runs per cell, ~{:?} each",
        if quick { " --quick" } else { "" },
        budget.min_runs,
        budget.time
    );
    println!("CPU: {}", cpu.info());
    match &gpu {
        Some(g) => println!("GPU: {}", g.info()),
        None => println!("GPU: n/a (no adapter)"),
    }
    if let Some(g) = &gpu {
        let (mm_diff, loss_diff) = agreement(g)?;
        println!("check: matmul 128 max |cpu-gpu| = {mm_diff:.2e}; first train_step loss |cpu-gpu| = {loss_diff:.2e}");
    }
    println!();

    let mut rows = Vec::new();
    let mut torch_layers = Vec::new();
    let gpu_time = |what: &str, f: &dyn Fn(&Device) -> Result<Timing>| -> Result<Option<Timing>> {
        match &gpu {
            Some(g) => {
                eprintln!("  {what} on gpu ...");
                f(g).map(Some)
            }
            None => Ok(None),
        }
    };
    for (op, half) in [("matmul", false), ("matmul_f16", true)] {
        for n in MATMUL_SIZES.into_iter().filter(|_| wanted(op)) {
            eprintln!("  {op} {n} on cpu ...");
            let c = time_matmul(n, &cpu, budget, half)?;
            let g = gpu_time(&format!("{op} {n}"), &|d| time_matmul(n, d, budget, half))?;
            rows.push(Row {
                op,
                size: format!("{n}"),
                flops: 2.0 * (n as f64).powi(3),
                cpu: c,
                gpu: g,
            });
        }
    }
    let mut host_lines = Vec::new();
    for batch in TRAIN_BATCHES.into_iter().filter(|_| wanted("train_step")) {
        eprintln!("  train_step b{batch} on cpu ...");
        let c = time_train_step(batch, &cpu, budget)?;
        let g = gpu_time(&format!("train_step b{batch}"), &|d| time_train_step(batch, d, budget))?;
        if let (Some(dev), Some(_)) = (&gpu, g) {
            let mut mlp = MlpStep::new(batch, dev)?;
            let costs = host_costs(dev, 20, &mut || mlp.step_and_wait().map(|_| ()))?;
            host_lines.push(costs.line(&format!("train_step b{batch}")));
        }
        rows.push(Row {
            op: "train_step",
            size: format!("mlp b{batch}"),
            flops: train_flops(batch),
            cpu: c,
            gpu: g,
        });
    }
    for hidden in LSTM_HIDDEN.into_iter().filter(|_| wanted("lstm_step")) {
        eprintln!("  lstm_step h{hidden} on cpu ...");
        let c = time_lstm_step(hidden, &cpu, budget)?;
        let g = gpu_time(&format!("lstm_step h{hidden}"), &|d| time_lstm_step(hidden, d, budget))?;
        if let (Some(dev), Some(_), 128) = (&gpu, g, hidden) {
            // Hundreds of launches a step: the per-launch cost apart from each
            // submit's fixed one.
            let mut lstm = lstm_step::LstmStep::new(hidden, dev)?;
            let costs = host_costs(dev, 3, &mut || lstm.step_and_wait().map(|_| ()))?;
            host_lines.push(costs.line(&format!("lstm_step h{hidden}")));
        }
        rows.push(Row {
            op: "lstm_step",
            size: format!("h{hidden}"),
            flops: lstm_step::flops(hidden),
            cpu: c,
            gpu: g,
        });
    }
    for case in layers::ATTENTION
        .into_iter()
        .filter(|_| wanted("attention"))
        .chain(layers::CONV2D.into_iter().filter(|_| wanted("conv2d")))
    {
        let name = case.name();
        eprintln!("  {name} on cpu ...");
        let c = time_layer(case, &cpu, budget)?;
        let g = gpu_time(&name, &|d| time_layer(case, d, budget))?;
        let op = if matches!(case, layers::Case::Conv2d { .. }) {
            "conv2d"
        } else {
            "attention"
        };
        rows.push(Row {
            op,
            size: name,
            flops: case.flops(),
            cpu: c,
            gpu: g,
        });
        if args.torch {
            match torch_layer_ms(&case) {
                Ok(ms) => torch_layers.push((case, ms)),
                Err(e) => println!("  PyTorch comparison for {} skipped: {e}", case.name()),
            }
        }
    }
    for (op, which, size) in [
        ("cnn_step", model_steps::Which::Cnn, "cnn b64"),
        ("transformer_step", model_steps::Which::Transformer, "4x d64 t64 b32"),
    ] {
        if !wanted(op) {
            continue;
        }
        eprintln!("  {op} on cpu ...");
        let c = time_model(which, &cpu, budget)?;
        let g = gpu_time(op, &|d| time_model(which, d, budget))?;
        rows.push(Row {
            op,
            size: size.to_string(),
            flops: 0.0,
            cpu: c,
            gpu: g,
        });
    }
    print_table(&rows);
    if let Some(r) = rows.iter().find(|r| r.op == "cnn_step") {
        let epoch = |t: Timing| t.ms() * model_steps::CNN_STEPS_PER_EPOCH as f64 / 1e3;
        println!(
            "  cnn epoch ({} steps of 64, the committed subset's 4000 images): CPU {:.1} s{}",
            model_steps::CNN_STEPS_PER_EPOCH,
            epoch(r.cpu),
            r.gpu.map_or(String::new(), |g| format!(", GPU {:.1} s", epoch(g)))
        );
    }
    for (case, ms) in &torch_layers {
        if let Some(r) = rows.iter().find(|r| r.size == case.name()) {
            println!(
                "  {}: PyTorch CPU {ms:.3} ms, wgnn CPU {:.3} ms (wgnn/PyTorch {:.2})",
                case.name(),
                r.cpu.ms(),
                r.cpu.ms() / ms
            );
        }
    }
    println!("(train_step = mnist-mlp 784-128-10, relu, cross-entropy, Adam; GFLOP/s counts matmul flops only)");
    for line in &host_lines {
        println!("{line}");
    }
    println!("(lstm_step = LSTM 64 -> h, batch 32, 50 steps, Linear head on the last output, MSE, Adam)");
    let mut torch_rows = Vec::new();
    if args.torch && wanted("lstm_step") {
        match torch_lstm_ms() {
            Ok(torch) => {
                torch_rows = torch.clone();
                for (hidden, ms) in torch {
                    let ours = rows
                        .iter()
                        .find(|r| r.op == "lstm_step" && r.size == format!("h{hidden}"));
                    if let Some(r) = ours {
                        println!(
                            "  lstm_step h{hidden}: PyTorch CPU {ms:.3} ms, wgnn CPU {:.3} ms (wgnn/PyTorch {:.2})",
                            r.cpu.ms(),
                            r.cpu.ms() / ms
                        );
                    }
                }
            }
            Err(e) => println!("  PyTorch comparison skipped: {e}"),
        }
    }
    if let Some(path) = &args.json {
        write_json(path, &cpu, gpu.as_ref(), &rows, &torch_rows)?;
        println!("wrote {path}");
    }

    if only.is_some() {
        eprintln!("bench took {:.1} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    if let Some(g) = &gpu {
        let (step, read) = step_stats(g, 128)?;
        let plans = |s: &Stats| s.plan_cache_hits + s.plan_cache_misses;
        println!(
            "gpu counters, one train_step b128: {} plan, {} submit, {} dispatches, {} B uploaded, {} B downloaded",
            plans(&step),
            step.submits,
            step.dispatches,
            step.bytes_uploaded,
            step.bytes_downloaded
        );
        println!(
            "  then loss.to_vec(): {} plan, {} submits, {} dispatches, {} B uploaded, {} B downloaded",
            plans(&read),
            read.submits,
            read.dispatches,
            read.bytes_uploaded,
            read.bytes_downloaded
        );
        let mut mlp = MlpStep::new(128, g)?;
        let with_loss = measure(budget, || mlp.step_and_read_loss().map(|_| ()))?;
        let row = rows
            .iter()
            .find(|r| r.op == "train_step" && r.size == "mlp b128")
            .and_then(|r| r.gpu);
        println!(
            "  gpu train_step b128 ending in loss.to_vec() instead of the fence: {:.3} ms (fence: {})",
            with_loss.ms(),
            row.map_or_else(|| "n/a".into(), |t| format!("{:.3} ms", t.ms()))
        );
    }
    println!();
    println!(
        "one epoch, MNIST subset (4000 rows, b32, Adam), median of {} epochs:",
        if quick { 1 } else { 3 }
    );
    for dev in std::iter::once(cpu.clone()).chain(gpu.clone()) {
        let (hand, fit) = epoch_loop_vs_fit(&dev, if quick { 1 } else { 3 })?;
        println!(
            "  {:<4} hand loop {hand:.3} s, fit {fit:.3} s (fit/loop {:.2})",
            format!("{:?}", dev.kind()).to_lowercase(),
            fit / hand
        );
    }
    eprintln!("bench took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Seconds per epoch (median) of the PyTorch-style loop (forward, backward, step;
/// the epoch's mean loss read once) and of `Model::fit` (which also keeps the
/// running loss and confusion counts on the device), same model and batches.
fn epoch_loop_vs_fit(dev: &Device, epochs: usize) -> Result<(f64, f64)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist_5k.csv.gz");
    let (train, _) = wgnn::data::load_mnist_csv_gz(path)?.shuffle_split(0, 4000);
    let net = || mnist_step::mlp(dev);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let model = net();
    let mut opt = Adam::new(model.parameters(), AdamConfig::default());
    let mut loader = wgnn::data::DataLoader::from_dataset(&train, 32)?.shuffle(1);
    let mut hand = Vec::new();
    for _ in 0..=epochs {
        let t = Instant::now();
        let mut total = Tensor::zeros(&[], dev);
        for batch in loader.epoch(dev) {
            let (x, y) = batch?;
            let loss = nn::loss::cross_entropy(&model.forward(&x), &y);
            opt.step(&loss.backward()?)?;
            total = &total + &loss;
        }
        total.item()?;
        hand.push(t.elapsed().as_secs_f64());
    }
    let net = net();
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let mut model = net.compile(opt, wgnn::train::Loss::CrossEntropy, &[wgnn::metrics::Metric::Accuracy])?;
    let (x, y) = train.tensors(dev)?;
    let mut fit = Vec::new();
    for _ in 0..=epochs {
        let t = Instant::now();
        let config = wgnn::train::FitConfig {
            epochs: 1,
            verbose: false,
            layer_stats: false,
            seed: Some(1),
            ..Default::default()
        };
        model.fit(&x, &y, config)?;
        fit.push(t.elapsed().as_secs_f64());
    }
    // The first epoch of each compiles its plans: left out.
    Ok((median(hand[1..].to_vec()), median(fit[1..].to_vec())))
}
