//! Smaller models (`wgnn::prune`, `nn::loss::distillation`) on each device: pruned
//! weights stay exactly zero through training with every optimizer, per-tensor and
//! global magnitude pruning, the gradual schedule, structured pruning that shrinks the
//! layers and the saved file without changing what dead units computed, a 90 %
//! pruned MNIST MLP fine-tuned to within 1 % of the dense one, PyTorch's
//! distillation loss and gradient, the int8 GEMM's integers (exact on every device)
//! and error bound, an int8 MNIST MLP within 1 % of f32 saved and loaded, mixed
//! precision (`wgnn::amp`) training the MNIST MLP and an LSTM language model to the
//! f32 accuracy and bits per character, and the settings refused.

use crate::common::{fixture, read_tensor, serial};
use wgnn::nn::{self, loss, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, AdamW, GradScaler, GradScalerConfig, Optimizer, Sgd, SgdConfig};
use wgnn::prune::{self, GradualSchedule, Pruning, Scope};
use wgnn::quantize::{activation_scale, Calibration, HalfLinear, QuantizedLinear, QuantizedSequential};
use wgnn::{Device, Error, Tensor};

crate::device_tests!(
    pruned_weights_stay_exactly_zero_through_training_with_every_optimizer,
    distillation_is_pytorchs_loss_and_gradient,
    int8_gemm_gives_the_host_integers_exactly_and_stays_within_the_error_bound,
    loss_scaling_skips_an_overflowing_step_backs_off_and_grows_again,
    half_precision_weights_give_the_f32_product_of_the_rounded_weights,
    mixed_precision_trains_the_mnist_mlp_to_the_f32_accuracy,
    mixed_precision_trains_an_lstm_language_model_to_the_f32_bpc,
    fit_in_mixed_precision_follows_the_f32_run,
    fit_distills_from_a_teacher_on_the_same_device,
    int8_recurrent_gate_products_stay_close_to_f32,
    int8_convolutions_follow_f32_with_padding_stride_and_dilation,
    loss_scaled_mixed_precision_steps_reuse_their_plans,
);

fn mlp(dev: &Device, hidden: usize) -> Sequential {
    Sequential::new()
        .add(Linear::new(6, hidden, dev))
        .add(nn::Relu)
        .add(Linear::new(hidden, 3, dev))
}

fn zeros_of(p: &Tensor) -> Vec<usize> {
    let v = p.to_vec().unwrap();
    (0..v.len()).filter(|&i| v[i] == 0.0).collect()
}

fn pruned_weights_stay_exactly_zero_through_training_with_every_optimizer(dev: &Device) {
    let _serial = serial();
    let x = Tensor::randn(&[16, 6], 1, dev).unwrap();
    let labels: Vec<u32> = (0..16).map(|i| i % 3).collect();
    let y = Tensor::from_labels(&labels, dev).unwrap();
    let sgd = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 1e-2,
        nesterov: true,
        ..Default::default()
    };
    let adam = AdamConfig {
        lr: 1e-2,
        weight_decay: 1e-2,
        ..Default::default()
    };
    for kind in ["SGD", "Adam", "AdamW"] {
        for zero_state in [true, false] {
            wgnn::manual_seed(3);
            let model = mlp(dev, 10);
            let params = model.parameters();
            let mut opt: Box<dyn Optimizer> = match kind {
                "SGD" => Box::new(Sgd::new(params, sgd)),
                "Adam" => Box::new(Adam::new(params, adam)),
                _ => Box::new(AdamW::new(params, adam)),
            };
            let step = |opt: &mut Box<dyn Optimizer>, pruning: Option<&Pruning>| {
                let grads = loss::cross_entropy(&model.forward(&x), &y).backward().unwrap();
                let grads = match pruning {
                    Some(p) => p.mask(&grads),
                    None => grads,
                };
                opt.step(&grads).unwrap();
            };
            // Train dense first: the optimizer's state is not zero when pruning starts.
            for _ in 0..5 {
                step(&mut opt, None);
            }
            let weights: Vec<Tensor> = prune::prunable(&model).into_iter().map(|(_, p)| p).collect();
            let mut pruning = Pruning::magnitude(&weights, 0.7, Scope::PerTensor).unwrap();
            if zero_state {
                pruning.zero_optimizer_state(opt.as_mut()).unwrap();
            }
            let pruned: Vec<Vec<usize>> = weights.iter().map(zeros_of).collect();
            assert_eq!(pruned[0].len(), 42, "{dev}: 70 % of 60");
            assert_eq!(pruned[1].len(), 21, "{dev}: 70 % of 30");
            for _ in 0..10 {
                step(&mut opt, Some(&pruning));
            }
            // Raise the sparsity mid-training (the gradual schedule's move).
            pruning
                .grow(0.9, Scope::PerTensor, zero_state.then_some(opt.as_mut()))
                .unwrap();
            let grown: Vec<Vec<usize>> = weights.iter().map(zeros_of).collect();
            for (a, b) in pruned.iter().zip(&grown) {
                assert!(a.iter().all(|i| b.contains(i)), "{dev}: a pruned weight came back");
            }
            for _ in 0..10 {
                step(&mut opt, Some(&pruning));
            }
            let after: Vec<Vec<usize>> = weights.iter().map(zeros_of).collect();
            if zero_state {
                for (want, got) in grown.iter().zip(&after) {
                    assert!(
                        want.iter().all(|i| got.contains(i)),
                        "{dev} {kind}: a pruned weight moved"
                    );
                }
                assert_eq!((after[0].len(), after[1].len()), (54, 27), "{dev} {kind}");
            } else {
                // Without zeroing the state, the moments left from before pruning move
                // the pruned weights: why `zero_optimizer_state` exists.
                assert!(after[0].len() < grown[0].len(), "{dev} {kind}: the state moved nothing");
            }
            let report = prune::sparsity_report(&model).unwrap();
            assert_eq!(report[0].name, "0.weight");
            assert_eq!(report[0].zeros, after[0].len());
        }
    }
}

fn distillation_is_pytorchs_loss_and_gradient(dev: &Device) {
    let get = |name: &str| read_tensor(&fixture("distillation.safetensors"), name).1;
    let labels: Vec<u32> = get("labels").iter().map(|&v| v as u32).collect();
    let y = Tensor::from_labels(&labels, dev).unwrap();
    let teacher = Tensor::from_vec(get("teacher"), &[5, 4], dev).unwrap();
    for (alpha, suffix) in [(0.7, ""), (1.0, "_soft")] {
        let student = Tensor::from_vec(get("student"), &[5, 4], dev)
            .unwrap()
            .requires_grad()
            .unwrap();
        let l = loss::distillation(&student, &teacher, &y, 3.0, alpha).unwrap();
        let grads = l.backward().unwrap();
        let value = l.item().unwrap();
        let want = get(&format!("loss{suffix}"))[0];
        assert!(
            (value - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{dev}: α {alpha}: {value}, PyTorch {want}"
        );
        let g = grads.get(&student).unwrap().to_vec().unwrap();
        let worst = g
            .iter()
            .zip(get(&format!("grad{suffix}")))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-6, "{dev}: α {alpha}: gradient {worst:e} from PyTorch's");
        assert_eq!(grads.len(), 1, "{dev}: a gradient reached the teacher");
    }
}

