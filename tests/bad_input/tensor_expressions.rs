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
