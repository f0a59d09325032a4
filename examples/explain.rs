//! Why did the model decide? `wgnn::explain` on two real models:
//!
//! 1. **Digits**: the seed's MLP (784 → 128 ReLU → 10) trained on the committed MNIST
//!    subset; for a few test digits, the input, its saliency map and its integrated
//!    gradients (IG, from a black image) for the predicted class and for the
//!    runner-up class, side by side in `digits.png` (red: evidence for the class,
//!    blue: against). IG's completeness gap is printed beside the score it explains.
//!    **Sanity check** (Adebayo et al. 2018): the same maps from a model with
//!    randomized weights must differ from the trained model's; the mean Spearman rank
//!    correlation between the two saliency maps is printed and asserted below
//!    `--max-rank-correlation`. The same for the `cnn` example's model (conv-BN-ReLU-pool
//!    ×2, trained `--cnn-epochs`), in `digits_cnn.png`.
//! 2. **Breast cancer** (the committed Wisconsin data, 30 measurements): a small MLP,
//!    then which measurements drive its decisions — permutation importance on the
//!    test rows (accuracy drop when a column is shuffled, 10 seeded repeats) and the
//!    mean |IG| per feature — as a ranking and a bar chart, `importance.png`.
//!
//! ```text
//! cargo run --release --example explain -- [--device cpu|gpu] [--out DIR] [--epochs 3]
//!     [--cnn-epochs 1] [--digits 6] [--steps 32] [--max-rank-correlation 0.5]
//! ```

use clap::Parser;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use wgnn::data;
use wgnn::explain::{self, Importance};
use wgnn::metrics::Metric;
use wgnn::nn::{self, Linear, Module, Normalize, Sequential};
use wgnn::optim::{Adam, AdamConfig};
use wgnn::train::{FitConfig, Loss};
use wgnn::{Device, Error, Result, Tensor};

#[path = "common/check.rs"]
mod check;
#[path = "common/device.rs"]
mod device;
#[path = "common/digits_cnn.rs"]
mod digits_cnn;

use digits_cnn::cnn;

static FONT: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/DejaVuSans.ttf"));

/// scikit-learn's names of the Wisconsin breast-cancer measurements, in column order.
const FEATURES: [&str; 30] = [
    "mean radius",
    "mean texture",
    "mean perimeter",
    "mean area",
    "mean smoothness",
    "mean compactness",
    "mean concavity",
    "mean concave points",
    "mean symmetry",
    "mean fractal dimension",
    "radius error",
    "texture error",
    "perimeter error",
    "area error",
    "smoothness error",
    "compactness error",
    "concavity error",
    "concave points error",
    "symmetry error",
    "fractal dimension error",
    "worst radius",
    "worst texture",
    "worst perimeter",
    "worst area",
    "worst smoothness",
    "worst compactness",
    "worst concavity",
    "worst concave points",
    "worst symmetry",
    "worst fractal dimension",
];

/// Explanations of an MNIST MLP and a breast-cancer classifier.
#[derive(Parser)]
#[command(name = "explain")]
struct Args {
    #[command(flatten)]
    device: device::DeviceArg,
    /// Where the pictures go.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("wgnn-explain"))]
    out: PathBuf,
    /// Epochs of the MNIST MLP.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Epochs of the MNIST CNN.
    #[arg(long, default_value_t = 1)]
    cnn_epochs: usize,
    /// Test digits to explain.
    #[arg(long, default_value_t = 6)]
    digits: usize,
    /// Integrated gradients: trapezoid intervals.
    #[arg(long, default_value_t = 32)]
    steps: usize,
    /// Fail unless the trained and randomized models' saliency maps correlate below this.
    #[arg(long)]
    max_rank_correlation: Option<f64>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Which digit model to explain.
#[derive(Clone, Copy, PartialEq)]
enum Digits {
    Mlp,
    Cnn,
}

impl Digits {
    fn build(self, dev: &Device) -> Sequential {
        match self {
            Digits::Mlp => mlp(dev),
            Digits::Cnn => cnn(dev),
        }
    }
    /// The input shape of `n` images.
    fn shape(self, n: usize) -> Vec<usize> {
        match self {
            Digits::Mlp => vec![n, 784],
            Digits::Cnn => vec![n, 1, 28, 28],
        }
    }
    fn name(self) -> &'static str {
        match self {
            Digits::Mlp => "MLP",
            Digits::Cnn => "CNN",
        }
    }
}

