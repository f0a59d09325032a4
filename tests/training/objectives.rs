//! Objectives beyond the built-in losses: a custom loss written as a closure,
//! class-weighted cross-entropy (PyTorch's `CrossEntropyLoss(weight=…)`, against its
//! values), Keras' `sample_weight` in `fit`, and regression targets read from a CSV.

use crate::common::{fixture, read_tensor, serial};
use wgnn::metrics::Metric;
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, Sgd, SgdConfig};
use wgnn::train::{FitConfig, Loss, Model};
use wgnn::{Device, Tensor};

/// Full-batch, unshuffled, quiet: one step per epoch, the same on every run.
fn full_batch(rows: usize, epochs: usize) -> FitConfig {
    FitConfig::new()
        .epochs(epochs)
        .batch_size(rows)
        .shuffle(false)
        .layer_stats(false)
        .verbose(0)
}

crate::device_tests!(class_weighted_cross_entropy_matches_pytorch_and_so_does_a_fit_step);

fn class_weighted_cross_entropy_matches_pytorch_and_so_does_a_fit_step(dev: &Device) {
    let _serial = serial();
    let file = fixture("weighted_loss.safetensors");
    let read = |name: &str| read_tensor(&file, name);
    let tensor = |name: &str| {
        let (shape, values) = read(name);
        Tensor::from_vec(values, &shape, dev).unwrap()
    };
    let labels: Vec<u32> = read("labels").1.iter().map(|&v| v as u32).collect();
    let y = Tensor::from_labels(&labels, dev).unwrap();
    let logits = tensor("logits").requires_grad().unwrap();
    let loss = nn::loss::cross_entropy_weighted(&logits, &y, &tensor("weights"));
    let got = loss.item().unwrap();
    let want = read("loss").1[0];
    assert!((got - want).abs() <= 1e-6, "{dev}: loss {got} vs PyTorch's {want}");
    let grads = loss.backward().unwrap();
    let grad = grads.get(&logits).unwrap().to_vec().unwrap();
    let diff = crate::common::max_rel_diff(&grad, &read("grad").1);
    assert!(diff <= 1e-6, "{dev}: the gradient is {diff:e} from PyTorch's");

    // One full-batch SGD step of `fit` with the class-weighted loss.
    let mut linear = Linear::new(5, 4, dev);
    linear.weight = tensor("linear.weight").requires_grad().unwrap();
    linear.bias = Some(tensor("linear.bias").requires_grad().unwrap());
    let opt = Sgd::new(
        linear.parameters(),
        SgdConfig {
            lr: 0.5,
            ..Default::default()
        },
    );
    let weights = read("weights").1;
    let mut model = Model::new(linear, opt, Loss::cross_entropy_weighted(&weights).unwrap(), &[]).unwrap();
    let history = model.fit(&tensor("x"), &y, full_batch(7, 1)).unwrap();
    assert!(history.history["loss"][0].is_finite());
    for (name, param) in [
        ("weight", &model.net.weight),
        ("bias", model.net.bias.as_ref().unwrap()),
    ] {
        let d = crate::common::max_rel_diff(&param.to_vec().unwrap(), &read(&format!("step.{name}")).1);
        assert!(d <= 2e-6, "{dev}: {name} after one step is {d:e} from PyTorch's");
    }
}

