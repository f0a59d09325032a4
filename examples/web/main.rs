//! The engine of the web page in this folder: wgnn compiled to wasm32 trains the XOR
//! MLP of `examples/xor.rs`, and on the MNIST subset the MLP of `examples/mnist.rs` or
//! the CNN of `examples/cnn.rs`, in a browser tab, on the browser's WebGPU, or on the
//! CPU backend compiled to wasm when the browser has no WebGPU (or the page asks for
//! `?device=cpu`). `index.html` fetches the data from its own origin, calls these
//! functions and draws the curves that `on_epoch` reports.
//! Build with `examples/web/build.sh`; on native targets this file compiles to nothing.
#![cfg(target_arch = "wasm32")]

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wgnn::data;
use wgnn::data::Dataset;
use wgnn::metrics::Metric;
use wgnn::nn::{self, BatchNorm2d, Conv2d, ConvConfig, Flatten, Linear, MaxPool2d, Module, Sequential};
use wgnn::optim::lr::{CosineAnnealingLr, LrSchedule};
use wgnn::optim::{Adam, AdamConfig};
use wgnn::quantize::{Calibration, QuantizedSequential};
use wgnn::train::{FitConfig, Loss, Model};
use wgnn::{Device, Tensor};

/// The browser's WebGPU device when `want_gpu` and the browser has one, else the
/// CPU, with a line saying which and why.
async fn device(want_gpu: bool) -> (Device, String) {
    if !want_gpu {
        return (Device::cpu(), "cpu (asked for with ?device=cpu)".into());
    }
    match Device::gpu_async().await {
        Ok(gpu) => {
            // Browsers tell wgpu little about the adapter: its kind, rarely its name.
            let info = gpu.info();
            let line = format!(
                "gpu: WebGPU ({}, {} adapter) {}",
                info.backend, info.device_type, info.name
            );
            (gpu, line.trim_end().to_string())
        }
        Err(e) => (Device::cpu(), format!("cpu: no WebGPU here ({e})")),
    }
}

fn js_error(e: wgnn::Error) -> JsValue {
    JsValue::from_str(&e.to_string())
}

/// The device training would run on, as a line for the page.
#[wasm_bindgen]
pub async fn device_info(want_gpu: bool) -> String {
    device(want_gpu).await.1
}

/// Trains `model` one epoch per `fit_async` call, calling
/// `on_epoch(epoch, loss, accuracy, val_accuracy, samples_per_sec)` after each and
/// awaiting the promise it returns (so the page repaints between epochs, on the CPU
/// backend too); returns the last epoch's logs as `[loss, accuracy, val_accuracy]`.
/// A `schedule` sets the optimizer's learning rate before each epoch, as `fit`'s
/// `LrScheduler` callback would over the whole run.
async fn fit_with_curves(
    model: &mut Model,
    (x, y): (&Tensor, &Tensor),
    validation: Option<(Tensor, Tensor)>,
    (epochs, batch_size): (usize, usize),
    mut schedule: Option<Box<dyn LrSchedule>>,
    on_epoch: &Function,
) -> Result<Vec<f64>, JsValue> {
    let mut last = Vec::new();
    for epoch in 0..epochs {
        if let Some(s) = &mut schedule {
            if epoch > 0 {
                s.step();
            }
            model.optimizer.set_lr(s.lr());
        }
        let config = FitConfig {
            epochs: 1,
            batch_size,
            validation_data: validation.clone(),
            seed: Some(epoch as u64),
            verbose: false,
            layer_stats: false,
            ..Default::default()
        };
        let history = model.fit_async(x, y, config).await.map_err(js_error)?;
        let log = |name: &str| {
            history
                .history
                .get(name)
                .and_then(|v| v.last().copied())
                .unwrap_or(f64::NAN)
        };
        last = vec![log("loss"), log("accuracy"), log("val_accuracy")];
        let args = js_sys::Array::of5(
            &(epoch + 1).into(),
            &last[0].into(),
            &last[1].into(),
            &last[2].into(),
            &log("samples_per_sec").into(),
        );
        let answer = on_epoch.apply(&JsValue::NULL, &args)?;
        if let Ok(promise) = answer.dyn_into::<Promise>() {
            JsFuture::from(promise).await?;
        }
    }
    Ok(last)
}

