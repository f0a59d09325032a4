//! A small convolutional network — conv(3×3, 16) · batch norm · ReLU · max-pool,
//! conv(3×3, 32) · batch norm · ReLU · max-pool, then a linear head — on 28×28
//! MNIST-format images, trained with `compile` / `fit` (Adam, cosine-annealed learning
//! rate), beside the seed's MLP
//! (784 → 128 ReLU → 10, `examples/mnist.rs`) trained in the same run with the same
//! epochs, batch size, learning rate and seed.
//!
//! By default it trains on the 5000-image MNIST subset committed in `data/`
//! (shuffled with the seed, then split 4000 train / 1000 test). With `--data DIR` it
//! reads standard IDX files (`train-images-idx3-ubyte[.gz]`, …), e.g. Fashion-MNIST at
//! `/usr/share/datasets/fashion-mnist` after `apt-get install dataset-fashion-mnist`
//! (a folder whose name contains "fashion" gets Fashion-MNIST's class names). The
//! test set is `fit`'s validation set.
//!
//! It prints the device, a line per epoch, both models' test accuracy, the per-class
//! accuracy (recall) of both, and writes the CNN's training report to `--out`:
//! `confusion.png` (the test confusion matrix, rows = truth, cells shaded by the
//! row's share), `loss.png`, `accuracy.png`, `lr.png` and `summary.md`.
//!
//! ```text
//! cargo run --release --example cnn -- [--device cpu|gpu] [--data DIR]
//!     [--epochs 5] [--batch 64] [--lr 0.002] [--seed 0] [--limit N]
//!     [--out DIR] [--no-mlp] [--min-accuracy A]
//! ```
//!
//! `benches/cnn_torch.py` is the same CNN in PyTorch, timing an epoch on the same data.

use clap::Parser;
use std::path::PathBuf;

use wgnn::data::{self, Dataset};
use wgnn::metrics::{ConfusionMatrix, Metric};
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::lr::CosineAnnealingLr;
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::train::report::{write_report, Curve, ReportData};
use wgnn::train::{FitConfig, History, Loss, LrScheduler};
use wgnn::{Device, Error, Result, Tensor};

#[path = "common/check.rs"]
mod check;
#[path = "common/device.rs"]
mod device;
#[path = "common/digits_cnn.rs"]
mod digits_cnn;

use digits_cnn::cnn;

const FASHION: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// A small CNN on 28×28 images (MNIST, Fashion-MNIST) beside the seed's MLP.
#[derive(Parser)]
#[command(name = "cnn")]
struct Args {
    /// Fail when the CNN's test accuracy is below it.
    #[arg(long)]
    min_accuracy: Option<f64>,
    #[command(flatten)]
    device: device::DeviceArg,
    /// A folder of standard IDX files (e.g. /usr/share/datasets/fashion-mnist) instead of the committed subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Training epochs (both models).
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Rows per batch (both models).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Adam's learning rate (both models), annealed to 1/100 of it by a cosine over the epochs.
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    /// Seed of initialization, shuffling and the subset's split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Train on the first N training images only (a quick run); the test set is whole.
    #[arg(long)]
    limit: Option<usize>,
    /// Folder for the CNN's training report (confusion.png, curves, summary.md).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("wgnn-cnn"))]
    out: PathBuf,
    /// Skip the MLP baseline.
    #[arg(long)]
    no_mlp: bool,
}

/// Train and test sets, a name for them, and their class names.
fn load(args: &Args) -> Result<(Dataset, Dataset, String, Vec<String>)> {
    let (mut train, test, name, fashion) = match &args.data {
        Some(dir) => {
            let train = data::load_idx_dir(dir, "train")?;
            let test = data::load_idx_dir(dir, "t10k")?;
            let fashion = dir.to_string_lossy().to_lowercase().contains("fashion");
            (train, test, dir.display().to_string(), fashion)
        }
        None => {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist_5k.csv.gz");
            let (train, test) = data::load_mnist_csv_gz(&path)?.shuffle_split(args.seed, 4000);
            (train, test, "MNIST subset (4000 train / 1000 test)".into(), false)
        }
    };
    if train.dim != 28 * 28 || test.dim != 28 * 28 {
        let msg = format!("cnn: expected 28×28 images, got {} and {} pixels", train.dim, test.dim);
        return Err(Error::Invalid(msg));
    }
    if let Some(limit) = args.limit.filter(|&l| l < train.n) {
        train = train.select(&(0..limit).collect::<Vec<_>>());
    }
    let names = match fashion {
        true => FASHION.iter().map(|s| s.to_string()).collect(),
        false => (0..10).map(|d| d.to_string()).collect(),
    };
    Ok((train, test, name, names))
}

/// Images as `[n, 1, 28, 28]` (the CNN) or `[n, 784]` (the MLP), and labels.
fn tensors(set: &Dataset, image: bool, dev: &Device) -> Result<(Tensor, Tensor)> {
    let shape: &[usize] = if image { &[set.n, 1, 28, 28] } else { &[set.n, set.dim] };
    Ok((
        Tensor::from_vec(set.features.clone(), shape, dev)?,
        Tensor::from_labels(&set.labels, dev)?,
    ))
}

