//! Fused scaled-dot-product attention (`shaders/attention.wgsl`):
//! `o = softmax(scale · q·kᵀ + mask) · v` over `Z` independent slices (batch × heads),
//! with the softmax in one pass and no `[Tq, Tk]` score or weight tensor kept between
//! launches — the forward saves only each query row's log-sum-exp, and the backward
//! recomputes the weights from it (flash attention's scheme).
//!
//! * **Forward** — one GPU invocation per query row: an online softmax over the keys
//!   (running maximum, rescaled sum and accumulator), writing `o` and `lse`.
//! * **Backward** — two launches, each output written by one invocation in a fixed
//!   order (deterministic, no atomics): per query row `δ = Σ dO∘O` and
//!   `dq = scale · Σⱼ dSᵢⱼ kⱼ`; per key row `dv = Σᵢ Pᵢⱼ dOᵢ` and
//!   `dk = scale · Σᵢ dSᵢⱼ qᵢ`, with `P = exp(s − lse)` and `dS = P ∘ (dO·vᵀ − δ)`.
//!
//! The CPU twin computes the same quantities per slice with the backend's SGEMM
//! (scores, weights, products), slices dealt out to two threads from 4 MFLOP
//! ([`crate::fast_path::FastPath::GemmSplit`]); its sums run in another order than
//! the shader's, so the two agree to rounding, not to the bit.
//!
//! A mask is additive and full-size (`[Z, Tq, Tk]`, the caller broadcasts it); causal
//! masking needs no mask tensor: key `j` is visible to query `i` when `j ≤ i`
//! (PyTorch's `is_causal`: aligned to the top left, also when `Tq ≠ Tk`). Head sizes up to [`MAX_HEAD_DIM`]; there is no second
//! derivative (the backward op has none).

use super::{Bind, Launch, Lowering, Op, Rule};
use crate::backend::cpu::helper_thread::join_rows;
use crate::backend::cpu::sgemm::sgemm_serial;
use crate::backend::cpu::vmath::exp_shifted_in_place;
use crate::backend::kernel::{Cost, Grid, Kernel, Uniforms, Wgsl};
use crate::fast_path::{self, FastPath};
use crate::tensor::DType;
use crate::Tensor;
use std::sync::Arc;

const SHADER: &str = include_str!("../../shaders/attention.wgsl");

/// The largest head size (of q and k, and of v) the fused kernels take; larger heads
/// run the composed attention.
pub const MAX_HEAD_DIM: usize = 128;

/// Query rows per GPU workgroup.
const ROWS_PER_GROUP: usize = 64;

/// The sizes of one attention: `z` slices of `tq` queries and `tk` keys, heads of `d`
/// (q, k) and `dv` (v) values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    /// Independent slices (batch × heads).
    pub z: usize,
    /// Queries per slice.
    pub tq: usize,
    /// Keys (and values) per slice.
    pub tk: usize,
    /// Size of a query and key head.
    pub d: usize,
    /// Size of a value head.
    pub dv: usize,
}

/// The settings every op of the family shares.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attention {
    /// The sizes.
    pub shape: Shape,
    /// The scores' factor, usually `1/√d`.
    pub scale: f32,
    /// Key `j` visible to query `i` only when `j ≤ i` (PyTorch's `is_causal`).
    pub causal: bool,
    /// An additive `[z, tq, tk]` mask follows q, k and v among the inputs.
    pub masked: bool,
    /// The forward (inputs q, k, v, mask?; outputs lse `[z, tq]`, then o `[z, tq, dv]`) or
    /// its gradient (inputs q, k, v, mask?, o, lse, dO; outputs dq, dk, dv).
    pub backward: bool,
}

