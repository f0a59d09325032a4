//! Joins written in place ([`FastPath::Views`](crate::fast_path::FastPath::Views),
//! fused plans): a `cat` (or `stack`) along its leading axes whose parts are values
//! of launches of the plan (through reshapes) gets its buffer before the first of
//! those launches runs, and each of them writes its value straight into its range
//! of it; the join is then no launch, and its parts are views of its buffer. An
//! unrolled RNN's output sequence and its gradients' joins (the time steps' gate
//! gradients, joined for the weight gradient) are copied no more. A `pad` along the
//! leading axes (the gradient of a range: of a sequence's steps) is a join of its
//! input and zeros: the input's launch writes into it, and the zeros are filled.
//!
//! A part is written in place when its launch is its own (not absorbed by fusion,
//! not a view, not a join written in place itself; a second output's launch is its
//! node's), no other join has claimed it, and no other part of the join is written
//! by the same launch (a part twice, two outputs of one node); the others (a plan's
//! input, say) are copied in by a launch each when the join is reached. A join is
//! made where at least one part is written in place, no more are copied than the
//! plain join has launches, every offset meets the backend's alignment, and no
//! launch reads a part of the join it writes (a launch never reads and writes one
//! buffer): else it stays a copy, as before.

use std::collections::{HashMap, HashSet};

use super::plan::{Ref, Schedule};
use crate::ops::{split_axis, Op, CAT_INPUTS};

/// The joins of a plan that are written in place.
#[derive(Default)]
pub(super) struct Joins {
    /// Per part: its join and the word offset of its range there.
    pub(super) part_of: HashMap<usize, (usize, usize)>,
    /// Per join: its number of parts written in place.
    pub(super) parts: HashMap<usize, usize>,
    /// Per join: the ranges of its buffer that no part's launch writes, filled when
    /// the join is reached.
    pub(super) fills: HashMap<usize, Vec<RangeFill>>,
}

/// A range of a join's buffer filled by a launch of the join's own.
#[derive(Clone, Copy, Debug)]
pub(super) struct RangeFill {
    /// The first word and the words.
    pub(super) offset: usize,
    pub(super) words: usize,
    /// The join's input copied there; `None`: zeros (around a pad's input).
    pub(super) from: Option<usize>,
}

impl Joins {
    /// The joins of `schedule` to write in place, with offsets that are multiples of
    /// `alignment` words. `launch_reads(i)`: what node `i`'s launches read, where it
    /// is computed by launches of its own into a buffer of its own (else `None`).
    pub(super) fn plan(
        schedule: &Schedule,
        alignment: usize,
        launch_reads: impl Fn(usize) -> Option<Vec<Ref>>,
    ) -> Joins {
        let mut joins = Joins::default();
        for (c, node) in schedule.nodes.iter().enumerate() {
            // A pad is a join of its input and zeros.
            let (axis, pad) = match &node.0.op {
                Op::Cat(cat) => (cat.axis, None),
                Op::Pad(pad) => (pad.axis, Some(pad)),
                _ => continue,
            };
            let (outer, _, inner) = split_axis(node.shape(), axis);
            if outer != 1 {
                continue;
            }
            let mut fills = Vec::new();
            if let Some(pad) = pad {
                let input = node.0.inputs[0].words();
                let zeros = |offset, words| RangeFill {
                    offset,
                    words,
                    from: None,
                };
                fills.push(zeros(0, pad.before * inner));
                fills.push(zeros(pad.before * inner + input, pad.after * inner));
                fills.retain(|f| f.words > 0);
            }
            let mut parts = Vec::new();
            // The node whose launch writes each part in place: one range of the join
            // per launch (a launch never writes two ranges of one buffer).
            let mut writers = HashSet::new();
            let mut copied = 0;
            let mut offset = pad.map_or(0, |p| p.before * inner);
            for (k, (r, input)) in schedule.inputs[c].iter().zip(&node.0.inputs).enumerate() {
                let in_place = match *r {
                    Ref::Node(x) => {
                        let part = through_reshapes(schedule, x);
                        let fits = schedule.nodes[part].words() == input.words()
                            && !joins.part_of.contains_key(&part)
                            && !joins.parts.contains_key(&part)
                            && !writers.contains(&writer(schedule, part));
                        let in_place = launch_reads(part).filter(|_| fits).map(|reads| (part, reads));
                        if in_place.is_some() {
                            writers.insert(writer(schedule, part));
                        }
                        in_place
                    }
                    Ref::External(_) => None,
                };
                match in_place {
                    Some((part, reads)) => parts.push((part, offset, reads)),
                    None => {
                        let words = input.words();
                        fills.push(RangeFill {
                            offset,
                            words,
                            from: Some(k),
                        });
                        copied += 1;
                    }
                }
                offset += input.words();
            }
            let aligned = parts
                .iter()
                .map(|&(_, o, _)| o)
                .chain(fills.iter().map(|f| f.offset))
                .all(|o| o.is_multiple_of(alignment));
            // Never more launches than the plain join's (a pad's: one).
            let few_copies = match pad {
                Some(_) => copied == 0,
                None => copied <= node.0.inputs.len().div_ceil(CAT_INPUTS),
            };
            if parts.is_empty() || !aligned || !few_copies {
                continue;
            }
            let members: HashSet<usize> = parts.iter().map(|&(p, _, _)| p).collect();
            let in_members = |r: &Ref| match *r {
                Ref::Node(x) => members.contains(&buffer_of(schedule, x)),
                Ref::External(_) => false,
            };
            let reads_a_part = parts.iter().flat_map(|(_, _, reads)| reads).any(in_members);
            let copies_a_part = fills
                .iter()
                .filter_map(|f| f.from)
                .any(|k| in_members(&schedule.inputs[c][k]));
            if reads_a_part || copies_a_part {
                continue;
            }
            joins.parts.insert(c, parts.len());
            for (part, offset, _) in parts {
                joins.part_of.insert(part, (c, offset));
            }
            if !fills.is_empty() {
                joins.fills.insert(c, fills);
            }
        }
        joins
    }
}

/// The node whose launch writes `x`: its own, or for a second output its node's.
fn writer(schedule: &Schedule, x: usize) -> usize {
    match (&schedule.nodes[x].0.op, schedule.inputs[x].first()) {
        (Op::Output(_), Some(&Ref::Node(parent))) => parent,
        _ => x,
    }
}

/// The node whose buffer `x`'s value is, through reshapes and detaches (the same
/// words).
fn through_reshapes(schedule: &Schedule, mut x: usize) -> usize {
    while matches!(schedule.nodes[x].0.op, Op::Reshape | Op::Detach) {
        match schedule.inputs[x][0] {
            Ref::Node(input) => x = input,
            Ref::External(_) => break,
        }
    }
    x
}

/// The node whose buffer `x`'s value may lie in: through reshapes, detaches, narrows
/// and unbinds (which may be views of their input), but not other ops' second
/// outputs (buffers of their own).
fn buffer_of(schedule: &Schedule, mut x: usize) -> usize {
    loop {
        let next = match &schedule.nodes[x].0.op {
            Op::Reshape | Op::Detach | Op::Slice(_) | Op::Unbind(_) => schedule.inputs[x][0],
            Op::Output(_) => match schedule.inputs[x][0] {
                Ref::Node(parent) if matches!(schedule.nodes[parent].0.op, Op::Unbind(_)) => Ref::Node(parent),
                _ => return x,
            },
            _ => return x,
        };
        match next {
            Ref::Node(input) => x = input,
            Ref::External(_) => return x,
        }
    }
}
