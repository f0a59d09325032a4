//! SIMD on the CPU backend. `simd_fn!` builds a function three times, for AVX-512,
//! AVX2 and plain x86-64, and runs the widest build the CPU has (the elementwise,
//! fused, epilogue, optimizer and recurrent-cell loops use it). And vectorizable
//! sigmoid and tanh for the recurrent cells (`lstm.rs`, `gru.rs`): the formulas of
//! `shaders/common.wgsl`'s `sigmoid_f` and `tanh_f` (both through e^(−|x|), which
//! never overflows), with e^x computed branch-free by range reduction and a degree-6
//! polynomial (Cephes' `expf`, within 2 ulp) instead of a libm call per element, so
//! that loops over slices compile to SIMD. The cells were spending most of an LSTM
//! step in libm's `expf` and `tanhf`.

/// e^x for x ≤ 0; 0 below −87 (where e^x < 1.7e−38, the smallest normal f32).
#[inline(always)]
fn exp_nonpositive(x0: f32) -> f32 {
    let x = x0.max(-87.0);
    // Round x·log2(e) to the nearest integer without a rounding instruction: adding
    // and subtracting 1.5·2^23 leaves the integer part (|x·log2 e| < 2^22).
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    // r = x − n·ln 2 in two parts (ln 2 = C1 + C2, C1 exact in few bits).
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // n as an integer from the bits of `shifted` (1.5·2^23 + n: its low mantissa bits
    // hold n), the same value as `n as i32` but without a saturating conversion, which
    // the compiler cannot vectorize.
    let n_int = shifted.to_bits() as i32 - SHIFT.to_bits() as i32;
    let scaled = y * f32::from_bits(((n_int + 127) as u32) << 23);
    if x0 < -87.0 {
        0.0
    } else {
        scaled
    }
}

/// The logistic function, `sigmoid_f`'s formula: 1 / (1 + e^−x) for x ≥ 0, else
/// e^x / (1 + e^x).
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let (up, down) = (1.0 / (1.0 + e), e / (1.0 + e));
    if x >= 0.0 {
        up
    } else {
        down
    }
}

/// tanh, `tanh_f`'s formula: (1 − e) / (1 + e) with e = e^(−2|x|) and x's sign;
/// below |x| = 1/4 (where 1 − e cancels) the Taylor series.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let x2 = x * x;
    let series = x * (1.0 + x2 * (-0.333_333_34 + x2 * (0.133_333_34 + x2 * (-0.053_968_254 + x2 * 0.021_869_488))));
    let e = exp_nonpositive(-2.0 * a);
    let far = ((1.0 - e) / (1.0 + e)).copysign(x);
    if a < 0.25 {
        series
    } else {
        far
    }
}

