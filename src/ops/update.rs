//! Optimizer-update family (`shaders/update.wgsl`): fused in-place SGD (momentum,
//! dampening, Nesterov, weight decay), Adam/AdamW, RMSprop (momentum, centered) and
//! Adagrad (lr decay) updates with `torch.optim` semantics. They run after every other kernel of a plan and write their parameter
//! and state inputs in place; the step count lives on the host, which computes each
//! step's coefficients. One departure from `torch.optim`: a state value that decays
//! below the smallest normal f32 (momentum, Adam's moments, RMSprop's averages where
//! a gradient stays zero) is stored as zero ([`flush_subnormal`]).

use super::{Lowering, Op, Rule};
use crate::backend::cpu::helper_thread::join_rows;
use crate::backend::kernel::{Grid, Kernel, Tune, Uniforms, Wgsl};
use crate::fast_path::{self, FastPath};
use crate::tensor::DType;
use crate::Tensor;

const SHADER: &str = include_str!("../../shaders/update.wgsl");

/// The update rule. Its coefficients (`UpdateKind::coefficients`) live in a device
/// buffer (an input), so changing the learning rate recompiles nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UpdateKind {
    /// `torch.optim.SGD`.
    Sgd {
        /// A momentum buffer is kept (second written input).
        momentum: bool,
    },
    /// `torch.optim.Adam` (decoupled = false) or `AdamW` (decoupled = true).
    Adam {
        /// Weight decay applied to the parameter (AdamW) rather than the gradient.
        decoupled: bool,
    },
    /// `torch.optim.RMSprop`: state `square_avg`, then `momentum_buffer` (with
    /// momentum), then `grad_avg` (centered).
    RmsProp {
        /// A momentum buffer is kept.
        momentum: bool,
        /// The running mean of the gradient is subtracted (centered RMSprop).
        centered: bool,
    },
    /// `torch.optim.Adagrad`: state `sum`.
    Adagrad,
}

impl UpdateKind {
    /// The values the kernel reads from its coefficient buffer for update number
    /// `step` (0 for the first), from the optimizer's `settings` as f64 (SGD: lr,
    /// momentum, dampening, weight_decay, nesterov; Adam: lr, beta1, beta2, eps,
    /// weight_decay). As `torch.optim`, everything that depends only on the step
    /// (Adam's bias corrections `1 − βᵗ`, which cancel in f32) is computed here in
    /// f64 and rounded once, so both backends stay within a few ulps of PyTorch.
    ///
    /// SGD: lr, momentum, 1 − dampening, weight_decay, nesterov (0|1), first step (0|1).
    /// Adam: 1 − β₁, β₂, 1 − β₂, eps, weight_decay, 1 − lr·weight_decay, −lr / (1 − β₁ᵗ),
    /// √(1 − β₂ᵗ).
    /// RMSprop (settings lr, alpha, eps, weight_decay, momentum, centered): lr, α,
    /// 1 − α, eps, weight_decay, momentum.
    /// Adagrad (settings lr, lr_decay, weight_decay, initial_accumulator_value, eps):
    /// lr / (1 + (t − 1)·lr_decay), weight_decay, eps.
    pub(crate) fn coefficients(&self, settings: &[f64], step: u64) -> Vec<f32> {
        let v = |x: f64| x as f32;
        match self {
            UpdateKind::Sgd { .. } => {
                let [lr, momentum, dampening, wd, nesterov] = settings[..] else {
                    unreachable!("sgd has five settings")
                };
                vec![
                    v(lr),
                    v(momentum),
                    v(1.0 - dampening),
                    v(wd),
                    v(nesterov),
                    (step == 0) as u32 as f32,
                ]
            }
            UpdateKind::Adam { .. } => {
                let [lr, beta1, beta2, eps, wd] = settings[..] else {
                    unreachable!("adam has five settings")
                };
                let t = i32::try_from(step + 1).unwrap_or(i32::MAX);
                let bias_correction1 = 1.0 - beta1.powi(t);
                let bias_correction2 = 1.0 - beta2.powi(t);
                vec![
                    v(1.0 - beta1),
                    v(beta2),
                    v(1.0 - beta2),
                    v(eps),
                    v(wd),
                    v(1.0 - lr * wd),
                    v(-(lr / bias_correction1)),
                    v(bias_correction2.sqrt()),
                ]
            }
            UpdateKind::RmsProp { .. } => {
                let [lr, alpha, eps, wd, momentum, _centered] = settings[..] else {
                    unreachable!("rmsprop has six settings")
                };
                vec![v(lr), v(alpha), v(1.0 - alpha), v(eps), v(wd), v(momentum)]
            }
            UpdateKind::Adagrad => {
                let [lr, lr_decay, wd, _initial, eps] = settings[..] else {
                    unreachable!("adagrad has five settings")
                };
                vec![v(lr / (1.0 + step as f64 * lr_decay)), v(wd), v(eps)]
            }
        }
    }

