//! Bad input to the training API's newer settings: a callback monitoring a name
//! `fit` does not log, class weights or sample weights that do not fit the data, a
//! regression CSV whose target is not a number, and images too small for a pooling
//! window. Each is an `Err` naming the cause, before any step runs.

use super::{assert_says, classifier, features, labels, parameters, quiet, scratch};
use wgnn::data;
use wgnn::nn::{AvgPool2d, Flatten, Linear, MaxPool2d, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig};
use wgnn::train::{EarlyStopping, Loss, Model};
use wgnn::{Device, Error, Tensor};

#[test]
fn a_callback_monitoring_a_name_fit_does_not_log() {
    let dev = Device::cpu();
    let mut model = classifier(&dev);
    let before = parameters(&model);
    let config = quiet(2)
        .validation_split(0.25)
        .callback(EarlyStopping::new("val_acuracy", 2));
    let err = model.fit(&features(8, 3, &dev), &labels(8, &dev), config).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::UnknownName { .. }),
        "UnknownName",
        &[
            "unknown monitor 'val_acuracy'",
            "callback 0",
            "the valid names are: loss, val_loss",
        ],
    );
    assert_eq!(parameters(&model), before, "no step ran");
}

#[test]
fn class_weights_for_another_number_of_classes() {
    let dev = Device::cpu();
    let net = Linear::new(3, 2, &dev);
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let loss = Loss::cross_entropy_weighted(&[1.0, 2.0, 0.5]).unwrap();
    let mut model = Model::new(net, opt, loss, &[]).unwrap();
    let y = Tensor::from_labels(&[0, 1, 1, 0], &dev).unwrap();
    let err = model.fit(&features(4, 3, &dev), &y, quiet(2)).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::DataShape { .. }),
        "DataShape",
        &["3 class weights were given, the model has 2 classes"],
    );
    let err = Loss::cross_entropy_weighted(&[1.0, -2.0]).unwrap_err();
    assert_says(&err, matches!(err, Error::Invalid(_)), "Invalid", &["class 1 is -2"]);
}

#[test]
fn sample_weights_for_another_number_of_rows() {
    let dev = Device::cpu();
    let mut model = classifier(&dev);
    let w = Tensor::from_vec(vec![1.0; 5], &[5], &dev).unwrap();
    let config = quiet(2).sample_weight(&w);
    let err = model.fit(&features(6, 3, &dev), &labels(6, &dev), config).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::ShapeMismatch { .. }),
        "ShapeMismatch",
        &[
            "sample_weight needs one f32 weight per training row (6 rows)",
            "[6]",
            "[5]",
        ],
    );
    let w = Tensor::from_vec(vec![1.0, 1.0, f32::NAN, 1.0, 1.0, 1.0], &[6], &dev).unwrap();
    let err = model
        .fit(&features(6, 3, &dev), &labels(6, &dev), quiet(2).sample_weight(&w))
        .unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Invalid(_)),
        "Invalid",
        &["sample_weight 2 is NaN"],
    );
}

#[test]
fn a_regression_csv_whose_target_is_not_a_number() {
    let path = scratch("regression-target.csv");
    std::fs::write(&path, "a,b,price\n1,2,3.5\n4,5,n/a\n").unwrap();
    let err = data::load_csv_regression(&path, 1).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Format { .. }),
        "Format",
        &[
            "regression-target.csv",
            "line 3, column 3: target \"n/a\" is not a finite number",
        ],
    );
}

/// Eval-mode batch norm before any training is allowed, as in PyTorch (running
/// statistics 0 and 1: the identity up to eps); what is wrong is data whose channels
/// are not the layer's: an `Err` naming the layer and both counts, before any step.
#[test]
fn batch_norm_over_another_number_of_channels() {
    let dev = Device::cpu();
    let net = wgnn::nn::Sequential::new()
        .add(wgnn::nn::BatchNorm1d::new(4, &dev))
        .add(Linear::new(3, 2, &dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let mut model = Model::new(net, opt, Loss::CrossEntropy, &[]).unwrap();
    let before = parameters(&model);
    let err = model
        .fit(&features(8, 3, &dev), &labels(8, &dev), quiet(4))
        .unwrap_err();
    println!("catalogue: {err}");
    let text = err.to_string();
    for needle in ["BatchNorm1d(4)", "C = 4 channels", "the data has shape [4, 3]"] {
        assert!(text.contains(needle), "{needle:?} is not in: {text}");
    }
    assert_eq!(parameters(&model), before, "no step ran");
}

/// A pooling window larger than the padded images, or padding PyTorch refuses (more
/// than half the kernel), found from the data's shape: an `Err` naming the layer
/// and the numbers, with the model untouched.
#[test]
fn images_too_small_for_a_pooling_window() {
    let dev = Device::cpu();
    let net = Sequential::new()
        .add(MaxPool2d::new(3, 3))
        .add(Flatten)
        .add(Linear::new(4, 3, &dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let mut model = net.compile(opt, Loss::CrossEntropy, &[]).unwrap();
    let before = parameters(&model);
    let images = Tensor::from_vec(vec![0.5; 6 * 4], &[6, 1, 2, 2], &dev).unwrap();
    let err = model.fit(&images, &labels(6, &dev), quiet(2)).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::DataShape { .. }),
        "DataShape",
        &[
            "fit: layer 0 `MaxPool2d(kernel_size=3, stride=3, padding=0)`",
            "max_pool2d: kernel 3 is larger than the padded input (2 + 2·0 = 2)",
            "input shape [2, 1, 2, 2]", // the first batch, which fit checks
        ],
    );
    assert_eq!(parameters(&model), before);
    let padded = Sequential::new()
        .add(AvgPool2d::new(2, 2).padding(2))
        .add(Flatten)
        .add(Linear::new(4, 3, &dev));
    let opt = Adam::new(padded.parameters(), AdamConfig::default());
    let model = padded.compile(opt, Loss::Mse, &[]).unwrap();
    let err = model.predict(&images).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::DataShape { .. }),
        "DataShape",
        &[
            "predict: layer 0 `AvgPool2d(kernel_size=2, stride=2, padding=2)`",
            "padding 2 is more than half the kernel 2",
        ],
    );
}
