//! Whole PyTorch models' `state_dict`s, both ways: the CNN of examples/cnn.rs
//! (tests/fixtures/make_cnn_fixture.py) and a `TransformerEncoderLayer`
//! (make_transformer_fixture.py). PyTorch's files load with the strict loader and
//! give PyTorch's outputs to 1e-5 on every device; a file saved here has exactly the
//! keys, dtypes (I64 `num_batches_tracked`) and shapes of PyTorch's `state_dict()`,
//! which is what `load_state_dict(strict=True)` checks.
//!
//! With `WGNN_SAVE_FOR_PYTORCH=DIR` the "saved here" tests also leave their files
//! in DIR (`cnn_<device>.safetensors`, `transformer_<device>.safetensors`, each with
//! a `.io.safetensors` beside it holding an input `x` and wgnn's output `y`), for
//! `python3 tests/fixtures/check_pytorch_loads.py FILE`, which loads them into
//! PyTorch with `strict=True` and compares PyTorch's output with wgnn's.

use super::common::{example_cnn, fixture, max_rel_diff, read_tensor, serial};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use wgnn::nn::{Activation, Module, TransformerConfig, TransformerEncoderLayer};
use wgnn::{Device, DeviceKind, Tensor};

crate::device_tests!(
    a_pytorch_cnn_state_dict_loads_strictly_and_gives_pytorchs_outputs_in_eval_and_training,
    a_cnn_saved_here_has_the_keys_dtypes_and_shapes_of_pytorchs_state_dict,
    a_pytorch_transformer_layer_state_dict_loads_strictly_and_gives_pytorchs_output,
    a_transformer_layer_saved_here_has_the_keys_dtypes_and_shapes_of_pytorchs_state_dict,
);

/// PyTorch's outputs to 1e-5, relative beyond 1.
const TOL: f32 = 1e-5;

fn get(file: &str, name: &str, dev: &Device) -> Tensor {
    let (shape, data) = read_tensor(&fixture(file), name);
    Tensor::from_vec(data, &shape, dev).unwrap()
}

#[track_caller]
fn assert_close(got: &Tensor, file: &str, name: &str, dev: &Device) {
    let (shape, want) = read_tensor(&fixture(file), name);
    assert_eq!(got.shape(), shape.as_slice(), "{dev}: {name}: shape");
    let d = max_rel_diff(&got.to_vec().unwrap(), &want);
    assert!(d <= TOL, "{dev}: {name} differs from PyTorch's by {d:e}");
}

/// Every tensor of a safetensors file: name → (dtype, shape). What
/// `load_state_dict(strict=True)` compares (its values aside).
fn layout(path: &Path) -> BTreeMap<String, (Dtype, Vec<usize>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.dtype(), view.shape().to_vec())))
        .collect()
}

/// Where a "saved here" test writes its model file: `WGNN_SAVE_FOR_PYTORCH`'s folder
/// (kept, for check_pytorch_loads.py), else a temporary one (removed by the test).
fn save_path(stem: &str, dev: &Device) -> (PathBuf, bool) {
    let device = match dev.kind() {
        DeviceKind::Cpu => "cpu",
        DeviceKind::Gpu => "gpu",
    };
    match std::env::var_os("WGNN_SAVE_FOR_PYTORCH") {
        Some(dir) => {
            std::fs::create_dir_all(&dir).unwrap();
            (Path::new(&dir).join(format!("{stem}_{device}.safetensors")), true)
        }
        None => {
            let name = format!("wgnn-{stem}-{}-{device}.safetensors", std::process::id());
            (std::env::temp_dir().join(name), false)
        }
    }
}

