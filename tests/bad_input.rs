//! The bad-input catalogue: every malformed file and every misfit argument a user can
//! hand wgnn is an `Err` of the right kind whose message names the cause — never a
//! panic, never a silently wrong model. One test per case; and structure-aware
//! fuzzing of the file readers (`fuzz`, in tests/bad_input/fuzz.rs). Misuse inside a
//! tensor expression is the exception: it panics where the op is built, naming the
//! op and the shapes (`tensor_expressions`, in tests/bad_input/tensor_expressions.rs).

mod common;
#[path = "bad_input/conv.rs"]
mod conv;
#[path = "bad_input/fit.rs"]
mod fit;
#[path = "bad_input/fuzz.rs"]
mod fuzz;
#[path = "bad_input/tensor_expressions.rs"]
mod tensor_expressions;

use std::io::Write;
use std::path::PathBuf;

use wgnn::data::{self, DataLoader};
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::train::{FitConfig, Loss};
use wgnn::{Device, Error, Tensor};

/// A fresh path `name` in this process's scratch folder.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgnn-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Asserts `err` is the expected kind (`kind` names it in the failure message) and
/// that its message contains every needle.
#[track_caller]
fn assert_says(err: &Error, is_kind: bool, kind: &str, needles: &[&str]) {
    let text = err.to_string();
    println!("catalogue: Error::{kind}: {text}");
    assert!(is_kind, "expected Error::{kind}, got {err:?}");
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} is not in the message: {text}");
    }
}

// ---- IDX -------------------------------------------------------------------------

/// A valid pair of IDX files with 2 images of 2×2 and labels 3, 4.
fn idx_pair(tag: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let images = scratch(&format!("{tag}-images"));
    let labels = scratch(&format!("{tag}-labels"));
    let mut header = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
    header.extend([0u8, 64, 128, 255, 1, 2, 3, 4]);
    std::fs::write(&images, &header).unwrap();
    std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 2, 3, 4]).unwrap();
    assert_eq!(data::load_idx(&images, &labels).unwrap().n, 2);
    (images, labels, header)
}

#[test]
fn idx_with_a_wrong_magic_number() {
    let (images, labels, file) = idx_pair("magic");
    std::fs::write(&images, [&[0u8, 0, 8, 4][..], &file[4..]].concat()).unwrap();
    let err = data::load_idx(&images, &labels).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Format { offset: 0, .. }),
        "Format",
        &["magic 0x00000803", "found 0x00000804"],
    );
}

#[test]
fn idx_with_a_truncated_payload() {
    let (images, labels, file) = idx_pair("truncated");
    std::fs::write(&images, &file[..file.len() - 3]).unwrap();
    let err = data::load_idx(&images, &labels).unwrap_err();
    assert_says(&err, matches!(err, Error::Format { .. }), "Format", &["truncated"]);
}

#[test]
fn idx_with_a_truncated_header() {
    let (images, labels, file) = idx_pair("header");
    std::fs::write(&images, &file[..10]).unwrap();
    let err = data::load_idx(&images, &labels).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Format { .. }),
        "Format",
        &["truncated IDX header"],
    );
}

#[test]
fn idx_with_dimensions_that_overflow() {
    let (images, labels, _) = idx_pair("overflow");
    let mut file = vec![0, 0, 8, 3];
    for _ in 0..3 {
        file.extend(u32::MAX.to_be_bytes());
    }
    std::fs::write(&images, &file).unwrap();
    let err = data::load_idx(&images, &labels).unwrap_err();
    assert_says(&err, matches!(err, Error::Format { .. }), "Format", &["overflow"]);
}

#[test]
fn idx_with_a_gzip_stream_cut_short() {
    let (images, labels, file) = idx_pair("gzip");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&file.repeat(50)).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(&images, &gz[..gz.len() / 2]).unwrap();
    let err = data::load_idx(&images, &labels).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Format { .. }),
        "Format",
        &["gzip stream is corrupt or truncated"],
    );
}

#[test]
fn idx_file_missing() {
    let (images, _, _) = idx_pair("missing");
    let err = data::load_idx(&images, scratch("no-such-labels")).unwrap_err();
    assert_says(&err, matches!(err, Error::Io { .. }), "Io", &["no-such-labels"]);
}

