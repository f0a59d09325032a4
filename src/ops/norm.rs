//! Normalization family (`shaders/norm.wgsl`): layer, group and batch normalization
//! as fused kernels — mean, variance, normalization and the affine map in one
//! launch — with a fused backward, and batch norm's in-place running-statistics
//! update.
//!
//! Every normalization is one view of the input `x` as `[N, C, S]` (batch, channels,
//! everything after the channels): **group norm** takes statistics per sample and
//! group of `C / G` channels (contiguous rows of `C / G · S` values), **layer norm**
//! is group norm with one group over `x` reshaped to `[rows, D]`, **batch norm**
//! takes them per channel over `N · S` values (strided). The affine weight and bias
//! are per channel. Each reduction is one 256-invocation workgroup: strided partial
//! sums in a fixed order, then a tree (the CPU twin sums in the same order), so the
//! bits never depend on scheduling. The variance is two-pass (`Σ(x − mean)² / n`),
//! biased for normalizing, as PyTorch.
//!
//! The backward of a forward is one op with three outputs (`dx`, `dweight`,
//! `dbias`): the input gradient in one pass from the saved mean and `rstd`
//! (`dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂))`, `ĝ = dy · weight`), the weight
//! and bias gradients as per-channel deterministic reductions. No second
//! derivative: the backward op has none.

mod builders;

use super::{Bind, Launch, Lowering, Op, Rule};
use crate::backend::kernel::{Grid, Kernel, Uniforms, Wgsl};
use crate::tensor::DType;
use crate::Tensor;
use std::sync::Arc;

const SHADER: &str = include_str!("../../shaders/norm.wgsl");

/// Which statistics a normalization takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormMode {
    /// Per sample and group of channels (`group_norm`; `layer_norm` is one group).
    Groups(usize),
    /// Per channel over the batch and the spatial positions (`batch_norm` in training).
    Batch,
    /// Given running statistics (`batch_norm` in evaluation).
    BatchEval,
}

impl NormMode {
    /// The shader's `MODE`: 0 groups, 1 batch, 2 batch with running statistics.
    fn code(self) -> u32 {
        match self {
            NormMode::Groups(_) => 0,
            NormMode::Batch => 1,
            NormMode::BatchEval => 2,
        }
    }
}

/// One op of the family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Norm {
    /// The normalization. Inputs: x `[N, C, …]`, weight `[C]`, bias `[C]` (with
    /// `BatchEval`: x, running_mean, running_var, weight, bias). Outputs: y (like
    /// x), and but for `BatchEval` the mean, the reciprocal standard deviation and
    /// the unbiased variance of each reduction group.
    Forward {
        /// Which statistics.
        mode: NormMode,
        /// Added to the variance before the square root.
        eps: f32,
    },
    /// Its gradient. Inputs: x, weight, the statistics (mean and rstd, or
    /// running_mean and running_var), dy. Outputs: dx, dweight `[C]`, dbias `[C]`.
    Backward {
        /// Which statistics.
        mode: NormMode,
        /// As the forward's.
        eps: f32,
    },
    /// Batch norm's running statistics, in place, as `torch.nn.BatchNorm*d`:
    /// `running = momentum · batch + (1 − momentum) · running` for the mean and the
    /// unbiased variance, and the u32 batch count plus one. Inputs: batch mean,
    /// batch variance, then the written running_mean, running_var, count.
    RunningStats {
        /// PyTorch's `momentum`.
        momentum: f32,
        /// PyTorch's `momentum=None`: a cumulative average, `momentum` being
        /// `1 / (count + 1)` with the count before this update.
        cumulative: bool,
    },
}

/// `[N, C, S]` and the groups of a normalization over an input of shape `shape`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dims {
    n: usize,
    c: usize,
    s: usize,
    mode: NormMode,
}

impl Dims {
    fn of(shape: &[usize], mode: NormMode) -> Dims {
        Dims {
            n: shape[0],
            c: shape[1],
            s: shape[2..].iter().product(),
            mode,
        }
    }

    fn groups(&self) -> usize {
        match self.mode {
            NormMode::Groups(g) => g,
            _ => 1,
        }
    }