impl Rule for Attention {
    fn name(&self) -> &'static str {
        if self.backward {
            "attention_grad"
        } else {
            "attention"
        }
    }

    fn lower(&self, _: &[&[usize]], _: &[usize]) -> Lowering {
        let s = self.shape;
        let inputs = 3 + self.masked as usize + if self.backward { 3 } else { 0 };
        let reads = || -> Vec<Bind> { (0..inputs).map(Bind::Input).collect() };
        let kernel = |pass| -> Arc<dyn Kernel> { Arc::new(AttentionKernel { op: *self, pass }) };
        if !self.backward {
            // The node is lse, its output 1 is o (see `Tensor::attention_forward`).
            let mut bindings = reads();
            bindings.extend([Bind::Output(1), Bind::Output(0)]);
            return Lowering::Launches {
                temps: Vec::new(),
                outputs: vec![s.z * s.tq * s.dv],
                launches: vec![Launch {
                    kernel: kernel(Pass::Forward),
                    bindings,
                }],
            };
        }
        let mut rows = reads();
        rows.extend([Bind::Output(0), Bind::Temp(0)]);
        let mut keys = reads();
        keys.extend([Bind::Temp(0), Bind::Output(1), Bind::Output(2)]);
        Lowering::Launches {
            temps: vec![s.z * s.tq],
            outputs: vec![s.z * s.tk * s.d, s.z * s.tk * s.dv],
            launches: vec![
                Launch {
                    kernel: kernel(Pass::QueryRows),
                    bindings: rows,
                },
                Launch {
                    kernel: kernel(Pass::KeyRows),
                    bindings: keys,
                },
            ],
        }
    }

    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        // Only reached for a node without its other output (the forward always has it).
        self.backward_outputs(inputs, &[Some(y.clone()), None], &[Some(g.clone()), None])
    }

    fn backward_outputs(
        &self,
        inputs: &[Tensor],
        outputs: &[Option<Tensor>],
        grads: &[Option<Tensor>],
    ) -> Vec<Option<Tensor>> {
        // Outputs: lse (no gradient flows into it), then o.
        let (false, Some(d_out)) = (self.backward, grads.get(1).cloned().flatten()) else {
            return vec![None; inputs.len()];
        };
        let (lse, o) = match (&outputs[0], outputs.get(1).cloned().flatten()) {
            (Some(lse), Some(o)) => (lse.clone(), o),
            // Unreachable in practice (a gradient reaches o through o): the same bits again.
            _ => {
                let [o, lse] = Tensor::attention_forward(*self, inputs);
                (lse, o)
            }
        };
        let mut all = inputs.to_vec();
        all.extend([o, lse, d_out]);
        let s = self.shape;
        let outputs = vec![
            (vec![s.z, s.tq, s.d], DType::F32),
            (vec![s.z, s.tk, s.d], DType::F32),
            (vec![s.z, s.tk, s.dv], DType::F32),
        ];
        let op = Op::Attention(Attention {
            backward: true,
            ..*self
        });
        let mut grads: Vec<Option<Tensor>> = Tensor::from_node_outputs(op, all, outputs)
            .into_iter()
            .map(Some)
            .collect();
        if self.masked {
            grads.push(None); // the mask is a constant here (a trainable one runs the composed path)
        }
        grads
    }
}

/// The launches of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// reads [q, k, v, mask?], writes [o, lse]; one invocation per query row.
    Forward,
    /// reads [q, k, v, mask?, o, lse, dO], writes [dq, δ]; one invocation per query row.
    QueryRows,
    /// reads [q, k, v, mask?, o, lse, dO, δ], writes [dk, dv]; one invocation per key row.
    KeyRows,
}

#[derive(Debug)]
struct AttentionKernel {
    op: Attention,
    pass: Pass,
}

/// The read-only inputs of one slice.
struct Slice<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    mask: Option<&'a [f32]>,
}

impl AttentionKernel {
    /// The weights `P` `[tq, tk]` of one slice: the scaled scores plus the mask, `-∞`
    /// where causality hides a key; then, with `lse`, `exp(s − lse)` per row, else a
    /// softmax per row, whose log-sum-exp is written to `lse_out`.
    fn weights(&self, x: &Slice, lse: Option<&[f32]>, lse_out: Option<&mut [f32]>, p: &mut [f32]) {
        let Shape { tq, tk, d, .. } = self.op.shape;
        sgemm_serial(tq, d, tk, false, true, x.q, x.k, p);
        let mut lse_out = lse_out;
        for (i, row) in p.chunks_mut(tk).enumerate() {
            let visible = self.visible(i);
            for (j, s) in row.iter_mut().enumerate() {
                *s = if j < visible {
                    *s * self.op.scale + x.mask.map_or(0.0, |m| m[i * tk + j])
                } else {
                    f32::NEG_INFINITY
                };
            }
            match lse {
                Some(lse) => exp_shifted_in_place(row, lse[i]),
                None => {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    exp_shifted_in_place(row, max);
                    let sum: f32 = row.iter().sum();
                    let inv = 1.0 / sum;
                    row.iter_mut().for_each(|s| *s *= inv);
                    if let Some(out) = lse_out.as_deref_mut() {
                        out[i] = max + sum.ln();
                    }
                }
            }
        }
    }

