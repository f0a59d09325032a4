//! `wgnn::privacy::DpSgd` on each device: the clipped, summed gradients of Opacus 1.6
//! (`tests/fixtures/make_dp_sgd_fixture.py`), plain SGD bit for bit without clipping
//! or noise, each example's clipped gradient within `C`, noise of the documented
//! size from a seeded stream, Poisson sampling, and the models and settings it refuses.

use crate::common::{fixture, read_tensor, serial};
use wgnn::nn::{self, loss, Linear, Module};
use wgnn::optim::{Optimizer, Sgd, SgdConfig};
use wgnn::privacy::{poisson_batch, DpConfig, DpSgd, DpTape};
use wgnn::{Device, Error, Gradients, Tensor};

crate::device_tests!(
    dp_sgd_gradients_are_opacus_clipped_sums,
    dp_sgd_without_clipping_or_noise_is_plain_sgd_bit_for_bit,
    each_examples_clipped_gradient_has_norm_at_most_c,
    dp_sgd_noise_has_standard_deviation_sigma_c_over_the_batch,
);

fn config(c: f32, sigma: f32, batch: usize) -> DpConfig {
    DpConfig {
        max_grad_norm: c,
        noise_multiplier: sigma,
        sample_rate: 0.01,
        expected_batch_size: batch,
        seed: 11,
    }
}

/// A two-layer MLP as its two `Linear`s (run through the tape).
struct Mlp(Linear, Linear);

impl Mlp {
    fn new(sizes: [usize; 3], dev: &Device) -> Mlp {
        Mlp(
            Linear::new(sizes[0], sizes[1], dev),
            Linear::new(sizes[1], sizes[2], dev),
        )
    }
    fn params(&self) -> Vec<Tensor> {
        let (a, b) = (&self.0, &self.1);
        vec![
            a.weight.clone(),
            a.bias.clone().unwrap(),
            b.weight.clone(),
            b.bias.clone().unwrap(),
        ]
    }
    fn losses(&self, tape: &DpTape, x: &Tensor, y: &Tensor) -> Tensor {
        let h = tape.linear(&self.0, x).relu();
        loss::cross_entropy_per_row(&tape.linear(&self.1, &h), y)
    }
    fn flat(&self, grads: &Gradients) -> Vec<Vec<f32>> {
        self.params()
            .iter()
            .map(|p| grads.get(p).expect("a gradient").to_vec().unwrap())
            .collect()
    }
}

