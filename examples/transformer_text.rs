//! A character-level causal transformer on Jane Austen's *Pride and Prejudice*, the
//! counterpart of `lstm_text` (the same data, split, baselines and sampling, from
//! `examples/common/text.rs`).
//!
//! The model: a character embedding plus a learned positional embedding (`--d-model`
//! wide) → `--layers` pre-norm `TransformerEncoderLayer`s with a causal mask
//! (`--heads` heads, a GELU feed-forward block 4× as wide, no dropout) → a final
//! `LayerNorm` → a linear layer over the 75 characters. Each step trains on `--batch`
//! windows of `--seq` + 1 characters drawn at random from the training text, with
//! cross-entropy over every position, AdamW (weight decay 0.01) with a linear warm-up
//! over the first 10% of the steps and cosine decay after (`OneCycleLr`), and
//! gradients clipped to a global norm of 1.
//!
//! Validation bits per character are scored on every character of the last 10% but
//! the first, with windows of `--seq` characters that overlap by half: each character
//! is scored once, with at least `--seq`/2 characters of context (all it has in the
//! first window). The unigram and bigram baselines are scored on the same
//! characters. Then the model continues `--prompt` for `--chars` characters at
//! `--temperature`, always through one batch-1, `--seq`-long plan (the context is
//! the last `--seq` characters, left-aligned; the causal mask makes the padding after
//! it irrelevant).
//!
//! ```text
//! cargo run --release --example transformer_text -- [--device cpu|gpu] [--steps 400]
//!     [--layers 4] [--d-model 64] [--heads 4] [--seq 64] [--batch 32] [--lr 0.003]
//!     [--seed 0] [--prompt "It is a truth"] [--temperature 0.8] [--chars 300] [--max-bpc B]
//! ```
//!
//! The defaults have 214k parameters (`lstm_text --hidden 204` has as many); figures
//! beside `lstm_text` at equal parameters and training time are in `benches/README.md`.

use clap::Parser;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wgnn::nn::{
    self, Activation, Embedding, LayerNorm, LearnedPositionalEmbedding, Linear, Module, TransformerConfig,
    TransformerEncoderLayer,
};
use wgnn::optim::lr::{LrSchedule, OneCycleConfig, OneCycleLr};
use wgnn::optim::{AdamConfig, AdamW, Optimizer};
use wgnn::{Device, Error, Result, Tensor};

#[path = "common/check.rs"]
mod check;
#[path = "common/device.rs"]
mod device;
#[path = "common/text.rs"]
mod text;

const CLIP: f32 = 1.0;
/// Windows per validation batch.
const EVAL_BATCH: usize = 32;

/// A character-level causal transformer on Jane Austen's *Pride and Prejudice*
#[derive(Parser)]
#[command(name = "transformer_text")]
struct Args {
    #[command(flatten)]
    common: text::TextArgs,
    /// Training steps.
    #[arg(long, default_value_t = 400)]
    steps: usize,
    /// Random windows per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Characters per window (the context).
    #[arg(long, default_value_t = 64)]
    seq: usize,
    /// Transformer layers.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Width of the embeddings and of every layer.
    #[arg(long, default_value_t = 64)]
    d_model: usize,
    /// Attention heads (must divide --d-model).
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
}

/// Embedding + positions → causal pre-norm layers → LayerNorm → Linear, with
/// PyTorch-style dotted names (`emb.weight`, `pos.weight`, `layers.0.self_attn.…`,
/// `norm.weight`, `head.bias`).
#[derive(Module)]
struct Model {
    emb: Embedding,
    pos: LearnedPositionalEmbedding,
    layers: Vec<TransformerEncoderLayer>,
    norm: LayerNorm,
    head: Linear,
    #[module(skip)]
    d_model: usize,
    #[module(skip)]
    vocab: usize,
}

impl Model {
    fn new(args: &Args, vocab: usize, dev: &Device) -> Result<Model> {
        let config = TransformerConfig {
            dim_feedforward: 4 * args.d_model,
            dropout: 0.0,
            activation: Activation::Gelu,
            batch_first: true,
            norm_first: true,
            ..Default::default()
        };
        let layers = (0..args.layers)
            .map(|_| TransformerEncoderLayer::try_new(args.d_model, args.heads, config, dev))
            .collect::<Result<_>>()?;
        Ok(Model {
            emb: Embedding::new(vocab, args.d_model, dev),
            pos: LearnedPositionalEmbedding::new(args.seq, args.d_model, dev)?,
            layers,
            norm: LayerNorm::new(&[args.d_model], dev),
            head: Linear::new(args.d_model, vocab, dev),
            d_model: args.d_model,
            vocab,
        })
    }
}

