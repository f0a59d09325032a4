//! Kernel launches: the op table lowered to concrete sizes. Each variant names its
//! kernel family (`shaders/<family>.wgsl` and the matching `cpu.rs` function) and
//! its bindings, reads first, then writes.

use crate::graph::elementwise::{BinaryOp, UnaryOp};
use crate::graph::op::{Act, Op, ReduceKind, UpdateKind};
use crate::tensor::numel;

/// Most axes a strided or broadcasting kernel handles.
pub(crate) const MAX_RANK: usize = 6;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Kernel {
    /// writes [out]
    Fill { n: usize, value: f32 },
    /// reads [x], writes [out]
    Unary { op: UnaryOp, n: usize },
    /// reads [a, b], writes [out]; strides are 0 along broadcast axes.
    Binary {
        op: BinaryOp,
        shape: Vec<usize>,
        a_strides: Vec<usize>,
        b_strides: Vec<usize>,
    },
    /// reads [a, b, bias?], writes [out]
    MatMul {
        m: usize,
        k: usize,
        n: usize,
        ta: bool,
        tb: bool,
        bias: bool,
        act: Act,
    },
    /// reads [x] viewed as [outer, len, inner], writes [outer, inner]; when
    /// `inner == 1`, each row is reduced in chunks of `chunk` (one workgroup each),
    /// writing [outer, ⌈len / chunk⌉] (a long row takes two launches).
    Reduce {
        kind: ReduceKind,
        outer: usize,
        len: usize,
        inner: usize,
        chunk: usize,
    },
    /// reads [x] viewed as [outer, len, inner], writes u32 [outer, inner]
    ArgMax { outer: usize, len: usize, inner: usize },
    /// reads [x], writes [out]: out[i] = x[Σ idx_d · in_strides_d] (permute, expand).
    Strided { shape: Vec<usize>, in_strides: Vec<usize> },
    /// reads [logits, labels], writes [loss per row]
    CrossEntropyRows { rows: usize, classes: usize },
    /// reads [logits, labels, g], writes [grad logits]
    CrossEntropyRowsGrad { rows: usize, classes: usize },
    /// reads [grad, hyper, step], writes [param, state…]
    Update { kind: UpdateKind, n: usize },
    /// writes [counter]
    Increment,
    /// reads [x, key], writes [out]: inverted dropout (see `rng::dropout_threshold`).
    Dropout { n: usize, p: f32 },
    /// reads [labels], writes [out] of `n` = rows · classes words
    OneHot { n: usize, classes: usize },
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        strides[i] = s;
        s *= shape[i];
    }
    strides
}

/// Strides of `shape` read as if broadcast to `out` (0 along broadcast axes).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = contiguous_strides(shape);
    let lead = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < lead || shape[i - lead] == 1 {
                0
            } else {
                own[i - lead]
            }
        })
        .collect()
}

