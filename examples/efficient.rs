//! Smaller models and what they cost, on the committed MNIST subset (4000 training,
//! 1000 test images) with the seed's MLP (784 → 128 ReLU → 10, Adam, batch 32):
//!
//! * **dense**: trained `--epochs` epochs, and the same trained `--tune-epochs` more
//!   (the reference for the pruned models, which get those epochs as fine-tuning);
//! * **magnitude-pruned** at 50, 80 and 90 % (one global threshold over both weight
//!   matrices, `wgnn::prune`) gradually (Zhu and Gupta's cubic schedule over the first
//!   half of `--tune-epochs` of fine-tuning from the dense weights), the masks applied
//!   to the gradients in each step's plan, so the pruned weights stay exactly zero;
//! * **structured**: the 32 hidden units with the largest incoming weights kept
//!   (`prune::shrink_hidden`: a 784 → 32 → 10 model), fine-tuned the same way;
//! * **distilled**: a 784 → 32 → 10 student trained from scratch for `--epochs` with
//!   the dense model as teacher (`nn::loss::distillation`, `--temperature` 4, `--alpha` 0.7), beside the
//!   same student trained on the labels alone.
//!
//! * **f16 weights**: the dense model's weights rounded to half precision (f32
//!   arithmetic), saved as F16 safetensors;
//! * **mixed f16 training**: the dense model trained again from the same initial
//!   weights in mixed precision (`wgnn::amp`: f16 GEMM inputs, f32 accumulation and
//!   master weights, dynamic loss scaling), inferred and timed in mixed precision;
//! * **int8**: the dense model quantized after training (`wgnn::quantize`: per-channel
//!   int8 weights, activation scales calibrated on 256 training images by min-max or
//!   the 99.99th percentile, the int8 GEMM), saved as I8 safetensors.
//!
//! For each: test accuracy, nonzero weights, the safetensors file's bytes and a
//! sparse encoding's (value + 32-bit index per nonzero weight, biases dense),
//! multiply-adds per image counting only nonzero weights (int8 ones for the int8 models;
//! their "sparse bytes" column holds the codes and scales) (the work a sparse kernel
//! would do; wgnn's dense kernels still multiply the zeros), and the inference
//! latency of the model as stored at batch 1 and 256 and its training step at batch
//! 32 on `--device`, and an energy proxy: the profiler's count of arithmetic
//! operations and bytes moved by one batch-1 inference. Writes `accuracy_vs_size.png` (and `.svg`) in `--out`.
//!
//! Then (unless `--cnn-epochs 0`) the digit CNN of `cnn` the same ways — f32, f16
//! weights, int8 convolutions with their batch norms folded in, pruned 50/80/90 %
//! (`common/efficient_cnn.rs`) — and (unless `--lm-steps 0`) the character-level LSTM language model
//! of `lstm_text` in bits per character: f32, mixed-precision training, f16 weights,
//! int8 gate products and head, pruned 50/80/90 % (`common/efficient_lm.rs`).
//!
//! ```text
//! cargo run --release --example efficient -- [--device cpu|gpu] [--epochs 15] [--tune-epochs 4]
//!     [--out DIR] [--max-drop-90 0.01] [--cnn-epochs 2] [--max-cnn-int8-drop 0.01]
//!     [--lm-steps 300] [--max-lm-gap 0.05]
//! ```

use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

use wgnn::data::{self, Dataset};
use wgnn::nn::{self, loss, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, GradScaler, GradScalerConfig, Optimizer};
use wgnn::prune::{self, GradualSchedule, Pruning, Scope};
use wgnn::quantize::{Calibration, QuantizedSequential};
use wgnn::{Device, Error, Result, Tensor};

#[path = "common/check.rs"]
mod check;
#[path = "common/efficient_cnn.rs"]
mod cnn_table;
#[path = "common/device.rs"]
mod device;
#[path = "common/digits_cnn.rs"]
mod digits_cnn;
#[path = "common/efficient_lm.rs"]
mod lm;
#[allow(dead_code)] // the corpus only: sampling and the baselines are `lstm_text`'s
#[path = "common/text.rs"]
mod text;