fn norm(parts: &[Vec<f32>]) -> f64 {
    parts
        .iter()
        .flatten()
        .map(|&v| f64::from(v).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn dp_sgd_gradients_are_opacus_clipped_sums(dev: &Device) {
    let get = |name: &str| read_tensor(&fixture("dp_sgd.safetensors"), name).1;
    let mlp = Mlp::new([5, 7, 3], dev);
    for (p, name) in mlp.params().iter().zip(["0.weight", "0.bias", "2.weight", "2.bias"]) {
        p.assign(&get(name)).unwrap();
    }
    let x = Tensor::from_vec(get("x"), &[6, 5], dev).unwrap();
    let labels: Vec<u32> = get("y").iter().map(|&v| v as u32).collect();
    let y = Tensor::from_labels(&labels, dev).unwrap();
    let norms = get("norms");
    for c in [0.5f32, 1.5] {
        let clipped = norms.iter().filter(|&&n| n > c).count();
        assert!(
            c < 1.0 && clipped == 6 || c > 1.0 && (1..6).contains(&clipped),
            "C {c}: {norms:?}"
        );
        let mut dp = DpSgd::new(config(c, 0.0, 6)).unwrap();
        let grads = dp.gradients(|tape| mlp.losses(tape, &x, &y)).unwrap();
        for (got, name) in mlp
            .flat(&grads)
            .iter()
            .zip(["0.weight", "0.bias", "2.weight", "2.bias"])
        {
            let want = get(&format!("C{c}.{name}"));
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-5, "{dev}: C {c}, {name}: {worst:e} from Opacus'");
        }
        assert_eq!(dp.steps(), 1);
    }
}

fn dp_sgd_without_clipping_or_noise_is_plain_sgd_bit_for_bit(dev: &Device) {
    let _serial = serial();
    let x = Tensor::randn(&[32, 20], 5, dev).unwrap();
    let labels: Vec<u32> = (0..32).map(|i| (i * 7 % 4) as u32).collect();
    let y = Tensor::from_labels(&labels, dev).unwrap();
    let run = |private: bool| {
        wgnn::manual_seed(4);
        let mlp = Mlp::new([20, 16, 4], dev);
        let mut sgd = Sgd::new(
            mlp.params(),
            SgdConfig {
                lr: 0.2,
                ..Default::default()
            },
        );
        let mut dp = DpSgd::new(config(f32::INFINITY, 0.0, 32)).unwrap();
        for _ in 0..3 {
            let grads = if private {
                dp.gradients(|tape| mlp.losses(tape, &x, &y)).unwrap()
            } else {
                let h = x.linear(&mlp.0.weight, mlp.0.bias.as_ref()).relu();
                loss::cross_entropy(&h.linear(&mlp.1.weight, mlp.1.bias.as_ref()), &y)
                    .backward()
                    .unwrap()
            };
            sgd.step(&grads).unwrap();
        }
        mlp.params()
            .iter()
            .flat_map(|p| p.to_vec().unwrap())
            .map(f32::to_bits)
            .collect::<Vec<u32>>()
    };
    assert_eq!(
        run(true),
        run(false),
        "{dev}: DP-SGD with C = ∞, σ = 0 is not plain SGD"
    );
}

fn each_examples_clipped_gradient_has_norm_at_most_c(dev: &Device) {
    let _serial = serial();
    wgnn::manual_seed(8);
    let mlp = Mlp::new([6, 10, 3], dev);
    let n = 8;
    let xs: Vec<f32> = (0..n * 6).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.6).collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
    let c = 0.3f32;
    // Each example alone: its clipped gradient is its own gradient scaled to at most C.
    let mut sum: Vec<Vec<f32>> = Vec::new();
    for i in 0..n {
        let x = Tensor::from_vec(xs[i * 6..i * 6 + 6].to_vec(), &[1, 6], dev).unwrap();
        let y = Tensor::from_labels(&labels[i..i + 1], dev).unwrap();
        let own = mlp.flat(
            &DpSgd::new(config(f32::INFINITY, 0.0, 1))
                .unwrap()
                .gradients(|t| mlp.losses(t, &x, &y))
                .unwrap(),
        );
        let clipped = mlp.flat(
            &DpSgd::new(config(c, 0.0, 1))
                .unwrap()
                .gradients(|t| mlp.losses(t, &x, &y))
                .unwrap(),
        );
        let (own_norm, clipped_norm) = (norm(&own), norm(&clipped));
        assert!(
            own_norm > f64::from(c),
            "{dev}: example {i} needs no clipping ({own_norm})"
        );
        assert!(
            clipped_norm <= f64::from(c) * (1.0 + 1e-5),
            "{dev}: example {i}: ‖clipped‖ = {clipped_norm} > C"
        );
        assert!(
            (clipped_norm - f64::from(c)).abs() < 1e-4,
            "{dev}: example {i}: ‖clipped‖ = {clipped_norm}"
        );
        let scale = clipped_norm / own_norm;
        for (a, b) in own.iter().flatten().zip(clipped.iter().flatten()) {
            assert!(
                (f64::from(*a) * scale - f64::from(*b)).abs() < 1e-5,
                "{dev}: example {i} is not a scaled copy"
            );
        }
        if sum.is_empty() {
            sum = clipped.iter().map(|v| vec![0.0; v.len()]).collect();
        }
        for (s, v) in sum.iter_mut().zip(&clipped) {
            for (s, v) in s.iter_mut().zip(v) {
                *s += v / n as f32;
            }
        }
    }
    // The whole batch at once: the mean of those clipped gradients, from two products
    // per layer, without any per-example gradient formed.
    let x = Tensor::from_vec(xs, &[n, 6], dev).unwrap();
    let y = Tensor::from_labels(&labels, dev).unwrap();
    let batch = mlp.flat(
        &DpSgd::new(config(c, 0.0, n))
            .unwrap()
            .gradients(|t| mlp.losses(t, &x, &y))
            .unwrap(),
    );
    let worst = batch
        .iter()
        .flatten()
        .zip(sum.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 1e-6,
        "{dev}: the batch's clipped mean is {worst:e} from the examples'"
    );
}

