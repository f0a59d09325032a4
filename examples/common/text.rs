//! The text examples' data (`lstm_text`, `transformer_text`): Jane Austen's *Pride
//! and Prejudice* (the whole novel, gzipped in `data/`; nothing is downloaded), its
//! alphabet, the train/validation split, the add-one unigram and bigram baselines,
//! and sampling a character from logits. Included with
//! `#[path = "common/text.rs"] mod text;`.

use std::io::Read;
use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wgnn::{Error, Result};

/// The novel as character ids: the first 90% is the training set, the last 10% the
/// validation set.
pub struct Corpus {
    /// The distinct bytes of the novel, sorted: id `i` is `alphabet[i]`.
    pub alphabet: Vec<u8>,
    index: [u32; 256],
    /// The whole novel as ids.
    pub ids: Vec<u32>,
    split: usize,
}

impl Corpus {
    /// Reads `data/pride_and_prejudice.txt.gz` and prints what it holds.
    pub fn load() -> Result<Corpus> {
        let text = load_text()?;
        let mut alphabet: Vec<u8> = text.clone();
        alphabet.sort_unstable();
        alphabet.dedup();
        let mut index = [u32::MAX; 256];
        for (i, &ch) in alphabet.iter().enumerate() {
            index[ch as usize] = i as u32;
        }
        let ids: Vec<u32> = text.iter().map(|&ch| index[ch as usize]).collect();
        let split = ids.len() * 9 / 10;
        let corpus = Corpus {
            alphabet,
            index,
            ids,
            split,
        };
        println!(
            "data: Pride and Prejudice, {} characters, {} distinct; train {} (first 90%), validation {} (last 10%)",
            corpus.ids.len(),
            corpus.vocab(),
            corpus.train().len(),
            corpus.val().len()
        );
        Ok(corpus)
    }

    /// The number of distinct characters.
    pub fn vocab(&self) -> usize {
        self.alphabet.len()
    }

    /// The first 90%.
    pub fn train(&self) -> &[u32] {
        &self.ids[..self.split]
    }

    /// The last 10%.
    pub fn val(&self) -> &[u32] {
        &self.ids[self.split..]
    }

    /// `prompt` as ids: an error when it is empty or uses a character the novel lacks.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        let ids: Vec<u32> = prompt.bytes().map(|ch| self.index[ch as usize]).collect();
        if ids.is_empty() || ids.contains(&u32::MAX) {
            return Err(Error::Invalid(format!(
                "--prompt {prompt:?}: must be non-empty and use only characters of the novel"
            )));
        }
        Ok(ids)
    }

    /// Ids back to text.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| self.alphabet[i as usize] as char).collect()
    }
}

/// The novel as bytes (it is pure ASCII).
fn load_text() -> Result<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/pride_and_prejudice.txt.gz");
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::open(&path).map_err(io)?;
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(file).read_to_end(&mut text).map_err(io)?;
    Ok(text)
}

/// Bits per character of the add-one unigram and bigram models of `train`, on the
/// `(previous, target)` pairs of the validation set.
pub fn baselines(train: &[u32], vocab: usize, pairs: impl Iterator<Item = (u32, u32)>) -> (f64, f64) {
    let mut uni = vec![0f64; vocab];
    let mut bi = vec![0f64; vocab * vocab];
    let mut from = vec![0f64; vocab];
    for &c in train {
        uni[c as usize] += 1.0;
    }
    for w in train.windows(2) {
        bi[w[0] as usize * vocab + w[1] as usize] += 1.0;
        from[w[0] as usize] += 1.0;
    }
    let (n, v) = (train.len() as f64, vocab as f64);
    let (mut bits_uni, mut bits_bi, mut count) = (0.0, 0.0, 0usize);
    for (a, b) in pairs {
        let (a, b) = (a as usize, b as usize);
        bits_uni -= ((uni[b] + 1.0) / (n + v)).log2();
        bits_bi -= ((bi[a * vocab + b] + 1.0) / (from[a] + v)).log2();
        count += 1;
    }
    (bits_uni / count as f64, bits_bi / count as f64)
}

/// Draws an index from `softmax(logits / temperature)`.
pub fn sample(logits: &[f32], temperature: f32, rng: &mut StdRng) -> u32 {
    let t = temperature.max(1e-3);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = logits.iter().map(|&l| f64::from((l - max) / t).exp()).collect();
    let mut r = rng.random::<f64>() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        r -= w;
        if r <= 0.0 {
            return i as u32;
        }
    }
    (weights.len() - 1) as u32
}

/// The flags both text examples take (flattened into an example's `Args`):
/// `--max-bpc`, `--device`, `--seed` and the sampling flags `--prompt`,
/// `--temperature`, `--chars`.
#[derive(clap::Args)]
pub struct TextArgs {
    /// Fail when the validation bits per character are above it.
    #[arg(long)]
    pub max_bpc: Option<f64>,
    #[command(flatten)]
    pub device: super::device::DeviceArg,
    /// Seed of initialization, the training batches, dropout and sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Text the sample starts from.
    #[arg(long, default_value = "It is a truth")]
    pub prompt: String,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Characters to sample (0: none).
    #[arg(long, default_value_t = 300)]
    pub chars: usize,
}

impl TextArgs {
    /// Continues the prompt: `generate(chars, temperature, rng)` with an rng seeded
    /// by `--seed`; prints the sample, then checks `bpc` against `--max-bpc`.
    pub fn sample_and_check(
        &self,
        corpus: &Corpus,
        bpc: f64,
        generate: impl FnOnce(usize, f32, &mut StdRng) -> Result<Vec<u32>>,
    ) -> Result<()> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let sampled = generate(self.chars, self.temperature, &mut rng)?;
        println!(
            "\nsample (temperature {}):\n{}{}",
            self.temperature,
            self.prompt,
            corpus.decode(&sampled)
        );
        super::check::at_most("validation bpc", bpc, self.max_bpc, "--max-bpc");
        Ok(())
    }
}

/// Prints the training loss of a report: `sum` nats over the last `n` steps, after
/// `step` steps and `secs` seconds.
pub fn print_progress(step: usize, sum: f32, n: usize, secs: f64) {
    println!(
        "step {step:>5}  train {:.3} bpc  {:.0} ms/step  {secs:.0} s",
        f64::from(sum) / n as f64 / std::f64::consts::LN_2,
        secs * 1e3 / step as f64,
    );
}

/// Prints the validation table: the baselines `(unigram, bigram)` and the model's
/// bits per character, after `secs` seconds of training.
pub fn print_scores(scored: &str, (uni, bi): (f64, f64), model: &str, bpc: f64, secs: f64) {
    println!("\nvalidation bits per character ({scored}):");
    println!("  unigram, add-one smoothing   {uni:.3}");
    println!("  bigram, add-one smoothing    {bi:.3}");
    println!("  {model:<29}{bpc:.3}   ({secs:.0} s of training)");
}
