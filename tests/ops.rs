//! Every op, forward and backward: CPU-vs-GPU parity on random inputs of odd sizes,
//! and finite-difference gradient checks on the CPU reference.

mod common;

use common::{devices, gpu, max_rel_diff};
use wgnn::nn::loss;
use wgnn::{Device, Tensor};

/// How inputs are drawn.
#[derive(Clone, Copy)]
enum Draw {
    /// Standard normal.
    Normal,
    /// Uniform in [0.5, 2): for log, sqrt, div.
    Positive,
    /// Normal pushed at least 0.1 away from 0: for kinks at 0.
    AwayFromZero,
    /// Uniform in (0.05, 0.95): probabilities.
    Probability,
}

struct Case {
    name: &'static str,
    shapes: Vec<Vec<usize>>,
    draw: Draw,
    f: fn(&[Tensor]) -> Tensor,
}

fn case(name: &'static str, shapes: Vec<Vec<usize>>, draw: Draw, f: fn(&[Tensor]) -> Tensor) -> Case {
    Case { name, shapes, draw, f }
}

fn draw(draw: Draw, n: usize, seed: u64) -> Vec<f32> {
    let normal = wgnn::rng::normal(seed, n);
    let unit = wgnn::rng::uniform(seed, n, 0.0, 1.0);
    match draw {
        Draw::Normal => normal,
        Draw::Positive => unit.iter().map(|u| 0.5 + 1.5 * u).collect(),
        Draw::AwayFromZero => normal.iter().map(|v| v.signum() * (0.1 + v.abs())).collect(),
        Draw::Probability => unit.iter().map(|u| 0.05 + 0.9 * u).collect(),
    }
}

