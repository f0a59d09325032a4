//! Reduced-precision family (`shaders/quant.wgsl`): symmetric int8 quantization of
//! rows packed four to a 32-bit word, the int8 × int8 → i32 GEMM over such words with
//! a dequantizing epilogue (integer arithmetic, so the GPU and the CPU twin give the
//! same accumulators, bit for bit), and a GEMM with half-precision weights packed two
//! to a word, accumulated in f32 (the same values up to the GPU compiler's freedom to
//! fuse a multiply and an add). Inference only: no gradient flows through them.
//!
//! The GEMM uses WGSL's `dot4I8Packed` (four products and their sum per word); naga
//! emits SPIR-V's `OpSDot` where the adapter has the integer dot product and an
//! exact polyfill (sign-extending bit-field extracts) where it does not.

use super::{Lowering, Op, Rule};
use crate::backend::kernel::{Cost, Grid, Kernel, Uniforms, Wgsl};
use crate::tensor::DType;
use crate::Tensor;

const SHADER: &str = include_str!("../../shaders/quant.wgsl");

/// The int8 ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Quant {
    /// `[m, k]` f32 → `[m, ⌈k/4⌉]` words: each value times `inv_scale`, rounded
    /// half to even, clamped to ±127, packed little-end first (zero padding).
    QuantizeRows {
        /// `1 / scale` (multiplied, so both sides round the same).
        inv_scale: f32,
    },
    /// Packed `x [m, w]` and `weights [n, w]` (words), per-row weight scales `[n]`
    /// and a bias `[n]` → `[m, n]`: `acc · (x_scale · w_scale[j]) + bias[j]` with
    /// `acc = Σ x_q · w_q` in i32; with `raw`, the accumulators' bits instead.
    Matmul {
        /// The input's scale.
        x_scale: f32,
        /// Write the i32 accumulators (as bits) instead of the dequantized values.
        raw: bool,
    },
    /// f32 `x [m, k]` times half-precision weights packed two to a word
    /// (`[n, ⌈k/2⌉]`, low half first) plus a bias `[n]` → `[m, n]`, accumulated in
    /// f32 in order of k (WGSL's core `unpack2x16float`: no `SHADER_F16` needed).
    HalfMatmul,
}

impl Rule for Quant {
    fn name(&self) -> &'static str {
        match self {
            Quant::QuantizeRows { .. } => "quantize_rows",
            Quant::Matmul { .. } => "int8_matmul",
            Quant::HalfMatmul => "f16_matmul",
        }
    }
    fn lower(&self, inputs: &[&[usize]], out: &[usize]) -> Lowering {
        match *self {
            Quant::QuantizeRows { inv_scale } => {
                let (m, k) = (inputs[0][0], inputs[0][1]);
                Lowering::kernel(QuantizeKernel { m, k, inv_scale }, 1)
            }
            Quant::Matmul { x_scale, raw } => {
                let kernel = Int8MatmulKernel {
                    m: out[0],
                    n: out[1],
                    words: inputs[0][1],
                    x_scale,
                    raw,
                };
                Lowering::kernel(kernel, 4)
            }
            Quant::HalfMatmul => {
                let kernel = HalfMatmulKernel {
                    m: out[0],
                    n: out[1],
                    k: inputs[0][1],
                };
                Lowering::kernel(kernel, 3)
            }
        }
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        vec![None; inputs.len()]
    }
}

/// Rounds half to even and clamps to ±127: one value's int8 code.
fn code(v: f32, inv_scale: f32) -> i32 {
    (v * inv_scale).round_ties_even().clamp(-127.0, 127.0) as i32
}

/// Rows of `cols` int8 codes packed four to a word (low byte first, zero-padded),
/// as f32 bit patterns: the layout of [`Quant::QuantizeRows`] and of the weights of
/// [`Quant::Matmul`].
pub(crate) fn pack_codes(codes: &[i8], cols: usize) -> Vec<f32> {
    codes
        .chunks(cols)
        .flat_map(|row| {
            row.chunks(4).map(|four| {
                let word = four
                    .iter()
                    .enumerate()
                    .fold(0u32, |w, (b, &c)| w | (u32::from(c as u8) << (8 * b)));
                f32::from_bits(word)
            })
        })
        .collect()
}

