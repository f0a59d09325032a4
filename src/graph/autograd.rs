//! Reverse-mode autodiff: a topological sort and a reverse walk that appends each
//! op's gradient rule (written as graph ops) to the same graph. Two rewrites keep
//! the gradients of unrolled recurrences cheap: a weight's gradient terms that are
//! products of one form become one product ([`sum_terms`]), and a concatenation of
//! parts already concatenated in this pass is reused ([`Joins`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::fast_path::{self, FastPath};
use crate::ops::{Cast, Op};
use crate::{DType, Error, Result, Tensor};

/// Gradients of the trainable tensors a loss depends on, keyed by tensor identity.
/// The values are lazy graph nodes: reading one, or applying an optimizer step,
/// computes them.
#[derive(Clone, Default)]
pub struct Gradients {
    /// By parameter id: iterated in parameter-creation order, so that any graph built
    /// from the pairs (a norm, a count of non-finite values, clipped sums) has the same
    /// structure every step and its plan is found in the cache.
    by_id: BTreeMap<u64, (Tensor, Tensor)>,
    /// The loss they came from: an optimizer step computes it in the same plan, so
    /// reading it afterwards is a download, and it keeps its pre-step value.
    loss: Option<Tensor>,
    /// More values an optimizer step computes in its plan (see `with_outputs`).
    outputs: Vec<Tensor>,
}

impl Gradients {
    /// The gradient of `param`, if the loss depends on it.
    pub fn get(&self, param: &Tensor) -> Option<&Tensor> {
        self.by_id.get(&param.id()).map(|(_, g)| g)
    }

    /// `(parameter, gradient)` pairs, in parameter-creation order (the same every
    /// step).
    pub fn iter(&self) -> impl Iterator<Item = (&Tensor, &Tensor)> {
        self.by_id.values().map(|(p, g)| (p, g))
    }

    /// Number of parameters with a gradient.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The loss these gradients were computed from.
    pub fn loss(&self) -> Option<&Tensor> {
        self.loss.as_ref()
    }

    /// Asks the optimizer step that consumes these gradients to also compute
    /// `outputs` (e.g. running metric sums) in its plan, before the update, so they
    /// cost no extra plan or submit.
    pub fn with_outputs(mut self, outputs: &[Tensor]) -> Gradients {
        self.outputs.extend(outputs.iter().cloned());
        self
    }

    /// The same loss and outputs with other gradients (e.g. averaged over ranks).
    pub(crate) fn with_values(&self, pairs: Vec<(Tensor, Tensor)>) -> Gradients {
        Gradients {
            by_id: pairs.into_iter().map(|(p, g)| (p.id(), (p, g))).collect(),
            loss: self.loss.clone(),
            outputs: self.outputs.clone(),
        }
    }

    /// The loss and the extra outputs: what a step computes besides the updates.
    pub(crate) fn step_roots(&self) -> Vec<Tensor> {
        self.loss.iter().chain(&self.outputs).cloned().collect()
    }

    /// Whether no parameter got a gradient.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The global L2 norm of all gradients, `sqrt(Σ‖g‖²)`, as a lazy scalar (summed
    /// in parameter-creation order, so it is the same number every run).
    pub fn global_norm(&self) -> Tensor {
        let mut squares = self.by_id.values().map(|(_, g)| g.square().sum());
        let first = squares.next().expect("global_norm: no gradients");
        squares.fold(first, |acc, s| &acc + &s).sqrt()
    }

    /// `torch.nn.utils.clip_grad_norm_`: every gradient scaled by
    /// `min(1, max_norm / (‖g‖ + 1e-6))` with `‖g‖` the global norm. The scaling is
    /// part of the step's plan (no readback).
    ///
    /// # Panics
    /// If `max_norm` is not positive.
    #[track_caller]
    pub fn clip_norm(&self, max_norm: f32) -> Gradients {
        assert!(max_norm > 0.0, "clip_norm: max_norm must be positive, got {max_norm}");
        if self.is_empty() {
            return self.clone();
        }
        // min(1, c) = -max(-c, -1)
        let coef = self.global_norm().add_scalar(1e-6).recip().mul_scalar(max_norm);
        let coef = coef.neg().maximum(&Tensor::full(&[], -1.0, coef.device())).neg();
        self.map(|g| g * &coef)
    }