/// Pruning and distillation of the MNIST MLP: accuracy against size and time.
#[derive(Parser)]
#[command(name = "efficient")]
struct Args {
    #[command(flatten)]
    device: device::DeviceArg,
    /// Epochs of the dense model and of the students.
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// Fine-tuning epochs after pruning.
    #[arg(long, default_value_t = 4)]
    tune_epochs: usize,
    /// Distillation temperature T.
    #[arg(long, default_value_t = 4.0)]
    temperature: f32,
    /// Distillation: the soft loss's weight α.
    #[arg(long, default_value_t = 0.7)]
    alpha: f32,
    /// Where the picture goes.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("wgnn-efficient"))]
    out: PathBuf,
    /// Fail unless the 90 % pruned, fine-tuned model is at most this far below dense.
    #[arg(long)]
    max_drop_90: Option<f64>,
    /// Epochs of the CNN's table (0: no CNN table).
    #[arg(long, default_value_t = 2)]
    cnn_epochs: usize,
    /// Fail unless the int8 CNN is at most this far below f32.
    #[arg(long)]
    max_cnn_int8_drop: Option<f64>,
    /// Training steps of the LSTM language model's table (0: no LSTM table).
    #[arg(long, default_value_t = 300)]
    lm_steps: usize,
    /// Fail unless the language model trained in mixed precision and its int8 form
    /// are each at most this many bits per character above f32.
    #[arg(long)]
    max_lm_gap: Option<f64>,
}

/// One row of the table.
struct Row {
    name: String,
    accuracy: f64,
    nonzero: usize,
    file_bytes: u64,
    sparse_bytes: usize,
    macs: usize,
    latency_1_ms: f64,
    latency_256_ms: f64,
    /// None: not trainable (int8).
    step_ms: Option<f64>,
    /// The profiler's count of one batch-1 inference: arithmetic (f32 or int8
    /// operations, as the kernels do them: zeros included) and bytes moved.
    flops: u64,
    bytes: u64,
}

/// The profiler's flops and bytes of one run of `f` on `dev` (the energy proxy).
fn energy(dev: &Device, f: impl FnOnce() -> Result<()>) -> Result<(u64, u64)> {
    dev.reset_profile();
    dev.set_profile(true);
    let result = f();
    dev.set_profile(false);
    result?;
    let report = dev.profile_report();
    let launches = report.plans.iter().flat_map(|p| &p.launches);
    Ok(launches.fold((0, 0), |(f, b), l| (f + l.flops, b + l.bytes)))
}

fn mlp(hidden: usize, dev: &Device) -> Sequential {
    Sequential::new()
        .add(Linear::new(784, hidden, dev))
        .add(nn::Relu)
        .add(Linear::new(hidden, 10, dev))
}

/// A training loss from the logits, the labels and the batch's row indices.
type Objective<'a> = dyn Fn(&Tensor, &Tensor, &[usize]) -> Result<Tensor> + 'a;

/// One epoch of Adam at batch 32, the gradients masked by `pruning`, the loss from
/// `objective(logits, rows)`.
fn epoch(
    model: &Sequential,
    opt: &mut Adam,
    train: &Dataset,
    seed: u64,
    pruning: Option<&Pruning>,
    objective: &Objective,
    dev: &Device,
) -> Result<()> {
    for rows in data::permutation(train.n, seed).chunks(32) {
        let (x, y) = train.select(rows).tensors(dev)?;
        let grads = objective(&model.forward(&x), &y, rows)?.backward()?;
        opt.step(&match pruning {
            Some(p) => p.mask(&grads),
            None => grads,
        })?;
    }
    Ok(())
}

fn hard(logits: &Tensor, y: &Tensor, _: &[usize]) -> Result<Tensor> {
    Ok(loss::cross_entropy(logits, y))
}

fn accuracy(model: &Sequential, test: &Dataset, dev: &Device) -> Result<f64> {
    let (x, _) = test.tensors(dev)?;
    let predicted = nn::inference(|| model.forward(&x)).argmax(1).to_labels()?;
    Ok(predicted.iter().zip(&test.labels).filter(|(p, l)| p == l).count() as f64 / test.n as f64)
}

