//! Criterion benchmarks, CPU reference backend vs wgpu GPU:
//!
//! * `matmul/{cpu,gpu}/{128,512,1024,2048}`: square f32 `n×n · n×n`, throughput in
//!   flops (`2n³` "elements");
//! * `train_step/{cpu,gpu}/{32,128}`: one step (forward, backward, Adam) of the
//!   MNIST MLP 784 → 128 relu → 10 on a fixed random batch, throughput in samples;
//! * `lstm_step/{cpu,gpu}/{128,512}`: one step of an LSTM (input 64, hidden 128 or
//!   512, batch 32, 50 time steps, Linear head, MSE, Adam), throughput in sequences;
//!   hidden 512 on a software adapter only with `WGNN_BENCH_ALL=1`.
//!
//! `cargo bench --bench gpu_vs_cpu [-- FILTER]`. With no GPU adapter the GPU
//! benchmarks are skipped (with a note on stderr).
//!
//! Honest GPU timing: `realize` and `Optimizer::step` submit work and return
//! without waiting, so every timed iteration ends in a 4-byte readback of a
//! one-element resident "fence" tensor. A readback submits a copy and blocks until
//! the queue has drained, and the queue runs in order, so the iteration's work has
//! finished when it returns. A training step's plan also computes its loss
//! (`Optimizer::step` realizes `Gradients::loss` before the update); the loss is
//! not read, so train_step iterations end in the same fence read as matmul ones.
//! The CPU backend computes synchronously; its iterations end the same way. Plans
//! are compiled during criterion's warm-up and reused.
//!
//! To keep the whole run to a few minutes on a small machine, sizes of 512 and up
//! take 10 flat samples over a short measurement time (criterion warns that it
//! could not finish in that time; the samples are still taken). On a software
//! adapter (lavapipe/llvmpipe, adapter type "Cpu"), where one 2048 GPU matmul
//! takes tens of seconds, `matmul/gpu/2048` is skipped unless
//! `WGNN_BENCH_ALL=1`; the CPU runs all sizes.

#[path = "common/lstm_step.rs"]
mod lstm_step;
#[path = "common/mnist_step.rs"]
mod mnist_step;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use mnist_step::MlpStep;
use wgnn::{Device, Tensor};

const MATMUL_SIZES: [usize; 4] = [128, 512, 1024, 2048];
const TRAIN_BATCHES: [usize; 2] = [32, 128];

/// The devices to compare: the CPU always, the GPU when an adapter exists.
fn devices() -> Vec<(&'static str, Device)> {
    let mut out = vec![("cpu", Device::cpu())];
    match Device::gpu() {
        Ok(gpu) => {
            eprintln!("gpu_vs_cpu: GPU is {}", gpu.info());
            out.push(("gpu", gpu));
        }
        Err(e) => eprintln!("gpu_vs_cpu: no GPU ({e}); skipping the GPU benchmarks"),
    }
    out
}

/// Whether the GPU is a software rasterizer (lavapipe, SwiftShader, WARP).
fn software_gpu(dev: &Device) -> bool {
    dev.info().device_type == "Cpu"
}

/// A one-element tensor in a resident device buffer: reading it back waits for
/// everything submitted before the read (see the module doc).
fn fence(dev: &Device) -> Tensor {
    mnist_step::fence(dev).expect("fence tensor")
}

fn matmul(c: &mut Criterion) {
    let devices = devices();
    let all = std::env::var_os("WGNN_BENCH_ALL").is_some_and(|v| v == "1");
    let mut group = c.benchmark_group("matmul");
    for n in MATMUL_SIZES {
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        if n >= 512 {
            group.sample_size(10).sampling_mode(SamplingMode::Flat);
            group
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(2));
        } else {
            group.sample_size(30).sampling_mode(SamplingMode::Auto);
            group
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(2));
        }
        for (name, dev) in &devices {
            if *name == "gpu" && n >= 2048 && software_gpu(dev) && !all {
                eprintln!(
                    "gpu_vs_cpu: skipping matmul/gpu/{n} on a software adapter ({}); set WGNN_BENCH_ALL=1 to run it",
                    dev.info().name
                );
                continue;
            }
            let a = Tensor::randn(&[n, n], 1, dev).expect("a");
            let b = Tensor::randn(&[n, n], 2, dev).expect("b");
            let fence = fence(dev);
            group.bench_with_input(BenchmarkId::new(*name, n), &n, |bench, _| {
                bench.iter(|| {
                    let c = a.matmul(&b);
                    c.realize().expect("matmul"); // GPU: submitted, not finished
                    black_box(fence.to_vec().expect("fence")) // waits for the matmul
                })
            });
        }
    }
    group.finish();
}

fn train_step(c: &mut Criterion) {
    let devices = devices();
    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for batch in TRAIN_BATCHES {
        group.throughput(Throughput::Elements(batch as u64));
        for (name, dev) in &devices {
            let mut mlp = MlpStep::new(batch, dev).expect("train_step setup");
            group.bench_with_input(BenchmarkId::new(*name, batch), &batch, |bench, _| {
                bench.iter(|| black_box(mlp.step_and_wait().expect("train_step")))
            });
        }
    }
    group.finish();
}

fn lstm(c: &mut Criterion) {
    let devices = devices();
    let all = std::env::var("WGNN_BENCH_ALL").is_ok_and(|v| v == "1");
    let mut group = c.benchmark_group("lstm_step");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for hidden in [128, 512] {
        group.throughput(Throughput::Elements(lstm_step::BATCH as u64));
        for (name, dev) in &devices {
            if hidden > 128 && software_gpu(dev) && !all {
                eprintln!("lstm_step/{name}/{hidden}: skipped on a software adapter (WGNN_BENCH_ALL=1 runs it)");
                continue;
            }
            let mut step = lstm_step::LstmStep::new(hidden, dev).expect("lstm_step setup");
            group.bench_with_input(BenchmarkId::new(*name, hidden), &hidden, |bench, _| {
                bench.iter(|| black_box(step.step_and_wait().expect("lstm_step")))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, matmul, train_step, lstm);
criterion_main!(benches);
