//! `bench --peer-mlp`: the seed's MLP on Fashion-MNIST under the protocol of the peer
//! programs in `../shared/peers` (Burn, Candle, PyTorch), so that `benches/peers.sh`
//! compares like with like: 784 → 128 ReLU → 10, softmax cross-entropy, Adam 1e-3,
//! pixels in [0, 1], the training images reshuffled every epoch by splitmix64 seeded
//! 0x5EED; an epoch's time covers gathering each batch on the host, uploading it,
//! forward, loss, backward, the update and a final loss readback; the test set is
//! evaluated after the timing.
//!
//! `bench --peer-mlp cpu|gpu BATCH EPOCHS [SUBSET] [IDX_DIR] [--fit]`: `--fit` trains
//! with `Model::fit` (its own shuffling and batching, no validation) instead of the
//! PyTorch-style loop. Prints one line per epoch and `median epoch N s`.

use std::time::Instant;

use wgnn::data::{self, Dataset};
use wgnn::metrics::Metric;
use wgnn::nn::{self, Module};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::train::{FitConfig, Loss};
use wgnn::{Device, Result, Tensor};

use super::mnist_step::mlp;

/// splitmix64, as the peers shuffle.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn shuffle(&mut self, v: &mut [usize]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// The values of `--peer-mlp`, parsed (by [`Args::from_values`]) as a command line of their own.
#[derive(clap::Parser)]
#[command(name = "bench --peer-mlp")]
pub struct Args {
    /// The device.
    #[arg(value_parser = ["cpu", "gpu"])]
    device: String,
    /// Rows per batch.
    #[arg(default_value_t = 32)]
    batch: usize,
    /// Epochs, each timed.
    #[arg(default_value_t = 3)]
    epochs: usize,
    /// Training images used (0: all).
    #[arg(default_value_t = 0)]
    subset: usize,
    /// The folder of Fashion-MNIST's IDX files.
    #[arg(default_value = "/usr/share/datasets/fashion-mnist")]
    idx_dir: std::path::PathBuf,
}

impl Args {
    /// Parses the values given to `--peer-mlp`; on an error, prints it with the usage
    /// and exits with status 2, as clap does for `bench`'s own flags.
    pub fn from_values(values: &[String]) -> Args {
        <Args as clap::Parser>::parse_from(std::iter::once("bench --peer-mlp").chain(values.iter().map(String::as_str)))
    }
}

/// Runs the mode; `fit` is `--fit`.
pub fn main(args: &Args, fit: bool) -> Result<()> {
    let dev = Device::from_name(&args.device)?;
    let (batch, epochs, subset, dir) = (args.batch, args.epochs, args.subset, &args.idx_dir);
    let mut train = data::load_idx_dir(dir, "train")?;
    let test = data::load_idx_dir(dir, "t10k")?;
    if subset > 0 && subset < train.n {
        train = train.select(&(0..subset).collect::<Vec<_>>());
    }
    println!(
        "wgnn {} {} batch={batch} epochs={epochs} train={} test={} ({})",
        env!("CARGO_PKG_VERSION"),
        if fit { "fit" } else { "loop" },
        train.n,
        test.n,
        dev.info()
    );
    wgnn::manual_seed(0);
    let net = mlp(&dev);
    let times = if fit {
        fit_epochs(net, &train, &test, batch, epochs, &dev)?
    } else {
        loop_epochs(net, &train, &test, batch, epochs, &dev)?
    };
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!("median epoch {:.2}s", sorted[sorted.len() / 2]);
    Ok(())
}

fn accuracy(net: &nn::Sequential, test: &Dataset, dev: &Device) -> Result<f64> {
    let (x, y) = test.tensors(dev)?;
    let predicted = net.forward(&x).argmax(1).to_labels()?;
    let labels = y.to_labels()?;
    Ok(predicted.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64)
}

fn loop_epochs(
    mut net: nn::Sequential,
    train: &Dataset,
    test: &Dataset,
    batch: usize,
    epochs: usize,
    dev: &Device,
) -> Result<Vec<f64>> {
    let mut opt = Adam::new(net.parameters(), AdamConfig::default());
    let mut rng = SplitMix(0x5EED);
    let mut order: Vec<usize> = (0..train.n).collect();
    let mut yb = Vec::with_capacity(batch);
    let mut times = Vec::new();
    for epoch in 1..=epochs {
        rng.shuffle(&mut order);
        net.train();
        let started = Instant::now();
        let mut last = None;
        for rows in order.chunks(batch) {
            // The batch's rows gathered into a fresh Vec that the tensor takes over
            // (one copy, as PyTorch's `x[idx]`).
            let mut xb = Vec::with_capacity(rows.len() * train.dim);
            yb.clear();
            for &r in rows {
                xb.extend_from_slice(&train.features[r * train.dim..(r + 1) * train.dim]);
                yb.push(train.labels[r]);
            }
            let x = Tensor::from_vec(xb, &[rows.len(), train.dim], dev)?;
            let y = Tensor::from_labels(&yb, dev)?;
            let loss = nn::loss::cross_entropy(&net.forward(&x), &y);
            opt.step(&loss.backward()?)?;
            last = Some(loss);
        }
        let loss = last.expect("one batch at least").item()?;
        let seconds = started.elapsed().as_secs_f64();
        times.push(seconds);
        net.eval();
        println!(
            "epoch {epoch}: {seconds:.2}s ({:.0} samples/s) loss {loss:.4} test acc {:.4}",
            train.n as f64 / seconds,
            accuracy(&net, test, dev)?
        );
    }
    Ok(times)
}

fn fit_epochs(
    net: nn::Sequential,
    train: &Dataset,
    test: &Dataset,
    batch: usize,
    epochs: usize,
    dev: &Device,
) -> Result<Vec<f64>> {
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let mut model = net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy])?;
    let (x, y) = train.tensors(dev)?;
    let config = FitConfig {
        epochs,
        batch_size: batch,
        seed: Some(0x5EED),
        verbose: false,
        layer_stats: false,
        ..Default::default()
    };
    let history = model.fit(&x, &y, config)?;
    // An epoch's `samples_per_sec` covers its training pass and the read of its totals.
    let rates = history.get("samples_per_sec").unwrap_or_default();
    let losses = history.get("loss").unwrap_or_default();
    let times: Vec<f64> = rates.iter().map(|r| train.n as f64 / r).collect();
    for (epoch, (seconds, loss)) in times.iter().zip(losses).enumerate() {
        println!(
            "epoch {}: {seconds:.2}s ({:.0} samples/s) loss {loss:.4}",
            epoch + 1,
            train.n as f64 / seconds
        );
    }
    println!("test acc {:.4}", accuracy(&model.net, test, dev)?);
    Ok(times)
}
