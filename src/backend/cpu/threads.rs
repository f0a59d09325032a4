//! How many threads the CPU backend's kernels may use at once: the machine's
//! parallelism unless set ([`set_num_threads`], PyTorch's `torch.set_num_threads`).
//! Data-parallel ranks that share a machine split its cores between them
//! (`distributed::init` sets this to the cores per rank on the host), so that no
//! rank's helper thread spins on a core another rank's kernels need.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// The limit set, or 0 for the machine's parallelism.
static LIMIT: AtomicUsize = AtomicUsize::new(0);
/// Whether the program set the limit itself (then `distributed::init` leaves it).
static CHOSEN: AtomicBool = AtomicBool::new(false);

/// The machine's available parallelism, read once (it reads cgroup files on Linux:
/// too slow to ask for every product); one in a browser tab (wasm32 without atomics
/// has no threads).
pub(crate) fn parallelism() -> usize {
    if cfg!(target_arch = "wasm32") {
        return 1;
    }
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The threads the CPU backend's kernels may use at once (the calling thread
/// included): the machine's available parallelism, or what [`set_num_threads`] set.
/// At 1 every CPU kernel runs on the thread that runs the plan and the helper thread
/// is never woken. The bits of every result are the same whatever it is.
pub fn get_num_threads() -> usize {
    match LIMIT.load(Relaxed) {
        0 => parallelism(),
        n => n,
    }
}

/// Limits the threads the CPU backend's kernels use at once, for the whole process
/// (as `torch.set_num_threads`); 0 restores the machine's parallelism. Values above
/// the machine's parallelism are allowed (products split into more row blocks).
/// Results have the same bits whatever the limit; only the time changes.
pub fn set_num_threads(threads: usize) {
    LIMIT.store(threads, Relaxed);
    CHOSEN.store(threads != 0, Relaxed);
}

/// Sets the limit unless the program chose one itself (for `distributed::init`).
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
pub(crate) fn set_default_num_threads(threads: usize) {
    if !CHOSEN.load(Relaxed) {
        LIMIT.store(threads, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One thread or the machine's: the same bits for a product large enough to be
    /// split (and a split forced on, which then runs both halves on this thread).
    #[test]
    fn a_product_has_the_same_bits_on_one_thread() {
        use crate::fast_path::{self, FastPath};
        let (m, k, n) = (256, 784, 128); // 51 MFLOP: split where there are threads
        let a = crate::rng::uniform(3, m * k, -1.0, 1.0);
        let b = crate::rng::uniform(4, k * n, -1.0, 1.0);
        let product = || {
            let mut out = vec![f32::NAN; m * n];
            super::super::sgemm::sgemm(m, k, n, false, false, &a, &b, &mut out);
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let machine = product();
        set_num_threads(1);
        assert_eq!(get_num_threads(), 1);
        let one = product();
        let forced = {
            let _split = fast_path::force(FastPath::GemmSplit, true);
            product()
        };
        set_num_threads(0);
        assert_eq!(get_num_threads(), parallelism());
        assert_eq!(one, machine, "one thread");
        assert_eq!(forced, machine, "a split forced on one thread");
    }
}
