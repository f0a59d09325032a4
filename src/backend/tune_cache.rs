//! The autotune's choices (`Kernel::tune`): for each shape class of a kernel, the
//! name of the variant that ran fastest on this adapter, kept in memory and in a
//! small text file per adapter and driver next to the pipeline cache, so a later
//! process skips the timing. Variants give the same bits, so a stale or foreign
//! choice can only cost speed; a name the kernel no longer offers is timed again.
//!
//! The file is `tune-<hash>.txt` in the pipeline cache's folder (`WGNN_CACHE_DIR`,
//! else `$XDG_CACHE_HOME/wgnn`, else `$HOME/.cache/wgnn`; `off` keeps choices in
//! memory only), one `key<TAB>variant` per line; `<hash>` names the adapter, its
//! driver and this version of wgnn. `WGNN_AUTOTUNE=0` turns timing off (every
//! kernel runs its default variant). A file that cannot be read or written is
//! skipped: the cache never fails a computation.
//!
//! A choice is saved only when its timing was steady (the machine's speed did not
//! change while the variants were timed: another program starting, a test suite's
//! parallel threads, a virtual machine's slow minute): an unsteady one holds for
//! this process alone, and the next process times again. A choice timed in a busy
//! minute and saved would otherwise slow every later run on this adapter.
//! `WGNN_AUTOTUNE=keep` saves every choice, steady or not (a machine that is never
//! quiet, or a test of the file itself).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Choices by shape-class key, and where they are saved.
pub(crate) struct TuneCache {
    chosen: Mutex<HashMap<String, String>>,
    /// Keys of `chosen` whose timing was unsteady: never saved.
    unsaved: Mutex<std::collections::HashSet<String>>,
    path: Option<PathBuf>,
    /// Choices were added since the last save.
    dirty: AtomicBool,
    timing: bool,
    /// Save unsteady choices too (`WGNN_AUTOTUNE=keep`).
    keep_unsteady: bool,
}

/// The choices saved in `path` (none if it cannot be read).
fn read(path: &PathBuf) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// FNV-1a, for a short, stable file name and the variant sets' fingerprints.
pub(crate) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl TuneCache {
    /// The cache for an adapter described by `identity` (name, backend, driver),
    /// seeded from its file.
    pub(crate) fn open(identity: &str) -> TuneCache {
        let setting = std::env::var("WGNN_AUTOTUNE");
        let timing = !matches!(setting.as_deref(), Ok("0" | "off"));
        let keep_unsteady = setting.as_deref() == Ok("keep");
        let id = format!("{identity} wgnn {}", env!("CARGO_PKG_VERSION"));
        let path = if cfg!(target_arch = "wasm32") {
            None
        } else {
            super::pipeline_cache::folder().map(|d| d.join(format!("tune-{:016x}.txt", fnv1a(&id))))
        };
        let chosen = path.as_ref().map(read).unwrap_or_default();
        TuneCache {
            chosen: Mutex::new(chosen),
            unsaved: Mutex::default(),
            path,
            dirty: AtomicBool::new(false),
            timing,
            keep_unsteady,
        }
    }

    /// Choices kept across processes (all but the unsteady ones), and the file they
    /// are saved to.
    pub(crate) fn summary(&self) -> (usize, Option<PathBuf>) {
        let unsaved = self.unsaved.lock().unwrap().len();
        (self.chosen.lock().unwrap().len() - unsaved, self.path.clone())
    }

    /// Whether kernels may be timed (`WGNN_AUTOTUNE` is not `0`).
    pub(crate) fn timing(&self) -> bool {
        self.timing
    }

    /// The variant chosen for `key`, if any.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.chosen.lock().unwrap().get(key).cloned()
    }

    /// Records a choice, saved by [`TuneCache::save`] if its timing was `steady`
    /// (else it holds for this process only).
    pub(crate) fn set(&self, key: &str, variant: &str, steady: bool) {
        self.chosen.lock().unwrap().insert(key.into(), variant.into());
        let mut unsaved = self.unsaved.lock().unwrap();
        if steady || self.keep_unsteady {
            unsaved.remove(key);
            self.dirty.store(true, Ordering::Relaxed);
        } else {
            unsaved.insert(key.into());
        }
    }

    /// Writes the choices if any were added: a temporary file renamed over the old
    /// one, so a reader never sees half a file. Choices another process saved since
    /// this one opened the file are kept.
    pub(crate) fn save(&self) {
        let Some(path) = self.path.as_ref() else { return };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut all = read(path);
        let unsaved = self.unsaved.lock().unwrap();
        all.extend(
            self.chosen
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| !unsaved.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let mut lines: Vec<String> = all.into_iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
        lines.sort();
        let Some(dir) = path.parent() else { return };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, lines.concat()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_whose_timing_was_unsteady_is_used_but_not_saved() {
        let dir = std::env::temp_dir().join(format!("wgnn-tune-cache-{}", std::process::id()));
        let path = dir.join("tune-test.txt");
        let cache = |keep_unsteady| TuneCache {
            chosen: Mutex::new(read(&path)),
            unsaved: Mutex::default(),
            path: Some(path.clone()),
            dirty: AtomicBool::new(false),
            timing: true,
            keep_unsteady,
        };
        let first = cache(false);
        first.set("steady", "a", true);
        first.set("unsteady", "b", false);
        assert_eq!(first.get("unsteady").as_deref(), Some("b"), "held for this process");
        first.save();
        let later = cache(false);
        assert_eq!(later.get("steady").as_deref(), Some("a"));
        assert_eq!(later.get("unsteady"), None, "an unsteady choice was saved");
        // Timed again, steady this time: saved.
        later.set("unsteady", "c", true);
        later.save();
        assert_eq!(cache(false).get("unsteady").as_deref(), Some("c"));
        // `WGNN_AUTOTUNE=keep` saves an unsteady choice too.
        let keeping = cache(true);
        keeping.set("noisy", "d", false);
        keeping.save();
        assert_eq!(cache(false).get("noisy").as_deref(), Some("d"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