    /// The value each state buffer starts from: zeros, but for Adagrad's `sum`
    /// (`initial_accumulator_value`).
    pub(crate) fn initial_state(&self, settings: &[f64]) -> f32 {
        match self {
            UpdateKind::Adagrad => settings[3] as f32,
            _ => 0.0,
        }
    }
}

/// The updates of `params` parameters in one launch. Inputs: gradient 0, the
/// coefficients, gradients 1…, then each parameter followed by its state buffers
/// (one parameter: the gradient, the coefficients, the parameter and its state).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateMany {
    /// The rule, the same for every parameter.
    pub kind: UpdateKind,
    /// How many parameters.
    pub params: usize,
}

impl UpdateKind {
    /// State buffers per parameter.
    pub(crate) fn state_buffers(&self) -> usize {
        match self {
            UpdateKind::Sgd { momentum } => *momentum as usize,
            UpdateKind::Adam { .. } => 2,
            UpdateKind::RmsProp { momentum, centered } => 1 + *momentum as usize + *centered as usize,
            UpdateKind::Adagrad => 1,
        }
    }
}

impl Rule for UpdateMany {
    fn name(&self) -> &'static str {
        "optimizer_update"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let k = self.params;
        let grad = |j: usize| if j == 0 { 0 } else { j + 1 };
        let sizes = (0..k).map(|j| inputs[grad(j)].iter().product()).collect();
        Lowering::in_place(UpdateKernel { kind: self.kind, sizes }, inputs.len())
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        vec![None; inputs.len()]
    }
    fn in_place_from(&self) -> Option<usize> {
        Some(self.params + 1)
    }
}

/// reads [grad 0, coefficients, grad 1…], writes [param 0, state 0…, param 1, …]
#[derive(Debug)]
struct UpdateKernel {
    kind: UpdateKind,
    /// Words of each parameter.
    sizes: Vec<usize>,
}

impl Kernel for UpdateKernel {
    fn reads(&self) -> usize {
        self.sizes.len() + 1
    }

    /// The same operations in the same order as the WGSL kernel and as PyTorch's
    /// single-tensor (CPU) path, one parameter after the other.
    /// A parameter of [`SPLIT_WORDS`] words or more is updated on two threads, half of
    /// its words each ([`FastPath::UpdateSplit`]; every word's update is independent
    /// of the others, so the bits are the same).
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let c = x[1];
        let per = 1 + self.kind.state_buffers();
        for (j, (&n, out)) in self.sizes.iter().zip(out.chunks_mut(per)).enumerate() {
            let grad = &x[if j == 0 { 0 } else { j + 1 }][..n];
            let mut words: Vec<&mut [f32]> = out.iter_mut().map(|s| &mut s[..n]).collect();
            if fast_path::choose(FastPath::UpdateSplit, n >= SPLIT_WORDS) {
                let ones = [1; 8];
                join_rows(n, (&[grad], &ones[..1]), (&mut words, &ones[..per]), |_, g, o| {
                    update_cpu(self, c, g[0], o)
                });
            } else {
                update_cpu(self, c, grad, &mut words);
            }
        }
    }

    /// All parameters in one launch (see [`UpdateKernel::pass`]).
    fn wgsl(&self) -> Wgsl {
        self.pass(&(0..self.sizes.len()).collect::<Vec<_>>())
    }

    /// Two ways with the same bits (the same operations on every word): all
    /// parameters in one launch (multi-tensor apply: fewer dispatches), or one
    /// launch per parameter (smaller kernels; faster on lavapipe, which runs a
    /// kernel's branches for every invocation). The GPU autotune picks per adapter.
    fn tune(&self) -> Option<Tune> {
        let entry = self.pass(&[]).entry;
        let words = self.sizes.iter().sum();
        Some(Tune::one_or_each(
            entry,
            "per parameter",
            self.sizes.len(),
            words,
            |w| self.pass(w),
        ))
    }
}

