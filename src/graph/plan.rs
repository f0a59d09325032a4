//! Plans: the pending part of the graph, scheduled in topological order, lowered to
//! a backend [`Program`] with arena buffers assigned by liveness, compiled once and
//! cached by graph structure and shapes. Running a plan realizes the requested
//! values and every pending value that someone else still holds (so laziness never
//! changes meaning), then applies in-place optimizer updates last.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::backend::{Counters, Storage};
use crate::device::plans::CompiledPlan;
use crate::fast_path::{self, FastPath};
use crate::ops::Op;
use crate::{Error, Result, Tensor};

/// The pending graph reachable from some roots, in a deterministic order.
pub(super) struct Schedule {
    pub(super) nodes: Vec<Tensor>,
    /// Optimizer updates, run last.
    pub(super) updates: Vec<Tensor>,
    pub(super) externals: Vec<Tensor>,
    /// For each node and update: its inputs as references.
    pub(super) inputs: Vec<Vec<Ref>>,
    pub(super) kept: Vec<bool>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Ref {
    Node(usize),
    External(usize),
}

impl Schedule {
    fn build(roots: &[Tensor], updates: &[Tensor]) -> Schedule {
        let mut s = Schedule {
            nodes: Vec::new(),
            updates: Vec::new(),
            externals: Vec::new(),
            inputs: Vec::new(),
            kept: Vec::new(),
        };
        let mut index: HashMap<u64, Ref> = HashMap::new();
        let mut update_inputs = Vec::new();
        for (is_update, start) in roots
            .iter()
            .map(|t| (false, t))
            .chain(updates.iter().map(|t| (true, t)))
        {
            if is_update {
                for input in &start.0.inputs {
                    s.visit(input, &mut index);
                }
                update_inputs.push(start.0.inputs.iter().map(|t| index[&t.id()]).collect::<Vec<_>>());
                s.updates.push(start.clone());
            } else {
                s.visit(start, &mut index);
            }
        }
        // Consumers inside the plan; any other holder of a pending node needs its value.
        let mut uses = vec![0usize; s.nodes.len()];
        for refs in s.inputs.iter().chain(update_inputs.iter()) {
            for r in refs {
                if let Ref::Node(i) = r {
                    uses[*i] += 1;
                }
            }
        }
        s.kept = s
            .nodes
            .iter()
            .enumerate()
            .map(|(i, t)| Arc::strong_count(&t.0) > 1 + uses[i])
            .collect();
        // A kept multi-output node keeps its other outputs: they could not be
        // recomputed once it is realized.
        for i in 0..s.nodes.len() {
            if let Op::Output(_) = s.nodes[i].0.op {
                if let Ref::Node(parent) = s.inputs[i][0] {
                    s.kept[i] |= s.kept[parent];
                }
            }
        }
        s.inputs.extend(update_inputs);
        s
    }

    /// Iterative post-order DFS: inputs before users, externals in discovery order.
    fn visit(&mut self, start: &Tensor, index: &mut HashMap<u64, Ref>) {
        if index.contains_key(&start.id()) {
            return;
        }
        if !start.is_pending() {
            index.insert(start.id(), Ref::External(self.externals.len()));
            self.externals.push(start.clone());
            return;
        }
        let mut stack: Vec<(Tensor, usize)> = vec![(start.clone(), 0)];
        while let Some((node, next)) = stack.pop() {
            if next < node.0.inputs.len() {
                let child = node.0.inputs[next].clone();
                stack.push((node, next + 1));
                if index.contains_key(&child.id()) {
                    continue;
                }
                if child.is_pending() {
                    stack.push((child, 0));
                } else {
                    index.insert(child.id(), Ref::External(self.externals.len()));
                    self.externals.push(child);
                }
            } else if let std::collections::hash_map::Entry::Vacant(slot) = index.entry(node.id()) {
                let at = self.nodes.len();
                slot.insert(Ref::Node(at));
                self.inputs.push(node.0.inputs.iter().map(|t| index[&t.id()]).collect());
                let others = node.other_outputs();
                self.nodes.push(node);
                // The other outputs of its kernel come with it, so they exist whenever
                // it does (see `kept`).
                for other in others.into_iter().flatten() {
                    if !index.contains_key(&other.id()) && other.is_pending() {
                        index.insert(other.id(), Ref::Node(self.nodes.len()));
                        self.inputs.push(vec![Ref::Node(at)]);
                        self.nodes.push(other);
                    }
                }
            }
        }
    }

    fn all(&self) -> impl Iterator<Item = &Tensor> {
        self.nodes.iter().chain(self.updates.iter())
    }

