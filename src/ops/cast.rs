//! Cast family (`shaders/cast.wgsl`): f32 to IEEE binary16 packed two to a 32-bit
//! word ([`DType::F16`], element `2i` in the low half of word `i`) and back. Both
//! directions are integer arithmetic on the bits, on the GPU and in the CPU twin
//! alike, so the words agree bit for bit on every adapter: round to nearest, ties to
//! even, subnormal halves kept, overflow to ±inf, NaN kept NaN — the `half` crate's
//! conversion, which the tests hold these to.
//!
//! The thread's autocast state lives here too (`crate::amp`'s guards set it, the
//! GEMM builders read it): which devices' products take f16 inputs, and the casts
//! of weights made under it.
//!
//! The gradient of a cast is the incoming gradient itself, in f32 (gradients are
//! never stored in f16 outside a GEMM's inputs): widening is exact, and rounding is
//! differentiated as the identity, as PyTorch does for `.half()`.

use std::cell::RefCell;
use std::collections::HashMap;

use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

use super::{Lowering, Op, Rule};
use crate::backend::kernel::{Grid, Kernel, Uniforms, Wgsl};
use crate::tensor::DType;
use crate::{Device, Tensor};

const SHADER: &str = include_str!("../../shaders/cast.wgsl");

/// The two casts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cast {
    /// f32 → f16 (packed words).
    ToF16,
    /// f16 (packed words) → f32.
    ToF32,
}

impl Rule for Cast {
    fn name(&self) -> &'static str {
        match self {
            Cast::ToF16 => "to_f16",
            Cast::ToF32 => "to_f32",
        }
    }
    fn lower(&self, _: &[&[usize]], out: &[usize]) -> Lowering {
        let n = crate::tensor::numel(out);
        Lowering::kernel(CastKernel { cast: *self, n }, 1)
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(g.clone())]
    }
}

/// The binary16 bits of `v`: the shader's `f32_to_f16_bits`, step for step, written
/// out here so that the tests hold it to the `half` crate's rounding (which the CPU
/// twin uses, through its vectorized slice conversion).
#[cfg(test)]
fn f16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    let sign = (x & 0x8000_0000) >> 16;
    let exp = x & 0x7f80_0000;
    let man = x & 0x007f_ffff;
    if exp == 0x7f80_0000 {
        let nan_bit = if man == 0 { 0 } else { 0x0200 };
        return (sign | 0x7c00 | nan_bit | (man >> 13)) as u16;
    }
    let half_exp = (exp >> 23) as i32 - 127 + 15;
    if half_exp >= 0x1f {
        return (sign | 0x7c00) as u16;
    }
    let round = |bits: u32, m: u32, round_bit: u32| {
        if m & round_bit != 0 && m & (3 * round_bit - 1) != 0 {
            bits + 1
        } else {
            bits
        }
    };
    if half_exp <= 0 {
        if 14 - half_exp > 24 {
            return sign as u16;
        }
        let m = man | 0x0080_0000;
        return (sign | round(m >> (14 - half_exp), m, 1 << (13 - half_exp))) as u16;
    }
    round(sign | ((half_exp as u32) << 10) | (man >> 13), man, 0x1000) as u16
}

/// `values` packed two to a word into `out` (f32 bit patterns, the layout of an f16
/// tensor; a half-empty last word is zero above). The `half` crate's slice
/// conversion: the CPU's F16C instructions where it has them (round to nearest even,
/// as [`f16_bits`]), else its software path.
pub(crate) fn pack_halves_into(values: &[f32], out: &mut [f32]) {
    let words: &mut [u32] = bytemuck::cast_slice_mut(&mut out[..values.len().div_ceil(2)]);
    if values.len() % 2 == 1 {
        *words.last_mut().expect("an odd length has a last word") = 0;
    }
    let halves: &mut [u16] = bytemuck::cast_slice_mut(words);
    let halves: &mut [half::f16] = halves[..values.len()].reinterpret_cast_mut();
    // Words are little-endian on every target wgnn builds for: element 2i is the low half.
    halves.convert_from_f32_slice(values);
}

/// [`pack_halves_into`] a new vector.
#[cfg(test)]
pub(crate) fn pack_halves(values: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; values.len().div_ceil(2)];
    pack_halves_into(values, &mut out);
    out
}

/// The first `n` values of an f16 tensor's words (exact).
pub(crate) fn unpack_halves(words: &[f32], n: usize) -> Vec<f32> {
    let n = n.min(2 * words.len());
    let halves: &[u16] = bytemuck::cast_slice(words);
    let mut out = vec![0.0; n];
    halves[..n]
        .reinterpret_cast::<half::f16>()
        .convert_to_f32_slice(&mut out);
    out
}

/// reads [x], writes [cast x]
#[derive(Debug)]
struct CastKernel {
    cast: Cast,
    n: usize,
}

impl Kernel for CastKernel {
    fn reads(&self) -> usize {
        1
    }
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let words = self.n.div_ceil(2);
        match self.cast {
            Cast::ToF16 => pack_halves_into(&x[0][..self.n], &mut out[0][..words]),
            Cast::ToF32 => out[0][..self.n].copy_from_slice(&unpack_halves(&x[0][..words], self.n)),
        }
    }
    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new().u32("n", self.n).u32("words", self.n.div_ceil(2));
        let (entry, threads, types) = match self.cast {
            Cast::ToF16 => ("to_f16", self.n.div_ceil(2), vec!["f32", "u32"]),
            Cast::ToF32 => ("to_f32", self.n, vec!["u32", "f32"]),
        };
        Wgsl::new(SHADER, entry, u, Grid::Threads(threads)).types(types)
    }
}

