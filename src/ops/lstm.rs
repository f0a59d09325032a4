//! LSTM cell family (`shaders/lstm.wgsl`): the gate nonlinearities and state update
//! of one time step fused into one kernel, and its fused backward, with PyTorch's
//! gate order i, f, g, o:
//!
//! ```text
//! a = xg + hg            (the input and hidden projections, [B, 4H])
//! i = σ(a_i)  f = σ(a_f)  g = tanh(a_g)  o = σ(a_o)
//! c = f·c_prev + i·g     h = o·tanh(c)
//! ```
//!
//! The forward writes the gates' activations `[B, 4H]` (its first output, kept for
//! the backward: `h` and `c`, its other outputs, hold it), h and c; the backward
//! reads them instead of the two projections, and recomputes only `tanh(c)` — one
//! transcendental a unit instead of five, half the words read. One kernel each
//! way. No second derivative: the backward op has none.

use super::{Bind, Launch, Lowering, Op, Rule};
use crate::backend::cpu::helper_thread::join_rows;
use crate::backend::cpu::vmath;
use crate::backend::kernel::{Grid, Kernel, Uniforms, Wgsl};
use crate::fast_path::{self, FastPath};
use crate::tensor::DType;
use crate::Tensor;
use std::sync::Arc;

const SHADER: &str = include_str!("../../shaders/lstm.wgsl");

/// One LSTM step. Inputs: xg `[B, 4H]`, hg `[B, 4H]`, c_prev `[B, H]`. Outputs: the
/// gates' activations `[B, 4H]` (i, f, g, o), then h `[B, H]`, then c `[B, H]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmCell;

/// The backward of [`LstmCell`]. Inputs: the gates' activations, c_prev, dh, dc.
/// Outputs: the gradient of the gate pre-activations `[B, 4H]`, then of c_prev
/// `[B, H]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmCellGrad;

/// One kernel reading `inputs` inputs and writing the node's output and `others`
/// more outputs of `words` words each.
fn one_launch(kernel: LstmKernel, inputs: usize, others: usize, words: usize) -> Lowering {
    let mut bindings: Vec<Bind> = (0..inputs).map(Bind::Input).collect();
    bindings.extend((0..=others).map(Bind::Output));
    Lowering::Launches {
        temps: Vec::new(),
        outputs: vec![words; others],
        launches: vec![Launch {
            kernel: Arc::new(kernel),
            bindings,
        }],
    }
}

impl Rule for LstmCell {
    fn name(&self) -> &'static str {
        "lstm_cell"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let (batch, hidden) = (inputs[2][0], inputs[2][1]);
        let kernel = LstmKernel {
            batch,
            hidden,
            backward: false,
        };
        one_launch(kernel, 3, 2, batch * hidden)
    }
    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        self.backward_outputs(inputs, &[Some(y.clone()), None, None], &[Some(g.clone()), None, None])
    }
    /// The gradients reaching h and c (the activations are internal: none reaches
    /// them) through the activations, which the node's own value holds.
    fn backward_outputs(
        &self,
        inputs: &[Tensor],
        outputs: &[Option<Tensor>],
        grads: &[Option<Tensor>],
    ) -> Vec<Option<Tensor>> {
        let (Some(act), [_, dh, dc]) = (&outputs[0], grads) else {
            unreachable!("an LSTM cell's backward has its activations and three gradients")
        };
        if dh.is_none() && dc.is_none() {
            return vec![None; inputs.len()];
        }
        let c_prev = &inputs[2];
        let zeros = || Tensor::zeros(c_prev.shape(), c_prev.device());
        let dh = dh.clone().unwrap_or_else(zeros);
        let dc = dc.clone().unwrap_or_else(zeros);
        let all = vec![act.clone(), c_prev.clone(), dh, dc];
        let outputs = vec![
            (inputs[0].shape().to_vec(), DType::F32),
            (c_prev.shape().to_vec(), DType::F32),
        ];
        let mut grads = Tensor::from_node_outputs(Op::LstmCellGrad(LstmCellGrad), all, outputs).into_iter();
        let (da, dc_prev) = (grads.next().unwrap(), grads.next().unwrap());
        vec![Some(da.clone()), Some(da), Some(dc_prev)]
    }
}