    /// Checks what can only be checked once values are known to exist.
    fn validate(&self) -> Result<()> {
        for node in self.all() {
            for (input, &version) in node.0.inputs.iter().zip(&node.0.input_versions) {
                if input.0.op == Op::Leaf && input.0.version.load(Ordering::Acquire) != version {
                    return Err(Error::StaleParameter(node.0.op.name().into()));
                }
            }
            node.0.op.rule().validate(&node.0.inputs)?;
            if let Op::Output(o) = &node.0.op {
                if !node.0.inputs[0].is_pending() {
                    return Err(Error::Invalid(format!(
                        "output {} of a realized {} node was not kept",
                        o.index,
                        node.0.inputs[0].0.op.name()
                    )));
                }
            }
            if let Some(from) = node.0.op.in_place_from() {
                for input in &node.0.inputs[from..] {
                    let resident = input.0.op == Op::Leaf
                        && !input.0.storage.lock().unwrap().as_ref().is_some_and(Storage::is_host);
                    if !resident {
                        return Err(Error::Invalid(format!(
                            "{}: can only update resident leaf tensors in place",
                            node.0.op.name()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Refuses, before anything is allocated or dispatched, a node whose value the
    /// device cannot hold in one buffer, naming the node.
    fn check_limits(&self, device: &crate::Device) -> Result<()> {
        let info = device.info();
        let (limit, limit_name) = [
            (info.max_buffer_size, "max_buffer_size"),
            (info.max_storage_buffer_binding_size, "max_storage_buffer_binding_size"),
        ]
        .into_iter()
        .min_by_key(|&(limit, _)| limit)
        .expect("two limits");
        match self.nodes.iter().find(|t| t.words() as u64 * 4 > limit) {
            Some(t) => Err(Error::DeviceLimit {
                what: format!("the value of {:?} {:?} built at {}", t.0.op, t.shape(), t.0.origin),
                needed: t.words() as u64 * 4,
                limit,
                limit_name,
            }),
            None => Ok(()),
        }
    }

    /// The cache key: structure, shapes, external kinds and which values are kept.
    fn key(&self) -> String {
        let mut key = String::new();
        for e in &self.externals {
            let host = e.0.storage.lock().unwrap().as_ref().is_some_and(Storage::is_host);
            let _ = write!(key, "E{:?}{:?}{};", e.shape(), e.dtype(), if host { "h" } else { "r" });
        }
        for (i, node) in self.all().enumerate() {
            let kept = self.kept.get(i).copied().unwrap_or(false);
            let _ = write!(
                key,
                "N{:?}{:?}{:?}{:?}{};",
                node.0.op,
                node.shape(),
                node.dtype(),
                self.inputs[i],
                kept as u8
            );
        }
        key
    }
}

/// The one way into the executor: computes `roots` (and every pending value someone
/// still holds), then applies `updates` in place, as one plan — on the GPU one command
/// buffer, one submit. `Tensor::realize`/`to_vec`, the optimizers' steps, `fit`'s
/// pass ends and the distributed optimizer all come through here.
///
/// The updates that forward passes queued on the device (`graph::deferred`: batch
/// norm's running statistics) run after `updates`, in the same plan.
pub(crate) fn realize_all(roots: &[Tensor], updates: &[Tensor]) -> Result<()> {
    let Some(device) = roots.iter().chain(updates).next().map(|t| t.device().clone()) else {
        return Ok(());
    };
    let deferred = super::deferred::take(&device);
    let updates: Vec<Tensor> = updates.iter().cloned().chain(deferred).collect();
    let updates = &updates[..];
    let schedule = Schedule::build(roots, updates);
    if schedule.nodes.is_empty() && schedule.updates.is_empty() {
        return Ok(());
    }
    for t in schedule.all().chain(&schedule.externals) {
        if !t.device().same(&device) {
            return Err(Error::DeviceMismatch {
                op: "realize",
                a: device.to_string(),
                b: t.device().to_string(),
            });
        }
    }
    schedule.validate()?;
    // The debugging modes read every node's value: their plans are not fused.
    let fuse = !device.debug_modes().any() && fast_path::choose(FastPath::Fusion, true);
    let view_alignment = fast_path::choose(FastPath::Views, true).then(|| device.backend().view_alignment());
    let key = format!(
        "{}{}{}",
        if fuse { "F;" } else { "U;" },
        if view_alignment.is_some() { "V;" } else { "C;" },
        schedule.key()
    );
    let plan = {
        let cached = device.plan_cache().lock().unwrap().get(&key).cloned();
        match cached {
            Some(plan) => {
                Counters::add(&device.counters().plan_cache_hits, 1);
                plan
            }
            None => {
                Counters::add(&device.counters().plan_cache_misses, 1);
                schedule.check_limits(&device)?;
                let start = web_time::Instant::now();
                let program = schedule.lower(fuse, view_alignment);
                let exec = device.backend().compile(program.clone())?;
                Counters::add(&device.counters().compile_ns, start.elapsed().as_nanos() as u64);
                let kept_nodes = (0..schedule.nodes.len()).filter(|&i| schedule.kept[i]).collect();
                let plan = Arc::new(CompiledPlan::new(exec, program, kept_nodes));
                device.plan_cache().lock().unwrap().insert(key, plan.clone());
                plan
            }
        }
    };
    let externals: Vec<Storage> = schedule
        .externals
        .iter()
        .map(|t| t.0.storage.lock().unwrap().clone().expect("externals are realized"))
        .collect();
    let kept = if device.debug_modes().any() {
        super::debug::run(&*plan.exec, &plan.program, &schedule.nodes, &externals, &device)?
    } else if device.profiler().is_on() {
        let nodes: Vec<&Tensor> = schedule.all().collect();
        let plan_id = (plan.id, &plan.labels);
        super::profile::run(&*plan.exec, &plan.program, plan_id, &nodes, &externals, &device)?
    } else {
        let start = web_time::Instant::now();
        let kept = plan.exec.run(&externals, None)?;
        Counters::add(&device.counters().record_ns, start.elapsed().as_nanos() as u64);
        kept
    };
    for (&i, storage) in plan.kept_nodes.iter().zip(kept) {
        *schedule.nodes[i].0.storage.lock().unwrap() = Some(storage);
    }
    for update in &schedule.updates {
        let from = update.0.op.in_place_from().unwrap_or(update.0.inputs.len());
        for written in &update.0.inputs[from..] {
            written.0.version.fetch_add(1, Ordering::AcqRel);
        }
    }
    Ok(())
}
