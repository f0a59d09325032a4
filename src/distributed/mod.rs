//! Data-parallel training across processes and machines, Horovod-shaped, on MPI.
//!
//! Every process (a *rank*) holds a full replica of the model and trains on its own
//! shard of every batch. After the backward pass the gradients of all parameters are
//! packed into one contiguous buffer, summed over the ranks with one all-reduce and
//! divided by the number of ranks; then every rank applies the ordinary update. The
//! replicas start identical (rank 0's parameters are broadcast when the
//! [`DistributedOptimizer`] is made) and stay bit-identical, because every rank
//! applies the same bits.
//!
//! ```no_run
//! # #[cfg(feature = "mpi")] fn main() -> wgnn::Result<()> {
//! use wgnn::distributed::{self, DistributedOptimizer};
//! use wgnn::optim::{Adam, AdamConfig};
//! # use wgnn::{nn::{self, Linear, Module, Sequential}, train::{FitConfig, Loss}, Device};
//! let world = distributed::init()?; // under `mpirun -np N`; a single process is a world of 1
//! let dev = Device::best();
//! let net = Sequential::new().add(Linear::new(784, 128, &dev)).add(nn::Relu).add(Linear::new(128, 10, &dev));
//! let opt = DistributedOptimizer::new(Adam::new(net.parameters(), AdamConfig::default()), world.clone())?;
//! let mut model = net.compile(opt, Loss::CrossEntropy, &[])?;
//! let (x, y) = wgnn::data::load_mnist_csv_gz("data/mnist_5k.csv.gz")?.tensors(&dev)?; // every rank loads it all
//! // `fit` sees the distributed optimizer: each rank trains on its shard of every
//! // batch, `History` holds the global loss and metrics, rank 0 alone prints and
//! // writes checkpoints.
//! let history = model.fit(&x, &y, FitConfig { batch_size: 32, ..Default::default() })?;
//! # Ok(()) }
//! # #[cfg(not(feature = "mpi"))] fn main() {}
//! ```
//!
//! # Determinism
//! The sum over ranks is taken in rank order (0, 1, …, N−1) on every rank, from every
//! rank's gradients (read in shared memory or all-gathered with MPI), never in
//! whatever order a library's reduction tree happens to use. So every rank holds the
//! same bits after every step, and a run with N ranks gives the same bits every time
//! it is run. N ranks with batch `b` each
//! equal one process with batch `N·b` up to float rounding (a mean of N means instead
//! of one mean).
//!
//! # Cost
//! Per step, the packed gradients (4 bytes per parameter) are the only data that
//! cross between device and host: one download and one upload, counted in
//! [`crate::Device::stats`] (`bytes_downloaded`, `bytes_uploaded`), and one more
//! submit, because the update runs in a second plan after the all-reduce. The mean
//! is computed in one pass over the ranks' values and written into gradient tensors
//! the optimizer keeps from step to step (no allocation, no narrow copies in the
//! update's plan). Where every rank runs on one host, the values are exchanged
//! through an MPI shared-memory window (each rank writes its part once and reads the
//! others' in place; `World::set_shared_memory`); across hosts, MPI's all-gather
//! moves `(N−1)·4·P` bytes into each rank (for 2 ranks, what a ring all-reduce
//! moves). For 784-128-10 (101 770 parameters, 407 KB) an all-reduce takes about
//! 0.1 ms on two cores.
//!
//! Ranks that share a host share its cores: `init` limits each rank's CPU backend to
//! the host's cores divided by the ranks on it ([`crate::set_num_threads`], unless
//! the program set it first), so that no rank's helper thread spins on a core another
//! rank computes on.
//!
//! # Failure
//! A rank that dies (killed, crashed) makes `mpirun` stop every other rank and name
//! the one that died. A rank that panics, or whose distributed step failed, stops the
//! whole job with `MPI_Abort` and a message naming the rank and the error, instead of
//! leaving the others waiting forever in the next all-reduce; code of your own that
//! fails on one rank only should call `World::abort` (feature `mpi`). To continue, resume from the
//! last checkpoint: `FitConfig::resume_from`, with the same number of ranks.
//!
//! # Running
//! Build with the `mpi` feature (Open MPI or MPICH, and libclang, installed) and
//! start one process per GPU (or per machine on the CPU) with `mpirun`; see the
//! README's "Across processes and machines".

#[cfg(feature = "mpi")]
mod mpi;
mod optimizer;
#[cfg(feature = "mpi")]
mod shared_window;

