//! Half precision (`Tensor::half`, `wgnn::amp`): the casts round as the `half` crate
//! does, bit for bit on each device; a mixed-precision GEMM is exactly the f32 GEMM
//! of the rounded inputs (forward, and backward with the incoming gradient rounded)
//! for every tile, transpose and ragged edge; without `SHADER_F16` autocast runs in
//! f32 with the same values; f16 data given to an f32 op is named.

use crate::common::{gpu, max_rel_diff, private};
use wgnn::amp::{self, Mixed};
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::{DType, Device, GpuOptions, Tensor};

crate::device_tests!(
    casts_round_to_nearest_even_exactly_as_the_half_crate,
    a_mixed_precision_product_is_the_f32_product_of_the_rounded_inputs,
    backward_products_take_the_incoming_gradient_rounded_to_f16,
    a_mixed_model_keeps_its_names_and_computes_what_autocast_does,
    an_unrolled_lstm_under_autocast_joins_its_weight_gradients,
);

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn casts_round_to_nearest_even_exactly_as_the_half_crate(dev: &Device) {
    // Ties (1 + 1/2048 rounds down, 1 + 3/2048 up), the largest half and the first
    // value that overflows, subnormal halves and values below them, infinities,
    // NaN, and bit patterns spread over every exponent and both signs.
    let mut v: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        65504.0,
        65519.99,
        65520.0,
        -1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
        5.96e-8,
        2.98e-8,
        2.99e-8,
        6.1e-5,
        3.0e-5,
        -4.2e-6,
        1e-10,
    ];
    v.extend((0..4001u32).map(|i| f32::from_bits(i * 1_070_000 + 12_345)));
    assert!(v.len().is_multiple_of(2));
    v.push(0.1); // an odd length: the last word half empty
    let x = Tensor::from_vec(v.clone(), &[v.len()], dev).unwrap();
    let h = x.half();
    assert_eq!(h.dtype(), DType::F16);
    let (read, widened) = (h.to_vec().unwrap(), h.float().to_vec().unwrap());
    for (i, &x) in v.iter().enumerate() {
        let want = half::f16::from_f32(x).to_f32();
        if x.is_nan() {
            assert!(read[i].is_nan() && widened[i].is_nan(), "NaN stays NaN");
        } else {
            assert_eq!(read[i].to_bits(), want.to_bits(), "{x:e} read back");
            assert_eq!(widened[i].to_bits(), want.to_bits(), "{x:e} widened");
        }
    }
    // A reshaped f16 tensor reads the same values.
    let m = Tensor::from_vec(v[..40].to_vec(), &[5, 8], dev).unwrap().half();
    assert_eq!(bits(&m.reshape(&[8, 5]).to_vec().unwrap()), bits(&read[..40]));
}

/// Shapes with ragged edges in every dimension, vec4 and scalar loads, a split K.
const SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (3, 5, 127),
    (129, 127, 5),
    (37, 70, 13),
    (128, 256, 64),
    (32, 784, 128),
    (20, 1030, 12),
];
const TRANSPOSES: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

fn operands(dev: &Device, (m, k, n): (usize, usize, usize), (ta, tb): (bool, bool), seed: u64) -> (Tensor, Tensor) {
    let a = Tensor::randn(&if ta { [k, m] } else { [m, k] }, seed, dev).unwrap();
    let b = Tensor::randn(&if tb { [n, k] } else { [k, n] }, seed + 1, dev).unwrap();
    (a, b)
}

