//! The third table of `efficient`: the digit CNN of `cnn` (conv-BN-ReLU-maxpool ×2,
//! a linear head; `common/digits_cnn.rs`) on the same MNIST subset, made smaller:
//!
//! * **f32**: trained `--cnn-epochs` epochs (Adam 2e-3, batch 64), and the same
//!   trained one epoch more (the reference of the pruned models);
//! * **f16 weights**: the weights rounded to half precision (F16 file);
//! * **int8**: both convolutions (`QuantizedConv2d`, each batch norm folded in) and
//!   the head in int8, activation scales calibrated on 256 training images;
//! * **pruned** 50, 80 and 90 % (one global magnitude threshold over the kernels and
//!   the head, Zhu and Gupta's schedule over the first half of one fine-tuning epoch);
//! * **student**: the same CNN with 4 and 8 channels (a tenth of the weights) trained
//!   `--cnn-epochs` on the labels, and distilled from the f32 CNN (T 4, α 0.7).
//!
//! Mixed precision is not a row: under autocast only the head's GEMM takes f16 inputs
//! (wgnn's convolutions stay f32). Included by `efficient` as
//! `#[path = "common/efficient_cnn.rs"] mod cnn_table;`.

use std::path::Path;

use wgnn::data::{self, Dataset};
use wgnn::io::FloatFormat;
use wgnn::nn::{self, loss, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::prune::{self, GradualSchedule, Pruning, Scope};
use wgnn::quantize::{Calibration, QuantizedSequential};
use wgnn::{Device, Result, Tensor};

use super::digits_cnn::{cnn, cnn_with};
use super::{energy, file_bytes, file_for, median_ms, nonzero, saved_as};

const BATCH: usize = 64;

/// One row of the CNN's table.
pub struct CnnRow {
    pub name: String,
    pub accuracy: f64,
    pub nonzero: usize,
    pub file_bytes: u64,
    pub latency_1_ms: f64,
    pub latency_256_ms: f64,
    /// None: not trained in this form.
    pub step_ms: Option<f64>,
    pub flops: u64,
    pub bytes: u64,
}

/// `set`'s images `[n, 1, 28, 28]` and labels.
fn images(set: &Dataset, dev: &Device) -> Result<(Tensor, Tensor)> {
    Ok((
        Tensor::from_vec(set.features.clone(), &[set.n, 1, 28, 28], dev)?,
        Tensor::from_labels(&set.labels, dev)?,
    ))
}

/// Builds a fresh CNN of one architecture.
type Make = fn(&Device) -> Sequential;

/// The student: 4 and 8 channels.
fn student(dev: &Device) -> Sequential {
    cnn_with((4, 8), dev)
}

/// One epoch of Adam over `train` (shuffled by `seed`), the gradients masked by
/// `pruning` grown on `schedule` (its steps counted from 0 in this epoch); with a
/// `teacher`, on the distillation loss.
fn epoch(
    model: &Sequential,
    opt: &mut Adam,
    train: &Dataset,
    seed: u64,
    mut pruning: Option<(&mut Pruning, &GradualSchedule)>,
    teacher: Option<&Sequential>,
    dev: &Device,
) -> Result<()> {
    for (step, rows) in data::permutation(train.n, seed).chunks(BATCH).enumerate() {
        if let Some((p, schedule)) = &mut pruning {
            if schedule.prunes_at(step) {
                p.grow(schedule.sparsity_at(step), Scope::Global, Some(&mut *opt))?;
            }
        }
        let (x, y) = images(&train.select(rows), dev)?;
        let logits = model.forward(&x);
        let objective = match teacher {
            Some(t) => loss::distillation(&logits, &nn::inference(|| t.forward(&x)), &y, 4.0, 0.7)?,
            None => loss::cross_entropy(&logits, &y),
        };
        let grads = objective.backward()?;
        opt.step(&match &pruning {
            Some((p, _)) => p.mask(&grads),
            None => grads,
        })?;
    }
    Ok(())
}

/// A copy of `model`'s parameters and batch-norm statistics in a fresh model of its
/// architecture (`make`), in eval mode (rounded to f16 when `half`).
fn copy(model: &Sequential, make: Make, half: bool, dev: &Device) -> Result<Sequential> {
    let mut fresh = make(dev);
    let pairs = fresh.parameters().into_iter().zip(model.parameters());
    // The running statistics (not the u32 batch counts, unused in eval mode).
    let buffers = fresh.named_buffers().into_iter().zip(model.named_buffers());
    let statistics = buffers.filter(|((_, c), _)| c.dtype() == wgnn::DType::F32);
    for (c, p) in pairs.chain(statistics.map(|((_, c), (_, p))| (c, p))) {
        let p = if half { p.half().float() } else { p };
        c.assign(&p.to_vec()?)?;
    }
    fresh.set_training(false);
    Ok(fresh)
}

fn adam(model: &Sequential) -> Adam {
    let config = AdamConfig {
        lr: 2e-3,
        ..Default::default()
    };
    Adam::new(model.parameters(), config)
}

/// Test accuracy, latency and the energy proxy of `forward`.
fn measure(
    name: &str,
    test: &Dataset,
    forward: &dyn Fn(&Tensor) -> Tensor,
    (nonzero, file_bytes): (usize, u64),
    trainable: Option<(&Sequential, Make, &Dataset)>,
    dev: &Device,
) -> Result<CnnRow> {
    let (x, _) = images(test, dev)?;
    let predicted = nn::inference(|| forward(&x)).argmax(1).to_labels()?;
    let right = predicted.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
    let x1 = x.narrow(0, 0, 1);
    let x256 = x.narrow(0, 0, 256);
    let run = |x: &Tensor| nn::inference(|| forward(x)).to_vec().map(|_| ());
    let latency_1_ms = median_ms(21, || run(&x1))?;
    let (flops, bytes) = energy(dev, || run(&x1))?;
    let latency_256_ms = median_ms(5, || run(&x256))?;
    let step_ms = match trainable {
        Some((model, make, train)) => {
            let mut copy = copy(model, make, false, dev)?;
            copy.set_training(true);
            let mut opt = adam(&copy);
            let (xb, yb) = images(&train.select(&(0..BATCH).collect::<Vec<_>>()), dev)?;
            Some(median_ms(5, || {
                opt.step(&loss::cross_entropy(&copy.forward(&xb), &yb).backward()?)?;
                opt.parameters()[0].to_vec().map(|_| ()) // waits for the GPU
            })?)
        }
        None => None,
    };
    Ok(CnnRow {
        name: name.into(),
        accuracy: right as f64 / test.n as f64,
        nonzero,
        file_bytes,
        latency_1_ms,
        latency_256_ms,
        step_ms,
        flops,
        bytes,
    })
}

/// The rows of the table (see the module doc).
pub fn rows(train: &Dataset, test: &Dataset, epochs: usize, out: &Path, dev: &Device) -> Result<Vec<CnnRow>> {
    let saved = |model: &dyn Module, name: &str, format| saved_as(model, out, name, format);
    let mut rows = Vec::new();
    wgnn::manual_seed(0);
    let mut dense = cnn(dev);
    let mut opt = adam(&dense);
    for e in 0..epochs {
        epoch(&dense, &mut opt, train, 400 + e as u64, None, None, dev)?;
    }
    let state = opt.state()?;
    dense.set_training(false);
    let size = (nonzero(&dense)?, saved(&dense, "cnn f32", FloatFormat::F32)?);
    rows.push(measure(
        "f32",
        test,
        &|x| dense.forward(x),
        size,
        Some((&dense, cnn, train)),
        dev,
    )?);

    // One epoch more: the reference of the pruned models.
    let mut longer = copy(&dense, cnn, false, dev)?;
    longer.set_training(true);
    let mut longer_opt = adam(&longer);
    longer_opt.load_state(&state)?;
    epoch(&longer, &mut longer_opt, train, 500, None, None, dev)?;
    longer.set_training(false);
    let size = (nonzero(&longer)?, saved(&longer, "cnn f32 longer", FloatFormat::F32)?);
    rows.push(measure(
        "f32, +1 epoch",
        test,
        &|x| longer.forward(x),
        size,
        Some((&longer, cnn, train)),
        dev,
    )?);

    let half = copy(&dense, cnn, true, dev)?;
    let size = (nonzero(&half)?, saved(&half, "cnn f16", FloatFormat::F16)?);
    rows.push(measure("f16 weights", test, &|x| half.forward(x), size, None, dev)?);

    let (calibration, _) = images(&train.select(&(0..256).collect::<Vec<_>>()), dev)?;
    let q = QuantizedSequential::quantize(copy(&dense, cnn, false, dev)?, &calibration, Calibration::MinMax)?;
    let path = file_for(out, "cnn int8");
    q.save(&path)?;
    let size = (nonzero(&dense)?, file_bytes(&path)?);
    rows.push(measure(
        "int8 (convs, BN folded, head)",
        test,
        &|x| q.forward(x),
        size,
        None,
        dev,
    )?);

    for sparsity in [0.5f32, 0.8, 0.9] {
        let mut model = copy(&dense, cnn, false, dev)?;
        model.set_training(true);
        let mut opt = adam(&model);
        opt.load_state(&state)?;
        let weights: Vec<Tensor> = prune::prunable(&model).into_iter().map(|(_, p)| p).collect();
        let steps = train.n.div_ceil(BATCH);
        let schedule = GradualSchedule {
            initial: 0.0,
            final_sparsity: sparsity,
            start: 0,
            end: steps / 2,
            every: (steps / 20).max(1),
        };
        schedule.check()?;
        let mut pruning = Pruning::magnitude(&weights, 0.0, Scope::Global)?;
        epoch(&model, &mut opt, train, 500, Some((&mut pruning, &schedule)), None, dev)?;
        model.set_training(false);
        let name = format!("pruned {:.0}%", sparsity * 100.0);
        let size = (
            nonzero(&model)?,
            saved(&model, &format!("cnn {name}"), FloatFormat::F32)?,
        );
        rows.push(measure(
            &name,
            test,
            &|x| model.forward(x),
            size,
            Some((&model, cnn, train)),
            dev,
        )?);
    }

    for (name, teacher) in [
        ("student 4/8, labels only", None),
        ("student 4/8, distilled", Some(&dense)),
    ] {
        wgnn::manual_seed(1);
        let mut small = student(dev);
        let mut opt = adam(&small);
        for e in 0..epochs {
            epoch(&small, &mut opt, train, 600 + e as u64, None, teacher, dev)?;
        }
        small.set_training(false);
        let size = (
            nonzero(&small)?,
            saved(&small, &format!("cnn {name}"), FloatFormat::F32)?,
        );
        rows.push(measure(
            name,
            test,
            &|x| small.forward(x),
            size,
            Some((&small, student, train)),
            dev,
        )?);
    }
    Ok(rows)
}

/// Prints the table.
pub fn print(rows: &[CnnRow]) {
    println!();
    println!("CNN (conv-BN-ReLU-maxpool ×2, linear head), test accuracy:");
    println!(
        "| model | test accuracy | nonzero weights | file bytes | inference ms, batch 1 | batch 256 | train step ms, batch 64 | ops, batch 1 | bytes moved, batch 1 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.4} | {} | {} | {:.3} | {:.3} | {} | {} | {} |",
            r.name,
            r.accuracy,
            r.nonzero,
            r.file_bytes,
            r.latency_1_ms,
            r.latency_256_ms,
            r.step_ms.map_or("–".to_string(), |s| format!("{s:.3}")),
            r.flops,
            r.bytes
        );
    }
}
