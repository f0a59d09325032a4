//! The second table of `efficient`: the character-level LSTM language model of
//! `lstm_text` (embedding 32 → LSTM 128 → linear head, on *Pride and Prejudice*)
//! made smaller the same ways as the MLP, scored in held-out bits per character:
//!
//! * **f32**: trained `--lm-steps` steps of 32 streams × 64 characters (Adam 0.01,
//!   gradients clipped to norm 5, each chunk from a zero state);
//! * **mixed f16 training**: the same from the same initial weights under
//!   `wgnn::amp::autocast` with dynamic loss scaling, evaluated in mixed precision;
//! * **f16 weights**: the f32 model's weights rounded to half precision (F16 file);
//! * **int8**: `QuantizedLstm` (int8 gate products, hidden states at 1/127, the
//!   embedding's output calibrated) and an int8 head; the embedding stays f32;
//! * **pruned** 50, 80 and 90 % (one global magnitude threshold over the LSTM's and the
//!   head's weight matrices, Zhu and Gupta's schedule over the first half of
//!   `--lm-steps / 3` fine-tuning steps from the f32 weights), beside the f32 model
//!   trained as many steps more (their fair reference);
//! * **student**: an LSTM of 48 units (a third of the weights) trained `--lm-steps` on
//!   the text, and distilled from the f32 model (T 2, α 0.5).
//!
//! Latency: one held-out chunk (32 × 64 characters) and one generation step (batch
//! 1, one character); the energy proxy is the profiler's count for the generation
//! step. Included by `efficient` as `#[path = "common/efficient_lm.rs"] mod lm;`.

use std::path::Path;
use std::time::Instant;

use wgnn::io::FloatFormat;
use wgnn::nn::{self, loss, Embedding, Linear, Lstm, Module, RnnConfig};
use wgnn::optim::{Adam, AdamConfig, GradScaler, GradScalerConfig, Optimizer};
use wgnn::prune::{self, GradualSchedule, Pruning, Scope};
use wgnn::quantize::{Calibration, QuantizedLinear, QuantizedLstm};
use wgnn::{Device, Result, Tensor};

use super::text::Corpus;
use super::{energy, median_ms, nonzero, saved_as};

const EMBED: usize = 32;
const HIDDEN: usize = 128;
const BATCH: usize = 32;
const SEQ: usize = 64;
/// Held-out chunks scored.
const VAL_CHUNKS: usize = 16;

/// One row of the language model's table.
pub struct LmRow {
    pub name: String,
    pub bpc: f64,
    pub nonzero: usize,
    pub file_bytes: u64,
    pub chunk_ms: f64,
    pub step1_ms: f64,
    /// None: not trained in this form (int8, f16 weights).
    pub train_ms: Option<f64>,
    pub flops: u64,
    pub bytes: u64,
}

/// Embedding → LSTM → Linear.
#[derive(Module)]
struct CharLm {
    emb: Embedding,
    lstm: Lstm,
    head: Linear,
    #[module(skip)]
    hidden: usize,
}

/// The student's hidden units.
const STUDENT: usize = 48;

impl Module for CharLm {
    /// Logits `[b·t, vocab]` for ids `[b, t]`, from a zero state.
    fn forward(&self, ids: &Tensor) -> Tensor {
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        let h = self.lstm.forward(&self.emb.forward(ids));
        self.head.forward(&h.reshape(&[b * t, self.hidden]))
    }
}

impl CharLm {
    fn new(vocab: usize, hidden: usize, dev: &Device) -> CharLm {
        let config = RnnConfig {
            batch_first: true,
            ..Default::default()
        };
        CharLm {
            emb: Embedding::new(vocab, EMBED, dev),
            lstm: Lstm::new(EMBED, hidden, config, dev),
            head: Linear::new(hidden, vocab, dev),
            hidden,
        }
    }

