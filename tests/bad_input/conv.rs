//! Convolutions given what cannot be convolved: a tensor expression panics naming
//! the op and the numbers; a layer's construction returns `Err` naming the layer and
//! the numbers, and a layer's `output_spec` (what `fit` checks data with) says why
//! the data does not fit.

use super::tensor_expressions::assert_panics_saying;
use wgnn::nn::{Conv1d, Conv2d, ConvConfig, ConvTranspose2d, Module, TensorSpec};
use wgnn::{ConvArgs, Device, Error, Tensor};

#[test]
fn a_kernel_larger_than_the_padded_input() {
    let dev = Device::cpu();
    let x = Tensor::randn(&[1, 2, 4, 4], 1, &dev).unwrap();
    let w = Tensor::randn(&[3, 2, 7, 7], 2, &dev).unwrap();
    let padded = ConvArgs {
        padding: 1,
        ..Default::default()
    };
    assert_panics_saying(
        || x.conv2d(&w, None, padded),
        &[
            "conv2d",
            "kernel [7, 7]",
            "larger than the padded input",
            "[1, 2, 4, 4]",
            "padding 1",
        ],
    );
    let dilated = ConvArgs {
        dilation: 3,
        ..Default::default()
    };
    let x1 = Tensor::randn(&[1, 2, 6], 1, &dev).unwrap();
    let w1 = Tensor::randn(&[3, 2, 3], 2, &dev).unwrap();
    assert_panics_saying(
        || x1.conv1d(&w1, None, dilated),
        &["conv1d", "kernel [3]", "dilated to 7", "[1, 2, 6]"],
    );
    let layer = Conv2d::new(2, 3, 5, ConvConfig::default(), &dev);
    let why = layer.output_spec(&TensorSpec::f32(&[1, 2, 4, 4])).unwrap_err();
    println!("catalogue: output_spec: {why}");
    assert!(why.contains("kernel [5, 5]") && why.contains("[1, 2, 4, 4]"), "{why}");
}

#[test]
fn channels_not_divisible_by_groups() {
    let dev = Device::cpu();
    let groups = |g| ConvConfig {
        groups: g,
        ..Default::default()
    };
    for err in [
        Conv2d::try_new(4, 6, [3, 3], groups(3), &dev).err().unwrap(),
        Conv1d::try_new(6, 4, 3, groups(3), &dev).err().unwrap(),
        ConvTranspose2d::try_new(6, 5, [2, 2], groups(2), &dev).err().unwrap(),
    ] {
        println!("catalogue: Err: {err}");
        assert!(
            matches!(err, Error::InvalidSetting { setting: "groups", .. }),
            "{err:?}"
        );
    }
    let err = Conv2d::try_new(4, 6, [3, 3], groups(3), &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("Conv2d") && err.contains("in_channels 4") && err.contains("groups 3"),
        "{err}"
    );
    assert_panics_saying(
        || Conv2d::new(4, 6, 3, groups(3), &dev),
        &["Conv2d", "in_channels 4", "out_channels 6", "groups 3"],
    );
    let x = Tensor::randn(&[1, 4, 5, 5], 1, &dev).unwrap();
    let w = Tensor::randn(&[6, 1, 3, 3], 2, &dev).unwrap();
    let args = ConvArgs {
        groups: 3,
        ..Default::default()
    };
    assert_panics_saying(
        || x.conv2d(&w, None, args),
        &["conv2d", "4 input channels", "groups 3", "[1, 4, 5, 5]", "[6, 1, 3, 3]"],
    );
}

#[test]
fn a_weight_for_other_input_channels_or_a_wrong_rank() {
    let dev = Device::cpu();
    let x = Tensor::randn(&[1, 3, 5, 5], 1, &dev).unwrap();
    let w = Tensor::randn(&[4, 2, 3, 3], 2, &dev).unwrap();
    assert_panics_saying(
        || x.conv2d(&w, None, ConvArgs::default()),
        &[
            "conv2d",
            "[4, 2, 3, 3]",
            "expects 2 input channels per group",
            "[1, 3, 5, 5]",
        ],
    );
    let flat = Tensor::randn(&[3, 25], 3, &dev).unwrap();
    assert_panics_saying(
        || flat.conv2d(&w, None, ConvArgs::default()),
        &["conv2d", "[N, C, H, W]", "[3, 25]"],
    );
    let b = Tensor::randn(&[5], 4, &dev).unwrap();
    let w3 = Tensor::randn(&[4, 3, 3, 3], 5, &dev).unwrap();
    assert_panics_saying(
        || x.conv2d(&w3, Some(&b), ConvArgs::default()),
        &["conv2d", "bias shape [5]", "4 output channels"],
    );
}

#[test]
fn a_transposed_convolution_with_output_padding_not_below_the_stride() {
    let dev = Device::cpu();
    let x = Tensor::randn(&[1, 2, 3, 3], 1, &dev).unwrap();
    let w = Tensor::randn(&[2, 1, 3, 3], 2, &dev).unwrap();
    let args = ConvArgs {
        stride: 2,
        output_padding: 2,
        ..Default::default()
    };
    assert_panics_saying(
        || x.conv_transpose2d(&w, None, args),
        &["conv_transpose2d", "output_padding 2", "stride 2"],
    );
    let stride = ConvConfig {
        stride: 2,
        ..Default::default()
    };
    let layer = ConvTranspose2d::new(2, 1, 3, stride, &dev);
    let err = layer.with_output_padding(2).err().unwrap().to_string();
    assert!(
        err.contains("ConvTranspose2d") && err.contains("output_padding 2"),
        "{err}"
    );
}
