//! A character-level LSTM language model on Jane Austen's *Pride and Prejudice*
//! (the whole novel, gzipped in `data/`; nothing is downloaded).
//!
//! The first 90% of the text is the training set, the last 10% the validation set.
//! The model is an embedding (32 per character) → one LSTM layer → a linear layer
//! over the 75 characters, trained with cross-entropy and Adam by truncated
//! backpropagation through time: the training text is cut into `--batch` contiguous
//! streams, each step reads the next `--seq` characters of every stream and starts
//! from the state the previous step ended in (carried, but not backpropagated
//! through). Gradients are clipped to a global norm of 5.
//!
//! It prints the validation bits per character beside two baselines estimated on the
//! same training text and scored on the same validation characters: a unigram model
//! and a bigram model, both with add-one (Laplace) smoothing. Then it feeds `--prompt`
//! through the trained LSTM (batch 1, carrying the state) and samples `--chars`
//! characters one at a time at `--temperature` (each character reuses one compiled
//! batch-1, length-1 plan).
//!
//! ```text
//! cargo run --release --example lstm_text -- [--device cpu|gpu] [--steps 1000]
//!     [--hidden 192] [--seq 64] [--batch 32] [--lr 0.01] [--seed 0]
//!     [--prompt "It is a truth"] [--temperature 0.8] [--chars 300] [--max-bpc B]
//!     [--amp]
//! ```
//!
//! `--amp` trains and evaluates in mixed precision (`wgnn::amp`): f16 inputs to
//! every GEMM, f32 accumulation, f32 weights and Adam state, loss scaling with
//! gradients unscaled before clipping, as PyTorch's AMP recipe.
//!
//! The defaults take about 30 s on two CPU cores (1.87 validation bpc; PyTorch's twin,
//! `benches/lstm_text_torch.py`, 1.86). On a software GPU (lavapipe)
//! use a short run, e.g. `--steps 20`.

use clap::Parser;
use std::time::Instant;

use rand::rngs::StdRng;
use wgnn::nn::{self, Embedding, Linear, Lstm, LstmState, Module, RnnConfig};
use wgnn::optim::lr::{CosineAnnealingLr, LrSchedule};
use wgnn::optim::{Adam, AdamConfig, GradScaler, GradScalerConfig, Optimizer};
use wgnn::{Device, Error, Result, Tensor};

#[path = "common/check.rs"]
mod check;
#[path = "common/device.rs"]
mod device;
#[path = "common/text.rs"]
mod text;

const EMBED: usize = 32;
const CLIP: f32 = 5.0;

/// A character-level LSTM language model on Jane Austen's *Pride and Prejudice*
#[derive(Parser)]
#[command(name = "lstm_text")]
struct Args {
    #[command(flatten)]
    common: text::TextArgs,
    /// Training steps.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Hidden units.
    #[arg(long, default_value_t = 192)]
    hidden: usize,
    /// Characters per step and stream (truncated backpropagation).
    #[arg(long, default_value_t = 64)]
    seq: usize,
    /// Parallel streams of the training text (the batch).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-2)]
    lr: f32,
    /// Mixed precision: every GEMM (the LSTM's gate products, the head) takes f16
    /// inputs with f32 accumulation (`wgnn::amp::autocast`), with dynamic loss
    /// scaling (`GradScaler`); f32 where the device has no f16.
    #[arg(long)]
    amp: bool,
}

/// `batch` contiguous streams over `ids`, read `seq` characters at a time: the
/// positions predicted are `start + 1 ..= start + chunks·seq` of each stream.
struct Streams {
    batch: usize,
    seq: usize,
    len: usize,
    chunks: usize,
}

impl Streams {
    fn new(n: usize, batch: usize, seq: usize) -> Result<Streams> {
        let len = n / batch;
        let chunks = len.saturating_sub(1) / seq;
        if chunks == 0 {
            return Err(Error::Invalid(format!(
                "{n} characters do not fill {batch} streams of {seq} + 1 characters"
            )));
        }
        Ok(Streams {
            batch,
            seq,
            len,
            chunks,
        })
    }

    /// Inputs and targets of chunk `k`, row-major `[batch, seq]`.
    fn chunk(&self, ids: &[u32], k: usize) -> (Vec<u32>, Vec<u32>) {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for s in 0..self.batch {
            let start = s * self.len + k * self.seq;
            x.extend_from_slice(&ids[start..start + self.seq]);
            y.extend_from_slice(&ids[start + 1..start + self.seq + 1]);
        }
        (x, y)
    }

    /// Every `(previous, target)` pair the chunks predict, for the baselines.
    fn pairs<'a>(&'a self, ids: &'a [u32]) -> impl Iterator<Item = (u32, u32)> + 'a {
        (0..self.batch).flat_map(move |s| {
            let start = s * self.len;
            (start + 1..=start + self.chunks * self.seq).map(move |i| (ids[i - 1], ids[i]))
        })
    }
}

