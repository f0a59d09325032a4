//! A second thread for work split in two that is too short for spawning a thread
//! (~50 µs here) or waking a sleeping pool (the products of a step, and through
//! [`join_rows`] the recurrent cells): [`join`] hands one half to a helper
//! thread that spins for a while after each job, so that the products of one
//! training step (a few hundred µs apart) find it awake, and parks when no job
//! comes. One helper per process, made on first use; a second caller while it is
//! busy (tests on several threads, two devices) runs both halves itself. No unwind is
//! caught: a panic in the helper's half (a bug) ends the helper, is reported to the
//! caller as a panic of its own, and later calls run both halves on their thread.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long the helper waits for the next job, spinning, before it parks: longer than
/// the gap between the products of a step, short enough not to matter to an idle
/// process.
const SPIN: Duration = Duration::from_millis(2);

/// One job: the half to run, and what the helper reports back.
struct Task<'a> {
    run: &'a (dyn Fn() + Sync),
    panicked: AtomicBool,
    done: AtomicBool,
}

/// Sets the task's `done` when the helper's half ends, also when it unwinds (then
/// after marking the task panicked and the helper gone).
struct Finish<'a>(&'a Task<'a>, &'a Helper);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.panicked.store(true, SeqCst);
            self.1.alive.store(false, SeqCst);
        }
        self.0.done.store(true, SeqCst);
    }
}

/// Waits for the helper's half when the caller's half ends, also when it unwinds:
/// the helper's half borrows from the caller's frame.
struct AwaitHelper<'a>(&'a Task<'a>);

impl Drop for AwaitHelper<'_> {
    fn drop(&mut self) {
        while !self.0.done.load(SeqCst) {
            std::hint::spin_loop();
        }
    }
}