/// Keras' rule with class weights: `Σ sᵢ·w[yᵢ]·ceᵢ / Σ w[yᵢ]`, so weights of one are none.
#[test]
fn sample_weights_scale_each_rows_loss_and_weights_of_one_change_nothing() {
    let _serial = serial();
    let dev = Device::cpu();
    let file = fixture("weighted_loss.safetensors");
    let read = |name: &str| read_tensor(&file, name);
    let labels: Vec<u32> = read("labels").1.iter().map(|&v| v as u32).collect();
    let y = Tensor::from_labels(&labels, &dev).unwrap();
    let (x_shape, x) = read("x");
    let x = Tensor::from_vec(x, &x_shape, &dev).unwrap();
    let weights = read("weights").1;
    let evaluate_first_epoch = |sample_weight: Option<Vec<f32>>| {
        let mut linear = Linear::new(5, 4, &dev);
        linear.weight = Tensor::from_vec(read("linear.weight").1, &[4, 5], &dev)
            .unwrap()
            .requires_grad()
            .unwrap();
        linear.bias = Some(
            Tensor::from_vec(read("linear.bias").1, &[4], &dev)
                .unwrap()
                .requires_grad()
                .unwrap(),
        );
        let opt = Sgd::new(
            linear.parameters(),
            SgdConfig {
                lr: 0.0,
                ..Default::default()
            },
        );
        let loss = Loss::cross_entropy_weighted(&weights).unwrap();
        let mut model = Model::new(linear, opt, loss, &[]).unwrap();
        let mut config = full_batch(7, 1);
        if let Some(w) = sample_weight {
            config = config.sample_weight(&Tensor::from_vec(w, &[7], &dev).unwrap());
        }
        model.fit(&x, &y, config).unwrap().history["loss"][0]
    };
    let plain = evaluate_first_epoch(None);
    let want = f64::from(read("start.loss").1[0]);
    assert!(
        (plain - want).abs() < 1e-6,
        "class-weighted {plain} vs PyTorch's {want}"
    );
    let ones = evaluate_first_epoch(Some(vec![1.0; 7]));
    assert!((ones - plain).abs() < 1e-6, "weights of one: {ones} vs {plain}");
    let weighted = evaluate_first_epoch(Some(read("sample_weight").1));
    let want = f64::from(read("start.loss_sample_weighted").1[0]);
    assert!((weighted - want).abs() < 1e-6, "sample-weighted {weighted} vs {want}");
}

/// A regression whose last fifth of rows has corrupted targets: with those rows
/// weighted 0 the model fits the clean rows; without, it is pulled off them.
#[test]
fn zero_sample_weights_keep_corrupted_rows_out_of_a_regression() {
    let _serial = serial();
    let dev = Device::cpu();
    let rows = 200;
    let xs: Vec<f32> = (0..rows * 2).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let clean = |r: usize| 2.0 * xs[2 * r] - xs[2 * r + 1] + 0.5;
    let ys: Vec<f32> = (0..rows).map(|r| if r % 5 == 4 { 40.0 } else { clean(r) }).collect();
    let x = Tensor::from_vec(xs.clone(), &[rows, 2], &dev).unwrap();
    let y = Tensor::from_vec(ys, &[rows, 1], &dev).unwrap();
    let w: Vec<f32> = (0..rows).map(|r| if r % 5 == 4 { 0.0 } else { 1.0 }).collect();
    let clean_rmse = |weighted: bool| {
        wgnn::manual_seed(6);
        let net = Linear::new(2, 1, &dev);
        let opt = Adam::new(
            net.parameters(),
            AdamConfig {
                lr: 0.05,
                ..Default::default()
            },
        );
        let mut model = Model::new(net, opt, Loss::Mse, &[]).unwrap();
        let mut config = FitConfig::new()
            .epochs(60)
            .batch_size(20)
            .seed(1)
            .layer_stats(false)
            .verbose(0);
        if weighted {
            config = config.sample_weight(&Tensor::from_vec(w.clone(), &[rows], &dev).unwrap());
        }
        model.fit(&x, &y, config).unwrap();
        let pred = model.predict(&x).unwrap().to_vec().unwrap();
        let sq: f64 = (0..rows)
            .filter(|r| r % 5 != 4)
            .map(|r| f64::from(pred[r] - clean(r)).powi(2))
            .sum();
        (sq / (rows as f64 * 0.8)).sqrt()
    };
    let (with, without) = (clean_rmse(true), clean_rmse(false));
    assert!(with < 0.05, "weighted: RMSE {with} on the clean rows");
    assert!(
        without > 1.0,
        "unweighted: RMSE {without} on the clean rows (the outliers should pull it)"
    );
}