/// Words of one parameter from which its CPU update runs on two threads (Adam takes
/// ~1.5 ns a word on one core; handing half to the helper thread ~2 µs).
const SPLIT_WORDS: usize = 32 * 1024;

crate::backend::cpu::vmath::simd_fn! {
    /// [`UpdateKernel`]'s CPU pass over the words of one parameter (or a part of them).
    fn update_cpu(kernel: &UpdateKernel, c: &[f32], grad: &[f32], out: &mut [&mut [f32]]) {
        kernel.update_one(c, grad, out)
    }
}

impl UpdateKernel {
    /// [`Kernel::cpu`]'s loops over the `grad.len()` words of one parameter: `out`
    /// holds the parameter and its state buffers, `c` the coefficients.
    #[inline(always)]
    fn update_one(&self, c: &[f32], grad: &[f32], out: &mut [&mut [f32]]) {
        let n = grad.len();
        match self.kind {
            UpdateKind::Sgd { momentum: false } => {
                let (lr, wd) = (c[0], c[3]);
                for (p, &g) in out[0][..n].iter_mut().zip(grad) {
                    *p -= lr * (g + wd * *p);
                }
            }
            UpdateKind::Sgd { momentum: true } => {
                let (lr, momentum, undamped, wd, nesterov, first) = (c[0], c[1], c[2], c[3], c[4] != 0.0, c[5] != 0.0);
                let [param, buf] = out else {
                    unreachable!("sgd with momentum writes param, buf")
                };
                for ((p, b), &g) in param[..n].iter_mut().zip(buf[..n].iter_mut()).zip(grad) {
                    let g = g + wd * *p;
                    *b = flush_subnormal(if first { g } else { momentum * *b + undamped * g });
                    *p -= lr * if nesterov { g + momentum * *b } else { *b };
                }
            }
            UpdateKind::Adam { decoupled } => {
                let [param, m, v] = out else {
                    unreachable!("adam writes param, m, v")
                };
                let (param, m, v) = (&mut param[..n], &mut m[..n], &mut v[..n]);
                if decoupled {
                    adam::<true>(c, grad, param, m, v)
                } else {
                    adam::<false>(c, grad, param, m, v)
                }
            }
            UpdateKind::RmsProp { momentum, centered } => {
                let (param, state) = out.split_first_mut().expect("rmsprop writes param, square_avg");
                let (square, rest) = state.split_first_mut().expect("square_avg");
                let (mut buf, rest) = if momentum {
                    let (b, r) = rest.split_first_mut().expect("momentum_buffer");
                    (Some(b), r)
                } else {
                    (None, rest)
                };
                let mut grad_avg = if centered { rest.first_mut() } else { None };
                for i in 0..n {
                    let (p, sa) = (param[i], square[i]);
                    let mb = buf.as_ref().map_or(0.0, |b| b[i]);
                    let ga = grad_avg.as_ref().map_or(0.0, |b| b[i]);
                    let [p, sa, mb, ga] = rmsprop_step(c, grad[i], p, sa, mb, ga, momentum, centered);
                    (param[i], square[i]) = (p, sa);
                    if let Some(b) = buf.as_mut() {
                        b[i] = mb;
                    }
                    if let Some(b) = grad_avg.as_mut() {
                        b[i] = ga;
                    }
                }
            }
            UpdateKind::Adagrad => {
                let [param, sum] = out else {
                    unreachable!("adagrad writes param, sum")
                };
                let (clr, wd, eps) = (c[0], c[1], c[2]);
                for ((p, s), &g) in param[..n].iter_mut().zip(sum[..n].iter_mut()).zip(grad) {
                    let g = g + wd * *p;
                    *s += g * g;
                    *p += -clr * (g / (s.sqrt() + eps));
                }
            }
        }
    }