/// Drops axes of length 1 and merges axes that are contiguous in every operand, so
/// kernels see the smallest rank (and `MAX_RANK` is rarely a limit).
fn simplify(shape: &[usize], strides: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut out_shape: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for axis in 0..shape.len() {
        if shape[axis] == 1 {
            continue;
        }
        let mergeable = !out_shape.is_empty()
            && strides.iter().enumerate().all(|(k, s)| {
                let prev = *out_strides[k].last().unwrap();
                prev == s[axis] * shape[axis]
            });
        if mergeable {
            let last = out_shape.len() - 1;
            out_shape[last] *= shape[axis];
            for (k, s) in strides.iter().enumerate() {
                *out_strides[k].last_mut().unwrap() = s[axis];
            }
        } else {
            out_shape.push(shape[axis]);
            for (k, s) in strides.iter().enumerate() {
                out_strides[k].push(s[axis]);
            }
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        for s in &mut out_strides {
            s.push(0);
        }
    }
    (out_shape, out_strides)
}

impl Kernel {
    /// The kernel computing `op` for inputs of these shapes; `None` for aliases.
    pub(crate) fn for_node(op: &Op, inputs: &[&[usize]], out: &[usize]) -> Option<Kernel> {
        let n = numel(out);
        Some(match op {
            Op::Leaf | Op::Reshape => return None,
            Op::Fill(value) => Kernel::Fill { n, value: *value },
            Op::Unary(op) => Kernel::Unary { op: *op, n },
            Op::Binary(op) => {
                let a = broadcast_strides(inputs[0], out);
                let b = broadcast_strides(inputs[1], out);
                let (shape, mut s) = simplify(out, &[&a, &b]);
                let b_strides = s.pop().unwrap();
                let a_strides = s.pop().unwrap();
                Kernel::Binary {
                    op: *op,
                    shape,
                    a_strides,
                    b_strides,
                }
            }
            Op::MatMul { ta, tb, bias, act } => {
                let k = if *ta { inputs[0][0] } else { inputs[0][1] };
                Kernel::MatMul {
                    m: out[0],
                    k,
                    n: out[1],
                    ta: *ta,
                    tb: *tb,
                    bias: *bias,
                    act: *act,
                }
            }
            Op::Reduce { kind, axis } => {
                let (outer, len, inner) = split_axis(inputs[0], *axis);
                Kernel::Reduce {
                    kind: *kind,
                    outer,
                    len,
                    inner,
                    chunk: len,
                }
            }
            Op::ArgMax { axis } => {
                let (outer, len, inner) = split_axis(inputs[0], *axis);
                Kernel::ArgMax { outer, len, inner }
            }
            Op::Permute(perm) => {
                let own = contiguous_strides(inputs[0]);
                let in_strides: Vec<usize> = perm.iter().map(|&p| own[p]).collect();
                let (shape, mut s) = simplify(out, &[&in_strides, &contiguous_strides(out)]);
                s.pop();
                Kernel::Strided {
                    shape,
                    in_strides: s.pop().unwrap(),
                }
            }
            Op::Expand => {
                let in_strides = broadcast_strides(inputs[0], out);
                let (shape, mut s) = simplify(out, &[&in_strides, &contiguous_strides(out)]);
                s.pop();
                Kernel::Strided {
                    shape,
                    in_strides: s.pop().unwrap(),
                }
            }
            Op::CrossEntropyRows => Kernel::CrossEntropyRows {
                rows: inputs[0][0],
                classes: inputs[0][1],
            },
            Op::CrossEntropyRowsGrad => Kernel::CrossEntropyRowsGrad {
                rows: inputs[0][0],
                classes: inputs[0][1],
            },
            Op::Update(kind) => Kernel::Update {
                kind: *kind,
                n: numel(inputs[0]),
            },
            Op::Increment => Kernel::Increment,
            Op::Dropout { p } => Kernel::Dropout { n, p: *p },
            Op::OneHot { classes } => Kernel::OneHot { n, classes: *classes },
        })
    }

    /// How many leading bindings are read-only.
    pub(crate) fn reads(&self) -> usize {
        match self {
            Kernel::Fill { .. } | Kernel::Increment => 0,
            Kernel::Unary { .. }
            | Kernel::Reduce { .. }
            | Kernel::ArgMax { .. }
            | Kernel::Strided { .. }
            | Kernel::OneHot { .. } => 1,
            Kernel::Binary { .. } | Kernel::CrossEntropyRows { .. } | Kernel::Dropout { .. } => 2,
            Kernel::MatMul { bias, .. } => 2 + *bias as usize,
            Kernel::CrossEntropyRowsGrad { .. } | Kernel::Update { .. } => 3,
        }
    }
}

/// Longest row one workgroup reduces alone; longer rows are reduced in chunks
/// first (more parallelism, and no invocation loops for too long).
const ROW_CHUNK: usize = 4096;

impl Kernel {
    /// Splits a long-row reduction into a chunked pass and a final pass; returns the
    /// launches and the words of the intermediate buffer (0 when not split).
    pub(crate) fn split(self) -> (Vec<Kernel>, usize) {
        match self {
            Kernel::Reduce {
                kind,
                outer,
                len,
                inner: 1,
                ..
            } if len > 4 * ROW_CHUNK => {
                let chunks = len.div_ceil(ROW_CHUNK);
                let first = Kernel::Reduce {
                    kind,
                    outer,
                    len,
                    inner: 1,
                    chunk: ROW_CHUNK,
                };
                let second = Kernel::Reduce {
                    kind,
                    outer,
                    len: chunks,
                    inner: 1,
                    chunk: chunks,
                };
                (vec![first, second], outer * chunks)
            }
            k => (vec![k], 0),
        }
    }
}

/// `[outer, len, inner]` view of a shape around `axis`.
pub(crate) fn split_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simplify_merges_contiguous_axes_and_keeps_broadcast_ones() {
        let out = [2, 3, 4];
        let a = contiguous_strides(&out);
        let b = broadcast_strides(&[4], &out);
        let (shape, s) = simplify(&out, &[&a, &b]);
        assert_eq!(shape, vec![6, 4]);
        assert_eq!(s[0], vec![4, 1]);
        assert_eq!(s[1], vec![0, 1]);
    }
}