    /// A copy of `self`'s weights in a new model (rounded to f16 when `half`).
    fn copy(&self, vocab: usize, half: bool, dev: &Device) -> Result<CharLm> {
        let copy = CharLm::new(vocab, self.hidden, dev);
        for (c, p) in copy.parameters().iter().zip(self.parameters()) {
            let p = if half { p.half().float() } else { p };
            c.assign(&p.to_vec()?)?;
        }
        Ok(copy)
    }
}

/// Chunk `k` of `BATCH` streams over `ids`: ids `[BATCH, SEQ]` and next-character labels.
fn chunk(ids: &[u32], k: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let len = ids.len() / BATCH;
    let chunks = (len - 1) / SEQ;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for s in 0..BATCH {
        let start = s * len + (k % chunks) * SEQ;
        x.extend_from_slice(&ids[start..start + SEQ]);
        y.extend_from_slice(&ids[start + 1..start + SEQ + 1]);
    }
    Ok((
        Tensor::from_labels(&x, dev)?.reshape(&[BATCH, SEQ]),
        Tensor::from_labels(&y, dev)?,
    ))
}

/// How a training run goes beyond plain f32 steps.
#[derive(Default)]
struct Recipe<'a> {
    /// Mixed precision with loss scaling.
    mixed: bool,
    /// The gradients masked, the mask grown on the schedule.
    pruning: Option<(&'a mut Pruning, &'a GradualSchedule)>,
    /// Distillation from this teacher.
    teacher: Option<&'a CharLm>,
    /// Each step waited for and its milliseconds pushed here.
    timings: Option<&'a mut Vec<f64>>,
}