// ---- CSV -------------------------------------------------------------------------

/// `load_csv_labelled` on a file with this text (one header line skipped).
fn csv(tag: &str, text: &str) -> wgnn::Result<data::Dataset> {
    let path = scratch(&format!("{tag}.csv"));
    std::fs::write(&path, text).unwrap();
    data::load_csv_labelled(&path, 1)
}

#[test]
fn csv_with_ragged_rows() {
    let err = csv("ragged", "a,b,label\n1,2,0\n3,1\n").unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Format { .. }),
        "Format",
        &["line 3 has 2 columns, expected 3"],
    );
}

#[test]
fn csv_with_a_value_that_is_not_a_number() {
    let err = csv("word", "a,b,label\n1,2,0\n3,four,1\n").unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Format { .. }),
        "Format",
        &["line 3, column 2", "\"four\" is not a finite number"],
    );
}

#[test]
fn csv_with_a_missing_value() {
    let err = csv("missing", "a,b,label\n1,2,0\n3,,1\n").unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Format { .. }),
        "Format",
        &["line 3, column 2", "\"\" is not a finite number"],
    );
}

#[test]
fn csv_with_nan_and_infinity() {
    for (tag, value) in [("nan", "NaN"), ("inf", "inf"), ("neg-inf", "-inf")] {
        let err = csv(tag, &format!("a,b,label\n1,{value},0\n")).unwrap_err();
        assert_says(
            &err,
            matches!(err, Error::Format { .. }),
            "Format",
            &["line 2, column 2", "is not a finite number"],
        );
    }
}

#[test]
fn csv_with_a_bad_label() {
    let err = csv("label", "a,b,label\n1,2,-1\n").unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Format { .. }),
        "Format",
        &["line 2, column 3", "label \"-1\" is not a non-negative integer"],
    );
}

#[test]
fn csv_that_is_empty() {
    for (tag, text) in [
        ("empty", ""),
        ("header-only", "a,b,label\n"),
        ("blank", "a,b,label\n\n  \n"),
    ] {
        let err = csv(tag, text).unwrap_err();
        let why = if text.is_empty() {
            "the file is empty"
        } else {
            "no data rows"
        };
        assert_says(&err, matches!(err, Error::Format { .. }), "Format", &[why]);
    }
}

#[test]
fn csv_that_is_not_text() {
    let err = csv("binary", "a,b,label\n1,\u{0},0\n").unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    let path = scratch("latin1.csv");
    std::fs::write(&path, b"a,b,label\n1,\xe9,0\n").unwrap();
    let err = data::load_csv_labelled(&path, 1).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Format { .. }),
        "Format",
        &["not valid UTF-8"],
    );
}

// ---- safetensors -----------------------------------------------------------------

/// Linear(4, 3): "weight" [3, 4], "bias" [3].
fn small_model(dev: &Device) -> Linear {
    Linear::new(4, 3, dev)
}

