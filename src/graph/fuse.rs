//! Elementwise fusion at plan compile: a unary or binary node whose value only one
//! other elementwise node of the same shape reads (and nobody outside the plan
//! holds) is computed inside that consumer's kernel instead of on its own, so chains
//! such as `g · step(y)` (ReLU's gradient) or an LSTM cell's gate arithmetic become
//! one launch that never writes the intermediates (`src/ops/fused.rs`). The
//! debugging modes, which read every node's value, compile plans unfused.

use super::plan::Ref;
use crate::ops::fused::{Expr, MAX_INPUTS, MAX_MAPS};
use crate::ops::Op;
use crate::tensor::DType;
use crate::Tensor;

/// A fused tree: its expression over its leaves, and each leaf (one per occurrence)
/// with its shape.
pub(super) type Tree = (Expr, Vec<(Ref, Vec<usize>)>);

/// The fused form of a plan's nodes.
#[derive(Default)]
pub(super) struct Fusion {
    /// Nodes computed inside their consumer's kernel: never stored.
    pub absorbed: Vec<bool>,
    /// For each node that absorbed others: its tree.
    pub trees: Vec<Option<Tree>>,
}

impl Fusion {
    /// Plans the fusion of `nodes` (in schedule order) given each node's and update's
    /// input references, the consumers of each node inside the plan and which values
    /// are kept.
    pub(super) fn plan(nodes: &[Tensor], inputs: &[Vec<Ref>], uses: &[usize], kept: &[bool]) -> Fusion {
        let n = nodes.len();
        let elementwise = |i: usize| {
            let t = &nodes[i];
            matches!(t.0.op, Op::Unary(_) | Op::Binary(_))
                && t.dtype() == DType::F32
                && t.0.inputs.iter().all(|x| x.dtype() == DType::F32)
        };
        let mut consumer = vec![None; n];
        for (j, refs) in inputs.iter().enumerate() {
            for r in refs {
                if let Ref::Node(i) = r {
                    consumer[*i] = Some(j);
                }
            }
        }
        let mut absorbed: Vec<bool> = (0..n)
            .map(|i| {
                elementwise(i)
                    && uses[i] == 1
                    && !kept[i]
                    && consumer[i].is_some_and(|j| j < n && elementwise(j) && nodes[j].shape() == nodes[i].shape())
            })
            .collect();
        let mut trees: Vec<Option<Tree>> = vec![None; n];
        for j in (0..n).filter(|&j| elementwise(j)) {
            let build = |absorbed: &[bool], trees: &[Option<Tree>]| -> Tree {
                let mut leaves = Vec::new();
                let mut operands = Vec::new();
                for (k, r) in inputs[j].iter().enumerate() {
                    match r {
                        Ref::Node(a) if absorbed[*a] => {
                            let (e, l) = trees[*a].clone().expect("an absorbed node is elementwise");
                            operands.push(e.shifted(leaves.len()));
                            leaves.extend(l);
                        }
                        _ => {
                            operands.push(Expr::Input(leaves.len()));
                            leaves.push((*r, nodes[j].0.inputs[k].shape().to_vec()));
                        }
                    }
                }
                let expr = match nodes[j].0.op {
                    Op::Unary(op) => Expr::Unary(op, Box::new(operands.remove(0))),
                    Op::Binary(op) => {
                        let b = operands.pop().expect("two operands");
                        Expr::Binary(op, Box::new(operands.pop().expect("two operands")), Box::new(b))
                    }
                    _ => unreachable!("elementwise"),
                };
                (expr, leaves)
            };
            let mut tree = build(&absorbed, &trees);
            if tree.1.len() > MAX_INPUTS || tree.0.maps() > MAX_MAPS {
                // Too large: the operands become kernels of their own.
                for r in &inputs[j] {
                    if let Ref::Node(a) = r {
                        absorbed[*a] = false;
                    }
                }
                tree = build(&absorbed, &trees);
            }
            trees[j] = Some(tree);
        }
        // Only trees that absorbed something are fused; the rest lower as before.
        for (j, tree) in trees.iter_mut().enumerate() {
            if absorbed[j] || tree.as_ref().is_some_and(|(e, _)| e.maps() < 2) {
                *tree = None;
            }
        }
        Fusion { absorbed, trees }
    }
}
