//! Where `fit`'s batches come from: tensors already on the device are gathered
//! there (the data set never crosses the bus again: the device's counters show it),
//! host rows are batched on a background thread with the same result as in turn,
//! and a `Normalize` layer carries `standardize`'s statistics with the model.

use crate::common::{gpu, serial};
use wgnn::data::{self, DataLoader, Dataset};
use wgnn::metrics::Metric;
use wgnn::nn::{self, Linear, Module, Normalize, Sequential};
use wgnn::optim::{Adam, AdamConfig};
use wgnn::train::{Callback, Control, FitConfig, Loss, Model, Scores};
use wgnn::{Device, Tensor};

/// `rows` rows of `dim` features in three classes, deterministic.
fn blobs(rows: usize, dim: usize) -> Dataset {
    let labels: Vec<u32> = (0..rows).map(|r| (r * 7 % 3) as u32).collect();
    let features = (0..rows * dim)
        .map(|i| {
            let (r, c) = (i / dim, i % dim);
            labels[r] as f32 * if c % 3 == labels[r] as usize { 1.5 } else { -0.5 } + ((i * 31 % 17) as f32 / 17.0)
        })
        .collect();
    Dataset {
        features,
        labels,
        n: rows,
        dim,
    }
}

fn classifier(dim: usize, dev: &Device) -> Model {
    let net = Sequential::new()
        .add(Linear::new(dim, 16, dev))
        .add(nn::Relu)
        .add(Linear::new(16, 3, dev));
    let opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
    );
    net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy]).unwrap()
}

fn quiet(epochs: usize) -> FitConfig {
    FitConfig::new()
        .epochs(epochs)
        .batch_size(50)
        .seed(5)
        .layer_stats(false)
        .verbose(0)
}

crate::device_tests!(fit_on_device_tensors_gathers_batches_there_and_never_reads_the_data_back);

fn fit_on_device_tensors_gathers_batches_there_and_never_reads_the_data_back(dev: &Device) {
    let _serial = serial();
    let dev = crate::common::private(dev);
    let (rows, dim, epochs) = (2000, 64, 3);
    let data = blobs(rows, dim);
    let (x, y) = data.tensors(&dev).unwrap();
    x.realize().unwrap();
    y.realize().unwrap();
    let data_bytes = (rows * dim * 4) as u64;
    let fit = |seed: u64| {
        wgnn::manual_seed(seed);
        let mut model = classifier(dim, &dev);
        let before = dev.stats();
        let history = model.fit(&x, &y, quiet(epochs)).unwrap();
        let after = dev.stats();
        assert!(*history.history["accuracy"].last().unwrap() > 0.9);
        let (up, down) = (
            after.bytes_uploaded - before.bytes_uploaded,
            after.bytes_downloaded - before.bytes_downloaded,
        );
        println!("{dev}: fit on device tensors uploaded {up} B, downloaded {down} B (data set {data_bytes} B)");
        (up, down)
    };
    // The first fit uploads the data set once and keeps it on the device; per batch
    // only its row numbers go up (4 B a row), per epoch only totals come back.
    let (up, down) = fit(1);
    assert!(
        up < data_bytes + data_bytes / 8,
        "{dev}: {up} B uploaded for a {data_bytes} B data set"
    );
    assert!(down < 4096, "{dev}: {down} B downloaded");
    let (up, down) = fit(2);
    assert!(
        up < data_bytes / 8,
        "{dev}: {up} B uploaded by a second fit on the same tensors"
    );
    assert!(down < 4096, "{dev}: {down} B downloaded");

    // The host path uploads every batch's rows: the counters are live.
    wgnn::manual_seed(1);
    let mut host = classifier(dim, &dev);
    let before = dev.stats();
    host.fit_dataset(&data, quiet(epochs)).unwrap();
    let up = dev.stats().bytes_uploaded - before.bytes_uploaded;
    if up > 0 {
        assert!(
            up >= data_bytes * epochs as u64,
            "{dev}: host batches uploaded only {up} B"
        );
    }
}

crate::device_tests!(fit_keeps_device_memory_flat_from_batch_to_batch_within_an_epoch);

