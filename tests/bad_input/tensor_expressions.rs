//! Misuse inside a tensor expression: shapes that cannot meet panic where the op is
//! built (the one exception to the catalogue's "never a panic", as `torch` raises
//! there), with a message naming the op and both shapes (or the axis and the shape).

use wgnn::nn::{Linear, Module};
use wgnn::{Device, Tensor};

/// Asserts that building `f` panics with a message containing every needle.
#[track_caller]
pub(crate) fn assert_panics_saying<T>(f: impl FnOnce() -> T, needles: &[&str]) {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .err()
        .expect("the op panics");
    let text = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    println!("catalogue: panic: {text}");
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} is not in the message: {text}");
    }
}

#[test]
fn matmul_of_batch_axes_that_do_not_broadcast() {
    let dev = Device::cpu();
    let a = Tensor::randn(&[2, 3, 4], 1, &dev).unwrap();
    let b = Tensor::randn(&[3, 4, 5], 2, &dev).unwrap();
    assert_panics_saying(
        || a.matmul(&b),
        &[
            "matmul",
            "batch axes [2] and [3] do not broadcast",
            "[2, 3, 4]",
            "[3, 4, 5]",
        ],
    );
    let c = Tensor::randn(&[2, 1, 5, 4, 2], 3, &dev).unwrap();
    assert_panics_saying(|| a.matmul(&c), &["matmul", "[2, 3, 4]", "[2, 1, 5, 4, 2]"]);
}

#[test]
fn matmul_of_a_batch_whose_inner_dimensions_differ() {
    let dev = Device::cpu();
    let a = Tensor::randn(&[2, 3, 4], 1, &dev).unwrap();
    let b = Tensor::randn(&[2, 5, 6], 2, &dev).unwrap();
    assert_panics_saying(
        || a.matmul(&b),
        &["matmul: inner dimensions differ", "[2, 3, 4]", "[2, 5, 6]"],
    );
    let v = Tensor::randn(&[5], 3, &dev).unwrap();
    assert_panics_saying(
        || a.matmul(&v),
        &["matmul: inner dimensions differ", "[2, 3, 4]", "[5]"],
    );
    let s = Tensor::full(&[], 1.0, &dev);
    assert_panics_saying(|| a.matmul(&s), &["matmul", "[2, 3, 4]", "[]"]);
}

#[test]
fn an_axis_outside_the_rank() {
    let dev = Device::cpu();
    let x = Tensor::randn(&[2, 3, 4], 1, &dev).unwrap();
    assert_panics_saying(|| x.sum_axis(-4, false), &["sum_axis", "axis -4", "[2, 3, 4]"]);
    assert_panics_saying(|| x.softmax(3), &["softmax", "axis 3", "[2, 3, 4]"]);
    assert_panics_saying(|| x.transpose(0, -5), &["transpose", "axis -5", "[2, 3, 4]"]);
    assert_panics_saying(|| Tensor::cat(&[&x, &x], 7), &["cat", "axis 7", "[2, 3, 4]"]);
}

#[test]
fn a_linear_layer_on_an_input_without_its_features() {
    let dev = Device::cpu();
    let layer = Linear::new(3, 2, &dev);
    let x = Tensor::randn(&[2, 4, 5], 1, &dev).unwrap();
    assert_panics_saying(|| layer.forward(&x), &["linear", "[2, 4, 5]", "[2, 3]"]);
}

#[test]
fn an_attention_mask_of_the_wrong_shape() {
    let dev = Device::cpu();
    let mha = wgnn::nn::MultiheadAttention::new(
        8,
        2,
        wgnn::nn::MhaConfig {
            batch_first: true,
            ..Default::default()
        },
        &dev,
    );
    let x = Tensor::randn(&[2, 5, 8], 1, &dev).unwrap();
    let mask = Tensor::zeros(&[4, 5], &dev);
    assert_panics_saying(
        || mha.attend_masked(&x, &x, &x, Some(&mask), false),
        &["scaled_dot_product_attention", "mask of shape [4, 5]", "[2, 2, 5, 5]"],
    );
    let wide = Tensor::randn(&[2, 5, 6], 2, &dev).unwrap();
    assert_panics_saying(|| mha.forward(&wide), &["MultiheadAttention", "[2, 5, 6]", "E = 8"]);
}