/// Embedding → LSTM → Linear; `#[derive(Module)]` gives it PyTorch's dotted
/// parameter names (`emb.weight`, `lstm.weight_ih_l0`, …, `head.bias`) and training
/// mode.
#[derive(Module)]
struct Model {
    emb: Embedding,
    lstm: Lstm,
    head: Linear,
    #[module(skip)]
    hidden: usize,
    #[module(skip)]
    vocab: usize,
}

impl Module for Model {
    /// Logits `[b·t, vocab]` from a zero state.
    fn forward(&self, ids: &Tensor) -> Tensor {
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        let out = self.lstm.forward(&self.emb.forward(ids));
        self.head.forward(&out.reshape(&[b * t, self.hidden]))
    }
}

impl Model {
    /// Logits `[b·t, vocab]` for the characters `ids` (`[b, t]`) from `state`, and
    /// the final state.
    fn forward_from(&self, ids: &Tensor, state: &LstmState) -> (Tensor, LstmState) {
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        let (out, last) = self.lstm.forward_seq(&self.emb.forward(ids), Some(state));
        (self.head.forward(&out.reshape(&[b * t, self.hidden])), last)
    }

    /// A state uploaded from host values (zeros when `None`).
    fn state(&self, values: Option<(&[f32], &[f32])>, batch: usize, dev: &Device) -> Result<LstmState> {
        let shape = [1, batch, self.hidden];
        let zeros = vec![0.0; batch * self.hidden];
        let (h, c) = values.unwrap_or((&zeros, &zeros));
        Ok(LstmState {
            h: Tensor::from_vec(h.to_vec(), &shape, dev)?,
            c: Tensor::from_vec(c.to_vec(), &shape, dev)?,
        })
    }
}

/// Runs `ids` (`[b, t]`) from a host state; one plan computes the logits (or their
/// summed cross-entropy against `targets`) and the final state, read back as
/// `(values, h, c)`.
fn run_chunk(
    model: &Model,
    ids: &[u32],
    targets: Option<&[u32]>,
    shape: (usize, usize),
    hc: (&[f32], &[f32]),
    dev: &Device,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let (b, t) = shape;
    let x = Tensor::from_labels(ids, dev)?.reshape(&[b, t]);
    let (logits, last) = model.forward_from(&x, &model.state(Some(hc), b, dev)?);
    let values = match targets {
        Some(y) => nn::loss::cross_entropy(&logits, &Tensor::from_labels(y, dev)?)
            .mul_scalar((b * t) as f32)
            .reshape(&[1]),
        None => logits.reshape(&[b * t * model.vocab]),
    };
    let n = values.numel();
    let flat = |s: &Tensor| s.reshape(&[b * model.hidden]);
    let all = Tensor::cat(&[&values, &flat(&last.h), &flat(&last.c)], 0).to_vec()?;
    let (values, rest) = all.split_at(n);
    let (h, c) = rest.split_at(b * model.hidden);
    Ok((values.to_vec(), h.to_vec(), c.to_vec()))
}

/// Validation bits per character: every stream from a zero state, the state carried
/// from chunk to chunk.
fn evaluate(model: &Model, ids: &[u32], streams: &Streams, dev: &Device) -> Result<f64> {
    let zeros = vec![0.0; streams.batch * model.hidden];
    let (mut h, mut c) = (zeros.clone(), zeros);
    let mut nats = 0.0f64;
    for k in 0..streams.chunks {
        let (x, y) = streams.chunk(ids, k);
        let (loss, h2, c2) = run_chunk(model, &x, Some(&y), (streams.batch, streams.seq), (&h, &c), dev)?;
        nats += f64::from(loss[0]);
        (h, c) = (h2, c2);
    }
    let count = streams.batch * streams.chunks * streams.seq;
    Ok(nats / count as f64 / std::f64::consts::LN_2)
}

