//! The op cases of the parity tests, shared by tests/ops.rs (native GPU vs CPU) and
//! tests/web.rs (the browser's WebGPU vs the CPU backend compiled to wasm): each a
//! small graph over random inputs of odd sizes.

use wgnn::nn::loss;
use wgnn::{ConvArgs, Device, Tensor};

/// Largest relative difference (see `max_rel_diff`) allowed between the GPU and the
/// CPU: elementwise, reduction and shape ops (one rounding per op; `exp`/`log`
/// approximations).
pub const ELEMENTWISE_TOL: f32 = 1e-4;
/// Slicing, joining and gathering: copies are exact, and so are the gathers and
/// scatter-adds of the readout's gradient.
pub const SEQUENCE_OP_TOL: f32 = 0.0;
/// The fused recurrent cells.
pub const RECURRENT_TOL: f32 = 1e-4;
/// Matmuls: sums of up to 511 products, allowing for a different summation order.
pub const MATMUL_TOL: f32 = 1e-3;
/// Fused softmax + cross-entropy, forward and backward.
pub const CROSS_ENTROPY_TOL: f32 = 1e-5;
/// Pooling: max pooling picks and sums in one order (exact); averages divide once
/// per window, and the GPU's division may round differently.
pub const POOL_TOL: f32 = 1e-5;

/// The GEMM tiles the GPU autotune picks among on every adapter class: the
/// workgroup tiles, and the two-stage (double-buffered) `db` tiles and their
/// warp-tiled forms `wt` offered to GPUs that are not CPUs. Tests force each one
/// (`Device::debug_kernel_variant`).
pub const GEMM_TILES: [&str; 10] = [
    "64x64k16",
    "128x64k8",
    "128x128k8",
    "32x64k16",
    "32x32k16",
    "db128x64k8",
    "db64x64k8",
    "db32x64k16",
    "wt128x64k8",
    "wt64x64k8",
];
/// The flat GEMM tiles (no workgroup memory, no barrier), offered only where the
/// adapter is a CPU (lavapipe, SwiftShader).
pub const FLAT_GEMM_TILES: [&str; 4] = ["flat3x32", "flat4x32", "flat6x32", "flat4x64"];

/// The product the GEMM-tile tests run on `dev`: `a·b` with A and/or B stored
/// transposed, or (`linear`) `relu(a·bᵀ + bias)` through `Tensor::linear`; the output
/// and the two inputs whose gradients (of `readout`, seed 4) the tests read.
pub fn gemm_case(
    dev: &Device,
    (m, k, n): (usize, usize, usize),
    ta: bool,
    tb: bool,
    linear: bool,
) -> (Tensor, [Tensor; 2]) {
    let leaf = |shape: [usize; 2], seed| Tensor::randn(&shape, seed, dev).unwrap().requires_grad().unwrap();
    let a = leaf(if ta { [k, m] } else { [m, k] }, 1);
    let b = leaf(if tb { [n, k] } else { [k, n] }, 2);
    let bias = leaf([1, n], 3).reshape(&[n]);
    let out = if linear {
        a.linear(&b, Some(&bias)).relu()
    } else {
        a.matmul_t(&b, ta, tb)
    };
    (out, [a, b])
}

/// How inputs are drawn.
#[derive(Clone, Copy)]
pub enum Draw {
    /// Standard normal.
    Normal,
    /// Uniform in [0.5, 2): for log, sqrt, div.
    Positive,
    /// Normal pushed at least 0.1 away from 0: for kinks at 0.
    AwayFromZero,
    /// Uniform in (0.05, 0.95): probabilities.
    Probability,
    /// A shuffle of evenly spaced values 0.01 apart: no two within a finite
    /// difference's step, so a max pooling never changes its pick under one.
    Distinct,
}

pub struct Case {
    pub name: &'static str,
    pub shapes: Vec<Vec<usize>>,
    pub draw: Draw,
    pub f: fn(&[Tensor]) -> Tensor,
}

pub fn case(name: &'static str, shapes: Vec<Vec<usize>>, draw: Draw, f: fn(&[Tensor]) -> Tensor) -> Case {
    Case { name, shapes, draw, f }
}

