//! Products with a B packed once and read by many ([`FastPath::PackedOperand`]): an
//! unrolled RNN multiplies the same recurrent weight by a few rows of hidden state
//! at every time step, and `matrixmultiply` packs that whole weight again for each of
//! them (at h512, 4 MB packed 50 times forward and 50 times backward for 32 rows).
//! Here B is packed once per plan run ([`pack`]) into panels of [`PANEL`] columns,
//! `panel[p][k][j] = B[k][p·PANEL + j]` (zeros past the last column), and each
//! product ([`gemm`]) streams the panels through register tiles: 8 rows × 32 columns
//! in sixteen 512-bit accumulators with AVX-512, 6 × 16 in twelve 256-bit ones with
//! AVX2 and FMA, a plain loop elsewhere.
//!
//! Every output is one fused multiply-add chain over k in order, from zero: the same
//! bits with AVX-512, with AVX2 or without either ([`FastPath::Simd`] forced off),
//! and however the panels are dealt out to threads — but not `matrixmultiply`'s bits
//! (it adds its partial sums of 256 k at a time, and multiplies and adds unfused
//! where the CPU has no FMA).

use std::ops::Range;

use crate::fast_path::{self, FastPath};

/// Columns of B per packed panel.
pub(crate) const PANEL: usize = 32;

/// Products of at least this many flops (2·m·n·k) are split in two halves of the
/// panels, one on the helper thread (as `sgemm`'s `FLOPS_FOR_TWO`).
const FLOPS_FOR_TWO: usize = 1 << 22;

/// Words of B `[k, n]` packed into panels.
pub(crate) fn packed_words(k: usize, n: usize) -> usize {
    n.div_ceil(PANEL) * k * PANEL
}

/// Words of B from which [`pack`] packs half of the panels on the helper thread.
const PACK_WORDS_FOR_TWO: usize = 1 << 16;

/// Packs B `[k, n]` (stored transposed, `[n, k]`, when `tb`: then transposed in 8 × 8
/// register blocks where [`FastPath::Simd`] takes an AVX2 build) into `out`'s first
/// [`packed_words`] words; from [`PACK_WORDS_FOR_TWO`] words of B
/// ([`FastPath::GemmSplit`]), the second half of the panels on the helper thread —
/// the half of the panels that thread multiplies in [`gemm`].
pub(crate) fn pack(k: usize, n: usize, tb: bool, b: &[f32], out: &mut [f32]) {
    assert!(b.len() >= k * n, "pack: B holds {} words, not {k}×{n}", b.len());
    if k == 0 {
        return;
    }
    let panels = n.div_ceil(PANEL);
    let out = &mut out[..packed_words(k, n)];
    let blocks = tb && Isa::detect() != Isa::Plain && Isa::avx2();
    let pack_range = |range: Range<usize>, out: &mut [f32]| {
        for (p, panel) in range.zip(out.chunks_exact_mut(k * PANEL)) {
            pack_panel(k, n, (tb, blocks), b, p, panel);
        }
    };
    if panels >= 2 && fast_path::choose(FastPath::GemmSplit, k * n >= PACK_WORDS_FOR_TWO) {
        let (first, second) = out.split_at_mut(panels / 2 * k * PANEL);
        return super::helper_thread::join(
            || pack_range(panels / 2..panels, second),
            || pack_range(0..panels / 2, first),
        );
    }
    pack_range(0..panels, out)
}

/// Packs panel `p` of B into `panel` (`k·PANEL` words); with `blocks`, a whole
/// panel of a transposed B in 8 × 8 blocks of AVX registers.
fn pack_panel(k: usize, n: usize, (tb, blocks): (bool, bool), b: &[f32], p: usize, panel: &mut [f32]) {
    let (c0, width) = (p * PANEL, PANEL.min(n - p * PANEL));
    if !tb {
        for (kk, row) in panel.chunks_exact_mut(PANEL).enumerate() {
            row[..width].copy_from_slice(&b[kk * n + c0..][..width]);
            row[width..].fill(0.0);
        }
        return;
    }
    // B's columns are rows of the stored Bᵀ: a transpose. Word by word it took 21 µs
    // for the seed MLP's 784 × 128 weight on two Zen 4 cores (its product 28 µs);
    // in 8 × 8 register blocks, k's last k % 8 rows word by word.
    let k_done = if blocks && width == PANEL {
        transpose_blocks(k, &b[c0 * k..(c0 + PANEL) * k], panel)
    } else {
        0
    };
    // Elsewhere in blocks of 16 k, so that both sides stay within a few cache lines.
    if width < PANEL {
        panel.fill(0.0);
    }
    for k0 in (k_done..k).step_by(16) {
        let kb = 16.min(k - k0);
        for j in 0..width {
            let column = &b[(c0 + j) * k + k0..][..kb];
            for (kk, &v) in column.iter().enumerate() {
                panel[(k0 + kk) * PANEL + j] = v;
            }
        }
    }
}

