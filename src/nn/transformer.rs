//! `torch.nn.TransformerEncoderLayer`: self-attention and a feed-forward block, each
//! with a residual connection and layer normalization (after, or with `norm_first`
//! before), PyTorch's parameter names (`self_attn.*`, `linear1.*`, `linear2.*`,
//! `norm1.*`, `norm2.*`) and defaults.

use super::{Dropout, LayerNorm, Linear, MhaConfig, Module, MultiheadAttention};
use crate::{Device, Result, Tensor};

/// The feed-forward block's activation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// `max(0, x)` (PyTorch's default).
    #[default]
    Relu,
    /// The exact (erf) GELU, `nn.GELU()`.
    Gelu,
}

/// Settings of [`TransformerEncoderLayer`], PyTorch's names and defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransformerConfig {
    /// Width of the feed-forward block (default 2048).
    pub dim_feedforward: usize,
    /// Dropout after attention, inside and after the feed-forward block, and on the
    /// attention weights (default 0.1).
    pub dropout: f32,
    /// The feed-forward activation (default ReLU).
    pub activation: Activation,
    /// The layer norms' epsilon (default 1e-5).
    pub layer_norm_eps: f32,
    /// Inputs `[batch, time, embed]` (default false: `[time, batch, embed]`).
    pub batch_first: bool,
    /// Normalize before each block (pre-norm) instead of after (default false).
    pub norm_first: bool,
    /// Biases in the linear layers and the layer norms (default true; false is not
    /// supported yet and is an error).
    pub bias: bool,
}

impl Default for TransformerConfig {
    fn default() -> Self {
        TransformerConfig {
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: Activation::Relu,
            layer_norm_eps: 1e-5,
            batch_first: false,
            norm_first: false,
            bias: true,
        }
    }
}

/// One transformer encoder layer (`torch.nn.TransformerEncoderLayer`).
/// [`Module::forward`] attends without a mask; [`forward_causal`](Self::forward_causal)
/// lets each position see itself and the ones before.
#[derive(crate::nn::Module)]
pub struct TransformerEncoderLayer {
    /// The self-attention.
    pub self_attn: MultiheadAttention,
    /// The feed-forward block's first projection `[dim_feedforward, d_model]`.
    pub linear1: Linear,
    dropout: Dropout,
    /// Its second projection `[d_model, dim_feedforward]`.
    pub linear2: Linear,
    /// The norm around the attention block.
    pub norm1: LayerNorm,
    /// The norm around the feed-forward block.
    pub norm2: LayerNorm,
    dropout1: Dropout,
    dropout2: Dropout,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    norm_first: bool,
}

impl TransformerEncoderLayer {
    /// A layer of width `d_model` with `heads` attention heads.
    ///
    /// # Panics
    /// If `d_model` is not a multiple of `heads` or `dropout` is not a probability
    /// (see [`TransformerEncoderLayer::try_new`]).
    #[track_caller]
    pub fn new(d_model: usize, heads: usize, config: TransformerConfig, device: &Device) -> TransformerEncoderLayer {
        TransformerEncoderLayer::try_new(d_model, heads, config, device).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`TransformerEncoderLayer::new`], with an error instead of a panic.
    pub fn try_new(
        d_model: usize,
        heads: usize,
        c: TransformerConfig,
        device: &Device,
    ) -> Result<TransformerEncoderLayer> {
        let mha = MhaConfig {
            batch_first: c.batch_first,
            dropout: c.dropout,
            bias: c.bias,
        };
        if !c.bias {
            return Err(crate::Error::InvalidSetting {
                setting: "bias",
                message: "TransformerEncoderLayer: bias = false is not supported yet (LayerNorm has a bias)".into(),
            });
        }
        let norm = || {
            let mut n = LayerNorm::new(&[d_model], device);
            n.eps = c.layer_norm_eps;
            Ok::<_, crate::Error>(n)
        };
        Ok(TransformerEncoderLayer {
            self_attn: MultiheadAttention::try_new(d_model, heads, mha, device)?,
            linear1: Linear::try_new(d_model, c.dim_feedforward, c.bias, device)?,
            dropout: Dropout::new(c.dropout),
            linear2: Linear::try_new(c.dim_feedforward, d_model, c.bias, device)?,
            norm1: norm()?,
            norm2: norm()?,
            dropout1: Dropout::new(c.dropout),
            dropout2: Dropout::new(c.dropout),
            activation: c.activation,
            norm_first: c.norm_first,
        })
    }

    /// The layer with a causal mask on its attention.
    #[track_caller]
    pub fn forward_causal(&self, x: &Tensor) -> Tensor {
        self.run(x, true)
    }

    #[track_caller]
    fn run(&self, x: &Tensor, causal: bool) -> Tensor {
        let attend = |x: &Tensor| self.dropout1.forward(&self.self_attn.attend(x, x, x, causal));
        if self.norm_first {
            let x = x + &attend(&self.norm1.forward(x));
            &x + &self.feed_forward(&self.norm2.forward(&x))
        } else {
            let x = self.norm1.forward(&(x + &attend(x)));
            self.norm2.forward(&(&x + &self.feed_forward(&x)))
        }
    }

    /// `dropout2(linear2(dropout(activation(linear1(x)))))`.
    fn feed_forward(&self, x: &Tensor) -> Tensor {
        let h = self.linear1.forward(x);
        let h = match self.activation {
            Activation::Relu => h.relu(),
            Activation::Gelu => h.gelu(),
        };
        self.dropout2.forward(&self.linear2.forward(&self.dropout.forward(&h)))
    }
}

impl Module for TransformerEncoderLayer {
    /// The layer without a mask.
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        self.run(x, false)
    }
}
