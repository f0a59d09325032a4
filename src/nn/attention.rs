//! Attention: [`scaled_dot_product_attention`] (`torch.nn.functional`'s), the
//! [`MultiheadAttention`] layer with PyTorch's parameters (`in_proj_weight`,
//! `in_proj_bias`, `out_proj.weight`, `out_proj.bias`), and positional encodings
//! ([`SinusoidalPositionalEncoding`], [`LearnedPositionalEmbedding`]).
//!
//! On the CPU backend attention runs as one fused op (`ops/attention.rs`: an online
//! softmax, no `[Tq, Tk]` weights kept for the backward, which recomputes them)
//! wherever that applies — no dropout, q, k and v with the same leading axes, heads
//! of at most 128, a mask that is not trained
//! ([`FastPath::FusedAttention`](crate::fast_path::FastPath)); otherwise, and on the
//! GPU unless forced, it is composed from the batched matmul, the row softmax and
//! dropout.

use super::{Dropout, Linear, Module};
use crate::{Device, Error, Result, Tensor};

/// `softmax(q · kᵀ / √d + mask) · v` over the last two axes of `q` `[.., Tq, d]`,
/// `k` `[.., Tk, d]` and `v` `[.., Tk, dv]` (leading axes broadcast), as
/// `torch.nn.functional.scaled_dot_product_attention`: `mask` is added to the scores
/// (a float mask; `-inf` where attention is not allowed) and must broadcast to
/// `[.., Tq, Tk]`; `causal` lets position `i` attend to positions `≤ i` only;
/// `dropout` (a probability, with a fresh seed per call) drops attention weights.
///
/// # Panics
/// If the operands' last axes do not fit (named with both shapes), or `mask` does not
/// broadcast to the scores' shape.
#[track_caller]
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    dropout: f32,
) -> Tensor {
    let d = *q
        .shape()
        .last()
        .expect("scaled_dot_product_attention: q must have rank ≥ 2");
    let scale = 1.0 / (d as f32).sqrt();
    if let Some(y) = fused(q, k, v, mask, causal, dropout, scale) {
        return y;
    }
    let mut scores = q.matmul_t(k, false, true).mul_scalar(scale);
    let (tq, tk) = (q.shape()[q.shape().len() - 2], k.shape()[k.shape().len() - 2]);
    if let Some(mask) = mask {
        check_mask(mask, scores.shape());
        scores = &scores + mask;
    }
    if causal {
        scores = &scores + &causal_mask(tq, tk, q.device());
    }
    let mut weights = scores.softmax(-1);
    if dropout > 0.0 {
        weights = weights.dropout(dropout, crate::rng::next_seed());
    }
    weights.matmul(v)
}

/// The fused op's output, where it applies (module doc) and is not forced off.
#[track_caller]
fn fused(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    dropout: f32,
    scale: f32,
) -> Option<Tensor> {
    use crate::fast_path::{self, FastPath};
    use crate::ops::attention::{Attention, Shape, MAX_HEAD_DIM};
    let ([ql @ .., tq, d], [kl @ .., tk, dk], [vl @ .., tv, dv]) = (q.shape(), k.shape(), v.shape()) else {
        return None;
    };
    // On the GPU the fused kernels (one invocation per query or key row, the head's
    // accumulator in private memory) are correct everywhere but not yet tuned on a
    // real GPU; on lavapipe they ran 4–5× slower than the composed products, so the
    // GPU takes them only when forced.
    let applies = q.device().kind() == crate::DeviceKind::Cpu
        && dropout == 0.0
        && ql == kl
        && kl == vl
        && d == dk
        && tk == tv
        && *d <= MAX_HEAD_DIM
        && *dv <= MAX_HEAD_DIM
        && mask.is_none_or(|m| !m.is_trainable());
    if !fast_path::choose(FastPath::FusedAttention, applies) {
        return None;
    }
    let z = ql.iter().product();
    let shape = Shape {
        z,
        tq: *tq,
        tk: *tk,
        d: *d,
        dv: *dv,
    };
    let mut inputs = vec![
        q.reshape(&[z, *tq, *d]),
        k.reshape(&[z, *tk, *d]),
        v.reshape(&[z, *tk, *dv]),
    ];
    if let Some(m) = mask {
        let full: Vec<usize> = ql.iter().chain([tq, tk]).copied().collect();
        check_mask(m, &full);
        inputs.push(m.expand(&full).reshape(&[z, *tq, *tk]));
    }
    let op = Attention {
        shape,
        scale,
        causal,
        masked: mask.is_some(),
        backward: false,
    };
    let [o, _lse] = Tensor::attention_forward(op, &inputs);
    let out: Vec<usize> = ql.iter().chain([tq, dv]).copied().collect();
    Some(o.reshape(&out))
}

