//! [`DistributedOptimizer`]: any optimizer, with gradients averaged over the ranks
//! of a [`Collective`] before every update.

use std::rc::Rc;

use super::{broadcast, Collective};
use crate::graph::realize_all;
use crate::optim::{Optimizer, OptimizerState};
use crate::{Error, Gradients, Result, Tensor};

/// Wraps an optimizer for data-parallel training (Horovod's `DistributedOptimizer`):
/// each step packs the gradients of all parameters into one buffer, sums it over the
/// ranks in rank order (one all-gather), divides by the number of ranks and lets the
/// wrapped optimizer apply the mean. Learning rate, state and checkpoints are the
/// wrapped optimizer's, so a checkpoint written by a distributed run loads into a
/// single process and back.
pub struct DistributedOptimizer<O: Optimizer> {
    inner: O,
    comm: Rc<dyn Collective>,
    /// The mean gradients of the last step, all parameters one after the other (kept
    /// so that a step does not allocate and fault in a fresh buffer).
    mean: Vec<f32>,
    /// The averaged gradients handed to the wrapped optimizer, one per parameter with
    /// a gradient, overwritten each step.
    grads: Vec<Tensor>,
}

impl<O: Optimizer> DistributedOptimizer<O> {
    /// Wraps `inner` for the group `comm` (e.g. a `World`) and broadcasts
    /// rank 0's parameters to every rank, so all replicas start identical. Every rank
    /// must call it.
    pub fn new(inner: O, comm: impl Collective + 'static) -> Result<DistributedOptimizer<O>> {
        let comm: Rc<dyn Collective> = Rc::new(comm);
        broadcast_parameters(inner.parameters(), &*comm)?;
        Ok(DistributedOptimizer {
            inner,
            comm,
            mean: Vec::new(),
            grads: Vec::new(),
        })
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped optimizer, mutably.
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }

    fn averaged_step(&mut self, grads: &Gradients) -> Result<()> {
        if self.comm.size() == 1 {
            return self.inner.step(grads); // the mean over one rank: one plan, as without
        }
        let mut pairs = Vec::new();
        for param in self.inner.parameters() {
            let Some(grad) = grads.get(param) else { continue };
            if grad.shape() != param.shape() {
                return Err(Error::ShapeMismatch {
                    op: "distributed optimizer step".into(),
                    expected: param.shape().to_vec(),
                    got: grad.shape().to_vec(),
                });
            }
            pairs.push((param.clone(), grad.clone()));
        }
        let Some((first, _)) = pairs.first() else {
            return self.inner.step(grads);
        };
        let device = first.device().clone();
        // Forward, backward, the loss and any extra outputs in one plan; the packed
        // gradients are its only download.
        let flat: Vec<Tensor> = pairs.iter().map(|(_, g)| g.reshape(&[g.numel()])).collect();
        let packed = Tensor::cat(&flat.iter().collect::<Vec<_>>(), 0);
        let mut roots = grads.step_roots();
        roots.push(packed.clone());
        realize_all(&roots, &[])?;
        let values = packed.to_vec()?;
        // The mean gradients, summed in rank order into a buffer kept from step to
        // step, are written into gradient tensors the optimizer keeps (no allocation,
        // no narrow copies in the update's plan).
        self.mean.resize(values.len(), 0.0);
        super::all_reduce_mean_into(&*self.comm, &values, &mut self.mean)?;
        let reuse = self.grads.len() == pairs.len()
            && self
                .grads
                .iter()
                .zip(&pairs)
                .all(|(g, (p, _))| g.shape() == p.shape() && g.device().same(&device));
        if !reuse {
            self.grads = pairs
                .iter()
                .map(|(param, _)| Tensor::from_vec(vec![0.0; param.numel()], param.shape(), &device))
                .collect::<Result<_>>()?;
        }
        let mut offset = 0;
        let mut averaged = Vec::with_capacity(pairs.len());
        for ((param, _), grad) in pairs.into_iter().zip(&self.grads) {
            grad.assign(&self.mean[offset..offset + param.numel()])?;
            offset += param.numel();
            averaged.push((param, grad.clone()));
        }
        self.inner.step(&grads.with_values(averaged))
    }
}

impl<O: Optimizer> Optimizer for DistributedOptimizer<O> {
    /// Averages the gradients over the ranks, then applies the wrapped optimizer's
    /// update. On error this rank is out of step with the others: the group is
    /// poisoned (see [`Collective::poison`]) so the job stops instead of hanging.
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        let result = self.averaged_step(grads);
        if let Err(e) = &result {
            self.comm.poison(&format!("a distributed optimizer step failed: {e}"));
        }
        result
    }
    fn lr(&self) -> f64 {
        self.inner.lr()
    }
    fn set_lr(&mut self, lr: f64) {
        self.inner.set_lr(lr)
    }
    fn parameters(&self) -> &[Tensor] {
        self.inner.parameters()
    }
    fn state(&self) -> Result<OptimizerState> {
        self.inner.state()
    }
    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.inner.load_state(state)
    }
    fn collective(&self) -> Option<Rc<dyn Collective>> {
        Some(self.comm.clone())
    }
}

/// Overwrites every rank's `params` with rank 0's (one download on rank 0, one
/// broadcast, one write per parameter on the others). Every rank must call it.
pub fn broadcast_parameters(params: &[Tensor], comm: &dyn Collective) -> Result<()> {
    if comm.size() == 1 || params.is_empty() {
        return Ok(());
    }
    let flat: Vec<Tensor> = params.iter().map(|p| p.reshape(&[p.numel()])).collect();
    let mut values = Tensor::cat(&flat.iter().collect::<Vec<_>>(), 0).to_vec()?;
    broadcast(comm, &mut values, 0)?;
    if comm.rank() != 0 {
        let mut offset = 0;
        for p in params {
            p.assign(&values[offset..offset + p.numel()])?;
            offset += p.numel();
        }
    }
    Ok(())
}
