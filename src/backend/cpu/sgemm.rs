//! The CPU backend's single-precision GEMM: `matrixmultiply`'s sgemm with transposes
//! as strides, split by rows or columns over the helper thread or scoped threads from
//! a size on ([`FastPath::GemmSplit`], [`FastPath::GemmColumns`],
//! [`FastPath::GemmThreads`]); every block the same sgemm, so the bits do not depend
//! on the split. The product kernel's CPU twin (`ops/matmul.rs`) calls [`sgemm`].

use crate::fast_path::{self, FastPath};

/// Products of at least twice this many flops (2·m·n·k) are split by rows over
/// scoped threads, each part at least this large (512³ and 1024³ ran 1.6–1.9× faster
/// on 2 vCPUs).
const FLOPS_PER_THREAD: usize = 1 << 26;

/// Products of at least this many flops and below the scoped-thread size are split in
/// two, one half on the spinning helper thread (`helper_thread`), which costs a
/// few µs where spawning a thread costs ~50: the seed MLP's 32×784×128 and
/// 128×784×128 products (6.4 and 25.7 MFLOP). Whole epochs of that MLP on 2 vCPUs
/// (AMD EPYC), paired runs: 0.86× the time at batch 32, 0.84× at batch 128.
const FLOPS_FOR_TWO: usize = 1 << 22;

/// The threads a product may use ([`super::threads::get_num_threads`]).
fn cpu_threads() -> usize {
    super::threads::get_num_threads()
}

/// `op(A)·op(B)` through `matrixmultiply`, transposes expressed as strides; a large
/// product is split into row blocks computed on the helper thread or on scoped
/// threads (each block the same sgemm, so the result has the same bits however many
/// threads the machine has).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(m: usize, k: usize, n: usize, ta: bool, tb: bool, a: &[f32], b: &[f32], out: &mut [f32]) {
    let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
    let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    let flops = 2 * m * n * k;
    let auto = if flops >= FLOPS_PER_THREAD * 2 {
        cpu_threads().min(flops / FLOPS_PER_THREAD)
    } else if flops >= FLOPS_FOR_TWO {
        cpu_threads().min(2)
    } else {
        1
    };
    let parts = if !fast_path::choose(FastPath::GemmSplit, auto > 1) {
        1
    } else if fast_path::choose(FastPath::GemmThreads, auto > 2) {
        auto.max(4)
    } else {
        2
    };
    sgemm_parts(parts, m, k, n, (a, rsa, csa), (b, rsb, csb), out)
}

/// Whether a product of `m·k·n` splits over two threads or more
/// ([`FastPath::GemmSplit`]): its epilogue (bias, activation) splits with it.
pub(crate) fn splits(m: usize, k: usize, n: usize) -> bool {
    let flops = 2 * m * n * k;
    cpu_threads() > 1 && m >= 2 && fast_path::choose(FastPath::GemmSplit, flops >= FLOPS_FOR_TWO)
}

/// `op(A)·op(B)` as one sgemm call on this thread (for kernels that deal out their
/// own work to threads).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_serial(m: usize, k: usize, n: usize, ta: bool, tb: bool, a: &[f32], b: &[f32], out: &mut [f32]) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
    let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
    gemm_block(m, k, n, (a, rsa, csa), (b, rsb, csb), &mut out[..m * n]);
}