struct Helper {
    /// The task handed over (a `*const Task` with its lifetime erased; the caller
    /// waits for `done` before the task goes out of scope), or null.
    slot: AtomicPtr<()>,
    /// True while the helper is parked or about to park.
    sleeping: AtomicBool,
    /// Held by the caller whose job the helper has.
    busy: Mutex<()>,
    /// False once a job panicked on the helper (its thread ended).
    alive: AtomicBool,
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
                    alive: AtomicBool::new(true),
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
            let finish = Finish(task, self);
            (task.run)();
            drop(finish);
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
/// returns when both are done (also when either panics: this thread unwinds only
/// after the helper's half ended). Where there is no helper (wasm32, a thread that
/// could not be made, one that panicked), it is busy with another caller's job, or
/// the process limits the CPU backend to one thread (`wgnn::set_num_threads`), runs
/// both on this thread.
pub(crate) fn join(first: impl FnOnce() + Send, second: impl FnOnce()) {
    let helper = (super::threads::get_num_threads() > 1)
        .then(helper)
        .flatten()
        .filter(|h| h.alive.load(SeqCst))
        .and_then(|h| match h.busy.try_lock() {
            Ok(busy) => Some((h, busy)),
            // A caller whose own half panicked left it poisoned; the helper is fine.
            Err(TryLockError::Poisoned(poisoned)) => Some((h, poisoned.into_inner())),
            Err(TryLockError::WouldBlock) => None,
        });
    let Some((helper, busy)) = helper else {
        first();
        return second();
    };
    let first = Mutex::new(Some(first));
    // The helper's half runs under this thread's fast-path switches.
    let settings = crate::fast_path::settings();
    let run = || {
        if let Some(f) = first.lock().unwrap_or_else(|e| e.into_inner()).take() {
            settings.scope(f)
        }
    };
    let task = Task {
        run: &run,
        panicked: AtomicBool::new(false),
        done: AtomicBool::new(false),
    };
    helper.slot.store(&task as *const Task as *mut (), SeqCst);
    if helper.sleeping.load(SeqCst) {
        helper.thread.unpark();
    }
    let await_helper = AwaitHelper(&task);
    second();
    drop(await_helper);
    drop(busy);
    assert!(
        !task.panicked.load(SeqCst),
        "the half of the work run on wgnn's helper thread panicked (its message is above)"
    );
}

/// Most slices [`join_rows`] splits: inputs and outputs each.
const MAX_SLICES: usize = 8;

/// Runs a row-wise kernel pass in two halves over `rows` rows, the second on the
/// helper thread: `pass(rows, inputs, outputs)` gets every slice of `x` and `out` cut
/// at the same row. Each slice holds `rows` rows of its width (`x_width`,
/// `out_width`: words per row, one per slice); a slice of another length is a bug in
/// the caller and panics. Rows must be independent of each other, so the result has
/// the same bits as one pass. Below two rows, or with more than [`MAX_SLICES`]
/// slices on a side, one pass on this thread.
pub(crate) fn join_rows(
    rows: usize,
    (x, x_width): (&[&[f32]], &[usize]),
    (out, out_width): (&mut [&mut [f32]], &[usize]),
    pass: impl Fn(usize, &[&[f32]], &mut [&mut [f32]]) + Sync,
) {
    assert!(
        x.len() == x_width.len() && out.len() == out_width.len(),
        "join_rows: {} inputs and {} outputs, {} and {} widths",
        x.len(),
        out.len(),
        x_width.len(),
        out_width.len()
    );
    let lengths = x.iter().map(|s| s.len()).chain(out.iter().map(|s| s.len()));
    for (i, (len, width)) in lengths.zip(x_width.iter().chain(out_width)).enumerate() {
        assert!(
            len == rows * width,
            "join_rows: slice {i} holds {len} words, not {rows} rows of {width}"
        );
    }
    if rows < 2 || x.len() > MAX_SLICES || out.len() > MAX_SLICES {
        return pass(rows, x, out);
    }
    let (cut, nx, no) = (rows / 2, x.len(), out.len());
    let (mut x0, mut x1) = ([&[][..]; MAX_SLICES], [&[][..]; MAX_SLICES]);
    for (i, (s, width)) in x.iter().zip(x_width).enumerate() {
        (x0[i], x1[i]) = s.split_at(cut * width);
    }
    let (mut o0, mut o1): ([&mut [f32]; MAX_SLICES], [&mut [f32]; MAX_SLICES]) = Default::default();
    for (i, (s, width)) in out.iter_mut().zip(out_width).enumerate() {
        (o0[i], o1[i]) = s.split_at_mut(cut * width);
    }
    join(
        || pass(rows - cut, &x1[..nx], &mut o1[..no]),
        || pass(cut, &x0[..nx], &mut o0[..no]),
    );
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
    fn join_rows_cuts_every_slice_at_the_same_row() {
        let x: Vec<f32> = (0..21).map(|v| v as f32).collect();
        let (mut narrow, mut wide) = (vec![0f32; 14], vec![0f32; 35]);
        let parts = Mutex::new(Vec::new());
        // Rows of 3 words in, of 2 and 5 words out: each output row from its input row.
        let pass = |rows: usize, x: &[&[f32]], out: &mut [&mut [f32]]| {
            assert_eq!([x[0].len(), out[0].len(), out[1].len()], [3 * rows, 2 * rows, 5 * rows]);
            for r in 0..rows {
                let sum: f32 = x[0][3 * r..3 * r + 3].iter().sum();
                out[0][2 * r..2 * r + 2].fill(sum);
                out[1][5 * r..5 * r + 5].fill(-sum);
            }
            parts.lock().unwrap().push(rows);
        };
        join_rows(7, (&[&x], &[3]), (&mut [&mut narrow, &mut wide], &[2, 5]), pass);
        let mut parts = parts.into_inner().unwrap();
        parts.sort();
        assert_eq!(parts, [3, 4]);
        for r in 0..7 {
            let sum = (9 * r + 3) as f32;
            assert!(
                narrow[2 * r..2 * r + 2].iter().all(|&v| v == sum),
                "row {r}: {narrow:?}"
            );
            assert!(wide[5 * r..5 * r + 5].iter().all(|&v| v == -sum), "row {r}: {wide:?}");
        }
    }

    #[test]
    #[should_panic(expected = "join_rows: slice 1 holds 9 words, not 2 rows of 4")]
    fn join_rows_refuses_a_slice_longer_than_its_rows() {
        // A reused buffer longer than its value: cutting it at half its length would
        // hand the second half the wrong rows.
        let (x, mut out) = (vec![0f32; 6], vec![0f32; 9]);
        join_rows(2, (&[&x], &[3]), (&mut [&mut out], &[4]), |_, _, _| ());
    }

    /// (Ends the helper of the test process: later joins run on their own thread.)
    #[test]
    fn a_panic_on_the_helper_reaches_the_caller_and_later_joins_still_run() {
        let message = |payload: Box<dyn std::any::Any + Send>| match payload.downcast::<&str>() {
            Ok(s) => s.to_string(),
            Err(payload) => payload.downcast::<String>().map_or(String::new(), |s| *s),
        };
        // A try finds the helper busy with other tests' products now and then (for
        // many tries in a row while they run); its half then runs (and panics) on
        // the caller's thread. Tries go on for up to a minute.
        let deadline = Instant::now() + Duration::from_secs(60);
        let reached = std::iter::from_fn(|| (Instant::now() < deadline).then_some(())).any(|()| {
            let caller = thread::spawn(|| join(|| panic!("first half"), || ()));
            let got = message(caller.join().expect_err("the panic reaches the caller"));
            let on_helper = !helper().expect("a helper").alive.load(SeqCst);
            let want = if on_helper {
                "the half of the work run on wgnn's helper thread panicked (its message is above)"
            } else {
                "first half"
            };
            assert_eq!(got, want);
            if !on_helper {
                thread::sleep(Duration::from_millis(1));
            }
            on_helper
        });
        assert!(reached, "no try reached the helper");
        let mut ran = false;
        join(|| (), || ran = true);
        let mut also = false;
        join(|| also = true, || ());
        assert!(ran && also);
    }
}