/// Panics unless `mask` broadcasts to the scores' shape `[.., Tq, Tk]`.
#[track_caller]
fn check_mask(mask: &Tensor, scores: &[usize]) {
    let (m, s) = (mask.shape(), scores);
    let fits = m.len() <= s.len() && m.iter().rev().zip(s.iter().rev()).all(|(&a, &b)| a == b || a == 1);
    assert!(
        fits,
        "scaled_dot_product_attention: a mask of shape {m:?} does not broadcast to the attention scores {s:?} \
         ([.., Tq, Tk])"
    );
}

/// The additive causal mask `[tq, tk]`: 0 where key `j ≤ i`, `-inf` after (PyTorch's
/// `is_causal`: aligned to the top left, also when `tq ≠ tk`).
fn causal_mask(tq: usize, tk: usize, device: &Device) -> Tensor {
    let data = (0..tq)
        .flat_map(|i| (0..tk).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(data, &[tq, tk], device).expect("a causal mask fits any device")
}

/// Settings of [`MultiheadAttention`], PyTorch's names and defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MhaConfig {
    /// Inputs and outputs are `[batch, time, embed]` (default false: `[time, batch, embed]`).
    pub batch_first: bool,
    /// Dropout on the attention weights in training mode (default 0).
    pub dropout: f32,
    /// Biases on the input and output projections (default true).
    pub bias: bool,
}

impl Default for MhaConfig {
    fn default() -> Self {
        MhaConfig {
            batch_first: false,
            dropout: 0.0,
            bias: true,
        }
    }
}

/// Multi-head attention, `torch.nn.MultiheadAttention` (keys and values of the
/// embedding's size): parameters `in_proj_weight` `[3E, E]` (q, k, v stacked),
/// `in_proj_bias` `[3E]`, `out_proj.weight` `[E, E]`, `out_proj.bias` `[E]`, with
/// PyTorch's initialization (Xavier-uniform input projection, zero biases).
/// [`Module::forward`] is self-attention without a mask; [`MultiheadAttention::attend`]
/// takes separate queries, keys and values and a causal flag.
#[derive(crate::nn::Module)]
pub struct MultiheadAttention {
    /// The stacked q, k and v projections `[3E, E]`.
    pub in_proj_weight: Tensor,
    /// Their biases `[3E]`, when the layer has biases.
    pub in_proj_bias: Option<Tensor>,
    /// The output projection.
    pub out_proj: Linear,
    dropout: Dropout,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    batch_first: bool,
}

