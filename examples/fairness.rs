//! Group fairness on real data: UCI Adult (the committed `data/adult/`, 32,561
//! training and 16,281 test rows of the 1994 US census), predicting whether a person
//! earns more than $50K a year, with `sex` as the sensitive attribute. The model sees
//! every attribute except `sex` (which it could still infer from others, e.g.
//! `relationship`): one-hot categories, standardized numbers, a 104 → 32 ReLU → 2 MLP
//! trained with Adam.
//!
//! Prints `wgnn::fairness`'s per-group report (selection rate, accuracy, TPR, FPR,
//! precision) and the gaps users quote — demographic parity difference and ratio,
//! equal opportunity and equalized odds differences, Fairlearn's definitions — for:
//!
//! 1. the plain model (decision threshold 0.5);
//! 2. **reweighing** (Kamiran and Calders): the same model trained with sample weights
//!    that make the label independent of the group in the weighted data;
//! 3. **group thresholds** for demographic parity: one threshold per group on the
//!    plain model's scores, chosen on the training rows so that both groups get the
//!    overall selection rate;
//! 4. group thresholds for **equal opportunity** (the same true positive rate).
//!
//! and the trade-off as accuracy against gap. Writes `groups_<run>.png` (and `.svg`)
//! per run in `--out`.
//!
//! ```text
//! cargo run --release --example fairness -- [--device cpu|gpu] [--epochs 5] [--out DIR]
//!     [--max-parity-gap 0.05]
//! ```

use clap::Parser;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use wgnn::fairness::{self, FairnessReport, Parity};
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig};
use wgnn::train::{FitConfig, Loss};
use wgnn::{Device, Error, Result, Tensor};

#[path = "common/check.rs"]
mod check;
#[path = "common/device.rs"]
mod device;

/// Fairness report and mitigations on UCI Adult, by sex.
#[derive(Parser)]
#[command(name = "fairness")]
struct Args {
    #[command(flatten)]
    device: device::DeviceArg,
    /// Training epochs.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Where the pictures go.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("wgnn-fairness"))]
    out: PathBuf,
    /// Fail unless the demographic-parity thresholds leave a test gap of at most this.
    #[arg(long)]
    max_parity_gap: Option<f64>,
}

/// Column indices of the raw attributes.
const NUMERIC: [usize; 6] = [0, 2, 4, 10, 11, 12];
const CATEGORICAL: [usize; 7] = [1, 3, 5, 6, 7, 8, 13];
const SEX: usize = 9;

/// Rows of raw fields (14 attributes) and the labels, from a gzipped UCI file.
fn read(path: &Path) -> Result<(Vec<Vec<String>>, Vec<u32>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| Error::Io {
            path: path.into(),
            source: e,
        })?;
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<String> = line.split(", ").map(|f| f.trim().to_string()).collect();
        if fields.len() != 15 {
            continue; // the test file's first line, blank lines
        }
        let label = match fields[14].trim_end_matches('.') {
            ">50K" => 1,
            "<=50K" => 0,
            other => {
                return Err(Error::Invalid(format!(
                    "{}: line {}: label {other:?}",
                    path.display(),
                    n + 1
                )))
            }
        };
        rows.push(fields[..14].to_vec());
        labels.push(label);
    }
    Ok((rows, labels))
}

/// One-hot categories (vocabulary from the training rows; an unseen value is all
/// zeros) and numbers standardized by the training rows' mean and deviation; `sex`
/// left out. Returns the features of each set and the group ids (0 female, 1 male).
fn encode(train: &[Vec<String>], test: &[Vec<String>]) -> (Vec<f32>, Vec<f32>, usize) {
    let vocab: Vec<BTreeMap<&str, usize>> = CATEGORICAL
        .iter()
        .map(|&c| {
            let mut values: Vec<&str> = train.iter().map(|r| r[c].as_str()).collect();
            values.sort_unstable();
            values.dedup();
            values.into_iter().enumerate().map(|(i, v)| (v, i)).collect()
        })
        .collect();
    let stats: Vec<(f64, f64)> = NUMERIC
        .iter()
        .map(|&c| {
            let v: Vec<f64> = train.iter().map(|r| r[c].parse().unwrap_or(0.0)).collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
            (mean, sd.max(1e-12))
        })
        .collect();
    let dim = NUMERIC.len() + vocab.iter().map(BTreeMap::len).sum::<usize>();
    let rows = |set: &[Vec<String>]| {
        let mut out = Vec::with_capacity(set.len() * dim);
        for r in set {
            for (k, &c) in NUMERIC.iter().enumerate() {
                let x: f64 = r[c].parse().unwrap_or(0.0);
                out.push(((x - stats[k].0) / stats[k].1) as f32);
            }
            for (k, &c) in CATEGORICAL.iter().enumerate() {
                let mut one_hot = vec![0.0; vocab[k].len()];
                if let Some(&i) = vocab[k].get(r[c].as_str()) {
                    one_hot[i] = 1.0;
                }
                out.extend(one_hot);
            }
        }
        out
    };
    (rows(train), rows(test), dim)
}

fn groups(set: &[Vec<String>]) -> Vec<u32> {
    set.iter().map(|r| u32::from(r[SEX] == "Male")).collect()
}