    /// Keys visible to query row `i`.
    fn visible(&self, i: usize) -> usize {
        let tk = self.op.shape.tk;
        if self.op.causal {
            (i + 1).min(tk)
        } else {
            tk
        }
    }

    /// `dS = P ∘ (dO·vᵀ − δ) · scale` of one slice, in `p` (which holds `P`).
    fn score_grads(&self, x: &Slice, d_out: &[f32], delta: &[f32], p: &mut [f32], scratch: &mut [f32]) {
        let Shape { tq, tk, dv, .. } = self.op.shape;
        sgemm_serial(tq, dv, tk, false, true, d_out, x.v, scratch);
        for (i, (p, dp)) in p.chunks_mut(tk).zip(scratch.chunks(tk)).enumerate() {
            for (p, &dp) in p.iter_mut().zip(dp) {
                *p *= (dp - delta[i]) * self.op.scale;
            }
        }
    }

    /// This pass over `slices` slices: `x` and `out` are cut to them.
    fn slices(&self, slices: usize, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let Shape { tq, tk, d, dv, .. } = self.op.shape;
        let masked = self.op.masked as usize;
        let mut p = vec![0.0; tq * tk];
        let mut scratch = vec![0.0; tq * tk];
        for z in 0..slices {
            fn cut(s: &[f32], z: usize, width: usize) -> &[f32] {
                &s[z * width..(z + 1) * width]
            }
            let slice = Slice {
                q: cut(x[0], z, tq * d),
                k: cut(x[1], z, tk * d),
                v: cut(x[2], z, tk * dv),
                mask: (masked == 1).then(|| cut(x[3], z, tq * tk)),
            };
            let after = 3 + masked; // o, lse, dO, δ in the backward
            match self.pass {
                Pass::Forward => {
                    let [o, lse] = out else {
                        unreachable!("the forward writes o and lse")
                    };
                    self.weights(&slice, None, Some(&mut lse[z * tq..(z + 1) * tq]), &mut p);
                    sgemm_serial(
                        tq,
                        tk,
                        dv,
                        false,
                        false,
                        &p,
                        slice.v,
                        &mut o[z * tq * dv..(z + 1) * tq * dv],
                    );
                }
                Pass::QueryRows => {
                    let (o, lse, d_out) = (
                        cut(x[after], z, tq * dv),
                        cut(x[after + 1], z, tq),
                        cut(x[after + 2], z, tq * dv),
                    );
                    let [dq, delta] = out else {
                        unreachable!("the query rows write dq and δ")
                    };
                    let delta = &mut delta[z * tq..(z + 1) * tq];
                    for (i, delta) in delta.iter_mut().enumerate() {
                        let row = i * dv..(i + 1) * dv;
                        *delta = d_out[row.clone()].iter().zip(&o[row]).map(|(a, b)| a * b).sum();
                    }
                    self.weights(&slice, Some(lse), None, &mut p);
                    self.score_grads(&slice, d_out, delta, &mut p, &mut scratch);
                    sgemm_serial(
                        tq,
                        tk,
                        d,
                        false,
                        false,
                        &p,
                        slice.k,
                        &mut dq[z * tq * d..(z + 1) * tq * d],
                    );
                }
                Pass::KeyRows => {
                    let (lse, d_out, delta) = (
                        cut(x[after + 1], z, tq),
                        cut(x[after + 2], z, tq * dv),
                        cut(x[after + 3], z, tq),
                    );
                    let [dk, dvs] = out else {
                        unreachable!("the key rows write dk and dv")
                    };
                    self.weights(&slice, Some(lse), None, &mut p);
                    sgemm_serial(
                        tk,
                        tq,
                        dv,
                        true,
                        false,
                        &p,
                        d_out,
                        &mut dvs[z * tk * dv..(z + 1) * tk * dv],
                    );
                    self.score_grads(&slice, d_out, delta, &mut p, &mut scratch);
                    sgemm_serial(
                        tk,
                        tq,
                        d,
                        true,
                        false,
                        &p,
                        slice.q,
                        &mut dk[z * tk * d..(z + 1) * tk * d],
                    );
                }
            }
        }
    }

