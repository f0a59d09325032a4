//! The size-dependent fast paths of the CPU backend, the planner and the GPU's
//! products, each with a switch that forces it on or off, so that a test can run a
//! whole layer or training step both ways, above and below the threshold, and demand
//! the same bits (or, where the sums are ordered differently by design, the
//! reference's values).
//!
//! A switch holds on the thread that sets it, until its guard is dropped: tests on
//! other threads keep the automatic choice. Decisions are made on the thread that
//! runs the plan, and the helper thread runs each half it is handed under the
//! settings of the thread that handed it over, so a forced choice reaches every
//! kernel of that thread's plans. [`taken`] counts, per thread, how often each path
//! was taken, so that a test can show it exercised the path it forced.
//!
//! The GPU backend's timed variants (GEMM tiles, one launch or one per parameter)
//! have their switch on the device, `Device::debug_kernel_variant`, and its subgroup
//! reductions theirs in `GpuOptions::disable_subgroups`.

use std::cell::Cell;

/// A size-dependent fast path, named after what it does; each variant's doc says
/// where it is taken when not forced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FastPath {
    /// A recurrent cell's CPU pass (LSTM, GRU, forward and backward) over two
    /// threads, half of the batch rows each: from 4,096 batch × hidden units.
    CellSplit,
    /// A CPU product in at least two parts on two threads: from 4 MFLOP (2·m·n·k),
    /// its bias and activation epilogue in two halves of its rows with it;
    /// a batch of products (attention's, `torch.matmul`'s), the fused attention's
    /// slices and a convolution's images are dealt out whole, half to each thread,
    /// from 4 MFLOP in all.
    GemmSplit,
    /// A two-part CPU product split by columns instead of rows: when it is wider than
    /// tall (m < n) and n ≥ 32. Forced on, every split product with n ≥ 32 is.
    GemmColumns,
    /// A CPU product in more than two row blocks on scoped threads: from 128 MFLOP on
    /// a machine with more than two cores. Forced on: four blocks, however many cores.
    GemmThreads,
    /// The AVX2 builds of the CPU loops (elementwise, fused, epilogues, optimizers,
    /// recurrent cells, column sums): wherever the CPU has AVX2. Forced off: the plain
    /// x86-64 builds (whatever [`FastPath::Simd512`] says).
    Simd,
    /// Autograd's sum of gradient products of one form (an unrolled RNN's weight
    /// gradients) as one product over the joined inner dimensions: wherever a node
    /// has several such terms. Forced off: one product per term, added in order
    /// (other sums, other rounding).
    JoinedGradients,
    /// The planner's fusion of elementwise chains into one kernel: on every plan but
    /// those of the debugging modes.
    Fusion,
    /// GPU: a product whose output is too small to fill the GPU but whose K is long
    /// (K ≥ 512, fewer than 16 tiles of 64 × 64) computed in K slices, then summed
    /// (other sums, other rounding). Forced on: at least two slices wherever K > 16.
    /// Decided when a plan is compiled: clear the device's plan cache after forcing.
    SplitK,
    /// GPU: a product's operands loaded and its output stored four words at a time
    /// wherever their rows are a multiple of 4 long. Forced off: one word at a time
    /// (same bits). Decided when a plan is compiled, as [`FastPath::SplitK`].
    Vec4,
    /// Scaled-dot-product attention as one fused op (`ops/attention.rs`: an online
    /// softmax, the weights recomputed in the backward) instead of products, a
    /// softmax and a mask composed: on the CPU backend wherever it applies — no
    /// dropout, q, k and v with the same leading axes, heads of at most 128, a mask
    /// that is not trained (b16 h4 T256 d256 forward + backward: 0.7× the composed
    /// time). On the GPU only when forced on (its kernels are not yet tuned on a real
    /// GPU; on lavapipe they are slower than the composed products). Forced off: the
    /// composed ops (other sums, other rounding).
    FusedAttention,
    /// An optimizer's CPU update of one parameter over two threads, half of its words
    /// each: from 32,768 words (each word's update is independent: the same bits).
    UpdateSplit,
    /// A CPU product whose B is an input of the plan that no launch before the
    /// updates writes (a parameter, or a batch made on the host), with at most 128
    /// rows of A, where B is read by two products of the plan or more (an unrolled
    /// RNN's recurrent weight, at every time step) or read transposed (a layer's
    /// weight in `x·Wᵀ`): B packed once per plan run and every such product computed
    /// from the packed panels (`backend/cpu/packed_gemm.rs`), on an x86-64 CPU with
    /// AVX-512, or AVX2 and FMA. Forced on: every plain f32 product whose B is such an
    /// input, whatever its rows, on any CPU. Each output is one fma chain over k in
    /// order (other sums, other rounding than `matrixmultiply`'s).
    PackedOperand,
    /// A gather's CPU pass (`index_select`, `fit`'s batches picked from a data set on
    /// the device, embedding lookups) over two threads, half of the output rows each:
    /// from 16,384 output words (each row a copy: the same bits).
    GatherSplit,
    /// The planner's views: a narrow along the leading axes and every entry of an
    /// unbind along them (an unrolled RNN's time steps, their gradients' parts) bind
    /// their input's buffer at an offset instead of copying their range out of it,
    /// wherever the offset is a multiple of the backend's alignment (any on the CPU,
    /// the adapter's `min_storage_buffer_offset_alignment` on a GPU). Forced off: a
    /// copy each (the same bits). Part of the plan's cache key.
    Views,
    /// A column sum or maximum of one outer block on the CPU (a bias gradient's
    /// column sum) over two threads, half of the columns each: from 65,536 words read
    /// and 32 columns (each column reduced in the same order: the same bits).
    ReduceSplit,
    /// Within [`FastPath::Simd`], the AVX-512 builds of the CPU loops (16 lanes
    /// instead of 8: an LSTM cell's sigmoids and tanhs in 0.6× the time on a Zen 4
    /// core) and the AVX-512 register tile of packed products: wherever the CPU has
    /// AVX-512F and the crate was built by Rust 1.89 or later. Forced off: the AVX2
    /// builds and tile (the same bits: no build contracts a multiply and an add).
    Simd512,
}