impl Rule for LstmCellGrad {
    fn name(&self) -> &'static str {
        "lstm_cell_grad"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let (batch, hidden) = (inputs[1][0], inputs[1][1]);
        let kernel = LstmKernel {
            batch,
            hidden,
            backward: true,
        };
        one_launch(kernel, 4, 1, batch * hidden)
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        vec![None; inputs.len()]
    }
}

/// Forward: reads [xg, hg, c_prev], writes [act, h, c]. Backward: reads [act,
/// c_prev, dh, dc], writes [da, dc_prev]. One invocation per (row, unit).
#[derive(Debug)]
struct LstmKernel {
    batch: usize,
    hidden: usize,
    backward: bool,
}

impl Kernel for LstmKernel {
    fn reads(&self) -> usize {
        if self.backward {
            4
        } else {
            3
        }
    }

    /// Row by row: the four gates' activations over whole slices (vectorized
    /// sigmoid and tanh, `vmath.rs`), then the cell arithmetic per unit, in the
    /// order of the WGSL kernel; built for AVX2 where the CPU has it. From
    /// [`SPLIT_UNITS`] units on, half of the rows on the helper thread.
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        // Words per row of each binding, in units of `hidden`.
        let (x_units, out_units): (&[usize], &[usize]) = if self.backward {
            (&[4, 1, 1, 1], &[4, 1])
        } else {
            (&[4, 4, 1], &[4, 1, 1])
        };
        let rows = (self.batch, self.hidden);
        cell_rows(rows, (x, x_units), (out, out_units), |rows, x, out| {
            lstm_cpu(self.hidden, self.backward, rows, x, out)
        });
    }

    fn wgsl(&self) -> Wgsl {
        let n = self.batch * self.hidden;
        let u = Uniforms::new().u32("n", n).u32("hidden", self.hidden);
        let entry = if self.backward { "lstm_cell_grad" } else { "lstm_cell" };
        Wgsl::new(SHADER, entry, u, Grid::Threads(n))
    }
}

/// Batch × hidden from which a cell's CPU pass is split over two threads (a cell of
/// 32 × 128 units takes ~45 µs on one core; handing half to the helper ~2 µs).
const SPLIT_UNITS: usize = 4096;

/// Runs a recurrent cell's CPU `pass` over its `batch` rows of `hidden` units: from
/// [`SPLIT_UNITS`] units on ([`FastPath::CellSplit`]), half of the rows on the helper
/// thread. `x_units` and `out_units` give each binding's words per row in units of
/// `hidden` (e.g. 4 for an LSTM's gates).
pub(crate) fn cell_rows(
    (batch, hidden): (usize, usize),
    (x, x_units): (&[&[f32]], &[usize]),
    (out, out_units): (&mut [&mut [f32]], &[usize]),
    pass: impl Fn(usize, &[&[f32]], &mut [&mut [f32]]) + Sync,
) {
    if fast_path::choose(FastPath::CellSplit, batch * hidden >= SPLIT_UNITS) {
        let width = |units: &[usize]| units.iter().map(|u| u * hidden).collect::<Vec<_>>();
        join_rows(batch, (x, &width(x_units)), (out, &width(out_units)), pass);
    } else {
        pass(batch, x, out);
    }
}

/// `c = f·c_prev + i·g` and `tanh(c)` of one row's units, from its activations.
#[inline(always)]
fn cell_state(act: &[f32], c_prev: &[f32], c: &mut [f32], tc: &mut [f32]) {
    let h = c.len();
    let (i, f, g) = (&act[..h], &act[h..2 * h], &act[2 * h..3 * h]);
    for (((c, &f), &cp), (&i, &g)) in c.iter_mut().zip(f).zip(c_prev).zip(i.iter().zip(g)) {
        *c = f * cp + i * g;
    }
    for (t, &c) in tc.iter_mut().zip(&*c) {
        *t = vmath::tanh(c);
    }
}