    /// Words per slice of each read binding, then of each written one.
    fn widths(&self) -> (Vec<usize>, Vec<usize>) {
        let Shape { tq, tk, d, dv, .. } = self.op.shape;
        let mut reads = vec![tq * d, tk * d, tk * dv];
        if self.op.masked {
            reads.push(tq * tk);
        }
        if self.pass != Pass::Forward {
            reads.extend([tq * dv, tq, tq * dv]);
        }
        let writes = match self.pass {
            Pass::Forward => vec![tq * dv, tq],
            Pass::QueryRows => vec![tq * d, tq],
            Pass::KeyRows => {
                reads.push(tq);
                vec![tk * d, tk * dv]
            }
        };
        (reads, writes)
    }
}

impl Kernel for AttentionKernel {
    fn reads(&self) -> usize {
        self.widths().0.len()
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let Shape { z, tq, tk, d, dv } = self.op.shape;
        let flops = 4 * z * tq * tk * d.max(dv);
        let (x_width, out_width) = self.widths();
        if fast_path::choose(FastPath::GemmSplit, flops >= 1 << 22 && z >= 2) {
            join_rows(z, (x, &x_width), (out, &out_width), |rows, x, out| {
                self.slices(rows, x, out)
            });
        } else {
            self.slices(z, x, out);
        }
    }

    /// The products' flops (the causal mask's skipped half counted too).
    fn cost(&self, words: &[usize]) -> Cost {
        let Shape { z, tq, tk, d, dv } = self.op.shape;
        let product = |inner: usize| 2 * (z * tq * tk * inner) as u64;
        let flops = match self.pass {
            Pass::Forward => product(d) + product(dv),
            Pass::QueryRows => 2 * product(d) + product(dv),
            Pass::KeyRows => 2 * product(d) + 2 * product(dv),
        };
        Cost {
            flops,
            ..Cost::moved(words)
        }
    }

    fn wgsl(&self) -> Wgsl {
        let Shape { z, tq, tk, d, dv } = self.op.shape;
        let (entry, rows) = match self.pass {
            Pass::Forward => ("attention_forward", tq),
            Pass::QueryRows => ("attention_query_rows", tq),
            Pass::KeyRows => ("attention_key_rows", tk),
        };
        let u = Uniforms::new()
            .u32("slices", z)
            .u32("tq", tq)
            .u32("tk", tk)
            .u32("d", d)
            .u32("dv", dv)
            .u32("blocks", rows.div_ceil(ROWS_PER_GROUP))
            .f32("scale", self.op.scale);
        // Accessors for the bindings whose index depends on whether there is a mask.
        let after = 3 + self.op.masked as usize;
        let mut defs = format!("const CAUSAL: bool = {};\n", self.op.causal);
        defs += &match self.op.masked {
            true => "fn mask_at(i: u32) -> f32 { return in3[i]; }\n".to_string(),
            false => "fn mask_at(i: u32) -> f32 { return 0.0; }\n".to_string(),
        };
        if self.pass != Pass::Forward {
            for (k, name) in ["o_at", "lse_at", "dout_at"].iter().enumerate() {
                defs += &format!("fn {name}(i: u32) -> f32 {{ return in{}[i]; }}\n", after + k);
            }
        }
        if self.pass == Pass::KeyRows {
            defs += &format!("fn delta_at(i: u32) -> f32 {{ return in{}[i]; }}\n", after + 3);
        }
        Wgsl::new(SHADER, entry, u, Grid::Groups(z * rows.div_ceil(ROWS_PER_GROUP))).defs(defs)
    }
}

impl Tensor {
    /// The fused forward: `[o, lse]` from q, k, v (each `[z, t, head]`) and, when
    /// `op.masked`, the full mask. The node itself is lse and o its output 1, so that
    /// o holds lse (outputs after the first are held weakly by their node): the
    /// backward always finds the log-sum-exp the forward saved.
    pub(crate) fn attention_forward(op: Attention, inputs: &[Tensor]) -> [Tensor; 2] {
        let s = op.shape;
        let outputs = vec![(vec![s.z, s.tq], DType::F32), (vec![s.z, s.tq, s.dv], DType::F32)];
        let all = Tensor::from_node_outputs(Op::Attention(op), inputs.to_vec(), outputs);
        let [lse, o] = <[Tensor; 2]>::try_from(all).expect("two outputs");
        [o, lse]
    }
}
