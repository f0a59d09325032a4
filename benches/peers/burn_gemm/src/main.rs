//! Burn's wgpu matmul on square products, timed as wgnn's `bench --only matmul`
//! times its own: a warm-up product (Burn autotunes its kernels then), then products
//! each followed by a one-element readback, at least 3 and for at least 1 s; prints
//! `gemm N: MEDIAN_MS ms, GFLOP/s` per size.
//!
//!     burn_gemm [SIZES...]        (default 512 1024 2048; lavapipe: DeviceKind::Cpu)

use std::time::Instant;

use burn::prelude::*;

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().expect("a size")).collect();
    let sizes = if sizes.is_empty() { vec![512, 1024, 2048] } else { sizes };
    // llvmpipe/lavapipe reports itself as a CPU-type Vulkan adapter.
    let device = Device::wgpu(DeviceKind::Cpu);
    println!("burn 0.22.1 wgpu device={device:?}");
    for n in sizes {
        let values = |seed: usize| -> Vec<f32> { (0..n * n).map(|i| ((i * 7919 + seed) % 1000) as f32 / 1000.0 - 0.5).collect() };
        let a = Tensor::<2>::from_data(TensorData::new(values(1), [n, n]), &device);
        let b = Tensor::<2>::from_data(TensorData::new(values(2), [n, n]), &device);
        let product = || -> f32 { a.clone().matmul(b.clone()).slice([0..1, 0..1]).into_scalar::<f32>() };
        let warm = Instant::now();
        let _ = product();
        let warm = warm.elapsed().as_secs_f64();
        let mut times = Vec::new();
        let start = Instant::now();
        while times.len() < 3 || (start.elapsed().as_secs_f64() < 1.0 && times.len() < 1000) {
            let t = Instant::now();
            let _ = product();
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let median = times[times.len() / 2];
        println!(
            "gemm {n}: {:.3} ms, {:.2} GFLOP/s ({} runs; first product with autotune {:.2} s)",
            median * 1e3,
            2.0 * (n * n * n) as f64 / median / 1e9,
            times.len(),
            warm
        );
    }
}