const PATHS: usize = 16;

impl FastPath {
    /// Every fast path.
    pub const ALL: [FastPath; PATHS] = [
        FastPath::CellSplit,
        FastPath::GemmSplit,
        FastPath::GemmColumns,
        FastPath::GemmThreads,
        FastPath::Simd,
        FastPath::JoinedGradients,
        FastPath::Fusion,
        FastPath::SplitK,
        FastPath::Vec4,
        FastPath::FusedAttention,
        FastPath::UpdateSplit,
        FastPath::PackedOperand,
        FastPath::GatherSplit,
        FastPath::Views,
        FastPath::ReduceSplit,
        FastPath::Simd512,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

thread_local! {
    static FORCED: Cell<[Option<bool>; PATHS]> = const { Cell::new([None; PATHS]) };
    // One cell per path: counting a choice touches one word (the SIMD dispatch of
    // every CPU loop counts).
    static TAKEN: [Cell<u64>; PATHS] = const { [const { Cell::new(0) }; PATHS] };
}

/// Forces `path` on or off on this thread until the returned guard is dropped (then
/// the previous setting is back).
///
/// ```
/// use wgnn::fast_path::{self, FastPath};
/// let _plain = fast_path::force(FastPath::CellSplit, false);
/// // LSTM and GRU cells run on one thread here, whatever their size.
/// ```
#[must_use = "the switch holds only while the guard lives"]
pub fn force(path: FastPath, on: bool) -> Forced {
    let before = set(path, Some(on));
    Forced { path, before }
}

/// Restores a [`force`]d fast path's previous setting when dropped.
#[derive(Debug)]
pub struct Forced {
    path: FastPath,
    before: Option<bool>,
}

impl Drop for Forced {
    fn drop(&mut self) {
        set(self.path, self.before);
    }
}

fn set(path: FastPath, on: Option<bool>) -> Option<bool> {
    FORCED.with(|f| {
        let mut all = f.get();
        let before = std::mem::replace(&mut all[path.index()], on);
        f.set(all);
        before
    })
}

/// The setting of `path` on this thread: `None` when the automatic choice holds.
pub fn forced(path: FastPath) -> Option<bool> {
    FORCED.with(|f| f.get()[path.index()])
}

/// This thread's settings, for a thread that runs part of its work.
pub(crate) fn settings() -> Settings {
    Settings(FORCED.with(Cell::get))
}

/// The settings of one thread ([`settings`]), to run work of that thread elsewhere.
#[derive(Clone, Copy)]
pub(crate) struct Settings([Option<bool>; PATHS]);

impl Settings {
    /// Runs `f` on this thread under these settings, then restores this thread's.
    pub(crate) fn scope<T>(self, f: impl FnOnce() -> T) -> T {
        struct Restore([Option<bool>; PATHS]);
        impl Drop for Restore {
            fn drop(&mut self) {
                FORCED.with(|f| f.set(self.0));
            }
        }
        let _restore = Restore(FORCED.with(|f| f.replace(self.0)));
        f()
    }
}

/// How often `path` was taken on this thread so far.
pub fn taken(path: FastPath) -> u64 {
    TAKEN.with(|t| t[path.index()].get())
}

/// Whether to take `path`, given the automatic choice `auto`; counts it when taken.
pub(crate) fn choose(path: FastPath, auto: bool) -> bool {
    let on = forced(path).unwrap_or(auto);
    if on {
        TAKEN.with(|t| t[path.index()].set(t[path.index()].get() + 1));
    }
    on
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_path_holds_until_its_guard_drops_and_on_this_thread_only() {
        assert!(choose(FastPath::Fusion, true));
        {
            let _off = force(FastPath::Fusion, false);
            assert!(!choose(FastPath::Fusion, true));
            {
                let _on = force(FastPath::Fusion, true);
                assert!(choose(FastPath::Fusion, false));
            }
            assert!(!choose(FastPath::Fusion, true));
            std::thread::spawn(|| assert!(choose(FastPath::Fusion, true)))
                .join()
                .unwrap();
        }
        assert_eq!(forced(FastPath::Fusion), None);
        assert_eq!(taken(FastPath::Fusion), 2);
    }
}
