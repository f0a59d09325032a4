//! Autoencoders (`wgnn::nn::Autoencoder`) for the two things they are used for most.
//!
//! **(a) Anomaly detection** on the Wisconsin breast-cancer data (`data/breast_cancer.csv`,
//! 357 benign and 212 malignant rows, 30 features). An autoencoder 30 → 12 (tanh) → 30
//! is trained on benign rows only, so it learns to reconstruct benign tissue and
//! reconstructs malignant rows badly: the per-row reconstruction error is the anomaly
//! score. The benign rows are split (seeded) into 200 training, 70 validation and 87 test
//! rows; the features are standardized with statistics of the benign training rows only. On the benign test rows and all
//! malignant rows it prints the ROC-AUC of the score, then precision and recall of
//! "malignant" and the realized false-positive rate (benign test rows flagged) for two
//! threshold rules: the 95th percentile of the training errors, and the lowest threshold
//! that flags at most 5 % of the benign validation rows (not the test rows).
//!
//! **(b) Dimensionality reduction** of the 8×8 digits (`data/digits.csv.gz`, 1797 images,
//! pixels 0-16 scaled to [0, 1]; 80/20 train/test split, seeded). For k = 2, 4 and 8 an
//! autoencoder 64-32-k-32-64 (ReLU hidden layers, a linear code, sigmoid output) is
//! compared with PCA at the same k (fitted on the training images with nalgebra's
//! symmetric eigendecomposition of the covariance): the mean squared reconstruction
//! error per pixel on the test images. The 2-D codes of the test images are drawn as a
//! scatter plot coloured by digit (`digits_codes_k2.png`, text in the embedded DejaVu
//! Sans of `assets/`).
//!
//! Both data sets are committed in `data/`: nothing is downloaded. The CPU backend runs
//! the defaults in well under a minute; `--device gpu` on a software Vulkan adapter
//! (lavapipe) is many times slower, so give it few epochs there.
//!
//! ```text
//! cargo run --release --example autoencoder -- [--device cpu|gpu] [--seed 0]
//!     [--epochs N (both parts; default 150 for (a), 400 for (b))] [--out DIR]
//!     [--min-auc A]
//! ```

use clap::Parser;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nalgebra::{DMatrix, SymmetricEigen};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use wgnn::data::{self, Dataset};
use wgnn::metrics::{roc_auc, Average, ConfusionMatrix};
use wgnn::nn::{self, Autoencoder, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig};
use wgnn::train::{FitConfig, Loss};
use wgnn::{Device, Error, Result, Tensor};

#[path = "common/check.rs"]
mod check;
#[path = "common/device.rs"]
mod device;

/// Benign rows (of 357) used for training and for the validation of the threshold;
/// the remaining 357 − 200 − 70 = 87 are test rows.
const BENIGN_TRAIN: usize = 200;
const BENIGN_VALIDATION: usize = 70;
/// Width of the code of the anomaly detector (of 30 features).
const CODE: usize = 12;
/// Digit images (of 1797) used for training; the other 360 are the test set.
const DIGITS_TRAIN: usize = 1437;
const CODE_SIZES: [usize; 3] = [2, 4, 8];
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Autoencoders (`wgnn::nn::Autoencoder`) for the two things they are used for most.
#[derive(Parser)]
#[command(name = "autoencoder")]
struct Args {
    /// Fail when the anomaly score's ROC-AUC is below it.
    #[arg(long)]
    min_auc: Option<f64>,
    #[command(flatten)]
    device: device::DeviceArg,
    /// Seed of initialization, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Folder the pictures are written to.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("wgnn-autoencoder"))]
    out: PathBuf,
}

fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}

/// Trains `ae` to reconstruct `x` with Adam and the mean squared error; returns the last
/// epoch's training loss.
fn train(ae: &Autoencoder, x: &Tensor, lr: f32, epochs: usize, batch_size: usize, seed: u64) -> Result<f64> {
    let opt = Adam::new(
        ae.parameters(),
        AdamConfig {
            lr,
            ..Default::default()
        },
    );
    let mut model = ae.compile(opt, Loss::Mse)?;
    let history = model.fit(
        x,
        x,
        FitConfig {
            epochs,
            batch_size,
            shuffle: true,
            seed: Some(seed),
            verbose: false,
            layer_stats: false,
            ..Default::default()
        },
    )?;
    Ok(history.history["loss"].last().copied().unwrap_or(f64::NAN))
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&e| f64::from(e)).sum::<f64>() / v.len().max(1) as f64
}