impl Module for Model {
    /// Logits `[b·t, vocab]` for the characters `ids` (`[b, t]`), each position seeing
    /// itself and the ones before.
    fn forward(&self, ids: &Tensor) -> Tensor {
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        let mut x = self.pos.forward(&self.emb.forward(ids));
        for layer in &self.layers {
            x = layer.forward_causal(&x);
        }
        let x = self.norm.forward(&x).reshape(&[b * t, self.d_model]);
        self.head.forward(&x)
    }
}

/// Inputs and targets of `batch` windows of `seq` characters at random starts,
/// row-major `[batch, seq]`.
fn random_windows(ids: &[u32], batch: usize, seq: usize, rng: &mut StdRng) -> (Vec<u32>, Vec<u32>) {
    let (mut x, mut y) = (Vec::with_capacity(batch * seq), Vec::with_capacity(batch * seq));
    for _ in 0..batch {
        let start = rng.random_range(0..ids.len() - seq);
        x.extend_from_slice(&ids[start..start + seq]);
        y.extend_from_slice(&ids[start + 1..start + seq + 1]);
    }
    (x, y)
}

/// The validation windows: `(start, first)` where the window reads
/// `ids[start..start + seq]` and scores its targets `ids[first..=start + seq]`. Every
/// target from 1 to the end is scored once, with at least `seq / 2` characters of
/// context after the first window.
fn eval_windows(n: usize, seq: usize) -> Vec<(usize, usize)> {
    let mut out = vec![(0, 1)];
    let mut next = seq + 1;
    while next < n {
        let start = (next - 1 - seq / 2).min(n - 1 - seq);
        out.push((start, next));
        next = start + seq + 1;
    }
    out
}

/// Validation bits per character over the windows of [`eval_windows`], scored on
/// the host from the logits (`EVAL_BATCH` windows per plan), and the count scored.
fn evaluate(model: &Model, ids: &[u32], seq: usize, dev: &Device) -> Result<(f64, usize)> {
    let windows = eval_windows(ids.len(), seq);
    let (v, mut nats, mut count) = (model.vocab, 0.0f64, 0usize);
    for group in windows.chunks(EVAL_BATCH) {
        let mut x = Vec::with_capacity(EVAL_BATCH * seq);
        for i in 0..EVAL_BATCH {
            let (start, _) = group[i.min(group.len() - 1)]; // the last batch repeats a window
            x.extend_from_slice(&ids[start..start + seq]);
        }
        let x = Tensor::from_labels(&x, dev)?.reshape(&[EVAL_BATCH, seq]);
        let logits = model.forward(&x).to_vec()?;
        for (w, &(start, first)) in group.iter().enumerate() {
            for target in first..=start + seq {
                let row = &logits[(w * seq + target - start - 1) * v..][..v];
                nats += log_sum_exp(row) - f64::from(row[ids[target] as usize]);
                count += 1;
            }
        }
    }
    Ok((nats / count as f64 / std::f64::consts::LN_2, count))
}

fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    f64::from(max) + row.iter().map(|&l| f64::from(l - max).exp()).sum::<f64>().ln()
}

/// Continues `prompt` by `n` characters at `temperature`: every character runs the
/// last `seq` characters (left-aligned, padded after) through one `[1, seq]` plan.
fn generate(
    model: &Model,
    prompt: &[u32],
    n: usize,
    seq: usize,
    temperature: f32,
    rng: &mut StdRng,
    dev: &Device,
) -> Result<Vec<u32>> {
    let mut all = prompt.to_vec();
    for _ in 0..n {
        let context = &all[all.len().saturating_sub(seq)..];
        let mut x = context.to_vec();
        x.resize(seq, 0);
        let logits = model
            .forward(&Tensor::from_labels(&x, dev)?.reshape(&[1, seq]))
            .to_vec()?;
        let last = &logits[(context.len() - 1) * model.vocab..][..model.vocab];
        all.push(text::sample(last, temperature, rng));
    }
    Ok(all[prompt.len()..].to_vec())
}