    /// Reduction groups of the forward: one per channel, or per sample and group.
    fn count(&self) -> usize {
        match self.mode {
            NormMode::Groups(g) => self.n * g,
            _ => self.c,
        }
    }

    /// Values per reduction group.
    fn len(&self) -> usize {
        match self.mode {
            NormMode::Groups(g) => self.c / g * self.s,
            _ => self.n * self.s,
        }
    }

    /// Value `j` of reduction group `w`: its index in x and its channel.
    #[inline]
    fn element(&self, w: usize, j: usize) -> (usize, usize) {
        match self.mode {
            NormMode::Groups(g) => (w * self.len() + j, (w % g) * (self.c / g) + j / self.s),
            _ => (((j / self.s) * self.c + w) * self.s + j % self.s, w),
        }
    }

    fn uniforms(&self) -> Uniforms {
        Uniforms::new()
            .u32("batch", self.n)
            .u32("channels", self.c)
            .u32("spatial", self.s)
            .u32("groups", self.groups())
            .u32("count", self.count())
            .u32("len", self.len())
            .u32("numel", self.n * self.c * self.s)
    }
}

impl Rule for Norm {
    fn name(&self) -> &'static str {
        match self {
            Norm::Forward { .. } => "norm",
            Norm::Backward { .. } => "norm_grad",
            Norm::RunningStats { .. } => "running_stats",
        }
    }

    fn lower(&self, inputs: &[&[usize]], _: &[usize]) -> Lowering {
        match *self {
            Norm::Forward { mode, eps } => {
                let dims = Dims::of(inputs[0], mode);
                let kernel = |pass| NormKernel { pass, dims, eps };
                if mode == NormMode::BatchEval {
                    return Lowering::kernel(kernel(Pass::Eval), 5);
                }
                let count = dims.count();
                launches(
                    vec![count; 3],
                    vec![(kernel(Pass::Forward), vec![0, 1, 2], vec![0, 1, 2, 3])],
                )
            }
            Norm::Backward { mode, eps } => {
                let dims = Dims::of(inputs[0], mode);
                let kernel = |pass| NormKernel { pass, dims, eps };
                let sums = (kernel(Pass::ChannelSums), vec![0, 1, 2, 3, 4], vec![1, 2]);
                let outputs = vec![dims.c; 2];
                match mode {
                    NormMode::Groups(_) => launches(
                        outputs,
                        vec![(kernel(Pass::RowsDx), vec![0, 1, 2, 3, 4], vec![0]), sums],
                    ),
                    _ => {
                        // dx reads the per-channel sums written by the first launch.
                        let dx = (kernel(Pass::ChannelDx), vec![0, 1, 2, 3, 4], vec![0]);
                        launches(outputs, vec![sums, dx])
                    }
                }
            }
            Norm::RunningStats { momentum, cumulative } => {
                let kernel = RunningStatsKernel {
                    channels: inputs[0].iter().product(),
                    momentum,
                    cumulative,
                };
                Lowering::in_place(kernel, 5)
            }
        }
    }

    fn backward(&self, inputs: &[Tensor], y: &Tensor, g: &Tensor) -> Vec<Option<Tensor>> {
        let none = vec![None; self.outputs_after_first()];
        let (mut outputs, mut grads) = (vec![Some(y.clone())], vec![Some(g.clone())]);
        outputs.extend(none.clone());
        grads.extend(none);
        self.backward_outputs(inputs, &outputs, &grads)
    }

    fn backward_outputs(
        &self,
        inputs: &[Tensor],
        outputs: &[Option<Tensor>],
        grads: &[Option<Tensor>],
    ) -> Vec<Option<Tensor>> {
        let (Norm::Forward { mode, eps }, Some(dy)) = (*self, &grads[0]) else {
            return vec![None; inputs.len()];
        };
        let x = &inputs[0];
        if mode == NormMode::BatchEval {
            let [dx, dw, db] = Tensor::norm_backward(mode, eps, [x, &inputs[3], &inputs[1], &inputs[2]], dy);
            return vec![Some(dx), None, None, Some(dw), Some(db)];
        }
        // The statistics, or the same bits again if nobody kept them.
        let stats = match (&outputs.get(1).cloned().flatten(), &outputs.get(2).cloned().flatten()) {
            (Some(mean), Some(rstd)) => [mean.clone(), rstd.clone()],
            _ => {
                let again = Tensor::norm_forward(mode, eps, inputs);
                [again[1].clone(), again[2].clone()]
            }
        };
        let [dx, dw, db] = Tensor::norm_backward(mode, eps, [x, &inputs[1], &stats[0], &stats[1]], dy);
        vec![Some(dx), Some(dw), Some(db)]
    }

    fn in_place_from(&self) -> Option<usize> {
        matches!(self, Norm::RunningStats { .. }).then_some(2)
    }
}