fn a_mixed_precision_product_is_the_f32_product_of_the_rounded_inputs(dev: &Device) {
    // Products of two halves are exact in f32 and both GEMMs sum in order of k, so
    // the bits agree; on the GPU for every tile the autotune may pick (all give the
    // same bits, as in f32), on lavapipe the flat tiles too.
    let dev = private(dev);
    let mut tiles = vec![None];
    if dev.kind() == wgnn::DeviceKind::Gpu {
        tiles.extend(
            [
                "64x64k16",
                "128x128k8",
                "32x32k16",
                "db128x64k8",
                "db32x64k16",
                "wt128x64k8",
            ]
            .map(Some),
        );
        if dev.info().device_type == "Cpu" {
            tiles.extend(["flat3x32", "flat6x32", "flat4x64"].map(Some));
        }
        if crate::shuffles_offered(&dev) {
            tiles.extend(["shuf8x32", "shuf48x32"].map(Some));
        }
    }
    for (s, shape) in SHAPES.into_iter().enumerate() {
        for t in TRANSPOSES {
            let (a, b) = operands(&dev, shape, t, 10 * s as u64);
            let reference = a.half().float().matmul_t(&b.half().float(), t.0, t.1).to_vec().unwrap();
            for tile in &tiles {
                dev.clear_plan_cache();
                dev.debug_kernel_variant(*tile);
                let mixed = {
                    let _amp = amp::autocast(&dev);
                    a.matmul_t(&b, t.0, t.1)
                };
                let got = mixed.to_vec().unwrap();
                assert!(
                    bits(&got) == bits(&reference),
                    "{shape:?} {t:?} tile {tile:?}: max difference {}",
                    max_rel_diff(&got, &reference)
                );
                // Explicit f16 operands are the same product.
                let explicit = a.half().matmul_t(&b.half(), t.0, t.1).to_vec().unwrap();
                assert!(
                    bits(&explicit) == bits(&reference),
                    "{shape:?} {t:?}: explicit f16 operands"
                );
            }
        }
    }
    dev.debug_kernel_variant(None);
    // The CPU and the GPU agree as they do in f32.
    if let (wgnn::DeviceKind::Gpu, Some(_)) = (dev.kind(), gpu()) {
        for (s, shape) in SHAPES.into_iter().enumerate() {
            let (a, b) = operands(&dev, shape, (false, true), s as u64);
            let (ac, bc) = (a.to(&Device::cpu()).unwrap(), b.to(&Device::cpu()).unwrap());
            let g = {
                let _amp = amp::autocast(&dev);
                a.linear(&b, None).to_vec().unwrap()
            };
            let c = {
                let _amp = amp::autocast(&Device::cpu());
                ac.linear(&bc, None).to_vec().unwrap()
            };
            // The CPU's sgemm sums in another order, as in f32.
            let d = max_rel_diff(&g, &c);
            assert!(d <= 1e-4, "{shape:?}: GPU and CPU differ by {d}");
        }
    }
}

fn backward_products_take_the_incoming_gradient_rounded_to_f16(dev: &Device) {
    // y = x·Wᵀ + b under autocast, loss Σ y ⊙ r: the gradients are the f32 products
    // of the rounded r with the rounded operands — the f16 activations the forward
    // pass kept — and the bias gradient r's column sum in f32.
    for (m, k, n) in [(3, 5, 7), (37, 70, 13), (32, 784, 128)] {
        let leaf = |shape: &[usize], seed| Tensor::randn(shape, seed, dev).unwrap().requires_grad().unwrap();
        let (x, w, b) = (leaf(&[m, k], 1), leaf(&[n, k], 2), leaf(&[n], 3));
        // Small gradients, where f16's rounding is visible.
        let r = Tensor::randn(&[m, n], 4, dev).unwrap() * 1e-3;
        let y = {
            let _amp = amp::autocast(dev);
            x.linear(&w, Some(&b))
        };
        let grads = (&y * &r).sum().backward().unwrap();
        let r16 = r.half().float();
        let (x16, w16) = (x.detach().half().float(), w.detach().half().float());
        let want_x = r16.matmul(&w16).to_vec().unwrap();
        let want_w = r16.matmul_t(&x16, true, false).to_vec().unwrap();
        let want_b = r.sum_axis(0, false).to_vec().unwrap();
        let got = |t: &Tensor| grads.get(t).unwrap().to_vec().unwrap();
        assert!(bits(&got(&x)) == bits(&want_x), "{m}x{k}x{n}: dx");
        assert!(bits(&got(&w)) == bits(&want_w), "{m}x{k}x{n}: dW");
        assert!(max_rel_diff(&got(&b), &want_b) <= 1e-6, "{m}x{k}x{n}: db");
        // Against the f32 gradients: f16's relative precision (2^-11 per input).
        let y32 = x.linear(&w, Some(&b));
        let g32 = (&y32 * &r).sum().backward().unwrap();
        let scale = |v: &[f32]| v.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        let f32_dw = g32.get(&w).unwrap().to_vec().unwrap();
        let err = got(&w)
            .iter()
            .zip(&f32_dw)
            .fold(0.0f32, |a, (p, q)| a.max((p - q).abs()));
        assert!(
            err <= 4e-3 * scale(&f32_dw) + 1e-7,
            "{m}x{k}x{n}: dW off the f32 one by {err}"
        );
    }
}