pub fn draw(draw: Draw, n: usize, seed: u64) -> Vec<f32> {
    let normal = wgnn::rng::normal(seed, n);
    let unit = wgnn::rng::uniform(seed, n, 0.0, 1.0);
    match draw {
        Draw::Normal => normal,
        Draw::Positive => unit.iter().map(|u| 0.5 + 1.5 * u).collect(),
        Draw::AwayFromZero => normal.iter().map(|v| v.signum() * (0.1 + v.abs())).collect(),
        Draw::Probability => unit.iter().map(|u| 0.05 + 0.9 * u).collect(),
        Draw::Distinct => {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| unit[a].total_cmp(&unit[b]));
            let mut out = vec![0.0; n];
            for (rank, &i) in order.iter().enumerate() {
                out[i] = (rank as f32 - n as f32 / 2.0) * 0.01;
            }
            out
        }
    }
}

pub fn inputs(c: &Case, dev: &Device, seed: u64) -> Vec<Tensor> {
    c.shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let n = s.iter().product();
            Tensor::from_vec(draw(c.draw, n, seed + i as u64), s, dev)
                .unwrap()
                .requires_grad()
                .unwrap()
        })
        .collect()
}

/// A scalar from the op's output: a fixed random weighting, so each output element
/// gets a different upstream gradient.
pub fn readout(out: &Tensor, seed: u64) -> Tensor {
    let w = Tensor::from_vec(wgnn::rng::normal(seed ^ 0xabc, out.numel()), out.shape(), out.device()).unwrap();
    (out * &w).sum()
}

pub fn sizes() -> [usize; 5] {
    [1, 7, 33, 129, 1000]
}

pub fn elementwise_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for n in sizes() {
        let s = vec![vec![n]];
        cases.extend([
            case("neg", s.clone(), Draw::Normal, |x| x[0].neg()),
            case("exp", s.clone(), Draw::Normal, |x| x[0].exp()),
            case("log", s.clone(), Draw::Positive, |x| x[0].log()),
            case("log1p", s.clone(), Draw::Positive, |x| x[0].log1p()),
            case("sigmoid", s.clone(), Draw::Normal, |x| x[0].sigmoid()),
            case("tanh", s.clone(), Draw::Normal, |x| x[0].tanh()),
            case("relu", s.clone(), Draw::AwayFromZero, |x| x[0].relu()),
            case("step", s.clone(), Draw::AwayFromZero, |x| x[0].step()),
            case("abs", s.clone(), Draw::AwayFromZero, |x| x[0].abs()),
            case("sqrt", s.clone(), Draw::Positive, |x| x[0].sqrt()),
            case("square", s.clone(), Draw::Normal, |x| x[0].square()),
            case("recip", s.clone(), Draw::Positive, |x| x[0].recip()),
            case("add_scalar", s.clone(), Draw::Normal, |x| x[0].add_scalar(0.3)),
            case("mul_scalar", s.clone(), Draw::Normal, |x| x[0].mul_scalar(-1.7)),
            case("pow_scalar", s.clone(), Draw::Positive, |x| x[0].pow_scalar(2.5)),
            case("erf", s.clone(), Draw::Normal, |x| x[0].erf()),
            case("gelu", s.clone(), Draw::Normal, |x| x[0].gelu()),
            case("gelu_tanh", s.clone(), Draw::Normal, |x| x[0].gelu_tanh()),
            case("where_mask", vec![vec![n], vec![n], vec![n]], Draw::AwayFromZero, |x| {
                x[0].where_mask(&x[1].gt_mask(&x[2]), &x[2])
            }),
            case("add", vec![vec![n], vec![n]], Draw::Normal, |x| &x[0] + &x[1]),
            case("sub", vec![vec![n], vec![n]], Draw::Normal, |x| &x[0] - &x[1]),
            case("mul", vec![vec![n], vec![n]], Draw::Normal, |x| &x[0] * &x[1]),
            case("div", vec![vec![n], vec![n]], Draw::Positive, |x| &x[0] / &x[1]),
            case("maximum", vec![vec![n], vec![n]], Draw::Normal, |x| x[0].maximum(&x[1])),
            case("sum", s.clone(), Draw::Normal, |x| x[0].sum()),
            case("mean", s.clone(), Draw::Normal, |x| x[0].mean()),
            case("softmax", vec![vec![2, n]], Draw::Normal, |x| x[0].softmax(1)),
            case("log_softmax", vec![vec![2, n]], Draw::Normal, |x| x[0].log_softmax(1)),
            case("sum_axis0", vec![vec![n, 3]], Draw::Normal, |x| x[0].sum_axis(0, false)),
            case("mean_axis1", vec![vec![3, n]], Draw::Normal, |x| {
                x[0].mean_axis(1, true)
            }),
            case("max_axis1", vec![vec![3, n]], Draw::Normal, |x| x[0].max_axis(1, false)),
            case("max_axis0", vec![vec![n, 5]], Draw::Normal, |x| x[0].max_axis(0, false)),
            case("max_axis_neg2", vec![vec![n, 5]], Draw::Normal, |x| {
                x[0].max_axis(-2, true)
            }),
            case("log_softmax_neg1", vec![vec![2, 3, n]], Draw::Normal, |x| {
                x[0].log_softmax(-1)
            }),
            case("max_with_indices_axis1", vec![vec![3, n]], Draw::Normal, |x| {
                x[0].max_with_indices(1).0
            }),
            case("max_with_indices_axis0", vec![vec![n, 5]], Draw::Normal, |x| {
                let (values, indices) = x[0].max_with_indices(0);
                // Both outputs in one graph: indices back to f32 through one_hot.
                &values + &indices.one_hot(x[0].shape()[0]).sum_axis(1, false)
            }),
            case("reshape", vec![vec![n, 2]], Draw::Normal, |x| {
                x[0].reshape(&[2, x[0].shape()[0]]).exp()
            }),
            case("transpose", vec![vec![n, 3]], Draw::Normal, |x| x[0].t().exp()),
            case("permute3", vec![vec![2, n, 3]], Draw::Normal, |x| {
                x[0].permute(&[2, 0, 1]).exp()
            }),
            case("expand", vec![vec![n, 1]], Draw::Normal, |x| {
                x[0].expand(&[x[0].shape()[0], 4]).exp()
            }),
            case("add_broadcast_row", vec![vec![3, n], vec![n]], Draw::Normal, |x| {
                &x[0] + &x[1]
            }),
            case("mul_broadcast_col", vec![vec![n, 3], vec![n, 1]], Draw::Normal, |x| {
                &x[0] * &x[1]
            }),
            case(
                "div_broadcast_both",
                vec![vec![n, 1], vec![1, 4]],
                Draw::Positive,
                |x| &x[0] / &x[1],
            ),
            case("dropout_0.1", s.clone(), Draw::Normal, |x| x[0].dropout(0.1, 77)),
            case("dropout_0.5", s.clone(), Draw::Normal, |x| x[0].dropout(0.5, 78)),
            case("dropout_0.9", vec![vec![3, n]], Draw::Normal, |x| x[0].dropout(0.9, 79)),
            case("mse", vec![vec![n], vec![n]], Draw::Normal, |x| loss::mse(&x[0], &x[1])),
            case("bce", vec![vec![n], vec![n]], Draw::Probability, |x| {
                loss::binary_cross_entropy(&x[0], &x[1])
            }),
            case("bce_logits", vec![vec![n], vec![n]], Draw::Normal, |x| {
                loss::binary_cross_entropy_with_logits(&x[0], &x[1])
            }),
        ]);
    }
    cases
}