/// (a) Anomaly detection: malignant rows are the anomalies, scored by reconstruction error.
/// Part (a); returns the ROC-AUC of the anomaly score.
fn anomaly_detection(args: &Args, dev: &Device) -> Result<f64> {
    let started = Instant::now();
    let epochs = args.epochs.unwrap_or(150);
    let all = data::load_csv_labelled(data_file("breast_cancer.csv"), 1)?;
    let order = data::permutation(all.n, args.seed);
    let rows_of = |label: u32| -> Vec<usize> { order.iter().copied().filter(|&i| all.labels[i] == label).collect() };
    let (benign, malignant) = (rows_of(1), rows_of(0));
    if benign.len() <= BENIGN_TRAIN + BENIGN_VALIDATION || malignant.is_empty() {
        return Err(Error::Invalid(format!(
            "breast_cancer.csv: {} benign and {} malignant rows are too few",
            benign.len(),
            malignant.len()
        )));
    }
    let mut train_set = all.select(&benign[..BENIGN_TRAIN]);
    let mut validation = all.select(&benign[BENIGN_TRAIN..BENIGN_TRAIN + BENIGN_VALIDATION]);
    let mut test_benign = all.select(&benign[BENIGN_TRAIN + BENIGN_VALIDATION..]);
    let mut test_malignant = all.select(&malignant);
    data::standardize(
        &mut train_set,
        &mut [&mut validation, &mut test_benign, &mut test_malignant],
    );
    println!(
        "\n(a) anomaly detection, breast cancer ({} features): train on {} benign rows, \
         threshold validation on {} other benign rows,\n    test on {} held-out benign + {} malignant rows \
         (standardized with the benign training rows' statistics)",
        all.dim, train_set.n, validation.n, test_benign.n, test_malignant.n
    );

    wgnn::manual_seed(args.seed);
    let d = all.dim;
    let encoder = Sequential::new().add(Linear::new(d, CODE, dev)).add(nn::Tanh);
    let decoder = Sequential::new().add(Linear::new(CODE, d, dev));
    let ae = Autoencoder::new(encoder, decoder);
    println!("    model: {d} → {CODE} (tanh) → {d}; Adam(3e-3), MSE, batch 32, {epochs} epochs");
    let (x_train, _) = train_set.tensors(dev)?;
    let loss = train(&ae, &x_train, 3e-3, epochs, 32, args.seed)?;

    let errors = |d: &Dataset| -> Result<Vec<f32>> { ae.reconstruction_error(&d.tensors(dev)?.0) };
    let (train_err, val_err) = (errors(&train_set)?, errors(&validation)?);
    let (benign_err, malignant_err) = (errors(&test_benign)?, errors(&test_malignant)?);
    println!(
        "    final training loss {loss:.4}; mean reconstruction error: train {:.3}, validation {:.3}, \
         test benign {:.3}, malignant {:.3}",
        mean(&train_err),
        mean(&val_err),
        mean(&benign_err),
        mean(&malignant_err)
    );
    // Positive class 1 = malignant (the anomaly), scored by its reconstruction error.
    let scores: Vec<f32> = benign_err.iter().chain(&malignant_err).copied().collect();
    let truth: Vec<u32> = benign_err
        .iter()
        .map(|_| 0)
        .chain(malignant_err.iter().map(|_| 1))
        .collect();
    let auc = roc_auc(&scores, &truth)?;
    println!(
        "    ROC-AUC (malignant vs held-out benign, score = reconstruction error): {auc:.4}{}",
        if auc >= 0.9 { "" } else { "  (below 0.9: more epochs?)" }
    );

    let rules = [
        (
            "95th percentile of the training errors".to_string(),
            Autoencoder::percentile_threshold(&train_err, 95.0)?,
        ),
        (
            format!("5 % false positives on the {} validation rows", validation.n),
            Autoencoder::threshold_for_false_positive_rate(&val_err, 0.05)?,
        ),
    ];
    println!(
        "    flagging \"malignant\" when the error is above the threshold ({} of the {} test rows are malignant):",
        test_malignant.n,
        scores.len()
    );
    println!(
        "    {:<46} {:>9} {:>9} {:>7} {:>15} {:>9}",
        "threshold rule", "threshold", "precision", "recall", "FPR (test)", "FPR (val)"
    );
    let positive = Average::Binary { positive: 1 };
    for (rule, threshold) in rules {
        let pred: Vec<u32> = scores.iter().map(|&e| u32::from(e > threshold)).collect();
        let cm = ConfusionMatrix::from_labels(&truth, &pred, 2)?;
        let (false_pos, benign_n) = (cm.get(0, 1), cm.get(0, 0) + cm.get(0, 1));
        let val_flagged = val_err.iter().filter(|&&e| e > threshold).count();
        println!(
            "    {rule:<46} {threshold:>9.4} {:>9.3} {:>7.3} {:>6.3} ({false_pos:>2}/{benign_n}) {:>9.3}",
            cm.precision(positive)?,
            cm.recall(positive)?,
            false_pos as f64 / benign_n as f64,
            val_flagged as f64 / val_err.len() as f64,
        );
    }
    println!("    (a) took {:.1} s", started.elapsed().as_secs_f64());
    Ok(auc)
}