/// A batch of products `out[z] = op(A[z])·op(B[z])`, each `[m, n]` and stored one
/// after the other in `out`; `offsets[z]` are the words of A and B before product z's
/// operands. From the same size as one product's split ([`FastPath::GemmSplit`], 4
/// MFLOP in all), the products are dealt out whole to two threads (more with
/// [`FastPath::GemmThreads`]), each computed by one sgemm call: the same bits as
/// one after the other, and one hand-over per batch instead of one per product.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_batch(
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    a: &[f32],
    b: &[f32],
    offsets: &[(usize, usize)],
    out: &mut [f32],
) {
    let count = offsets.len();
    if count <= 1 || m == 0 || n == 0 || k == 0 {
        for (z, &(oa, ob)) in offsets.iter().enumerate() {
            sgemm(m, k, n, ta, tb, &a[oa..], &b[ob..], &mut out[z * m * n..]);
        }
        return;
    }
    let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
    let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
    let run = |offsets: &[(usize, usize)], out: &mut [f32]| {
        for (&(oa, ob), out) in offsets.iter().zip(out.chunks_mut(m * n)) {
            gemm_block(m, k, n, (&a[oa..], rsa, csa), (&b[ob..], rsb, csb), out);
        }
    };
    let flops = 2 * m * n * k * count;
    let auto = if flops >= FLOPS_PER_THREAD * 2 {
        cpu_threads().min(flops / FLOPS_PER_THREAD)
    } else if flops >= FLOPS_FOR_TWO {
        cpu_threads().min(2)
    } else {
        1
    };
    let parts = if !fast_path::choose(FastPath::GemmSplit, auto > 1) {
        1
    } else if fast_path::choose(FastPath::GemmThreads, auto > 2) {
        auto.max(4)
    } else {
        2
    }
    .min(count);
    let out = &mut out[..count * m * n];
    if parts == 1 {
        return run(offsets, out);
    }
    let per = count.div_ceil(parts);
    if parts == 2 {
        let (first, second) = out.split_at_mut(per * m * n);
        let (o1, o2) = offsets.split_at(per);
        return super::helper_thread::join(|| run(o2, second), || run(o1, first));
    }
    std::thread::scope(|scope| {
        let mut blocks = out.chunks_mut(per * m * n).zip(offsets.chunks(per));
        let (first, o1) = blocks.next().expect("count > 1");
        for (block, o) in blocks {
            scope.spawn(move || run(o, block));
        }
        run(o1, first);
    });
}

/// [`sgemm`] split into at most `parts` row blocks of whole 8-row panels.
fn sgemm_parts(
    parts: usize,
    m: usize,
    k: usize,
    n: usize,
    (a, rsa, csa): (&[f32], usize, usize),
    (b, rsb, csb): (&[f32], usize, usize),
    out: &mut [f32],
) {
    let parts = parts.min(m / 8).max(1);
    let out = &mut out[..m * n];
    if parts == 1 {
        return gemm_block(m, k, n, (a, rsa, csa), (b, rsb, csb), out);
    }
    // Row blocks of whole 8-row panels (matrixmultiply's register tile height).
    let rows = m.div_ceil(parts).next_multiple_of(8);
    if parts == 2 && n >= 32 && fast_path::choose(FastPath::GemmColumns, m < n) {
        // A wide product: split the columns, so that each thread packs half of B
        // (splitting rows, both would pack all of it for a few rows of A each).
        return gemm_column_halves(m, k, n, (a, rsa, csa), (b, rsb, csb), out);
    }
    if parts == 2 {
        let (top, bottom) = out.split_at_mut(rows * n);
        let a_bottom = &a[rows * rsa..];
        return super::helper_thread::join(
            || gemm_block(bottom.len() / n, k, n, (a_bottom, rsa, csa), (b, rsb, csb), bottom),
            || gemm_block(rows, k, n, (a, rsa, csa), (b, rsb, csb), top),
        );
    }
    std::thread::scope(|scope| {
        let mut blocks = out.chunks_mut(rows * n).enumerate();
        let (_, first) = blocks.next().expect("m > 0");
        for (i, block) in blocks {
            let a = &a[i * rows * rsa..];
            scope.spawn(move || gemm_block(block.len() / n, k, n, (a, rsa, csa), (b, rsb, csb), block));
        }
        gemm_block(first.len() / n, k, n, (a, rsa, csa), (b, rsb, csb), first);
    });
}