impl Norm {
    /// Outputs after the first.
    fn outputs_after_first(&self) -> usize {
        match self {
            Norm::Forward {
                mode: NormMode::BatchEval,
                ..
            } => 0,
            Norm::Forward { .. } => 3,
            Norm::Backward { .. } => 2,
            Norm::RunningStats { .. } => 0,
        }
    }
}

/// Launches of one node, each `(kernel, inputs it reads, outputs it writes)` (an
/// output may also be read by a later launch), with `outputs` the words of the
/// node's outputs after the first.
fn launches(outputs: Vec<usize>, each: Vec<(NormKernel, Vec<usize>, Vec<usize>)>) -> Lowering {
    let launches = each
        .into_iter()
        .map(|(kernel, reads, writes)| {
            let extra_reads = kernel.reads().saturating_sub(reads.len());
            let mut bindings: Vec<Bind> = reads.into_iter().map(Bind::Input).collect();
            // Reads past the node's inputs are its outputs 1, 2, … (ChannelDx's sums).
            bindings.extend((1..=extra_reads).map(Bind::Output));
            bindings.extend(writes.into_iter().map(Bind::Output));
            Launch {
                kernel: Arc::new(kernel),
                bindings,
            }
        })
        .collect();
    Lowering::Launches {
        temps: Vec::new(),
        outputs,
        launches,
    }
}

/// The launches of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// reads [x, weight, bias], writes [y, mean, rstd, unbiased var]: one workgroup
    /// per reduction group.
    Forward,
    /// reads [x, running_mean, running_var, weight, bias], writes [y]: one invocation
    /// per value.
    Eval,
    /// reads [x, weight, mean, rstd, dy], writes [dx]: one workgroup per group of
    /// group norm.
    RowsDx,
    /// reads [x, weight, stat a, stat b, dy], writes [dweight, dbias]: one workgroup
    /// per channel.
    ChannelSums,
    /// reads [x, weight, stat a, stat b, dy, dweight, dbias], writes [dx]: one
    /// invocation per value (batch norm).
    ChannelDx,
}

#[derive(Debug)]
struct NormKernel {
    pass: Pass,
    dims: Dims,
    eps: f32,
}

/// `Σ f(j)` over `j < len` as one 256-invocation workgroup of the shaders sums it:
/// invocation `t` adds `f(t)`, `f(t + 256)`, … in order, then a tree halves the 256
/// partial sums.
fn workgroup_sum(len: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut partial = [0f32; 256];
    for j in 0..len {
        partial[j % 256] += f(j);
    }
    let mut s = 128;
    while s > 0 {
        for i in 0..s {
            partial[i] += partial[i + s];
        }
        s /= 2;
    }
    partial[0]
}

impl NormKernel {
    /// The mean and rstd a channel's values were normalized with (statistics `a`,
    /// `b` of the backward's inputs) for the value at channel `c` of sample `n`.
    #[inline]
    fn stats(&self, a: &[f32], b: &[f32], n: usize, c: usize) -> (f32, f32) {
        match self.dims.mode {
            NormMode::Groups(g) => {
                let at = n * g + c / (self.dims.c / g);
                (a[at], b[at])
            }
            NormMode::Batch => (a[c], b[c]),
            NormMode::BatchEval => (a[c], 1.0 / (b[c] + self.eps).sqrt()),
        }
    }