/// The file a model is saved to in `out`, named after its row.
fn file_for(out: &std::path::Path, name: &str) -> PathBuf {
    out.join(format!(
        "{}.safetensors",
        name.replace([' ', '%', ',', '(', ')', '.', '/'], "_")
    ))
}

/// Nonzero parameters of `model`.
fn nonzero(model: &dyn Module) -> Result<usize> {
    Ok(prune::sparsity_report(model)?.iter().map(|r| r.numel - r.zeros).sum())
}

/// `model` saved in `out` (the file named after `name`) in `format`: the file's bytes.
fn saved_as(model: &dyn Module, out: &std::path::Path, name: &str, format: wgnn::io::FloatFormat) -> Result<u64> {
    let path = file_for(out, name);
    wgnn::io::save_safetensors_as(model, &path, format)?;
    file_bytes(&path)
}

/// The size of `path` in bytes.
fn file_bytes(path: &std::path::Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    Ok(meta.len())
}

/// Inference of `forward` on the first test images: median ms at batch 1 and 256,
/// and the profiler's operations and bytes at batch 1.
fn inference_costs(test: &Dataset, dev: &Device, forward: impl Fn(&Tensor) -> Tensor) -> Result<(f64, f64, u64, u64)> {
    let x1 = Tensor::from_vec(test.features[..784].to_vec(), &[1, 784], dev)?;
    let x256 = Tensor::from_vec(test.features[..256 * 784].to_vec(), &[256, 784], dev)?;
    let run = |x: &Tensor| nn::inference(|| forward(x)).to_vec().map(|_| ());
    let latency_1 = median_ms(21, || run(&x1))?;
    let (flops, bytes) = energy(dev, || run(&x1))?;
    let latency_256 = median_ms(11, || run(&x256))?;
    Ok((latency_1, latency_256, flops, bytes))
}

/// Median milliseconds of `f` over `runs` runs after two warm-ups.
fn median_ms(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    f()?;
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[runs / 2])
}

fn measure(
    name: &str,
    model: &Sequential,
    train: &Dataset,
    test: &Dataset,
    out: &std::path::Path,
    dev: &Device,
) -> Result<Row> {
    measure_in(name, model, false, train, test, out, dev)
}

/// [`measure`], with inference and the training step in mixed precision when
/// `mixed` (`wgnn::amp::autocast` around all of it).
fn measure_in(
    name: &str,
    model: &Sequential,
    mixed: bool,
    train: &Dataset,
    test: &Dataset,
    out: &std::path::Path,
    dev: &Device,
) -> Result<Row> {
    let _amp = mixed.then(|| wgnn::amp::autocast(dev));
    let accuracy = accuracy(model, test, dev)?;
    let path = file_for(out, name);
    wgnn::io::save_safetensors(model, &path)?;
    let file_bytes = file_bytes(&path)?;
    let report = prune::sparsity_report(model)?;
    let (mut nonzero, mut sparse_bytes, mut macs) = (0, 0, 0);
    for r in &report {
        let nz = r.numel - r.zeros;
        nonzero += nz;
        if r.shape.len() == 2 {
            sparse_bytes += 8 * nz;
            macs += nz;
        } else {
            sparse_bytes += 4 * r.numel;
        }
    }
    let (latency_1_ms, latency_256_ms, flops, bytes) = inference_costs(test, dev, |x| model.forward(x))?;
    // A training step on a copy of the weights (the measured model stays as it is).
    let copy = mlp(model.parameters()[0].shape()[0], dev);
    for (c, p) in copy.parameters().iter().zip(model.parameters()) {
        c.assign(&p.to_vec()?)?;
    }
    let mut opt = Adam::new(copy.parameters(), AdamConfig::default());
    let (x, y) = train.select(&(0..32).collect::<Vec<_>>()).tensors(dev)?;
    let step_ms = median_ms(11, || {
        opt.step(&loss::cross_entropy(&copy.forward(&x), &y).backward()?)?;
        opt.parameters()[0].to_vec().map(|_| ())
    })?;
    Ok(Row {
        name: name.into(),
        accuracy,
        nonzero,
        file_bytes,
        sparse_bytes,
        macs,
        latency_1_ms,
        latency_256_ms,
        step_ms: Some(step_ms),
        flops,
        bytes,
    })
}

