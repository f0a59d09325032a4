//! A second thread for work split in two that is too short for spawning a thread
//! (~50 µs here) or waking a sleeping pool: [`join`] hands one half to a helper
//! thread that spins for a while after each job, so that the products of one
//! training step (a few hundred µs apart) find it awake, and parks when no job
//! comes. One helper per process, made on first use; a second caller while it is
//! busy (tests on several threads, two devices) runs both halves itself.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long the helper waits for the next job, spinning, before it parks: longer than
/// the gap between the products of a step, short enough not to matter to an idle
/// process.
const SPIN: Duration = Duration::from_millis(2);

/// One job: the half to run, and what the helper reports back.
struct Task<'a> {
    run: &'a (dyn Fn() + Sync),
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    done: AtomicBool,
}

struct Helper {
    /// The task handed over (a `*const Task` with its lifetime erased; the caller
    /// waits for `done` before the task goes out of scope), or null.
    slot: AtomicPtr<()>,
    /// True while the helper is parked or about to park.
    sleeping: AtomicBool,
    /// Held by the caller whose job the helper has.
    busy: Mutex<()>,
    thread: Thread,
}

fn helper() -> Option<&'static Helper> {
    static HELPER: OnceLock<Option<&'static Helper>> = OnceLock::new();
    *HELPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<&'static Helper>();
        thread::Builder::new()
            .name("wgnn-helper".into())
            .spawn(move || {
                let helper: &'static Helper = Box::leak(Box::new(Helper {
                    slot: AtomicPtr::new(ptr::null_mut()),
                    sleeping: AtomicBool::new(false),
                    busy: Mutex::new(()),
                    thread: thread::current(),
                }));
                let _ = tx.send(helper);
                helper.serve();
            })
            .ok()?;
        rx.recv().ok()
    })
}

impl Helper {
    fn serve(&self) {
        loop {
            let task = self.next_task();
            // SAFETY: the caller of `join` keeps the task alive until `done` is set.
            let task = unsafe { &*(task as *const Task) };
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (task.run)())) {
                *task.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(payload);
            }
            task.done.store(true, SeqCst);
        }
    }

    /// Spins for [`SPIN`], then parks until a caller hands over a task.
    fn next_task(&self) -> *mut () {
        loop {
            let start = Instant::now();
            let mut spins = 0u32;
            while !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                // Read-only while waiting: the line stays shared, no write per spin.
                if !self.slot.load(SeqCst).is_null() {
                    return self.slot.swap(ptr::null_mut(), SeqCst);
                }
                spins = spins.wrapping_add(1);
                std::hint::spin_loop();
            }
            self.sleeping.store(true, SeqCst);
            // A caller that stored its task before `sleeping` was set does not
            // unpark: look once more before parking.
            let task = self.slot.swap(ptr::null_mut(), SeqCst);
            if task.is_null() {
                thread::park();
            }
            self.sleeping.store(false, SeqCst);
            if !task.is_null() {
                return task;
            }
        }
    }
}

/// Runs `first` and `second` at the same time, `first` on the helper thread, and
/// returns when both are done; a panic in either is resumed here after both ended.
/// Where there is no helper (wasm32, a thread that could not be made) or it is busy
/// with another caller's job, runs both on this thread.
pub(crate) fn join(first: impl FnOnce() + Send, second: impl FnOnce()) {
    let helper = helper().and_then(|h| h.busy.try_lock().ok().map(|busy| (h, busy)));
    let Some((helper, busy)) = helper else {
        first();
        return second();
    };
    let first = Mutex::new(Some(first));
    let run = || {
        if let Some(f) = first.lock().unwrap_or_else(|e| e.into_inner()).take() {
            f()
        }
    };
    let task = Task {
        run: &run,
        panic: Mutex::new(None),
        done: AtomicBool::new(false),
    };
    helper.slot.store(&task as *const Task as *mut (), SeqCst);
    if helper.sleeping.load(SeqCst) {
        helper.thread.unpark();
    }
    let mine = catch_unwind(AssertUnwindSafe(second));
    while !task.done.load(SeqCst) {
        std::hint::spin_loop();
    }
    drop(busy);
    if let Some(payload) = task.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        resume_unwind(payload);
    }
    if let Err(payload) = mine {
        resume_unwind(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_halves_run_and_see_their_borrows() {
        let mut halves = [vec![0u32; 1000], vec![0u32; 1000]];
        for round in 0..200u32 {
            let [a, b] = &mut halves;
            join(
                || a.iter_mut().for_each(|v| *v += round),
                || b.iter_mut().for_each(|v| *v += 2 * round),
            );
            if round == 100 {
                // Long enough for the helper to park: the next job must wake it.
                thread::sleep(SPIN * 2);
            }
        }
        let sum: u32 = (0..200).sum();
        assert!(halves[0].iter().all(|&v| v == sum) && halves[1].iter().all(|&v| v == 2 * sum));
    }

    #[test]
    fn a_panic_on_the_helper_reaches_the_caller_and_the_helper_survives() {
        let caught = catch_unwind(|| join(|| panic!("first half"), || ()));
        let payload = caught.expect_err("the helper's panic is resumed");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"first half"));
        let mut ran = false;
        join(|| (), || ran = true);
        let mut also = false;
        join(|| also = true, || ());
        assert!(ran && also);
    }
}
