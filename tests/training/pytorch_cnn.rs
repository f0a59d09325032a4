//! The CNN of examples/cnn.rs trained by SGD with momentum, step by step against
//! PyTorch (tests/fixtures/make_cnn_fixture.py): from PyTorch's `state_dict`, four
//! steps of `torch.optim.SGD(lr=0.01, momentum=0.9, weight_decay=1e-4)` in training
//! mode on cross-entropy over MNIST batches — each step's loss, then every parameter,
//! the running statistics, the count and an evaluation output after them.
//!
//! Tolerance 1e-5 (relative beyond 1) on the CPU and on the GPU alike. Measured on
//! the CPU and lavapipe: the losses within 1e-7, the trained weights and statistics
//! within 2e-7 except the first convolution's bias (1.3e-6 on both: a bias right
//! before a batch norm has an exact gradient of 0, so what it keeps of its update is
//! rounding noise times the learning rate), the evaluation output within 8e-7.

use super::common::{example_cnn, fixture, max_rel_diff, read_tensor};
use wgnn::nn::{self, Module};
use wgnn::optim::{Optimizer, Sgd, SgdConfig};
use wgnn::{Device, Tensor};

crate::device_tests!(the_cnn_trained_by_sgd_with_momentum_matches_pytorch_step_by_step);

const FILE: &str = "cnn.safetensors";

fn get(name: &str, dev: &Device) -> Tensor {
    let (shape, data) = read_tensor(&fixture(FILE), name);
    Tensor::from_vec(data, &shape, dev).unwrap()
}

/// PyTorch's numbers to 1e-5, relative beyond 1, on every device.
const TOL: f32 = 1e-5;

#[track_caller]
fn assert_close(got: &Tensor, name: &str, dev: &Device) {
    let (shape, want) = read_tensor(&fixture(FILE), name);
    assert_eq!(got.shape(), shape.as_slice(), "{dev}: {name}: shape");
    let d = max_rel_diff(&got.to_vec().unwrap(), &want);
    assert!(d <= TOL, "{dev}: {name} differs from PyTorch's by {d:e}");
}

fn the_cnn_trained_by_sgd_with_momentum_matches_pytorch_step_by_step(dev: &Device) {
    let mut model = example_cnn(dev);
    wgnn::io::load_safetensors(&mut model, fixture("cnn_state.safetensors")).unwrap();
    model.train();
    let config = SgdConfig {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 1e-4,
        ..Default::default()
    };
    let mut opt = Sgd::new(model.parameters(), config);
    for k in 0..4 {
        let x = get(&format!("step{k}.x"), dev);
        let (_, labels) = read_tensor(&fixture(FILE), &format!("step{k}.labels"));
        let labels: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        let loss = nn::loss::cross_entropy(&model.forward(&x), &Tensor::from_labels(&labels, dev).unwrap());
        let grads = loss.backward().unwrap();
        assert_close(&loss, &format!("step{k}.loss"), dev);
        opt.step(&grads).unwrap();
    }
    // Every parameter, and the buffers: the running statistics after seven batches
    // (three before the state_dict, four here), the count 7.
    for (key, t) in model.named_parameters().into_iter().chain(model.named_buffers()) {
        assert_close(&t, &format!("after.{key}"), dev);
    }
    let buffers = model.named_buffers();
    let count = &buffers.iter().find(|(n, _)| n == "5.num_batches_tracked").unwrap().1;
    assert_eq!(count.to_labels().unwrap(), [7], "{dev}");
    model.eval();
    assert_close(&model.forward(&get("x", dev)), "after.eval_y", dev);
}