pub fn matmul_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (m, k, n) in [(1, 1, 1), (33, 65, 17), (257, 129, 511)] {
        cases.extend([
            case("matmul", vec![vec![m, k], vec![k, n]], Draw::Normal, |x| {
                x[0].matmul(&x[1])
            }),
            case("matmul_at", vec![vec![k, m], vec![k, n]], Draw::Normal, |x| {
                x[0].t().matmul(&x[1])
            }),
            case("matmul_bt", vec![vec![m, k], vec![n, k]], Draw::Normal, |x| {
                x[0].matmul(&x[1].t())
            }),
            case("matmul_at_bt", vec![vec![k, m], vec![n, k]], Draw::Normal, |x| {
                x[0].t().matmul(&x[1].t())
            }),
            case(
                "linear_relu",
                vec![vec![m, k], vec![n, k], vec![n]],
                Draw::Normal,
                |x| x[0].linear(&x[1], Some(&x[2])).relu(),
            ),
            case(
                "linear_sigmoid",
                vec![vec![m, k], vec![n, k], vec![n]],
                Draw::Normal,
                |x| x[0].linear(&x[1], Some(&x[2])).sigmoid(),
            ),
            case(
                "linear_tanh",
                vec![vec![m, k], vec![n, k], vec![n]],
                Draw::Normal,
                |x| x[0].linear(&x[1], Some(&x[2])).tanh(),
            ),
        ]);
    }
    cases.extend(batched_matmul_cases());
    cases
}