/// PCA fitted on a training set: with `k` components it reconstructs x as
/// x̂ = μ + (x − μ) V Vᵀ, V the top-k eigenvectors of the training covariance.
struct Pca {
    mean: Vec<f64>,
    /// Eigenvectors as columns, sorted by decreasing eigenvalue.
    components: DMatrix<f64>,
    /// Eigenvalues, decreasing.
    variances: Vec<f64>,
}

impl Pca {
    fn fit(train: &Dataset) -> Pca {
        let (n, dim) = (train.n, train.dim);
        let x = DMatrix::from_row_slice(n, dim, &train.features).map(f64::from);
        let mean: Vec<f64> = (0..dim).map(|j| x.column(j).mean()).collect();
        let mut centred = x;
        for (j, m) in mean.iter().enumerate() {
            centred.column_mut(j).add_scalar_mut(-m);
        }
        let cov = centred.transpose() * &centred / (n.max(2) - 1) as f64;
        let eig = SymmetricEigen::new(cov);
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let components = DMatrix::from_fn(dim, dim, |i, j| eig.eigenvectors[(i, order[j])]);
        let variances = order.iter().map(|&j| eig.eigenvalues[j].max(0.0)).collect();
        Pca {
            mean,
            components,
            variances,
        }
    }

    /// Mean squared error per value of reconstructing `set` from `k` components.
    fn reconstruction_mse(&self, set: &Dataset, k: usize) -> f64 {
        let dim = set.dim;
        let mut x = DMatrix::from_row_slice(set.n, dim, &set.features).map(f64::from);
        for (j, m) in self.mean.iter().enumerate() {
            x.column_mut(j).add_scalar_mut(-m);
        }
        let v = self.components.columns(0, k);
        let recon = &x * v * v.transpose();
        (recon - x).norm_squared() / (set.n * dim) as f64
    }

    /// Fraction of the total variance in the first `k` components.
    fn explained(&self, k: usize) -> f64 {
        self.variances[..k].iter().sum::<f64>() / self.variances.iter().sum::<f64>()
    }
}

