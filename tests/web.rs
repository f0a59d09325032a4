//! wgnn in a browser tab: the crate compiled to wasm32, its GPU backend on the
//! browser's WebGPU checked against its CPU backend compiled to wasm in the same page
//! (every op family, forward and backward, with the native parity tests' tolerances),
//! and a short training run with `fit_async`. Run in headless Chromium through
//! chromedriver (`webdriver.json` passes `--enable-unsafe-webgpu`):
//!
//! ```text
//! WASM_BINDGEN_TEST_TIMEOUT=600 CHROMEDRIVER=/usr/bin/chromedriver \
//!     CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!     cargo test --target wasm32-unknown-unknown --test web
//! ```
//!
//! (The elementwise table compiles some 200 kernels on Chromium's software adapter,
//! SwiftShader: past the runner's default 20 s per test.) A browser without WebGPU
//! fails every GPU test (it does not skip them).
#![cfg(target_arch = "wasm32")]

mod common;

use common::cases::*;
use common::{check_variant, joined, max_rel_diff};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use wgnn::metrics::Metric;
use wgnn::nn::{self, loss, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use wgnn::train::{FitConfig, Loss};
use wgnn::{Device, DeviceKind, Error, Tensor};

wasm_bindgen_test_configure!(run_in_browser);

/// The browser's WebGPU device; a browser without one fails the test.
async fn gpu() -> Device {
    Device::gpu_async()
        .await
        .unwrap_or_else(|e| panic!("the browser offers no WebGPU adapter: {e}"))
}

async fn read(t: &Tensor) -> Vec<f32> {
    t.to_vec_async().await.unwrap()
}

/// Output values and the gradient of the readout with respect to every input, as
/// tests/ops.rs computes them, read back with awaits.
async fn evaluate(c: &Case, dev: &Device, seed: u64) -> (Vec<f32>, Vec<Vec<f32>>) {
    let xs = inputs(c, dev, seed);
    let out = (c.f)(&xs);
    let values = read(&out).await;
    let grads = readout(&out, seed).backward().unwrap();
    let mut g = Vec::new();
    for x in &xs {
        g.push(match grads.get(x) {
            Some(grad) => read(grad).await,
            None => vec![0.0; x.numel()],
        });
    }
    (values, g)
}

async fn assert_parity(cases: &[Case], tol: f32) {
    let (gpu, cpu) = (gpu().await, Device::cpu());
    for (i, c) in cases.iter().enumerate() {
        let seed = 100 + i as u64;
        let (out_c, grads_c) = evaluate(c, &cpu, seed).await;
        let (out_g, grads_g) = evaluate(c, &gpu, seed).await;
        let d = max_rel_diff(&out_g, &out_c);
        assert!(d <= tol, "{} {:?}: forward differs by {d}", c.name, c.shapes);
        for (j, (gg, gc)) in grads_g.iter().zip(&grads_c).enumerate() {
            let d = max_rel_diff(gg, gc);
            assert!(
                d <= tol,
                "{} {:?}: gradient of input {j} differs by {d}",
                c.name,
                c.shapes
            );
        }
    }
}

#[wasm_bindgen_test]
async fn the_gpu_device_is_the_browsers_webgpu() {
    let info = gpu().await.info();
    assert_eq!(info.kind, DeviceKind::Gpu);
    assert_eq!(info.backend, "BrowserWebGpu", "{info}");
    assert!(info.max_storage_buffer_binding_size > 0, "{info}");
}

#[wasm_bindgen_test]
async fn a_blocking_read_of_a_gpu_value_names_the_async_form_and_a_cpu_read_works() {
    let x = Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3], &gpu().await).unwrap();
    match x.relu().to_vec() {
        Err(Error::WouldBlock { what, instead }) => {
            assert_eq!((what, instead), ("Tensor::to_vec", "Tensor::to_vec_async"));
        }
        other => panic!("expected Error::WouldBlock, got {other:?}"),
    }
    assert_eq!(read(&x.relu()).await, [1.0, 0.0, 3.0]);
    let y = Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3], &Device::cpu()).unwrap();
    assert_eq!(y.relu().to_vec().unwrap(), [1.0, 0.0, 3.0]);
}

#[wasm_bindgen_test]
async fn elementwise_reduce_and_shape_ops_match_the_cpu() {
    assert_parity(&elementwise_cases(), ELEMENTWISE_TOL).await;
}

#[wasm_bindgen_test]
async fn slicing_joining_and_gathering_match_the_cpu() {
    assert_parity(&sequence_op_cases(), SEQUENCE_OP_TOL).await;
}