#[cfg(feature = "mpi")]
pub use self::mpi::{init, World};
pub use optimizer::{broadcast_parameters, DistributedOptimizer};

use crate::Result;

/// The collective operations data-parallel training needs, over a fixed group of
/// processes (ranks `0..size`). `World` implements it on MPI (feature `mpi`);
/// anything else that can all-gather and broadcast bytes can too. Every rank must
/// call the same operations in the same order.
pub trait Collective {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Every rank's `mine`, in rank order, on every rank (lengths may differ).
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Every rank's `mine`, concatenated in rank order, on every rank; all ranks must
    /// give the same number of values (an error names a rank that did not). The
    /// default goes through [`Collective::all_gather_bytes`]; an implementation may
    /// gather straight into the result.
    fn all_gather_f32(&self, mine: &[f32]) -> Result<Vec<f32>> {
        let parts = self.all_gather_bytes(bytemuck::cast_slice(mine))?;
        let mut out = Vec::with_capacity(mine.len() * parts.len());
        for (rank, bytes) in parts.iter().enumerate() {
            let values = as_f32(bytes)?;
            if values.len() != mine.len() {
                return Err(out_of_step(rank, values.len(), mine.len()));
            }
            out.extend_from_slice(&values);
        }
        Ok(out)
    }
    /// Sums `values` elementwise over all ranks in rank order (0, 1, …), so every
    /// rank gets the same bits, run after run. The default gathers every rank's
    /// values ([`Collective::all_gather_f32`]) and adds them left to right; an
    /// implementation may reuse its buffers.
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<()> {
        let all = self.all_gather_f32(values)?;
        sum_in_rank_order(&all.chunks(values.len().max(1)).collect::<Vec<_>>(), values)
    }
    /// Gathers every rank's `mine` (all of one length) and hands them, in rank order,
    /// to `use_gathered` — without keeping them: an implementation may gather into
    /// memory it reuses from call to call (`World` reads the other ranks' values in
    /// place, in shared memory, where all ranks run on one host). The default goes
    /// through [`Collective::all_gather_f32`].
    fn all_gather_f32_with(&self, mine: &[f32], use_gathered: &mut dyn FnMut(&[&[f32]])) -> Result<()> {
        let all = self.all_gather_f32(mine)?;
        use_gathered(&all.chunks(mine.len().max(1)).collect::<Vec<_>>());
        Ok(())
    }
    /// Replaces `data` on every rank by `root`'s `data` (lengths may differ).
    fn broadcast_bytes(&self, data: &mut Vec<u8>, root: usize) -> Result<()>;
    /// Records that this rank failed in a way that leaves it out of step with the
    /// others (`reason` names how): later collectives must fail instead of waiting
    /// for ranks that will never match them. The default records nothing.
    fn poison(&self, reason: &str) {
        let _ = reason;
    }
}

/// Most f32 values all-gathered in one call: keeps every MPI count and displacement
/// within `i32` and the gathered copy at most 64 MiB per rank.
fn chunk_len(ranks: usize) -> usize {
    (1 << 24).min(i32::MAX as usize / 4 / ranks.max(1))
}

/// Sums `values` elementwise over all ranks, in rank order, so that every rank gets
/// the same bits, run after run.
pub fn all_reduce_sum(comm: &dyn Collective, values: &mut [f32]) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    for chunk in values.chunks_mut(chunk_len(comm.size())) {
        comm.all_reduce_sum_f32(chunk)?;
    }
    Ok(())
}

/// `mean` = the mean over the ranks of `values` (the same length): each value the sum
/// of every rank's in rank order divided by the number of ranks — the bits of
/// [`all_reduce_sum`] followed by a division — computed in one pass over the
/// gathered values (no summed copy, no division pass).
pub(crate) fn all_reduce_mean_into(comm: &dyn Collective, values: &[f32], mean: &mut [f32]) -> Result<()> {
    assert_eq!(values.len(), mean.len(), "all_reduce_mean_into: lengths differ");
    let ranks = comm.size() as f32;
    let step = chunk_len(comm.size());
    for (chunk, out) in values.chunks(step).zip(mean.chunks_mut(step)) {
        comm.all_gather_f32_with(chunk, &mut |parts| match parts {
            [a, b] => {
                for ((o, a), b) in out.iter_mut().zip(*a).zip(*b) {
                    *o = (a + b) / ranks;
                }
            }
            _ => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = parts[1..].iter().fold(parts[0][i], |sum, p| sum + p[i]) / ranks;
                }
            }
        })?;
    }
    Ok(())
}