fn mlp(dev: &Device) -> Sequential {
    Sequential::new()
        .add(Linear::new(784, 128, dev))
        .add(nn::Relu)
        .add(Linear::new(128, 10, dev))
}

/// Ranks (1-based, ties averaged).
fn ranks(v: &[f32]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            r[k] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation of two equally long series.
fn spearman(a: &[f32], b: &[f32]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let mean = (ra.len() as f64 + 1.0) / 2.0;
    let (mut num, mut da, mut db) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        num += (x - mean) * (y - mean);
        da += (x - mean) * (x - mean);
        db += (y - mean) * (y - mean);
    }
    num / (da * db).sqrt().max(f64::MIN_POSITIVE)
}

fn draw_err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Invalid(format!("drawing {}: {e}", path.display()))
}

/// A grid of 28×28 maps: rows of `(title, [(panel name, values, diverging)])`.
fn digit_grid(path: &Path, rows: &[Vec<(String, Vec<f32>, bool)>]) -> Result<()> {
    let fail = draw_err(path);
    let cols = rows.first().map_or(1, Vec::len);
    let (cell, pad, top) = (168u32, 24u32, 40u32);
    let root =
        BitMapBackend::new(path, (cols as u32 * cell, top + rows.len() as u32 * (cell + pad))).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    root.draw_text(
        "input · saliency · IG (predicted) · IG (runner-up)   red: for the class, blue: against",
        &("sans-serif", 16).into_font().color(&BLACK),
        (8, 10),
    )
    .map_err(|e| fail(e.to_string()))?;
    for (r, panels) in rows.iter().enumerate() {
        for (c, (name, v, diverging)) in panels.iter().enumerate() {
            let (x0, y0) = (c as i32 * cell as i32, (top + r as u32 * (cell + pad)) as i32);
            root.draw_text(name, &("sans-serif", 13).into_font().color(&BLACK), (x0 + 4, y0))
                .map_err(|e| fail(e.to_string()))?;
            let scale = v.iter().fold(1e-12f32, |m, &x| m.max(x.abs()));
            let px = (cell - 8) as i32 / 28;
            for (k, &x) in v.iter().enumerate() {
                let t = x / scale;
                let color = match diverging {
                    true if t >= 0.0 => RGBColor(255, (255.0 * (1.0 - t)) as u8, (255.0 * (1.0 - t)) as u8),
                    true => RGBColor((255.0 * (1.0 + t)) as u8, (255.0 * (1.0 + t)) as u8, 255),
                    false => {
                        let g = (255.0 * (1.0 - t.clamp(0.0, 1.0))) as u8;
                        RGBColor(g, g, g)
                    }
                };
                let (i, j) = ((k / 28) as i32, (k % 28) as i32);
                let (x, y) = (x0 + 4 + j * px, y0 + 18 + i * px);
                root.draw(&Rectangle::new([(x, y), (x + px, y + px)], color.filled()))
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
    }
    root.present().map_err(|e| fail(e.to_string()))
}

/// A horizontal bar chart of the `n` most important features.
fn importance_chart(path: &Path, ranked: &[(usize, Importance, f64)], n: usize) -> Result<()> {
    let fail = draw_err(path);
    let root = BitMapBackend::new(path, (900, 60 + 30 * n as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let top = ranked.iter().take(n).fold(1e-9f64, |m, r| m.max(r.1.mean + r.1.std));
    root.draw_text(
        "breast cancer: accuracy drop when the measurement is shuffled (mean ± std of 10)",
        &("sans-serif", 16).into_font().color(&BLACK),
        (8, 10),
    )
    .map_err(|e| fail(e.to_string()))?;
    for (k, (f, imp, _)) in ranked.iter().take(n).enumerate() {
        let y = 44 + 30 * k as i32;
        root.draw_text(FEATURES[*f], &("sans-serif", 14).into_font().color(&BLACK), (8, y + 4))
            .map_err(|e| fail(e.to_string()))?;
        let w = |v: f64| (560.0 * v.max(0.0) / top) as i32;
        root.draw(&Rectangle::new(
            [(260, y), (260 + w(imp.mean), y + 22)],
            RGBColor(70, 110, 180).filled(),
        ))
        .map_err(|e| fail(e.to_string()))?;
        let (lo, hi) = (260 + w(imp.mean - imp.std), 260 + w(imp.mean + imp.std));
        root.draw(&PathElement::new(
            vec![(lo, y + 11), (hi, y + 11)],
            BLACK.stroke_width(2),
        ))
        .map_err(|e| fail(e.to_string()))?;
        root.draw_text(
            &format!("{:.3}", imp.mean),
            &("sans-serif", 12).into_font().color(&BLACK),
            (hi + 6, y + 5),
        )
        .map_err(|e| fail(e.to_string()))?;
    }
    root.present().map_err(|e| fail(e.to_string()))
}

fn digits(args: &Args, dev: &Device, kind: Digits) -> Result<f64> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist_5k.csv.gz");
    let (train, test) = data::load_mnist_csv_gz(&path)?.shuffle_split(args.seed, 4000);
    wgnn::manual_seed(args.seed);
    let net = kind.build(dev);
    let opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: 2e-3,
            ..Default::default()
        },
    );
    let mut model = net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy])?;
    let (x, y) = train.tensors(dev)?;
    let (xt, yt) = test.tensors(dev)?;
    let (x, xt) = (x.reshape(&kind.shape(train.n)), xt.reshape(&kind.shape(test.n)));
    let epochs = if kind == Digits::Cnn {
        args.cnn_epochs
    } else {
        args.epochs
    };
    model.fit(
        &x,
        &y,
        FitConfig::new()
            .epochs(epochs)
            .batch_size(if kind == Digits::Cnn { 64 } else { 32 })
            .seed(args.seed)
            .verbose(0),
    )?;
    model.net.eval();
    let acc = model.evaluate(&xt, &yt)?["accuracy"];
    println!(
        "digits: the {} after {epochs} epochs: test accuracy {acc:.4}",
        kind.name()
    );

    let n = args.digits.min(test.n);
    let sample = Tensor::from_vec(test.features[..n * 784].to_vec(), &kind.shape(n), dev)?;
    let scores = model.net.forward(&sample).to_vec()?;
    let (mut pred, mut second) = (Vec::new(), Vec::new());
    for row in scores.chunks(10) {
        let mut order: Vec<usize> = (0..10).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        pred.push(order[0] as u32);
        second.push(order[1] as u32);
    }
    let black = Tensor::zeros(&kind.shape(1), dev);
    let sal = explain::saliency(&model.net, &sample, &pred)?.to_vec()?;
    let ig = explain::integrated_gradients(&model.net, &sample, &black, &pred, args.steps)?;
    let ig2 = explain::integrated_gradients(&model.net, &sample, &black, &second, args.steps)?;
    let (igv, ig2v) = (ig.attributions.to_vec()?, ig2.attributions.to_vec()?);
    let pixels = &test.features[..n * 784];
    let mut rows = Vec::new();
    for i in 0..n {
        let at = |v: &[f32]| v[i * 784..(i + 1) * 784].to_vec();
        let score = scores[i * 10 + pred[i] as usize];
        println!(
            "  digit {i}: label {}, predicted {} (score {score:.2}), runner-up {}; IG completeness gap {:.2e} \
             (predicted), {:.2e} (runner-up)",
            test.labels[i], pred[i], second[i], ig.row_gaps[i], ig2.row_gaps[i]
        );
        rows.push(vec![
            (format!("label {}", test.labels[i]), at(pixels), false),
            (format!("saliency, {}", pred[i]), at(&sal), false),
            (format!("IG, {}", pred[i]), at(&igv), true),
            (format!("IG, {}", second[i]), at(&ig2v), true),
        ]);
    }
    let png = args.out.join(match kind {
        Digits::Mlp => "digits.png",
        Digits::Cnn => "digits_cnn.png",
    });
    digit_grid(&png, &rows)?;
    println!("  wrote {}", png.display());

    // Sanity check: randomized weights (a fresh initialization, another seed).
    wgnn::manual_seed(args.seed + 1000);
    let mut random = kind.build(dev);
    random.eval();
    let sal_random = explain::saliency(&random, &sample, &pred)?.to_vec()?;
    let rho: Vec<f64> = (0..n)
        .map(|i| spearman(&sal[i * 784..(i + 1) * 784], &sal_random[i * 784..(i + 1) * 784]))
        .collect();
    let mean = rho.iter().sum::<f64>() / n as f64;
    println!(
        "  sanity check: Spearman rank correlation of the trained and randomized models' saliency maps, \
         mean {mean:.3} over {n} digits (each: {})",
        rho.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(", ")
    );
    Ok(mean)
}