#[wasm_bindgen_test]
async fn recurrent_cells_match_the_cpu() {
    assert_parity(&recurrent_cases(), RECURRENT_TOL).await;
}

#[wasm_bindgen_test]
async fn matmuls_match_the_cpu_including_odd_tile_edges() {
    assert_parity(&matmul_cases(), MATMUL_TOL).await;
}

/// Every GEMM tile forced one at a time on the browser's adapter — the workgroup
/// tiles, the two-stage tiles written for GPUs and the flat tiles for CPU adapters —
/// gives the bits of the first tile and the CPU's values, forward and backward, in
/// every transpose and with a bias and ReLU epilogue, on ragged, vec4, split-K and
/// tiny shapes. Natively they only ever ran on lavapipe (naga's SPIR-V, llvmpipe's
/// 8-lane lock-step workgroups); here Tint compiles them and SwiftShader runs them:
/// a missing barrier or a race on workgroup memory would give other bits. (The
/// browser autotunes nothing, so it otherwise runs only each kernel's default; that
/// a forced name runs is checked natively, where profile mode can see it.)
#[wasm_bindgen_test]
async fn every_gemm_tile_gives_the_same_bits_and_the_cpus_values() {
    let gpu = Device::gpu_with_async(&wgnn::GpuOptions::default()).await.unwrap();
    let cpu = Device::cpu();
    async fn run(dev: &Device, shape: (usize, usize, usize), ta: bool, tb: bool, linear: bool) -> Vec<Vec<f32>> {
        let (out, inputs) = gemm_case(dev, shape, ta, tb, linear);
        let grads = readout(&out, 4).backward().unwrap();
        let mut values = vec![read(&out).await];
        for x in &inputs {
            values.push(read(grads.get(x).unwrap()).await);
        }
        values
    }
    let tiles: Vec<&str> = GEMM_TILES.iter().chain(&FLAT_GEMM_TILES).copied().collect();
    // Each run's backward takes two more products in other transposes: these six
    // cover every transpose on ragged edges, the vec4 path, a split K and a tiny
    // product (SwiftShader compiles each tile for each shape, ~0.5 s a pipeline:
    // ~2 minutes in all on 2 cores).
    for (shape, ta, tb, linear) in [
        ((37, 70, 13), false, false, false),
        ((37, 70, 13), true, true, false),
        ((37, 70, 13), false, true, true),
        ((32, 96, 64), false, true, true),
        ((20, 1030, 12), false, false, false),
        ((4, 8, 4), true, false, false),
    ] {
        let what = format!("{shape:?} ta {ta} tb {tb} linear {linear}");
        let expected = run(&cpu, shape, ta, tb, linear).await;
        let mut first = None;
        for &tile in &tiles {
            gpu.clear_plan_cache();
            gpu.debug_kernel_variant(Some(tile));
            let got = run(&gpu, shape, ta, tb, linear).await;
            check_variant(&what, tile, &got, &expected, MATMUL_TOL, &mut first);
        }
    }
}

#[wasm_bindgen_test]
async fn pooling_matches_the_cpu() {
    assert_parity(&pool_cases(), POOL_TOL).await;
}

#[wasm_bindgen_test]
async fn convolutions_match_the_cpu() {
    assert_parity(&conv_cases(), CONV_TOL).await;
}

/// Every convolution tile forced one at a time on the browser's adapter (Tint,
/// SwiftShader) gives the bits of the first and the CPU's values in all three
/// passes, on ragged tiles, groups, a 5×5 stride and a transposed convolution —
/// as `every_gemm_tile_gives_the_same_bits_and_the_cpus_values` does for products.
#[wasm_bindgen_test]
async fn every_conv_tile_gives_the_same_bits_and_the_cpus_values() {
    let gpu = Device::gpu_with_async(&wgnn::GpuOptions::default()).await.unwrap();
    let picked = [
        "conv2d ragged tiles",
        "conv2d groups 3",
        "conv2d 5x5 stride 2 pad 1",
        "conv_transpose2d stride 2",
    ];
    let cases: Vec<Case> = conv_cases().into_iter().filter(|c| picked.contains(&c.name)).collect();
    assert_eq!(cases.len(), picked.len(), "a picked case is missing from conv_cases");
    for (i, c) in cases.iter().enumerate() {
        let seed = 300 + i as u64;
        let expected = joined(evaluate(c, &Device::cpu(), seed).await);
        let mut first = None;
        for tile in CONV_TILES {
            gpu.clear_plan_cache();
            gpu.debug_kernel_variant(Some(tile));
            let got = joined(evaluate(c, &gpu, seed).await);
            check_variant(c.name, tile, &got, &expected, CONV_TOL, &mut first);
        }
    }
}