fn inputs(c: &Case, dev: &Device, seed: u64) -> Vec<Tensor> {
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
fn readout(out: &Tensor, seed: u64) -> Tensor {
    let w = Tensor::from_vec(wgnn::rng::normal(seed ^ 0xabc, out.numel()), out.shape(), out.device()).unwrap();
    (out * &w).sum()
}

/// Output values and the gradient of the readout with respect to every input.
fn evaluate(c: &Case, dev: &Device, seed: u64) -> (Vec<f32>, Vec<Vec<f32>>) {
    let xs = inputs(c, dev, seed);
    let out = (c.f)(&xs);
    let values = out.to_vec().unwrap();
    let grads = readout(&out, seed).backward().unwrap();
    let g = xs
        .iter()
        .map(|x| {
            grads
                .get(x)
                .map(|g| g.to_vec().unwrap())
                .unwrap_or_else(|| vec![0.0; x.numel()])
        })
        .collect();
    (values, g)
}

fn sizes() -> [usize; 5] {
    [1, 7, 33, 129, 1000]
}

fn elementwise_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for n in sizes() {
        let s = vec![vec![n]];
        cases.extend([
            case("neg", s.clone(), Draw::Normal, |x| x[0].neg()),
            case("exp", s.clone(), Draw::Normal, |x| x[0].exp()),
            case("log", s.clone(), Draw::Positive, |x| x[0].log()),
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

fn matmul_cases() -> Vec<Case> {
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
    cases
}

/// Indices `(i·7 + 3) mod n` for i < m: repeats once m > n (so scatter-add sums).
fn indices(m: usize, n: usize, dev: &Device) -> Tensor {
    let idx: Vec<u32> = (0..m).map(|i| ((i * 7 + 3) % n) as u32).collect();
    Tensor::from_labels(&idx, dev).unwrap()
}

/// Slicing, joining and gathering: the ops sequence models are built from.
fn sequence_op_cases() -> Vec<Case> {
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
            case("scatter_add_rows", vec![vec![2 * n + 1, 4]], Draw::Normal, |x| {
                let m = x[0].shape()[0];
                let n = (m - 1) / 2;
                x[0].scatter_add(0, &indices(m, n, x[0].device()), n)
            }),
        ]);
    }
    cases
}

fn assert_parity(cases: &[Case], tol: f32) {
    let Some(gpu) = gpu() else { return };
    let cpu = Device::cpu();
    for (i, c) in cases.iter().enumerate() {
        let seed = 100 + i as u64;
        let (out_c, grads_c) = evaluate(c, &cpu, seed);
        let (out_g, grads_g) = evaluate(c, &gpu, seed);
        let d = max_rel_diff(&out_g, &out_c);
        assert!(d <= tol, "{} {:?}: forward differs by {d}", c.name, c.shapes);
        for (j, (gg, gc)) in grads_g.iter().zip(&grads_c).enumerate() {
            let d = max_rel_diff(gg, gc);
            assert!(
                d <= tol,
                "{} {:?}: gradient of input {j} differs by {d}",
                c.name,
                c.shapes
            );
        }
    }
}

#[test]
fn elementwise_reduce_and_shape_ops_match_between_cpu_and_gpu() {
    assert_parity(&elementwise_cases(), 1e-4);
}

#[test]
fn slicing_joining_and_gathering_match_between_cpu_and_gpu() {
    // Copies are exact; gathers and scatter-adds of the readout's gradient too.
    assert_parity(&sequence_op_cases(), 0.0);
}

#[test]
fn matmuls_match_between_cpu_and_gpu_including_odd_tile_edges() {
    // Sums of up to 511 products: allow for a different summation order.
    assert_parity(&matmul_cases(), 1e-3);
}

#[test]
fn cross_entropy_matches_between_cpu_and_gpu() {
    let Some(gpu) = gpu() else { return };
    for (rows, classes) in [(1, 1), (7, 3), (33, 10), (129, 7), (1000, 10)] {
        let run = |dev: &Device| {
            let logits = Tensor::randn(&[rows, classes], 5, dev)
                .unwrap()
                .requires_grad()
                .unwrap();
            let labels: Vec<u32> = (0..rows as u32).map(|r| (r * 7 + 3) % classes as u32).collect();
            let labels = Tensor::from_labels(&labels, dev).unwrap();
            let l = loss::cross_entropy(&logits, &labels);
            let g = l.backward().unwrap();
            (l.to_vec().unwrap(), g.get(&logits).unwrap().to_vec().unwrap())
        };
        let (lc, gc) = run(&Device::cpu());
        let (lg, gg) = run(&gpu);
        assert!(
            max_rel_diff(&lg, &lc) < 1e-5 && max_rel_diff(&gg, &gc) < 1e-5,
            "cross_entropy [{rows}, {classes}]"
        );
    }
}

#[test]
fn argmax_matches_between_cpu_and_gpu_and_picks_the_first_maximum() {
    for dev in devices() {
        let x = Tensor::from_vec(vec![1.0, 3.0, 3.0, 0.0, -1.0, -2.0], &[2, 3], &dev).unwrap();
        assert_eq!(x.argmax(1).to_labels().unwrap(), vec![1, 0], "{dev}");
        assert_eq!(x.argmax(0).to_labels().unwrap(), vec![0, 0, 0], "{dev}");
        for n in sizes() {
            let x = Tensor::randn(&[3, n], 9, &dev).unwrap();
            let cpu = Tensor::randn(&[3, n], 9, &Device::cpu()).unwrap();
            assert_eq!(x.argmax(1).to_labels().unwrap(), cpu.argmax(1).to_labels().unwrap());
        }
    }
}

/// Central differences of the readout, on up to 12 coordinates of each input.
fn gradcheck(c: &Case) {
    let dev = Device::cpu();
    let seed = 7;
    let (_, analytic) = evaluate(c, &dev, seed);
    let base: Vec<Vec<f32>> = c
        .shapes
        .iter()
        .enumerate()
        .map(|(i, s)| draw(c.draw, s.iter().product(), seed + i as u64))
        .collect();
    let value_at = |data: &[Vec<f32>]| -> f64 {
        let xs: Vec<Tensor> = data
            .iter()
            .zip(&c.shapes)
            .map(|(d, s)| Tensor::from_vec(d.clone(), s, &dev).unwrap())
            .collect();
        // The readout in f64 on the host, so the difference quotient is not lost in
        // f32 summation.
        let out = (c.f)(&xs);
        let w = wgnn::rng::normal(seed ^ 0xabc, out.numel());
        out.to_vec()
            .unwrap()
            .iter()
            .zip(&w)
            .map(|(&o, &w)| o as f64 * w as f64)
            .sum::<f64>()
    };
    let eps = 1e-3f32;
    for (input, grad) in analytic.iter().enumerate() {
        let n = base[input].len();
        for k in 0..n.min(12) {
            let coord = (k * 7919) % n;
            let mut plus = base.clone();
            plus[input][coord] += eps;
            let mut minus = base.clone();
            minus[input][coord] -= eps;
            let numeric = (value_at(&plus) - value_at(&minus)) / (2.0 * eps as f64);
            let a = grad[coord] as f64;
            let err = (numeric - a).abs() / numeric.abs().max(a.abs()).max(1.0);
            assert!(
                err < 2e-2,
                "{} {:?}: input {input}[{coord}]: analytic {a}, numeric {numeric}",
                c.name,
                c.shapes
            );
        }
    }
}

#[test]
fn every_op_passes_a_finite_difference_gradient_check() {
    let small = |c: &Case| c.shapes.iter().all(|s| s.iter().product::<usize>() <= 5000);
    for c in elementwise_cases().iter().filter(|c| small(c)) {
        gradcheck(c);
    }
    for c in matmul_cases().iter().filter(|c| small(c)) {
        gradcheck(c);
    }
    for c in sequence_op_cases().iter().filter(|c| small(c)) {
        gradcheck(c);
    }
}

#[test]
fn cross_entropy_passes_a_finite_difference_gradient_check() {
    let c = case("cross_entropy", vec![vec![5, 4]], Draw::Normal, |x| {
        let labels = Tensor::from_labels(&[0, 3, 1, 1, 2], x[0].device()).unwrap();
        loss::cross_entropy(&x[0], &labels)
    });
    gradcheck(&c);
}

#[test]
fn a_parameter_used_twice_gets_the_sum_of_both_gradients() {
    for dev in devices() {
        let w = Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3], &dev)
            .unwrap()
            .requires_grad()
            .unwrap();
        let f = (&w * &w).sum() + w.sum();
        let g = f.backward().unwrap();
        assert_eq!(g.get(&w).unwrap().to_vec().unwrap(), vec![3.0, -3.0, 7.0], "{dev}");
    }
}

