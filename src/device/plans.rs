//! A compiled plan as a device caches it: the backend's executable, the program it
//! was compiled from, and which of its nodes' values are kept. Planning (`graph::plan`)
//! makes them; the device keeps them by graph structure and shapes, so that every graph
//! of the same structure reuses one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::profile::Label;
use crate::backend::{Executable, Program};

/// A compiled plan, shared by every graph of the same structure.
pub(crate) struct CompiledPlan {
    /// Names the plan in the profiler's totals.
    pub(crate) id: u64,
    /// Its launches as the profiler names them, made on the first profiled run.
    pub(crate) labels: OnceLock<Arc<Vec<Label>>>,
    /// What the backend runs.
    pub(crate) exec: Box<dyn Executable>,
    /// What was compiled, for the debugging modes (`graph/debug.rs`).
    pub(crate) program: Program,
    /// Indices (into the schedule) of the nodes whose values are kept.
    pub(crate) kept_nodes: Vec<usize>,
}

impl CompiledPlan {
    /// A plan with the next free id.
    pub(crate) fn new(exec: Box<dyn Executable>, program: Program, kept_nodes: Vec<usize>) -> CompiledPlan {
        static NEXT_PLAN: AtomicU64 = AtomicU64::new(1);
        CompiledPlan {
            id: NEXT_PLAN.fetch_add(1, Ordering::Relaxed),
            labels: OnceLock::new(),
            exec,
            program,
            kept_nodes,
        }
    }
}
