//! [`World`]: the MPI processes of a job (`MPI_COMM_WORLD`), as a [`Collective`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

use super::shared_window::SharedWindow;
use super::Collective;
use crate::{Error, Result};

/// Initializes MPI and returns the world: every process `mpirun` started, or this
/// process alone (a world of 1) when it was started without `mpirun`. MPI can be
/// initialized once per process: a second call is an error.
///
/// Ranks that share a machine share its cores: unless the program called
/// [`crate::set_num_threads`] first, each rank's CPU backend is limited to the host's
/// cores divided by the ranks on it (at least one), so that two ranks on two cores
/// run one thread each instead of four threads fighting for two cores.
pub fn init() -> Result<World> {
    let universe = mpi::initialize()
        .ok_or_else(|| Error::Distributed("init: MPI is already initialized in this process".into()))?;
    let comm = universe.world();
    let on_host = comm.split_shared(comm.rank()).size().max(1) as usize;
    let cores = crate::backend::cpu::threads::parallelism();
    crate::backend::cpu::threads::set_default_num_threads((cores / on_host).max(1));
    Ok(World(Rc::new(Inner {
        rank: comm.rank() as usize,
        size: comm.size() as usize,
        on_one_host: on_host == comm.size() as usize,
        comm,
        failure: RefCell::new(None),
        gathered: RefCell::new(Vec::new()),
        sums: RefCell::new(Vec::new()),
        shared_memory: Cell::new(true),
        window: RefCell::new(None),
        _universe: Some(universe),
    })))
}

/// The processes of an MPI job. Cheap to clone (all clones are the same world).
/// Dropping the last clone finalizes MPI, except after a panic or a failed
/// distributed step on this rank: then it stops the whole job (`MPI_Abort`) with a
/// message naming the rank, because the other ranks would wait for it forever.
#[derive(Clone)]
pub struct World(Rc<Inner>);

struct Inner {
    rank: usize,
    size: usize,
    comm: SimpleCommunicator,
    /// Why this rank is out of step with the others, once it is.
    failure: RefCell<Option<String>>,
    /// The gathered values of the last all-reduce, kept so that every step does not
    /// allocate (and fault in) a fresh buffer.
    gathered: RefCell<Vec<f32>>,
    /// The sums of the last `all_reduce_sum_f32`, kept for the same reason.
    sums: RefCell<Vec<f32>>,
    /// Whether every rank runs on this host (so they can share memory).
    on_one_host: bool,
    /// Whether value exchanges go through a shared-memory window where they can.
    shared_memory: Cell<bool>,
    /// The shared-memory window, once an exchange made it (freed before MPI is
    /// finalized: declared before `_universe`).
    window: RefCell<Option<SharedWindow>>,
    /// Finalizes MPI when dropped (after `comm`).
    _universe: Option<Universe>,
}

impl World {
    /// This process's rank, `0..size()`.
    pub fn rank(&self) -> usize {
        self.0.rank
    }

    /// The number of processes.
    pub fn size(&self) -> usize {
        self.0.size
    }

    /// The host this rank runs on.
    pub fn processor_name(&self) -> String {
        mpi::environment::processor_name().unwrap_or_else(|_| "?".into())
    }