fn dp_sgd_noise_has_standard_deviation_sigma_c_over_the_batch(dev: &Device) {
    let _serial = serial();
    wgnn::manual_seed(2);
    let mlp = Mlp::new([64, 128, 10], dev);
    let x = Tensor::randn(&[16, 64], 3, dev).unwrap();
    let labels: Vec<u32> = (0..16).map(|i| i % 10).collect();
    let y = Tensor::from_labels(&labels, dev).unwrap();
    let (c, sigma, batch) = (0.5f32, 2.0f32, 16);
    let clean = mlp.flat(
        &DpSgd::new(config(c, 0.0, batch))
            .unwrap()
            .gradients(|t| mlp.losses(t, &x, &y))
            .unwrap(),
    );
    let mut dp = DpSgd::new(config(c, sigma, batch)).unwrap();
    let first = mlp.flat(&dp.gradients(|t| mlp.losses(t, &x, &y)).unwrap());
    let second = mlp.flat(&dp.gradients(|t| mlp.losses(t, &x, &y)).unwrap());
    let again = mlp.flat(
        &DpSgd::new(config(c, sigma, batch))
            .unwrap()
            .gradients(|t| mlp.losses(t, &x, &y))
            .unwrap(),
    );
    assert_eq!(first, again, "{dev}: the same seed and step give other noise");
    assert_ne!(first, second, "{dev}: two steps drew the same noise");
    let noise: Vec<f64> = first
        .iter()
        .flatten()
        .zip(clean.iter().flatten())
        .map(|(a, b)| f64::from(a - b))
        .collect();
    let mean = noise.iter().sum::<f64>() / noise.len() as f64;
    let std = (noise.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / noise.len() as f64).sqrt();
    let want = f64::from(sigma * c) / batch as f64;
    assert!(
        (std / want - 1.0).abs() < 0.03,
        "{dev}: noise std {std}, σ·C/B = {want}"
    );
    assert!(mean.abs() < 0.03 * want, "{dev}: noise mean {mean}");
    assert_eq!(dp.steps(), 2);
    let eps = dp.epsilon(1e-5).unwrap();
    assert_eq!(eps, wgnn::privacy::rdp_epsilon(2.0, 0.01, 2, 1e-5), "{dev}");
}

#[test]
fn poisson_batches_are_seeded_and_have_the_expected_size() {
    let (n, q) = (10_000, 0.05);
    let a = poisson_batch(n, q, 7, 3).unwrap();
    assert_eq!(a, poisson_batch(n, q, 7, 3).unwrap());
    assert_ne!(a, poisson_batch(n, q, 7, 4).unwrap());
    assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|&i| i < n));
    // Binomial(10000, 0.05): mean 500, standard deviation 21.8.
    let sizes: Vec<usize> = (0..50).map(|t| poisson_batch(n, q, 7, t).unwrap().len()).collect();
    let mean = sizes.iter().sum::<usize>() as f64 / 50.0;
    assert!((mean - 500.0).abs() < 15.0, "mean batch {mean}: {sizes:?}");
    assert!(sizes.iter().any(|&s| s != sizes[0]), "every batch has the same size");
    assert_eq!(poisson_batch(5, 1.0, 0, 0).unwrap(), vec![0, 1, 2, 3, 4]);
    for q in [0.0, -0.1, 1.5, f64::NAN] {
        assert!(poisson_batch(n, q, 0, 0).is_err(), "q {q}");
    }
}