#[wasm_bindgen_test]
async fn normalizations_match_the_cpu() {
    assert_parity(&norm_cases(), NORM_TOL).await;
}

#[wasm_bindgen_test]
async fn attention_matches_the_cpu() {
    assert_parity(&attention_cases(), ATTENTION_TOL).await;
}

/// The smaller models in the browser: an int8 layer (`wgnn::quantize`, its weights
/// read back awaited) on WebGPU gives the CPU's outputs (the integers are exact, the
/// dequantization to 1e-6), `half()` rounds as the CPU does bit for bit, and a
/// product under autocast gives the CPU's mixed-precision values where the browser's
/// adapter has `shader-f16`, else (the f32 fallback) the CPU's f32 values.
#[wasm_bindgen_test]
async fn int8_layers_f16_casts_and_autocast_match_the_cpu() {
    use wgnn::quantize::QuantizedLinear;
    let gpu = gpu().await;
    let f16 = wgnn::amp::f16_supported(&gpu);
    let mut results = Vec::new();
    for dev in [&Device::cpu(), &gpu] {
        let layer = Linear {
            weight: Tensor::randn(&[13, 37], 1, dev).unwrap(),
            bias: Some(Tensor::randn(&[13], 2, dev).unwrap()),
        };
        let x = Tensor::randn(&[9, 37], 3, dev).unwrap();
        let q = QuantizedLinear::new_async(&layer, 3.0 / 127.0).await.unwrap();
        let mixed = {
            let _amp = (f16 || dev.kind() == DeviceKind::Gpu).then(|| wgnn::amp::autocast(dev));
            x.linear(&layer.weight, layer.bias.as_ref())
        };
        results.push([read(&q.forward(&x)).await, read(&x.half()).await, read(&mixed).await]);
    }
    let [cpu, web] = [&results[0], &results[1]];
    let d = max_rel_diff(&web[0], &cpu[0]);
    assert!(d <= 1e-6, "int8 layer: WebGPU differs from the CPU by {d}");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&web[1]), bits(&cpu[1]), "f16 casts");
    let d = max_rel_diff(&web[2], &cpu[2]);
    assert!(
        d <= 1e-5,
        "autocast product (shader-f16: {f16}): WebGPU differs from the CPU by {d}"
    );
}

#[wasm_bindgen_test]
async fn cross_entropy_matches_the_cpu() {
    let gpu = gpu().await;
    for (rows, classes) in [(1, 1), (7, 3), (33, 10), (129, 7), (1000, 10)] {
        let mut results = Vec::new();
        for dev in [&Device::cpu(), &gpu] {
            let logits = Tensor::randn(&[rows, classes], 5, dev)
                .unwrap()
                .requires_grad()
                .unwrap();
            let labels: Vec<u32> = (0..rows as u32).map(|r| (r * 7 + 3) % classes as u32).collect();
            let l = loss::cross_entropy(&logits, &Tensor::from_labels(&labels, dev).unwrap());
            let g = l.backward().unwrap();
            results.push((read(&l).await, read(g.get(&logits).unwrap()).await));
        }
        let ((lc, gc), (lg, gg)) = (&results[0], &results[1]);
        assert!(
            max_rel_diff(lg, lc) < CROSS_ENTROPY_TOL && max_rel_diff(gg, gc) < CROSS_ENTROPY_TOL,
            "cross_entropy [{rows}, {classes}]"
        );
    }
}

#[wasm_bindgen_test]
async fn dropout_drops_the_same_elements_as_the_cpu_at_the_expected_rate() {
    let n = 20_011;
    let gpu = gpu().await;
    for p in [0.1f32, 0.5, 0.9] {
        let reference = Tensor::ones(&[n], &Device::cpu()).dropout(p, 2024).to_vec().unwrap();
        let kept = reference.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        assert!((kept - (1.0 - p as f64)).abs() < 0.015, "p = {p}: kept {kept}");
        let x = Tensor::from_vec(vec![1.0; n], &[n], &gpu)
            .unwrap()
            .requires_grad()
            .unwrap();
        let y = x.dropout(p, 2024);
        assert_eq!(read(&y).await, reference, "p = {p}: mask differs from the CPU's");
        let g = y.sum().backward().unwrap();
        assert_eq!(read(g.get(&x).unwrap()).await, reference, "p = {p}: gradient mask");
    }
}

