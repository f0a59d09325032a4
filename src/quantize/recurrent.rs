//! Int8 recurrent layers: an [`Lstm`] or [`Gru`] whose gate products — `x·W_ihᵀ`
//! for all steps and `h·W_hhᵀ` at every step — run through the int8 GEMM with
//! per-gate-row weight scales, while the biases, the gate nonlinearities and the cell
//! state stay f32 (the fused cell kernels), as PyTorch's quantized LSTM does.
//!
//! The activation scales need almost no calibration: a hidden state lies in
//! `(−1, 1)` (a tanh, gated), so `h` and every deeper layer's input use `1/127`
//! exactly; only the first layer's input (e.g. an embedding's output) is calibrated,
//! on a sample of input sequences. Inference only.

use super::{activation_scale, Calibration, QuantizedLinear};
use crate::nn::{GateProducts, Gru, Lstm, LstmState};
use crate::{Result, Tensor};

/// The scale of a hidden state, whose values lie in (−1, 1).
const HIDDEN_SCALE: f32 = 1.0 / 127.0;

/// One layer's (one direction's) two products in int8.
struct Int8Gates {
    input: QuantizedLinear,
    hidden: QuantizedLinear,
}

/// The recurrence's biases are added in the GEMM's epilogue (the layers were made
/// without one: zeros where it passes none).
impl GateProducts for Int8Gates {
    fn input_product(&self, x: &Tensor, bias: Option<&Tensor>) -> Tensor {
        self.input.product(x, bias)
    }
    fn hidden_product(&self, h: &Tensor, bias: Option<&Tensor>) -> Tensor {
        self.hidden.product(h, bias)
    }
}

/// Every layer's products in int8: the first layer's inputs at `input_scale`, the
/// rest at [`HIDDEN_SCALE`].
fn int8_gates(weights: Vec<(Tensor, Tensor, bool)>, input_scale: f32) -> Result<Vec<Int8Gates>> {
    weights
        .into_iter()
        .map(|(w_ih, w_hh, first)| {
            let scale = if first { input_scale } else { HIDDEN_SCALE };
            Ok(Int8Gates {
                input: QuantizedLinear::from_weight(&w_ih, None, scale)?,
                hidden: QuantizedLinear::from_weight(&w_hh, None, HIDDEN_SCALE)?,
            })
        })
        .collect()
}

/// The input scale from `calibration` (sample input sequences) by `method`.
fn input_scale(calibration: &Tensor, method: Calibration) -> Result<f32> {
    activation_scale(&calibration.to_vec()?, method)
}

/// An [`Lstm`] with int8 gate products (see the module doc).
pub struct QuantizedLstm {
    lstm: Lstm,
    gates: Vec<Int8Gates>,
}

impl QuantizedLstm {
    /// Quantizes a trained `lstm`: its weights per gate row, the first layer's inputs
    /// with a scale from `calibration` (input sequences shaped as `forward_seq` takes
    /// them) by `method`. `Err` for empty or non-finite calibration data, a bad
    /// percentile, or a device error.
    pub fn quantize(lstm: Lstm, calibration: &Tensor, method: Calibration) -> Result<QuantizedLstm> {
        let gates = int8_gates(lstm.gate_weights(), input_scale(calibration, method)?)?;
        Ok(QuantizedLstm { lstm, gates })
    }

    /// As [`Lstm::forward_seq`] (in inference mode), the gate products in int8.
    #[track_caller]
    pub fn forward_seq(&self, x: &Tensor, state: Option<&LstmState>) -> (Tensor, LstmState) {
        let products: Vec<&dyn GateProducts> = self.gates.iter().map(|g| g as &dyn GateProducts).collect();
        crate::nn::inference(|| self.lstm.forward_seq_with(x, state, &products))
    }

    /// The f32 layer it was made from (its biases are used as they are).
    pub fn lstm(&self) -> &Lstm {
        &self.lstm
    }

    /// The first layer's input scale.
    pub fn input_scale(&self) -> f32 {
        self.gates[0].input.input_scale()
    }

    /// Bytes of the int8 weights with their scales (and the f32 biases): what a file
    /// of this layer holds.
    pub fn weight_bytes(&self) -> usize {
        stored_bytes(&self.gates, &self.lstm)
    }
}

/// A [`Gru`] with int8 gate products (see the module doc).
pub struct QuantizedGru {
    gru: Gru,
    gates: Vec<Int8Gates>,
}

impl QuantizedGru {
    /// Quantizes a trained `gru` as [`QuantizedLstm::quantize`] does an LSTM.
    pub fn quantize(gru: Gru, calibration: &Tensor, method: Calibration) -> Result<QuantizedGru> {
        let gates = int8_gates(gru.gate_weights(), input_scale(calibration, method)?)?;
        Ok(QuantizedGru { gru, gates })
    }

    /// As [`Gru::forward_seq`] (in inference mode), the gate products in int8.
    #[track_caller]
    pub fn forward_seq(&self, x: &Tensor, h0: Option<&Tensor>) -> (Tensor, Tensor) {
        let products: Vec<&dyn GateProducts> = self.gates.iter().map(|g| g as &dyn GateProducts).collect();
        crate::nn::inference(|| self.gru.forward_seq_with(x, h0, &products))
    }

    /// The f32 layer it was made from.
    pub fn gru(&self) -> &Gru {
        &self.gru
    }

    /// Bytes of the int8 weights with their scales (and the f32 biases).
    pub fn weight_bytes(&self) -> usize {
        stored_bytes(&self.gates, &self.gru)
    }
}

/// One byte per weight code, four per scale, four per bias value.
fn stored_bytes(gates: &[Int8Gates], module: &dyn crate::nn::Module) -> usize {
    let codes: usize = gates
        .iter()
        .map(|g| g.input.codes().len() + g.hidden.codes().len())
        .sum();
    let scales: usize = gates
        .iter()
        .map(|g| g.input.out_features() + g.hidden.out_features())
        .sum();
    let biases: usize = module
        .named_parameters()
        .iter()
        .filter(|(n, _)| n.starts_with("bias"))
        .map(|(_, t)| t.numel())
        .sum();
    codes + 4 * scales + 4 * biases
}