/// Packs the first `k / 8 · 8` rows of a whole panel of a transposed B from its 32
/// columns (`rows`, the stored Bᵀ's rows) in 8 × 8 register blocks, where the CPU
/// has AVX2 (the caller's check); returns the rows packed.
fn transpose_blocks(k: usize, rows: &[f32], panel: &mut [f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the caller saw AVX2 on this CPU.
        unsafe { x86::transpose_panel(k, rows, panel) };
        k / 8 * 8
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (k, rows, panel);
        0
    }
}

/// `out[m, n] = op(A)·B` with B [`pack`]ed (`packed`: its panels), A `[m, k]` (stored
/// transposed, `[k, m]`, when `ta`). From [`FLOPS_FOR_TWO`] the panels are split in
/// two halves, one on the helper thread ([`FastPath::GemmSplit`]): the same bits.
pub(crate) fn gemm(m: usize, k: usize, n: usize, ta: bool, a: &[f32], packed: &[f32], out: &mut [f32]) {
    if m == 0 || n == 0 {
        return;
    }
    let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
    assert!(
        k == 0 || a.len() > (m - 1) * rsa + (k - 1) * csa,
        "packed gemm: A holds {} words, not {m}×{k}",
        a.len()
    );
    assert!(
        packed.len() >= packed_words(k, n) && out.len() >= m * n,
        "packed gemm: {} packed words for {k}×{n}, {} output words for {m}×{n}",
        packed.len(),
        out.len()
    );
    let isa = Isa::detect();
    let operands = Operands {
        m,
        k,
        n,
        a: (a.as_ptr(), rsa, csa),
        packed: packed.as_ptr(),
        out: out.as_mut_ptr(),
    };
    let panels = n.div_ceil(PANEL);
    let split = panels >= 2 && fast_path::choose(FastPath::GemmSplit, 2 * m * n * k >= FLOPS_FOR_TWO);
    // SAFETY (each call): the operands were checked above, and the two halves write
    // disjoint columns of `out`, which stays borrowed until `join` returns.
    if split {
        let cut = panels / 2;
        return super::helper_thread::join(
            || unsafe { operands.run(isa, cut..panels) },
            || unsafe { operands.run(isa, 0..cut) },
        );
    }
    unsafe { operands.run(isa, 0..panels) }
}

/// The register tiles this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Isa {
    Avx512,
    Avx2,
    Plain,
}