/// The error for a rank that sent `got` values where this rank has `expected`.
pub(crate) fn out_of_step(rank: usize, got: usize, expected: usize) -> crate::Error {
    crate::Error::Distributed(format!(
        "rank {rank} sent {got} values, this rank has {expected}: the ranks are out of step"
    ))
}

/// `out = parts[0] + parts[1] + … ` element by element, left to right.
pub(crate) fn sum_in_rank_order(parts: &[&[f32]], out: &mut [f32]) -> Result<()> {
    if let Some((rank, p)) = parts.iter().enumerate().find(|(_, p)| p.len() != out.len()) {
        return Err(out_of_step(rank, p.len(), out.len()));
    }
    out.copy_from_slice(parts[0]);
    for p in &parts[1..] {
        for (o, v) in out.iter_mut().zip(p.iter()) {
            *o += v;
        }
    }
    Ok(())
}

/// The sum of every rank's `value`, exact.
pub(crate) fn all_reduce_sum_u64(comm: &dyn Collective, value: u64) -> Result<u64> {
    let all = comm.all_gather_bytes(&value.to_le_bytes())?;
    all.iter()
        .map(|b| {
            let bytes: [u8; 8] = b[..].try_into().map_err(|_| {
                crate::Error::Distributed(format!("all-reduce: a rank sent {} bytes for one u64", b.len()))
            })?;
            Ok(u64::from_le_bytes(bytes))
        })
        .sum()
}

/// Every rank's f32 values, in rank order.
pub fn all_gather(comm: &dyn Collective, mine: &[f32]) -> Result<Vec<Vec<f32>>> {
    comm.all_gather_bytes(bytemuck::cast_slice(mine))?
        .iter()
        .map(|b| as_f32(b).map(|v| v.into_owned()))
        .collect()
}

/// Replaces `values` on every rank by `root`'s (which must have the same length).
pub fn broadcast(comm: &dyn Collective, values: &mut [f32], root: usize) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut bytes = bytemuck::cast_slice::<f32, u8>(values).to_vec();
    comm.broadcast_bytes(&mut bytes, root)?;
    let theirs = as_f32(&bytes)?;
    if theirs.len() != values.len() {
        return Err(crate::Error::Distributed(format!(
            "broadcast: rank {root} sent {} values, rank {} expected {}",
            theirs.len(),
            comm.rank(),
            values.len()
        )));
    }
    values.copy_from_slice(&theirs);
    Ok(())
}

/// Bytes as f32 values (copied when unaligned).
fn as_f32(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [f32]>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(crate::Error::Distributed(format!(
            "received {} bytes, not a whole number of f32 values",
            bytes.len()
        )));
    }
    Ok(match bytemuck::try_cast_slice(bytes) {
        Ok(v) => std::borrow::Cow::Borrowed(v),
        Err(_) => std::borrow::Cow::Owned(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
    })
}

/// The rows `[start, end)` of `rows` that rank `rank` of `ranks` takes: equal
/// contiguous parts, the last `rows mod ranks` rows left out, so every rank gets a
/// batch of the same size.
pub(crate) fn shard_range(rows: usize, rank: usize, ranks: usize) -> (usize, usize) {
    let each = rows / ranks;
    (rank * each, (rank + 1) * each)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rank_order_sum_is_left_to_right() {
        // (1e8 − 1e8) + 1 is 1 in f32, 1e8 + (−1e8 + 1) is 0: the order shows.
        let (a, b, c) = ([1e8f32, 2.0], [-1e8f32, 3.0], [1.0f32, 4.0]);
        let mut out = [0.0f32; 2];
        sum_in_rank_order(&[&a, &b, &c], &mut out).unwrap();
        assert_eq!(out, [1.0, 9.0]);
        let err = sum_in_rank_order(&[&a, &b[..1]], &mut out).unwrap_err();
        assert!(err.to_string().contains("rank 1 sent 1 values"), "{err}");
    }

    #[test]
    fn shards_are_disjoint_equal_and_cover_all_but_the_remainder() {
        for rows in [1, 7, 32, 33] {
            for ranks in 1..5 {
                let parts: Vec<_> = (0..ranks).map(|r| shard_range(rows, r, ranks)).collect();
                let each = rows / ranks;
                for (r, &(s, e)) in parts.iter().enumerate() {
                    assert_eq!(e - s, each);
                    if r > 0 {
                        assert_eq!(s, parts[r - 1].1);
                    }
                }
                assert_eq!(parts.last().unwrap().1, rows - rows % ranks);
            }
        }
    }
}