fn breast_cancer(args: &Args, dev: &Device) -> Result<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/breast_cancer.csv");
    let (train, test) = data::load_csv_labelled(&path, 1)?.shuffle_split(args.seed, 455);
    wgnn::manual_seed(args.seed);
    let (x, y) = train.tensors(dev)?;
    let net = Sequential::new()
        .add(Normalize::adapt(&x)?)
        .add(Linear::new(30, 16, dev))
        .add(nn::Relu)
        .add(Linear::new(16, 2, dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let mut model = net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy])?;
    model.fit(
        &x,
        &y,
        FitConfig::new().epochs(60).batch_size(32).seed(args.seed).verbose(0),
    )?;
    let (xt, yt) = test.tensors(dev)?;
    println!(
        "breast cancer: {} train, {} test rows; test accuracy {:.4}",
        train.n,
        test.n,
        model.evaluate(&xt, &yt)?["accuracy"]
    );
    let imp = explain::permutation_importance(&model.net, &xt, &test.labels, 10, args.seed)?;
    // Mean |IG| per feature toward the true class, from the training data's mean.
    let means: Vec<f32> = (0..30)
        .map(|j| (0..train.n).map(|i| train.features[i * 30 + j]).sum::<f32>() / train.n as f32)
        .collect();
    let baseline = Tensor::from_vec(means, &[1, 30], dev)?;
    let ig = explain::integrated_gradients(&model.net, &xt, &baseline, &test.labels, args.steps)?;
    let igv = ig.attributions.to_vec()?;
    let mean_abs: Vec<f64> = (0..30)
        .map(|j| (0..test.n).map(|i| igv[i * 30 + j].abs() as f64).sum::<f64>() / test.n as f64)
        .collect();
    let mut ranked: Vec<(usize, Importance, f64)> = (0..30).map(|j| (j, imp[j], mean_abs[j])).collect();
    ranked.sort_by(|a, b| b.1.mean.total_cmp(&a.1.mean).then(b.2.total_cmp(&a.2)));
    println!("  rank  measurement               accuracy drop (± std)   mean |IG|");
    for (k, (j, i, m)) in ranked.iter().take(10).enumerate() {
        println!(
            "  {:>4}  {:<24}  {:.4} ± {:.4}          {m:.4}",
            k + 1,
            FEATURES[*j],
            i.mean,
            i.std
        );
    }
    let perm: Vec<f32> = imp.iter().map(|i| i.mean as f32).collect();
    let igf: Vec<f32> = mean_abs.iter().map(|&m| m as f32).collect();
    println!(
        "  Spearman correlation of the two rankings over the 30 measurements: {:.3}; IG completeness gap {:.2e}",
        spearman(&perm, &igf),
        ig.completeness_gap
    );
    let png = args.out.join("importance.png");
    importance_chart(&png, &ranked, 12)?;
    println!("  wrote {}", png.display());
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = args.device.open()?;
    println!("device: {}", dev.info());
    std::fs::create_dir_all(&args.out).map_err(|e| Error::Io {
        path: args.out.clone(),
        source: e,
    })?;
    register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| Error::Invalid("explain: the embedded font is invalid".into()))?;
    let rho_mlp = digits(&args, &dev, Digits::Mlp)?;
    let rho_cnn = digits(&args, &dev, Digits::Cnn)?;
    breast_cancer(&args, &dev)?;
    check::at_most(
        "saliency rank correlation, trained vs randomized (the larger of the MLP's and the CNN's)",
        rho_mlp.max(rho_cnn),
        args.max_rank_correlation,
        "--max-rank-correlation",
    );
    Ok(())
}
