//! Dropout family (`shaders/dropout.wgsl`): inverted dropout whose mask is a pure
//! function of a key and the element index (Philox4x32-10), so the CPU twin
//! (`rng::dropout_keeps`) and the GPU drop the same elements, and the backward pass
//! regenerates the mask instead of storing it.

use super::{Lowering, Op, Rule};
use crate::backend::kernel::{Grid, Kernel, Uniforms, Wgsl};
use crate::tensor::DType;
use crate::{rng, Device, Tensor};

const SHADER: &str = include_str!("../../shaders/dropout.wgsl");

/// Inverted dropout: `x · keep / (1 − p)`, where `keep` for element `i` comes from
/// Philox4x32-10 keyed by the key input (u32 `[2]`) at counter `i`. Inputs: x, key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Probability of dropping an element.
    pub p: f32,
}

impl Rule for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn lower(&self, _: &[&[usize]], out: &[usize]) -> Lowering {
        let (threshold, scale) = rng::dropout_threshold(self.p);
        let kernel = DropoutKernel {
            n: out.iter().product(),
            threshold,
            scale,
        };
        Lowering::kernel(kernel, 2)
    }
    // The same key gives the same mask: dx = g · keep / (1 − p).
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(g.dropout_keyed(self.p, &inputs[1])), None]
    }
}

/// reads [x, key], writes [out]
#[derive(Debug)]
struct DropoutKernel {
    n: usize,
    threshold: u32,
    scale: f32,
}

impl Kernel for DropoutKernel {
    fn reads(&self) -> usize {
        2
    }
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let key = rng::dropout_key(x[1][0].to_bits(), x[1][1].to_bits());
        for (i, (o, &v)) in out[0][..self.n].iter_mut().zip(&x[0][..self.n]).enumerate() {
            *o = if rng::dropout_keeps(key, i as u64, self.threshold) {
                v * self.scale
            } else {
                0.0
            };
        }
    }
    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new()
            .u32("n", self.n)
            .u32("threshold", self.threshold as usize)
            .f32("scale", self.scale);
        Wgsl::new(SHADER, "dropout", u, Grid::Threads(self.n))
    }
}

impl Tensor {
    /// Inverted dropout: each element is zeroed with probability `p` and the rest are
    /// scaled by `1 / (1 − p)`, so the expected value is unchanged. The mask is a pure
    /// function of `seed` and the element index (Philox4x32-10), identical on the CPU
    /// and the GPU, and the backward pass regenerates it. `nn::Dropout` draws a fresh
    /// seed per call from the thread's seed stream (`wgnn::manual_seed`).
    ///
    /// # Panics
    /// If `p` is not in `[0, 1]`.
    #[track_caller]
    pub fn dropout(&self, p: f32, seed: u64) -> Tensor {
        let key = Tensor::dropout_key_tensor(seed, self.device());
        self.dropout_keyed(p, &key)
    }

    /// The key input of a dropout node: the seed as two u32 words.
    fn dropout_key_tensor(seed: u64, device: &Device) -> Tensor {
        let words = vec![f32::from_bits(seed as u32), f32::from_bits((seed >> 32) as u32)];
        let storage = device
            .backend()
            .stage(words)
            .expect("staging two words never exceeds a device limit");
        Tensor::leaf(storage, vec![2], DType::U32, device, None)
    }

    #[track_caller]
    pub(crate) fn dropout_keyed(&self, p: f32, key: &Tensor) -> Tensor {
        self.check_f32("dropout");
        assert!(
            (0.0..=1.0).contains(&p),
            "dropout: p = {p} is not a probability in [0, 1]"
        );
        Tensor::from_node(
            Op::Dropout(Dropout { p }),
            vec![self.clone(), key.clone()],
            self.shape().to_vec(),
            DType::F32,
        )
    }
}