/// Trains for `args.steps` steps on random windows of `train`, printing the training
/// loss ten times; returns the seconds spent.
fn train_model(model: &Model, train: &[u32], args: &Args, dev: &Device, rng: &mut StdRng) -> Result<f64> {
    let warmup = OneCycleConfig {
        pct_start: 0.1,
        ..Default::default()
    };
    let mut schedule = OneCycleLr::with(f64::from(args.lr), args.steps, warmup);
    let mut opt = AdamW::new(
        model.parameters(),
        AdamConfig {
            lr: schedule.lr() as f32,
            weight_decay: 0.01,
            ..Default::default()
        },
    );
    let (b, t) = (args.batch, args.seq);
    // The summed loss since the last report, kept on the device: read once per report.
    let mut recent = Tensor::zeros(&[1], dev);
    let report_every = (args.steps / 10).max(1);
    let started = Instant::now();
    for step in 0..args.steps {
        let (x, y) = random_windows(train, b, t, rng);
        let logits = model.forward(&Tensor::from_labels(&x, dev)?.reshape(&[b, t]));
        let loss = nn::loss::cross_entropy(&logits, &Tensor::from_labels(&y, dev)?);
        let total = &recent + &loss.reshape(&[1]);
        // One plan: forward, backward, clipping, the update and the running loss.
        let grads = loss
            .backward()?
            .clip_norm(CLIP)
            .with_outputs(std::slice::from_ref(&total));
        opt.step(&grads)?;
        recent = total.detach();
        schedule.step();
        opt.set_lr(schedule.lr());
        if (step + 1) % report_every == 0 || step + 1 == args.steps {
            let n = step % report_every + 1;
            text::print_progress(step + 1, recent.item()?, n, started.elapsed().as_secs_f64());
            recent = Tensor::zeros(&[1], dev);
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dev = args.common.device.open()?;
    println!("device: {}", dev.info());
    let corpus = text::Corpus::load()?;
    let (train, val, vocab) = (corpus.train(), corpus.val(), corpus.vocab());
    let prompt = corpus.encode_prompt(&args.common.prompt)?;
    if [args.steps, args.batch, args.seq, args.layers, args.d_model, args.heads].contains(&0) {
        return Err(Error::Invalid(
            "--steps, --batch, --seq, --layers, --d-model and --heads must be positive".into(),
        ));
    }
    if val.len() <= args.seq + 1 {
        return Err(Error::Invalid(format!(
            "--seq {} is longer than the validation text",
            args.seq
        )));
    }
    let pairs = (1..val.len()).map(|i| (val[i - 1], val[i]));
    let (uni, bi) = text::baselines(train, vocab, pairs);

    wgnn::manual_seed(args.common.seed);
    let model = Model::new(&args, vocab, &dev)?;
    let n_params: usize = model.parameters().iter().map(Tensor::numel).sum();
    println!(
        "model: {} + {} → {} × pre-norm causal {} → {} → {}, {n_params} parameters",
        model.emb.name(),
        model.pos.name(),
        args.layers,
        model.layers[0].name(),
        model.norm.name(),
        model.head.name()
    );
    println!(
        "training: {} steps of {} random windows x {} characters ({:.1} passes over the training text), \
         AdamW lr {} (10% warm-up, cosine decay), gradients clipped to norm {CLIP}",
        args.steps,
        args.batch,
        args.seq,
        (args.steps * args.batch * args.seq) as f64 / train.len() as f64,
        args.lr
    );
    let mut rng = StdRng::seed_from_u64(args.common.seed);
    let train_secs = train_model(&model, train, &args, &dev, &mut rng)?;

    let (bpc, scored) = evaluate(&model, val, args.seq, &dev)?;
    let scored = format!(
        "{scored} characters of the last 10%, each with ≥ {} of context",
        args.seq / 2
    );
    text::print_scores(&scored, (uni, bi), "transformer", bpc, train_secs);

    args.common.sample_and_check(&corpus, bpc, |n, temperature, rng| {
        generate(&model, &prompt, n, args.seq, temperature, rng, &dev)
    })
}