/// reads [x], writes [packed words]
#[derive(Debug)]
struct QuantizeKernel {
    m: usize,
    k: usize,
    inv_scale: f32,
}

impl Kernel for QuantizeKernel {
    fn reads(&self) -> usize {
        1
    }
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let codes: Vec<i8> = x[0][..self.m * self.k]
            .iter()
            .map(|&v| code(v, self.inv_scale) as i8)
            .collect();
        out[0][..self.m * self.k.div_ceil(4)].copy_from_slice(&pack_codes(&codes, self.k));
    }
    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new()
            .u32("m", self.m)
            .u32("k", self.k)
            .u32("words", self.k.div_ceil(4))
            .f32("inv_scale", self.inv_scale);
        Wgsl::new(SHADER, "quantize_rows", u, Grid::Threads(self.m * self.k.div_ceil(4))).types(vec!["f32", "u32"])
    }
}

/// reads [x words, weight words, weight scales, bias], writes [out]
#[derive(Debug)]
struct Int8MatmulKernel {
    m: usize,
    n: usize,
    words: usize,
    x_scale: f32,
    raw: bool,
}

impl Kernel for Int8MatmulKernel {
    fn reads(&self) -> usize {
        4
    }
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        // Unpacked once to i16 (k padded to whole words: the padding codes are 0), then
        // each output one i32 dot product, which the compiler vectorizes (pairs of
        // i16 products summed into i32 lanes, as x86's `pmaddwd`).
        let k = 4 * self.words;
        let unpack = |words: &[f32]| -> Vec<i16> {
            words
                .iter()
                .flat_map(|w| w.to_bits().to_le_bytes().map(|b| i16::from(b as i8)))
                .collect()
        };
        let xs = unpack(&x[0][..self.m * self.words]);
        let ws = unpack(&x[1][..self.n * self.words]);
        for i in 0..self.m {
            let row = &xs[i * k..(i + 1) * k];
            for j in 0..self.n {
                let col = &ws[j * k..(j + 1) * k];
                let acc: i32 = row.iter().zip(col).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum();
                out[0][i * self.n + j] = if self.raw {
                    f32::from_bits(acc as u32)
                } else {
                    (acc as f32) * (self.x_scale * x[2][j]) + x[3][j]
                };
            }
        }
    }
    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new()
            .u32("m", self.m)
            .u32("n", self.n)
            .u32("words", self.words)
            .f32("x_scale", self.x_scale);
        let (entry, out) = if self.raw {
            ("int8_matmul_raw", "u32")
        } else {
            ("int8_matmul", "f32")
        };
        let types = vec!["u32", "u32", "f32", "f32", out];
        Wgsl::new(SHADER, entry, u, Grid::Threads(self.m * self.n)).types(types)
    }
    fn cost(&self, words: &[usize]) -> Cost {
        let mut c = Cost::moved(words);
        c.flops = 2 * (self.m * self.n * 4 * self.words) as u64;
        c
    }
}

/// reads [x, half weight words, bias], writes [out]
#[derive(Debug)]
struct HalfMatmulKernel {
    m: usize,
    n: usize,
    k: usize,
}