impl Isa {
    /// The SIMD tile this CPU has: AVX-512, else AVX2 with FMA; `None` elsewhere.
    fn simd() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if x86::AVX512 && std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512);
            }
            if Isa::avx2_fma() {
                return Some(Isa::Avx2);
            }
        }
        None
    }

    /// Whether this CPU has AVX2 (the packing's register transposes).
    fn avx2() -> bool {
        #[cfg(target_arch = "x86_64")]
        return std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Whether this CPU runs the AVX2 tile (AVX2 and FMA).
    fn avx2_fma() -> bool {
        #[cfg(target_arch = "x86_64")]
        return Isa::avx2() && std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// [`Isa::simd`] unless [`FastPath::Simd`] is forced off (then the plain tile);
    /// the AVX2 tile instead of the AVX-512 one where [`FastPath::Simd512`] is.
    fn detect() -> Isa {
        match Isa::simd() {
            Some(isa) if fast_path::choose(FastPath::Simd, true) => {
                if isa == Isa::Avx512 && !fast_path::choose(FastPath::Simd512, true) && Isa::avx2_fma() {
                    Isa::Avx2
                } else {
                    isa
                }
            }
            _ => Isa::Plain,
        }
    }

    /// Rows of A per register tile.
    fn rows(self) -> usize {
        match self {
            Isa::Avx512 => 8,
            Isa::Avx2 => 6,
            Isa::Plain => PLAIN_ROWS,
        }
    }
}

/// Whether the automatic choice may pack: where one of the SIMD tiles runs. Elsewhere
/// the plain tile is there for forced runs and tests only (without FMA every
/// `mul_add` is a library call; on other architectures it has not been measured
/// against `matrixmultiply`).
pub(crate) fn worth_packing() -> bool {
    Isa::simd().is_some()
}

/// One product's operands as raw pointers, for the two threads that write disjoint
/// column ranges of the output.
struct Operands {
    m: usize,
    k: usize,
    n: usize,
    a: (*const f32, usize, usize),
    packed: *const f32,
    out: *mut f32,
}

// SAFETY: shared by two threads that read A and the panels and write disjoint
// columns of `out` (see `gemm`).
unsafe impl Sync for Operands {}

impl Operands {
    /// Computes the output columns of `panels`.
    ///
    /// # Safety
    /// A must hold `m·k` addressed words, the panels [`packed_words`], `out` `m·n`,
    /// and nobody else may touch the columns written.
    unsafe fn run(&self, isa: Isa, panels: Range<usize>) {
        let Operands { m, k, n, .. } = *self;
        let (a, rsa, csa) = self.a;
        let rows = isa.rows();
        // Edge tiles (rows past m, columns past n) go through a scratch tile.
        let mut scratch = [0.0f32; 8 * PANEL];
        // A's rows of a ragged last tile, padded with zero rows.
        let mut a_edge = Vec::new();
        for p in panels {
            let panel = unsafe { self.packed.add(p * k * PANEL) };
            let (c0, width) = (p * PANEL, PANEL.min(n - p * PANEL));
            for r0 in (0..m).step_by(rows) {
                let height = rows.min(m - r0);
                let (a_tile, a_rs) = if height == rows {
                    (unsafe { a.add(r0 * rsa) }, rsa)
                } else {
                    if a_edge.is_empty() {
                        a_edge = vec![0.0f32; rows * k];
                        for i in 0..height {
                            for kk in 0..k {
                                a_edge[i * k + kk] = unsafe { *a.add((r0 + i) * rsa + kk * csa) };
                            }
                        }
                    }
                    (a_edge.as_ptr(), k)
                };
                let a_cs = if height == rows { csa } else { 1 };
                let direct = height == rows && width == PANEL;
                let (c, ldc) = if direct {
                    (unsafe { self.out.add(r0 * n + c0) }, n)
                } else {
                    (scratch.as_mut_ptr(), PANEL)
                };
                unsafe { tile(isa, k, (a_tile, a_rs, a_cs), panel, c, ldc) };
                if !direct {
                    for i in 0..height {
                        let row = unsafe { std::slice::from_raw_parts_mut(self.out.add((r0 + i) * n + c0), width) };
                        row.copy_from_slice(&scratch[i * PANEL..][..width]);
                    }
                }
            }
        }
    }
}

/// One register tile: `isa.rows()` rows × [`PANEL`] columns of C from A's rows at `a`
/// (row and column strides) and one panel.
///
/// # Safety
/// A's rows, the panel (`k·PANEL` words) and C's rows (`ldc` apart, `PANEL` wide)
/// must be valid.
unsafe fn tile(isa: Isa, k: usize, a: (*const f32, usize, usize), panel: *const f32, c: *mut f32, ldc: usize) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::detect` saw AVX-512 (AVX2 and FMA) on this CPU.
        Isa::Avx512 => unsafe { x86::tile_8x32(k, a, panel, c, ldc) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe {
            x86::tile_6x16(k, a, panel, c, ldc);
            x86::tile_6x16(k, a, panel.add(16), c.add(16), ldc);
        },
        _ => unsafe { tile_plain(k, a, panel, c, ldc) },
    }
}

/// Rows of the plain tile.
const PLAIN_ROWS: usize = 4;

/// The plain tile: `f32::mul_add` (one rounding, as the FMA instruction), so the same
/// bits as the SIMD tiles.
///
/// # Safety
/// As [`tile`].
unsafe fn tile_plain(k: usize, (a, rsa, csa): (*const f32, usize, usize), panel: *const f32, c: *mut f32, ldc: usize) {
    let mut acc = [[0.0f32; PANEL]; PLAIN_ROWS];
    for kk in 0..k {
        let b = unsafe { std::slice::from_raw_parts(panel.add(kk * PANEL), PANEL) };
        for (i, row) in acc.iter_mut().enumerate() {
            let av = unsafe { *a.add(i * rsa + kk * csa) };
            for (acc, &bv) in row.iter_mut().zip(b) {
                *acc = av.mul_add(bv, *acc);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), PANEL) }.copy_from_slice(row);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512 and AVX2 register tiles.
    use super::PANEL;
    use std::arch::x86_64::*;

    /// Rows of a panel (128 bytes each) that the AVX-512 tile prefetches ahead of
    /// its loads. An LSTM's recurrent weight at h512 packs into 4 MB, more than a
    /// core's L2, so each time step streams it from L3; the hardware prefetcher
    /// alone left the tile waiting on loads (one core, 32×512×1024 and 32×2048×256
    /// from packed panels: 125–127 GFLOP/s without, 142–145 with 16 rows ahead;
    /// 4 and 32 rows did no better).
    const PREFETCH_ROWS: usize = 16;

    /// Whether this build has the AVX-512 tile (the compiler's AVX-512 intrinsics are
    /// stable from Rust 1.89; an older one builds the AVX2 tile only).
    #[rustversion::since(1.89)]
    pub(super) const AVX512: bool = true;
    /// Whether this build has the AVX-512 tile (not before Rust 1.89).
    #[rustversion::before(1.89)]
    pub(super) const AVX512: bool = false;

    /// Never called: this compiler has no AVX-512 ([`AVX512`] is false).
    #[rustversion::before(1.89)]
    pub(super) unsafe fn tile_8x32(_: usize, _: (*const f32, usize, usize), _: *const f32, _: *mut f32, _: usize) {
        unreachable!("no AVX-512 tile before Rust 1.89")
    }

    /// 8 rows × 32 columns: per k, two 16-lane loads of the panel row and eight
    /// broadcasts of A, sixteen FMAs.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the pointers as `super::tile`'s.
    #[rustversion::since(1.89)]
    #[clippy::msrv = "1.89"]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_8x32(
        k: usize,
        (a, rsa, csa): (*const f32, usize, usize),
        panel: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [_mm512_setzero_ps(); 16];
        for kk in 0..k {
            // The panel's row PREFETCH_ROWS ahead (past its end: the next panel's
            // first rows); a prefetch never faults, and changes no value.
            let ahead = panel.wrapping_add((kk + PREFETCH_ROWS) * PANEL);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16).cast());
            // SAFETY: inside the panel and A's rows (the caller's promise).
            unsafe {
                let b0 = _mm512_loadu_ps(panel.add(kk * PANEL));
                let b1 = _mm512_loadu_ps(panel.add(kk * PANEL + 16));
                for i in 0..8 {
                    let av = _mm512_set1_ps(*a.add(i * rsa + kk * csa));
                    acc[2 * i] = _mm512_fmadd_ps(av, b0, acc[2 * i]);
                    acc[2 * i + 1] = _mm512_fmadd_ps(av, b1, acc[2 * i + 1]);
                }
            }
        }
        for i in 0..8 {
            // SAFETY: C's rows (the caller's promise).
            unsafe {
                _mm512_storeu_ps(c.add(i * ldc), acc[2 * i]);
                _mm512_storeu_ps(c.add(i * ldc + 16), acc[2 * i + 1]);
            }
        }
    }

    /// Packs one whole panel of a transposed B: `rows` holds its 32 columns as rows of
    /// `k` words (the stored Bᵀ), `panel[kk·32 + j] = rows[j·k + kk]` for the first
    /// `k / 8 · 8` rows kk of the panel, in 8 × 8 blocks.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_panel(k: usize, rows: &[f32], panel: &mut [f32]) {
        assert!(rows.len() >= PANEL * k && panel.len() >= k * PANEL);
        let (src, dst) = (rows.as_ptr(), panel.as_mut_ptr());
        for k0 in (0..k / 8 * 8).step_by(8) {
            for j0 in (0..PANEL).step_by(8) {
                // SAFETY: rows j0..j0 + 8 from word k0 + 7 and panel rows k0..k0 + 8
                // from column j0 + 7 at most, inside both (asserted above).
                unsafe { transpose_8x8(src.add(j0 * k + k0), k, dst.add(k0 * PANEL + j0), PANEL) };
            }
        }
    }

    /// Transposes the 8 × 8 block at `src` (rows `src_stride` apart) into `dst`
    /// (rows `dst_stride` apart): eight loads, three rounds of shuffles, eight stores.
    ///
    /// # Safety
    /// The CPU has AVX2; both blocks valid.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn transpose_8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        // SAFETY: the caller's promise.
        let r: [__m256; 8] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(src.add(i * src_stride)) });
        // Pairs of rows interleaved: t[2i] the low halves' words, t[2i + 1] the high.
        let t: [__m256; 8] = std::array::from_fn(|i| {
            let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm256_unpacklo_ps(a, b)
            } else {
                _mm256_unpackhi_ps(a, b)
            }
        });
        // Quads: columns 0, 1, 2, 3 of rows 0–3 (u[0..4]) and of rows 4–7 (u[4..8])
        // within each 128-bit lane.
        let quads = |a: __m256, b: __m256, hi: bool| {
            if hi {
                _mm256_shuffle_ps::<0xEE>(a, b)
            } else {
                _mm256_shuffle_ps::<0x44>(a, b)
            }
        };
        let u = [
            quads(t[0], t[2], false),
            quads(t[0], t[2], true),
            quads(t[1], t[3], false),
            quads(t[1], t[3], true),
            quads(t[4], t[6], false),
            quads(t[4], t[6], true),
            quads(t[5], t[7], false),
            quads(t[5], t[7], true),
        ];
        for i in 0..4 {
            let low = _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]);
            let high = _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]);
            // SAFETY: the caller's promise.
            unsafe {
                _mm256_storeu_ps(dst.add(i * dst_stride), low);
                _mm256_storeu_ps(dst.add((i + 4) * dst_stride), high);
            }
        }
    }

    /// 6 rows × 16 columns (half a panel): per k, two 8-lane loads and six
    /// broadcasts, twelve FMAs.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the pointers as `super::tile`'s (16 columns).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile_6x16(
        k: usize,
        (a, rsa, csa): (*const f32, usize, usize),
        panel: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [_mm256_setzero_ps(); 12];
        for kk in 0..k {
            // SAFETY: inside the panel and A's rows (the caller's promise).
            unsafe {
                let b0 = _mm256_loadu_ps(panel.add(kk * PANEL));
                let b1 = _mm256_loadu_ps(panel.add(kk * PANEL + 8));
                for i in 0..6 {
                    let av = _mm256_set1_ps(*a.add(i * rsa + kk * csa));
                    acc[2 * i] = _mm256_fmadd_ps(av, b0, acc[2 * i]);
                    acc[2 * i + 1] = _mm256_fmadd_ps(av, b1, acc[2 * i + 1]);
                }
            }
        }
        for i in 0..6 {
            // SAFETY: C's rows (the caller's promise).
            unsafe {
                _mm256_storeu_ps(c.add(i * ldc), acc[2 * i]);
                _mm256_storeu_ps(c.add(i * ldc + 8), acc[2 * i + 1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each output as one fma chain over k in order, the definition.
    fn reference(m: usize, k: usize, n: usize, ta: bool, tb: bool, a: &[f32], b: &[f32]) -> Vec<u32> {
        let mut out = vec![0u32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for kk in 0..k {
                    let av = if ta { a[kk * m + i] } else { a[i * k + kk] };
                    let bv = if tb { b[j * k + kk] } else { b[kk * n + j] };
                    acc = av.mul_add(bv, acc);
                }
                out[i * n + j] = acc.to_bits();
            }
        }
        out
    }

    /// Ragged rows and columns, every transpose, one thread and two, with the SIMD
    /// tiles (AVX-512 and AVX2) and without, a transposed B packed in register blocks
    /// (whole panels; k below 8, a multiple of 8 and past one) and word by word: the
    /// reference's bits.
    #[test]
    fn a_packed_product_is_one_fma_chain_per_output_on_every_path() {
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 7),
            (8, 16, 32),
            (13, 129, 70),
            (32, 127, 129),
            (6, 784, 33),
            (70, 64, 96),
            (16, 300, 64),
            (5, 3, 64),
            (4, 0, 5),
        ] {
            let a = crate::rng::uniform(3, m * k, -1.0, 1.0);
            let b = crate::rng::uniform(4, k * n, -1.0, 1.0);
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let want = reference(m, k, n, ta, tb, &a, &b);
                for (simd, wide, split) in [
                    (true, true, true),
                    (true, false, true),
                    (true, true, false),
                    (false, true, true),
                    (false, false, false),
                ] {
                    let _simd = fast_path::force(FastPath::Simd, simd);
                    let _wide = fast_path::force(FastPath::Simd512, wide);
                    let _split = fast_path::force(FastPath::GemmSplit, split);
                    let mut packed = vec![f32::NAN; packed_words(k, n)];
                    pack(k, n, tb, &b, &mut packed);
                    let mut out = vec![f32::NAN; m * n];
                    gemm(m, k, n, ta, &a, &packed, &mut out);
                    let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(
                        got, want,
                        "{m}×{k}×{n} ta {ta} tb {tb} simd {simd} 512 {wide} split {split}"
                    );
                }
            }
        }
    }
}