/// A valid safetensors file of [`small_model`]'s parameters.
fn safetensors_file(tag: &str) -> (PathBuf, Vec<u8>) {
    let path = scratch(&format!("{tag}.safetensors"));
    wgnn::io::save_safetensors(&small_model(&Device::cpu()), &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// Loads `bytes` as a safetensors file into a fresh model and checks the model kept
/// its values.
fn load_bytes(tag: &str, bytes: &[u8]) -> Error {
    let path = scratch(&format!("{tag}.safetensors"));
    std::fs::write(&path, bytes).unwrap();
    let mut model = small_model(&Device::cpu());
    let before: Vec<Vec<f32>> = model.parameters().iter().map(|t| t.to_vec().unwrap()).collect();
    let err = wgnn::io::load_safetensors(&mut model, &path).unwrap_err();
    let after: Vec<Vec<f32>> = model.parameters().iter().map(|t| t.to_vec().unwrap()).collect();
    assert_eq!(before, after, "a failed load changed the model");
    err
}

#[test]
fn safetensors_truncated() {
    let (_, bytes) = safetensors_file("trunc-src");
    let err = load_bytes("truncated", &bytes[..bytes.len() - 5]);
    assert_says(
        &err,
        matches!(err, Error::SafeTensors { .. }),
        "SafeTensors",
        &["truncated.safetensors"],
    );
}

#[test]
fn safetensors_with_a_header_longer_than_the_file() {
    let (_, mut bytes) = safetensors_file("header-src");
    bytes[..8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let err = load_bytes("long-header", &bytes);
    assert_says(
        &err,
        matches!(err, Error::SafeTensors { .. }),
        "SafeTensors",
        &["long-header.safetensors"],
    );
}

#[test]
fn safetensors_that_is_garbage() {
    let garbage: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let err = load_bytes("garbage", &garbage);
    assert_says(
        &err,
        matches!(err, Error::SafeTensors { .. }),
        "SafeTensors",
        &["garbage.safetensors"],
    );
    let err = load_bytes("tiny", b"abc");
    assert_says(
        &err,
        matches!(err, Error::SafeTensors { .. }),
        "SafeTensors",
        &["tiny.safetensors"],
    );
}

#[test]
fn safetensors_with_a_wrong_shape() {
    let (path, _) = safetensors_file("shape");
    let mut other = Linear::new(5, 3, &Device::cpu());
    let err = wgnn::io::load_safetensors(&mut other, &path).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Load { .. }),
        "Load",
        &["tensor \"weight\" has shape [3, 4], the module expects [3, 5]"],
    );
}

#[test]
fn safetensors_with_a_missing_tensor() {
    let path = scratch("no-bias.safetensors");
    let dev = Device::cpu();
    wgnn::io::save_safetensors(&Linear::try_new(4, 3, false, &dev).unwrap(), &path).unwrap();
    let mut model = small_model(&dev);
    let err = wgnn::io::load_safetensors(&mut model, &path).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Load { .. }),
        "Load",
        &["missing tensor \"bias\""],
    );
}

// ---- checkpoints -----------------------------------------------------------------