#[test]
fn global_pruning_takes_more_from_the_layer_with_smaller_weights() {
    let dev = Device::cpu();
    let a = Tensor::from_vec((0..100).map(|i| i as f32 * 0.01).collect(), &[10, 10], &dev).unwrap();
    let b = Tensor::from_vec((0..100).map(|i| 1.0 + i as f32 * -0.001).collect(), &[10, 10], &dev).unwrap();
    let pruning = Pruning::magnitude(&[a.clone(), b.clone()], 0.5, Scope::Global).unwrap();
    assert_eq!(
        (zeros_of(&a).len(), zeros_of(&b).len()),
        (91, 9),
        "|a| ≤ 0.99, |b| in [0.901, 1]"
    );
    assert!((pruning.sparsity() - 0.5).abs() < 1e-12);
    // Ties in magnitude go to the lower index.
    let c = Tensor::from_vec(vec![1.0, -1.0, 1.0, 2.0], &[2, 2], &dev).unwrap();
    Pruning::magnitude(std::slice::from_ref(&c), 0.5, Scope::PerTensor).unwrap();
    assert_eq!(c.to_vec().unwrap(), vec![0.0, 0.0, 1.0, 2.0]);
}

#[test]
fn the_gradual_schedule_is_zhu_and_gupta_s_cubic() {
    let s = GradualSchedule {
        initial: 0.0,
        final_sparsity: 0.9,
        start: 100,
        end: 1100,
        every: 100,
    };
    s.check().unwrap();
    assert_eq!(s.sparsity_at(0), 0.0);
    assert_eq!(s.sparsity_at(100), 0.0);
    assert!((s.sparsity_at(600) - 0.9 * (1.0 - 0.125)).abs() < 1e-6);
    assert_eq!(s.sparsity_at(1100), 0.9);
    assert_eq!(s.sparsity_at(5000), 0.9);
    let steps: Vec<f32> = (100..=1100).step_by(100).map(|t| s.sparsity_at(t)).collect();
    assert!(steps
        .windows(2)
        .all(|w| w[1] > w[0] && w[1] - w[0] <= steps[1] - steps[0] + 1e-6));
    assert!(s.prunes_at(100) && s.prunes_at(1100) && !s.prunes_at(150) && !s.prunes_at(1200));
    for bad in [
        GradualSchedule {
            final_sparsity: 1.0,
            ..s
        },
        GradualSchedule { initial: 0.95, ..s },
        GradualSchedule { end: 100, ..s },
        GradualSchedule { every: 0, ..s },
    ] {
        assert!(bad.check().is_err(), "{bad:?}");
    }
}

