//! Federated learning on the committed MNIST subset (4000 training and 1000 test
//! images): the training images dealt to `--clients` simulated clients, IID or by a
//! Dirichlet(α) split over the labels (α = 1: skewed, α = 0.1: most clients hold
//! one or two digits), trained by FedAvg and FedProx (μ = `--mu`) — each round a
//! seeded sample of clients runs `--local-epochs` of SGD on its own images from the
//! global model and sends its weights back, and the server averages them weighted
//! by the clients' image counts — beside centralized SGD on all images (one epoch
//! per round, the same computation per round as the clients together at the default
//! settings). A 784 → 128 ReLU → 10 MLP throughout.
//!
//! Prints the test accuracy after the last round, the best round, the first round
//! that reaches 85 %, and the bytes each client sends per round (its weights as
//! f32; it downloads as many); draws the accuracy per round of every run in
//! `federated.png` (and `.svg`) in `--out`.
//!
//! ```text
//! cargo run --release --example federated -- [--device cpu|gpu] [--clients 20] [--per-round 10]
//!     [--rounds 20] [--local-epochs 2] [--mu 0.1] [--out DIR] [--min-accuracy-iid 0.9]
//! ```

use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

use wgnn::data::{self, Dataset};
use wgnn::federated::{fed_avg, split_dirichlet, split_iid, FedConfig};
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Optimizer, Sgd, SgdConfig};
use wgnn::{Device, Error, Result};

#[path = "common/check.rs"]
mod check;
#[path = "common/device.rs"]
mod device;

/// FedAvg and FedProx over IID and non-IID clients beside centralized training.
#[derive(Parser)]
#[command(name = "federated")]
struct Args {
    #[command(flatten)]
    device: device::DeviceArg,
    /// Simulated clients.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Clients sampled per round.
    #[arg(long, default_value_t = 10)]
    per_round: usize,
    /// Rounds of communication (epochs of the centralized run).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Local epochs of each sampled client per round.
    #[arg(long, default_value_t = 2)]
    local_epochs: usize,
    /// FedProx' proximal weight μ.
    #[arg(long, default_value_t = 0.1)]
    mu: f32,
    /// SGD learning rate (clients and centralized).
    #[arg(long, default_value_t = 0.05)]
    lr: f32,
    /// Where the picture goes.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("wgnn-federated"))]
    out: PathBuf,
    /// Fail unless FedAvg on IID clients reaches this test accuracy in the last round.
    #[arg(long)]
    min_accuracy_iid: Option<f64>,
}

fn mlp(dev: &Device) -> Sequential {
    wgnn::manual_seed(0);
    Sequential::new()
        .add(Linear::new(784, 128, dev))
        .add(nn::Relu)
        .add(Linear::new(128, 10, dev))
}

/// Centralized SGD, one shuffled epoch per round: the test accuracy after each.
fn centralized(args: &Args, train: &Dataset, test: &Dataset, dev: &Device) -> Result<Vec<f64>> {
    let model = mlp(dev);
    let config = SgdConfig {
        lr: args.lr,
        ..Default::default()
    };
    let mut sgd = Sgd::new(model.parameters(), config);
    let (xt, _) = test.tensors(dev)?;
    let mut acc = Vec::new();
    for epoch in 0..args.rounds {
        for rows in data::permutation(train.n, epoch as u64).chunks(32) {
            let (x, y) = train.select(rows).tensors(dev)?;
            sgd.step(&nn::loss::cross_entropy(&model.forward(&x), &y).backward()?)?;
        }
        let predicted = nn::inference(|| model.forward(&xt)).argmax(1).to_labels()?;
        let right = predicted.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
        acc.push(right as f64 / test.n as f64);
    }
    Ok(acc)
}