/// A checkpoint of [`small_model`] with Adam after one step, and its bytes.
fn checkpoint_file(tag: &str) -> (PathBuf, Vec<u8>) {
    let dev = Device::cpu();
    let model = small_model(&dev);
    let mut opt = Adam::new(model.parameters(), AdamConfig::default());
    let x = Tensor::randn(&[2, 4], 3, &dev).unwrap();
    opt.step(&model.forward(&x).square().mean().backward().unwrap())
        .unwrap();
    let path = scratch(&format!("{tag}.ckpt"));
    wgnn::io::save_checkpoint(&model, &opt, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

/// Loads the checkpoint at `path` into a fresh [`small_model`] and Adam, checking a
/// failed load leaves both as they were.
fn load_checkpoint_into(model: &mut dyn Module, path: &std::path::Path) -> Error {
    let mut opt = Adam::new(model.parameters(), AdamConfig::default());
    let before: Vec<Vec<f32>> = model.parameters().iter().map(|t| t.to_vec().unwrap()).collect();
    let err = wgnn::io::load_checkpoint(model, &mut opt, path).unwrap_err();
    let after: Vec<Vec<f32>> = model.parameters().iter().map(|t| t.to_vec().unwrap()).collect();
    assert_eq!(before, after, "a failed load changed the model");
    assert_eq!(opt.lr(), 1e-3, "a failed load changed the optimizer");
    err
}

#[test]
fn checkpoint_truncated() {
    let (_, bytes) = checkpoint_file("ckpt-src");
    for cut in [bytes.len() - 1, bytes.len() / 2, 9, 3] {
        let path = scratch("truncated.ckpt");
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = load_checkpoint_into(&mut small_model(&Device::cpu()), &path);
        assert_says(
            &err,
            matches!(err, Error::SafeTensors { .. }),
            "SafeTensors",
            &["truncated.ckpt"],
        );
    }
}

#[test]
fn checkpoint_of_another_architecture() {
    let (path, _) = checkpoint_file("arch");
    let mut wider = Linear::new(5, 3, &Device::cpu());
    let err = load_checkpoint_into(&mut wider, &path);
    assert_says(
        &err,
        matches!(err, Error::Load { .. }),
        "Load",
        &["\"weight\" has shape [3, 4], the module expects [3, 5]"],
    );
}

#[test]
fn checkpoint_that_is_a_plain_model_file() {
    let (path, _) = safetensors_file("plain-model");
    let err = load_checkpoint_into(&mut small_model(&Device::cpu()), &path);
    assert_says(&err, matches!(err, Error::Load { .. }), "Load", &["checkpoint"]);
}

// ---- data given to a model -------------------------------------------------------

/// Linear(3, 8), ReLU, Linear(8, 3) with Adam and cross-entropy.
fn classifier(dev: &Device) -> wgnn::train::Model {
    let net = Sequential::new()
        .add(Linear::new(3, 8, dev))
        .add(nn::Relu)
        .add(Linear::new(8, 3, dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    net.compile(opt, Loss::CrossEntropy, &[]).unwrap()
}

fn quiet(batch_size: usize) -> FitConfig {
    FitConfig {
        batch_size,
        verbose: false,
        layer_stats: false,
        ..Default::default()
    }
}

fn parameters(model: &wgnn::train::Model) -> Vec<Vec<f32>> {
    model.net.parameters().iter().map(|t| t.to_vec().unwrap()).collect()
}

fn features(rows: usize, cols: usize, dev: &Device) -> Tensor {
    let values = (0..rows * cols).map(|i| (i % 7) as f32 / 7.0).collect();
    Tensor::from_vec(values, &[rows, cols], dev).unwrap()
}

fn labels(rows: usize, dev: &Device) -> Tensor {
    Tensor::from_labels(&(0..rows as u32).map(|i| i % 3).collect::<Vec<_>>(), dev).unwrap()
}

device_tests!(
    labels_not_below_the_number_of_classes,
    nan_and_infinite_features,
    a_feature_count_that_does_not_fit_the_first_layer,
);

fn labels_not_below_the_number_of_classes(dev: &Device) {
    let mut model = classifier(dev);
    let before = parameters(&model);
    let y = Tensor::from_labels(&[0, 1, 2, 5, 1, 0], dev).unwrap();
    let err = model.fit(&features(6, 3, dev), &y, quiet(2)).unwrap_err();
    assert_says(
        &err,
        matches!(
            err,
            Error::LabelOutOfRange {
                label: 5,
                index: 3,
                classes: 3,
                ..
            }
        ),
        "LabelOutOfRange",
        &["label 5 at index 3", "3 classes"],
    );
    assert_eq!(parameters(&model), before, "{dev}: a refused fit changed the model");
    let err = model.evaluate(&features(6, 3, dev), &y).unwrap_err();
    assert!(matches!(err, Error::LabelOutOfRange { label: 5, .. }), "{err}");
}

fn nan_and_infinite_features(dev: &Device) {
    let mut model = classifier(dev);
    let before = parameters(&model);
    let mut values = features(5, 3, dev).to_vec().unwrap();
    values[2 * 3 + 1] = f32::NAN;
    let x = Tensor::from_vec(values.clone(), &[5, 3], dev).unwrap();
    let err = model.fit(&x, &labels(5, dev), quiet(2)).unwrap_err();
    assert_says(
        &err,
        matches!(
            err,
            Error::NonFiniteData {
                what: "features",
                row: 2,
                column: 1,
                ..
            }
        ),
        "NonFiniteData",
        &["fit", "features hold NaN at row 2, column 1"],
    );
    assert_eq!(parameters(&model), before, "{dev}: a refused fit changed the model");
    values[2 * 3 + 1] = 0.0;
    values[4 * 3] = f32::NEG_INFINITY;
    let x = Tensor::from_vec(values, &[5, 3], dev).unwrap();
    let err = model.predict(&x).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::NonFiniteData { row: 4, column: 0, .. }),
        "NonFiniteData",
        &["predict", "-inf at row 4, column 0"],
    );
    let err = model.evaluate(&x, &labels(5, dev)).unwrap_err();
    assert!(matches!(err, Error::NonFiniteData { .. }), "{err}");
}

fn a_feature_count_that_does_not_fit_the_first_layer(dev: &Device) {
    let mut model = classifier(dev);
    let err = model.fit(&features(6, 4, dev), &labels(6, dev), quiet(2)).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::DataShape { .. }),
        "DataShape",
        &["fit: layer 0 `Linear(3, 8)` expects 3 features, the data has 4"],
    );
    let err = model.predict(&features(2, 4, dev)).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::DataShape { .. }),
        "DataShape",
        &["predict: layer 0 `Linear(3, 8)` expects 3 features"],
    );
    let rows = Tensor::from_vec(vec![0.0; 2 * 3 * 2], &[2, 3, 2], dev).unwrap();
    let err = model.predict(&rows).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::DataShape { .. }),
        "DataShape",
        &["layer 0 `Linear(3, 8)` expects rows of 3 features", "[2, 3, 2]"],
    );
}