#[test]
fn structured_pruning_shrinks_the_layers_and_the_file_and_keeps_what_live_units_compute() {
    let dev = Device::cpu();
    wgnn::manual_seed(5);
    let (first, second) = (Linear::new(6, 12, &dev), Linear::new(12, 3, &dev));
    // Kill 8 hidden units (zero incoming weights and bias): ReLU gives them 0.
    let mut w = first.weight.to_vec().unwrap();
    let mut b = first.bias.as_ref().unwrap().to_vec().unwrap();
    for j in [0, 2, 3, 5, 7, 8, 9, 11] {
        w[j * 6..j * 6 + 6].fill(0.0);
        b[j] = 0.0;
    }
    first.weight.assign(&w).unwrap();
    first.bias.as_ref().unwrap().assign(&b).unwrap();
    let x = Tensor::randn(&[7, 6], 2, &dev).unwrap();
    let before = second.forward(&first.forward(&x).relu()).to_vec().unwrap();
    let (small1, small2) = prune::shrink_hidden(&first, &second, 4).unwrap();
    assert_eq!(
        (small1.weight.shape(), small2.weight.shape()),
        (&[4, 6][..], &[3, 4][..])
    );
    let after = small2.forward(&small1.forward(&x).relu()).to_vec().unwrap();
    for (a, b) in before.iter().zip(&after) {
        assert!((a - b).abs() < 1e-6, "{before:?} vs {after:?}");
    }
    let dir = std::env::temp_dir().join(format!("wgnn-shrink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let size = |net: Sequential, name: &str| {
        let path = dir.join(name);
        wgnn::io::save_safetensors(&net, &path).unwrap();
        std::fs::metadata(&path).unwrap().len()
    };
    let big = size(
        Sequential::new().add(first).add(nn::Relu).add(second),
        "big.safetensors",
    );
    let small = size(
        Sequential::new().add(small1).add(nn::Relu).add(small2),
        "small.safetensors",
    );
    assert!(small < big * 6 / 10, "{small} bytes against {big}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_90_percent_pruned_mnist_mlp_fine_tuned_is_within_1_percent_of_dense() {
    let _serial = serial();
    let dev = Device::cpu();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist_5k.csv.gz");
    let (train, test) = wgnn::data::load_mnist_csv_gz(path).unwrap().shuffle_split(0, 4000);
    wgnn::manual_seed(0);
    let model = Sequential::new()
        .add(Linear::new(784, 128, &dev))
        .add(nn::Relu)
        .add(Linear::new(128, 10, &dev));
    let mut opt = Adam::new(model.parameters(), AdamConfig::default());
    let (xt, _) = test.tensors(&dev).unwrap();
    let accuracy = || {
        let p = nn::inference(|| model.forward(&xt)).argmax(1).to_labels().unwrap();
        p.iter().zip(&test.labels).filter(|(a, b)| a == b).count() as f64 / test.n as f64
    };
    let epoch = |opt: &mut Adam, pruning: Option<&Pruning>, seed: u64| {
        for rows in wgnn::data::permutation(train.n, seed).chunks(32) {
            let (x, y) = train.select(rows).tensors(&dev).unwrap();
            let grads = loss::cross_entropy(&model.forward(&x), &y).backward().unwrap();
            opt.step(&pruning.map_or(grads.clone(), |p| p.mask(&grads))).unwrap();
        }
    };
    // Dense to convergence (the test accuracy flat from about epoch 10 on).
    let base = 15;
    for e in 0..base {
        epoch(&mut opt, None, e);
    }
    let at_pruning = accuracy();
    // The reference: the dense model trained as long as the pruned one in all.
    let trained: Vec<Vec<f32>> = model.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
    let state = opt.state().unwrap();
    for e in base..base + 4 {
        epoch(&mut opt, None, e);
    }
    let dense = accuracy();
    for (p, w) in model.parameters().iter().zip(&trained) {
        p.assign(w).unwrap();
    }
    opt.load_state(&state).unwrap();
    // Zhu and Gupta's gradual schedule over the first half of the fine-tuning.
    let weights: Vec<Tensor> = prune::prunable(&model).into_iter().map(|(_, p)| p).collect();
    let schedule = GradualSchedule {
        initial: 0.0,
        final_sparsity: 0.9,
        start: 0,
        end: 250,
        every: 25,
    };
    let scope = Scope::Global;
    let mut pruning = Pruning::magnitude(&weights, 0.0, scope).unwrap();
    let mut step = 0;
    for e in base..base + 4 {
        for rows in wgnn::data::permutation(train.n, e).chunks(32) {
            if schedule.prunes_at(step) {
                pruning.grow(schedule.sparsity_at(step), scope, Some(&mut opt)).unwrap();
            }
            let (x, y) = train.select(rows).tensors(&dev).unwrap();
            let grads = loss::cross_entropy(&model.forward(&x), &y).backward().unwrap();
            opt.step(&pruning.mask(&grads)).unwrap();
            step += 1;
        }
    }
    let pruned = pruning.sparsity();
    let tuned = accuracy();
    let report = prune::sparsity_report(&model).unwrap();
    let zeros: usize = report
        .iter()
        .filter(|r| r.name.ends_with("weight"))
        .map(|r| r.zeros)
        .sum();
    eprintln!(
        "dense {at_pruning} when pruned, {dense} trained as long; pruned to {pruned}, fine-tuned {tuned}; {report:?}"
    );
    assert_eq!(zeros, ((784 * 128 + 128 * 10) as f64 * 0.9).round() as usize);
    let best = at_pruning.max(dense);
    assert!(
        tuned >= best - 0.01,
        "dense {at_pruning} / {dense}, pruned and fine-tuned {tuned}"
    );
}

#[test]
fn pruning_and_distillation_refuse_what_they_cannot_do() {
    let dev = Device::cpu();
    let w = Tensor::ones(&[3, 3], &dev);
    for s in [1.0, -0.1, f32::NAN, 1.5] {
        match Pruning::magnitude(std::slice::from_ref(&w), s, Scope::Global) {
            Err(Error::InvalidSetting {
                setting: "sparsity",
                message,
            }) => {
                assert!(message.contains("outside [0, 1)"), "{message}")
            }
            other => panic!("sparsity {s}: {:?}", other.map(|_| ())),
        }
    }
    assert!(Pruning::magnitude(&[], 0.5, Scope::Global).is_err());
    let (a, b) = (Linear::new(4, 5, &dev), Linear::new(6, 2, &dev));
    let m = prune::shrink_hidden(&a, &b, 2).err().unwrap().to_string();
    assert!(m.contains("takes 6 features, the first gives 5"), "{m}");
    let c = Linear::new(5, 2, &dev);
    assert!(prune::shrink_hidden(&a, &c, 0).is_err() && prune::shrink_hidden(&a, &c, 6).is_err());

    let student = Tensor::zeros(&[4, 10], &dev);
    let teacher = Tensor::zeros(&[4, 12], &dev);
    let y = Tensor::from_labels(&[0, 1, 2, 3], &dev).unwrap();
    let m = loss::distillation(&student, &teacher, &y, 2.0, 0.5)
        .err()
        .unwrap()
        .to_string();
    assert!(m.contains("[4, 10]") && m.contains("[4, 12]"), "{m}");
    let m = loss::distillation(&student, &student, &y, 0.0, 0.5)
        .err()
        .unwrap()
        .to_string();
    assert!(m.contains("temperature 0"), "{m}");
    let m = loss::distillation(&student, &student, &y, 2.0, 1.5)
        .err()
        .unwrap()
        .to_string();
    assert!(m.contains("alpha 1.5"), "{m}");
}

fn int8_gemm_gives_the_host_integers_exactly_and_stays_within_the_error_bound(dev: &Device) {
    let _serial = serial();
    for (k, n, m) in [(1, 3, 2), (3, 5, 4), (5, 1, 3), (127, 13, 9), (129, 7, 5), (784, 10, 6)] {
        wgnn::manual_seed(k as u64);
        let layer = Linear::new(k, n, dev);
        let xs: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 3.0)
            .collect();
        let x = Tensor::from_vec(xs.clone(), &[m, k], dev).unwrap();
        let sx = activation_scale(&xs, Calibration::MinMax).unwrap();
        let q = QuantizedLinear::new(&layer, sx).unwrap();
        // The integers, computed here from the codes.
        let xq: Vec<i32> = xs
            .iter()
            .map(|v| (v * (1.0 / sx)).round_ties_even().clamp(-127.0, 127.0) as i32)
            .collect();
        let want: Vec<i32> = (0..m * n)
            .map(|i| {
                let (r, j) = (i / n, i % n);
                (0..k).map(|c| xq[r * k + c] * i32::from(q.codes()[j * k + c])).sum()
            })
            .collect();
        assert_eq!(q.accumulators(&x).unwrap(), want, "{dev}: k {k}, n {n}, m {m}");
        // Dequantized: within the rounding bound of the f64 product.
        let w = layer.weight.to_vec().unwrap();
        let b = layer.bias.as_ref().unwrap().to_vec().unwrap();
        let sw = q.weight_scales().unwrap();
        let got = q.forward(&x).to_vec().unwrap();
        for (i, &value) in got.iter().enumerate() {
            let (r, j) = (i / n, i % n);
            let exact: f64 = (0..k)
                .map(|c| f64::from(xs[r * k + c]) * f64::from(w[j * k + c]))
                .sum::<f64>()
                + f64::from(b[j]);
            let abs_w: f64 = (0..k).map(|c| f64::from(w[j * k + c].abs())).sum();
            let abs_x: f64 = (0..k).map(|c| f64::from(xs[r * k + c].abs())).sum();
            let (sx, swj) = (f64::from(sx), f64::from(sw[j]));
            let bound = 0.5 * sx * abs_w + 0.5 * abs_x * swj + 0.25 * k as f64 * sx * swj;
            let err = (f64::from(value) - exact).abs();
            assert!(
                err <= bound * (1.0 + 1e-5) + 1e-5,
                "{dev}: k {k}, output {i}: error {err} above the bound {bound}"
            );
        }
    }
}

#[test]
fn an_int8_mnist_mlp_is_within_1_percent_of_f32_and_saves_to_a_quarter_of_the_file() {
    let _serial = serial();
    let dev = Device::cpu();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist_5k.csv.gz");
    let (train, test) = wgnn::data::load_mnist_csv_gz(path).unwrap().shuffle_split(0, 4000);
    wgnn::manual_seed(0);
    let make = || {
        Sequential::new()
            .add(Linear::new(784, 128, &dev))
            .add(nn::Relu)
            .add(Linear::new(128, 10, &dev))
    };
    let model = make();
    let mut opt = Adam::new(model.parameters(), AdamConfig::default());
    for e in 0..5 {
        for rows in wgnn::data::permutation(train.n, e).chunks(32) {
            let (x, y) = train.select(rows).tensors(&dev).unwrap();
            opt.step(&loss::cross_entropy(&model.forward(&x), &y).backward().unwrap())
                .unwrap();
        }
    }
    let (xt, _) = test.tensors(&dev).unwrap();
    let accuracy = |logits: Tensor| {
        let p = logits.argmax(1).to_labels().unwrap();
        p.iter().zip(&test.labels).filter(|(a, b)| a == b).count() as f64 / test.n as f64
    };
    let f32_acc = accuracy(model.forward(&xt));
    let dir = std::env::temp_dir().join(format!("wgnn-int8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    wgnn::io::save_safetensors(&model, dir.join("f32.safetensors")).unwrap();
    let (calibration, _) = train.select(&(0..256).collect::<Vec<_>>()).tensors(&dev).unwrap();
    for method in [Calibration::MinMax, Calibration::Percentile(99.99)] {
        let copy = make();
        for (c, p) in copy.parameters().iter().zip(model.parameters()) {
            c.assign(&p.to_vec().unwrap()).unwrap();
        }
        let q = QuantizedSequential::quantize(copy, &calibration, method).unwrap();
        let int8_acc = accuracy(q.forward(&xt));
        eprintln!("{method:?}: f32 {f32_acc}, int8 {int8_acc}");
        assert!(int8_acc >= f32_acc - 0.01, "{method:?}: f32 {f32_acc}, int8 {int8_acc}");
        q.save(dir.join("int8.safetensors")).unwrap();
        let loaded = QuantizedSequential::load(make(), dir.join("int8.safetensors")).unwrap();
        let (a, b) = (q.forward(&xt).to_vec().unwrap(), loaded.forward(&xt).to_vec().unwrap());
        assert!(a == b, "{method:?}: the loaded model computes other values");
    }
    // Half-precision weights: the same accuracy within 0.5 %, half the file.
    let copy = make();
    for (c, p) in copy.parameters().iter().zip(model.parameters()) {
        c.assign(&p.to_vec().unwrap()).unwrap();
    }
    let h = QuantizedSequential::half(copy).unwrap();
    let half_acc = accuracy(h.forward(&xt));
    eprintln!("f16 weights: f32 {f32_acc}, f16 {half_acc}");
    assert!(
        (half_acc - f32_acc).abs() <= 0.005,
        "f32 {f32_acc}, f16 weights {half_acc}"
    );
    h.save(dir.join("f16.safetensors")).unwrap();
    let loaded = QuantizedSequential::load(make(), dir.join("f16.safetensors")).unwrap();
    assert!(h.forward(&xt).to_vec().unwrap() == loaded.forward(&xt).to_vec().unwrap());
    let size = |name: &str| std::fs::metadata(dir.join(name)).unwrap().len();
    let (f, i) = (size("f32.safetensors"), size("int8.safetensors"));
    assert!(i * 10 < f * 3, "int8 file {i} bytes, f32 {f}");
    let half_bytes = size("f16.safetensors");
    assert!(half_bytes * 10 < f * 6, "f16 file {half_bytes} bytes, f32 {f}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn quantization_refuses_what_it_cannot_do() {
    let dev = Device::cpu();
    assert!(activation_scale(&[], Calibration::MinMax)
        .unwrap_err()
        .to_string()
        .contains("no calibration data"));
    for p in [0.0, 100.5, f32::NAN] {
        assert!(
            activation_scale(&[1.0], Calibration::Percentile(p)).is_err(),
            "percentile {p}"
        );
    }
    assert!(activation_scale(&[1.0, f32::NAN], Calibration::MinMax).is_err());
    assert_eq!(activation_scale(&[0.0; 4], Calibration::MinMax).unwrap(), 1.0);
    let net = Sequential::new()
        .add(Linear::new(4, 3, &dev))
        .add(nn::BatchNorm1d::new(3, &dev))
        .add(Linear::new(3, 2, &dev));
    let x = Tensor::ones(&[2, 4], &dev);
    let m = QuantizedSequential::quantize(net, &x, Calibration::MinMax)
        .err()
        .unwrap()
        .to_string();
    assert!(m.contains("layer 1 `BatchNorm1d") && m.contains("only Linear"), "{m}");
    let empty = Tensor::zeros(&[0, 4], &dev);
    let net = Sequential::new().add(Linear::new(4, 2, &dev));
    let m = QuantizedSequential::quantize(net, &empty, Calibration::MinMax)
        .err()
        .unwrap()
        .to_string();
    assert!(m.contains("no samples"), "{m}");
    assert!(QuantizedLinear::new(&Linear::new(4, 2, &dev), 0.0).is_err());
}

fn loss_scaling_skips_an_overflowing_step_backs_off_and_grows_again(dev: &Device) {
    let _serial = serial();
    let x = Tensor::randn(&[8, 6], 4, dev).unwrap();
    let labels: Vec<u32> = (0..8).map(|i| i % 3).collect();
    let y = Tensor::from_labels(&labels, dev).unwrap();
    let config = GradScalerConfig {
        growth_interval: 3,
        ..Default::default()
    };
    let run = |scaled: bool| {
        wgnn::manual_seed(7);
        let model = mlp(dev, 5);
        let mut opt = Adam::new(model.parameters(), AdamConfig::default());
        let mut scaler = GradScaler::new(config).unwrap();
        let mut log = Vec::new();
        for step in 0..8 {
            let mut l = loss::cross_entropy(&model.forward(&x), &y);
            if step == 2 {
                // An injected overflow: 1e35 · 65536 is beyond f32.
                l = &l + &model.parameters()[0].sum().mul_scalar(1e35);
            }
            if scaled {
                let before: Vec<Vec<f32>> = model.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
                let applied = scaler.step(&mut opt, &scaler.scale(&l).backward().unwrap()).unwrap();
                let after: Vec<Vec<f32>> = model.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
                assert_eq!(applied, step != 2, "{dev}: step {step}");
                assert_eq!(
                    before == after,
                    step == 2,
                    "{dev}: step {step} changed the weights: {applied}"
                );
                log.push(scaler.current_scale());
            } else if step != 2 {
                opt.step(&l.backward().unwrap()).unwrap();
            }
        }
        assert_eq!(scaler.skipped_steps(), usize::from(scaled));
        let bits: Vec<u32> = model
            .parameters()
            .iter()
            .flat_map(|p| p.to_vec().unwrap())
            .map(f32::to_bits)
            .collect();
        (bits, log)
    };
    let (scaled, scales) = run(true);
    // PyTorch's update(): halved at the overflow, doubled after every 3 clean steps.
    assert_eq!(
        scales,
        vec![65536.0, 65536.0, 32768.0, 32768.0, 32768.0, 65536.0, 65536.0, 65536.0]
    );
    // A power-of-two scale divides out exactly: the same bits as unscaled training
    // that skips the same step.
    let (plain, _) = run(false);
    assert_eq!(scaled, plain, "{dev}: scaled and unscaled training differ");
    assert!(GradScaler::new(GradScalerConfig {
        backoff_factor: 1.0,
        ..config
    })
    .is_err());
    assert!(GradScaler::new(GradScalerConfig {
        init_scale: 0.0,
        ..config
    })
    .is_err());
    assert!(GradScaler::new(GradScalerConfig {
        growth_interval: 0,
        ..config
    })
    .is_err());
}

#[test]
fn a_model_saved_in_f16_or_bf16_is_half_the_file_and_loads_the_rounded_values() {
    let dev = Device::cpu();
    wgnn::manual_seed(12);
    let model = mlp(&dev, 40);
    let big = Tensor::from_vec(vec![1e5, -2.0e-8, 1.0 / 3.0], &[3], &dev).unwrap();
    model.parameters()[1]
        .assign(&{
            let mut b = model.parameters()[1].to_vec().unwrap();
            b[..3].copy_from_slice(&big.to_vec().unwrap());
            b
        })
        .unwrap();
    let dir = std::env::temp_dir().join(format!("wgnn-half-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let original: Vec<Vec<f32>> = model.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
    wgnn::io::save_safetensors(&model, dir.join("f32.safetensors")).unwrap();
    let f32_bytes = std::fs::metadata(dir.join("f32.safetensors")).unwrap().len();
    for (format, name) in [
        (wgnn::io::FloatFormat::F16, "f16"),
        (wgnn::io::FloatFormat::BF16, "bf16"),
    ] {
        let path = dir.join(format!("{name}.safetensors"));
        wgnn::io::save_safetensors_as(&model, &path, format).unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert!(bytes * 10 < f32_bytes * 6, "{name}: {bytes} bytes against {f32_bytes}");
        let mut loaded = mlp(&dev, 40);
        wgnn::io::load_safetensors(&mut loaded, &path).unwrap();
        for (p, want) in loaded.parameters().iter().zip(&original) {
            let round = |x: f32| match format {
                wgnn::io::FloatFormat::F16 => half::f16::from_f32(x).to_f32(),
                _ => half::bf16::from_f32(x).to_f32(),
            };
            let want: Vec<u32> = want.iter().map(|&x| round(x).to_bits()).collect();
            let got: Vec<u32> = p.to_vec().unwrap().iter().map(|x| x.to_bits()).collect();
            assert_eq!(got, want, "{name}");
        }
        let b = loaded.parameters()[1].to_vec().unwrap();
        match format {
            // Beyond f16's range: ∞; below half its smallest subnormal: -0.
            wgnn::io::FloatFormat::F16 => assert_eq!((b[0], b[1]), (f32::INFINITY, -0.0)),
            _ => assert!((b[0] - 1e5).abs() < 1e3 && b[1] < 0.0),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn half_precision_weights_give_the_f32_product_of_the_rounded_weights(dev: &Device) {
    let _serial = serial();
    for (k, n, m) in [(1, 3, 2), (3, 5, 4), (5, 1, 3), (127, 13, 9), (129, 7, 5), (784, 10, 6)] {
        wgnn::manual_seed(k as u64 + 50);
        let layer = Linear::new(k, n, dev);
        let xs: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 3.0)
            .collect();
        let x = Tensor::from_vec(xs.clone(), &[m, k], dev).unwrap();
        let h = HalfLinear::new(&layer).unwrap();
        let w = h.weights();
        let original = layer.weight.to_vec().unwrap();
        for (a, b) in w.iter().zip(&original) {
            assert_eq!(*a, half::f16::from_f32(*b).to_f32());
        }
        let b = layer.bias.as_ref().unwrap().to_vec().unwrap();
        let got = h.forward(&x).to_vec().unwrap();
        for (i, &value) in got.iter().enumerate() {
            let (r, j) = (i / n, i % n);
            let exact: f64 = (0..k)
                .map(|c| f64::from(xs[r * k + c]) * f64::from(w[j * k + c]))
                .sum::<f64>()
                + f64::from(b[j]);
            let scale: f64 = (0..k)
                .map(|c| f64::from((xs[r * k + c] * w[j * k + c]).abs()))
                .sum::<f64>()
                + f64::from(b[j].abs());
            // f32 accumulation in order of k: k roundings of at most 2^-24 of the running sum.
            let bound = (k as f64 + 1.0) * 6e-8 * scale + 1e-7;
            assert!(
                (f64::from(value) - exact).abs() <= bound,
                "{dev}: k {k}, output {i}: {value} against {exact}"
            );
        }
        // The CPU twin's two loops (under 8 rows: per output; from 8: transposed
        // weights, vectorized over the outputs) sum in the same order: the same bits
        // row by row as in a batch.
        let one_by_one: Vec<u32> = (0..m)
            .flat_map(|r| {
                let row = Tensor::from_vec(xs[r * k..(r + 1) * k].to_vec(), &[1, k], dev).unwrap();
                h.forward(&row).to_vec().unwrap()
            })
            .map(f32::to_bits)
            .collect();
        let batch: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            one_by_one, batch,
            "{dev}: k {k}, m {m}: rows alone and in a batch differ"
        );
    }
}

/// Mixed precision (`wgnn::amp`) against f32 from the same initial weights and batch
/// order, with loss scaling: the MNIST MLP (4,000 training images, 3 epochs of Adam)
/// ends within 0.5 % of the f32 test accuracy on 1,000 images.
fn mixed_precision_trains_the_mnist_mlp_to_the_f32_accuracy(dev: &Device) {
    let _serial = serial();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist_5k.csv.gz");
    let (train, test) = wgnn::data::load_mnist_csv_gz(path).unwrap().shuffle_split(0, 4000);
    let (xt, _) = test.tensors(dev).unwrap();
    let run = |mixed: bool| {
        wgnn::manual_seed(0);
        let model = Sequential::new()
            .add(Linear::new(784, 128, dev))
            .add(nn::Relu)
            .add(Linear::new(128, 10, dev));
        let model = wgnn::amp::Mixed(model);
        let forward = |x: &Tensor| if mixed { model.forward(x) } else { model.0.forward(x) };
        let mut opt = Adam::new(model.parameters(), AdamConfig::default());
        let mut scaler = GradScaler::new(GradScalerConfig::default()).unwrap();
        for e in 0..3 {
            for rows in wgnn::data::permutation(train.n, e).chunks(64) {
                let (x, y) = train.select(rows).tensors(dev).unwrap();
                let l = loss::cross_entropy(&forward(&x), &y);
                if mixed {
                    scaler.step(&mut opt, &scaler.scale(&l).backward().unwrap()).unwrap();
                } else {
                    opt.step(&l.backward().unwrap()).unwrap();
                }
            }
        }
        let p = nn::inference(|| forward(&xt)).argmax(1).to_labels().unwrap();
        let accuracy = p.iter().zip(&test.labels).filter(|(a, b)| a == b).count() as f64 / test.n as f64;
        (accuracy, scaler.skipped_steps())
    };
    let ((f32_acc, _), (mixed_acc, skipped)) = (run(false), run(true));
    eprintln!("{dev}: f32 {f32_acc}, mixed {mixed_acc} ({skipped} steps skipped)");
    assert!(f32_acc >= 0.88, "{dev}: f32 reaches only {f32_acc}");
    assert!(
        (mixed_acc - f32_acc).abs() <= 0.005,
        "{dev}: f32 {f32_acc}, mixed precision {mixed_acc}"
    );
}

/// *Pride and Prejudice* as character ids: training chunks from the first 90 %,
/// held-out ones from the last 10 %.
struct Novel {
    ids: Vec<u32>,
    vocab: usize,
}

const LM_HIDDEN: usize = 64;
const LM_BATCH: usize = 16;
const LM_SEQ: usize = 32;

impl Novel {
    fn load() -> Novel {
        use std::io::Read;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/pride_and_prejudice.txt.gz");
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut text)
            .unwrap();
        let mut alphabet = text.clone();
        alphabet.sort_unstable();
        alphabet.dedup();
        let ids = text.iter().map(|c| alphabet.binary_search(c).unwrap() as u32).collect();
        Novel {
            ids,
            vocab: alphabet.len(),
        }
    }

    /// Step `k`'s characters of 16 streams spread over the training (or held-out)
    /// text and their successors: `[16, 32]` ids and `[512]` labels.
    fn chunk(&self, val: bool, k: usize, dev: &Device) -> (Tensor, Tensor) {
        let split = self.ids.len() * 9 / 10;
        let data = if val { &self.ids[split..] } else { &self.ids[..split] };
        let len = data.len() / LM_BATCH;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for s in 0..LM_BATCH {
            let start = s * len + k * LM_SEQ;
            x.extend_from_slice(&data[start..start + LM_SEQ]);
            y.extend_from_slice(&data[start + 1..start + LM_SEQ + 1]);
        }
        let x = Tensor::from_labels(&x, dev).unwrap().reshape(&[LM_BATCH, LM_SEQ]);
        (x, Tensor::from_labels(&y, dev).unwrap())
    }

    /// Held-out bits per character over 8 chunks, `logits` mapping ids to logits.
    fn val_bpc(&self, dev: &Device, logits: impl Fn(&Tensor) -> Tensor) -> f64 {
        let nats: f64 = (0..8)
            .map(|k| {
                let (x, y) = self.chunk(true, k, dev);
                let z = nn::inference(|| logits(&x));
                f64::from(loss::cross_entropy(&z, &y).item().unwrap())
            })
            .sum();
        nats / 8.0 / std::f64::consts::LN_2
    }
}

/// A small character-level LSTM language model (embedding 16, LSTM 64, a linear
/// head), trained 150 steps of 16 streams × 32 characters with Adam and gradient
/// clipping, in f32 or in mixed precision with loss scaling.
struct CharLm {
    emb: nn::Embedding,
    lstm: nn::Lstm,
    head: Linear,
}

impl CharLm {
    fn train(novel: &Novel, dev: &Device, mixed: bool) -> CharLm {
        wgnn::manual_seed(1);
        let config = nn::RnnConfig {
            batch_first: true,
            ..Default::default()
        };
        let lm = CharLm {
            emb: nn::Embedding::new(novel.vocab, 16, dev),
            lstm: nn::Lstm::new(16, LM_HIDDEN, config, dev),
            head: Linear::new(LM_HIDDEN, novel.vocab, dev),
        };
        let mut params = lm.emb.parameters();
        params.extend(lm.lstm.parameters());
        params.extend(lm.head.parameters());
        let mut opt = Adam::new(
            params,
            AdamConfig {
                lr: 1e-2,
                ..Default::default()
            },
        );
        let mut scaler = GradScaler::new(GradScalerConfig::default()).unwrap();
        for k in 0..150 {
            let (x, y) = novel.chunk(false, k, dev);
            let l = loss::cross_entropy(&lm.logits(&x, mixed), &y);
            if mixed {
                let grads = scaler.unscale(&scaler.scale(&l).backward().unwrap());
                scaler.step_unscaled(&mut opt, &grads.clip_norm(5.0)).unwrap();
            } else {
                opt.step(&l.backward().unwrap().clip_norm(5.0)).unwrap();
            }
        }
        lm
    }

    /// Logits `[512, vocab]` for ids `[16, 32]`, under autocast when `mixed`.
    fn logits(&self, x: &Tensor, mixed: bool) -> Tensor {
        let _amp = mixed.then(|| wgnn::amp::autocast(x.device()));
        let h = self.lstm.forward(&self.emb.forward(x));
        self.head.forward(&h.reshape(&[LM_BATCH * LM_SEQ, LM_HIDDEN]))
    }
}

/// The small language model trained in mixed precision with loss scaling and
/// gradient clipping ends within 0.02 bits per character of the f32 run, on held-out
/// text (each evaluated the way it was trained).
fn mixed_precision_trains_an_lstm_language_model_to_the_f32_bpc(dev: &Device) {
    let _serial = serial();
    let novel = Novel::load();
    let bpc = |mixed: bool| {
        let lm = CharLm::train(&novel, dev, mixed);
        novel.val_bpc(dev, |x| lm.logits(x, mixed))
    };
    let (f32_bpc, mixed_bpc) = (bpc(false), bpc(true));
    eprintln!("{dev}: f32 {f32_bpc:.4} bpc, mixed {mixed_bpc:.4} bpc");
    assert!(
        f32_bpc < 3.4,
        "{dev}: f32 reaches only {f32_bpc} bpc (3.28 measured; the bigram model 3.53)"
    );
    assert!(
        (mixed_bpc - f32_bpc).abs() <= 0.02,
        "{dev}: f32 {f32_bpc} bpc, mixed precision {mixed_bpc}"
    );
}

/// The trained language model with int8 gate products (`QuantizedLstm`: the
/// embedding's output calibrated, hidden states at 1/127) and an int8 head stays
/// within 0.05 bits per character of f32; an LSTM and a GRU of two bidirectional
/// layers keep their outputs near f32's on random sequences, and the GPU computes
/// what the CPU does.
fn int8_recurrent_gate_products_stay_close_to_f32(dev: &Device) {
    use wgnn::quantize::{QuantizedGru, QuantizedLstm};
    let _serial = serial();
    let novel = Novel::load();
    let mut lm = CharLm::train(&novel, &Device::cpu(), false);
    lm.emb.to(dev).unwrap();
    lm.lstm.to(dev).unwrap();
    lm.head.to(dev).unwrap();
    let f32_bpc = novel.val_bpc(dev, |x| lm.logits(x, false));
    let calibration = nn::inference(|| lm.emb.forward(&novel.chunk(false, 0, dev).0));
    let CharLm { emb, lstm, head } = lm;
    let q = QuantizedLstm::quantize(lstm, &calibration, Calibration::MinMax).unwrap();
    let q_head = QuantizedLinear::new(&head, 1.0 / 127.0).unwrap();
    let int8_bpc = novel.val_bpc(dev, |x| {
        let h = q.forward_seq(&emb.forward(x), None).0;
        q_head.forward(&h.reshape(&[LM_BATCH * LM_SEQ, LM_HIDDEN]))
    });
    eprintln!("{dev}: f32 {f32_bpc:.4} bpc, int8 gates and head {int8_bpc:.4} bpc");
    assert!(
        (int8_bpc - f32_bpc).abs() <= 0.05,
        "{dev}: f32 {f32_bpc}, int8 {int8_bpc}"
    );
    assert!(
        q.weight_bytes() * 3 < 4 * 64 * (16 + 64) * 4,
        "int8 weights: {} bytes",
        q.weight_bytes()
    );

    // Two bidirectional layers, random weights and sequences; each on the CPU first,
    // then moved.
    wgnn::manual_seed(4);
    let config = nn::RnnConfig {
        num_layers: 2,
        bidirectional: true,
        ..Default::default()
    };
    let cpu = Device::cpu();
    let x_cpu = Tensor::randn(&[7, 3, 10], 5, &cpu).unwrap();
    let x = x_cpu.to(dev).unwrap();
    let close = |what: &str, got: &Tensor, want: &Tensor, bound: f32| {
        let (g, w) = (got.to_vec().unwrap(), want.to_vec().unwrap());
        let err = g.iter().zip(&w).fold(0.0f32, |a, (p, q)| a.max((p - q).abs()));
        assert!(err <= bound, "{dev}: {what}: off by {err}");
    };
    let mut lstm = nn::Lstm::new(10, 12, config, &cpu);
    let mut gru = nn::Gru::new(10, 12, config, &cpu);
    let (lstm_cpu_q, gru_cpu_q) = {
        let copy_lstm = nn::Lstm::new(10, 12, config, &cpu);
        let copy_gru = nn::Gru::new(10, 12, config, &cpu);
        for (c, p) in copy_lstm.parameters().iter().zip(lstm.parameters()) {
            c.assign(&p.to_vec().unwrap()).unwrap();
        }
        for (c, p) in copy_gru.parameters().iter().zip(gru.parameters()) {
            c.assign(&p.to_vec().unwrap()).unwrap();
        }
        let ql = QuantizedLstm::quantize(copy_lstm, &x_cpu, Calibration::MinMax).unwrap();
        let qg = QuantizedGru::quantize(copy_gru, &x_cpu, Calibration::MinMax).unwrap();
        (ql.forward_seq(&x_cpu, None).0, qg.forward_seq(&x_cpu, None).0)
    };
    lstm.to(dev).unwrap();
    gru.to(dev).unwrap();
    let (lstm_f32, gru_f32) = (lstm.forward(&x), gru.forward(&x));
    let ql = QuantizedLstm::quantize(lstm, &x, Calibration::MinMax).unwrap();
    let qg = QuantizedGru::quantize(gru, &x, Calibration::MinMax).unwrap();
    let (lstm_q, gru_q) = (ql.forward_seq(&x, None).0, qg.forward_seq(&x, None).0);
    assert_eq!(lstm_q.shape(), [7, 3, 24]);
    close("int8 LSTM against f32", &lstm_q, &lstm_f32, 0.05);
    close("int8 GRU against f32", &gru_q, &gru_f32, 0.05);
    close("int8 LSTM on the CPU", &lstm_q, &lstm_cpu_q, 1e-5);
    close("int8 GRU on the CPU", &gru_q, &gru_cpu_q, 1e-5);
}

/// `Model::mixed_precision` makes `fit` and `evaluate` run under autocast with loss
/// scaling: from the same weights the epoch losses follow the f32 run's closely (not
/// exactly: the GEMM inputs are rounded), the accuracy holds, an invalid scaler
/// configuration is refused.
fn fit_in_mixed_precision_follows_the_f32_run(dev: &Device) {
    use wgnn::metrics::Metric;
    use wgnn::train::{FitConfig, Loss};
    let _serial = serial();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist_5k.csv.gz");
    let (train, test) = wgnn::data::load_mnist_csv_gz(path).unwrap().shuffle_split(0, 2000);
    let (x, y) = train.tensors(dev).unwrap();
    let (xt, yt) = test.tensors(dev).unwrap();
    let run = |mixed: bool| {
        wgnn::manual_seed(5);
        let net = mlp_784(dev);
        let opt = Adam::new(net.parameters(), AdamConfig::default());
        let mut model = net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy]).unwrap();
        if mixed {
            model = model.mixed_precision(GradScalerConfig::default()).unwrap();
        }
        let config = FitConfig {
            epochs: 2,
            batch_size: 64,
            seed: Some(1),
            ..Default::default()
        };
        let history = model.fit(&x, &y, config).unwrap();
        let scores = model.evaluate(&xt, &yt).unwrap();
        assert_eq!(model.grad_scaler().is_some(), mixed);
        (history.history["loss"].clone(), scores["accuracy"])
    };
    let ((l32, a32), (l16, a16)) = (run(false), run(true));
    eprintln!("{dev}: f32 losses {l32:?} accuracy {a32}; mixed {l16:?} {a16}");
    for (p, q) in l32.iter().zip(&l16) {
        assert!((p - q).abs() <= 0.01 * p, "{dev}: epoch losses {l32:?} against {l16:?}");
    }
    assert!(l16 != l32, "{dev}: the mixed run computed in f32");
    assert!((a16 - a32).abs() <= 0.01, "{dev}: accuracy f32 {a32}, mixed {a16}");
    let net = mlp_784(dev);
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let model = net.compile(opt, Loss::CrossEntropy, &[]).unwrap();
    let bad = GradScalerConfig {
        growth_factor: 0.5,
        ..Default::default()
    };
    assert!(model.mixed_precision(bad).is_err());
}

fn mlp_784(dev: &Device) -> Sequential {
    Sequential::new()
        .add(Linear::new(784, 64, dev))
        .add(nn::Relu)
        .add(Linear::new(64, 10, dev))
}

/// `Model::distill_from` puts Hinton's loss inside `fit`: with α = 0 the soft term
/// weighs nothing and the student ends with exactly the weights of plain
/// cross-entropy training; with α = 0.7 the teacher moves it; a teacher with another
/// number of outputs, on another device, a non-classification loss and bad settings
/// are refused by name.
fn fit_distills_from_a_teacher_on_the_same_device(dev: &Device) {
    use wgnn::train::{FitConfig, Loss};
    let _serial = serial();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist_5k.csv.gz");
    let (train, _) = wgnn::data::load_mnist_csv_gz(path).unwrap().shuffle_split(0, 1000);
    let (x, y) = train.tensors(dev).unwrap();
    wgnn::manual_seed(8);
    let teacher = mlp_784(dev);
    let student = |teacher: Option<(Sequential, f32)>| {
        wgnn::manual_seed(9);
        let net = mlp_784(dev);
        let opt = Adam::new(net.parameters(), AdamConfig::default());
        let mut model = net.compile(opt, Loss::CrossEntropy, &[]).unwrap();
        if let Some((t, alpha)) = teacher {
            model = model.distill_from(t, 4.0, alpha).unwrap();
        }
        let config = FitConfig {
            epochs: 1,
            batch_size: 100,
            seed: Some(2),
            ..Default::default()
        };
        let history = model.fit(&x, &y, config).unwrap();
        let weights: Vec<u32> = model
            .net
            .parameters()
            .iter()
            .flat_map(|p| p.to_vec().unwrap())
            .map(f32::to_bits)
            .collect();
        (weights, history.history["loss"][0])
    };
    let copy = || {
        let t = mlp_784(dev);
        for (c, p) in t.parameters().iter().zip(teacher.parameters()) {
            c.assign(&p.to_vec().unwrap()).unwrap();
        }
        t
    };
    let (plain, plain_loss) = student(None);
    let (alpha0, alpha0_loss) = student(Some((copy(), 0.0)));
    assert!(plain == alpha0, "{dev}: α = 0 must be plain cross-entropy training");
    assert_eq!(plain_loss, alpha0_loss);
    let (soft, soft_loss) = student(Some((copy(), 0.7)));
    assert!(
        soft != plain && soft_loss.is_finite(),
        "{dev}: the teacher changed nothing"
    );

    // Refusals.
    let compile = |loss: Loss| {
        let net = mlp_784(dev);
        let opt = Adam::new(net.parameters(), AdamConfig::default());
        net.compile(opt, loss, &[]).unwrap()
    };
    let five = Sequential::new().add(Linear::new(784, 5, dev));
    let mut wrong = compile(Loss::CrossEntropy).distill_from(five, 2.0, 0.5).unwrap();
    let err = wrong.fit(&x, &y, FitConfig::default()).unwrap_err().to_string();
    assert!(
        err.contains("distillation") && err.contains(", 10]") && err.contains(", 5]"),
        "{err}"
    );
    let err = compile(Loss::Mse)
        .distill_from(copy(), 2.0, 0.5)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("CrossEntropy"), "{err}");
    assert!(compile(Loss::CrossEntropy).distill_from(copy(), 0.0, 0.5).is_err());
    assert!(compile(Loss::CrossEntropy).distill_from(copy(), 2.0, 1.5).is_err());
    if dev.kind() == wgnn::DeviceKind::Gpu {
        let elsewhere = mlp_784(&Device::cpu());
        let err = compile(Loss::CrossEntropy)
            .distill_from(elsewhere, 2.0, 0.5)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("teacher"), "{err}");
    }
}

#[test]
fn prunable_lists_every_weight_matrix_recurrent_ones_included_and_no_bias() {
    let dev = Device::cpu();
    let config = nn::RnnConfig {
        bidirectional: true,
        ..Default::default()
    };
    let model = Sequential::new()
        .add(nn::Lstm::new(3, 4, config, &dev))
        .add(Linear::new(8, 2, &dev));
    let names: Vec<String> = prune::prunable(&model).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "0.weight_ih_l0",
            "0.weight_hh_l0",
            "0.weight_ih_l0_reverse",
            "0.weight_hh_l0_reverse",
            "1.weight"
        ]
    );
}