/// The seed's MLP: 784 → 128 (ReLU) → 10.
fn mlp(dev: &Device) -> Sequential {
    Sequential::new()
        .add(Linear::new(784, 128, dev))
        .add(nn::Relu)
        .add(Linear::new(128, 10, dev))
}

/// What one model's run gives: its history, the test confusion matrix, the median
/// seconds of a training epoch (without the validation pass) and the total seconds.
struct Run {
    history: History,
    confusion: ConfusionMatrix,
    epoch_s: f64,
    total_s: f64,
}

/// Trains `net` with Adam and tests it; `image` picks the input shape.
fn train(net: Sequential, image: bool, sets: (&Dataset, &Dataset), args: &Args, dev: &Device) -> Result<Run> {
    let started = std::time::Instant::now();
    let opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: args.lr,
            ..Default::default()
        },
    );
    let lr = opt.lr();
    let cosine = CosineAnnealingLr::new(lr, args.epochs, lr / 100.0);
    let mut model = net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy])?;
    let (x, y) = tensors(sets.0, image, dev)?;
    let (tx, ty) = tensors(sets.1, image, dev)?;
    let history = model.fit(
        &x,
        &y,
        FitConfig {
            epochs: args.epochs,
            batch_size: args.batch,
            validation_data: Some((tx.clone(), ty.clone())),
            seed: Some(args.seed),
            callbacks: vec![Box::new(LrScheduler::new(cosine))],
            ..Default::default()
        },
    )?;
    let confusion = model.confusion_matrix(&tx, &ty)?;
    let mut epochs: Vec<f64> = history.get("samples_per_sec").unwrap_or(&[]).to_vec();
    epochs.iter_mut().for_each(|s| *s = sets.0.n as f64 / *s);
    epochs.sort_by(f64::total_cmp);
    let epoch_s = epochs.get(epochs.len() / 2).copied().unwrap_or(f64::NAN);
    let total_s = started.elapsed().as_secs_f64();
    Ok(Run {
        history,
        confusion,
        epoch_s,
        total_s,
    })
}

/// The CNN's training report, with the class names on the confusion matrix.
fn report(run: &Run, title: &str, names: &[String], args: &Args) -> Result<PathBuf> {
    let h = &run.history;
    let curve = |name: &str| Curve {
        name: name.into(),
        train: h.get(name).unwrap_or(&[]).to_vec(),
        val: h.get(&format!("val_{name}")).unwrap_or(&[]).to_vec(),
    };
    let mut meta = h.meta.clone();
    meta.push(("epochs run".into(), h.epochs().to_string()));
    let c = &run.confusion;
    let data = ReportData {
        title: title.into(),
        curves: vec![curve("loss"), curve("accuracy")],
        lr: h.lr.clone(),
        lr_changes: h.lr_changes.clone(),
        confusion: Some((c.classes(), c.counts().to_vec())),
        class_names: names.to_vec(),
        layers: h.layers.clone(),
        stop_reason: h.stop_reason.clone(),
        meta,
    };
    write_report(&args.out, &data)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = args.device.open()?;
    let (train_set, test_set, name, names) = load(&args)?;
    println!("data: {name}: {} train, {} test, 28×28", train_set.n, test_set.n);
    println!("device: {}", dev.info());
    let sets = (&train_set, &test_set);
    wgnn::manual_seed(args.seed);
    let net = cnn(&dev);
    println!("{}", net.summary());
    println!(
        "CNN: {} epochs, batch {}, Adam lr {} (cosine to 1/100)",
        args.epochs, args.batch, args.lr
    );
    let conv = train(net, true, sets, &args, &dev)?;
    let base = match args.no_mlp {
        true => None,
        false => {
            wgnn::manual_seed(args.seed);
            println!("\nMLP 784-128-10 (examples/mnist.rs), same epochs, batch, lr and seed:");
            Some(train(mlp(&dev), false, sets, &args, &dev)?)
        }
    };
    println!(
        "\n{:<5} {:>13} {:>12} {:>10}",
        "model", "test accuracy", "s per epoch", "total s"
    );
    for (label, run) in [("CNN", Some(&conv)), ("MLP", base.as_ref())] {
        if let Some(r) = run {
            let acc = r.confusion.accuracy();
            println!("{label:<5} {acc:>13.4} {:>12.2} {:>10.1}", r.epoch_s, r.total_s);
        }
    }
    println!(
        "\nper-class test accuracy (recall):\n{:<12} {:>6} {:>6}",
        "class", "CNN", "MLP"
    );
    let mlp_recall = base.as_ref().map(|r| r.confusion.recall_per_class());
    for (k, cnn_acc) in conv.confusion.recall_per_class().iter().enumerate() {
        let mlp_acc = mlp_recall.as_ref().map_or("-".into(), |r| format!("{:.3}", r[k]));
        println!("{:<12} {cnn_acc:>6.3} {mlp_acc:>6}", names[k]);
    }
    println!(
        "\nCNN confusion matrix (rows = truth, columns = prediction):\n{}",
        conv.confusion
    );
    let summary = report(&conv, &format!("CNN on {name}"), &names, &args)?;
    println!("report: {} (confusion.png beside it)", summary.display());
    check::at_least(
        "CNN test accuracy",
        conv.confusion.accuracy(),
        args.min_accuracy,
        "--min-accuracy",
    );
    Ok(())
}