/// Products with batch axes (`torch.matmul`'s broadcasting) and vector operands, on
/// odd sizes: each batched product is one launch, one broadcast operand's gradient a
/// sum over the batch.
pub fn batched_matmul_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (m, k, n) in [(1, 7, 33), (7, 33, 1), (33, 1, 7), (37, 20, 68)] {
        cases.extend([
            case("bmm", vec![vec![3, m, k], vec![3, k, n]], Draw::Normal, |x| {
                x[0].matmul(&x[1])
            }),
            case(
                "bmm_broadcast_both",
                vec![vec![2, 1, m, k], vec![3, k, n]],
                Draw::Normal,
                |x| x[0].matmul(&x[1]),
            ),
            case("bmm_shared_a", vec![vec![m, k], vec![2, k, n]], Draw::Normal, |x| {
                x[0].matmul(&x[1])
            }),
            case("bmm_shared_b", vec![vec![2, m, k], vec![k, n]], Draw::Normal, |x| {
                x[0].matmul(&x[1])
            }),
            case("bmm_at_shared_b", vec![vec![2, k, m], vec![k, n]], Draw::Normal, |x| {
                x[0].transpose(-2, -1).matmul(&x[1])
            }),
            case(
                "bmm_bt_relu",
                vec![vec![2, m, k], vec![2, n, k]],
                Draw::AwayFromZero,
                |x| x[0].matmul_t(&x[1], false, true).relu(),
            ),
            case("bmm_at_bt", vec![vec![3, 1, k, m], vec![2, n, k]], Draw::Normal, |x| {
                x[0].transpose(-1, -2).matmul(&x[1].transpose(-1, -2))
            }),
            case("mat_vec", vec![vec![2, m, k], vec![k]], Draw::Normal, |x| {
                x[0].matmul(&x[1])
            }),
            case("vec_mat", vec![vec![k], vec![2, k, n]], Draw::Normal, |x| {
                x[0].matmul(&x[1])
            }),
            case("dot", vec![vec![k], vec![k]], Draw::Normal, |x| x[0].matmul(&x[1])),
            case(
                "linear_rank3_sigmoid",
                vec![vec![2, m, k], vec![n, k], vec![n]],
                Draw::Normal,
                |x| x[0].linear(&x[1], Some(&x[2])).sigmoid(),
            ),
        ]);
    }
    cases
}

/// Indices `(i·7 + 3) mod n` for i < m: repeats once m > n (so scatter-add sums).
pub fn indices(m: usize, n: usize, dev: &Device) -> Tensor {
    let idx: Vec<u32> = (0..m).map(|i| ((i * 7 + 3) % n) as u32).collect();
    Tensor::from_labels(&idx, dev).unwrap()
}

/// Slicing, joining and gathering: the ops sequence models are built from.
pub fn sequence_op_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for n in sizes() {
        cases.extend([
            case("narrow_mid_axis", vec![vec![3, n, 2]], Draw::Normal, |x| {
                let n = x[0].shape()[1];
                x[0].narrow(1, n / 3, n - n / 3)
            }),
            case("narrow_prefix_alias", vec![vec![1, n, 3]], Draw::Normal, |x| {
                let n = x[0].shape()[1];
                x[0].narrow(1, 0, n.div_ceil(2)).mul_scalar(2.0)
            }),
            case("narrow_last_axis", vec![vec![2, n]], Draw::Normal, |x| {
                let n = x[0].shape()[1];
                x[0].narrow(1, n / 2, n - n / 2)
            }),
            case("select_axis0", vec![vec![n, 3]], Draw::Normal, |x| {
                x[0].select(0, x[0].shape()[0] / 2)
            }),
            case("select_odd_axis", vec![vec![2, n, 3]], Draw::Normal, |x| {
                x[0].select(2, 1)
            }),
            case("cat_axis0", vec![vec![n, 3], vec![2, 3]], Draw::Normal, |x| {
                Tensor::cat(&[&x[0], &x[1]], 0)
            }),
            case(
                "cat_axis1_three",
                vec![vec![3, n], vec![3, 1], vec![3, 2]],
                Draw::Normal,
                |x| Tensor::cat(&[&x[0], &x[1], &x[2]], 1),
            ),
            case("cat_same_input_twice", vec![vec![2, n, 3]], Draw::Normal, |x| {
                Tensor::cat(&[&x[0], &x[0]], 2)
            }),
            case("stack_axis0", vec![vec![n], vec![n], vec![n]], Draw::Normal, |x| {
                Tensor::stack(&[&x[0], &x[1], &x[2]], 0)
            }),
            case("stack_axis1", vec![vec![n, 2], vec![n, 2]], Draw::Normal, |x| {
                Tensor::stack(&[&x[0], &x[1]], 1)
            }),
            case("index_select_rows", vec![vec![n, 5]], Draw::Normal, |x| {
                let n = x[0].shape()[0];
                x[0].index_select(0, &indices(2 * n + 1, n, x[0].device()))
            }),
            case("index_select_axis1", vec![vec![3, n, 2]], Draw::Normal, |x| {
                let n = x[0].shape()[1];
                x[0].index_select(1, &indices(n + 2, n, x[0].device()))
            }),
            case("unbind_axis0", vec![vec![3, n]], Draw::Normal, |x| {
                let p = x[0].unbind(0);
                &(&p[0] * &p[1]) + &p[2]
            }),
            case("unbind_odd_axis_some_unused", vec![vec![2, n, 3]], Draw::Normal, |x| {
                let p = x[0].unbind(2);
                &p[2] - &p[0]
            }),
            case("scatter_add_rows", vec![vec![2 * n + 1, 4]], Draw::Normal, |x| {
                let m = x[0].shape()[0];
                let n = (m - 1) / 2;
                x[0].scatter_add(0, &indices(m, n, x[0].device()), n)
            }),
        ]);
    }
    cases
}