/// The dense model in reduced precision (`wgnn::quantize`): `method` calibrates int8
/// activation scales on 256 training images; `None` gives f16 weights.
fn measure_reduced(
    name: &str,
    dense: &Sequential,
    train: &Dataset,
    test: &Dataset,
    method: Option<Calibration>,
    out: &std::path::Path,
    dev: &Device,
) -> Result<Row> {
    let copy = mlp(128, dev);
    for (c, p) in copy.parameters().iter().zip(dense.parameters()) {
        c.assign(&p.to_vec()?)?;
    }
    let q = match method {
        Some(method) => {
            let (calibration, _) = train.select(&(0..256).collect::<Vec<_>>()).tensors(dev)?;
            QuantizedSequential::quantize(copy, &calibration, method)?
        }
        None => QuantizedSequential::half(copy)?,
    };
    let (x, _) = test.tensors(dev)?;
    let predicted = q.forward(&x).argmax(1).to_labels()?;
    let accuracy = predicted.iter().zip(&test.labels).filter(|(p, l)| p == l).count() as f64 / test.n as f64;
    let path = file_for(out, name);
    q.save(&path)?;
    let file_bytes = file_bytes(&path)?;
    let (latency_1_ms, latency_256_ms, flops, bytes) = inference_costs(test, dev, |x| q.forward(x))?;
    let weights = 784 * 128 + 128 * 10;
    // Codes (1 byte) or halves (2 bytes) per weight, f32 biases (and int8 scales).
    let stored = match method {
        Some(_) => weights + 4 * (2 * 138 + 2),
        None => 2 * weights + 4 * 138,
    };
    Ok(Row {
        name: name.into(),
        accuracy,
        nonzero: weights + 138,
        file_bytes,
        sparse_bytes: stored,
        macs: weights,
        latency_1_ms,
        latency_256_ms,
        step_ms: None,
        flops,
        bytes,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = args.device.open()?;
    println!("device: {}", dev.info());
    std::fs::create_dir_all(&args.out).map_err(|e| Error::Io {
        path: args.out.clone(),
        source: e,
    })?;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist_5k.csv.gz");
    let (train, test) = data::load_mnist_csv_gz(&path)?.shuffle_split(0, 4000);
    let mut rows = Vec::new();

    wgnn::manual_seed(0);
    let dense = mlp(128, &dev);
    let mut opt = Adam::new(dense.parameters(), AdamConfig::default());
    for e in 0..args.epochs {
        epoch(&dense, &mut opt, &train, e as u64, None, &hard, &dev)?;
    }
    rows.push(measure("dense", &dense, &train, &test, &args.out, &dev)?);
    let dense_weights: Vec<Vec<f32>> = dense.parameters().iter().map(Tensor::to_vec).collect::<Result<_>>()?;

    // The same number of epochs as the pruned models get in all: the fair reference.
    let longer = mlp(128, &dev);
    for (p, w) in longer.parameters().iter().zip(&dense_weights) {
        p.assign(w)?;
    }
    let mut longer_opt = Adam::new(longer.parameters(), AdamConfig::default());
    for e in 0..args.tune_epochs {
        epoch(&longer, &mut longer_opt, &train, 100 + e as u64, None, &hard, &dev)?;
    }
    rows.push(measure(
        &format!("dense, +{} epochs", args.tune_epochs),
        &longer,
        &train,
        &test,
        &args.out,
        &dev,
    )?);

    for sparsity in [0.5f32, 0.8, 0.9] {
        let model = mlp(128, &dev);
        for (p, w) in model.parameters().iter().zip(&dense_weights) {
            p.assign(w)?;
        }
        let mut opt = Adam::new(model.parameters(), AdamConfig::default());
        let weights: Vec<Tensor> = prune::prunable(&model).into_iter().map(|(_, p)| p).collect();
        // Zhu and Gupta: from 0 to the sparsity over the first half of the fine-tuning.
        let steps = args.tune_epochs * train.n.div_ceil(32);
        let schedule = GradualSchedule {
            initial: 0.0,
            final_sparsity: sparsity,
            start: 0,
            end: steps / 2,
            every: (steps / 20).max(1),
        };
        schedule.check()?;
        let mut pruning = Pruning::magnitude(&weights, 0.0, Scope::Global)?;
        let mut step = 0;
        for e in 0..args.tune_epochs {
            for rows in data::permutation(train.n, 100 + e as u64).chunks(32) {
                if schedule.prunes_at(step) {
                    pruning.grow(schedule.sparsity_at(step), Scope::Global, Some(&mut opt))?;
                }
                let (x, y) = train.select(rows).tensors(&dev)?;
                let grads = loss::cross_entropy(&model.forward(&x), &y).backward()?;
                opt.step(&pruning.mask(&grads))?;
                step += 1;
            }
        }
        let name = format!("pruned {:.0}%", sparsity * 100.0);
        rows.push(measure(&name, &model, &train, &test, &args.out, &dev)?);
    }

    let layers: Vec<Linear> = (0..2)
        .map(|k| {
            let (w, b) = (&dense_weights[2 * k], &dense_weights[2 * k + 1]);
            let (out, inp) = if k == 0 { (128, 784) } else { (10, 128) };
            let l = Linear::new(inp, out, &dev);
            l.weight.assign(w)?;
            l.bias.as_ref().expect("a bias").assign(b)?;
            Ok(l)
        })
        .collect::<Result<_>>()?;
    let (small1, small2) = prune::shrink_hidden(&layers[0], &layers[1], 32)?;
    let structured = Sequential::new().add(small1).add(nn::Relu).add(small2);
    let mut opt = Adam::new(structured.parameters(), AdamConfig::default());
    for e in 0..args.tune_epochs {
        epoch(&structured, &mut opt, &train, 200 + e as u64, None, &hard, &dev)?;
    }
    rows.push(measure(
        "structured 128→32",
        &structured,
        &train,
        &test,
        &args.out,
        &dev,
    )?);

    let reduced = [
        ("f16 weights", None),
        ("int8, min-max", Some(Calibration::MinMax)),
        ("int8, 99.99th pct", Some(Calibration::Percentile(99.99))),
    ];
    for (name, method) in reduced {
        rows.push(measure_reduced(name, &dense, &train, &test, method, &args.out, &dev)?);
    }

    // The teacher's logits for every training image, once.
    let (xall, _) = train.tensors(&dev)?;
    let teacher_logits = nn::inference(|| dense.forward(&xall)).to_vec()?;
    let soft = |logits: &Tensor, y: &Tensor, rows: &[usize]| {
        let t: Vec<f32> = rows
            .iter()
            .flat_map(|&r| teacher_logits[r * 10..r * 10 + 10].to_vec())
            .collect();
        let teacher = Tensor::from_vec(t, &[rows.len(), 10], &dev)?;
        loss::distillation(logits, &teacher, y, args.temperature, args.alpha)
    };
    for (name, distilled) in [("student 32, labels only", false), ("student 32, distilled", true)] {
        wgnn::manual_seed(1);
        let student = mlp(32, &dev);
        let mut opt = Adam::new(student.parameters(), AdamConfig::default());
        for e in 0..args.epochs {
            let objective: &Objective = if distilled { &soft } else { &hard };
            epoch(&student, &mut opt, &train, 300 + e as u64, None, objective, &dev)?;
        }
        rows.push(measure(name, &student, &train, &test, &args.out, &dev)?);
    }

    // Mixed precision: the dense model trained again from the same initial weights and
    // batches with f16 GEMM inputs and f32 accumulation (`wgnn::amp`), f32 master
    // weights and Adam state, dynamic loss scaling; evaluated and timed the same way.
    wgnn::manual_seed(0);
    let mixed = wgnn::amp::Mixed(mlp(128, &dev));
    let mut opt = Adam::new(mixed.parameters(), AdamConfig::default());
    let mut scaler = GradScaler::new(GradScalerConfig::default())?;
    for e in 0..args.epochs {
        for rows in data::permutation(train.n, e as u64).chunks(32) {
            let (x, y) = train.select(rows).tensors(&dev)?;
            let scaled = scaler.scale(&loss::cross_entropy(&mixed.forward(&x), &y));
            scaler.step(&mut opt, &scaled.backward()?)?;
        }
    }
    let precision = if wgnn::amp::f16_supported(&dev) {
        "mixed f16 training"
    } else {
        "mixed (f32 here: no f16)"
    };
    rows.push(measure_in(precision, &mixed.0, true, &train, &test, &args.out, &dev)?);
    println!(
        "mixed precision: {} steps skipped for overflow, loss scale {} at the end",
        scaler.skipped_steps(),
        scaler.current_scale()
    );

    println!();
    println!(
        "| model | test accuracy | nonzero weights | file bytes | sparse bytes | MACs per image | inference ms, batch 1 | batch 256 | train step ms, batch 32 | ops, batch 1 | bytes moved, batch 1 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.4} | {} | {} | {} | {} | {:.3} | {:.3} | {} | {} | {} |",
            r.name,
            r.accuracy,
            r.nonzero,
            r.file_bytes,
            r.sparse_bytes,
            r.macs,
            r.latency_1_ms,
            r.latency_256_ms,
            r.step_ms.map_or("–".to_string(), |s| format!("{s:.3}")),
            r.flops,
            r.bytes
        );
    }
    // The smaller of the two encodings, against the dense file.
    let stored = |r: &Row| (r.file_bytes as f64).min(r.sparse_bytes as f64) / rows[0].file_bytes as f64;
    let series: Vec<(String, Vec<f64>)> = vec![
        ("test accuracy".into(), rows.iter().map(|r| r.accuracy).collect()),
        (
            "bytes (dense or sparse, the smaller) / dense".into(),
            rows.iter().map(stored).collect(),
        ),
    ];
    let short = |name: &str| match name {
        n if n.starts_with("dense,") => "longer".to_string(),
        n if n.starts_with("structured") => "128→32".to_string(),
        n if n.ends_with("labels only") => "student".to_string(),
        n if n.ends_with("distilled") => "distilled".to_string(),
        n if n.starts_with("int8, min") => "int8".to_string(),
        n if n.starts_with("int8, 99") => "int8 p".to_string(),
        n if n.starts_with("f16") => "f16".to_string(),
        n if n.starts_with("mixed") => "mixed".to_string(),
        n => n.replace("pruned ", ""),
    };
    let names: Vec<String> = rows.iter().map(|r| short(&r.name)).collect();
    wgnn::train::report::write_bars(&args.out, "accuracy_vs_size", "accuracy and size", &names, &series)?;
    println!("wrote {}", args.out.join("accuracy_vs_size.png").display());
    let drop = rows[1].accuracy - rows[4].accuracy;
    println!(
        "the 90 % pruned MLP {:.4} against the dense one trained as long {:.4}",
        rows[4].accuracy, rows[1].accuracy
    );
    check::at_most(
        "accuracy drop of the 90 % pruned, fine-tuned MLP",
        drop,
        args.max_drop_90,
        "--max-drop-90",
    );
    if args.cnn_epochs > 0 {
        let rows = cnn_table::rows(&train, &test, args.cnn_epochs, &args.out, &dev)?;
        cnn_table::print(&rows);
        let drop = rows[0].accuracy - rows[3].accuracy;
        println!(
            "the CNN: int8 {:.4} against f32 {:.4}",
            rows[3].accuracy, rows[0].accuracy
        );
        check::at_most(
            "accuracy drop of the int8 CNN",
            drop,
            args.max_cnn_int8_drop,
            "--max-cnn-int8-drop",
        );
    }
    if args.lm_steps > 0 {
        let corpus = text::Corpus::load()?;
        let rows = lm::rows(&corpus, args.lm_steps, &args.out, &dev)?;
        lm::print(&rows);
        let gap = |name: &str| {
            let row = rows.iter().find(|r| r.name.starts_with(name)).expect("the row exists");
            row.bpc - rows[0].bpc
        };
        let worst = gap("mixed").max(gap("int8"));
        println!(
            "the LSTM LM: mixed precision {:+.4} bpc, int8 {:+.4} bpc against f32 {:.4}",
            gap("mixed"),
            gap("int8"),
            rows[0].bpc
        );
        check::at_most(
            "bpc gap of mixed precision and int8 to f32",
            worst,
            args.max_lm_gap,
            "--max-lm-gap",
        );
    }
    Ok(())
}
