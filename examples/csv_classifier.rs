//! The CSV classifier a new user writes first: load a CSV, hold out a test split,
//! put a `Normalize` layer (fitted to the training rows) first in the model so the
//! standardization is saved with it, `fit` with a validation split, save, reload
//! into a fresh model and `evaluate` it on the test rows, with the same scores.
//!
//! By default it reads the Breast Cancer Wisconsin data committed in `data/` (569
//! rows, 30 features, a header line, the label last: 0 malignant, 1 benign).
//!
//! ```text
//! cargo run --release --example csv_classifier -- [--data data/breast_cancer.csv]
//!     [--test-rows 114] [--epochs 30] [--batch 16] [--seed 0] [--device cpu|gpu]
//!     [--save target/csv_classifier.safetensors] [--min-accuracy A]
//! ```

use std::path::PathBuf;

use clap::Parser;
use wgnn::metrics::Metric;
use wgnn::nn::{self, Linear, Module, Normalize, Sequential};
use wgnn::optim::{Adam, AdamConfig};
use wgnn::train::{FitConfig, Loss, Model};
use wgnn::{data, Device, Result};

#[path = "common/check.rs"]
mod check;

/// A classifier of a numeric CSV (label last), trained with `fit`, saved and reloaded.
#[derive(Parser)]
#[command(name = "csv_classifier")]
struct Args {
    /// The CSV: one header line, numeric features, an integer label last.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/data/breast_cancer.csv"))]
    data: PathBuf,
    /// Rows held out for the test.
    #[arg(long, default_value_t = 114)]
    test_rows: usize,
    /// Training epochs.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Seed of the split, the initialization and the shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The device: cpu or gpu (default: the GPU if one works, else the CPU).
    #[arg(long)]
    device: Option<String>,
    /// Where the trained model is saved.
    #[arg(long, default_value = "target/csv_classifier.safetensors")]
    save: PathBuf,
    /// Fail when the test accuracy is below it.
    #[arg(long)]
    min_accuracy: Option<f64>,
}

/// Normalize → 16 (ReLU) → classes, with Adam and cross-entropy.
fn classifier(norm: Normalize, classes: usize, dev: &Device) -> Result<Model> {
    let features = norm.features();
    let net = Sequential::new()
        .add(norm)
        .add(Linear::new(features, 16, dev))
        .add(nn::Relu)
        .add(Linear::new(16, classes, dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy])
}

fn main() -> Result<()> {
    let args = Args::parse();
    wgnn::manual_seed(args.seed);
    let dev = match args.device.as_deref() {
        Some("cpu") => Device::cpu(),
        Some("gpu") => Device::gpu()?,
        _ => Device::best(),
    };
    let all = data::load_csv_labelled(&args.data, 1)?;
    let classes = all.labels.iter().max().map_or(0, |&l| l as usize + 1);
    let (train, test) = all.shuffle_split(args.seed, all.n.saturating_sub(args.test_rows));
    println!(
        "{}: {} rows, {} features, {classes} classes; {} to train, {} to test",
        args.data.display(),
        all.n,
        all.dim,
        train.n,
        test.n
    );
    let (x, y) = train.tensors(&dev)?;
    let mut model = classifier(Normalize::adapt(&x)?, classes, &dev)?;
    let config = FitConfig::new()
        .epochs(args.epochs)
        .batch_size(args.batch)
        .validation_split(0.2)
        .seed(args.seed);
    model.fit(&x, &y, config)?;

    if let Some(dir) = args.save.parent() {
        std::fs::create_dir_all(dir).map_err(|e| wgnn::Error::Io {
            path: dir.into(),
            source: e,
        })?;
    }
    wgnn::io::save_safetensors(&model.net, &args.save)?;
    let mut reloaded = classifier(Normalize::new(all.dim, &dev), classes, &dev)?;
    wgnn::io::load_safetensors(&mut reloaded.net, &args.save)?;

    let (x_test, y_test) = test.tensors(&dev)?;
    let (scores, again) = (model.evaluate(&x_test, &y_test)?, reloaded.evaluate(&x_test, &y_test)?);
    println!("test: loss {:.4}, accuracy {:.4}", scores["loss"], scores["accuracy"]);
    println!(
        "reloaded from {}: accuracy {:.4}",
        args.save.display(),
        again["accuracy"]
    );
    if scores != again {
        eprintln!("the reloaded model scores differently: {again:?} vs {scores:?}");
        std::process::exit(1);
    }
    check::at_least("test accuracy", scores["accuracy"], args.min_accuracy, "--min-accuracy");
    Ok(())
}