/// XOR with a 2-8-1 tanh MLP (sigmoid output, binary cross-entropy, Adam 0.05),
/// full batch, as `tests/web.rs` trains it.
#[wasm_bindgen]
pub async fn train_xor(want_gpu: bool, epochs: usize, on_epoch: Function) -> Result<Vec<f64>, JsValue> {
    let dev = device(want_gpu).await.0;
    wgnn::manual_seed(0);
    let net = Sequential::new()
        .add(Linear::new(2, 8, &dev))
        .add(nn::Tanh)
        .add(Linear::new(8, 1, &dev))
        .add(nn::Sigmoid);
    let config = AdamConfig {
        lr: 0.05,
        ..Default::default()
    };
    let opt = Adam::new(net.parameters(), config);
    let mut model = net
        .compile(opt, Loss::BinaryCrossEntropy, &[Metric::Accuracy])
        .map_err(js_error)?;
    let x = Tensor::from_vec(vec![0., 0., 0., 1., 1., 0., 1., 1.], &[4, 2], &dev).map_err(js_error)?;
    let y = Tensor::from_vec(vec![0., 1., 1., 0.], &[4, 1], &dev).map_err(js_error)?;
    fit_with_curves(&mut model, (&x, &y), None, (epochs, 4), None, &on_epoch).await
}

/// The MNIST subset (`csv_gz`: the bytes of `data/mnist_5k.csv.gz`) shuffled with
/// seed 0 and split 4000 train / 1000 test, as the native examples split it; with
/// `limit` > 0, the first `limit` training images only (the test set stays whole).
fn mnist_sets(csv_gz: &[u8], limit: usize) -> Result<(Dataset, Dataset), JsValue> {
    let all = data::parse_mnist_csv_gz(csv_gz, "mnist_5k.csv.gz").map_err(js_error)?;
    let (mut train, test) = all.shuffle_split(0, 4000);
    if limit > 0 && limit < train.n {
        train = train.select(&(0..limit).collect::<Vec<_>>());
    }
    Ok((train, test))
}

/// The MLP of `examples/mnist.rs` on the same data and split: 784 → 128 ReLU → 10,
/// Adam(1e-3), on [`mnist_sets`] in batches of `batch` (the page's default: 32, as
/// `examples/mnist.rs`), the test set as validation data. Then the trained MLP in
/// int8 (`wgnn::quantize`: per-channel weights, activation scales calibrated on 256
/// training images, the int8 GEMM on the same device): the last epoch's loss,
/// accuracy and test accuracy, and the int8 model's test accuracy.
#[wasm_bindgen]
pub async fn train_mnist(
    want_gpu: bool,
    csv_gz: Vec<u8>,
    epochs: usize,
    limit: usize,
    batch: usize,
    on_epoch: Function,
) -> Result<Vec<f64>, JsValue> {
    let dev = device(want_gpu).await.0;
    let (train, test) = mnist_sets(&csv_gz, limit)?;
    wgnn::manual_seed(0);
    let net = Sequential::new()
        .add(Linear::new(train.dim, 128, &dev))
        .add(nn::Relu)
        .add(Linear::new(128, 10, &dev));
    let config = AdamConfig {
        lr: 1e-3,
        ..Default::default()
    };
    let opt = Adam::new(net.parameters(), config);
    let mut model = net
        .compile(opt, Loss::CrossEntropy, &[Metric::Accuracy])
        .map_err(js_error)?;
    let (x, y) = train.tensors(&dev).map_err(js_error)?;
    let validation = test.tensors(&dev).map_err(js_error)?;
    let mut last = fit_with_curves(
        &mut model,
        (&x, &y),
        Some(validation.clone()),
        (epochs, batch),
        None,
        &on_epoch,
    )
    .await?;
    last.push(int8_accuracy(model.net, &x, &validation.0, &test).await?);
    Ok(last)
}

