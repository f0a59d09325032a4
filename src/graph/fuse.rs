//! Elementwise fusion at plan compile: a unary or binary node whose value only one
//! other elementwise node of the same shape reads (and nobody outside the plan
//! holds) is computed inside that consumer's kernel instead of on its own, so chains
//! such as `g · step(y)` (ReLU's gradient) or an LSTM cell's gate arithmetic become
//! one launch that never writes the intermediates (`src/ops/fused.rs`). A 2-D
//! product read only by such a tree (or by one map) computes the tree in its
//! epilogue instead (`matmul::Tail`): ReLU's gradient `(g·W)·step(y)` is one GEMM
//! launch. The debugging modes, which read every node's value, compile plans unfused.

use super::plan::Ref;
use crate::ops::fused::{Expr, MAX_INPUTS, MAX_MAPS};
use crate::ops::matmul::Tail;
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
    /// For each elementwise node computed in a product's epilogue: that product
    /// (absorbed) and the maps.
    pub tails: Vec<Option<ProductTail>>,
}

/// An elementwise node computed in the epilogue of the product it reads.
#[derive(Clone)]
pub(super) struct ProductTail {
    /// The product's node.
    pub product: usize,
    /// The maps, over the product's value (input 0) and `extras`.
    pub tail: Tail,
    /// The maps' other inputs, each with its shape.
    pub extras: Vec<(Ref, Vec<usize>)>,
}

/// Most inputs of a product's tail besides the product: with the product's three
/// and its output and split-K scratch, WebGPU's default eight storage buffers.
const MAX_TAIL_INPUTS: usize = 3;

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
        // Products whose one reader is a tree (or a single map) of their shape
        // compute it in their epilogue.
        let product = |i: usize, shape: &[usize]| {
            matches!(nodes[i].0.op, Op::MatMul(_))
                && nodes[i].shape() == shape
                && shape.len() == 2
                && nodes[i].dtype() == DType::F32
                && uses[i] == 1
                && !kept[i]
        };
        let mut tails: Vec<Option<ProductTail>> = vec![None; n];
        let roots: Vec<usize> = (0..n).filter(|&j| elementwise(j) && !absorbed[j]).collect();
        for j in roots {
            let shape = nodes[j].shape();
            let (expr, leaves) = trees[j].clone().unwrap_or_else(|| single(&nodes[j], &inputs[j]));
            let Some(p) = leaves
                .iter()
                .position(|(r, _)| matches!(r, Ref::Node(i) if product(*i, shape)))
            else {
                continue;
            };
            let extras: Vec<(Ref, Vec<usize>)> = leaves
                .iter()
                .enumerate()
                .filter(|&(q, _)| q != p)
                .map(|(_, leaf)| leaf.clone())
                .collect();
            let fits = extras.len() <= MAX_TAIL_INPUTS
                && extras
                    .iter()
                    .all(|(r, s)| *r != leaves[p].0 && (s.as_slice() == shape || s.iter().product::<usize>() == 1));
            if !fits {
                continue;
            }
            let Ref::Node(i) = leaves[p].0 else {
                unreachable!("a product is a node")
            };
            // The product is input 0, the other leaves follow in order.
            let expr = expr.remapped(&|k| match k.cmp(&p) {
                std::cmp::Ordering::Equal => 0,
                std::cmp::Ordering::Less => k + 1,
                std::cmp::Ordering::Greater => k,
            });
            let same = extras.iter().map(|(_, s)| s.as_slice() == shape).collect();
            absorbed[i] = true;
            trees[j] = None;
            tails[j] = Some(ProductTail {
                product: i,
                tail: Tail { expr, same },
                extras,
            });
        }
        Fusion { absorbed, trees, tails }
    }
}

/// The tree of one unfused map: its op over its inputs.
fn single(node: &Tensor, refs: &[Ref]) -> Tree {
    let leaves = refs
        .iter()
        .zip(&node.0.inputs)
        .map(|(r, t)| (*r, t.shape().to_vec()))
        .collect();
    let expr = match node.0.op {
        Op::Unary(op) => Expr::Unary(op, Box::new(Expr::Input(0))),
        Op::Binary(op) => Expr::Binary(op, Box::new(Expr::Input(0)), Box::new(Expr::Input(1))),
        _ => unreachable!("elementwise"),
    };
    (expr, leaves)
}