#[test]
fn nan_targets_for_a_regression() {
    let dev = Device::cpu();
    let net = Sequential::new().add(Linear::new(3, 1, &dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let mut model = net.compile(opt, Loss::Mse, &[]).unwrap();
    let y = Tensor::from_vec(vec![0.5, f32::INFINITY, 0.0, 1.0], &[4, 1], &dev).unwrap();
    let err = model.fit(&features(4, 3, &dev), &y, quiet(2)).unwrap_err();
    assert_says(
        &err,
        matches!(
            err,
            Error::NonFiniteData {
                what: "targets",
                row: 1,
                column: 0,
                ..
            }
        ),
        "NonFiniteData",
        &["targets hold inf at row 1, column 0"],
    );
}

#[test]
fn targets_that_do_not_fit_the_loss() {
    let dev = Device::cpu();
    let mut model = classifier(&dev);
    let y = Tensor::from_vec(vec![0.0; 4], &[4], &dev).unwrap();
    let err = model.fit(&features(4, 3, &dev), &y, quiet(2)).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::DataShape { .. }),
        "DataShape",
        &["CrossEntropy loss", "needs class labels"],
    );
    let net = Sequential::new().add(Linear::new(3, 2, &dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let mut regression = net.compile(opt, Loss::Mse, &[]).unwrap();
    let y = Tensor::from_vec(vec![0.0; 4], &[4, 1], &dev).unwrap();
    let err = regression.fit(&features(4, 3, &dev), &y, quiet(2)).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::DataShape { .. }),
        "DataShape",
        &["targets shaped like the output", "[2, 2]", "[2, 1]"],
    );
}

#[test]
fn an_empty_data_set() {
    let dev = Device::cpu();
    let x = Tensor::from_vec(Vec::new(), &[0, 3], &dev).unwrap();
    let y = Tensor::from_labels(&[], &dev).unwrap();
    let err = DataLoader::new(&x, &y, 4).unwrap_err();
    assert_says(&err, matches!(err, Error::Invalid(_)), "Invalid", &["no rows"]);
    let err = classifier(&dev).fit(&x, &y, quiet(4)).unwrap_err();
    assert_says(&err, matches!(err, Error::Invalid(_)), "Invalid", &["no rows"]);
}

#[test]
fn a_batch_size_of_zero() {
    let dev = Device::cpu();
    let err = DataLoader::new(&features(4, 3, &dev), &labels(4, &dev), 0).unwrap_err();
    assert_says(
        &err,
        matches!(
            err,
            Error::InvalidSetting {
                setting: "batch_size",
                ..
            }
        ),
        "InvalidSetting",
        &["batch_size must be at least 1"],
    );
    let err = classifier(&dev)
        .fit(&features(4, 3, &dev), &labels(4, &dev), quiet(0))
        .unwrap_err();
    assert_says(
        &err,
        matches!(
            err,
            Error::InvalidSetting {
                setting: "batch_size",
                ..
            }
        ),
        "InvalidSetting",
        &["batch_size must be at least 1"],
    );
}

#[test]
fn rows_of_inputs_and_targets_that_differ() {
    let dev = Device::cpu();
    let err = classifier(&dev)
        .fit(&features(4, 3, &dev), &labels(5, &dev), quiet(2))
        .unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::ShapeMismatch { .. }),
        "ShapeMismatch",
        &["same number of rows"],
    );
}

#[test]
fn zero_epochs() {
    let dev = Device::cpu();
    let config = FitConfig { epochs: 0, ..quiet(2) };
    let err = classifier(&dev)
        .fit(&features(4, 3, &dev), &labels(4, &dev), config)
        .unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::InvalidSetting { setting: "epochs", .. }),
        "InvalidSetting",
        &["epochs must be at least 1"],
    );
}