/// The fused recurrent cells (LSTM with both outputs in play, GRU), one and two steps.
pub fn recurrent_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for n in sizes() {
        cases.extend([
            case(
                "lstm_cell",
                vec![vec![3, 4 * n], vec![3, 4 * n], vec![3, n]],
                Draw::Normal,
                |x| {
                    let (h, c) = Tensor::lstm_cell(&x[0], &x[1], &x[2]);
                    &h + &c.mul_scalar(0.5)
                },
            ),
            case(
                "lstm_cell_h_only",
                vec![vec![2, 4 * n], vec![2, 4 * n], vec![2, n]],
                Draw::Normal,
                |x| Tensor::lstm_cell(&x[0], &x[1], &x[2]).0,
            ),
            case(
                "lstm_two_steps",
                vec![vec![2, 4 * n], vec![2, 4 * n], vec![2, n]],
                Draw::Normal,
                |x| {
                    let (h, c) = Tensor::lstm_cell(&x[0], &x[1], &x[2]);
                    let (h2, c2) = Tensor::lstm_cell(&x[1], &Tensor::cat(&[&h, &h, &c, &h], 1), &c);
                    &h2 * &c2
                },
            ),
            case(
                "gru_cell",
                vec![vec![3, 3 * n], vec![3, 3 * n], vec![3, n]],
                Draw::Normal,
                |x| Tensor::gru_cell(&x[0], &x[1], &x[2]),
            ),
            case(
                "gru_two_steps",
                vec![vec![2, 3 * n], vec![2, 3 * n], vec![2, n]],
                Draw::Normal,
                |x| {
                    let h = Tensor::gru_cell(&x[0], &x[1], &x[2]);
                    let h2 = Tensor::gru_cell(&x[1], &Tensor::cat(&[&h, &h, &h], 1), &h);
                    &h2 * &h
                },
            ),
        ]);
    }
    // Enough units (37 × 129) for the CPU backend to split the rows over two threads
    // (18 and 19 rows).
    cases.extend([
        case(
            "lstm_cell_split_rows",
            vec![vec![37, 4 * 129], vec![37, 4 * 129], vec![37, 129]],
            Draw::Normal,
            |x| {
                let (h, c) = Tensor::lstm_cell(&x[0], &x[1], &x[2]);
                &h + &c.mul_scalar(0.5)
            },
        ),
        case(
            "gru_cell_split_rows",
            vec![vec![37, 3 * 129], vec![37, 3 * 129], vec![37, 129]],
            Draw::Normal,
            |x| Tensor::gru_cell(&x[0], &x[1], &x[2]),
        ),
    ]);
    cases
}