#[test]
fn normalizations_whose_shapes_do_not_fit() {
    let dev = Device::cpu();
    let x = Tensor::randn(&[2, 6, 5], 1, &dev).unwrap();
    let w = Tensor::randn(&[4], 2, &dev).unwrap();
    assert_panics_saying(
        || x.group_norm(4, None, None, 1e-5),
        &["group_norm", "6 channels", "4 groups"],
    );
    assert_panics_saying(
        || x.batch_norm(Some(&w), None, 1e-5),
        &["batch_norm", "weight has shape [4]", "[2, 6, 5]"],
    );
    assert_panics_saying(
        || x.layer_norm(&[6], None, None, 1e-5),
        &["layer_norm", "[6]", "[2, 6, 5]"],
    );
    let one = Tensor::randn(&[1, 6], 3, &dev).unwrap();
    assert_panics_saying(
        || one.batch_norm(None, None, 1e-5),
        &["more than 1 value per channel", "[1, 6]"],
    );
    let bn = wgnn::nn::BatchNorm2d::new(3, &dev);
    assert_panics_saying(|| bn.forward(&x), &["BatchNorm2d(3)", "[N, C, H, W]", "[2, 6, 5]"]);
}

#[test]
fn a_pooling_kernel_larger_than_the_padded_input() {
    let dev = Device::cpu();
    let x = Tensor::randn(&[1, 2, 3, 4], 1, &dev).unwrap();
    assert_panics_saying(
        || x.max_pool2d(5, 1, 0),
        &["max_pool2d", "kernel 5", "padded input (3 + 2·0 = 3)", "[1, 2, 3, 4]"],
    );
    assert_panics_saying(
        || x.avg_pool2d(6, 2, 1),
        &["avg_pool2d", "kernel 6", "padded input (3 + 2·1 = 5)", "[1, 2, 3, 4]"],
    );
    let seq = Tensor::randn(&[2, 3, 4], 2, &dev).unwrap();
    assert_panics_saying(
        || seq.max_pool1d(7, 1, 1),
        &["max_pool1d", "kernel 7", "padded input (4 + 2·1 = 6)", "[2, 3, 4]"],
    );
}

#[test]
fn pooling_padding_more_than_half_the_kernel() {
    let dev = Device::cpu();
    let x = Tensor::randn(&[1, 2, 8, 8], 1, &dev).unwrap();
    assert_panics_saying(
        || x.max_pool2d(3, 1, 2),
        &["max_pool2d", "padding 2 is more than half the kernel 3", "[1, 2, 8, 8]"],
    );
    assert_panics_saying(
        || x.avg_pool2d(2, 2, 2),
        &["avg_pool2d", "padding 2 is more than half the kernel 2"],
    );
}

#[test]
fn pooling_an_input_without_planes_or_with_no_windows() {
    let dev = Device::cpu();
    let x = Tensor::randn(&[6, 6], 1, &dev).unwrap();
    assert_panics_saying(|| x.max_pool2d(2, 2, 0), &["max_pool2d", "[N, C, H, W]", "[6, 6]"]);
    assert_panics_saying(
        || x.reshape(&[36]).max_pool1d(2, 2, 0),
        &["max_pool1d", "[N, C, L]", "[36]"],
    );
    let planes = Tensor::randn(&[1, 2, 6, 6], 1, &dev).unwrap();
    assert_panics_saying(|| planes.max_pool2d(2, 0, 0), &["max_pool2d", "stride 0"]);
    assert_panics_saying(
        || planes.adaptive_avg_pool2d(0, 3),
        &["adaptive_avg_pool2d", "0 bins over 6 entries"],
    );
}

#[test]
fn unflatten_sizes_that_do_not_split_the_axis() {
    use wgnn::nn::Unflatten;
    let dev = Device::cpu();
    let x = Tensor::randn(&[2, 12], 1, &dev).unwrap();
    assert_panics_saying(
        || Unflatten::new(-1, &[5, 2]).forward(&x),
        &["Unflatten", "[5, 2]", "product 10", "axis 1 of length 12", "[2, 12]"],
    );
    assert_panics_saying(
        || Unflatten::new(2, &[12]).forward(&x),
        &["Unflatten", "axis 2", "[2, 12]"],
    );
    assert_panics_saying(|| wgnn::nn::Flatten.forward(&x.reshape(&[24])), &["Flatten", "[24]"]);
}
