//! GRU cell family (`shaders/gru.wgsl`): one step of PyTorch's `nn.GRU` fused into
//! one kernel, gates r, z, n:
//!
//! ```text
//! r = σ(xg_r + hg_r)   z = σ(xg_z + hg_z)   n = tanh(xg_n + r·hg_n)
//! h = (1 − z)·n + z·h_prev
//! ```
//!
//! with `xg = x·W_ihᵀ + b_ih` and `hg = h_prev·W_hhᵀ + b_hh` (`[B, 3H]` each; `b_hn`
//! stays inside the reset gate's product, as PyTorch has it). The fused backward
//! writes three outputs: the gradients of xg and hg (they differ in the n block) and
//! of h_prev. No second derivative: the backward op has none.

use std::sync::Arc;

use super::lstm::cell_rows;
use super::{Bind, Launch, Lowering, Op, Rule};
use crate::backend::cpu::vmath;
use crate::backend::kernel::{Grid, Kernel, Uniforms, Wgsl};
use crate::tensor::DType;
use crate::Tensor;

const SHADER: &str = include_str!("../../shaders/gru.wgsl");

/// One GRU step. Inputs: xg `[B, 3H]`, hg `[B, 3H]`, h_prev `[B, H]`. Output: h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GruCell;

/// The backward of [`GruCell`]. Inputs: xg, hg, h_prev, dh. Outputs: dxg `[B, 3H]`,
/// then dhg `[B, 3H]`, then dh_prev `[B, H]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GruCellGrad;

impl Rule for GruCell {
    fn name(&self) -> &'static str {
        "gru_cell"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let (batch, hidden) = (inputs[2][0], inputs[2][1]);
        let kernel = GruKernel {
            batch,
            hidden,
            backward: false,
        };
        Lowering::kernel(kernel, 3)
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let mut all = inputs.to_vec();
        all.push(g.clone());
        let gates = (inputs[0].shape().to_vec(), DType::F32);
        let outputs = vec![gates.clone(), gates, (inputs[2].shape().to_vec(), DType::F32)];
        Tensor::from_node_outputs(Op::GruCellGrad(GruCellGrad), all, outputs)
            .into_iter()
            .map(Some)
            .collect()
    }
}

impl Rule for GruCellGrad {
    fn name(&self) -> &'static str {
        "gru_cell_grad"
    }
    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        let (batch, hidden) = (inputs[2][0], inputs[2][1]);
        let kernel = GruKernel {
            batch,
            hidden,
            backward: true,
        };
        let mut bindings: Vec<Bind> = (0..4).map(Bind::Input).collect();
        bindings.extend([Bind::Output(0), Bind::Output(1), Bind::Output(2)]);
        Lowering::Launches {
            temps: Vec::new(),
            outputs: vec![batch * 3 * hidden, batch * hidden],
            launches: vec![Launch {
                kernel: Arc::new(kernel),
                bindings,
            }],
        }
    }
    fn backward(&self, inputs: &[Tensor], _: &Tensor, _: &Tensor) -> Vec<Option<Tensor>> {
        vec![None; inputs.len()]
    }
}

/// Forward: reads [xg, hg, h_prev], writes [h]. Backward: reads [xg, hg, h_prev,
/// dh], writes [dxg, dhg, dh_prev]. One invocation per (row, unit).
#[derive(Debug)]
struct GruKernel {
    batch: usize,
    hidden: usize,
    backward: bool,
}

impl Kernel for GruKernel {
    fn reads(&self) -> usize {
        3 + self.backward as usize
    }

    /// Row by row: r and z over whole slices (vectorized sigmoid, `vmath.rs`),
    /// then n (vectorized tanh) and the rest per unit, in the order of the WGSL
    /// kernel. From 4096 units on, half of the rows on the helper thread (`cell_rows`).
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        // Words per row of each binding, in units of `hidden`.
        let (x_units, out_units): (&[usize], &[usize]) = if self.backward {
            (&[3, 3, 1, 1], &[3, 3, 1])
        } else {
            (&[3, 3, 1], &[1])
        };
        let rows = (self.batch, self.hidden);
        cell_rows(rows, (x, x_units), (out, out_units), |rows, x, out| {
            gru_cpu(self.hidden, self.backward, rows, x, out)
        });
    }

    fn wgsl(&self) -> Wgsl {
        let n = self.batch * self.hidden;
        let u = Uniforms::new().u32("n", n).u32("hidden", self.hidden);
        let entry = if self.backward { "gru_cell_grad" } else { "gru_cell" };
        Wgsl::new(SHADER, entry, u, Grid::Threads(n))
    }
}

vmath::simd_fn! {
    /// [`GruKernel`]'s CPU pass over `batch` rows (`gru_cell_grad`'s when
    /// `backward`), built for AVX2 where the CPU has it.
    fn gru_cpu(h: usize, backward: bool, batch: usize, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (xg, hg) = (x[0], x[1]);
        let mut rz = vec![0f32; 2 * h];
        let mut n = vec![0f32; h];
        for b in 0..batch {
            let row = b * 3 * h;
            for (k, a) in rz.iter_mut().enumerate() {
                *a = xg[row + k] + hg[row + k];
            }
            vmath::sigmoid_in_place(&mut rz);
            let (r, z) = rz.split_at(h);
            let hn = &hg[row + 2 * h..row + 3 * h];
            for j in 0..h {
                n[j] = xg[row + 2 * h + j] + r[j] * hn[j];
            }
            vmath::tanh_in_place(&mut n);
            let h_prev = &x[2][b * h..(b + 1) * h];
            if !backward {
                for j in 0..h {
                    out[0][b * h + j] = (1.0 - z[j]) * n[j] + z[j] * h_prev[j];
                }
                continue;
            }
            let g = &x[3][b * h..(b + 1) * h];
            for j in 0..h {
                let dn = g[j] * (1.0 - z[j]) * (1.0 - n[j] * n[j]);
                let dr = dn * hn[j] * r[j] * (1.0 - r[j]);
                let dz = g[j] * (h_prev[j] - n[j]) * z[j] * (1.0 - z[j]);
                out[0][row + j] = dr;
                out[0][row + h + j] = dz;
                out[0][row + 2 * h + j] = dn;
                out[1][row + j] = dr;
                out[1][row + h + j] = dz;
                out[1][row + 2 * h + j] = dn * r[j];
                out[2][b * h + j] = g[j] * z[j];
            }
        }
    }
}

impl Tensor {
    /// One fused GRU step: h from the input projection `xg` and the hidden projection
    /// `hg` (`[B, 3H]` each, gates r, z, n as PyTorch's `nn.GRU`) and the previous
    /// state `h_prev` `[B, H]`. One kernel forward, one backward.
    ///
    /// # Panics
    /// On shapes other than `[B, 3H]`, `[B, 3H]`, `[B, H]`.
    #[track_caller]
    pub fn gru_cell(xg: &Tensor, hg: &Tensor, h_prev: &Tensor) -> Tensor {
        for t in [xg, hg, h_prev] {
            t.check_f32("gru_cell");
            xg.check_same_device(t, "gru_cell");
        }
        let s = h_prev.shape();
        assert!(
            s.len() == 2 && xg.shape() == [s[0], 3 * s[1]] && hg.shape() == xg.shape(),
            "gru_cell: expects xg and hg [B, 3H] and h_prev [B, H], got {:?}, {:?}, {:?}",
            xg.shape(),
            hg.shape(),
            s
        );
        let inputs = vec![xg.clone(), hg.clone(), h_prev.clone()];
        Tensor::from_node(Op::GruCell(GruCell), inputs, s.to_vec(), DType::F32)
    }
}