#[test]
fn dp_sgd_refuses_settings_and_models_it_cannot_make_private() {
    let dev = Device::cpu();
    let bad = [
        ("max_grad_norm", config(0.0, 1.0, 4)),
        ("max_grad_norm", config(f32::NAN, 1.0, 4)),
        ("noise_multiplier", config(1.0, -1.0, 4)),
        ("noise_multiplier", config(f32::INFINITY, 1.0, 4)),
        (
            "sample_rate",
            DpConfig {
                sample_rate: 0.0,
                ..config(1.0, 1.0, 4)
            },
        ),
        (
            "sample_rate",
            DpConfig {
                sample_rate: 1.5,
                ..config(1.0, 1.0, 4)
            },
        ),
        ("expected_batch_size", config(1.0, 1.0, 0)),
    ];
    for (setting, c) in bad {
        match DpSgd::new(c) {
            Err(Error::InvalidSetting { setting: s, .. }) => assert_eq!(s, setting, "{c:?}"),
            other => panic!("{c:?}: {:?}", other.map(|_| ())),
        }
    }
    let mlp = Mlp::new([3, 4, 2], &dev);
    let x = Tensor::randn(&[5, 3], 1, &dev).unwrap();
    let y = Tensor::from_labels(&[0, 1, 0, 1, 1], &dev).unwrap();
    let mut dp = DpSgd::new(config(1.0, 1.0, 5)).unwrap();
    let message = |r: wgnn::Result<Gradients>| r.err().expect("an error").to_string();
    // A Linear not run through the tape: its gradients would escape clipping.
    let m = message(dp.gradients(|tape| {
        let h = x.linear(&mlp.0.weight, mlp.0.bias.as_ref()).relu();
        loss::cross_entropy_per_row(&tape.linear(&mlp.1, &h), &y)
    }));
    assert!(m.contains("[4, 3]") && m.contains("not covered"), "{m}");
    // The mean loss instead of one loss per example.
    let m = message(dp.gradients(|tape| loss::cross_entropy(&tape.linear(&mlp.1, &tape.linear(&mlp.0, &x)), &y)));
    assert!(m.contains("one loss per example, [5]"), "{m}");
    // A layer used twice in one step.
    let square = Linear::new(3, 3, &dev);
    let m = message(dp.gradients(|tape| {
        let h = tape.linear(&square, &tape.linear(&square, &x));
        loss::cross_entropy_per_row(&tape.linear(&mlp.1, &tape.linear(&mlp.0, &h)), &y)
    }));
    assert!(m.contains("used twice"), "{m}");
    // No layer recorded; a 3-D input.
    let m = message(dp.gradients(|_| loss::cross_entropy_per_row(&mlp.1.forward(&mlp.0.forward(&x)), &y)));
    assert!(m.contains("recorded no Linear"), "{m}");
    let x3 = Tensor::randn(&[5, 1, 3], 1, &dev).unwrap();
    let m = message(dp.gradients(|tape| tape.linear(&mlp.0, &x3).sum_axis(2, false).sum_axis(1, false)));
    assert!(m.contains("[batch, features]"), "{m}");
    assert_eq!(dp.steps(), 0, "a refused step counted");
    // Any other trainable layer, e.g. a convolution in front: named, not clipped silently.
    let conv = nn::Conv2d::new(1, 1, 1, Default::default(), &dev);
    let img = Tensor::randn(&[5, 1, 1, 3], 4, &dev).unwrap();
    let m = message(dp.gradients(|tape| {
        let h = conv.forward(&img).reshape(&[5, 3]);
        loss::cross_entropy_per_row(&tape.linear(&mlp.1, &tape.linear(&mlp.0, &h)), &y)
    }));
    assert!(m.contains("not covered"), "{m}");
}