impl MultiheadAttention {
    /// A layer over embeddings of `embed_dim` split into `heads` heads.
    ///
    /// # Panics
    /// If `embed_dim` is not a multiple of `heads` (see [`MultiheadAttention::try_new`]).
    #[track_caller]
    pub fn new(embed_dim: usize, heads: usize, config: MhaConfig, device: &Device) -> MultiheadAttention {
        MultiheadAttention::try_new(embed_dim, heads, config, device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`MultiheadAttention::new`], with an error naming the numbers when
    /// `embed_dim` is not a positive multiple of `heads` or `dropout` is not a probability.
    pub fn try_new(embed_dim: usize, heads: usize, config: MhaConfig, device: &Device) -> Result<MultiheadAttention> {
        if heads == 0 || embed_dim == 0 || !embed_dim.is_multiple_of(heads) {
            return Err(Error::InvalidSetting {
                setting: "num_heads",
                message: format!(
                    "MultiheadAttention: embed_dim {embed_dim} is not a positive multiple of num_heads {heads}"
                ),
            });
        }
        if !(0.0..=1.0).contains(&config.dropout) {
            return Err(Error::InvalidSetting {
                setting: "dropout",
                message: format!("MultiheadAttention: dropout {} is not a probability", config.dropout),
            });
        }
        // Xavier-uniform over the stacked [3E, E] matrix, as PyTorch's _reset_parameters.
        let bound = (6.0 / (4 * embed_dim) as f32).sqrt();
        let seed = crate::rng::next_seed();
        let in_proj_weight = Tensor::rand(&[3 * embed_dim, embed_dim], -bound, bound, seed, device)?.requires_grad()?;
        let in_proj_bias = match config.bias {
            true => Some(Tensor::from_vec(vec![0.0; 3 * embed_dim], &[3 * embed_dim], device)?.requires_grad()?),
            false => None,
        };
        let out_proj = Linear::try_new(embed_dim, embed_dim, config.bias, device)?;
        if let Some(b) = &out_proj.bias {
            b.assign(&vec![0.0; embed_dim])?;
        }
        Ok(MultiheadAttention {
            in_proj_weight,
            in_proj_bias,
            out_proj,
            dropout: Dropout::new(config.dropout),
            heads,
            batch_first: config.batch_first,
        })
    }

    /// The embedding size E.
    pub fn embed_dim(&self) -> usize {
        self.in_proj_weight.shape()[1]
    }

    /// Attention of queries `q` over keys `k` and values `v` (each `[B, T, E]` with
    /// `batch_first`, else `[T, B, E]`); `causal` masks later positions.
    #[track_caller]
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Tensor {
        self.attend_masked(q, k, v, None, causal)
    }

    /// As [`attend`](Self::attend) with an additive float mask that broadcasts to
    /// `[B, heads, Tq, Tk]` (e.g. `[Tq, Tk]`; `-inf` where not allowed).
    #[track_caller]
    pub fn attend_masked(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, causal: bool) -> Tensor {
        let e = self.embed_dim();
        for (name, t) in [("query", q), ("key", k), ("value", v)] {
            assert!(
                t.shape().len() == 3 && t.shape()[2] == e,
                "MultiheadAttention: the {name} has shape {:?}; it needs [{}, E = {e}]",
                t.shape(),
                if self.batch_first { "B, T" } else { "T, B" }
            );
        }
        let batch_first = |t: &Tensor| if self.batch_first { t.clone() } else { t.transpose(0, 1) };
        let (q, k, v) = (batch_first(q), batch_first(k), batch_first(v));
        let project = |x: &Tensor, i: usize| {
            let w = self.in_proj_weight.narrow(0, i * e, e);
            let b = self.in_proj_bias.as_ref().map(|b| b.narrow(0, i * e, e));
            self.split_heads(&x.linear(&w, b.as_ref()))
        };
        let same = q.id() == k.id() && k.id() == v.id();
        let (qh, kh, vh) = if same {
            // Self-attention: one product with the stacked [3E, E] weight, split into
            // q, k and v heads by one permutation and one unbind.
            let [b, t, _] = q.shape()[..] else {
                unreachable!("checked rank 3")
            };
            let (h, dh) = (self.heads, e / self.heads);
            let qkv = q.linear(&self.in_proj_weight, self.in_proj_bias.as_ref());
            let mut parts = qkv
                .reshape(&[b, t, 3, h, dh])
                .permute(&[2, 0, 3, 1, 4])
                .unbind(0)
                .into_iter();
            let mut next = || parts.next().expect("q, k and v");
            (next(), next(), next())
        } else {
            (project(&q, 0), project(&k, 1), project(&v, 2))
        };
        let p = if self.dropout.is_training() {
            self.dropout.p()
        } else {
            0.0
        };
        let heads = scaled_dot_product_attention(&qh, &kh, &vh, mask, causal, p);
        let [b, h, t, d] = heads.shape()[..] else {
            unreachable!("split into 4 axes")
        };
        let merged = heads.transpose(1, 2).reshape(&[b, t, h * d]);
        let out = self.out_proj.forward(&merged);
        if self.batch_first {
            out
        } else {
            out.transpose(0, 1)
        }
    }

    /// `[B, T, E]` → `[B, heads, T, E / heads]`.
    fn split_heads(&self, x: &Tensor) -> Tensor {
        let [b, t, e] = x.shape()[..] else {
            unreachable!("checked rank 3")
        };
        x.reshape(&[b, t, self.heads, e / self.heads]).transpose(1, 2)
    }
}

impl Module for MultiheadAttention {
    /// Self-attention without a mask.
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        self.attend(x, x, x, false)
    }

