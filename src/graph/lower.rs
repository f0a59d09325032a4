//! Lowering a schedule to a backend [`Program`]: each node's launches in order, fused
//! elementwise trees as one launch, arena buffers assigned by liveness (a slot is free
//! again once its last reader has run and nobody keeps its value), views where a
//! node's value is a contiguous range of its input's buffer (no launch: its readers
//! bind that buffer at an offset, and their reads keep it alive), and the optimizer
//! updates last, in place.

use std::collections::HashMap;

use super::arena::Arena;
use super::fuse::{Fusion, ProductTail};
use super::joins::Joins;
use super::plan::{Ref, Schedule};
use crate::backend::{ExternalSpec, Place, Probe, Program, Slot, Step, Storage};
use crate::ops::fused::FusedKernel;
use crate::ops::{Bind, Launch, Lowering, Op};
use crate::tensor::numel;

impl Schedule {
    /// Lowers to a program: one step per kernel, arena slots reused by liveness; with
    /// `fuse`, chains of elementwise nodes as one kernel each (`fuse.rs`); with
    /// `view_alignment` (in words), views wherever their offset is a multiple of it,
    /// and in fused plans joins written in place (`joins.rs`).
    pub(super) fn lower(&self, fuse: bool, view_alignment: Option<usize>) -> Program {
        let mut program = Program {
            externals: self.external_specs(),
            ..Program::default()
        };
        let mut lowerer = Lowerer::new(self, fuse, view_alignment);
        for i in 0..self.nodes.len() {
            lowerer.node(i, &mut program);
        }
        program.arena = std::mem::take(&mut lowerer.arena.sizes);
        self.lower_updates(&lowerer.slot_of, &mut program);
        program.kept = (0..self.nodes.len())
            .filter(|&i| self.kept[i])
            .map(|i| (lowerer.slot_of[i], self.nodes[i].words()))
            .collect();
        program
    }

    /// Each external's size, and whether it lives in host memory.
    fn external_specs(&self) -> Vec<ExternalSpec> {
        self.externals
            .iter()
            .map(|e| ExternalSpec {
                words: e.words(),
                host: e.0.storage.lock().unwrap().as_ref().is_some_and(Storage::is_host),
            })
            .collect()
    }

    /// The optimizer updates' launches, after every node: they bind their inputs only
    /// (the parameters and state they write in place among them).
    fn lower_updates(&self, slot_of: &[Place], program: &mut Program) {
        let n = self.nodes.len();
        for (u, update) in self.updates.iter().enumerate() {
            let refs = &self.inputs[n + u];
            let input_shapes: Vec<&[usize]> = update.0.inputs.iter().map(|t| t.shape()).collect();
            let Lowering::Launches { launches, .. } = update.0.op.rule().lower(&input_shapes, update.shape()) else {
                unreachable!("updates are kernels")
            };
            for launch in launches {
                let input = |b: &Bind| match *b {
                    Bind::Input(k) => k,
                    _ => unreachable!("updates bind their inputs only"),
                };
                program.updates.push(Step {
                    bindings: launch
                        .bindings
                        .iter()
                        .map(|b| resolve(&refs[input(b)], slot_of))
                        .collect(),
                    words: launch
                        .bindings
                        .iter()
                        .map(|b| update.0.inputs[input(b)].words())
                        .collect(),
                    kernel: launch.kernel,
                    node: n + u,
                });
            }
        }
    }
}

/// Where a reference's value lies.
fn resolve(r: &Ref, slot_of: &[Place]) -> Place {
    match r {
        Ref::Node(i) => slot_of[*i],
        Ref::External(e) => Place::start_of(Slot::External(*e)),
    }
}

/// Where a node's launches bind: its inputs, scratch buffers, first output and the
/// others, with each one's size in words.
struct Bound {
    inputs: Vec<(Place, usize)>,
    temps: Vec<(Place, usize)>,
    out: (Place, usize),
    outputs: Vec<(Place, usize)>,
    /// The outputs are views of input 0: nothing of their own to free.
    views: bool,
}

impl Bound {
    fn get(&self, bind: Bind) -> (Place, usize) {
        match bind {
            Bind::Input(k) => self.inputs[k],
            Bind::Temp(k) => self.temps[k],
            Bind::Output(0) => self.out,
            Bind::Output(k) => self.outputs[k - 1],
        }
    }
}