/// Trains `model` `steps` steps from chunk `first` on, by `recipe`.
fn train(model: &CharLm, corpus: &Corpus, (first, steps): (usize, usize), recipe: Recipe, dev: &Device) -> Result<()> {
    let Recipe {
        mixed,
        mut pruning,
        teacher,
        mut timings,
    } = recipe;
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
    );
    let mut scaler = GradScaler::new(GradScalerConfig::default())?;
    for step in 0..steps {
        let started = Instant::now();
        if let Some((p, schedule)) = &mut pruning {
            if schedule.prunes_at(step) {
                p.grow(schedule.sparsity_at(step), Scope::Global, Some(&mut opt))?;
            }
        }
        let (x, y) = chunk(corpus.train(), first + step, dev)?;
        let logits = {
            let _amp = mixed.then(|| wgnn::amp::autocast(dev));
            model.forward(&x)
        };
        let l = match teacher {
            Some(t) => loss::distillation(&logits, &nn::inference(|| t.forward(&x)), &y, 2.0, 0.5)?,
            None => loss::cross_entropy(&logits, &y),
        };
        let grads = if mixed {
            scaler.unscale(&scaler.scale(&l).backward()?)
        } else {
            l.backward()?
        };
        let grads = grads.clip_norm(5.0);
        let grads = match &pruning {
            Some((p, _)) => p.mask(&grads),
            None => grads,
        };
        if mixed {
            scaler.step_unscaled(&mut opt, &grads)?;
        } else {
            opt.step(&grads)?;
        }
        if let Some(t) = &mut timings {
            model.head.weight.to_vec()?; // waits for the GPU
            t.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(())
}

/// Held-out bits per character of `logits` (ids `[b, t]` → `[b·t, vocab]`).
fn bpc(corpus: &Corpus, dev: &Device, logits: &dyn Fn(&Tensor) -> Tensor) -> Result<f64> {
    let mut nats = 0.0;
    for k in 0..VAL_CHUNKS {
        let (x, y) = chunk(corpus.val(), k, dev)?;
        let z = nn::inference(|| logits(&x));
        nats += f64::from(loss::cross_entropy(&z, &y).item()?);
    }
    Ok(nats / VAL_CHUNKS as f64 / std::f64::consts::LN_2)
}

/// Scores and times one form of the model: `logits` for inference, `model` (when
/// trainable in this form) for a training step.
fn measure(
    name: &str,
    corpus: &Corpus,
    logits: &dyn Fn(&Tensor) -> Tensor,
    (nonzero, file_bytes): (usize, u64),
    train_model: Option<(&CharLm, bool)>,
    dev: &Device,
) -> Result<LmRow> {
    let bpc = bpc(corpus, dev, logits)?;
    let (x, _) = chunk(corpus.val(), 0, dev)?;
    let one = Tensor::from_labels(&[5], dev)?.reshape(&[1, 1]);
    let run = |x: &Tensor| nn::inference(|| logits(x)).to_vec().map(|_| ());
    let chunk_ms = median_ms(5, || run(&x))?;
    let step1_ms = median_ms(21, || run(&one))?;
    let (flops, bytes) = energy(dev, || run(&one))?;
    let train_ms = match train_model {
        Some((model, mixed)) => {
            // Seven steps of one optimizer: the median of the last five.
            let copy = model.copy(corpus.vocab(), false, dev)?;
            let mut times = Vec::new();
            let recipe = Recipe {
                mixed,
                timings: Some(&mut times),
                ..Default::default()
            };
            train(&copy, corpus, (0, 7), recipe, dev)?;
            let mut steady = times.split_off(2);
            steady.sort_by(f64::total_cmp);
            Some(steady[steady.len() / 2])
        }
        None => None,
    };
    Ok(LmRow {
        name: name.into(),
        bpc,
        nonzero,
        file_bytes,
        chunk_ms,
        step1_ms,
        train_ms,
        flops,
        bytes,
    })
}

/// The rows of the table (see the module doc).
pub fn rows(corpus: &Corpus, steps: usize, out: &Path, dev: &Device) -> Result<Vec<LmRow>> {
    let vocab = corpus.vocab();
    let mut rows = Vec::new();
    let saved = |model: &dyn Module, name: &str, format| saved_as(model, out, name, format);

    wgnn::manual_seed(0);
    let dense = CharLm::new(vocab, HIDDEN, dev);
    let initial = dense.copy(vocab, false, dev)?;
    train(&dense, corpus, (0, steps), Recipe::default(), dev)?;
    let size = (nonzero(&dense)?, saved(&dense, "lm f32", FloatFormat::F32)?);
    let f32_logits = |x: &Tensor| dense.forward(x);
    rows.push(measure("f32", corpus, &f32_logits, size, Some((&dense, false)), dev)?);

    let mixed = initial;
    let recipe = Recipe {
        mixed: true,
        ..Default::default()
    };
    train(&mixed, corpus, (0, steps), recipe, dev)?;
    let mixed_logits = |x: &Tensor| {
        let _amp = wgnn::amp::autocast(dev);
        mixed.forward(x)
    };
    let size = (nonzero(&mixed)?, saved(&mixed, "lm mixed", FloatFormat::F32)?);
    let name = if wgnn::amp::f16_supported(dev) {
        "mixed f16 training"
    } else {
        "mixed (f32 here: no f16)"
    };
    rows.push(measure(name, corpus, &mixed_logits, size, Some((&mixed, true)), dev)?);

    let half = dense.copy(vocab, true, dev)?;
    let size = (nonzero(&half)?, saved(&half, "lm f16", FloatFormat::F16)?);
    rows.push(measure("f16 weights", corpus, &|x| half.forward(x), size, None, dev)?);

    // Int8: the gate products and the head; the embedding's output calibrated on one
    // training chunk, the head's input (hidden states, in (−1, 1)) at 1/127.
    let copy = dense.copy(vocab, false, dev)?;
    let (xc, _) = chunk(corpus.train(), 0, dev)?;
    let calibration = nn::inference(|| copy.emb.forward(&xc));
    let CharLm { emb, lstm, head, .. } = copy;
    let q_lstm = QuantizedLstm::quantize(lstm, &calibration, Calibration::MinMax)?;
    let q_head = QuantizedLinear::new(&head, 1.0 / 127.0)?;
    let int8_logits = |x: &Tensor| {
        let (b, t) = (x.shape()[0], x.shape()[1]);
        let h = q_lstm.forward_seq(&emb.forward(x), None).0;
        q_head.forward(&h.reshape(&[b * t, HIDDEN]))
    };
    let head_bytes = q_head.codes().len() + 4 * 2 * vocab;
    let int8_bytes = 4 * emb.weight.numel() + q_lstm.weight_bytes() + head_bytes;
    let size = (nonzero(&dense)?, int8_bytes as u64);
    rows.push(measure("int8 (gates, head)", corpus, &int8_logits, size, None, dev)?);

    // The reference for the pruned models: the f32 model trained as many steps more.
    let tune = (steps / 3).max(1);
    let longer = dense.copy(vocab, false, dev)?;
    train(&longer, corpus, (steps, tune), Recipe::default(), dev)?;
    let size = (nonzero(&longer)?, saved(&longer, "lm f32 longer", FloatFormat::F32)?);
    let name = format!("f32, +{tune} steps");
    rows.push(measure(
        &name,
        corpus,
        &|x| longer.forward(x),
        size,
        Some((&longer, false)),
        dev,
    )?);
    for sparsity in [0.5f32, 0.8, 0.9] {
        let model = dense.copy(vocab, false, dev)?;
        let weights: Vec<Tensor> = prune::prunable(&model)
            .into_iter()
            .filter(|(n, _)| !n.starts_with("emb"))
            .map(|(_, p)| p)
            .collect();
        let schedule = GradualSchedule {
            initial: 0.0,
            final_sparsity: sparsity,
            start: 0,
            end: tune / 2,
            every: (tune / 20).max(1),
        };
        schedule.check()?;
        let mut pruning = Pruning::magnitude(&weights, 0.0, Scope::Global)?;
        let recipe = Recipe {
            pruning: Some((&mut pruning, &schedule)),
            ..Default::default()
        };
        train(&model, corpus, (steps, tune), recipe, dev)?;
        let name = format!("pruned {:.0}%", sparsity * 100.0);
        let size = (
            nonzero(&model)?,
            saved(&model, &format!("lm {name}"), FloatFormat::F32)?,
        );
        rows.push(measure(
            &name,
            corpus,
            &|x| model.forward(x),
            size,
            Some((&model, false)),
            dev,
        )?);
    }

    for (name, teacher) in [
        ("student 48, labels only", None),
        ("student 48, distilled", Some(&dense)),
    ] {
        wgnn::manual_seed(1);
        let small = CharLm::new(vocab, STUDENT, dev);
        let recipe = Recipe {
            teacher,
            ..Default::default()
        };
        train(&small, corpus, (0, steps), recipe, dev)?;
        let size = (
            nonzero(&small)?,
            saved(&small, &format!("lm {name}"), FloatFormat::F32)?,
        );
        rows.push(measure(
            name,
            corpus,
            &|x| small.forward(x),
            size,
            Some((&small, false)),
            dev,
        )?);
    }
    Ok(rows)
}

/// Prints the table.
pub fn print(rows: &[LmRow]) {
    println!();
    println!("LSTM language model (embedding {EMBED}, LSTM {HIDDEN}), held-out bits per character:");
    println!(
        "| model | bpc | nonzero weights | file bytes | inference ms, 32×64 chunk | one character | train step ms | ops, one character | bytes moved, one character |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.4} | {} | {} | {:.3} | {:.3} | {} | {} | {} |",
            r.name,
            r.bpc,
            r.nonzero,
            r.file_bytes,
            r.chunk_ms,
            r.step1_ms,
            r.train_ms.map_or("–".to_string(), |s| format!("{s:.3}")),
            r.flops,
            r.bytes
        );
    }
}