    fn forward_cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let d = self.dims;
        let len = d.len();
        let (xs, w, b) = (x[0], x[1], x[2]);
        for g in 0..d.count() {
            let at = |j| d.element(g, j);
            let mean = workgroup_sum(len, |j| xs[at(j).0]) / len as f32;
            let sq = workgroup_sum(len, |j| {
                let v = xs[at(j).0] - mean;
                v * v
            });
            let rstd = 1.0 / (sq / len as f32 + self.eps).sqrt();
            for j in 0..len {
                let (i, c) = at(j);
                out[0][i] = (xs[i] - mean) * rstd * w[c] + b[c];
            }
            out[1][g] = mean;
            out[2][g] = rstd;
            out[3][g] = sq / (len as f32 - 1.0);
        }
    }

    fn eval_cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (s, c) = (self.dims.s, self.dims.c);
        let (rm, rv, w, b) = (x[1], x[2], x[3], x[4]);
        for (i, (y, &v)) in out[0].iter_mut().zip(x[0]).enumerate() {
            let ch = (i / s) % c;
            let rstd = 1.0 / (rv[ch] + self.eps).sqrt();
            *y = (v - rm[ch]) * rstd * w[ch] + b[ch];
        }
    }

    fn rows_dx_cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let d = self.dims;
        let len = d.len();
        let (xs, w, mean, rstd, dy) = (x[0], x[1], x[2], x[3], x[4]);
        for g in 0..d.count() {
            let at = |j| d.element(g, j);
            let (m, r) = (mean[g], rstd[g]);
            let gxh = |j| {
                let (i, c) = at(j);
                dy[i] * w[c]
            };
            let s1 = workgroup_sum(len, gxh) / len as f32;
            let s2 = workgroup_sum(len, |j| gxh(j) * ((xs[at(j).0] - m) * r)) / len as f32;
            for j in 0..len {
                let (i, _) = at(j);
                let xhat = (xs[i] - m) * r;
                out[0][i] = r * (gxh(j) - s1 - xhat * s2);
            }
        }
    }

    fn channel_sums_cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let d = self.dims;
        let len = d.n * d.s;
        let (xs, a, b, dy) = (x[0], x[2], x[3], x[4]);
        let [dw, db] = out else {
            unreachable!("channel sums write dweight and dbias")
        };
        for (c, (dw, db)) in dw.iter_mut().zip(db.iter_mut()).enumerate().take(d.c) {
            let at = |j: usize| ((j / d.s) * d.c + c) * d.s + j % d.s;
            let xhat = |j: usize| {
                let (m, r) = self.stats(a, b, j / d.s, c);
                (xs[at(j)] - m) * r
            };
            *dw = workgroup_sum(len, |j| dy[at(j)] * xhat(j));
            *db = workgroup_sum(len, |j| dy[at(j)]);
        }
    }

    fn channel_dx_cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let d = self.dims;
        let m_count = (d.n * d.s) as f32;
        let (xs, w, a, b, dy, dw, db) = (x[0], x[1], x[2], x[3], x[4], x[5], x[6]);
        for (i, dx) in out[0].iter_mut().enumerate() {
            let c = (i / d.s) % d.c;
            let (m, r) = self.stats(a, b, 0, c);
            *dx = if d.mode == NormMode::BatchEval {
                dy[i] * w[c] * r
            } else {
                let xhat = (xs[i] - m) * r;
                w[c] * r * (dy[i] - db[c] / m_count - xhat * dw[c] / m_count)
            };
        }
    }
}

impl Kernel for NormKernel {
    fn reads(&self) -> usize {
        match self.pass {
            Pass::Forward => 3,
            Pass::Eval | Pass::RowsDx | Pass::ChannelSums => 5,
            Pass::ChannelDx => 7,
        }
    }

