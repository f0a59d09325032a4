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
//! Both ops have two outputs (h and c; the gates' and the previous cell state's
//! gradients), written by one kernel. The backward recomputes the gates from `a`
//! (cheaper than storing them). No second derivative: the backward op has none.

use super::elementwise::sigmoid;
use super::kernel::{Grid, Kernel, Uniforms, Wgsl};
use super::{Bind, Launch, Lowering, Op, Rule};
use crate::tensor::DType;
use crate::Tensor;
use std::sync::Arc;

const SHADER: &str = include_str!("../../shaders/lstm.wgsl");

/// One LSTM step. Inputs: xg `[B, 4H]`, hg `[B, 4H]`, c_prev `[B, H]`. Outputs: h
/// `[B, H]`, then c `[B, H]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmCell;

/// The backward of [`LstmCell`]. Inputs: xg, hg, c_prev, dh, dc. Outputs: the
/// gradient of the gate pre-activations `[B, 4H]`, then of c_prev `[B, H]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LstmCellGrad;

/// One kernel reading `inputs` inputs and writing the node's output and a second
/// output of `second` words.
fn two_outputs(kernel: LstmKernel, inputs: usize, second: usize) -> Lowering {
    let mut bindings: Vec<Bind> = (0..inputs).map(Bind::Input).collect();
    bindings.extend([Bind::Output(0), Bind::Output(1)]);
    Lowering::Launches {
        temps: Vec::new(),
        outputs: vec![second],
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
        two_outputs(kernel, 3, batch * hidden)
    }
    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        self.backward_outputs(inputs, &[Some(y.clone()), None], &[Some(g.clone()), None])
    }
    fn backward_outputs(
        &self,
        inputs: &[Tensor],
        _: &[Option<Tensor>],
        grads: &[Option<Tensor>],
    ) -> Vec<Option<Tensor>> {
        let c_prev = &inputs[2];
        let zeros = || Tensor::zeros(c_prev.shape(), c_prev.device());
        let dh = grads[0].clone().unwrap_or_else(zeros);
        let dc = grads.get(1).cloned().flatten().unwrap_or_else(zeros);
        let mut all = inputs.to_vec();
        all.extend([dh, dc]);
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
        let (batch, hidden) = (inputs[2][0], inputs[2][1]);
        let kernel = LstmKernel {
            batch,
            hidden,
            backward: true,
        };
        two_outputs(kernel, 5, batch * hidden)
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        vec![None; inputs.len()]
    }
}

/// Forward: reads [xg, hg, c_prev], writes [h, c]. Backward: reads [xg, hg, c_prev,
/// dh, dc], writes [da, dc_prev]. One invocation per (row, unit).
#[derive(Debug)]
struct LstmKernel {
    batch: usize,
    hidden: usize,
    backward: bool,
}

/// The gates i, f, g, o of unit `j` of row `b`.
#[inline]
fn gates(xg: &[f32], hg: &[f32], b: usize, j: usize, hidden: usize) -> [f32; 4] {
    let a = |k: usize| xg[b * 4 * hidden + k * hidden + j] + hg[b * 4 * hidden + k * hidden + j];
    [sigmoid(a(0)), sigmoid(a(1)), a(2).tanh(), sigmoid(a(3))]
}

impl Kernel for LstmKernel {
    fn reads(&self) -> usize {
        if self.backward {
            5
        } else {
            3
        }
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let hidden = self.hidden;
        for b in 0..self.batch {
            for j in 0..hidden {
                let u = b * hidden + j;
                let [i, f, g, o] = gates(x[0], x[1], b, j, hidden);
                let c_prev = x[2][u];
                let c = f * c_prev + i * g;
                let tc = c.tanh();
                if !self.backward {
                    out[0][u] = o * tc;
                    out[1][u] = c;
                    continue;
                }
                let (dh, dc) = (x[3][u], x[4][u]);
                let dct = dc + dh * o * (1.0 - tc * tc);
                let row = b * 4 * hidden + j;
                out[0][row] = dct * g * i * (1.0 - i);
                out[0][row + hidden] = dct * c_prev * f * (1.0 - f);
                out[0][row + 2 * hidden] = dct * i * (1.0 - g * g);
                out[0][row + 3 * hidden] = dh * tc * o * (1.0 - o);
                out[1][u] = dct * f;
            }
        }
    }

    fn wgsl(&self) -> Wgsl {
        let n = self.batch * self.hidden;
        let u = Uniforms::new().u32("n", n).u32("hidden", self.hidden);
        let entry = if self.backward { "lstm_cell_grad" } else { "lstm_cell" };
        Wgsl::new(SHADER, entry, u, Grid::Threads(n))
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
        let outputs = vec![(s.to_vec(), DType::F32), (s.to_vec(), DType::F32)];
        let inputs = vec![xg.clone(), hg.clone(), c_prev.clone()];
        let mut hc = Tensor::from_node_outputs(Op::LstmCell(LstmCell), inputs, outputs).into_iter();
        (hc.next().unwrap(), hc.next().unwrap())
    }
}