/// `QuantizedConv2d` (im2col from pads and narrows, the int8 GEMM): with padding,
/// stride 2 and dilation 2, and a plain 3×3, its outputs stay within 2 % of the f32
/// convolution's range, the GPU computes what the CPU does, and a grouped
/// convolution is refused by name.
fn int8_convolutions_follow_f32_with_padding_stride_and_dilation(dev: &Device) {
    use wgnn::nn::{Conv2d, ConvConfig};
    use wgnn::quantize::QuantizedConv2d;
    let _serial = serial();
    let cpu = Device::cpu();
    let configs = [
        ConvConfig {
            padding: 1,
            ..Default::default()
        },
        ConvConfig {
            padding: 2,
            stride: 2,
            dilation: 2,
            ..Default::default()
        },
    ];
    for (c, config) in configs.into_iter().enumerate() {
        wgnn::manual_seed(20 + c as u64);
        let conv_cpu = Conv2d::new(5, 7, 3, config, &cpu);
        let x_cpu = Tensor::randn(&[2, 5, 11, 9], 3, &cpu).unwrap();
        let mut conv = Conv2d::new(5, 7, 3, config, &cpu);
        for (p, q) in conv.parameters().iter().zip(conv_cpu.parameters()) {
            p.assign(&q.to_vec().unwrap()).unwrap();
        }
        conv.to(dev).unwrap();
        let x = x_cpu.to(dev).unwrap();
        let scale = x_cpu.to_vec().unwrap().iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
        let want = conv.forward(&x).to_vec().unwrap();
        let q = QuantizedConv2d::new(&conv, scale).unwrap();
        let y = q.forward(&x);
        assert_eq!(y.shape(), conv.forward(&x).shape(), "{config:?}");
        let got = y.to_vec().unwrap();
        let range = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let err = got.iter().zip(&want).fold(0.0f32, |a, (p, q)| a.max((p - q).abs()));
        assert!(err <= 0.02 * range, "{dev} {config:?}: int8 off by {err} of {range}");
        let on_cpu = QuantizedConv2d::new(&conv_cpu, scale)
            .unwrap()
            .forward(&x_cpu)
            .to_vec()
            .unwrap();
        let d = crate::common::max_rel_diff(&got, &on_cpu);
        assert!(d <= 1e-5, "{dev} {config:?}: GPU and CPU differ by {d}");
    }
    let grouped = Conv2d::new(
        4,
        4,
        3,
        ConvConfig {
            groups: 2,
            ..Default::default()
        },
        dev,
    );
    let err = QuantizedConv2d::new(&grouped, 0.1).err().unwrap().to_string();
    assert!(err.contains("2 groups"), "{err}");
}