/// Max, average and adaptive pooling of NCHW and NCL inputs at odd sizes (N = 2,
/// C = 3, H and W of 7, 9, 11), kernels 2 and 3, strides 1 and 2, padding 0 and 1,
/// and PyTorch's options (`ceil_mode`, `count_include_pad=False`, non-square
/// windows); max pooling on values without ties.
pub fn pool_cases() -> Vec<Case> {
    let (a, b, c) = (vec![vec![2, 3, 7, 9]], vec![vec![2, 3, 9, 11]], vec![vec![2, 3, 11, 7]]);
    vec![
        case("max_pool2d_k2_s2", a.clone(), Draw::Distinct, |x| {
            x[0].max_pool2d(2, 2, 0)
        }),
        case("max_pool2d_k3_s2_p1", b.clone(), Draw::Distinct, |x| {
            x[0].max_pool2d(3, 2, 1)
        }),
        case("max_pool2d_k3_s1_p1", c.clone(), Draw::Distinct, |x| {
            x[0].max_pool2d(3, 1, 1)
        }),
        case("max_pool2d_k2_s1_p1", a.clone(), Draw::Distinct, |x| {
            x[0].max_pool2d(2, 1, 1)
        }),
        case("max_pool2d_unbatched", vec![vec![3, 9, 7]], Draw::Distinct, |x| {
            x[0].max_pool2d(3, 2, 1)
        }),
        case("avg_pool2d_k2_s2", a.clone(), Draw::Normal, |x| {
            x[0].avg_pool2d(2, 2, 0)
        }),
        case("avg_pool2d_k3_s2_p1", b.clone(), Draw::Normal, |x| {
            x[0].avg_pool2d(3, 2, 1)
        }),
        case("avg_pool2d_k3_s1_p1", c.clone(), Draw::Normal, |x| {
            x[0].avg_pool2d(3, 1, 1)
        }),
        case("avg_pool2d_k2_s1_p1", a.clone(), Draw::Normal, |x| {
            x[0].avg_pool2d(2, 1, 1)
        }),
        case("adaptive_avg_pool2d_3x4", a.clone(), Draw::Normal, |x| {
            x[0].adaptive_avg_pool2d(3, 4)
        }),
        case("adaptive_avg_pool2d_global", b.clone(), Draw::Normal, |x| {
            x[0].adaptive_avg_pool2d(1, 1)
        }),
        case("adaptive_avg_pool2d_upsampling", c, Draw::Normal, |x| {
            x[0].adaptive_avg_pool2d(13, 5)
        }),
        case("max_pool1d_k3_s2_p1", vec![vec![2, 3, 11]], Draw::Distinct, |x| {
            x[0].max_pool1d(3, 2, 1)
        }),
        case("max_pool2d_ceil_mode_k2x3_s3x2_p1x1", b.clone(), Draw::Distinct, |x| {
            let window = wgnn::PoolWindow {
                kernel: [2, 3],
                stride: [3, 2],
                padding: [1, 1],
                ceil_mode: true,
                count_include_pad: true,
            };
            x[0].max_pool2d_with(window)
        }),
        case("avg_pool2d_ceil_mode_k3_s2_p1", a.clone(), Draw::Normal, |x| {
            let window = wgnn::PoolWindow {
                ceil_mode: true,
                ..wgnn::PoolWindow::square(3, 2, 1)
            };
            x[0].avg_pool2d_with(window)
        }),
        case(
            "avg_pool2d_no_pad_count_ceil_k3x2_s2x1_p1x1",
            b.clone(),
            Draw::Normal,
            |x| {
                let window = wgnn::PoolWindow {
                    kernel: [3, 2],
                    stride: [2, 1],
                    padding: [1, 1],
                    ceil_mode: true,
                    count_include_pad: false,
                };
                x[0].avg_pool2d_with(window)
            },
        ),
        case(
            "max_pool1d_ceil_mode_k2_s2",
            vec![vec![2, 3, 11]],
            Draw::Distinct,
            |x| {
                let window = wgnn::PoolWindow {
                    ceil_mode: true,
                    ..wgnn::PoolWindow::line(2, 2, 0)
                };
                x[0].max_pool1d_with(window)
            },
        ),
        case("max_pool1d_k2_s1", vec![vec![2, 3, 9]], Draw::Distinct, |x| {
            x[0].max_pool1d(2, 1, 0)
        }),
        case("max_then_avg_pool", b, Draw::Distinct, |x| {
            x[0].max_pool2d(2, 1, 0).avg_pool2d(3, 2, 1)
        }),
        // Second derivatives: each gradient pass is the other's adjoint.
        case("max_pool2d_gradient", a.clone(), Draw::Distinct, |x| {
            gradient_of(&x[0], |x| x.max_pool2d(3, 2, 1).square().sum())
        }),
        case("avg_pool2d_gradient", a, Draw::Normal, |x| {
            gradient_of(&x[0], |x| x.avg_pool2d(3, 2, 1).square().sum())
        }),
    ]
}

/// The gradient of `f` at `x`, as a graph that can be differentiated again.
fn gradient_of(x: &Tensor, f: fn(&Tensor) -> Tensor) -> Tensor {
    let x = x.clone().requires_grad().unwrap();
    f(&x).backward().unwrap().get(&x).unwrap().clone()
}