// ---- devices ---------------------------------------------------------------------

#[test]
fn an_unknown_device_name() {
    let err = Device::from_name("tpu").unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::UnknownName { .. }),
        "UnknownName",
        &["unknown device 'tpu'", "cpu, gpu, auto"],
    );
    assert_eq!(Device::from_name(" CPU ").unwrap().kind(), wgnn::DeviceKind::Cpu);
}

#[test]
fn a_gpu_with_no_backend() {
    let err = Device::gpu_with_backends("none").unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::NoAdapter(_)),
        "NoAdapter",
        &["no GPU adapter found"],
    );
}

// ---- shape checks without a graph ------------------------------------------------

/// Every layer of `wgnn::nn` says what it makes of an input, and says what
/// `forward` really gives; a misfit names the layer.
#[test]
fn every_layer_states_its_output_shape_as_forward_gives_it() {
    use wgnn::nn::{Autoencoder, Dropout, Embedding, Gru, Lstm, Rnn, RnnConfig, TensorSpec};
    let dev = Device::cpu();
    let x = Tensor::randn(&[4, 3], 1, &dev).unwrap();
    let seq = Tensor::randn(&[5, 2, 3], 2, &dev).unwrap();
    let ids = Tensor::from_labels(&[1, 0, 4, 2, 3, 1], &dev).unwrap().reshape(&[2, 3]);
    let planes = Tensor::randn(&[2, 3, 7, 5], 3, &dev).unwrap();
    let batch_first = RnnConfig {
        batch_first: true,
        num_layers: 2,
        ..Default::default()
    };
    let bidirectional = RnnConfig {
        bidirectional: true,
        num_layers: 2,
        ..Default::default()
    };
    let cases: Vec<(Box<dyn Module>, &Tensor)> = vec![
        (Box::new(Linear::new(3, 6, &dev)), &x),
        (Box::new(nn::Softmax), &x),
        (Box::new(nn::Softmax::new(0)), &x),
        (Box::new(nn::Gelu), &x),
        (Box::new(nn::Identity), &ids),
        (Box::new(nn::Flatten), &seq),
        (Box::new(nn::Unflatten::new(-1, &[1, 3])), &seq),
        (Box::new(nn::MaxPool1d::new(2, 1).padding(1)), &seq),
        (Box::new(nn::MaxPool2d::new(3, 2).padding(1)), &planes),
        (Box::new(nn::AvgPool2d::new(2, 2)), &planes),
        (Box::new(nn::AdaptiveAvgPool2d::new(3, 2)), &planes),
        (Box::new(Dropout::new(0.5)), &x),
        (Box::new(Lstm::new(3, 7, RnnConfig::default(), &dev)), &seq),
        (Box::new(Gru::new(3, 7, batch_first, &dev)), &seq),
        (Box::new(Rnn::new(3, 7, RnnConfig::default(), &dev)), &seq),
        (Box::new(Lstm::new(3, 7, bidirectional, &dev)), &seq),
        (Box::new(Gru::new(3, 7, bidirectional, &dev)), &seq),
        (Box::new(Embedding::new(5, 4, &dev)), &ids),
        (
            Box::new(Autoencoder::new(
                Sequential::new().add(Linear::new(3, 2, &dev)).add(nn::Tanh),
                Sequential::new().add(Linear::new(2, 3, &dev)).add(nn::Sigmoid),
            )),
            &x,
        ),
    ];
    for (module, input) in &cases {
        let said = module.output_spec(&TensorSpec::of(input)).unwrap();
        assert_eq!(said, Some(TensorSpec::of(&module.forward(input))), "{}", module.name());
    }
    let lstm = Lstm::new(4, 7, RnnConfig::default(), &dev);
    let why = lstm.output_spec(&TensorSpec::of(&seq)).unwrap_err();
    assert!(why.contains("expects 4 input features, the data has 3"), "{why}");
    let why = Embedding::new(5, 4, &dev).output_spec(&TensorSpec::of(&x)).unwrap_err();
    assert!(why.contains("expects u32 labels"), "{why}");
    let ae = Autoencoder::new(Linear::new(3, 2, &dev), Linear::new(5, 3, &dev));
    let why = ae.output_spec(&TensorSpec::of(&x)).unwrap_err();
    assert!(why.contains("decoder: expects 5 features, the data has 2"), "{why}");
}