thread_local! {
    /// The devices of the active autocast guards on this thread (a stack: guards
    /// nest); `crate::amp` pushes and pops them, the GEMM builders ask.
    static AUTOCAST: RefCell<Vec<Device>> = const { RefCell::new(Vec::new()) };
    /// The f16 cast of each leaf (weight) made under the active guards, by leaf, with
    /// the version it was made from: a weight used by many products (a recurrent
    /// layer's at every step) is cast once, as PyTorch's autocast caches them; an
    /// in-place update (a new version) replaces the cast, so a guard held across many
    /// optimizer steps keeps one cast per weight. Emptied when the last guard leaves.
    static LEAF_CASTS: RefCell<HashMap<u64, (u64, Tensor)>> = RefCell::new(HashMap::new());
}

/// GEMMs built on this thread for `device` take f16 inputs until the matching
/// [`leave_autocast`].
pub(crate) fn enter_autocast(device: &Device) {
    AUTOCAST.with(|a| a.borrow_mut().push(device.clone()));
}

/// Ends the innermost [`enter_autocast`].
pub(crate) fn leave_autocast() {
    let last = AUTOCAST.with(|a| {
        let mut a = a.borrow_mut();
        a.pop();
        a.is_empty()
    });
    if last {
        LEAF_CASTS.with(|c| c.borrow_mut().clear());
    }
}

/// Whether a GEMM built now on this thread for `device` takes f16 inputs.
pub(crate) fn autocasting(device: &Device) -> bool {
    AUTOCAST.with(|a| a.borrow().iter().any(|d| d.same(device)))
}

/// `t` in f16 for a product built under autocast: a leaf's cast is made once per
/// version while the guards last.
#[track_caller]
pub(crate) fn autocast_half(t: &Tensor) -> Tensor {
    let Some(version) = t.leaf_version() else {
        return t.half();
    };
    LEAF_CASTS.with(|c| {
        let mut casts = c.borrow_mut();
        match casts.get(&t.id()) {
            Some((made_from, cast)) if *made_from == version => cast.clone(),
            _ => {
                let cast = t.half();
                casts.insert(t.id(), (version, cast.clone()));
                cast
            }
        }
    })
}

impl Tensor {
    /// This tensor in half precision ([`DType::F16`]: rounded to nearest, ties to
    /// even, packed two values to a word), as PyTorch's `.half()`; an f16 tensor is
    /// returned as it is. Gradients flow back unchanged (in f32). An f16 tensor feeds
    /// matmuls (f16 inputs, f32 accumulation and result), reshapes, [`Tensor::float`]
    /// and reads; other ops want f32 and panic naming it.
    #[track_caller]
    pub fn half(&self) -> Tensor {
        match self.dtype() {
            DType::F16 => self.clone(),
            _ => {
                self.check_f32("half");
                Tensor::from_node(
                    Op::Cast(Cast::ToF16),
                    vec![self.clone()],
                    self.shape().to_vec(),
                    DType::F16,
                )
            }
        }
    }

    /// An f16 tensor widened to f32 (exact), as PyTorch's `.float()`; any other
    /// tensor is returned as it is.
    #[track_caller]
    pub fn float(&self) -> Tensor {
        match self.dtype() {
            DType::F16 => Tensor::from_node(
                Op::Cast(Cast::ToF32),
                vec![self.clone()],
                self.shape().to_vec(),
                DType::F32,
            ),
            _ => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_the_half_crate_on_every_class_of_value() {
        // Every 97th f32 bit pattern (all exponents, both signs, many mantissas),
        // plus the edges: ties, the largest half, overflow, subnormal halves.
        let mut values: Vec<f32> = (0..u32::MAX / 97).map(|i| f32::from_bits(i * 97)).collect();
        values.extend([
            65504.0,
            65519.99,
            65520.0,
            1.0 + 1.0 / 2048.0,
            1.0 + 3.0 / 2048.0,
            2.98e-8,
            2.99e-8,
            6.1e-5,
        ]);
        for v in values {
            let ours = f16_bits(v);
            let theirs = half::f16::from_f32(v);
            if v.is_nan() {
                assert!(half::f16::from_bits(ours).is_nan(), "{v:e}");
            } else {
                assert_eq!(ours, theirs.to_bits(), "{v:e} ({:#x})", v.to_bits());
            }
        }
    }

    #[test]
    fn packing_round_trips_odd_lengths_and_matches_the_scalar_rounding() {
        let v = [1.5f32, -2.0, 3.25];
        assert_eq!(unpack_halves(&pack_halves(&v), 3), v);
        let many: Vec<f32> = (0..100_001u32)
            .map(|i| f32::from_bits(i.wrapping_mul(42_949)))
            .collect();
        let packed = pack_halves(&many);
        for (i, &x) in many.iter().enumerate() {
            let h = (packed[i / 2].to_bits() >> (16 * (i % 2))) as u16;
            if !x.is_nan() {
                assert_eq!(h, f16_bits(x), "{x:e}");
            }
        }
    }
}