    /// The launch updating the parameters `which` (indices, in order):
    /// `update_group(group, lane)` finds the parameter whose words workgroup `group`
    /// updates (each parameter takes whole workgroups of 256 words, in order; the
    /// ranges are baked in as constants, so the branch is the same for every
    /// invocation of a workgroup) and puts word `lane` of its block through the step
    /// function.
    fn pass(&self, which: &[usize]) -> Wgsl {
        let total: usize = which.iter().map(|&j| self.sizes[j]).sum();
        let groups: usize = which
            .iter()
            .map(|&j| self.sizes[j].div_ceil(if self.vector(j) { 1024 } else { 256 }))
            .sum();
        let u = Uniforms::new().u32("n", total);
        let (entry, decoupled) = match self.kind {
            UpdateKind::Sgd { momentum: false } => ("sgd", false),
            UpdateKind::Sgd { momentum: true } => ("sgd_momentum", false),
            UpdateKind::Adam { decoupled } => ("adam", decoupled),
            UpdateKind::RmsProp { .. } => ("rmsprop", false),
            UpdateKind::Adagrad => ("adagrad", false),
        };
        let (momentum, centered) = match self.kind {
            UpdateKind::RmsProp { momentum, centered } => (momentum, centered),
            _ => (false, false),
        };
        let mut defs = format!(
            "const DECOUPLED: bool = {decoupled};\nconst MOMENTUM: bool = {momentum};\nconst CENTERED: bool = {centered};\n"
        );
        let per = 1 + self.kind.state_buffers();
        // The coefficients, read once at the kernel's top level (outside every branch:
        // there llvmpipe loads a word all invocations share once, not once per lane).
        let count = self.kind.coefficient_count();
        // (Eight words whatever the rule: every rule's step function is in the shader.)
        defs += "var<private> coef: array<f32, 8>;\nfn load_coefficients() {\n";
        for k in 0..count {
            defs += &format!("    coef[{k}] = in1[{k}];\n");
        }
        defs += "}\nfn update_group(group: u32, lane: u32) {\n";
        let mut start = 0;
        for &j in which {
            let n = self.sizes[j];
            let g = if j == 0 { 0 } else { j + 1 };
            let o = j * per;
            let (step, reads, writes) = self.kind.step_call(g, o);
            let vector = self.vector(j);
            let (words, per_group) = if vector { (n / 4, 1024) } else { (n, 256) };
            let body = if vector {
                // Four words per invocation: vec4 loads and stores, the scalar step
                // function on each word (the same operations as the scalar form).
                let mut b = String::new();
                for (i, r) in reads.iter().enumerate() {
                    b += &format!("let l{i} = {r}[w]; ");
                }
                for e in ["x", "y", "z", "w"] {
                    let args: Vec<String> = (0..reads.len()).map(|i| format!("l{i}.{e}")).collect();
                    b += &format!("let r{e} = {step}({}); ", args.join(", "));
                }
                for (buffer, part) in &writes {
                    let part = |e: &str| {
                        if part.is_empty() {
                            format!("r{e}")
                        } else {
                            format!("r{e}.{part}")
                        }
                    };
                    b += &format!(
                        "{buffer}[w] = vec4<f32>({}, {}, {}, {}); ",
                        part("x"),
                        part("y"),
                        part("z"),
                        part("w")
                    );
                }
                b
            } else {
                let args: Vec<String> = reads.iter().map(|r| format!("{r}[w]")).collect();
                let mut b = format!("let r = {step}({}); ", args.join(", "));
                for (buffer, part) in &writes {
                    b += &if part.is_empty() {
                        format!("{buffer}[w] = r; ")
                    } else {
                        format!("{buffer}[w] = r.{part}; ")
                    };
                }
                b
            };
            let groups = n.div_ceil(per_group);
            defs += &format!(
                "    if (group < {end}u) {{ let w = (group - {start}u) * 256u + lane; if (w < {words}u) {{ {body}}} return; }}\n",
                end = start + groups
            );
            start += groups;
        }
        defs += "}\n";
        // Indices: word w < n_j of parameter j, whose buffers hold n_j words;
        // coefficients 0..8.
        // Binding types: parameter j's gradient, value and state four words at a time
        // where it is vectorized.
        let k = self.sizes.len();
        let mut types = vec!["f32"; 1 + k + k * per];
        for j in 0..k {
            if self.vector(j) {
                types[if j == 0 { 0 } else { j + 1 }] = "vec4<f32>";
                for b in 0..per {
                    types[1 + k + j * per + b] = "vec4<f32>";
                }
            }
        }
        Wgsl::new(SHADER, entry, u, Grid::Groups(groups))
            .defs(defs)
            .types(types)
            .in_bounds()
    }

