//! Model selection on the Wisconsin breast-cancer data (`data/breast_cancer.csv`, 569
//! rows, 30 features, label 0 = malignant, 1 = benign), the way scikit-learn users do it:
//!
//! 1. hold out a test set (80/20, seeded) and standardize the features with statistics
//!    of the training part only;
//! 2. 5-fold stratified cross-validation of one default MLP;
//! 3. a random search over architecture and optimizer settings, every trial scored by
//!    the same 5-fold cross-validation, ranked by F1 in a leaderboard (mean ± std);
//! 4. the best trial retrained on the whole training part and scored once on the
//!    held-out test set: accuracy, precision, recall, F1 and the confusion matrix.
//!
//! Precision, recall and F1 are binary with class 1 (benign) as the positive class,
//! scikit-learn's default `pos_label=1`.
//!
//! The data is tiny (batches of 16-64 rows): the CPU backend runs it in seconds, a
//! software Vulkan adapter (llvmpipe, `--device gpu` on a machine without a GPU) in
//! minutes.
//!
//! ```text
//! cargo run --release --example model_selection -- [--device cpu|gpu] [--trials 8]
//!     [--folds 5] [--epochs 30] [--seed 0] [--min-accuracy A]
//! ```

use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

use wgnn::data::{self, Dataset};
use wgnn::metrics::{Average, Metric};
use wgnn::nn::{self, Dropout, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use wgnn::train::{cross_validate, random, search, FitConfig, Loss, Model, Param, Scores, SearchSpace, Trial, Value};
use wgnn::{Device, Error, Result};

#[path = "common/check.rs"]
mod check;
#[path = "common/device.rs"]
mod device;

/// Rows of the 569 kept for training and model selection; the other 114 are the test set.
const TRAIN_ROWS: usize = 455;
const CLASSES: [&str; 2] = ["malignant", "benign"];

/// Model selection on the Wisconsin breast-cancer data: cross-validation, a random search, a held-out test.
#[derive(Parser)]
#[command(name = "model_selection")]
struct Args {
    /// Fail when the best trial's held-out test accuracy is below it.
    #[arg(long)]
    min_accuracy: Option<f64>,
    #[command(flatten)]
    device: device::DeviceArg,
    /// Random-search trials.
    #[arg(long, default_value_t = 8)]
    trials: usize,
    /// Cross-validation folds.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Training epochs.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Seed of initialization, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The metrics logged for every fit; the search ranks by `F1`.
const METRICS: [Metric; 4] = [
    Metric::Accuracy,
    Metric::Precision(Average::Binary { positive: 1 }),
    Metric::Recall(Average::Binary { positive: 1 }),
    Metric::F1(Average::Binary { positive: 1 }),
];
const RANK_BY: Metric = Metric::F1(Average::Binary { positive: 1 });

/// An MLP `dim → hidden… → 2` (ReLU and dropout after every hidden layer), compiled
/// with the trial's optimizer and learning rate.
fn build(trial: &Trial, dim: usize, dev: &Device) -> Result<Model> {
    let dropout = trial.get_f64("dropout")? as f32;
    let lr = trial.get_f64("lr")? as f32;
    let mut net = Sequential::new();
    let mut width = dim;
    for h in trial.get_list("hidden")? {
        net = net
            .add(Linear::new(width, h, dev))
            .add(nn::Relu)
            .add(Dropout::new(dropout));
        width = h;
    }
    net = net.add(Linear::new(width, CLASSES.len(), dev));
    let params = net.parameters();
    let optimizer: Box<dyn Optimizer> = match trial.get_str("optimizer")? {
        "adam" => Box::new(Adam::new(
            params,
            AdamConfig {
                lr,
                ..Default::default()
            },
        )),
        "sgd" => Box::new(Sgd::new(
            params,
            SgdConfig {
                lr,
                momentum: 0.9,
                ..Default::default()
            },
        )),
        other => return Err(Error::Invalid(format!("unknown optimizer '{other}' (adam or sgd)"))),
    };
    net.compile(optimizer, Loss::CrossEntropy, &METRICS)
}

/// Trains a fresh model for `trial` on `train`; returns it with its scores on `eval`.
fn train_and_score(
    trial: &Trial,
    train: &Dataset,
    eval: &Dataset,
    epochs: usize,
    dev: &Device,
) -> Result<(Model, Scores)> {
    let mut model = build(trial, train.dim, dev)?;
    let (x, y) = train.tensors(dev)?;
    model.fit(
        &x,
        &y,
        FitConfig {
            epochs,
            batch_size: trial.get_usize("batch_size")?,
            shuffle: true,
            verbose: false,
            layer_stats: false,
            ..Default::default()
        },
    )?;
    let (xe, ye) = eval.tensors(dev)?;
    let mut scores = model.evaluate(&xe, &ye)?;
    scores.remove("loss");
    Ok((model, scores))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    wgnn::manual_seed(args.seed);
    let dev = args.device.open()?;
    println!("device: {}", dev.info());

    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/breast_cancer.csv");
    let all = data::load_csv_labelled(&path, 1)?;
    let (mut train, mut test) = all.shuffle_split(args.seed, TRAIN_ROWS);
    data::standardize(&mut train, &mut [&mut test]);
    let count = |d: &Dataset, c: u32| d.labels.iter().filter(|&&l| l == c).count();
    println!(
        "data: {} rows, {} features; {} train ({} malignant / {} benign), {} test ({} / {})",
        all.n,
        all.dim,
        train.n,
        count(&train, 0),
        count(&train, 1),
        test.n,
        count(&test, 0),
        count(&test, 1)
    );
    println!("positive class for precision/recall/F1: 1 ({})", CLASSES[1]);

    // Every configuration is scored on the same stratified folds, and each one starts
    // from the same random stream, so differences come from the hyper-parameters.
    let cv = |trial: &Trial| {
        wgnn::manual_seed(args.seed);
        cross_validate(&train, args.folds, true, args.seed, |tr, va| {
            Ok(train_and_score(trial, tr, va, args.epochs, &dev)?.1)
        })
    };

    let default = Trial::new()
        .with("batch_size", 32)
        .with("dropout", 0.2)
        .with("hidden", &[16][..])
        .with("lr", 1e-3)
        .with("optimizer", "adam");
    let t = Instant::now();
    let report = cv(&default)?;
    println!(
        "\n{}-fold stratified cross-validation of {default} ({} epochs, {:.1} s):\n{report}",
        args.folds,
        args.epochs,
        t.elapsed().as_secs_f64()
    );

    let space = SearchSpace::new()
        .add(
            "hidden",
            Param::Choice(vec![
                Value::List(vec![16]),
                Value::List(vec![64]),
                Value::List(vec![32, 16]),
            ]),
        )
        .add("dropout", Param::Uniform { low: 0.0, high: 0.5 })
        .add("optimizer", Param::Choice(vec!["adam".into(), "sgd".into()]))
        .add("lr", Param::LogUniform { low: 1e-4, high: 1e-1 })
        .add(
            "batch_size",
            Param::Choice(vec![Value::I(16), Value::I(32), Value::I(64)]),
        );
    let trials = random(&space, args.trials, args.seed)?;
    let t = Instant::now();
    let board = search(trials, &RANK_BY.name(), RANK_BY.higher_is_better(), cv)?;
    println!(
        "\nrandom search, {} trials × {} folds ({:.1} s):\n{board}",
        board.rows.len(),
        args.folds,
        t.elapsed().as_secs_f64()
    );

    let best = board.best();
    println!("best: {best}");
    wgnn::manual_seed(args.seed);
    let (model, scores) = train_and_score(best, &train, &test, args.epochs, &dev)?;
    println!(
        "\nretrained on all {} training rows; held-out test set ({} rows):",
        train.n, test.n
    );
    for m in METRICS {
        println!("  {:<10} {:.4}", m.name(), scores[&m.name()]);
    }
    let (x_test, y_test) = test.tensors(&dev)?;
    let cm = model.confusion_matrix(&x_test, &y_test)?;
    println!("confusion matrix (rows = truth, columns = prediction):");
    println!("  {:>10} {:>10} {:>10}", "", CLASSES[0], CLASSES[1]);
    for (t, name) in CLASSES.iter().enumerate() {
        println!("  {name:>10} {:>10} {:>10}", cm.get(t, 0), cm.get(t, 1));
    }
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
    check::at_least("test accuracy", scores["accuracy"], args.min_accuracy, "--min-accuracy");
    Ok(())
}