    fn name(&self) -> String {
        format!(
            "MultiheadAttention(embed_dim={}, num_heads={})",
            self.embed_dim(),
            self.heads
        )
    }
}

/// The fixed sinusoidal positional encoding of "Attention Is All You Need" added to
/// `[B, T, D]` inputs: `pe[t, 2i] = sin(t / 10000^(2i/D))`, `pe[t, 2i+1] = cos(…)`,
/// held as the buffer `pe` `[max_len, D]` (saved and moved, never trained).
#[derive(crate::nn::Module)]
pub struct SinusoidalPositionalEncoding {
    /// The table `[max_len, D]`.
    #[module(buffer)]
    pub pe: Tensor,
}

impl SinusoidalPositionalEncoding {
    /// The table for sequences of up to `max_len` steps of width `d_model`.
    pub fn new(max_len: usize, d_model: usize, device: &Device) -> Result<SinusoidalPositionalEncoding> {
        let mut pe = vec![0.0f32; max_len * d_model];
        for t in 0..max_len {
            for i in (0..d_model).step_by(2) {
                let angle = t as f64 / 10000f64.powf(i as f64 / d_model as f64);
                pe[t * d_model + i] = angle.sin() as f32;
                if i + 1 < d_model {
                    pe[t * d_model + i + 1] = angle.cos() as f32;
                }
            }
        }
        Ok(SinusoidalPositionalEncoding {
            pe: Tensor::from_vec(pe, &[max_len, d_model], device)?,
        })
    }
}

impl Module for SinusoidalPositionalEncoding {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x + &positions(&self.pe, x, "SinusoidalPositionalEncoding")
    }
}

/// A learned positional embedding added to `[B, T, D]` inputs: the parameter
/// `weight` `[max_len, D]`, initialized from N(0, 1) as `nn.Embedding`.
#[derive(crate::nn::Module)]
pub struct LearnedPositionalEmbedding {
    /// One row per position.
    pub weight: Tensor,
}

impl LearnedPositionalEmbedding {
    /// Positions up to `max_len`, of width `d_model`.
    pub fn new(max_len: usize, d_model: usize, device: &Device) -> Result<LearnedPositionalEmbedding> {
        let seed = crate::rng::next_seed();
        let data = crate::rng::normal(seed, max_len * d_model);
        Ok(LearnedPositionalEmbedding {
            weight: Tensor::from_vec(data, &[max_len, d_model], device)?.requires_grad()?,
        })
    }
}

impl Module for LearnedPositionalEmbedding {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x + &positions(&self.weight, x, "LearnedPositionalEmbedding")
    }
}

/// The first `T` rows of `table` for an input `[B, T, D]`.
#[track_caller]
fn positions(table: &Tensor, x: &Tensor, layer: &str) -> Tensor {
    let (max_len, d) = (table.shape()[0], table.shape()[1]);
    let s = x.shape();
    assert!(
        s.len() == 3 && s[1] <= max_len && s[2] == d,
        "{layer}: input of shape {s:?}; it needs [B, T ≤ {max_len}, D = {d}]"
    );
    table.narrow(0, 0, s[1])
}