/// Trains the MLP (optionally with sample weights) and returns P(>50K) for the
/// training and the test rows.
fn train_scores(
    args: &Args,
    (x, y): (&Tensor, &Tensor),
    xt: &Tensor,
    weights: Option<&Tensor>,
    dim: usize,
    dev: &Device,
) -> Result<(Vec<f32>, Vec<f32>)> {
    wgnn::manual_seed(0);
    let net = Sequential::new()
        .add(Linear::new(dim, 32, dev))
        .add(nn::Relu)
        .add(Linear::new(32, 2, dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let mut model = net.compile(opt, Loss::CrossEntropy, &[])?;
    let mut config = FitConfig::new().epochs(args.epochs).batch_size(128).seed(0).verbose(0);
    if let Some(w) = weights {
        config = config.sample_weight(w);
    }
    model.fit(x, y, config)?;
    let p = |x: &Tensor| -> Result<Vec<f32>> {
        let probs = nn::inference(|| model.net.forward(x).softmax(1)).to_vec()?;
        Ok(probs.chunks(2).map(|r| r[1]).collect())
    };
    Ok((p(x)?, p(xt)?))
}

fn threshold(scores: &[f32], t: f32) -> Vec<u32> {
    scores.iter().map(|&s| u32::from(s >= t)).collect()
}

fn print(name: &str, r: &FairnessReport) {
    println!("\n### {name}\n\n{}", r.to_markdown());
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = args.device.open()?;
    println!("device: {}", dev.info());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/adult");
    let (train, y_train) = read(&dir.join("adult.data.gz"))?;
    let (test, y_test) = read(&dir.join("adult.test.gz"))?;
    let (g_train, g_test) = (groups(&train), groups(&test));
    let (xs, xts, dim) = encode(&train, &test);
    println!(
        "UCI Adult: {} training, {} test rows, {dim} features (sex left out); >50K in {:.1} % of the training rows; {:.1} % of the rows are women",
        train.len(),
        test.len(),
        100.0 * y_train.iter().sum::<u32>() as f64 / y_train.len() as f64,
        100.0 * g_train.iter().filter(|&&g| g == 0).count() as f64 / g_train.len() as f64
    );
    let x = Tensor::from_vec(xs, &[train.len(), dim], &dev)?;
    let y = Tensor::from_labels(&y_train, &dev)?;
    let xt = Tensor::from_vec(xts, &[test.len(), dim], &dev)?;
    let name = |g: u32| {
        if g == 0 {
            "female".to_string()
        } else {
            "male".to_string()
        }
    };
    let mut table = Vec::new();
    println!("(group 0: female, 1: male)");

    let (s_train, s_test) = train_scores(&args, (&x, &y), &xt, None, dim, &dev)?;
    let plain = fairness::report(&y_test, &threshold(&s_test, 0.5), &g_test)?;
    print("1. plain model, threshold 0.5", &plain);
    plain.write_png(&args.out, "groups_plain", name)?;
    table.push(("plain model", plain));

    let weights = fairness::reweighing(&y_train, &g_train)?;
    let w = Tensor::from_vec(weights, &[train.len()], &dev)?;
    let (_, s_rw) = train_scores(&args, (&x, &y), &xt, Some(&w), dim, &dev)?;
    let reweighed = fairness::report(&y_test, &threshold(&s_rw, 0.5), &g_test)?;
    print("2. reweighing (Kamiran–Calders sample weights)", &reweighed);
    reweighed.write_png(&args.out, "groups_reweighing", name)?;
    table.push(("reweighing", reweighed));

    // The overall selection rate of the plain model on the training rows, for both.
    let rate = threshold(&s_train, 0.5).iter().sum::<u32>() as f64 / s_train.len() as f64;
    let t = fairness::group_thresholds(&s_train, &y_train, &g_train, Parity::Selection, rate)?;
    let dp = fairness::report(&y_test, &fairness::apply_thresholds(&s_test, &g_test, &t)?, &g_test)?;
    print(&format!("3. group thresholds for demographic parity {t:?}"), &dp);
    dp.write_png(&args.out, "groups_parity", name)?;
    let parity_gap = dp.demographic_parity_difference();
    table.push(("thresholds: demographic parity", dp));

    let tpr = {
        let positives: Vec<usize> = (0..y_train.len()).filter(|&i| y_train[i] == 1).collect();
        positives.iter().filter(|&&i| s_train[i] >= 0.5).count() as f64 / positives.len() as f64
    };
    let t = fairness::group_thresholds(&s_train, &y_train, &g_train, Parity::TruePositives, tpr)?;
    let eo = fairness::report(&y_test, &fairness::apply_thresholds(&s_test, &g_test, &t)?, &g_test)?;
    print(&format!("4. group thresholds for equal opportunity {t:?}"), &eo);
    eo.write_png(&args.out, "groups_opportunity", name)?;
    table.push(("thresholds: equal opportunity", eo));

    println!("\n### The trade-off (test rows)\n");
    println!("| run | accuracy | demographic parity difference | ratio | equal opportunity difference | equalized odds difference |");
    println!("|---|---|---|---|---|---|");
    for (name, r) in &table {
        println!(
            "| {name} | {:.4} | {:.4} | {:.3} | {:.4} | {:.4} |",
            r.overall.accuracy,
            r.demographic_parity_difference(),
            r.demographic_parity_ratio(),
            r.equal_opportunity_difference(),
            r.equalized_odds_difference()
        );
    }
    println!("\nwrote groups_*.png in {}", args.out.display());
    check::at_most(
        "demographic parity difference with group thresholds",
        parity_gap,
        args.max_parity_gap,
        "--max-parity-gap",
    );
    Ok(())
}
