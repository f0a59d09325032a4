//! Optimizer-update family (`shaders/optim.wgsl`): fused in-place SGD (momentum,
//! dampening, Nesterov, weight decay) and Adam/AdamW updates with `torch.optim`
//! semantics, and the step counter. They run after every other kernel of a plan and
//! write their parameter and state inputs in place.

use super::kernel::{Grid, Kernel, Uniforms, Wgsl};
use super::{Lowering, Op, Rule};
use crate::tensor::DType;
use crate::Tensor;

const SHADER: &str = include_str!("../../shaders/optim.wgsl");

/// The update rule; hyper-parameters that change between steps live in a device
/// buffer (an input), so changing the learning rate recompiles nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UpdateKind {
    /// `torch.optim.SGD`; reads lr, momentum, dampening, weight decay, nesterov from
    /// the hyper buffer.
    Sgd {
        /// A momentum buffer is kept (second written input).
        momentum: bool,
    },
    /// `torch.optim.Adam` (decoupled = false) or `AdamW` (decoupled = true).
    Adam {
        /// Weight decay applied to the parameter (AdamW) rather than the gradient.
        decoupled: bool,
    },
}

impl Rule for UpdateKind {
    fn name(&self) -> &'static str {
        "optimizer_update"
    }
    // Inputs: grad, hyper, step, then the written param and state buffers.
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let n = inputs[0].iter().product();
        Lowering::in_place(UpdateKernel { kind: *self, n }, inputs.len())
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        vec![None; inputs.len()]
    }
    fn in_place_from(&self) -> Option<usize> {
        Some(3)
    }
}

/// Adds one to a step counter in place.
pub(crate) struct Increment;

impl Rule for Increment {
    fn name(&self) -> &'static str {
        "increment"
    }
    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Lowering {
        Lowering::in_place(IncrementKernel, 1)
    }
    fn backward(&self, _: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        vec![None]
    }
    fn in_place_from(&self) -> Option<usize> {
        Some(0)
    }
}

/// reads [grad, hyper, step], writes [param, state…]
#[derive(Debug)]
struct UpdateKernel {
    kind: UpdateKind,
    n: usize,
}

impl Kernel for UpdateKernel {
    fn reads(&self) -> usize {
        3
    }

    /// `step` (x[2][0]) is the number of updates already applied.
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (n, grad, hyper, step) = (self.n, x[0], x[1], x[2][0]);
        match self.kind {
            UpdateKind::Sgd { momentum: false } => {
                let (lr, wd) = (hyper[0], hyper[3]);
                for (p, &g) in out[0][..n].iter_mut().zip(&grad[..n]) {
                    *p -= lr * (g + wd * *p);
                }
            }
            UpdateKind::Sgd { momentum: true } => {
                let (lr, momentum, dampening, wd, nesterov) = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4] != 0.0);
                let [param, buf] = out else {
                    unreachable!("sgd with momentum writes param, buf")
                };
                for ((p, b), &g) in param[..n].iter_mut().zip(buf[..n].iter_mut()).zip(&grad[..n]) {
                    let g = g + wd * *p;
                    *b = if step == 0.0 {
                        g
                    } else {
                        momentum * *b + (1.0 - dampening) * g
                    };
                    *p -= lr * if nesterov { g + momentum * *b } else { *b };
                }
            }
            UpdateKind::Adam { decoupled } => {
                let [param, m, v] = out else {
                    unreachable!("adam writes param, m, v")
                };
                let (param, m, v) = (&mut param[..n], &mut m[..n], &mut v[..n]);
                if decoupled {
                    adam::<true>(hyper, step, &grad[..n], param, m, v)
                } else {
                    adam::<false>(hyper, step, &grad[..n], param, m, v)
                }
            }
        }
    }

    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new().u32("n", self.n);
        let (entry, defs) = match self.kind {
            UpdateKind::Sgd { momentum: false } => ("sgd", String::new()),
            UpdateKind::Sgd { momentum: true } => ("sgd_momentum", String::new()),
            UpdateKind::Adam { decoupled } => ("adam", format!("const DECOUPLED: bool = {decoupled};\n")),
        };
        Wgsl::new(SHADER, entry, u, Grid::Threads(self.n)).defs(defs)
    }
}

/// Adam / AdamW over whole slices (zipped, so the loop vectorizes; the CPU step is
/// dominated by this loop on small models).
fn adam<const DECOUPLED: bool>(
    hyper: &[f32],
    step: f32,
    grad: &[f32],
    param: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let (lr, b1, b2, eps, wd) = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4]);
    let t = step + 1.0;
    let bc1 = 1.0 - b1.powf(t);
    let bc2_sqrt = (1.0 - b2.powf(t)).sqrt();
    let step_size = lr / bc1;
    for (((p, m), v), &g) in param.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(grad) {
        let g = if DECOUPLED {
            *p *= 1.0 - lr * wd;
            g
        } else {
            g + wd * *p
        };
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        let denom = v.sqrt() / bc2_sqrt + eps;
        *p -= step_size * *m / denom;
    }
}

/// writes [counter]
#[derive(Debug)]
struct IncrementKernel;

impl Kernel for IncrementKernel {
    fn reads(&self) -> usize {
        0
    }
    fn cpu(&self, _: &[&[f32]], out: &mut [&mut [f32]]) {
        out[0][0] += 1.0;
    }
    fn wgsl(&self) -> Wgsl {
        Wgsl::new(SHADER, "increment", Uniforms::new(), Grid::Groups(1))
    }
}

impl Tensor {
    /// An in-place update of `param` and its `state` buffers from `grad`, reading the
    /// hyper-parameters and the number of steps taken from device buffers. It runs
    /// last in its plan (`plan::realize`'s updates).
    pub(crate) fn optimizer_update(
        kind: UpdateKind,
        grad: &Tensor,
        hyper: &Tensor,
        steps: &Tensor,
        param: &Tensor,
        state: &[Tensor],
    ) -> Tensor {
        let mut inputs = vec![grad.clone(), hyper.clone(), steps.clone(), param.clone()];
        inputs.extend(state.iter().cloned());
        Tensor::from_node(Op::Update(kind), inputs, vec![], DType::F32)
    }

    /// Adds one to a step counter in place.
    pub(crate) fn increment(counter: &Tensor) -> Tensor {
        Tensor::from_node(Op::Increment, vec![counter.clone()], vec![], DType::F32)
    }
}