/// The state of lowering the schedule's nodes, one after the other.
struct Lowerer<'s> {
    schedule: &'s Schedule,
    fusion: Fusion,
    /// Reads of each node's value within the plan.
    uses: Vec<usize>,
    /// The `Op::Output` node of the plan that reads each (node, output ≥ 1) pair.
    output_nodes: HashMap<(usize, usize), usize>,
    /// Where each node's outputs after the first were put.
    outputs_of: HashMap<usize, Vec<Place>>,
    /// Where each lowered node's value is.
    slot_of: Vec<Place>,
    arena: Arena,
    /// Views are made where their offset (in words) is a multiple of this; `None`:
    /// never.
    view_alignment: Option<usize>,
    /// The joins written in place, and the buffer of each once its first part has
    /// been placed.
    joins: Joins,
    join_slots: HashMap<usize, Slot>,
}

impl<'s> Lowerer<'s> {
    fn new(schedule: &'s Schedule, fuse: bool, view_alignment: Option<usize>) -> Lowerer<'s> {
        let n = schedule.nodes.len();
        let mut uses = vec![0usize; n];
        for r in schedule.inputs.iter().flatten() {
            if let Ref::Node(i) = r {
                uses[*i] += 1;
            }
        }
        let output_nodes: HashMap<(usize, usize), usize> = (0..n)
            .filter_map(|i| match (&schedule.nodes[i].0.op, schedule.inputs[i].first()) {
                (Op::Output(o), Some(&Ref::Node(parent))) => Some(((parent, o.index), i)),
                _ => None,
            })
            .collect();
        let fusion = if fuse {
            Fusion::plan(&schedule.nodes, &schedule.inputs, &uses, &schedule.kept)
        } else {
            Fusion::default()
        };
        let mut lowerer = Lowerer {
            schedule,
            fusion,
            uses,
            output_nodes,
            outputs_of: HashMap::new(),
            slot_of: Vec::with_capacity(n),
            arena: Arena::default(),
            view_alignment,
            joins: Joins::default(),
            join_slots: HashMap::new(),
        };
        if let (true, Some(alignment)) = (fuse, view_alignment) {
            lowerer.joins = Joins::plan(schedule, alignment, |i| lowerer.launch_reads(i));
        }
        lowerer
    }

    /// What node `i`'s launches read, where it is computed by launches of its own
    /// into a buffer of its own: not absorbed, not a view, not an alias.
    /// A second output (`Op::Output`) is its node's: it is in a buffer of its own,
    /// written by that node's launches.
    fn launch_reads(&self, i: usize) -> Option<Vec<Ref>> {
        if self.fusion.absorbed.get(i).copied().unwrap_or(false) {
            return None;
        }
        let node = &self.schedule.nodes[i];
        if let (Op::Output(_), Some(&Ref::Node(parent))) = (&node.0.op, self.schedule.inputs[i].first()) {
            return self.launch_reads(parent);
        }
        let shapes: Vec<&[usize]> = node.0.inputs.iter().map(|t| t.shape()).collect();
        if !self.fused(i) && node.0.op.rule().views(&shapes, node.shape()).is_some() {
            return None;
        }
        let (lowering, refs, _) = self.lowering_of(i);
        matches!(lowering, Lowering::Launches { .. }).then_some(refs)
    }

    /// Whether node `i` is computed by a fused kernel (a tree or a product's tail).
    fn fused(&self, i: usize) -> bool {
        self.fusion.tails.get(i).is_some_and(Option::is_some) || self.fusion.trees.get(i).is_some_and(Option::is_some)
    }

    /// The buffer of join `c`, taken when its first part is placed and held until
    /// each part has been written.
    fn join_slot(&mut self, c: usize) -> Slot {
        if let Some(&slot) = self.join_slots.get(&c) {
            return slot;
        }
        let slot = self.arena.take(self.schedule.nodes[c].words().max(1));
        self.arena.hold(slot, self.joins.parts[&c], false);
        self.join_slots.insert(c, slot);
        slot
    }

    /// Where a launch writes `words` words of `node`'s value (`None`: scratch): its
    /// range of a join written in place if it is a part of one, else a buffer of its
    /// own.
    fn buffer_for(&mut self, node: Option<usize>, words: usize) -> (Place, usize) {
        match node.and_then(|x| self.joins.part_of.get(&x)) {
            Some(&(join, offset)) => {
                let slot = self.join_slot(join);
                (Place { slot, offset }, words)
            }
            None => (Place::start_of(self.arena.take(words.max(1))), words),
        }
    }

    /// Lowers node `i`: places its value, appends its launches and its probe, and
    /// frees what it was the last to read.
    fn node(&mut self, i: usize, program: &mut Program) {
        if self.fusion.absorbed.get(i).copied().unwrap_or(false) {
            // Computed inside its consumer's kernel; nothing ever reads this slot.
            self.slot_of.push(Place::start_of(Slot::External(usize::MAX)));
            return;
        }
        let (lowering, refs, input_words) = self.lowering_of(i);
        let inputs: Vec<(Place, usize)> = refs
            .iter()
            .map(|r| resolve(r, &self.slot_of))
            .zip(input_words)
            .collect();
        let lowering = if self.joins.parts.contains_key(&i) {
            Lowering::Joined
        } else {
            self.views_of(i, &inputs).unwrap_or(lowering)
        };
        let computed = matches!(lowering, Lowering::Launches { .. });
        let (bound, launches) = self.place(i, lowering, inputs);
        let out = bound.out.0;
        self.slot_of.push(out);
        self.arena.hold(out.slot, self.uses[i], self.schedule.kept[i]);
        if self.joins.part_of.contains_key(&i) {
            // This part's write into its join's buffer, which held it, is placed.
            self.arena.read_done(out.slot);
        }
        for Launch { kernel, bindings } in launches {
            let (places, words): (Vec<Place>, _) = bindings.iter().map(|&b| bound.get(b)).unzip();
            let (reads, writes) = places.split_at(kernel.reads());
            debug_assert!(
                writes.iter().all(|w| reads.iter().all(|r| r.slot != w.slot)),
                "a launch of node {i} would read and write one buffer"
            );
            program.steps.push(Step {
                kernel,
                bindings: places,
                words,
                node: i,
            });
        }
        for fill in self.joins.fills.get(&i).into_iter().flatten() {
            // What no part's launch wrote into a join written in place: parts copied
            // in, a pad's zeros.
            let to = Place {
                slot: out.slot,
                offset: fill.offset,
            };
            let (kernel, bindings) = match fill.from {
                Some(k) => (crate::ops::plain_copy(fill.words), vec![bound.inputs[k].0, to]),
                None => (crate::ops::zero_fill(fill.words), vec![to]),
            };
            let words = vec![fill.words; bindings.len()];
            program.steps.push(Step {
                kernel,
                bindings,
                words,
                node: i,
            });
        }
        // (A part of a join placed past its buffer's start has no probe: the
        // debugging modes, which read probes, run unfused plans, without joins.)
        if computed && out.offset == 0 {
            program.probes.push(Probe {
                node: i,
                after: program.steps.len(),
                slot: out.slot,
                words: self.schedule.nodes[i].words(),
            });
        }
        self.release(i, bound);
    }

    /// Node `i`'s outputs as views of its input 0, where its op's rule says each is a
    /// contiguous range of it, views are on, and every offset meets the alignment.
    fn views_of(&self, i: usize, inputs: &[(Place, usize)]) -> Option<Lowering> {
        let align = self.view_alignment?;
        if self.fused(i) {
            return None;
        }
        let node = &self.schedule.nodes[i];
        if let Op::Cat(cat) = &node.0.op {
            // Parts that lie one after the other in one buffer (a sequence's steps
            // from a join written in place) are already their join.
            let first = inputs[0].0;
            let mut next = first.offset;
            let consecutive = inputs.iter().all(|&(place, words)| {
                let here = place.slot == first.slot && place.offset == next;
                next += words;
                here
            });
            let leading = crate::ops::split_axis(node.shape(), cat.axis).0 == 1;
            return (consecutive && leading).then(|| Lowering::Views(vec![0]));
        }
        let shapes: Vec<&[usize]> = node.0.inputs.iter().map(|t| t.shape()).collect();
        let offsets = node.0.op.rule().views(&shapes, node.shape())?;
        let base = inputs[0].0.offset;
        offsets
            .iter()
            .all(|o| (base + o).is_multiple_of(align))
            .then_some(Lowering::Views(offsets))
    }

    /// How node `i` is computed, what it reads, and the sizes of those reads: its fused
    /// tree when fusion absorbed its producers, else its op's own lowering.
    fn lowering_of(&self, i: usize) -> (Lowering, Vec<Ref>, Vec<usize>) {
        let node = &self.schedule.nodes[i];
        if let Some(ProductTail { product, tail, extras }) = self.fusion.tails.get(i).and_then(Option::as_ref) {
            let product_node = &self.schedule.nodes[*product];
            let Op::MatMul(op) = product_node.0.op else {
                unreachable!("a tail follows a product")
            };
            let shapes: Vec<&[usize]> = product_node.0.inputs.iter().map(|t| t.shape()).collect();
            let lowering = op.lower_with_tail(&shapes, product_node.shape(), tail.clone());
            let mut refs = self.schedule.inputs[*product].clone();
            refs.extend(extras.iter().map(|(r, _)| *r));
            let mut words: Vec<usize> = product_node.0.inputs.iter().map(|t| t.words()).collect();
            words.extend(extras.iter().map(|(_, shape)| numel(shape)));
            return (lowering, refs, words);
        }
        match self.fusion.trees.get(i).and_then(Option::as_ref) {
            Some((expr, leaves)) => {
                let strides: Vec<Vec<usize>> = leaves
                    .iter()
                    .map(|(_, shape)| crate::ops::broadcast_strides(shape, node.shape()))
                    .collect();
                let kernel = FusedKernel::new(expr, node.shape(), &strides);
                let refs = leaves.iter().map(|(r, _)| *r).collect();
                let words = leaves.iter().map(|(_, shape)| numel(shape)).collect();
                (Lowering::kernel(kernel, leaves.len()), refs, words)
            }
            None => {
                let input_shapes: Vec<&[usize]> = node.0.inputs.iter().map(|t| t.shape()).collect();
                let words = node.0.inputs.iter().map(|t| t.words()).collect();
                let lowering = node.0.op.rule().lower(&input_shapes, node.shape());
                (lowering, self.schedule.inputs[i].clone(), words)
            }
        }
    }

    /// Where node `i`'s value, scratch buffers and other outputs go, and its launches.
    fn place(&mut self, i: usize, lowering: Lowering, inputs: Vec<(Place, usize)>) -> (Bound, Vec<Launch>) {
        let node = &self.schedule.nodes[i];
        let words = node.words();
        let no_launch = |inputs, out| {
            let bound = Bound {
                inputs,
                temps: Vec::new(),
                out,
                outputs: Vec::new(),
                views: false,
            };
            (bound, Vec::new())
        };
        match lowering {
            // The same buffer as the input.
            Lowering::Alias => {
                let first = inputs[0].0;
                no_launch(inputs, (first, words))
            }
            // Ranges of the input's buffer: every output has the node's size.
            Lowering::Views(offsets) => {
                let base = inputs[0].0;
                let at = |offset: usize| {
                    let place = Place {
                        slot: base.slot,
                        offset: base.offset + offset,
                    };
                    (place, words)
                };
                let bound = Bound {
                    out: at(offsets[0]),
                    outputs: offsets[1..].iter().map(|&o| at(o)).collect(),
                    inputs,
                    temps: Vec::new(),
                    views: true,
                };
                (bound, Vec::new())
            }
            // A join whose parts were computed into its buffer.
            Lowering::Joined => {
                let out = (Place::start_of(self.join_slots[&i]), words);
                let bound = Bound {
                    out,
                    outputs: Vec::new(),
                    inputs,
                    temps: Vec::new(),
                    views: true,
                };
                (bound, Vec::new())
            }
            Lowering::OutputOf(k) => {
                let Ref::Node(parent) = self.schedule.inputs[i][0] else {
                    unreachable!("validated: an output's node is in the plan")
                };
                no_launch(inputs, (self.outputs_of[&parent][k - 1], words))
            }
            Lowering::Launches {
                temps,
                outputs,
                launches,
            } => {
                let out = self.buffer_for(Some(i), words);
                let temps = temps.iter().map(|&w| self.buffer_for(None, w)).collect();
                let outputs = (1..)
                    .zip(outputs)
                    .map(|(k, w)| self.buffer_for(self.output_nodes.get(&(i, k)).copied(), w))
                    .collect();
                (
                    Bound {
                        inputs,
                        temps,
                        out,
                        outputs,
                        views: false,
                    },
                    launches,
                )
            }
        }
    }

    /// After node `i`: its other outputs are remembered (those an `Op::Output` reads) or
    /// scratch; scratch buffers and inputs nobody reads any more are free again.
    fn release(&mut self, i: usize, bound: Bound) {
        for &(place, _) in &bound.outputs {
            self.outputs_of.entry(i).or_default().push(place);
        }
        for &(place, _) in &bound.temps {
            self.arena.release(place.slot);
        }
        for (k, &(place, _)) in bound.outputs.iter().enumerate() {
            if !bound.views && !self.output_nodes.contains_key(&(i, k + 1)) {
                self.arena.release(place.slot);
            }
        }
        for &(place, _) in &bound.inputs {
            self.arena.read_done(place.slot);
        }
        self.arena.free_if_unread(bound.out.0.slot);
    }
}
