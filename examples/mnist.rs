//! The MLP of the seed's practical chapter: 784 → Dense(128, ReLU) → Dense(10,
//! softmax), Adam(1e-3), sparse cross-entropy, batch 32, 10 epochs — trained with
//! `compile` / `fit`, optionally with dropout, an L2 penalty, a learning-rate
//! schedule, early stopping and a written training report.
//!
//! By default it trains on the 5000-image MNIST subset committed in `data/`
//! (shuffled with a fixed seed, then split 4000 train / 1000 test). With
//! `--data DIR` it reads standard IDX files (`train-images-idx3-ubyte[.gz]`, …),
//! e.g. `/usr/share/datasets/fashion-mnist` after `apt-get install
//! dataset-fashion-mnist`. The test set is the validation set of `fit`.
//!
//! ```text
//! cargo run --release --example mnist -- [--device cpu|gpu] [--data DIR]
//!     [--epochs 10] [--batch 32] [--lr 0.001] [--seed 0]
//!     [--dropout 0.2] [--l2 1e-4] [--schedule step|exp|cosine|plateau]
//!     [--patience 3] [--report DIR] [--min-accuracy A] [--amp] [--int8 [--max-int8-drop D]]
//! ```
//!
//! `--amp` trains in mixed precision (`Model::mixed_precision`, `wgnn::amp`); `--int8`
//! then quantizes the trained MLP (`wgnn::quantize`) and scores it on the test set.

use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;

use wgnn::data::{self, Dataset};
use wgnn::metrics::Metric;
use wgnn::nn::{self, Dropout, Linear, Module, Sequential};
use wgnn::optim::lr::{CosineAnnealingLr, ExponentialLr, PlateauConfig, ReduceLrOnPlateau, StepLr};
use wgnn::optim::{Adam, AdamConfig, GradScalerConfig, Optimizer};
use wgnn::quantize::{Calibration, QuantizedSequential};
use wgnn::train::{Callback, Control, EarlyStopping, FitConfig, Loss, LrScheduler, Penalty, Scores};
use wgnn::{Device, Error, Result, Tensor};

#[path = "common/check.rs"]
mod check;
#[path = "common/device.rs"]
mod device;

/// The MLP of the seed's practical chapter on MNIST: 784 → 128 (ReLU) → 10, trained with `fit`.
#[derive(Parser)]
#[command(name = "mnist")]
struct Args {
    /// Fail when the test accuracy is below it.
    #[arg(long)]
    min_accuracy: Option<f64>,
    #[command(flatten)]
    device: device::DeviceArg,
    /// A folder of standard IDX files (e.g. /usr/share/datasets/fashion-mnist) instead of the committed subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Training epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Seed of initialization, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Dropout probability after the hidden layer.
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// L2 penalty on the weights.
    #[arg(long, default_value_t = 0.0)]
    l2: f32,
    /// Learning-rate schedule: step, exp, cosine or plateau.
    #[arg(long)]
    schedule: Option<String>,
    /// Early stopping patience on the validation loss.
    #[arg(long)]
    patience: Option<usize>,
    /// Write a training report (plots, summary.md) to this folder.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Mixed precision (`Model::mixed_precision`): f16 inputs to the GEMMs, f32
    /// accumulation, weights and Adam state, dynamic loss scaling.
    #[arg(long)]
    amp: bool,
    /// After training, quantize the MLP to int8 (`wgnn::quantize`, activation scales
    /// calibrated on 256 training images) and report its test accuracy.
    #[arg(long)]
    int8: bool,
    /// With --int8: fail unless int8 is at most this far below f32.
    #[arg(long)]
    max_int8_drop: Option<f64>,
}

fn load(args: &Args) -> Result<(Dataset, Dataset, String)> {
    match &args.data {
        Some(dir) => {
            let train = data::load_idx_dir(dir, "train")?;
            let test = data::load_idx_dir(dir, "t10k")?;
            Ok((train, test, dir.display().to_string()))
        }
        None => {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist_5k.csv.gz");
            let all = data::load_mnist_csv_gz(&path)?;
            let (train, test) = all.shuffle_split(args.seed, 4000);
            Ok((train, test, "MNIST subset (4000 train / 1000 test)".into()))
        }
    }
}

/// Prints one table row per epoch when stdout is not a terminal (on a terminal,
/// `fit` shows a progress bar and a line per epoch itself).
struct PrintEpoch;

impl Callback for PrintEpoch {
    fn on_epoch_end(&mut self, epoch: usize, logs: &Scores, control: &mut Control<'_>) -> Result<()> {
        println!(
            "{:>5}   {:.4}   {:.4}      {:.4}     {:.2e}   {:.0}",
            epoch + 1,
            logs["loss"],
            logs["accuracy"],
            logs["val_accuracy"],
            control.optimizer.lr(),
            logs["samples_per_sec"],
        );
        Ok(())
    }
}