/// Feeds `prompt` through the model (batch 1), then samples `n` characters at
/// `temperature`, one plan per character.
fn generate(
    model: &Model,
    prompt: &[u32],
    n: usize,
    temperature: f32,
    rng: &mut StdRng,
    dev: &Device,
) -> Result<Vec<u32>> {
    let zeros = vec![0.0; model.hidden];
    let (logits, mut h, mut c) = run_chunk(model, prompt, None, (1, prompt.len()), (&zeros, &zeros), dev)?;
    let mut last = logits[(prompt.len() - 1) * model.vocab..].to_vec();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let next = text::sample(&last, temperature, rng);
        out.push(next);
        let (logits, h2, c2) = run_chunk(model, &[next], None, (1, 1), (&h, &c), dev)?;
        (last, h, c) = (logits, h2, c2);
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = args.common.device.open()?;
    println!("device: {}", dev.info());
    let corpus = text::Corpus::load()?;
    let (train, val, vocab) = (corpus.train(), corpus.val(), corpus.vocab());
    let prompt = corpus.encode_prompt(&args.common.prompt)?;
    if args.steps == 0 || args.hidden == 0 || args.seq == 0 || args.batch == 0 {
        return Err(Error::Invalid(
            "--steps, --hidden, --seq and --batch must be positive".into(),
        ));
    }

    let train_streams = Streams::new(train.len(), args.batch, args.seq)?;
    let val_streams = Streams::new(val.len(), args.batch, args.seq)?;
    let (uni, bi) = text::baselines(train, vocab, val_streams.pairs(val));

    wgnn::manual_seed(args.common.seed);
    let model = Model {
        emb: Embedding::new(vocab, EMBED, &dev),
        lstm: Lstm::new(
            EMBED,
            args.hidden,
            RnnConfig {
                batch_first: true,
                ..Default::default()
            },
            &dev,
        ),
        head: Linear::new(args.hidden, vocab, &dev),
        hidden: args.hidden,
        vocab,
    };
    let params = model.parameters();
    let n_params: usize = params.iter().map(Tensor::numel).sum();
    println!(
        "model: {} → {} → {}, {n_params} parameters",
        model.emb.name(),
        model.lstm.name(),
        model.head.name()
    );
    println!(
        "training: {} steps of {} streams x {} characters (one pass over the training text is {} steps), \
         Adam lr {} with cosine decay, gradients clipped to norm {CLIP}",
        args.steps, args.batch, args.seq, train_streams.chunks, args.lr
    );
    let mut opt = Adam::new(
        params,
        AdamConfig {
            lr: args.lr,
            ..Default::default()
        },
    );
    let mut schedule = CosineAnnealingLr::new(f64::from(args.lr), args.steps, f64::from(args.lr) / 20.0);
    let mut scaler = match args.amp {
        true => Some(GradScaler::new(GradScalerConfig::default())?),
        false => None,
    };
    let mixed = || args.amp.then(|| wgnn::amp::autocast(&dev));
    if args.amp {
        let active = mixed().is_some_and(|guard| guard.is_active());
        println!(
            "precision: {}",
            if active {
                "mixed (f16 GEMM inputs, f32 accumulation, f32 weights and Adam state, dynamic loss scaling)"
            } else {
                "f32 (the device has no f16)"
            }
        );
    }

    let (b, t, hdim) = (args.batch, args.seq, args.hidden);
    let zero_state = || LstmState {
        h: Tensor::zeros(&[1, b, hdim], &dev),
        c: Tensor::zeros(&[1, b, hdim], &dev),
    };
    let mut state = zero_state();
    // The summed loss since the last report, kept on the device: read once per report.
    let mut recent = Tensor::zeros(&[1], &dev);
    let report_every = (args.steps / 10).max(1);
    let started = Instant::now();
    for step in 0..args.steps {
        let k = step % train_streams.chunks;
        if k == 0 {
            state = zero_state(); // a new pass starts every stream afresh
        }
        let (x, y) = train_streams.chunk(train, k);
        let x = Tensor::from_labels(&x, &dev)?.reshape(&[b, t]);
        let (logits, last) = {
            let _amp = mixed();
            model.forward_from(&x, &state)
        };
        let loss = nn::loss::cross_entropy(&logits, &Tensor::from_labels(&y, &dev)?);
        let total = &recent + &loss.reshape(&[1]);
        // One plan: forward, backward, clipping, the update, the final state and the
        // running loss; nothing is read back (with loss scaling, one scalar: whether a
        // gradient overflowed).
        let outputs = [last.h.clone(), last.c.clone(), total.clone()];
        match &mut scaler {
            None => opt.step(&loss.backward()?.clip_norm(CLIP).with_outputs(&outputs))?,
            Some(scaler) => {
                let grads = scaler.unscale(&scaler.scale(&loss).backward()?);
                scaler.step_unscaled(&mut opt, &grads.clip_norm(CLIP).with_outputs(&outputs))?;
            }
        }
        // Computed values detach to tensors with no link to this step's graph, so the
        // carried state keeps no history alive (truncated BPTT).
        (state, recent) = (last.detach(), total.detach());
        schedule.step();
        opt.set_lr(schedule.lr());
        if (step + 1) % report_every == 0 || step + 1 == args.steps {
            let n = step % report_every + 1;
            text::print_progress(step + 1, recent.item()?, n, started.elapsed().as_secs_f64());
            recent = Tensor::zeros(&[1], &dev);
        }
    }
    let train_secs = started.elapsed().as_secs_f64();

    let _amp = mixed(); // evaluation and sampling in the precision of training
    let bpc = evaluate(&model, val, &val_streams, &dev)?;
    if let Some(scaler) = &scaler {
        println!(
            "loss scale {} at the end, {} of {} steps skipped for overflow",
            scaler.current_scale(),
            scaler.skipped_steps(),
            args.steps
        );
    }
    let scored = val_streams.batch * val_streams.chunks * val_streams.seq;
    let scored = format!("{scored} characters of the last 10%");
    text::print_scores(&scored, (uni, bi), "LSTM", bpc, train_secs);

    args.common.sample_and_check(&corpus, bpc, |n, temperature, rng| {
        generate(&model, &prompt, n, temperature, rng, &dev)
    })
}
