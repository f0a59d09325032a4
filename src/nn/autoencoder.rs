//! Autoencoders: an encoder and a decoder trained to give back their input, for
//! dimensionality reduction and anomaly detection (a sample the model reconstructs
//! badly is unlike the data it was trained on).

use std::cell::RefCell;
use std::rc::Rc;

use super::{Member, MemberMut, Module, ModuleFields, TensorSpec};
use crate::{Error, Result, Tensor};

/// `decode(encode(x))` from any encoder and decoder modules. Parameters are named
/// `encoder.*` and `decoder.*`, as the attributes of a PyTorch module would be.
///
/// Cloning shares the layers and their parameters (they are updated in place by
/// training): [`Autoencoder::compile`] trains through a clone, and the original then
/// encodes with the trained weights.
#[derive(Clone)]
pub struct Autoencoder {
    encoder: Rc<RefCell<Box<dyn Module>>>,
    decoder: Rc<RefCell<Box<dyn Module>>>,
}

impl Autoencoder {
    /// An autoencoder from its two halves.
    pub fn new(encoder: impl Module + 'static, decoder: impl Module + 'static) -> Autoencoder {
        Autoencoder {
            encoder: Rc::new(RefCell::new(Box::new(encoder))),
            decoder: Rc::new(RefCell::new(Box::new(decoder))),
        }
    }

    /// The code of `x`.
    #[track_caller]
    pub fn encode(&self, x: &Tensor) -> Tensor {
        self.encoder.borrow().forward(x)
    }

    /// The reconstruction of a code.
    #[track_caller]
    pub fn decode(&self, z: &Tensor) -> Tensor {
        self.decoder.borrow().forward(z)
    }

    /// The mean squared reconstruction error of each sample (row) of `x`, computed on
    /// the device and read back once. Switch dropout off first (`eval()`).
    pub fn reconstruction_error(&self, x: &Tensor) -> Result<Vec<f32>> {
        let rows = *x
            .shape()
            .first()
            .ok_or_else(|| Error::Invalid("reconstruction_error: x must have a batch axis, got a scalar".into()))?;
        let y = self.forward(x);
        if y.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                op: format!("reconstruction_error: {}", self.name()),
                expected: x.shape().to_vec(),
                got: y.shape().to_vec(),
            });
        }
        let per_row = x.numel() / rows.max(1);
        (&y - x).square().reshape(&[rows, per_row]).mean_axis(1, false).to_vec()
    }

    /// The threshold at the `q`-th percentile (0 to 100) of `errors`, interpolated
    /// linearly between ranks (NumPy's default): with the training errors, flags the
    /// top `100 − q` % of normal data.
    pub fn percentile_threshold(errors: &[f32], q: f64) -> Result<f32> {
        let sorted = sorted_finite("percentile_threshold", errors)?;
        if !(0.0..=100.0).contains(&q) {
            return Err(Error::Invalid(format!(
                "percentile_threshold: q = {q} is not in [0, 100]"
            )));
        }
        let pos = q / 100.0 * (sorted.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        let w = (pos - lo as f64) as f32;
        Ok(sorted[lo] + (sorted[hi] - sorted[lo]) * w)
    }

    /// The lowest threshold that flags at most a fraction `rate` of held-out normal
    /// samples (an error strictly above it is an anomaly): the target false-positive
    /// rate, met on `normal_errors`.
    pub fn threshold_for_false_positive_rate(normal_errors: &[f32], rate: f64) -> Result<f32> {
        let sorted = sorted_finite("threshold_for_false_positive_rate", normal_errors)?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(Error::Invalid(format!(
                "threshold_for_false_positive_rate: rate = {rate} is not in [0, 1]"
            )));
        }
        let allowed = (rate * sorted.len() as f64).floor() as usize;
        Ok(sorted[sorted.len() - 1 - allowed.min(sorted.len() - 1)])
    }
}

/// The errors sorted, or an error naming `op` when there are none or one is not finite.
fn sorted_finite(op: &str, errors: &[f32]) -> Result<Vec<f32>> {
    if errors.is_empty() {
        return Err(Error::Invalid(format!("{op}: no errors to choose a threshold from")));
    }
    if let Some(i) = errors.iter().position(|e| !e.is_finite()) {
        return Err(Error::Invalid(format!("{op}: error {i} is {}", errors[i])));
    }
    let mut sorted = errors.to_vec();
    sorted.sort_by(f32::total_cmp);
    Ok(sorted)
}

impl Module for Autoencoder {
    /// The reconstruction `decode(encode(x))`.
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        self.decode(&self.encode(x))
    }

    /// The encoder's spec, then the decoder's; a misfit names the half.
    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        let code = match self.encoder.borrow().output_spec(input) {
            Ok(Some(code)) => code,
            Ok(None) => return Ok(None),
            Err(why) => return Err(format!("encoder: {why}")),
        };
        self.decoder
            .borrow()
            .output_spec(&code)
            .map_err(|why| format!("decoder: {why}"))
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (half, module) in [("encoder", &self.encoder), ("decoder", &self.decoder)] {
            for (name, t) in module.borrow().named_parameters() {
                out.push((format!("{half}.{name}"), t));
            }
        }
        out
    }

    fn name(&self) -> String {
        format!(
            "Autoencoder({} → {})",
            self.encoder.borrow().name(),
            self.decoder.borrow().name()
        )
    }

    fn set_training(&mut self, training: bool) {
        self.encoder.borrow_mut().set_training(training);
        self.decoder.borrow_mut().set_training(training);
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (half, module) in [("encoder", &self.encoder), ("decoder", &self.decoder)] {
            for (name, t) in module.borrow().named_buffers() {
                out.push((format!("{half}.{name}"), t));
            }
        }
        out
    }

    fn collect_tensors(&self, out: &mut Vec<Tensor>) {
        self.encoder.borrow().collect_tensors(out);
        self.decoder.borrow().collect_tensors(out);
    }

    fn put_tensors(&mut self, with: &mut dyn Iterator<Item = Tensor>) {
        self.encoder.borrow_mut().put_tensors(with);
        self.decoder.borrow_mut().put_tensors(with);
    }
}

/// The halves sit behind shared cells (clones share them), so they cannot be lent out
/// as members: [`Module`]'s methods are written out above instead.
impl ModuleFields for Autoencoder {
    fn members(&self) -> Vec<(String, Member<'_>)> {
        Vec::new()
    }
    fn members_mut(&mut self) -> Vec<(String, MemberMut<'_>)> {
        Vec::new()
    }
}