/// The MNIST CNN (conv-BN-ReLU-pool twice, a linear head) trained 2 epochs, quantized
/// whole — both convolutions with their batch norms folded in, and the head — stays
/// within 1 % of f32 test accuracy; saved (a quarter of the f32 file, about) and
/// loaded, it computes the same values.
#[test]
fn an_int8_mnist_cnn_with_folded_batch_norms_is_within_1_percent_of_f32() {
    let _serial = serial();
    let dev = Device::cpu();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist_5k.csv.gz");
    let (train, test) = wgnn::data::load_mnist_csv_gz(path).unwrap().shuffle_split(0, 4000);
    let images = |set: &wgnn::data::Dataset| {
        let x = Tensor::from_vec(set.features.clone(), &[set.n, 1, 28, 28], &dev).unwrap();
        (x, Tensor::from_labels(&set.labels, &dev).unwrap())
    };
    wgnn::manual_seed(0);
    let mut model = crate::common::example_cnn(&dev);
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: 2e-3,
            ..Default::default()
        },
    );
    for e in 0..2 {
        for rows in wgnn::data::permutation(train.n, e).chunks(64) {
            let (x, y) = images(&train.select(rows));
            opt.step(&loss::cross_entropy(&model.forward(&x), &y).backward().unwrap())
                .unwrap();
        }
    }
    model.set_training(false);
    let (xt, _) = images(&test);
    let accuracy = |logits: Tensor| {
        let p = logits.argmax(1).to_labels().unwrap();
        p.iter().zip(&test.labels).filter(|(a, b)| a == b).count() as f64 / test.n as f64
    };
    let f32_acc = accuracy(nn::inference(|| model.forward(&xt)));
    let dir = std::env::temp_dir().join(format!("wgnn-int8-cnn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    wgnn::io::save_safetensors(&model, dir.join("f32.safetensors")).unwrap();
    let weights: Vec<Vec<f32>> = model.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
    let buffers: Vec<Vec<f32>> = model.named_buffers().iter().map(|(_, b)| b.to_vec().unwrap()).collect();
    let (calibration, _) = images(&train.select(&(0..256).collect::<Vec<_>>()));
    let q = QuantizedSequential::quantize(model, &calibration, Calibration::MinMax).unwrap();
    assert_eq!((q.quantized_convs().len(), q.quantized_layers().len()), (2, 1));
    let int8_acc = accuracy(q.forward(&xt));
    eprintln!("CNN: f32 {f32_acc}, int8 {int8_acc}");
    assert!(f32_acc >= 0.9, "the CNN reaches only {f32_acc}");
    assert!(int8_acc >= f32_acc - 0.01, "f32 {f32_acc}, int8 {int8_acc}");
    q.save(dir.join("int8.safetensors")).unwrap();
    let mut fresh = crate::common::example_cnn(&dev);
    for (p, w) in fresh.parameters().iter().zip(&weights) {
        p.assign(w).unwrap();
    }
    for ((_, b), v) in fresh.named_buffers().iter().zip(&buffers) {
        b.assign(v).unwrap();
    }
    fresh.set_training(false);
    let loaded = QuantizedSequential::load(fresh, dir.join("int8.safetensors")).unwrap();
    let x = xt.narrow(0, 0, 64);
    assert!(q.forward(&x).to_vec().unwrap() == loaded.forward(&x).to_vec().unwrap());
    let size = |name: &str| std::fs::metadata(dir.join(name)).unwrap().len();
    let (f, i) = (size("f32.safetensors"), size("int8.safetensors"));
    eprintln!("CNN files: f32 {f} bytes, int8 {i}");
    assert!(i * 10 < f * 4, "int8 file {i} bytes, f32 {f}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Steps with loss scaling (its check for non-finite gradients is a graph over every
/// gradient) build the same graphs every step: after the first, no plan is compiled
/// — the gradients are iterated in parameter order, not a hash map's (which gave a
/// new plan every step, and a slower one as the cache grew).
fn loss_scaled_mixed_precision_steps_reuse_their_plans(dev: &Device) {
    let _serial = serial();
    let dev = crate::common::private(dev);
    let x = Tensor::randn(&[8, 6], 4, &dev).unwrap();
    let y = Tensor::from_labels(&(0..8).map(|i| i % 3).collect::<Vec<u32>>(), &dev).unwrap();
    wgnn::manual_seed(7);
    let model = wgnn::amp::Mixed(mlp(&dev, 5));
    let mut opt = Adam::new(model.parameters(), AdamConfig::default());
    let mut scaler = GradScaler::new(GradScalerConfig::default()).unwrap();
    let mut compiled = Vec::new();
    for _ in 0..6 {
        let before = dev.stats().plan_cache_misses;
        let l = loss::cross_entropy(&model.forward(&x), &y);
        let grads = scaler.unscale(&scaler.scale(&l).backward().unwrap()).clip_norm(1.0);
        scaler.step_unscaled(&mut opt, &grads).unwrap();
        compiled.push(dev.stats().plan_cache_misses - before);
    }
    assert!(
        compiled[2..].iter().all(|&n| n == 0),
        "{dev}: plans compiled per step {compiled:?}"
    );
}