/// Records the device's live buffer bytes after every batch.
struct LiveBytes {
    dev: Device,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Callback for LiveBytes {
    fn on_epoch_end(&mut self, _: usize, _: &Scores, _: &mut Control<'_>) -> wgnn::Result<()> {
        Ok(())
    }
    fn on_batch_end(&mut self, _: &mut Control<'_>) -> wgnn::Result<()> {
        self.seen.lock().unwrap().push(self.dev.stats().live_buffer_bytes);
        Ok(())
    }
}

/// The running loss and accuracy sums that `fit` carries from batch to batch hold
/// their values only: once they held every earlier batch's graph (its inputs,
/// outputs and gradients) until the epoch ended, so each step's buffers were new
/// memory.
fn fit_keeps_device_memory_flat_from_batch_to_batch_within_an_epoch(dev: &Device) {
    let _serial = serial();
    let dev = crate::common::private(dev);
    let data = blobs(2000, 64);
    let (x, y) = data.tensors(&dev).unwrap();
    wgnn::manual_seed(1);
    let mut model = classifier(64, &dev);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut config = quiet(1);
    config.callbacks.push(Box::new(LiveBytes {
        dev: dev.clone(),
        seen: seen.clone(),
    }));
    model.fit(&x, &y, config).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 40, "{dev}: batches");
    assert_eq!(
        seen[39], seen[4],
        "{dev}: live buffer bytes after batch 40 against batch 5: {seen:?}"
    );
}

crate::device_tests!(host_batches_from_a_background_thread_train_as_device_batches_bit_for_bit);

fn host_batches_from_a_background_thread_train_as_device_batches_bit_for_bit(dev: &Device) {
    let _serial = serial();
    let data = blobs(230, 6);
    let batches = |prefetch: bool| {
        let mut loader = DataLoader::from_dataset(&data, 32)
            .unwrap()
            .shuffle(4)
            .prefetch(prefetch);
        let mut all = Vec::new();
        for _ in 0..2 {
            for b in loader.epoch(dev) {
                let (x, y) = b.unwrap();
                all.push((x.to_vec().unwrap(), y.to_labels().unwrap()));
            }
        }
        all
    };
    let background = batches(true);
    assert_eq!(background.len(), 16);
    assert_eq!(
        background,
        batches(false),
        "{dev}: the background thread changed the batches"
    );

    let train = |on_device: bool| {
        wgnn::manual_seed(8);
        let mut model = classifier(6, dev);
        let config = quiet(3).validation_split(0.2);
        let history = if on_device {
            let (x, y) = data.tensors(dev).unwrap();
            model.fit(&x, &y, config).unwrap()
        } else {
            model.fit_dataset(&data, config).unwrap()
        };
        let mut logs = history.history;
        logs.remove("samples_per_sec"); // a timing
        let weights: Vec<Vec<f32>> = model.net.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
        (logs, weights)
    };
    assert_eq!(train(false), train(true), "{dev}: host and device batching differ");
}

#[derive(Module)]
struct Scaled {
    norm: Normalize,
    head: Linear,
}

impl Module for Scaled {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.head.forward(&self.norm.forward(x))
    }
}

#[test]
fn a_normalize_layer_holds_standardizes_statistics_and_is_saved_loaded_and_moved() {
    let _serial = serial();
    let dev = Device::cpu();
    let raw = blobs(90, 5);
    let (x, _) = raw.tensors(&dev).unwrap();
    let mut scaled = raw.clone();
    let (mean, std) = data::standardize(&mut scaled, &mut []);
    let norm = Normalize::adapt(&x).unwrap();
    assert_eq!(norm.mean.to_vec().unwrap(), mean, "adapt computes standardize's mean");
    assert_eq!(norm.std.to_vec().unwrap(), std, "and its std");
    let from_stats = Normalize::from_stats(&mean, &std, &dev).unwrap();
    let out = from_stats.forward(&x).to_vec().unwrap();
    let d = crate::common::max_rel_diff(&out, &scaled.features);
    assert!(d < 1e-5, "Normalize gives standardize's features ({d:e} apart)");

    let model = Scaled {
        norm,
        head: Linear::new(5, 2, &dev),
    };
    let buffers: Vec<String> = model.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(buffers, ["norm.mean", "norm.std"]);
    assert_eq!(model.parameters().len(), 2, "the statistics are not trained");
    let path = std::env::temp_dir().join(format!("wgnn-normalize-{}.safetensors", std::process::id()));
    wgnn::io::save_safetensors(&model, &path).unwrap();
    let mut fresh = Scaled {
        norm: Normalize::new(5, &dev),
        head: Linear::new(5, 2, &dev),
    };
    wgnn::io::load_safetensors(&mut fresh, &path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(fresh.norm.mean.to_vec().unwrap(), mean);
    let want = model.forward(&x).to_vec().unwrap();
    assert_eq!(
        fresh.forward(&x).to_vec().unwrap(),
        want,
        "the reloaded model scores the same"
    );
    if let Some(gpu) = gpu() {
        fresh.to(&gpu).unwrap();
        assert!(fresh.norm.std.device().same(&gpu), "Module::to moves the buffers");
        let on_gpu = fresh.forward(&x.to(&gpu).unwrap()).to_vec().unwrap();
        assert!(crate::common::max_rel_diff(&on_gpu, &want) < 1e-5);
    }
}