fn tensors(set: &Dataset, dev: &Device) -> Result<(Tensor, Tensor)> {
    Ok((
        Tensor::from_vec(set.features.clone(), &[set.n, set.dim], dev)?,
        Tensor::from_labels(&set.labels, dev)?,
    ))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = args.device.open()?;
    let (train, test, name) = load(&args)?;
    println!(
        "data: {name}: {} train, {} test, {} features",
        train.n, test.n, train.dim
    );
    println!("device: {}", dev.info());
    wgnn::manual_seed(args.seed);
    let mut net = Sequential::new().add(Linear::new(train.dim, 128, &dev)).add(nn::Relu);
    if args.dropout > 0.0 {
        net = net.add(Dropout::new(args.dropout));
    }
    let net = net.add(Linear::new(128, 10, &dev));
    println!("{}", net.summary());
    let opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: args.lr,
            ..Default::default()
        },
    );
    let lr = opt.lr(); // the schedules start from the optimizer's own rate
    let mut model = net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy])?;
    if args.l2 > 0.0 {
        model = model.penalty(Penalty::L2(args.l2));
    }
    if args.amp {
        model = model.mixed_precision(GradScalerConfig::default())?;
        let f16 = wgnn::amp::f16_supported(&dev);
        println!(
            "precision: {}",
            if f16 {
                "mixed (f16 GEMM inputs, f32 accumulation, dynamic loss scaling)"
            } else {
                "f32 (the device has no f16)"
            }
        );
    }
    let tty = std::io::stdout().is_terminal();
    let mut callbacks: Vec<Box<dyn Callback>> = Vec::new();
    if !tty {
        callbacks.push(Box::new(PrintEpoch));
    }
    match args.schedule.as_deref() {
        None => {}
        Some("step") => callbacks.push(Box::new(LrScheduler::new(StepLr::new(lr, 3, 0.5)))),
        Some("exp") => callbacks.push(Box::new(LrScheduler::new(ExponentialLr::new(lr, 0.8)))),
        Some("cosine") => callbacks.push(Box::new(LrScheduler::new(CosineAnnealingLr::new(
            lr,
            args.epochs,
            lr / 100.0,
        )))),
        Some("plateau") => {
            let plateau = ReduceLrOnPlateau::new(
                lr,
                PlateauConfig {
                    patience: 1,
                    factor: 0.5,
                    ..Default::default()
                },
            );
            callbacks.push(Box::new(LrScheduler::on_metric(plateau, "val_loss")));
        }
        Some(other) => {
            return Err(Error::Invalid(format!(
                "--schedule {other}: expected step, exp, cosine or plateau"
            )));
        }
    }
    if let Some(patience) = args.patience {
        callbacks.push(Box::new(
            EarlyStopping::new("val_loss", patience).restore_best_weights(),
        ));
    }
    let (x, y) = tensors(&train, &dev)?;
    if !tty {
        println!("epoch   loss     accuracy    val acc    lr         samples/s");
    }
    let history = model.fit(
        &x,
        &y,
        FitConfig {
            epochs: args.epochs,
            batch_size: args.batch,
            validation_data: Some(tensors(&test, &dev)?),
            seed: Some(args.seed),
            callbacks,
            ..Default::default()
        },
    )?;
    if let Some(reason) = &history.stop_reason {
        println!("{reason}");
    }
    let (tx, ty) = tensors(&test, &dev)?;
    let scores = model.evaluate(&tx, &ty)?;
    println!("test: loss {:.4}, accuracy {:.4}", scores["loss"], scores["accuracy"]);
    if let Some(scaler) = model.grad_scaler() {
        println!(
            "loss scale {} at the end, {} steps skipped for overflow",
            scaler.current_scale(),
            scaler.skipped_steps()
        );
    }
    if let Some(dir) = &args.report {
        let summary = history.write_report(dir, &format!("MLP on {name}"))?;
        println!("report: {}", summary.display());
    }
    check::at_least("test accuracy", scores["accuracy"], args.min_accuracy, "--min-accuracy");
    if args.int8 {
        let rows: Vec<usize> = (0..256.min(train.n)).collect();
        let (calibration, _) = tensors(&train.select(&rows), &dev)?;
        let q = QuantizedSequential::quantize(model.net, &calibration, Calibration::MinMax)?;
        let predicted = q.forward(&tx).argmax(1).to_labels()?;
        let right = predicted.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
        let int8 = right as f64 / test.n as f64;
        println!("int8 (per-channel weights, min-max calibration on 256 images): test accuracy {int8:.4}");
        check::at_most(
            "accuracy drop of int8",
            scores["accuracy"] - int8,
            args.max_int8_drop,
            "--max-int8-drop",
        );
    }
    Ok(())
}