    /// `torch.nn.utils.clip_grad_value_`: every gradient element clamped to
    /// `[-clip, clip]`.
    ///
    /// # Panics
    /// If `clip` is not positive.
    #[track_caller]
    pub fn clip_value(&self, clip: f32) -> Gradients {
        assert!(clip > 0.0, "clip_value: clip must be positive, got {clip}");
        self.map(|g| g.clamp(-clip, clip))
    }

    fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> Gradients {
        Gradients {
            by_id: self.by_id.iter().map(|(id, (p, g))| (*id, (p.clone(), f(g)))).collect(),
            loss: self.loss.clone(),
            outputs: self.outputs.clone(),
        }
    }
}

/// Nodes that lead to `root` through trainable paths, inputs before users.
fn topo_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative DFS (deep graphs such as unrolled RNNs would overflow the stack).
    let mut stack: Vec<(Tensor, usize)> = vec![(root.clone(), 0)];
    seen.insert(root.id());
    while let Some((node, next)) = stack.pop() {
        if next < node.0.inputs.len() {
            let child = node.0.inputs[next].clone();
            stack.push((node, next + 1));
            if child.is_trainable() && seen.insert(child.id()) {
                stack.push((child, 0));
            }
        } else {
            order.push(node);
        }
    }
    order
}

pub(crate) fn backward(loss: &Tensor) -> Result<Gradients> {
    if loss.numel() != 1 {
        return Err(Error::Invalid(format!(
            "backward: the loss must have one element, got shape {:?} (reduce it with sum or mean)",
            loss.shape()
        )));
    }
    if !loss.is_trainable() {
        return Err(Error::Invalid(
            "backward: the loss does not depend on any trainable tensor".into(),
        ));
    }
    let order = topo_order(loss);
    let mut joins = Joins::default();
    // Every gradient term of a node, summed when the node's own backward runs.
    let mut grads: HashMap<u64, Vec<Tensor>> = HashMap::new();
    // The seed: a resident 1.0 the device keeps (no launch).
    let one = Tensor::leaf(
        loss.device().one()?,
        loss.shape().to_vec(),
        DType::F32,
        loss.device(),
        None,
    );
    grads.insert(loss.id(), vec![one]);
    let mut out = Gradients {
        loss: Some(loss.clone()),
        ..Gradients::default()
    };
    // Gradients of the outputs after the first of multi-output nodes, by node.
    let mut output_grads: HashMap<u64, Vec<Option<Tensor>>> = HashMap::new();
    for node in order.iter().rev() {
        if let Op::Output(o) = &node.0.op {
            // Handed to the node that made this output, which comes later in the walk.
            if let Some(g) = grads.remove(&node.id()).map(|terms| sum_terms(terms, &mut joins)) {
                let slots = output_grads.entry(node.0.inputs[0].id()).or_default();
                slots.resize(slots.len().max(o.index), None);
                let acc = match slots[o.index - 1].take() {
                    Some(prev) => &prev + &g,
                    None => g,
                };
                slots[o.index - 1] = Some(acc);
            }
            continue;
        }
        let _attributed = crate::tensor::Origin::backward_of(node);
        let g = grads.remove(&node.id()).map(|terms| sum_terms(terms, &mut joins));
        let others = output_grads.remove(&node.id());
        let input_grads = match (g, others) {
            (None, None) => continue,
            (Some(g), None) if node.0.op == Op::Leaf => {
                out.by_id.insert(node.id(), (node.clone(), g));
                continue;
            }
            (Some(g), None) if node.0.others.get().is_none() => node.0.op.backward(&node.0.inputs, node, &g),
            (g, others) => {
                let mut outputs = vec![Some(node.clone())];
                outputs.extend(node.other_outputs());
                let mut gs = vec![g];
                let others = others.unwrap_or_default();
                gs.extend((1..outputs.len()).map(|k| others.get(k - 1).cloned().flatten()));
                node.0.op.rule().backward_outputs(&node.0.inputs, &outputs, &gs)
            }
        };
        for (input, grad) in node.0.inputs.iter().zip(input_grads) {
            let Some(grad) = grad else { continue };
            if !input.is_trainable() {
                continue;
            }
            let grad = joins.reuse(grad);
            grads.entry(input.id()).or_default().push(grad);
        }
    }
    Ok(out)
}