#[test]
fn large_launches_fold_into_a_two_dimensional_grid() {
    // 2^24 + 3 elements: more than 65,535 workgroups of 256.
    for dev in devices() {
        let n = (1 << 24) + 3;
        let x = Tensor::full(&[n], 2.0, &dev);
        let y = x.mul_scalar(1.5).to_vec().unwrap();
        assert_eq!(y.len(), n);
        assert!(y.iter().all(|&v| v == 3.0), "{dev}: some elements were not written");
        let total = x.sum().item().unwrap() as f64;
        assert!(
            (total - 2.0 * n as f64).abs() / (2.0 * n as f64) < 1e-6,
            "{dev}: sum {total}"
        );
    }
}

#[test]
fn dropout_drops_the_same_elements_on_cpu_and_gpu_at_the_expected_rate() {
    let n = 200_003;
    let cpu_mask = |p: f32| {
        let x = Tensor::ones(&[n], &Device::cpu());
        x.dropout(p, 2024).to_vec().unwrap()
    };
    for p in [0.1f32, 0.5, 0.9] {
        let reference = cpu_mask(p);
        let kept = reference.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        assert!((kept - (1.0 - p as f64)).abs() < 0.005, "p = {p}: kept {kept}");
        assert!(
            reference.iter().all(|&v| v == 0.0 || v == 1.0 / (1.0 - p)),
            "p = {p}: scale"
        );
        for dev in devices() {
            let x = Tensor::from_vec(vec![1.0; n], &[n], &dev)
                .unwrap()
                .requires_grad()
                .unwrap();
            let y = x.dropout(p, 2024);
            let out = y.to_vec().unwrap();
            assert_eq!(out, reference, "{dev}: p = {p}: mask differs from the CPU's");
            // The backward pass regenerates the same mask: d(sum y)/dx = keep / (1 - p).
            let g = y.sum().backward().unwrap();
            assert_eq!(
                g.get(&x).unwrap().to_vec().unwrap(),
                reference,
                "{dev}: p = {p}: gradient mask"
            );
        }
    }
}

#[test]
fn dropout_with_p_zero_is_the_identity_and_p_one_zeroes_everything() {
    for dev in devices() {
        let x = Tensor::randn(&[129], 3, &dev).unwrap();
        assert_eq!(x.dropout(0.0, 1).to_vec().unwrap(), x.to_vec().unwrap(), "{dev}");
        assert!(x.dropout(1.0, 1).to_vec().unwrap().iter().all(|&v| v == 0.0), "{dev}");
    }
}
