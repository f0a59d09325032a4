//! The engine of the web page in this folder: wgnn compiled to wasm32 trains the XOR
//! MLP and the MNIST-subset MLP of the native examples in a browser tab, on the
//! browser's WebGPU, or on the CPU backend compiled to wasm when the browser has no
//! WebGPU (or the page asks for `?device=cpu`). `index.html` fetches the data from its
//! own origin, calls these functions and draws the curves that `on_epoch` reports.
//! Build with `examples/web/build.sh`; on native targets this file compiles to nothing.
#![cfg(target_arch = "wasm32")]

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wgnn::data;
use wgnn::metrics::Metric;
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig};
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
async fn fit_with_curves(
    model: &mut Model,
    (x, y): (&Tensor, &Tensor),
    validation: Option<(Tensor, Tensor)>,
    epochs: usize,
    batch_size: usize,
    on_epoch: &Function,
) -> Result<Vec<f64>, JsValue> {
    let mut last = Vec::new();
    for epoch in 0..epochs {
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
    fit_with_curves(&mut model, (&x, &y), None, epochs, 4, &on_epoch).await
}

/// The MLP of `examples/mnist.rs` on the same data and split: 784 → 128 ReLU → 10,
/// Adam(1e-3), batch 32, on the 5000-image subset (`csv_gz`: the bytes of
/// `data/mnist_5k.csv.gz`) shuffled with seed 0 and split 4000 train / 1000 test,
/// the test set as validation data.
#[wasm_bindgen]
pub async fn train_mnist(
    want_gpu: bool,
    csv_gz: Vec<u8>,
    epochs: usize,
    on_epoch: Function,
) -> Result<Vec<f64>, JsValue> {
    let dev = device(want_gpu).await.0;
    let all = data::parse_mnist_csv_gz(&csv_gz, "mnist_5k.csv.gz").map_err(js_error)?;
    let (train, test) = all.shuffle_split(0, 4000);
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
    fit_with_curves(&mut model, (&x, &y), Some(validation), epochs, 32, &on_epoch).await
}
