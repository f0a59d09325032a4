//! The MLP of the seed's practical chapter: 784 → Dense(128, ReLU) → Dense(10,
//! softmax), Adam(1e-3), sparse cross-entropy, batch 32, 10 epochs.
//!
//! By default it trains on the 5000-image MNIST subset committed in `data/`
//! (shuffled with a fixed seed, then split 4000 train / 1000 test). With
//! `--data DIR` it reads standard IDX files (`train-images-idx3-ubyte[.gz]`, …),
//! e.g. `/usr/share/datasets/fashion-mnist` after `apt-get install
//! dataset-fashion-mnist`.
//!
//! ```text
//! cargo run --release --example mnist -- [--device cpu|gpu] [--data DIR]
//!     [--epochs 10] [--batch 32] [--lr 0.001] [--seed 0]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use wgnn::data::{self, Dataset};
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::{Device, Result, Tensor};

struct Args {
    device: Option<String>,
    data: Option<PathBuf>,
    epochs: usize,
    batch: usize,
    lr: f32,
    seed: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        device: None,
        data: None,
        epochs: 10,
        batch: 32,
        lr: 1e-3,
        seed: 0,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < raw.len() {
        let value = raw.get(i + 1).cloned().unwrap_or_default();
        let bad = |what: &str| -> ! {
            eprintln!("mnist: {what} needs a value, got {value:?}");
            std::process::exit(2)
        };
        match raw[i].as_str() {
            "--device" => args.device = Some(value.clone()),
            "--data" => args.data = Some(value.clone().into()),
            "--epochs" => args.epochs = value.parse().unwrap_or_else(|_| bad("--epochs")),
            "--batch" => args.batch = value.parse().unwrap_or_else(|_| bad("--batch")),
            "--lr" => args.lr = value.parse().unwrap_or_else(|_| bad("--lr")),
            "--seed" => args.seed = value.parse().unwrap_or_else(|_| bad("--seed")),
            other => {
                eprintln!("mnist: unknown argument {other:?}");
                std::process::exit(2)
            }
        }
        i += 2;
    }
    args
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

/// Test accuracy, evaluated in chunks of 1000 rows.
fn accuracy(model: &Sequential, test: &Dataset, dev: &Device) -> Result<f32> {
    let mut correct = 0;
    for start in (0..test.n).step_by(1000) {
        let end = (start + 1000).min(test.n);
        let x = Tensor::from_vec(
            test.features[start * test.dim..end * test.dim].to_vec(),
            &[end - start, test.dim],
            dev,
        )?;
        let predicted = model.forward(&x).argmax(1).to_labels()?;
        correct += predicted
            .iter()
            .zip(&test.labels[start..end])
            .filter(|(p, l)| p == l)
            .count();
    }
    Ok(correct as f32 / test.n as f32)
}

fn main() -> Result<()> {
    let args = parse_args();
    let dev = match args.device.as_deref() {
        Some("cpu") => Device::cpu(),
        Some("gpu") => Device::gpu()?,
        _ => Device::best(),
    };
    let (train, test, name) = load(&args)?;
    println!(
        "data: {name}: {} train, {} test, {} features",
        train.n, test.n, train.dim
    );
    println!("device: {}", dev.info());
    wgnn::manual_seed(args.seed);
    let model = Sequential::new()
        .add(Linear::new(train.dim, 128, &dev))
        .add(nn::Relu)
        .add(Linear::new(128, 10, &dev));
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: args.lr,
            ..Default::default()
        },
    );
    let mut order: Vec<usize> = (0..train.n).collect();
    println!("epoch   loss     test acc   seconds");
    for epoch in 1..=args.epochs {
        let started = Instant::now();
        // Seeded shuffle of the training order each epoch.
        let (shuffled, _) = Dataset {
            features: vec![],
            labels: order.iter().map(|&i| i as u32).collect(),
            n: order.len(),
            dim: 0,
        }
        .shuffle_split(args.seed.wrapping_mul(1000).wrapping_add(epoch as u64), order.len());
        order = shuffled.labels.iter().map(|&i| i as usize).collect();
        let mut losses = Vec::new();
        for chunk in order.chunks(args.batch) {
            let batch = train.select(chunk);
            let x = Tensor::from_vec(batch.features, &[chunk.len(), train.dim], &dev)?;
            let y = Tensor::from_labels(&batch.labels, &dev)?;
            let loss = nn::loss::cross_entropy(&model.forward(&x), &y);
            opt.step(&loss.backward()?)?;
            losses.push(loss);
        }
        // One readback per epoch: the mean of the step losses, summed on the device.
        let n = losses.len() as f32;
        let mean_loss = losses
            .iter()
            .skip(1)
            .fold(losses[0].clone(), |acc, l| &acc + l)
            .item()?
            / n;
        let acc = accuracy(&model, &test, &dev)?;
        println!(
            "{epoch:>5}   {mean_loss:.4}   {acc:.4}     {:.2}",
            started.elapsed().as_secs_f32()
        );
    }
    Ok(())
}
