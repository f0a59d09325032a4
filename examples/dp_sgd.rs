//! Differentially private training (DP-SGD, Abadi et al. 2016) on a real medical
//! data set: the committed Wisconsin breast-cancer measurements (455 training and 114
//! test rows, 30 features, standardized on the training rows), a 30 → 16 ReLU → 2 MLP,
//! plain SGD.
//!
//! The same model is trained without privacy and then at ε = 1, 3 and 8 (δ = 1e-5):
//! batches by Poisson sampling at rate `q = batch / rows`, each example's gradient
//! clipped to norm `C`, Gaussian noise of standard deviation `σ·C` on the sum, with σ
//! chosen by `privacy::noise_multiplier_for` so that the RDP accountant gives ε after
//! the run's steps. Each setting runs `--repeats` times (other seeds); the table has
//! the mean and spread of the test accuracy, the ε the accountant reports, σ, and the
//! training time per run.
//!
//! ```text
//! cargo run --release --example dp_sgd -- [--device cpu|gpu] [--epochs 30] [--batch 64]
//!     [--clip 1.0] [--lr 0.5] [--repeats 10] [--min-accuracy-eps8 0.9]
//! ```

use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

use wgnn::data::{self, Dataset};
use wgnn::nn::{self, loss, Linear, Module};
use wgnn::optim::{Optimizer, Sgd, SgdConfig};
use wgnn::privacy::{self, poisson_batch, DpConfig, DpSgd, DpTape};
use wgnn::{Device, Result, Tensor};

#[path = "common/check.rs"]
mod check;
#[path = "common/device.rs"]
mod device;

/// DP-SGD on breast cancer at ε = 1, 3, 8 beside the non-private model.
#[derive(Parser)]
#[command(name = "dp_sgd")]
struct Args {
    #[command(flatten)]
    device: device::DeviceArg,
    /// Passes over the training rows (in expectation, with Poisson sampling).
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Expected batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// The clipping norm C.
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    /// SGD learning rate (all runs).
    #[arg(long, default_value_t = 0.5)]
    lr: f32,
    /// Runs per setting (seeds 0, 1, …).
    #[arg(long, default_value_t = 10)]
    repeats: u64,
    /// Fail unless the mean test accuracy at ε = 8 is at least this.
    #[arg(long)]
    min_accuracy_eps8: Option<f64>,
}

struct Mlp(Linear, Linear);

impl Mlp {
    fn new(dev: &Device) -> Mlp {
        Mlp(Linear::new(30, 16, dev), Linear::new(16, 2, dev))
    }
    fn parameters(&self) -> Vec<Tensor> {
        [&self.0, &self.1]
            .iter()
            .flat_map(|l| [l.weight.clone(), l.bias.clone().expect("a bias")])
            .collect()
    }
    fn logits(&self, x: &Tensor) -> Tensor {
        self.1.forward(&self.0.forward(x).relu())
    }
    fn private_losses(&self, tape: &DpTape, x: &Tensor, y: &Tensor) -> Tensor {
        loss::cross_entropy_per_row(&tape.linear(&self.1, &tape.linear(&self.0, x).relu()), y)
    }
}

/// One run: the test accuracy and, when private, the ε spent.
fn run(
    args: &Args,
    train: &Dataset,
    test: &Dataset,
    sigma: Option<f64>,
    seed: u64,
    dev: &Device,
) -> Result<(f64, f64)> {
    wgnn::manual_seed(seed);
    let mlp = Mlp::new(dev);
    let sgd_config = SgdConfig {
        lr: args.lr,
        ..Default::default()
    };
    let mut sgd = Sgd::new(mlp.parameters(), sgd_config);
    let q = args.batch as f64 / train.n as f64;
    let steps = args.epochs * train.n / args.batch;
    let mut epsilon = f64::INFINITY;
    match sigma {
        None => {
            // Non-private: shuffled batches of `batch` rows, the mean loss.
            for epoch in 0..args.epochs {
                let order = data::permutation(train.n, seed * 1000 + epoch as u64);
                for rows in order.chunks(args.batch) {
                    let (x, y) = train.select(rows).tensors(dev)?;
                    sgd.step(&nn::loss::cross_entropy(&mlp.logits(&x), &y).backward()?)?;
                }
            }
        }
        Some(sigma) => {
            let config = DpConfig {
                max_grad_norm: args.clip,
                noise_multiplier: sigma as f32,
                sample_rate: q,
                expected_batch_size: args.batch,
                seed,
            };
            let mut dp = DpSgd::new(config)?;
            for step in 0..steps {
                let rows = poisson_batch(train.n, q, seed, step as u64)?;
                if rows.is_empty() {
                    continue; // nothing drawn: the step is skipped, as Opacus does
                }
                let (x, y) = train.select(&rows).tensors(dev)?;
                sgd.step(&dp.gradients(|tape| mlp.private_losses(tape, &x, &y))?)?;
            }
            epsilon = privacy::try_rdp_epsilon(sigma, q, steps, 1e-5)?;
        }
    }
    let (x, _) = test.tensors(dev)?;
    let predicted = nn::inference(|| mlp.logits(&x)).argmax(1).to_labels()?;
    let right = predicted.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
    Ok((right as f64 / test.n as f64, epsilon))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = args.device.open()?;
    println!("device: {}", dev.info());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/breast_cancer.csv");
    let (mut train, mut test) = data::load_csv_labelled(&path, 1)?.shuffle_split(0, 455);
    data::standardize(&mut train, &mut [&mut test]);
    let q = args.batch as f64 / train.n as f64;
    let steps = args.epochs * train.n / args.batch;
    println!(
        "breast cancer: {} train, {} test rows; {} epochs, expected batch {} (q = {q:.4}, {steps} steps), C = {}, lr {}",
        train.n, test.n, args.epochs, args.batch, args.clip, args.lr
    );
    println!(
        "| training | σ | ε (δ = 1e-5) | test accuracy, mean ± std of {} | min … max | seconds per run |",
        args.repeats
    );
    println!("|---|---|---|---|---|---|");
    let mut eps8 = f64::NAN;
    for target in [None, Some(8.0), Some(3.0), Some(1.0)] {
        let sigma = match target {
            None => None,
            Some(eps) => Some(privacy::noise_multiplier_for(eps, 1e-5, q, steps, 0.01)?),
        };
        let start = Instant::now();
        let mut accs = Vec::new();
        let mut spent = f64::INFINITY;
        for seed in 0..args.repeats {
            let (acc, eps) = run(&args, &train, &test, sigma, seed, &dev)?;
            accs.push(acc);
            spent = eps;
        }
        let seconds = start.elapsed().as_secs_f64() / args.repeats as f64;
        let mean = accs.iter().sum::<f64>() / accs.len() as f64;
        let std = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len() as f64).sqrt();
        let (lo, hi) = accs.iter().fold((1.0f64, 0.0f64), |(l, h), &a| (l.min(a), h.max(a)));
        let (name, sigma_text, eps_text) = match sigma {
            None => ("non-private SGD".to_string(), "–".into(), "∞".into()),
            Some(s) => ("DP-SGD".to_string(), format!("{s:.3}"), format!("{spent:.3}")),
        };
        println!("| {name} | {sigma_text} | {eps_text} | {mean:.4} ± {std:.4} | {lo:.4} … {hi:.4} | {seconds:.3} |");
        if target == Some(8.0) {
            eps8 = mean;
        }
    }
    check::at_least(
        "mean test accuracy at ε = 8",
        eps8,
        args.min_accuracy_eps8,
        "--min-accuracy-eps8",
    );
    Ok(())
}