/// The sum of a node's gradient terms, in the order they came. Plain products of one
/// form and shape among them (`op(A_i)·op(B_i)`, no bias or activation: the weight
/// gradients of a layer used at every step of an unrolled RNN) become one product
/// over their inner dimensions joined, `Σ op(A_i)·op(B_i) = op([A_1 … A_n])·op([B_1 …
/// B_n])`: two joins and one GEMM instead of n GEMMs and n − 1 additions (a few, for
/// groups too large to join at once: [`MAX_JOINED_WORDS`]). The joins are shared
/// through `joins` with the rest of the pass. ([`FastPath::JoinedGradients`]: off,
/// every term is added as it is.)
fn sum_terms(terms: Vec<Tensor>, joins: &mut Joins) -> Tensor {
    let forms: Vec<Option<Form>> = terms.iter().map(joinable_product).collect();
    let group = |form: Option<Form>| form.is_some() && forms.iter().filter(|f| **f == form).count() > 1;
    let joining = forms.iter().any(|&f| group(f)) && fast_path::choose(FastPath::JoinedGradients, true);
    let shared = |form: Option<Form>| joining && group(form);
    let mut summed: Vec<Tensor> = Vec::new();
    for (k, term) in terms.iter().enumerate() {
        let form = forms[k];
        if !shared(form) {
            summed.push(term.clone());
        } else if forms[..k].iter().all(|f| *f != form) {
            // The first of its group: the whole group as one product, here, joined
            // in the order of the forward pass (terms arrive from the reverse walk,
            // last step first), the order in which the unbind of a sequence
            // concatenates the same steps' gradients (see `Joins`).
            let group: Vec<&Tensor> = terms
                .iter()
                .zip(&forms)
                .filter(|(_, f)| **f == form)
                .map(|(t, _)| t)
                .rev()
                .collect();
            let (ta, tb, half) = form.expect("shared forms are products");
            // The inner dimension is A's axis 1 (axis 0 when A is stored transposed)
            // and B's axis 0 (axis 1 when B is stored transposed). Mixed-precision
            // operands are joined before their cast to f16 (rounding is elementwise:
            // the same halves) and cast once.
            let mut join = |chunk: &[&Tensor], k: usize, axis: usize| {
                let source = |t: &&Tensor| {
                    if half {
                        t.0.inputs[k].0.inputs[0].clone()
                    } else {
                        t.0.inputs[k].clone()
                    }
                };
                let parts: Vec<Tensor> = chunk.iter().map(source).collect();
                let joined = joins.reuse(Tensor::cat(&parts.iter().collect::<Vec<_>>(), axis));
                if half {
                    joined.half()
                } else {
                    joined
                }
            };
            for chunk in joinable_chunks(&group) {
                let product = join(chunk, 0, 1 - ta as usize).matmul_t(&join(chunk, 1, tb as usize), ta, tb);
                debug_assert_eq!(product.shape(), term.shape(), "joined gradient product");
                summed.push(product);
            }
        }
    }
    let mut summed = summed.into_iter();
    let first = summed.next().expect("a gradient has one term at least");
    summed.fold(first, |acc, t| &acc + &t)
}

/// The concatenations made in one backward pass that lay their parts' words one after
/// the other (every axis before the joined one has length 1), by their parts (reshapes
/// looked through): the same parts concatenated again reuse the first, reshaped. In
/// an unrolled LSTM or RNN the gradients of the steps' gate pre-activations are
/// concatenated twice, as the gradient of the input projection (the unbind's
/// backward) and as an operand of the joined recurrent weight gradient: one copy.
#[derive(Default)]
struct Joins(HashMap<Vec<u64>, Tensor>);

impl Joins {
    /// The ids of the parts of `t` when it is such a concatenation.
    fn parts(t: &Tensor) -> Option<Vec<u64>> {
        let Op::Cat(cat) = &t.0.op else { return None };
        if t.shape()[..cat.axis].iter().any(|&d| d != 1) {
            return None;
        }
        let base = |mut p: &Tensor| {
            while p.0.op == Op::Reshape {
                p = &p.0.inputs[0];
            }
            p.id()
        };
        Some(t.0.inputs.iter().map(base).collect())
    }

    /// `t`, or the earlier concatenation of the same parts in `t`'s shape; a new
    /// concatenation is remembered.
    fn reuse(&mut self, t: Tensor) -> Tensor {
        let Some(parts) = Self::parts(&t) else { return t };
        match self.0.get(&parts) {
            Some(earlier) if earlier.dtype() == t.dtype() && earlier.numel() == t.numel() => earlier.reshape(t.shape()),
            _ => {
                self.0.insert(parts, t.clone());
                t
            }
        }
    }
}