/// The same closure as a built-in loss trains to the same weights; a per-row
/// custom loss is averaged; classification metrics come with a custom loss on labels.
#[test]
fn a_custom_loss_trains_as_the_builtin_it_restates() {
    let _serial = serial();
    let dev = Device::cpu();
    let x = Tensor::from_vec(
        (0..64 * 3).map(|i| ((i * 13 % 29) as f32) / 14.0 - 1.0).collect(),
        &[64, 3],
        &dev,
    )
    .unwrap();
    let labels: Vec<u32> = (0..64).map(|i| (i * 7 % 3) as u32).collect();
    let y = Tensor::from_labels(&labels, &dev).unwrap();
    let train = |loss: Loss| {
        wgnn::manual_seed(2);
        let net = Sequential::new()
            .add(Linear::new(3, 8, &dev))
            .add(nn::Tanh)
            .add(Linear::new(8, 3, &dev));
        let opt = Adam::new(
            net.parameters(),
            AdamConfig {
                lr: 0.02,
                ..Default::default()
            },
        );
        let mut model = Model::new(net, opt, loss, &[Metric::Accuracy]).unwrap();
        let mut history = model.fit(&x, &y, full_batch(64, 5).batch_size(16)).unwrap().history;
        history.remove("samples_per_sec"); // a timing
        let weights: Vec<Vec<f32>> = model.net.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
        (history, weights)
    };
    let builtin = train(Loss::CrossEntropy);
    let custom = train(Loss::custom(|logits, labels| nn::loss::cross_entropy(logits, labels)));
    assert_eq!(
        custom, builtin,
        "the closure restating cross-entropy trains bit for bit as it"
    );
    let per_row = train(Loss::custom(nn::loss::cross_entropy_per_row));
    for (a, b) in per_row.1.iter().flatten().zip(builtin.1.iter().flatten()) {
        assert!((a - b).abs() < 1e-5, "a per-row custom loss is averaged: {a} vs {b}");
    }
    assert!(builtin.0["accuracy"].iter().all(|a| (0.0..=1.0).contains(a)));
}

/// `load_csv_regression` reads float targets; a linear model fits them with R² near 1.
#[test]
fn a_regression_csv_loads_float_targets_and_a_model_fits_them() {
    let _serial = serial();
    let dev = Device::cpu();
    let path = std::env::temp_dir().join(format!("wgnn-regression-{}.csv", std::process::id()));
    let mut text = String::from("a,b,target\n");
    for i in 0..300 {
        let (a, b) = ((i % 17) as f32 / 8.0 - 1.0, (i % 23) as f32 / 11.0 - 1.0);
        text += &format!("{a},{b},{}\n", 3.0 * a - 2.0 * b + 0.25);
    }
    std::fs::write(&path, text).unwrap();
    let data = wgnn::data::load_csv_regression(&path, 1).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!((data.n, data.dim), (300, 2));
    assert_eq!(
        data.labels[1],
        3.0 * (1.0 / 8.0 - 1.0) - 2.0 * (1.0 / 11.0 - 1.0) + 0.25
    );
    wgnn::manual_seed(3);
    let net = Linear::new(2, 1, &dev);
    let opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: 0.05,
            ..Default::default()
        },
    );
    let mut model = Model::new(net, opt, Loss::Mse, &[Metric::R2]).unwrap();
    let config = FitConfig::new()
        .epochs(40)
        .batch_size(30)
        .validation_split(0.2)
        .verbose(0);
    let history = model.fit_dataset(&data, config).unwrap();
    let r2 = *history.history["val_r2"].last().unwrap();
    assert!(r2 > 0.99, "validation R² {r2}");
}