    /// The shaders' sums in the shaders' order ([`workgroup_sum`]).
    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        match self.pass {
            Pass::Forward => self.forward_cpu(x, out),
            Pass::Eval => self.eval_cpu(x, out),
            Pass::RowsDx => self.rows_dx_cpu(x, out),
            Pass::ChannelSums => self.channel_sums_cpu(x, out),
            Pass::ChannelDx => self.channel_dx_cpu(x, out),
        }
    }

    fn wgsl(&self) -> Wgsl {
        let d = self.dims;
        let (entry, grid) = match self.pass {
            Pass::Forward => ("norm_forward", Grid::Groups(d.count())),
            Pass::Eval => ("norm_eval", Grid::Threads(d.n * d.c * d.s)),
            Pass::RowsDx => ("norm_rows_dx", Grid::Groups(d.count())),
            Pass::ChannelSums => ("norm_channel_sums", Grid::Groups(d.c)),
            Pass::ChannelDx => ("norm_channel_dx", Grid::Threads(d.n * d.c * d.s)),
        };
        let u = d.uniforms().f32("eps", self.eps);
        Wgsl::new(SHADER, entry, u, grid).defs(format!("const MODE: u32 = {}u;\n", d.mode.code()))
    }
}

/// reads [batch mean, batch var], writes [running_mean, running_var, count] in
/// place: one invocation per channel; a cumulative average runs as one workgroup
/// (every channel reads the count before it is incremented).
#[derive(Debug)]
struct RunningStatsKernel {
    channels: usize,
    momentum: f32,
    cumulative: bool,
}

impl RunningStatsKernel {
    /// `1 − momentum`, rounded once from f64.
    fn keep(&self) -> f32 {
        (1.0 - f64::from(self.momentum)) as f32
    }
}

impl Kernel for RunningStatsKernel {
    fn reads(&self) -> usize {
        2
    }

    fn cpu(&self, x: &[&[f32]], out: &mut [&mut [f32]]) {
        let (m, keep) = match self.cumulative {
            // As the shader: 1 / (count + 1) and 1 − that, in f32.
            true => {
                let m = 1.0 / (out[2][0].to_bits() as f32 + 1.0);
                (m, 1.0 - m)
            }
            false => (self.momentum, self.keep()),
        };
        for (which, batch) in x.iter().enumerate() {
            for (r, &v) in out[which][..self.channels].iter_mut().zip(*batch) {
                *r = m * v + keep * *r;
            }
        }
        out[2][0] = f32::from_bits(out[2][0].to_bits().wrapping_add(1));
    }

    fn wgsl(&self) -> Wgsl {
        let u = Uniforms::new()
            .u32("channels", self.channels)
            .f32("momentum", self.momentum)
            .f32("keep", self.keep());
        let (entry, grid) = match self.cumulative {
            true => ("running_stats_cumulative", Grid::Groups(1)),
            false => ("running_stats", Grid::Threads(self.channels)),
        };
        Wgsl::new(SHADER, entry, u, grid).defs("const MODE: u32 = 0u;\n")
    }
}

impl Tensor {
    /// The forward node of a normalization (inputs as [`Norm::Forward`]): every
    /// output, y first.
    #[track_caller]
    pub(crate) fn norm_forward(mode: NormMode, eps: f32, inputs: &[Tensor]) -> Vec<Tensor> {
        let x = &inputs[0];
        let mut outputs = vec![(x.shape().to_vec(), DType::F32)];
        if mode != NormMode::BatchEval {
            let count = Dims::of(x.shape(), mode).count();
            outputs.extend(std::iter::repeat_n((vec![count], DType::F32), 3));
        }
        Tensor::from_node_outputs(Op::Norm(Norm::Forward { mode, eps }), inputs.to_vec(), outputs)
    }

    /// The backward node: `[dx, dweight, dbias]` from x, weight, the two statistics
    /// and dy.
    #[track_caller]
    fn norm_backward(mode: NormMode, eps: f32, [x, w, a, b]: [&Tensor; 4], dy: &Tensor) -> [Tensor; 3] {
        let c = x.shape()[1];
        let outputs = vec![
            (x.shape().to_vec(), DType::F32),
            (vec![c], DType::F32),
            (vec![c], DType::F32),
        ];
        let inputs = vec![x.clone(), w.clone(), a.clone(), b.clone(), dy.clone()];
        let all = Tensor::from_node_outputs(Op::Norm(Norm::Backward { mode, eps }), inputs, outputs);
        let [dx, dw, db] = <[Tensor; 3]>::try_from(all).expect("three outputs");
        [dx, dw, db]
    }
}