/// A bidirectional stack's initial state has two rows per layer (layer 0 forward,
/// layer 0 reverse, …): a state of `[layers, B, H]` is refused where it is given,
/// naming the layer and the shape it wants.
#[test]
fn a_bidirectional_initial_state_of_the_wrong_first_dimension() {
    use tensor_expressions::assert_panics_saying;
    use wgnn::nn::{Gru, Lstm, LstmState, Rnn, RnnConfig};
    let dev = Device::cpu();
    let config = |layers| RnnConfig {
        num_layers: layers,
        bidirectional: true,
        ..Default::default()
    };
    let x = Tensor::randn(&[5, 3, 2], 1, &dev).unwrap();
    let lstm = Lstm::new(2, 4, config(2), &dev);
    let one_per_layer = LstmState {
        h: Tensor::zeros(&[2, 3, 4], &dev),
        c: Tensor::zeros(&[2, 3, 4], &dev),
    };
    assert_panics_saying(
        || lstm.forward_seq(&x, Some(&one_per_layer)),
        &[
            "LSTM(2, 4, num_layers=2, bidirectional=True)",
            "the state must be [4, 3, 4]",
            "[2·layers, B, H]",
            "got [2, 3, 4]",
        ],
    );
    let gru = Gru::new(2, 4, config(2), &dev);
    let h0 = Tensor::zeros(&[3, 3, 4], &dev);
    assert_panics_saying(
        || gru.forward_seq(&x, Some(&h0)),
        &[
            "GRU(2, 4, num_layers=2, bidirectional=True)",
            "[4, 3, 4]",
            "[2·layers, B, H]",
            "got [3, 3, 4]",
        ],
    );
    let rnn = Rnn::new(2, 4, config(1), &dev);
    let h0 = Tensor::zeros(&[1, 3, 4], &dev);
    assert_panics_saying(
        || rnn.forward_seq(&x, Some(&h0)),
        &[
            "RNN(2, 4, num_layers=1, bidirectional=True)",
            "[2, 3, 4]",
            "[2·layers, B, H]",
            "got [1, 3, 4]",
        ],
    );
    // The right shape runs.
    let h0 = Tensor::zeros(&[2, 3, 4], &dev);
    assert_eq!(rnn.forward_seq(&x, Some(&h0)).0.shape(), &[5, 3, 8]);
}

// ---- the first-week API ----------------------------------------------------------

#[test]
fn nested_data_with_rows_of_unequal_length() {
    let dev = Device::cpu();
    let err = Tensor::new(&vec![vec![1.0f32, 2.0, 3.0], vec![4.0, 5.0]], &dev).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::Invalid(_)),
        "Invalid",
        &["ragged", "row 1 has shape [2]", "row 0 has [3]"],
    );
}

#[test]
fn a_schedule_that_does_not_start_from_the_optimizers_rate() {
    use wgnn::optim::lr::StepLr;
    use wgnn::train::LrScheduler;
    let dev = Device::cpu();
    let mut model = classifier(&dev);
    let before = parameters(&model);
    let config = quiet(2).callback(LrScheduler::new(StepLr::new(0.5, 1, 0.1)));
    let err = model.fit(&features(4, 3, &dev), &labels(4, &dev), config).unwrap_err();
    assert_says(
        &err,
        matches!(
            err,
            Error::InvalidSetting {
                setting: "lr schedule",
                ..
            }
        ),
        "InvalidSetting",
        &["starts from lr 0.5", "the optimizer's rate is 0.001", "for_optimizer"],
    );
    assert_eq!(parameters(&model), before, "nothing was trained");
}

#[test]
fn a_regression_metric_for_a_classifier() {
    let dev = Device::cpu();
    let net = Sequential::new().add(Linear::new(3, 2, &dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let err = net
        .compile(opt, Loss::CrossEntropy, &[wgnn::metrics::Metric::R2])
        .err()
        .unwrap();
    assert_says(
        &err,
        matches!(err, Error::Invalid(_)),
        "Invalid",
        &["metric 'r2'", "a regression loss (Loss::Mse)"],
    );
}

#[test]
fn nested_data_read_back_at_the_wrong_rank() {
    let dev = Device::cpu();
    let t = Tensor::new(&[1.0f32, 2.0, 3.0], &dev).unwrap();
    let err = t.to_vec2().unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::WrongRank { .. }),
        "WrongRank",
        &["Tensor::to_vec2", "rank 2", "[3]"],
    );
}