    /// Waits until every rank has called it. Sleeps between checks, so waiting ranks
    /// leave the CPU to working ones (MPI's own barrier spins).
    pub fn barrier(&self) -> Result<()> {
        self.check()?;
        let mut request = self.0.comm.immediate_barrier();
        loop {
            match request.test() {
                Ok(_) => return Ok(()),
                Err(pending) => request = pending,
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops every rank of the job: prints `rank r of n failed: {error}` on
    /// standard error and calls `MPI_Abort`. Call it when this rank fails in code of
    /// your own while the others go on, so they do not wait for it forever.
    pub fn abort(&self, error: &dyn std::fmt::Display) -> ! {
        eprintln!(
            "wgnn: rank {} of {} failed: {error}; stopping every rank (MPI_Abort). Resume from the last checkpoint.",
            self.rank(),
            self.size()
        );
        stop_job(&self.0.comm)
    }

    /// Whether exchanges of f32 values (the gradients' all-reduce) between ranks that
    /// all run on one host go through an MPI shared-memory window — every rank writes
    /// its values once and reads the others' in place — (true, the default) or
    /// through MPI's all-gather, which copies them (false; always so when the ranks
    /// span hosts). The sums are taken in rank order either way: the same bits. Every
    /// rank must call it, with the same value, between the same collectives: the next
    /// exchange fails on every rank, naming two that disagree, if they do not.
    pub fn set_shared_memory(&self, on: bool) {
        self.0.shared_memory.set(on);
    }

    /// Whether exchanges go through shared memory (see [`World::set_shared_memory`]):
    /// set so, and every rank on this host.
    pub fn shares_memory(&self) -> bool {
        self.0.shared_memory.get() && self.0.on_one_host
    }

    /// Checks that every rank gives `len` values and takes the same way
    /// ([`World::shares_memory`]) — one small all-gather, which also means every rank
    /// has finished with the values of the last exchange.
    fn agree_length(&self, len: usize) -> Result<()> {
        self.check()?;
        let mine = [len as u64, u64::from(self.shares_memory())];
        let mut all = vec![0u64; 2 * self.size()];
        self.0.comm.all_gather_into(&mine[..], &mut all[..]);
        for (rank, theirs) in all.chunks(2).enumerate() {
            if theirs[0] != mine[0] {
                return Err(super::out_of_step(rank, theirs[0] as usize, len));
            }
            if theirs[1] != mine[1] {
                return Err(Error::Distributed(format!(
                    "rank {rank} exchanges values {} and rank {} {}: call World::set_shared_memory with the same value on every rank",
                    if theirs[1] == 1 { "in shared memory" } else { "by all-gather" },
                    self.rank(),
                    if mine[1] == 1 { "in shared memory" } else { "by all-gather" },
                )));
            }
        }
        count(len * 4, "an all-gather part").map(|_| ())
    }

    /// Every rank's `mine` (all of one length, checked first), in rank order, handed
    /// to `use_parts`: read in place from the shared-memory window where the ranks
    /// share memory, else all-gathered into the kept buffer.
    fn exchange<T>(&self, mine: &[f32], use_parts: impl FnOnce(&[&[f32]]) -> T) -> Result<T> {
        self.agree_length(mine.len())?;
        if self.shares_memory() {
            let mut window = self.0.window.borrow_mut();
            if window.as_ref().is_none_or(|w| w.capacity < mine.len()) {
                *window = None; // every rank frees it: the lengths agreed
                *window = Some(SharedWindow::new(&self.0.comm, mine.len().next_power_of_two())?);
            }
            let window = window.as_mut().expect("made above");
            return Ok(use_parts(&window.exchange(&self.0.comm, self.rank(), mine)));
        }
        let mut all = self.0.gathered.borrow_mut();
        all.resize(mine.len() * self.size(), 0.0);
        self.0.comm.all_gather_into(mine, &mut all[..]);
        Ok(use_parts(&all.chunks(mine.len().max(1)).collect::<Vec<_>>()))
    }

    fn check(&self) -> Result<()> {
        match &*self.0.failure.borrow() {
            Some(why) => Err(Error::Distributed(format!(
                "rank {} cannot take part in more collectives: {why}",
                self.rank()
            ))),
            None => Ok(()),
        }
    }
}

fn count(n: usize, what: &str) -> Result<Count> {
    Count::try_from(n).map_err(|_| Error::Distributed(format!("{what} of {n} bytes is over MPI's limit of 2^31 − 1")))
}

impl Collective for World {
    fn rank(&self) -> usize {
        self.0.rank
    }

    fn size(&self) -> usize {
        self.0.size
    }

    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.check()?;
        let comm = &self.0.comm;
        let mut lengths = vec![0u64; self.size()];
        comm.all_gather_into(&(mine.len() as u64), &mut lengths[..]);
        let counts = lengths
            .iter()
            .map(|&n| count(n as usize, "an all-gather part"))
            .collect::<Result<Vec<_>>>()?;
        let total: usize = lengths.iter().map(|&n| n as usize).sum();
        let mut displacements = Vec::with_capacity(counts.len());
        let mut offset = 0usize;
        for &n in &lengths {
            displacements.push(count(offset, "an all-gather")?);
            offset += n as usize;
        }
        count(total, "an all-gather")?;
        let mut all = vec![0u8; total];
        {
            let mut parts = PartitionMut::new(&mut all[..], &counts[..], &displacements[..]);
            comm.all_gather_varcount_into(mine, &mut parts);
        }
        let mut out = Vec::with_capacity(self.size());
        let mut rest = &all[..];
        for &n in &lengths {
            let (part, tail) = rest.split_at(n as usize);
            out.push(part.to_vec());
            rest = tail;
        }
        Ok(out)
    }

    fn all_gather_f32(&self, mine: &[f32]) -> Result<Vec<f32>> {
        self.exchange(mine, |parts| parts.concat())
    }

    fn all_gather_f32_with(&self, mine: &[f32], use_gathered: &mut dyn FnMut(&[&[f32]])) -> Result<()> {
        self.exchange(mine, use_gathered)
    }

    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<()> {
        let mut sums = self.0.sums.borrow_mut();
        sums.resize(values.len(), 0.0);
        self.exchange(values, |parts| super::sum_in_rank_order(parts, &mut sums))??;
        values.copy_from_slice(&sums);
        Ok(())
    }

    fn broadcast_bytes(&self, data: &mut Vec<u8>, root: usize) -> Result<()> {
        self.check()?;
        if root >= self.size() {
            return Err(Error::Distributed(format!(
                "broadcast: root {root} is not a rank of a world of {}",
                self.size()
            )));
        }
        let process = self.0.comm.process_at_rank(root as i32);
        let mut length = data.len() as u64;
        process.broadcast_into(&mut length);
        count(length as usize, "a broadcast")?;
        data.resize(length as usize, 0);
        process.broadcast_into(&mut data[..]);
        Ok(())
    }

    fn poison(&self, reason: &str) {
        self.0.failure.borrow_mut().get_or_insert_with(|| reason.to_string());
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let why = if std::thread::panicking() {
            Some("it panicked".to_string())
        } else {
            self.failure.borrow_mut().take()
        };
        if let Some(why) = why {
            eprintln!(
                "wgnn: rank {} of {} failed: {why}; stopping every rank (MPI_Abort) instead of leaving them waiting. Resume from the last checkpoint.",
                self.rank, self.size
            );
            stop_job(&self.comm);
        }
    }
}

/// `MPI_Abort` after a short pause, so that `mpirun` forwards the message just
/// printed before it tears the job down.
fn stop_job(comm: &SimpleCommunicator) -> ! {
    std::thread::sleep(Duration::from_millis(300));
    comm.abort(1)
}