/// The most words a joined operand holds: a longer group (a long sequence) is joined
/// in several chunks, so that the joins add little memory to what the gradients of
/// the steps take anyway.
const MAX_JOINED_WORDS: usize = 1 << 24;

/// `group` cut into runs whose joined operands each stay within [`MAX_JOINED_WORDS`]
/// (a run holds one term at least).
fn joinable_chunks<'a>(group: &'a [&'a Tensor]) -> Vec<&'a [&'a Tensor]> {
    let mut chunks = Vec::new();
    let (mut start, mut words) = (0, [0usize; 2]);
    for (k, term) in group.iter().enumerate() {
        let size = [term.0.inputs[0].numel(), term.0.inputs[1].numel()];
        if k > start && (words[0] + size[0] > MAX_JOINED_WORDS || words[1] + size[1] > MAX_JOINED_WORDS) {
            chunks.push(&group[start..k]);
            (start, words) = (k, [0, 0]);
        }
        words = [words[0] + size[0], words[1] + size[1]];
    }
    chunks.push(&group[start..]);
    chunks
}

/// A joinable product's form: `(ta, tb, half)`.
type Form = (bool, bool, bool);

/// The form of a term that is an unrealized plain 2-D product — in f16, only when
/// both operands are casts of f32 values, which can be joined before the cast — or
/// `None`. (Terms of one node all have its shape, so the form decides which can be
/// joined.)
fn joinable_product(term: &Tensor) -> Option<Form> {
    let cast = |t: &Tensor| t.0.op == Op::Cast(Cast::ToF16);
    match &term.0.op {
        Op::MatMul(m)
            if !m.bias
                && m.act.is_none()
                && (!m.half || term.0.inputs.iter().all(cast))
                && term.0.inputs.iter().all(|t| t.shape().len() == 2)
                && term.0.storage.lock().unwrap().is_none() =>
        {
            Some((m.ta, m.tb, m.half))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;

    /// Lazy operands (nothing is computed): terms of 2²³ + 2²² words are joined two at
    /// a time, the third alone; terms that are not plain products are not grouped.
    #[test]
    fn long_groups_are_joined_in_chunks_of_bounded_size() {
        let dev = Device::cpu();
        let rows = 1 << 22;
        let term = || Tensor::full(&[rows, 2], 1.0, &dev).matmul_t(&Tensor::full(&[rows, 1], 1.0, &dev), true, false);
        let (a, b, c) = (term(), term(), term());
        assert_eq!(joinable_product(&a), Some((true, false, false)));
        let group = [&a, &b, &c];
        let sizes: Vec<usize> = joinable_chunks(&group).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [2, 1]);
        let relu = Tensor::full(&[2, 1], 1.0, &dev).relu();
        assert_eq!(joinable_product(&relu), None);
        assert_eq!(sum_terms(vec![a, b, c], &mut Joins::default()).shape(), [2, 1]);
    }

    /// An unrolled RNN (lazy, nothing computed): the gradient of the unbound input
    /// sequence is the same concatenation of the steps' gradients that the recurrent
    /// weight's joined gradient uses, reshaped, not a second one.
    #[test]
    fn a_concatenation_of_the_same_parts_is_made_once() {
        let dev = Device::cpu();
        let seq = Tensor::from_vec(vec![0.1; 60], &[5, 3, 4], &dev)
            .unwrap()
            .requires_grad()
            .unwrap();
        let w = Tensor::from_vec(vec![0.2; 16], &[4, 4], &dev)
            .unwrap()
            .requires_grad()
            .unwrap();
        let mut h = Tensor::zeros(&[3, 4], &dev);
        for xg in seq.unbind(0) {
            h = (&xg + &h.matmul_t(&w, false, true)).tanh();
        }
        let grads = h.sum().backward().unwrap();
        let (g_seq, g_w) = (grads.get(&seq).unwrap(), grads.get(&w).unwrap());
        assert_eq!(g_seq.0.op, Op::Reshape, "the sequence's gradient is a view");
        let joined = &g_seq.0.inputs[0];
        assert!(matches!(joined.0.op, Op::Cat(_)) && joined.shape() == [15, 4]);
        assert!(
            g_w.0.inputs.iter().any(|operand| operand.id() == joined.id()),
            "the weight's gradient product reads the same concatenation"
        );
    }
}