/// Writes `x` and `y` (f32) with `metadata` beside the model file `model`, as
/// `<model stem>.io.safetensors`: the input and wgnn's output for the check script.
fn write_io(model: &Path, x: &Tensor, y: &Tensor, metadata: &[(&str, &str)]) {
    let bytes = |t: &Tensor| -> Vec<u8> { t.to_vec().unwrap().iter().flat_map(|v| v.to_le_bytes()).collect() };
    let (xb, yb) = (bytes(x), bytes(y));
    let views = vec![
        ("x", TensorView::new(Dtype::F32, x.shape().to_vec(), &xb).unwrap()),
        ("y", TensorView::new(Dtype::F32, y.shape().to_vec(), &yb).unwrap()),
    ];
    let metadata: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let path = model.with_extension("io.safetensors");
    std::fs::write(&path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
    eprintln!(
        "saved {} and {} for tests/fixtures/check_pytorch_loads.py",
        model.display(),
        path.display()
    );
}

fn a_pytorch_cnn_state_dict_loads_strictly_and_gives_pytorchs_outputs_in_eval_and_training(dev: &Device) {
    const FILE: &str = "cnn.safetensors";
    let mut model = example_cnn(dev);
    wgnn::io::load_safetensors(&mut model, fixture("cnn_state.safetensors")).unwrap();
    let buffers = model.named_buffers();
    let count = |key: &str| buffers.iter().find(|(n, _)| n == key).unwrap().1.to_vec().unwrap();
    assert_eq!(
        count("1.num_batches_tracked"),
        [3.0],
        "{dev}: PyTorch's I64 count loads"
    );
    let x = get(FILE, "x", dev);
    model.eval();
    assert_close(&model.forward(&x), FILE, "eval_y", dev);
    // Training mode: the batch's statistics, and the running ones moved by one batch.
    model.train();
    assert_close(&model.forward(&x), FILE, "train_y", dev);
    for (key, t) in model.named_buffers() {
        assert_close(&t, FILE, &format!("train.{key}"), dev);
    }
}

fn a_cnn_saved_here_has_the_keys_dtypes_and_shapes_of_pytorchs_state_dict(dev: &Device) {
    let (x, model) = {
        let _serial = serial();
        wgnn::manual_seed(21);
        (get("cnn.safetensors", "x", dev), example_cnn(dev))
    };
    // One training-mode forward moves the running statistics and the count off
    // their initial values; the saved model is then used in evaluation mode.
    let _ = model.forward(&x).to_vec().unwrap();
    let mut model = model;
    model.eval();
    let y = model.forward(&x);
    let (path, keep) = save_path("cnn", dev);
    wgnn::io::save_safetensors(&model, &path).unwrap();
    assert_eq!(
        layout(&path),
        layout(&fixture("cnn_state.safetensors")),
        "{dev}: the saved file's tensors (name, dtype, shape) are not PyTorch's state_dict's"
    );
    // It loads back here to the same outputs, bit for bit.
    let mut again = example_cnn(dev);
    wgnn::io::load_safetensors(&mut again, &path).unwrap();
    again.eval();
    assert_eq!(again.forward(&x).to_vec().unwrap(), y.to_vec().unwrap(), "{dev}");
    if keep {
        write_io(&path, &x, &y, &[("model", "cnn")]);
    } else {
        std::fs::remove_file(&path).unwrap();
    }
}

/// The fixture's layer: d_model 16, 4 heads, feed-forward 32, no dropout, post-norm,
/// ReLU, batch first.
fn transformer(dev: &Device) -> TransformerEncoderLayer {
    let config = TransformerConfig {
        dim_feedforward: 32,
        dropout: 0.0,
        activation: Activation::Relu,
        batch_first: true,
        norm_first: false,
        ..Default::default()
    };
    TransformerEncoderLayer::new(16, 4, config, dev)
}

fn a_pytorch_transformer_layer_state_dict_loads_strictly_and_gives_pytorchs_output(dev: &Device) {
    let mut layer = transformer(dev);
    wgnn::io::load_safetensors(&mut layer, fixture("transformer_state.safetensors")).unwrap();
    let out = layer.forward(&get("transformer.safetensors", "x", dev));
    assert_close(&out, "transformer.safetensors", "post.out", dev);
}

fn a_transformer_layer_saved_here_has_the_keys_dtypes_and_shapes_of_pytorchs_state_dict(dev: &Device) {
    let layer = {
        let _serial = serial();
        wgnn::manual_seed(21);
        transformer(dev)
    };
    let (path, keep) = save_path("transformer", dev);
    wgnn::io::save_safetensors(&layer, &path).unwrap();
    assert_eq!(
        layout(&path),
        layout(&fixture("transformer_state.safetensors")),
        "{dev}: the saved file's tensors (name, dtype, shape) are not PyTorch's state_dict's"
    );
    if keep {
        let x = get("transformer.safetensors", "x", dev);
        let y = layer.forward(&x);
        let metadata = [
            ("model", "transformer_encoder_layer"),
            ("d_model", "16"),
            ("nhead", "4"),
            ("dim_feedforward", "32"),
            ("norm_first", "false"),
            ("activation", "relu"),
            ("batch_first", "true"),
        ];
        write_io(&path, &x, &y, &metadata);
    } else {
        std::fs::remove_file(&path).unwrap();
    }
}