/// Defines a function whose body is compiled three times, for AVX-512, for AVX2 and
/// as is, and which runs the widest build the CPU has (checked once, then a cached
/// flag) unless [`FastPath::Simd512`](crate::fast_path::FastPath::Simd512) or
/// [`FastPath::Simd`](crate::fast_path::FastPath::Simd) is forced off: the loops in
/// the body then vectorize 16 or 8 lanes wide instead of SSE2's 4. No build contracts
/// a multiply and an add into an FMA, so all give the same bits. Everything the body
/// calls on the way to its loops must be `#[inline(always)]` (a function that is not
/// inlined is compiled without the wider instructions); arguments are plain
/// `name: type` pairs.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            if $crate::fast_path::choose(
                $crate::fast_path::FastPath::Simd,
                std::arch::is_x86_feature_detected!("avx2"),
            ) && std::arch::is_x86_feature_detected!("avx2")
            {
                #[rustversion::since(1.89)]
                #[clippy::msrv = "1.89"]
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[rustversion::before(1.89)]
                unsafe fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                if $crate::backend::cpu::vmath::take_avx512() {
                    // SAFETY: the CPU has AVX-512F (`take_avx512`).
                    return unsafe { avx512($($arg),*) };
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                // SAFETY: the CPU has AVX2 (checked just above).
                return unsafe { avx2($($arg),*) };
            }
            body($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// Whether this build has AVX-512 code (the compiler's AVX-512 target feature is
/// stable from Rust 1.89; an older one builds AVX2 and plain code only).
#[cfg(target_arch = "x86_64")]
#[rustversion::since(1.89)]
pub(crate) const AVX512_BUILD: bool = true;
/// Whether this build has AVX-512 code (not before Rust 1.89).
#[cfg(target_arch = "x86_64")]
#[rustversion::before(1.89)]
pub(crate) const AVX512_BUILD: bool = false;

/// Whether a SIMD loop or tile runs its AVX-512 build: the build has one, the CPU
/// has AVX-512F and [`FastPath::Simd512`](crate::fast_path::FastPath::Simd512) is
/// not forced off (counted as taken where chosen).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn take_avx512() -> bool {
    let has = AVX512_BUILD && std::arch::is_x86_feature_detected!("avx512f");
    crate::fast_path::choose(crate::fast_path::FastPath::Simd512, has) && has
}

simd_fn! {
    /// [`sigmoid`] of every element, in place.
    pub(crate) fn sigmoid_in_place(v: &mut [f32]) {
        v.iter_mut().for_each(|x| *x = sigmoid(*x));
    }
}

simd_fn! {
    /// [`tanh`] of every element, in place.
    pub(crate) fn tanh_in_place(v: &mut [f32]) {
        v.iter_mut().for_each(|x| *x = tanh(*x));
    }
}

simd_fn! {
    /// `e^(v − shift)` of every element, in place, for `v ≤ shift` (a softmax's
    /// shifted scores; −∞ gives 0).
    pub(crate) fn exp_shifted_in_place(v: &mut [f32], shift: f32) {
        v.iter_mut().for_each(|x| *x = exp_nonpositive(*x - shift));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against f64: within a few ulp over the whole range, including the extremes
    /// (where the result is below the smallest normal f32, within that).
    #[test]
    fn sigmoid_and_tanh_are_within_a_few_ulp_of_f64() {
        let mut xs: Vec<f32> = (-40_000..=40_000).map(|i| i as f32 * 1e-3).collect();
        xs.extend([-200.0, -88.0, -87.5, 87.5, 200.0, 1e-30, -1e-30, 0.0, -0.0]);
        for &x in &xs {
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            let t = (x as f64).tanh();
            let tol = |v: f64| 4.0 * (v.abs() as f32) * f32::EPSILON + f32::MIN_POSITIVE;
            assert!(
                ((sigmoid(x) as f64 - s).abs() as f32) <= tol(s),
                "sigmoid({x}) = {}",
                sigmoid(x)
            );
            assert!(((tanh(x) as f64 - t).abs() as f32) <= tol(t), "tanh({x}) = {}", tanh(x));
        }
        // Every build (AVX-512, AVX2, plain) gives the scalar function's bits.
        use crate::fast_path::{self, FastPath};
        for (simd, wide) in [(true, true), (true, false), (false, false)] {
            let _simd = fast_path::force(FastPath::Simd, simd);
            let _wide = fast_path::force(FastPath::Simd512, wide);
            let mut v = xs.clone();
            sigmoid_in_place(&mut v);
            assert!(v.iter().zip(&xs).all(|(a, &x)| a.to_bits() == sigmoid(x).to_bits()));
            let mut v = xs.clone();
            tanh_in_place(&mut v);
            assert!(v.iter().zip(&xs).all(|(a, &x)| a.to_bits() == tanh(x).to_bits()));
            let mut v = xs.iter().map(|x| x.min(0.0)).collect::<Vec<_>>();
            exp_shifted_in_place(&mut v, 0.0);
            assert!(v
                .iter()
                .zip(&xs)
                .all(|(a, &x)| a.to_bits() == exp_nonpositive(x.min(0.0)).to_bits()));
        }
    }

    /// Where the CPU has AVX-512F, the loops run their AVX-512 build unless it is
    /// forced off (the automatic choice counts it as taken).
    #[test]
    fn the_avx512_build_runs_where_the_cpu_has_it() {
        use crate::fast_path::{self, FastPath};
        #[cfg(target_arch = "x86_64")]
        let has = AVX512_BUILD
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let has = false;
        let mut v = vec![0.5f32; 64];
        let before = fast_path::taken(FastPath::Simd512);
        sigmoid_in_place(&mut v);
        assert_eq!(fast_path::taken(FastPath::Simd512) > before, has);
        let _off = fast_path::force(FastPath::Simd512, false);
        let before = fast_path::taken(FastPath::Simd512);
        sigmoid_in_place(&mut v);
        assert_eq!(fast_path::taken(FastPath::Simd512), before);
    }

    /// The exponent taken from the bits of the shifted value is `n as i32` for every
    /// x the function sees (every 61st f32 from −87 to 0, and both ends).
    #[test]
    fn the_exponent_from_the_shifted_bits_is_the_rounded_integer() {
        const SHIFT: f32 = 12_582_912.0;
        let (lo, hi) = ((-87.0f32).to_bits(), (-0.0f32).to_bits());
        for bits in (hi..=lo).step_by(61).chain([lo, hi, 0]) {
            let x = f32::from_bits(bits);
            let shifted = x * std::f32::consts::LOG2_E + SHIFT;
            let n = shifted - SHIFT;
            assert_eq!(shifted.to_bits() as i32 - SHIFT.to_bits() as i32, n as i32, "x = {x}");
        }
    }
}