/// Sums of up to a few hundred products in another order (as matmuls).
pub const CONV_TOL: f32 = 1e-3;

/// The convolution tiles the GPU autotune picks among (`src/ops/conv.rs`'s `TILES`
/// by the names the autotune gives them: the implicit GEMM's outputs per
/// workgroup), the default first.
pub const CONV_TILES: [&str; 4] = ["64x64", "32x64", "16x64", "32x32"];

pub fn args(stride: usize, padding: usize, dilation: usize, groups: usize) -> ConvArgs {
    ConvArgs {
        stride,
        padding,
        dilation,
        groups,
        output_padding: 0,
    }
}

/// Inputs x, weight and (when there are three) bias of odd sizes.
pub fn conv_cases() -> Vec<Case> {
    let n = Draw::Normal;
    vec![
        case(
            "conv2d 3x3 pad 1",
            vec![vec![2, 3, 7, 7], vec![4, 3, 3, 3], vec![4]],
            n,
            |x| x[0].conv2d(&x[1], Some(&x[2]), args(1, 1, 1, 1)),
        ),
        case("conv2d 1x1", vec![vec![2, 3, 9, 9], vec![5, 3, 1, 1]], n, |x| {
            x[0].conv2d(&x[1], None, ConvArgs::default())
        }),
        case(
            "conv2d 5x5 stride 2 pad 1",
            vec![vec![2, 3, 9, 9], vec![4, 3, 5, 5], vec![4]],
            n,
            |x| x[0].conv2d(&x[1], Some(&x[2]), args(2, 1, 1, 1)),
        ),
        case("conv2d dilation 2", vec![vec![2, 3, 9, 7], vec![4, 3, 3, 3]], n, |x| {
            x[0].conv2d(&x[1], None, args(1, 2, 2, 1))
        }),
        case(
            "conv2d groups 3",
            vec![vec![2, 6, 7, 9], vec![9, 2, 3, 3], vec![9]],
            n,
            |x| x[0].conv2d(&x[1], Some(&x[2]), args(2, 1, 1, 3)),
        ),
        case(
            "conv2d depthwise",
            vec![vec![2, 3, 9, 9], vec![3, 1, 3, 3], vec![3]],
            n,
            |x| x[0].conv2d(&x[1], Some(&x[2]), args(1, 1, 1, 3)),
        ),
        case("conv2d 3x2 kernel", vec![vec![1, 2, 7, 9], vec![3, 2, 3, 2]], n, |x| {
            x[0].conv2d(&x[1], None, args(2, 1, 1, 1))
        }),
        case(
            "conv2d per-axis stride, padding, dilation",
            vec![vec![2, 3, 9, 8], vec![4, 3, 3, 2], vec![4]],
            n,
            |x| {
                let a = wgnn::Conv2dArgs {
                    stride: [2, 1],
                    padding: [1, 0],
                    dilation: [1, 2],
                    ..Default::default()
                };
                x[0].conv2d_with(&x[1], Some(&x[2]), a)
            },
        ),
        case(
            "conv2d ragged tiles",
            vec![vec![2, 16, 17, 17], vec![33, 16, 3, 3], vec![33]],
            n,
            |x| x[0].conv2d(&x[1], Some(&x[2]), args(1, 1, 1, 1)),
        ),
        case(
            "conv1d stride 2 pad 1",
            vec![vec![2, 3, 11], vec![4, 3, 3], vec![4]],
            n,
            |x| x[0].conv1d(&x[1], Some(&x[2]), args(2, 1, 1, 1)),
        ),
        case("conv1d dilation groups", vec![vec![2, 4, 13], vec![6, 2, 5]], n, |x| {
            x[0].conv1d(&x[1], None, args(1, 2, 2, 2))
        }),
        case(
            "conv_transpose2d stride 2",
            vec![vec![2, 4, 5, 5], vec![4, 3, 3, 3], vec![3]],
            n,
            |x| {
                let a = ConvArgs {
                    output_padding: 1,
                    ..args(2, 1, 1, 1)
                };
                x[0].conv_transpose2d(&x[1], Some(&x[2]), a)
            },
        ),
        case(
            "conv_transpose2d groups dilation",
            vec![vec![2, 4, 4, 3], vec![4, 3, 3, 3]],
            n,
            |x| x[0].conv_transpose2d(&x[1], None, args(1, 0, 2, 2)),
        ),
    ]
}