/// The parameters of a 5-3 linear layer after three steps of `optimizer` on a
/// fixed regression batch, on `dev`.
async fn after_three_steps(dev: &Device, optimizer: fn(Vec<Tensor>) -> Box<dyn Optimizer>) -> Vec<Vec<f32>> {
    let layer = {
        let _guard = common::serial();
        wgnn::manual_seed(7);
        Linear::new(5, 3, dev)
    };
    let x = Tensor::randn(&[4, 5], 1, dev).unwrap();
    let y = Tensor::randn(&[4, 3], 2, dev).unwrap();
    let mut opt = optimizer(layer.parameters());
    for _ in 0..3 {
        let l = loss::mse(&layer.forward(&x), &y);
        opt.step(&l.backward().unwrap()).unwrap();
    }
    let mut values = Vec::new();
    for p in layer.parameters() {
        values.push(read(&p).await);
    }
    values
}

#[wasm_bindgen_test]
async fn adam_and_sgd_with_nesterov_momentum_update_parameters_as_on_the_cpu() {
    let gpu = gpu().await;
    let adam: fn(Vec<Tensor>) -> Box<dyn Optimizer> = |p| {
        let config = AdamConfig {
            lr: 0.05,
            weight_decay: 0.01,
            ..Default::default()
        };
        Box::new(Adam::new(p, config))
    };
    let sgd: fn(Vec<Tensor>) -> Box<dyn Optimizer> = |p| {
        let config = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            ..Default::default()
        };
        Box::new(Sgd::new(p, config))
    };
    for (name, optimizer) in [("adam", adam), ("sgd", sgd)] {
        let (cpu, gpu) = (
            after_three_steps(&Device::cpu(), optimizer).await,
            after_three_steps(&gpu, optimizer).await,
        );
        let start = after_three_steps(&Device::cpu(), |p| {
            Box::new(Sgd::new(
                p,
                SgdConfig {
                    lr: 0.0,
                    ..Default::default()
                },
            ))
        })
        .await;
        for (i, ((g, c), s)) in gpu.iter().zip(&cpu).zip(&start).enumerate() {
            assert_ne!(c, s, "{name}: parameter {i} did not move");
            let d = max_rel_diff(g, c);
            assert!(d <= MATMUL_TOL, "{name}: parameter {i} differs from the CPU's by {d}");
        }
    }
}

/// A 2-8-1 tanh MLP fit to XOR for `epochs` full-batch epochs with `fit_async`: the
/// loss per epoch and the final accuracy.
async fn fit_xor(dev: &Device, epochs: usize) -> (Vec<f64>, f64) {
    let net = {
        let _guard = common::serial();
        wgnn::manual_seed(0);
        Sequential::new()
            .add(Linear::new(2, 8, dev))
            .add(nn::Tanh)
            .add(Linear::new(8, 1, dev))
            .add(nn::Sigmoid)
    };
    let opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: 0.05,
            ..Default::default()
        },
    );
    let mut model = net.compile(opt, Loss::BinaryCrossEntropy, &[Metric::Accuracy]).unwrap();
    let x = Tensor::from_vec(vec![0., 0., 0., 1., 1., 0., 1., 1.], &[4, 2], dev).unwrap();
    let y = Tensor::from_vec(vec![0., 1., 1., 0.], &[4, 1], dev).unwrap();
    let config = FitConfig {
        epochs,
        batch_size: 4,
        shuffle: false,
        ..Default::default()
    };
    let history = model.fit_async(&x, &y, config).await.unwrap();
    let accuracy = *history.history["accuracy"].last().unwrap();
    (history.history["loss"].clone(), accuracy)
}

#[wasm_bindgen_test]
async fn an_mlp_learns_xor_on_webgpu_with_fit_async_as_on_the_cpu() {
    let (gpu_loss, gpu_accuracy) = fit_xor(&gpu().await, 200).await;
    let (cpu_loss, _) = fit_xor(&Device::cpu(), 200).await;
    let last = *gpu_loss.last().unwrap();
    assert!(last < 0.05, "XOR loss after 200 epochs on WebGPU: {last}");
    assert_eq!(gpu_accuracy, 1.0);
    assert!(
        gpu_loss[0] > 0.5,
        "the first epoch's loss {} is already low",
        gpu_loss[0]
    );
    let d = gpu_loss
        .iter()
        .zip(&cpu_loss)
        .map(|(g, c)| (g - c).abs())
        .fold(0.0, f64::max);
    assert!(d < 1e-3, "the loss curves of WebGPU and the CPU differ by {d}");
}