vmath::simd_fn! {
    /// [`LstmKernel`]'s CPU pass over `batch` rows (`lstm_cell_grad`'s when
    /// `backward`).
    fn lstm_cpu(h: usize, backward: bool, batch: usize, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let mut c = vec![0f32; h];
        let mut tc = vec![0f32; h];
        for b in 0..batch {
            let rows = b * 4 * h..(b + 1) * 4 * h;
            let units = b * h..(b + 1) * h;
            if !backward {
                let [act, h_out, c_out] = out else {
                    unreachable!("lstm_cell writes act, h, c")
                };
                // The activations, written where the backward reads them.
                let act = &mut act[rows.clone()];
                for ((a, &p), &q) in act.iter_mut().zip(&x[0][rows.clone()]).zip(&x[1][rows.clone()]) {
                    *a = p + q;
                }
                let (ifg, o) = act.split_at_mut(3 * h);
                let (if_, g) = ifg.split_at_mut(2 * h);
                if_.iter_mut().for_each(|v| *v = vmath::sigmoid(*v));
                o.iter_mut().for_each(|v| *v = vmath::sigmoid(*v));
                g.iter_mut().for_each(|v| *v = vmath::tanh(*v));
                cell_state(act, &x[2][units.clone()], &mut c, &mut tc);
                for ((out, &o), &t) in h_out[units.clone()].iter_mut().zip(&act[3 * h..]).zip(&tc) {
                    *out = o * t;
                }
                c_out[units].copy_from_slice(&c);
                continue;
            }
            let act = &x[0][rows.clone()];
            let c_prev = &x[1][units.clone()];
            cell_state(act, c_prev, &mut c, &mut tc);
            let (i, f, g, o) = (&act[..h], &act[h..2 * h], &act[2 * h..3 * h], &act[3 * h..]);
            let (dh, dc) = (&x[2][units.clone()], &x[3][units.clone()]);
            let [da, dc_prev] = out else {
                unreachable!("lstm_cell_grad writes da, dc_prev")
            };
            let (da_if, da_go) = da[rows].split_at_mut(2 * h);
            let (di, df) = da_if.split_at_mut(h);
            let (dg, do_) = da_go.split_at_mut(h);
            let dc_prev = &mut dc_prev[units];
            for j in 0..h {
                let dct = dc[j] + dh[j] * o[j] * (1.0 - tc[j] * tc[j]);
                di[j] = dct * g[j] * i[j] * (1.0 - i[j]);
                df[j] = dct * c_prev[j] * f[j] * (1.0 - f[j]);
                dg[j] = dct * i[j] * (1.0 - g[j] * g[j]);
                do_[j] = dh[j] * tc[j] * o[j] * (1.0 - o[j]);
                dc_prev[j] = dct * f[j];
            }
        }
    }
}

impl Tensor {
    /// One fused LSTM step: `(h, c)` from the input projection `xg` and the hidden
    /// projection `hg` (`[B, 4H]` each, gates i, f, g, o as PyTorch's `nn.LSTM`) and the
    /// previous cell state `c_prev` `[B, H]`. One kernel forward, one backward.
    ///
    /// # Panics
    /// On shapes other than `[B, 4H]`, `[B, 4H]`, `[B, H]`.
    #[track_caller]
    pub fn lstm_cell(xg: &Tensor, hg: &Tensor, c_prev: &Tensor) -> (Tensor, Tensor) {
        for t in [xg, hg, c_prev] {
            t.check_f32("lstm_cell");
            xg.check_same_device(t, "lstm_cell");
        }
        let s = c_prev.shape();
        assert!(
            s.len() == 2 && xg.shape() == [s[0], 4 * s[1]] && hg.shape() == xg.shape(),
            "lstm_cell: expects xg and hg [B, 4H] and c_prev [B, H], got {:?}, {:?}, {:?}",
            xg.shape(),
            hg.shape(),
            s
        );
        // The activations first: h and c hold them (an output holds its node) for
        // the backward.
        let outputs = vec![
            (xg.shape().to_vec(), DType::F32),
            (s.to_vec(), DType::F32),
            (s.to_vec(), DType::F32),
        ];
        let inputs = vec![xg.clone(), hg.clone(), c_prev.clone()];
        let mut all = Tensor::from_node_outputs(Op::LstmCell(LstmCell), inputs, outputs).into_iter();
        let _activations = all.next();
        (all.next().unwrap(), all.next().unwrap())
    }
}