    /// Whether parameter j is updated four words per invocation: its length is a
    /// multiple of 4. ([`FastPath::Vec4`] forced off: one word.)
    fn vector(&self, j: usize) -> bool {
        self.sizes[j].is_multiple_of(4) && fast_path::forced(FastPath::Vec4) != Some(false)
    }
}

impl UpdateKind {
    /// Words of the coefficient buffer ([`UpdateKind::coefficients`]).
    fn coefficient_count(&self) -> usize {
        match self {
            UpdateKind::Sgd { .. } => 6,
            UpdateKind::Adam { .. } => 8,
            UpdateKind::RmsProp { .. } => 6,
            UpdateKind::Adagrad => 3,
        }
    }

    /// The WGSL step function of the rule for gradient binding `in{g}` and
    /// parameter binding `out{o}` (state after it): its name, the buffers it reads
    /// (in argument order) and each buffer it writes with the component of the result
    /// (empty: the result itself).
    fn step_call(&self, g: usize, o: usize) -> (&'static str, Vec<String>, Vec<(String, &'static str)>) {
        let (grad, out) = (format!("in{g}"), |k: usize| format!("out{k}"));
        match *self {
            UpdateKind::Sgd { momentum: false } => ("sgd_step", vec![grad, out(o)], vec![(out(o), "")]),
            UpdateKind::Sgd { momentum: true } => (
                "sgd_momentum_step",
                vec![grad, out(o), out(o + 1)],
                vec![(out(o), "x"), (out(o + 1), "y")],
            ),
            UpdateKind::Adam { .. } => (
                "adam_step",
                vec![grad, out(o), out(o + 1), out(o + 2)],
                vec![(out(o), "x"), (out(o + 1), "y"), (out(o + 2), "z")],
            ),
            UpdateKind::RmsProp { momentum, centered } => {
                let (b, a) = (o + 2, o + 2 + momentum as usize);
                let name = match (momentum, centered) {
                    (false, false) => "rmsprop_plain_step",
                    (true, false) => "rmsprop_momentum_step",
                    (false, true) => "rmsprop_centered_step",
                    (true, true) => "rmsprop_step",
                };
                let mut reads = vec![grad, out(o), out(o + 1)];
                let mut writes = vec![(out(o), "x"), (out(o + 1), "y")];
                if momentum {
                    reads.push(out(b));
                    writes.push((out(b), "z"));
                }
                if centered {
                    reads.push(out(a));
                    writes.push((out(a), "w"));
                }
                (name, reads, writes)
            }
            UpdateKind::Adagrad => (
                "adagrad_step",
                vec![grad, out(o), out(o + 1)],
                vec![(out(o), "x"), (out(o + 1), "y")],
            ),
        }
    }
}

/// Adam / AdamW over whole slices (zipped, so the loop vectorizes; the CPU step is
/// dominated by this loop on small models). PyTorch's order: `m.lerp_(g, 1 − β₁)`,
/// `v.mul_(β₂).addcmul_(g, g, value=1 − β₂)`, `denom = v.sqrt() / √bc₂ + eps`,
/// `p.addcdiv_(m, denom, value=−step_size)`.
#[inline(always)]
fn adam<const DECOUPLED: bool>(c: &[f32], grad: &[f32], param: &mut [f32], m: &mut [f32], v: &mut [f32]) {
    let (w1, b2, w2, eps, wd, decay, neg_step_size, bc2_sqrt) = (c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]);
    for (((p, m), v), &g) in param.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(grad) {
        let g = if DECOUPLED {
            *p *= decay;
            g
        } else {
            g + wd * *p
        };
        *m = flush_subnormal(*m + w1 * (g - *m));
        *v = flush_subnormal(*v * b2 + w2 * g * g);
        let denom = v.sqrt() / bc2_sqrt + eps;
        *p += neg_step_size * *m / denom;
    }
}