fn a_mixed_model_keeps_its_names_and_computes_what_autocast_does(dev: &Device) {
    let _serial = crate::common::serial();
    wgnn::manual_seed(3);
    let inner = Sequential::new()
        .add(Linear::new(6, 9, dev))
        .add(nn::Relu)
        .add(Linear::new(9, 2, dev));
    let names: Vec<String> = inner.named_parameters().into_iter().map(|(n, _)| n).collect();
    let x = Tensor::randn(&[5, 6], 7, dev).unwrap();
    let plain = inner.forward(&x).to_vec().unwrap();
    let under = {
        let _amp = amp::autocast(dev);
        inner.forward(&x).to_vec().unwrap()
    };
    let mixed = Mixed(inner);
    let got_names: Vec<String> = mixed.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(got_names, names);
    let y = mixed.forward(&x);
    assert_eq!(y.dtype(), DType::F32);
    let y = y.to_vec().unwrap();
    assert!(bits(&y) == bits(&under), "Mixed computes what autocast does");
    assert!(y != plain, "and that is not the f32 forward");
    assert!(max_rel_diff(&y, &plain) < 1e-2);
    // The guard ends with its scope: the next forward is f32 again.
    assert!(bits(&mixed.0.forward(&x).to_vec().unwrap()) == bits(&plain));
}

/// Without `SHADER_F16` (`GpuOptions::disable_f16`) the guard is inactive and the
/// same code computes the f32 product; explicit f16 operands are widened there and
/// give the values they give elsewhere. On lavapipe (which has the feature) the f16
/// path must be the one taken by default.
#[test]
fn without_half_precision_shaders_autocast_runs_in_f32() {
    let Some(shared) = gpu() else { return };
    if shared.info().name.contains("llvmpipe") {
        assert!(
            shared.info().shader_f16,
            "lavapipe has SHADER_F16: the f16 kernels must be tested"
        );
    }
    let options = GpuOptions {
        disable_f16: true,
        ..Default::default()
    };
    let dev = Device::gpu_with(&options).unwrap();
    assert!(!dev.info().shader_f16 && !amp::f16_supported(&dev));
    assert!(amp::f16_supported(&Device::cpu()));
    let (a, b) = operands(&dev, (37, 70, 13), (false, false), 5);
    let plain = a.matmul(&b).to_vec().unwrap();
    let guard = amp::autocast(&dev);
    assert!(!guard.is_active());
    let under = a.matmul(&b).to_vec().unwrap();
    drop(guard);
    assert!(bits(&under) == bits(&plain), "autocast without f16 is the f32 product");
    let widened = a.half().matmul(&b.half()).to_vec().unwrap();
    let (ac, bc) = (a.to(&shared).unwrap(), b.to(&shared).unwrap());
    let with_f16 = ac.half().matmul(&bc.half()).to_vec().unwrap();
    assert!(
        bits(&widened) == bits(&with_f16),
        "f16 operands give the same values either way"
    );
}

#[test]
#[should_panic(expected = "got an f16 tensor of shape [2, 3]")]
fn an_elementwise_op_on_f16_data_panics_naming_it() {
    let x = Tensor::zeros(&[2, 3], &Device::cpu()).half();
    let _ = x.relu();
}

/// An unrolled LSTM under autocast: the gradient of a weight used at every step is
/// one joined GEMM over the steps (the f16 operands joined before their cast) with
/// `FastPath::JoinedGradients` on, one product per step added in order with it off —
/// fewer launches joined, the same gradients up to f32 summation order, and both
/// within f16's precision of the f32 gradients.
fn an_unrolled_lstm_under_autocast_joins_its_weight_gradients(dev: &Device) {
    use wgnn::fast_path::{self, FastPath};
    let _serial = crate::common::serial();
    let dev = private(dev);
    wgnn::manual_seed(2);
    let lstm = nn::Lstm::new(5, 8, nn::RnnConfig::default(), &dev);
    let x = Tensor::randn(&[6, 3, 5], 4, &dev).unwrap();
    let r = Tensor::randn(&[6, 3, 8], 9, &dev).unwrap();
    let run = |joined: bool, mixed: bool| {
        let _forced = fast_path::force(FastPath::JoinedGradients, joined);
        let before = dev.stats().dispatches;
        let out = {
            let _amp = mixed.then(|| amp::autocast(&dev));
            lstm.forward(&x)
        };
        let grads = (&out * &r).sum().backward().unwrap();
        let values: Vec<Vec<f32>> = lstm
            .parameters()
            .iter()
            .map(|p| grads.get(p).unwrap().to_vec().unwrap())
            .collect();
        (values, dev.stats().dispatches - before)
    };
    let ((joined, joined_launches), (apart, apart_launches)) = (run(true, true), run(false, true));
    let (f32_grads, _) = run(true, false);
    assert!(
        joined_launches < apart_launches,
        "{dev}: joined {joined_launches} launches, apart {apart_launches}"
    );
    for (k, ((j, a), f)) in joined.iter().zip(&apart).zip(&f32_grads).enumerate() {
        let d = max_rel_diff(j, a);
        assert!(d <= 1e-5, "{dev}: parameter {k}: joined and apart differ by {d}");
        let d = max_rel_diff(j, f);
        assert!(
            d <= 1e-2,
            "{dev}: parameter {k}: mixed precision off the f32 gradient by {d}"
        );
    }
}