impl Kernel for HalfMatmulKernel {
    fn reads(&self) -> usize {
        3
    }
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (k, n, words) = (self.k, self.n, self.k.div_ceil(2));
        let widen = |word: f32, high: bool| {
            let b = word.to_bits();
            half::f16::from_bits(if high { (b >> 16) as u16 } else { b as u16 }).to_f32()
        };
        if self.m < 8 {
            // A few rows: each output's sum straight from the packed weights.
            for i in 0..self.m {
                let row = &x[0][i * k..(i + 1) * k];
                for j in 0..n {
                    let mut acc = 0.0f32;
                    for (c, &a) in row.iter().enumerate() {
                        acc += a * widen(x[1][j * words + c / 2], c % 2 == 1);
                    }
                    out[0][i * n + j] = acc + x[2][j];
                }
            }
            return;
        }
        // Many rows: the weights widened once (exactly: every f16 is an f32) into
        // `[k, n]`, so that each output's f32 sum still runs in order of k — the same
        // bits as above and as the shader's loop up to fused multiply-adds — while the
        // loop over the outputs vectorizes.
        let mut wt = vec![0.0f32; k * n];
        for j in 0..n {
            for t in 0..words {
                wt[2 * t * n + j] = widen(x[1][j * words + t], false);
                if 2 * t + 1 < k {
                    wt[(2 * t + 1) * n + j] = widen(x[1][j * words + t], true);
                }
            }
        }
        let mut acc = vec![0.0f32; n];
        for i in 0..self.m {
            acc.fill(0.0);
            for (c, &a) in x[0][i * k..(i + 1) * k].iter().enumerate() {
                for (s, &w) in acc.iter_mut().zip(&wt[c * n..(c + 1) * n]) {
                    *s += a * w;
                }
            }
            for (o, (s, b)) in out[0][i * n..(i + 1) * n].iter_mut().zip(acc.iter().zip(&x[2][..n])) {
                *o = s + b;
            }
        }
    }
    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new()
            .u32("m", self.m)
            .u32("n", self.n)
            .u32("k", self.k)
            .u32("words", self.k.div_ceil(2));
        let types = vec!["f32", "u32", "f32", "f32"];
        Wgsl::new(SHADER, "f16_matmul", u, Grid::Threads(self.m * self.n)).types(types)
    }
    fn cost(&self, words: &[usize]) -> Cost {
        let mut c = Cost::moved(words);
        c.flops = 2 * (self.m * self.n * self.k) as u64;
        c
    }
}

impl Tensor {
    /// `self [m, k]` times half-precision weights packed two to a word
    /// (`[n, ⌈k/2⌉]`), plus `bias [n]`: `[m, n]` f32 (see [`Quant::HalfMatmul`]).
    #[track_caller]
    pub(crate) fn half_matmul(&self, weights: &Tensor, bias: &Tensor) -> Tensor {
        self.check_f32("half_matmul");
        let (m, k) = (self.shape()[0], self.shape()[1]);
        let n = weights.shape()[0];
        assert!(
            weights.shape() == [n, k.div_ceil(2)] && bias.shape() == [n],
            "half_matmul: x {:?}, weight words {:?}, bias {:?}",
            self.shape(),
            weights.shape(),
            bias.shape()
        );
        let op = Op::Quant(Quant::HalfMatmul);
        Tensor::from_node(
            op,
            vec![self.clone(), weights.clone(), bias.clone()],
            vec![m, n],
            DType::F32,
        )
    }

    /// Symmetric int8 codes of a `[m, k]` f32 tensor, `round(x / scale)` clamped to
    /// ±127, packed four to a u32 word per row (`[m, ⌈k/4⌉]`, zero-padded).
    #[track_caller]
    pub(crate) fn quantize_rows(&self, scale: f32) -> Tensor {
        self.check_f32("quantize_rows");
        assert!(
            self.shape().len() == 2,
            "quantize_rows: [m, k] expected, got {:?}",
            self.shape()
        );
        assert!(scale > 0.0 && scale.is_finite(), "quantize_rows: scale {scale}");
        let shape = vec![self.shape()[0], self.shape()[1].div_ceil(4)];
        let op = Op::Quant(Quant::QuantizeRows { inv_scale: 1.0 / scale });
        Tensor::from_node(op, vec![self.clone()], shape, DType::U32)
    }

    /// The int8 GEMM of packed rows `self [m, w]` and packed weight rows
    /// `weights [n, w]` (see [`Quant::Matmul`]); `[m, n]` f32, or with `raw` the i32
    /// accumulators as u32 words.
    #[track_caller]
    pub(crate) fn int8_matmul(
        &self,
        weights: &Tensor,
        w_scale: &Tensor,
        bias: &Tensor,
        x_scale: f32,
        raw: bool,
    ) -> Tensor {
        let (m, w) = (self.shape()[0], self.shape()[1]);
        let n = weights.shape()[0];
        assert!(
            weights.shape() == [n, w] && w_scale.shape() == [n] && bias.shape() == [n],
            "int8_matmul: x words {:?}, weight words {:?}, scales {:?}, bias {:?}",
            self.shape(),
            weights.shape(),
            w_scale.shape(),
            bias.shape()
        );
        let op = Op::Quant(Quant::Matmul { x_scale, raw });
        let inputs = vec![self.clone(), weights.clone(), w_scale.clone(), bias.clone()];
        let dtype = if raw { DType::U32 } else { DType::F32 };
        Tensor::from_node(op, inputs, vec![m, n], dtype)
    }
}