/// A Dirichlet(α) split that leaves no client empty: the first of seeds 0, 1, …
fn dirichlet(labels: &[u32], clients: usize, alpha: f64) -> Result<(Vec<Vec<usize>>, u64)> {
    let mut last = None;
    for seed in 0..100 {
        match split_dirichlet(labels, clients, alpha, seed) {
            Ok(split) => return Ok((split, seed)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Invalid("no split".into())))
}

/// Of each client's images, the share of its most common digit (mean over clients).
fn top_label_share(split: &[Vec<usize>], labels: &[u32]) -> f64 {
    let shares = split.iter().map(|rows| {
        let mut counts = [0usize; 10];
        rows.iter().for_each(|&i| counts[labels[i] as usize] += 1);
        *counts.iter().max().unwrap_or(&0) as f64 / rows.len() as f64
    });
    shares.sum::<f64>() / split.len() as f64
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = args.device.open()?;
    println!("device: {}", dev.info());
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist_5k.csv.gz");
    let (train, test) = data::load_mnist_csv_gz(&path)?.shuffle_split(0, 4000);
    println!(
        "MNIST subset: {} train, {} test images; {} clients, {} per round, {} rounds, {} local epochs, batch 32, lr {}",
        train.n, test.n, args.clients, args.per_round, args.rounds, args.local_epochs, args.lr
    );
    let iid = split_iid(train.n, args.clients, 0)?;
    let (dir1, seed1) = dirichlet(&train.labels, args.clients, 1.0)?;
    let (dir01, seed01) = dirichlet(&train.labels, args.clients, 0.1)?;
    for (name, split) in [("IID", &iid), ("Dirichlet α = 1", &dir1), ("Dirichlet α = 0.1", &dir01)] {
        let sizes: Vec<usize> = split.iter().map(Vec::len).collect();
        println!(
            "  {name:<18} images per client {} … {}, most common digit {:.0} % of a client's images on average",
            sizes.iter().min().unwrap_or(&0),
            sizes.iter().max().unwrap_or(&0),
            100.0 * top_label_share(split, &train.labels)
        );
    }
    println!("  (Dirichlet seeds {seed1} and {seed01}: the first that leave no client without images)");

    let mut curves: Vec<(String, Vec<f64>)> = Vec::new();
    let mut bytes = 0;
    let start = Instant::now();
    curves.push(("centralized SGD".into(), centralized(&args, &train, &test, &dev)?));
    let central_s = start.elapsed().as_secs_f64();
    let mut seconds = vec![central_s];
    let runs = [
        ("FedAvg, IID", &iid, 0.0),
        ("FedAvg, α = 1", &dir1, 0.0),
        ("FedProx, α = 1", &dir1, args.mu),
        ("FedAvg, α = 0.1", &dir01, 0.0),
        ("FedProx, α = 0.1", &dir01, args.mu),
    ];
    for (name, clients, mu) in runs {
        let model = mlp(&dev);
        let config = FedConfig {
            rounds: args.rounds,
            clients_per_round: args.per_round,
            local_epochs: args.local_epochs,
            batch_size: 32,
            lr: args.lr,
            mu,
            dp: None,
            shuffle: true,
            seed: 1,
        };
        let start = Instant::now();
        let reports = fed_avg(&model, &train, clients, Some(&test), &config)?;
        seconds.push(start.elapsed().as_secs_f64());
        bytes = reports[0].bytes_per_client;
        curves.push((name.into(), reports.iter().filter_map(|r| r.test_accuracy).collect()));
    }
    println!();
    println!("| run | test accuracy, last round | best (round) | first round ≥ 85 % | seconds |");
    println!("|---|---|---|---|---|");
    for ((name, acc), s) in curves.iter().zip(&seconds) {
        let (best_round, best) = acc
            .iter()
            .enumerate()
            .fold((0, 0.0f64), |b, (i, &a)| if a > b.1 { (i + 1, a) } else { b });
        let reach = acc
            .iter()
            .position(|&a| a >= 0.85)
            .map_or("never".to_string(), |r| (r + 1).to_string());
        println!(
            "| {name} | {:.4} | {best:.4} ({best_round}) | {reach} | {s:.1} |",
            acc.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!(
        "\neach sampled client sends {bytes} bytes per round ({:.1} MB per round from {} clients, {:.1} MB over the run)",
        (bytes * args.per_round) as f64 / 1e6,
        args.per_round,
        (bytes * args.per_round * args.rounds) as f64 / 1e6
    );
    wgnn::train::report::write_lines(&args.out, "federated", "test accuracy", "round", &curves)?;
    println!("wrote {}", args.out.join("federated.png").display());
    let iid_last = curves[1].1.last().copied().unwrap_or(f64::NAN);
    check::at_least(
        "FedAvg IID test accuracy",
        iid_last,
        args.min_accuracy_iid,
        "--min-accuracy-iid",
    );
    Ok(())
}
