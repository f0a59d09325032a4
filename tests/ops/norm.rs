//! Layer, group and batch normalization (`src/ops/norm.rs`): CPU-vs-GPU parity
//! forward and backward at odd sizes (rows longer than a workgroup, channels
//! strided over a batch), finite differences on each device, and the same bits run
//! after run.

use super::common::cases::*;
use super::{assert_parity, gradcheck};
use wgnn::{Device, Tensor};

crate::device_tests!(
    normalizations_pass_a_finite_difference_gradient_check,
    normalization_gives_the_same_bits_run_after_run,
    batch_norm_in_eval_mode_uses_the_given_statistics,
);

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

#[test]
fn normalizations_match_between_cpu_and_gpu() {
    assert_parity(&norm_cases(), NORM_TOL);
}

/// Sums of up to a few thousand values in the same order on both backends; the GPU
/// may contract `a · b + c` into one rounding.
const NORM_TOL: f32 = 1e-4;

fn normalizations_pass_a_finite_difference_gradient_check(dev: &Device) {
    let small = |c: &Case| c.shapes.iter().all(|s| s.iter().product::<usize>() <= 1000);
    for c in norm_cases().iter().filter(|c| small(c)) {
        gradcheck(c, dev);
    }
}

fn normalization_gives_the_same_bits_run_after_run(dev: &Device) {
    let x = Tensor::from_vec(wgnn::rng::normal(3, 4 * 6 * 301), &[4, 6, 301], dev).unwrap();
    let run = || {
        let a = x.batch_norm(None, None, 1e-5);
        let b = x.group_norm(2, None, None, 1e-5);
        let c = x.layer_norm(&[301], None, None, 1e-5);
        [a, b, c].map(|t| t.to_vec().unwrap())
    };
    let first = run();
    for _ in 0..3 {
        assert!(run() == first, "normalization bits changed between runs");
    }
}

fn batch_norm_in_eval_mode_uses_the_given_statistics(dev: &Device) {
    let x = Tensor::new(&[[1.0f32, 10.0], [3.0, 30.0]], dev).unwrap();
    let mean = Tensor::new(&[2.0f32, 20.0], dev).unwrap();
    let var = Tensor::new(&[4.0f32, 100.0], dev).unwrap();
    let w = Tensor::new(&[1.0f32, 2.0], dev).unwrap();
    let b = Tensor::new(&[0.5f32, -1.0], dev).unwrap();
    let y = x
        .batch_norm_eval(&mean, &var, Some(&w), Some(&b), 0.0)
        .to_vec2()
        .unwrap();
    assert_eq!(y, [[0.0, -3.0], [1.0, 1.0]]);
}