/// The test accuracy of `net` quantized to int8 on its own device (activation scales
/// calibrated on the first 256 training rows of `x`; convolutions with their batch
/// norms folded in).
async fn int8_accuracy(mut net: Sequential, x: &Tensor, test_x: &Tensor, test: &Dataset) -> Result<f64, JsValue> {
    net.set_training(false);
    let calibration = x.narrow(0, 0, 256.min(x.shape()[0]));
    let int8 = QuantizedSequential::quantize_async(net, &calibration, Calibration::MinMax)
        .await
        .map_err(js_error)?;
    let predicted = int8.forward(test_x).argmax(1).to_vec_async().await.map_err(js_error)?;
    let right = predicted
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| **p as u32 == **l)
        .count();
    Ok(right as f64 / test.n as f64)
}

/// Images as `[n, 1, 28, 28]` and their labels.
fn images(set: &Dataset, dev: &Device) -> Result<(Tensor, Tensor), JsValue> {
    let x = Tensor::from_vec(set.features.clone(), &[set.n, 1, 28, 28], dev).map_err(js_error)?;
    Ok((x, Tensor::from_labels(&set.labels, dev).map_err(js_error)?))
}

/// The CNN of `examples/cnn.rs`: conv(3×3, 16) · batch norm · ReLU · max-pool 2,
/// conv(3×3, 32) · batch norm · ReLU · max-pool 2, flatten, 32·7·7 → 10; Adam(2e-3)
/// cosine-annealed to 1/100 of it over the epochs, on [`mnist_sets`] as
/// `[n, 1, 28, 28]` images in batches of `batch` (the page's default: 64, as
/// `examples/cnn.rs`), the test set as validation data. Then the CNN in int8 (both
/// convolutions with their batch norms folded in, and the head), as the MLP.
#[wasm_bindgen]
pub async fn train_cnn(
    want_gpu: bool,
    csv_gz: Vec<u8>,
    epochs: usize,
    limit: usize,
    batch: usize,
    on_epoch: Function,
) -> Result<Vec<f64>, JsValue> {
    let dev = device(want_gpu).await.0;
    let (train, test) = mnist_sets(&csv_gz, limit)?;
    wgnn::manual_seed(0);
    let same = ConvConfig {
        padding: 1,
        ..Default::default()
    };
    let net = Sequential::new()
        .add(Conv2d::new(1, 16, 3, same, &dev))
        .add(BatchNorm2d::new(16, &dev))
        .add(nn::Relu)
        .add(MaxPool2d::new(2, 2))
        .add(Conv2d::new(16, 32, 3, same, &dev))
        .add(BatchNorm2d::new(32, &dev))
        .add(nn::Relu)
        .add(MaxPool2d::new(2, 2))
        .add(Flatten)
        .add(Linear::new(32 * 7 * 7, 10, &dev));
    let lr = 2e-3;
    let config = AdamConfig {
        lr,
        ..Default::default()
    };
    let opt = Adam::new(net.parameters(), config);
    let mut model = net
        .compile(opt, Loss::CrossEntropy, &[Metric::Accuracy])
        .map_err(js_error)?;
    let (x, y) = images(&train, &dev)?;
    let validation = images(&test, &dev)?;
    let cosine = CosineAnnealingLr::new(lr as f64, epochs.max(1), lr as f64 / 100.0);
    let schedule: Option<Box<dyn LrSchedule>> = Some(Box::new(cosine));
    let curves = (epochs, batch);
    let mut last = fit_with_curves(
        &mut model,
        (&x, &y),
        Some(validation.clone()),
        curves,
        schedule,
        &on_epoch,
    )
    .await?;
    last.push(int8_accuracy(model.net, &x, &validation.0, &test).await?);
    Ok(last)
}