/// Sums of up to a few thousand values in the same order on both backends; the GPU
/// may contract `a · b + c` into one rounding.
pub const NORM_TOL: f32 = 1e-4;

/// Fused normalizations with their affine parameters as inputs (the readout weighs
/// each output differently, so the gradients are not zero).
pub fn norm_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for n in [1, 7, 33, 300] {
        cases.extend([
            case("layer_norm", vec![vec![3, 2, n], vec![n], vec![n]], Draw::Normal, |x| {
                x[0].layer_norm(&[x[1].numel()], Some(&x[1]), Some(&x[2]), 1e-5)
            }),
            case("group_norm", vec![vec![2, 6, n], vec![6], vec![6]], Draw::Normal, |x| {
                x[0].group_norm(3, Some(&x[1]), Some(&x[2]), 1e-5)
            }),
            case("batch_norm", vec![vec![3, 5, n], vec![5], vec![5]], Draw::Normal, |x| {
                x[0].batch_norm(Some(&x[1]), Some(&x[2]), 1e-5)
            }),
            case(
                "batch_norm_eval",
                vec![vec![3, 5, n], vec![5], vec![5]],
                Draw::Normal,
                |x| {
                    // Fixed statistics (not inputs: no gradient flows to them).
                    let dev = x[0].device();
                    let mean = Tensor::from_vec(vec![0.5, -1.0, 0.0, 2.0, 0.25], &[5], dev).unwrap();
                    let var = Tensor::from_vec(vec![1.5, 0.5, 2.0, 1.0, 0.75], &[5], dev).unwrap();
                    x[0].batch_norm_eval(&mean, &var, Some(&x[1]), Some(&x[2]), 1e-5)
                },
            ),
        ]);
    }
    cases.extend([
        // Two normalized axes, no affine parameters; one channel per group (instance norm).
        case("layer_norm_2d", vec![vec![4, 5, 7]], Draw::Normal, |x| {
            x[0].layer_norm(&[5, 7], None, None, 1e-5)
        }),
        case(
            "group_norm_instance",
            vec![vec![2, 4, 3, 5], vec![4], vec![4]],
            Draw::Normal,
            |x| x[0].group_norm(4, Some(&x[1]), Some(&x[2]), 1e-5),
        ),
        case(
            "batch_norm_rows",
            vec![vec![9, 4], vec![4], vec![4]],
            Draw::Normal,
            |x| x[0].batch_norm(Some(&x[1]), Some(&x[2]), 1e-5).tanh(),
        ),
        case(
            "batch_norm_2d",
            vec![vec![2, 3, 5, 7], vec![3], vec![3]],
            Draw::Normal,
            |x| x[0].batch_norm(Some(&x[1]), Some(&x[2]), 1e-3),
        ),
    ]);
    cases
}

/// Attention composed of batched products, a masked row softmax and a second product.
pub const ATTENTION_TOL: f32 = 1e-4;

/// Scaled dot-product attention (`q`, `k`, `v` of odd sizes), plain, causal and with
/// a float mask, and multi-head self-attention's shape dance (split, attend, merge).
pub fn attention_cases() -> Vec<Case> {
    let n = Draw::Normal;
    vec![
        case(
            "sdpa",
            vec![vec![2, 3, 5, 4], vec![2, 3, 7, 4], vec![2, 3, 7, 3]],
            n,
            |x| wgnn::nn::scaled_dot_product_attention(&x[0], &x[1], &x[2], None, false, 0.0),
        ),
        case(
            "sdpa causal",
            vec![vec![2, 6, 4], vec![2, 6, 4], vec![2, 6, 5]],
            n,
            |x| wgnn::nn::scaled_dot_product_attention(&x[0], &x[1], &x[2], None, true, 0.0),
        ),
        case(
            "sdpa float mask",
            vec![vec![3, 4, 6], vec![3, 5, 6], vec![3, 5, 2], vec![4, 5]],
            n,
            |x| wgnn::nn::scaled_dot_product_attention(&x[0], &x[1], &x[2], Some(&x[3]), false, 0.0),
        ),
        case("heads split and merged", vec![vec![2, 5, 6], vec![6, 6]], n, |x| {
            let q = x[0].matmul(&x[1]).reshape(&[2, 5, 3, 2]).transpose(1, 2);
            let a = wgnn::nn::scaled_dot_product_attention(&q, &q, &q, None, true, 0.0);
            a.transpose(1, 2).reshape(&[2, 5, 6])
        }),
    ]
}
