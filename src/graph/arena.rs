//! The plan's scratch buffers as lowering hands them out (`lower.rs`): a slot is
//! taken for a value, read a known number of times (its views' and aliases' reads
//! included, as they read the same slot), and free again for the next value once
//! the last of those reads has run, unless the value is kept after the plan.

use crate::backend::Slot;

/// The arena as lowering fills it.
#[derive(Default)]
pub(super) struct Arena {
    /// Each slot's size in words.
    pub(super) sizes: Vec<usize>,
    /// Reads of each slot still to come (aliases' reads included).
    uses_left: Vec<usize>,
    /// Slots whose value is kept after the plan (never reused).
    pinned: Vec<bool>,
    free: Vec<usize>,
}

impl Arena {
    /// The smallest free slot of at least `words`, or a new one.
    pub(super) fn take(&mut self, words: usize) -> Slot {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, &s)| self.sizes[s] >= words)
            .min_by_key(|(_, &s)| self.sizes[s]);
        match best {
            Some((pos, &s)) => {
                self.free.swap_remove(pos);
                Slot::Arena(s)
            }
            None => {
                self.sizes.push(words);
                self.uses_left.push(0);
                self.pinned.push(false);
                Slot::Arena(self.sizes.len() - 1)
            }
        }
    }

    /// `slot` now holds a value that will be read `uses` more times (and kept if `kept`).
    pub(super) fn hold(&mut self, slot: Slot, uses: usize, kept: bool) {
        if let Slot::Arena(s) = slot {
            self.uses_left[s] += uses;
            self.pinned[s] |= kept;
        }
    }

    /// A scratch slot is free again.
    pub(super) fn release(&mut self, slot: Slot) {
        if let Slot::Arena(s) = slot {
            self.free.push(s);
        }
    }

    /// One read of `slot` has run: free once its last reader has, unless kept.
    pub(super) fn read_done(&mut self, slot: Slot) {
        if let Slot::Arena(s) = slot {
            self.uses_left[s] -= 1;
            if self.uses_left[s] == 0 && !self.pinned[s] {
                self.free.push(s);
            }
        }
    }

    /// A value nobody reads or keeps is free as soon as it is written.
    pub(super) fn free_if_unread(&mut self, slot: Slot) {
        if let Slot::Arena(s) = slot {
            if self.uses_left[s] == 0 && !self.pinned[s] && !self.free.contains(&s) {
                self.free.push(s);
            }
        }
    }
}
