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

#[test]
fn normalizations_match_between_cpu_and_gpu() {
    assert_parity(&norm_cases(), NORM_TOL);
}

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