/// `x`, or zero where `|x|` is below the smallest normal f32 (NaN stays NaN): how
/// every optimizer stores a state value it has just computed. Where a gradient stays
/// zero (a unit that ReLU keeps off, a pixel that is always 0), a momentum buffer or
/// moment decays geometrically and, left alone, spends thousands of steps (Adam's
/// `v`: ~16,000 at β₂ = 0.999) as a subnormal number, every operation on which costs
/// an x86 core a microcode assist: the 784×128 Adam update of an MLP went from 55 to
/// 280 µs a step once its dead units' moments got there (after ~800 steps), and the
/// seed MLP's Fashion-MNIST epochs at batch 32 take 0.52–0.54 s without the flush,
/// 0.38 s with it. A subnormal state moves its parameter by at most
/// `lr · 1.2e-38 / eps` (Adam, RMSprop) or `lr · 1.2e-38` (momentum), below the last
/// bit of any parameter not itself within ~1e-25 of zero: the seed MLP's losses and
/// accuracies are the same with and without it. `shaders/update.wgsl` does the same.
#[inline(always)]
fn flush_subnormal(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        x
    }
}

/// One RMSprop update of one word, PyTorch's order of operations:
/// `square_avg.mul_(α).addcmul_(g, g, value=1 − α)`, centered `grad_avg.lerp_(g, 1 − α)`
/// and `avg = square_avg.addcmul(grad_avg, grad_avg, value=−1).sqrt_()`, else
/// `avg = square_avg.sqrt()`, then `avg.add_(eps)`; with momentum
/// `buf.mul_(momentum).addcdiv_(g, avg)` and `p.add_(buf, alpha=−lr)`, else
/// `p.addcdiv_(g, avg, value=−lr)`. Returns the new parameter, square_avg,
/// momentum_buffer and grad_avg.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rmsprop_step(c: &[f32], g: f32, p: f32, sa: f32, mb: f32, ga: f32, momentum: bool, centered: bool) -> [f32; 4] {
    let (lr, alpha, one_minus_alpha, eps, wd, mom) = (c[0], c[1], c[2], c[3], c[4], c[5]);
    let g = g + wd * p;
    let sa = flush_subnormal(sa * alpha + one_minus_alpha * g * g);
    let (avg, ga) = if centered {
        let ga = flush_subnormal(ga + one_minus_alpha * (g - ga));
        ((sa - ga * ga).sqrt() + eps, ga)
    } else {
        (sa.sqrt() + eps, ga)
    };
    if momentum {
        let mb = flush_subnormal(mb * mom + g / avg);
        [p + -lr * mb, sa, mb, ga]
    } else {
        [p + -lr * (g / avg), sa, mb, ga]
    }
}

impl Tensor {
    /// The in-place updates of several parameters (each with its gradient and state
    /// buffers), reading the step's coefficients ([`UpdateKind::coefficients`]) from
    /// a device buffer, as one node: one launch (multi-tensor apply). It runs last in
    /// its plan (`graph::realize_all`'s updates).
    pub(crate) fn optimizer_update_many(
        kind: UpdateKind,
        coefficients: &Tensor,
        group: &[(&Tensor, &Tensor, &[Tensor])],
    ) -> Tensor {
        let mut inputs: Vec<Tensor> = Vec::new();
        for (j, (grad, _, _)) in group.iter().enumerate() {
            inputs.push((*grad).clone());
            if j == 0 {
                inputs.push(coefficients.clone());
            }
        }
        for (_, param, state) in group {
            inputs.push((*param).clone());
            inputs.extend(state.iter().cloned());
        }
        let op = UpdateMany {
            kind,
            params: group.len(),
        };
        Tensor::from_node(Op::UpdateMany(op), inputs, vec![], DType::F32)
    }
}
