//! [`SharedWindow`]: an MPI-3 shared-memory window over ranks that all run on one
//! host, through which they exchange f32 values without copying them through MPI:
//! each rank writes its part into its own segment, and after a barrier every rank
//! reads every part where it lies.

use std::ffi::{c_int, c_void};
use std::ptr;

use mpi::ffi;
use mpi::raw::AsRaw;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::{Error, Result};

/// One segment of `capacity` f32 values per rank, readable and writable by every
/// rank of the communicator it was made on (all on one host).
pub(super) struct SharedWindow {
    window: ffi::MPI_Win,
    /// Every rank's segment, in rank order.
    segments: Vec<*mut f32>,
    /// Values per segment.
    pub capacity: usize,
}

impl SharedWindow {
    /// Allocates the window (a collective call: every rank of `comm`, with the same
    /// `capacity`) and opens a passive access epoch on it for its whole life.
    pub fn new(comm: &SimpleCommunicator, capacity: usize) -> Result<SharedWindow> {
        let capacity = capacity.max(1);
        let fail = |what: &str, code: c_int| Error::Distributed(format!("{what} failed with MPI error {code}"));
        let mut base: *mut f32 = ptr::null_mut();
        // SAFETY: MPI_Win is a handle MPI fills in; `base` receives a pointer.
        let mut window: ffi::MPI_Win = unsafe { std::mem::zeroed() };
        // SAFETY: arguments as MPI-3 §11.2.3 specifies; the size fits (checked by the caller's count()).
        let code = unsafe {
            ffi::MPI_Win_allocate_shared(
                (capacity * 4) as ffi::MPI_Aint,
                4,
                ffi::RSMPI_INFO_NULL,
                comm.as_raw(),
                &mut base as *mut *mut f32 as *mut c_void,
                &mut window,
            )
        };
        if code != 0 {
            return Err(fail("MPI_Win_allocate_shared", code));
        }
        // SAFETY: `window` was just allocated.
        let code = unsafe { ffi::MPI_Win_lock_all(ffi::MPI_MODE_NOCHECK as c_int, window) };
        if code != 0 {
            return Err(fail("MPI_Win_lock_all", code));
        }
        let mut segments = Vec::with_capacity(comm.size() as usize);
        for rank in 0..comm.size() {
            let (mut size, mut unit, mut segment): (ffi::MPI_Aint, c_int, *mut f32) = (0, 0, ptr::null_mut());
            // SAFETY: `rank` is a rank of the window's group.
            let code = unsafe {
                ffi::MPI_Win_shared_query(
                    window,
                    rank,
                    &mut size,
                    &mut unit,
                    &mut segment as *mut *mut f32 as *mut c_void,
                )
            };
            if code != 0 || segment.is_null() || (size as usize) < capacity * 4 {
                return Err(fail("MPI_Win_shared_query", code));
            }
            segments.push(segment);
        }
        Ok(SharedWindow {
            window,
            segments,
            capacity,
        })
    }

    /// Writes `mine` into `rank`'s segment, waits (`comm`'s barrier) until every rank
    /// has written its part, and returns every rank's first `mine.len()` values. The
    /// caller must make sure no rank still reads the window's previous values (every
    /// rank has entered this exchange: e.g. a collective call just before it), and
    /// must not write again while the slices live.
    pub fn exchange(&mut self, comm: &SimpleCommunicator, rank: usize, mine: &[f32]) -> Vec<&[f32]> {
        assert!(
            mine.len() <= self.capacity,
            "a shared window of {} values was given {}",
            self.capacity,
            mine.len()
        );
        // SAFETY: this rank's segment holds `capacity` values and only this rank writes it.
        unsafe { std::slice::from_raw_parts_mut(self.segments[rank], mine.len()) }.copy_from_slice(mine);
        // SAFETY: the window is locked (lock_all) for its whole life.
        unsafe { ffi::MPI_Win_sync(self.window) };
        comm.barrier();
        // SAFETY: as above.
        unsafe { ffi::MPI_Win_sync(self.window) };
        self.segments
            .iter()
            // SAFETY: every segment holds `capacity` values, written before the barrier
            // and not written again until the next exchange (`&mut self`).
            .map(|&segment| unsafe { std::slice::from_raw_parts(segment as *const f32, mine.len()) })
            .collect()
    }
}

impl Drop for SharedWindow {
    /// Frees the window: a collective call, which every rank reaches when its world
    /// ends or the window grows.
    fn drop(&mut self) {
        // SAFETY: the window is live and locked; nothing reads it after this.
        unsafe {
            ffi::MPI_Win_unlock_all(self.window);
            ffi::MPI_Win_free(&mut self.window);
        }
    }
}