#[test]
fn a_frozen_parameter_given_to_an_optimizer() {
    let dev = Device::cpu();
    let layer = Linear::new(3, 2, &dev);
    let mut opt = Adam::new(layer.parameters(), AdamConfig::default());
    layer.bias.as_ref().unwrap().set_requires_grad(false).unwrap();
    let before = layer.weight.to_vec().unwrap();
    let x = features(4, 3, &dev);
    let grads = layer.forward(&x).sum().backward().unwrap();
    let err = opt.step(&grads).unwrap_err();
    assert_says(
        &err,
        matches!(err, Error::FrozenParameter { index: 1, .. }),
        "FrozenParameter",
        &["parameter 1 (shape [2]) is frozen", "trainable_parameters"],
    );
    assert_eq!(layer.weight.to_vec().unwrap(), before, "nothing was updated");
    let computed = (&layer.weight * 2.0).set_requires_grad(false).unwrap_err();
    assert_says(
        &computed,
        matches!(computed, Error::Invalid(_)),
        "Invalid",
        &["only leaf tensors"],
    );
}

#[test]
fn param_groups_with_an_unknown_name_a_shared_tensor_or_no_tensor() {
    use wgnn::optim::{ParamGroup, Sgd, SgdConfig};
    let dev = Device::cpu();
    let net = nn::Sequential::new()
        .add(Linear::new(3, 2, &dev))
        .add(Linear::new(2, 1, &dev));
    let unknown = net.parameters_under("head").unwrap_err();
    assert_says(
        &unknown,
        matches!(unknown, Error::UnknownName { .. }),
        "UnknownName",
        &["unknown parameter prefix 'head'", "0.weight", "1.bias"],
    );
    let twice = vec![
        ParamGroup::new(net.parameters_under("0").unwrap()),
        ParamGroup::new(net.parameters()).lr(0.1),
    ];
    let err = Sgd::with_groups(twice, SgdConfig::default())
        .err()
        .expect("a tensor in two groups");
    assert_says(
        &err,
        matches!(err, Error::InvalidSetting { .. }),
        "InvalidSetting",
        &["shape [2, 3] is in group 0 and in group 1"],
    );
    let empty = vec![ParamGroup::new(net.parameters()), ParamGroup::new(Vec::new())];
    let err = Adam::with_groups(empty, AdamConfig::default())
        .err()
        .expect("an empty group");
    assert_says(
        &err,
        matches!(err, Error::InvalidSetting { .. }),
        "InvalidSetting",
        &["group 1 has no parameter"],
    );
    let negative = vec![ParamGroup::new(net.parameters()).lr(-1.0)];
    let err = Sgd::with_groups(negative, SgdConfig::default())
        .err()
        .expect("a negative rate");
    assert_says(
        &err,
        matches!(err, Error::InvalidSetting { .. }),
        "InvalidSetting",
        &["group 0 has lr = -1"],
    );
}

#[test]
fn attention_whose_embedding_does_not_split_into_its_heads() {
    use wgnn::nn::{MhaConfig, MultiheadAttention};
    let dev = Device::cpu();
    let err = MultiheadAttention::try_new(10, 3, MhaConfig::default(), &dev)
        .err()
        .expect("10 does not split in 3");
    assert_says(
        &err,
        matches!(
            err,
            Error::InvalidSetting {
                setting: "num_heads",
                ..
            }
        ),
        "InvalidSetting",
        &["MultiheadAttention", "embed_dim 10", "num_heads 3"],
    );
    let dropout = MhaConfig {
        dropout: 1.5,
        ..Default::default()
    };
    let err = MultiheadAttention::try_new(8, 2, dropout, &dev)
        .err()
        .expect("a dropout above 1");
    assert_says(
        &err,
        matches!(err, Error::InvalidSetting { .. }),
        "InvalidSetting",
        &["dropout 1.5"],
    );
}