/// `out[m, n] = A·B` in two column blocks (a multiple of 16 columns on the left), the
/// right one on the helper thread.
fn gemm_column_halves(
    m: usize,
    k: usize,
    n: usize,
    (a, rsa, csa): (&[f32], usize, usize),
    (b, rsb, csb): (&[f32], usize, usize),
    out: &mut [f32],
) {
    /// The output's base pointer, shared by the two blocks (which write disjoint
    /// elements).
    struct Out(*mut f32);
    // SAFETY: the two threads write disjoint elements, and `join` returns only when
    // both are done, while `out` is still borrowed.
    unsafe impl Sync for Out {}
    impl Out {
        fn get(&self) -> *mut f32 {
            self.0
        }
    }
    check_operands(m, k, n, (a, rsa, csa), (b, rsb, csb), out);
    let out = Out(out.as_mut_ptr());
    let cut = (n / 2).next_multiple_of(16).min(n);
    // SAFETY: operands checked above; columns c0..c1 of every row of `out` (row
    // stride n) are inside it and written by this block only.
    let block = |c0: usize, c1: usize| unsafe {
        sgemm_raw(
            m,
            k,
            c1 - c0,
            (a.as_ptr(), rsa, csa),
            (b.as_ptr().add(c0 * csb), rsb, csb),
            out.get().add(c0),
            n,
        )
    };
    super::helper_thread::join(|| block(cut, n), || block(0, cut));
}

/// One `matrixmultiply::sgemm` call: `out[m, n] = A·B` with A and B given as slices
/// with their row and column strides.
fn gemm_block(
    m: usize,
    k: usize,
    n: usize,
    (a, rsa, csa): (&[f32], usize, usize),
    (b, rsb, csb): (&[f32], usize, usize),
    out: &mut [f32],
) {
    check_operands(m, k, n, (a, rsa, csa), (b, rsb, csb), out);
    // SAFETY: operands checked above; `out` holds m·n elements written with row
    // stride n.
    unsafe {
        sgemm_raw(
            m,
            k,
            n,
            (a.as_ptr(), rsa, csa),
            (b.as_ptr(), rsb, csb),
            out.as_mut_ptr(),
            n,
        )
    }
}

/// Asserts that every element the strides of A `[m, k]` and B `[k, n]` address lies
/// inside its slice and that `out` holds `m·n` elements.
fn check_operands(
    m: usize,
    k: usize,
    n: usize,
    (a, rsa, csa): (&[f32], usize, usize),
    (b, rsb, csb): (&[f32], usize, usize),
    out: &[f32],
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, k, rsa, csa) < a.len() && last(k, n, rsb, csb) < b.len() && out.len() >= m * n);
}

/// `matrixmultiply::sgemm` writing `out` with row stride `ldc`.
///
/// # Safety
/// A, B and `out` must address only memory of their allocations, and nobody else may
/// touch the elements written.
unsafe fn sgemm_raw(
    m: usize,
    k: usize,
    n: usize,
    (a, rsa, csa): (*const f32, usize, usize),
    (b, rsb, csb): (*const f32, usize, usize),
    out: *mut f32,
    ldc: usize,
) {
    // SAFETY: as the caller promises.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a,
            rsa as isize,
            csa as isize,
            b,
            rsb as isize,
            csb as isize,
            0.0,
            out,
            ldc as isize,
            1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splitting a product over threads gives the same bits as one call, for every
    /// transpose combination and ragged row counts.
    #[test]
    fn a_product_split_over_threads_has_the_same_bits() {
        // Rows split, and (m < n, two parts) columns split.
        for (m, k, n) in [
            (8, 3, 5),
            (37, 65, 19),
            (130, 784, 128),
            (32, 128, 512),
            (16, 40, 33),
            (20, 784, 128),
        ] {
            let a = crate::rng::uniform(1, m * k, -1.0, 1.0);
            let b = crate::rng::uniform(2, k * n, -1.0, 1.0);
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
                let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
                let run = |parts| {
                    let mut out = vec![f32::NAN; m * n];
                    sgemm_parts(parts, m, k, n, (&a, rsa, csa), (&b, rsb, csb), &mut out);
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                let one = run(1);
                for parts in [2, 3, 5] {
                    assert_eq!(run(parts), one, "{m}x{k}x{n} ta {ta} tb {tb}, {parts} parts");
                }
            }
        }
    }
}