/// (b) Dimensionality reduction of the 8×8 digits: autoencoder vs PCA at k = 2, 4, 8.
fn compression(args: &Args, dev: &Device) -> Result<()> {
    let started = Instant::now();
    let epochs = args.epochs.unwrap_or(400);
    let mut all = data::load_csv_labelled(data_file("digits.csv.gz"), 0)?;
    if all.dim != 64 {
        return Err(Error::Invalid(format!(
            "digits.csv.gz: {} pixels per row, expected 64",
            all.dim
        )));
    }
    for v in &mut all.features {
        *v /= 16.0;
    }
    let (train_set, test) = all.shuffle_split(args.seed, DIGITS_TRAIN);
    println!(
        "\n(b) compressing the 8x8 digits (pixels scaled to [0, 1]): {} training and {} test images",
        train_set.n, test.n
    );
    let pca = Pca::fit(&train_set);
    let (x_train, _) = train_set.tensors(dev)?;
    let (x_test, _) = test.tensors(dev)?;
    println!(
        "    autoencoder 64-32-k-32-64 (ReLU, linear code, sigmoid output), Adam(3e-3), MSE, \
         batch 32, {epochs} epochs"
    );
    println!("    PCA: top-k eigenvectors of the training covariance (nalgebra SymmetricEigen)");
    println!(
        "    test reconstruction MSE per pixel:\n    {:>3} {:>12} {:>12} {:>15} {:>8}",
        "k", "autoencoder", "PCA", "PCA var. kept", "AE/PCA"
    );
    let mut scatter = None;
    for k in CODE_SIZES {
        wgnn::manual_seed(args.seed.wrapping_add(k as u64));
        let encoder = Sequential::new()
            .add(Linear::new(64, 32, dev))
            .add(nn::Relu)
            .add(Linear::new(32, k, dev));
        let decoder = Sequential::new()
            .add(Linear::new(k, 32, dev))
            .add(nn::Relu)
            .add(Linear::new(32, 64, dev))
            .add(nn::Sigmoid);
        let ae = Autoencoder::new(encoder, decoder);
        train(&ae, &x_train, 3e-3, epochs, 32, args.seed)?;
        let ae_mse = mean(&ae.reconstruction_error(&x_test)?);
        let pca_mse = pca.reconstruction_mse(&test, k);
        println!(
            "    {k:>3} {ae_mse:>12.5} {pca_mse:>12.5} {:>14.1}% {:>8.2}{}",
            100.0 * pca.explained(k),
            ae_mse / pca_mse,
            if ae_mse < pca_mse {
                "  autoencoder better"
            } else {
                "  PCA better"
            }
        );
        if k == 2 {
            scatter = Some(ae.encode(&x_test).to_vec()?);
        }
    }
    if let Some(codes) = scatter {
        std::fs::create_dir_all(&args.out).map_err(|e| Error::Io {
            path: args.out.clone(),
            source: e,
        })?;
        let path = args.out.join("digits_codes_k2.png");
        draw_codes(&path, &codes, &test.labels)?;
        println!(
            "    2-D codes of the {} test images, coloured by digit: {}",
            test.n,
            path.display()
        );
    }
    println!("    (b) took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Matplotlib's tab10 colours, one per digit.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A scatter plot of 2-D `codes` (row-major pairs) coloured by `labels`, with a legend.
fn draw_codes(path: &Path, codes: &[f32], labels: &[u32]) -> Result<()> {
    let fail = |e: String| Error::Invalid(format!("drawing {}: {e}", path.display()));
    register_font("sans-serif", FontStyle::Normal, FONT).map_err(|_| fail("the embedded font is invalid".into()))?;
    let range = |axis: usize| {
        let vals = codes.iter().skip(axis).step_by(2).copied();
        let (lo, hi) = vals.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let pad = ((hi - lo) * 0.05).max(1e-3);
        (lo - pad)..(hi + pad)
    };
    let root = BitMapBackend::new(path, (900, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let (plot, legend) = root.split_horizontally(780);
    let mut chart = ChartBuilder::on(&plot)
        .caption("digits: 2-D autoencoder codes of the test images", ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(range(0), range(1))
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("code 1")
        .y_desc("code 2")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(242, 242, 242))
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    chart
        .draw_series(
            codes
                .chunks_exact(2)
                .zip(labels)
                .map(|(c, &l)| Circle::new((c[0], c[1]), 4, PALETTE[l as usize % 10].mix(0.8).filled())),
        )
        .map_err(|e| fail(e.to_string()))?;
    for (digit, colour) in PALETTE.iter().enumerate() {
        let y = 70 + 32 * digit as i32;
        legend
            .draw(&Rectangle::new([(10, y), (30, y + 20)], colour.filled()))
            .map_err(|e| fail(e.to_string()))?;
        legend
            .draw(&Text::new(digit.to_string(), (40, y + 1), ("sans-serif", 20)))
            .map_err(|e| fail(e.to_string()))?;
    }
    root.present().map_err(|e| fail(e.to_string()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let dev = args.device.open()?;
    println!("device: {}", dev.info());
    let auc = anomaly_detection(&args, &dev)?;
    compression(&args, &dev)?;
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
    check::at_least("ROC-AUC", auc, args.min_auc, "--min-auc");
    Ok(())
}
