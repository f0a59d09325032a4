//! Normalization layers against PyTorch (tests/fixtures/make_norm_fixture.py):
//! LayerNorm and GroupNorm outputs and gradients; BatchNorm1d/2d over three SGD
//! steps — outputs, gradients, running statistics, then evaluation outputs — with
//! the running-statistics update in the step's plan; and the buffers: loaded from
//! a PyTorch `state_dict` (I64 `num_batches_tracked`) strictly, saved as PyTorch
//! saves them, moved with `to`, never given to an optimizer.

use super::common::{fixture, max_rel_diff, read_tensor};
use wgnn::nn::{BatchNorm1d, BatchNorm2d, BatchNormConfig, GroupNorm, LayerNorm, Module};
use wgnn::optim::{Optimizer, Sgd, SgdConfig};
use wgnn::{Device, Tensor};

crate::device_tests!(
    layer_norm_and_group_norm_match_pytorch_outputs_and_gradients,
    batch_norm_1d_matches_pytorch_over_three_training_steps_and_in_eval,
    batch_norm_2d_matches_pytorch_over_three_training_steps_and_in_eval,
    batch_norm_with_momentum_none_affine_false_or_no_running_stats_matches_pytorch,
    batch_norm_options_give_pytorchs_state_dict_keys_and_names,
    a_pytorch_batch_norm_state_dict_with_i64_count_loads_strictly_and_gives_its_outputs,
    batch_norm_buffers_save_as_pytorch_move_with_to_and_are_not_parameters,
    the_running_statistics_update_runs_in_the_optimizer_steps_plan,
    batch_norms_trained_on_two_threads_at_once_end_as_each_trained_alone,
);

/// PyTorch's numbers to 1e-5 (relative beyond 1).
const TOL: f32 = 1e-5;

fn get(name: &str, dev: &Device) -> Tensor {
    let (shape, data) = read_tensor(&fixture("norm.safetensors"), name);
    Tensor::from_vec(data, &shape, dev).unwrap()
}

#[track_caller]
fn assert_close(got: &Tensor, name: &str) {
    let (shape, want) = read_tensor(&fixture("norm.safetensors"), name);
    assert_eq!(got.numel(), shape.iter().product::<usize>(), "{name}: size");
    let d = max_rel_diff(&got.to_vec().unwrap(), &want);
    assert!(d <= TOL, "{name}: differs from PyTorch by {d}");
}

/// Sets a parameter to the fixture's values.
fn set(param: &Tensor, name: &str) {
    param
        .assign(&read_tensor(&fixture("norm.safetensors"), name).1)
        .unwrap();
}

/// Output, input gradient and parameter gradients of `layer` on `{name}.x` for the
/// readout `(y · r).sum()`, against the fixture's (`suffix` names the step).
fn check_step(layer: &dyn Module, name: &str, suffix: &str, dev: &Device) -> wgnn::Gradients {
    let x = get(&format!("{name}.x{suffix}"), dev).requires_grad().unwrap();
    let y = layer.forward(&x);
    let r = get(&format!("{name}.r{suffix}"), dev).reshape(y.shape());
    let grads = (&y * &r).sum().backward().unwrap();
    assert_close(&y, &format!("{name}.y{suffix}"));
    assert_close(grads.get(&x).unwrap(), &format!("{name}.grad.x{suffix}"));
    let params = layer.named_parameters();
    for (param, t) in params {
        assert_close(grads.get(&t).unwrap(), &format!("{name}.grad.{param}{suffix}"));
    }
    grads
}

fn layer_norm_and_group_norm_match_pytorch_outputs_and_gradients(dev: &Device) {
    let ln = LayerNorm::new(&[5], dev);
    let gn = GroupNorm::new(3, 6, dev);
    for (layer, name) in [(&ln as &dyn Module, "ln"), (&gn, "gn")] {
        for (param, t) in layer.named_parameters() {
            set(&t, &format!("{name}.{param}"));
        }
        check_step(layer, name, "", dev);
    }
}

/// Three SGD steps (lr 0.1) in training mode, then the buffers, the trained
/// parameters and an evaluation-mode output, all against PyTorch.
fn batch_norm_steps(layer: &mut dyn Module, name: &str, dev: &Device) {
    for (param, t) in layer.named_parameters() {
        set(&t, &format!("{name}.{param}"));
    }
    let config = SgdConfig {
        lr: 0.1,
        ..Default::default()
    };
    let mut opt = Sgd::new(layer.parameters(), config);
    for k in 0..3 {
        let grads = check_step(layer, name, &k.to_string(), dev);
        opt.step(&grads).unwrap();
    }
    for (buffer, t) in layer.named_buffers() {
        assert_close(&t, &format!("{name}.{buffer}"));
    }
    for (param, t) in layer.named_parameters() {
        assert_close(&t, &format!("{name}.{param}_after"));
    }
    layer.eval();
    assert_close(
        &layer.forward(&get(&format!("{name}.eval_x"), dev)),
        &format!("{name}.eval_y"),
    );
}

fn batch_norm_1d_matches_pytorch_over_three_training_steps_and_in_eval(dev: &Device) {
    batch_norm_steps(&mut BatchNorm1d::new(4, dev), "bn1d", dev);
}

fn batch_norm_2d_matches_pytorch_over_three_training_steps_and_in_eval(dev: &Device) {
    batch_norm_steps(&mut BatchNorm2d::new(3, dev), "bn2d", dev);
}

fn options(momentum: Option<f32>, affine: bool, track_running_stats: bool) -> BatchNormConfig {
    BatchNormConfig {
        momentum,
        affine,
        track_running_stats,
        ..Default::default()
    }
}

/// PyTorch's `momentum=None` (cumulative moving average), `affine=False` and
/// `track_running_stats=False` (batch statistics in evaluation too), alone and
/// together: three training steps (outputs, gradients, SGD on what parameters there
/// are), the buffers there are, and the evaluation output, to 1e-5.
fn batch_norm_with_momentum_none_affine_false_or_no_running_stats_matches_pytorch(dev: &Device) {
    batch_norm_steps(
        &mut BatchNorm2d::with_config(3, options(None, true, true), dev),
        "bn2d_cma",
        dev,
    );
    let mut bn = BatchNorm1d::with_config(4, options(Some(0.1), false, true), dev);
    batch_norm_steps(&mut bn, "bn1d_noaffine", dev);
    let mut bn = BatchNorm2d::with_config(3, options(Some(0.1), true, false), dev);
    batch_norm_steps(&mut bn, "bn2d_notrack", dev);
    let mut bn = BatchNorm1d::with_config(4, options(None, false, true), dev);
    batch_norm_steps(&mut bn, "bn1d_cma_noaffine", dev);
    assert_eq!(bn.num_batches_tracked.to_vec().unwrap(), [3.0], "{dev}");
}

/// Each option's `state_dict` keys are PyTorch's (what `strict=True` checks), the
/// layer names its options as PyTorch's arguments, and a bad momentum is an error.
fn batch_norm_options_give_pytorchs_state_dict_keys_and_names(dev: &Device) {
    let keys = |m: &dyn Module| -> Vec<String> {
        let mut all = m.named_parameters();
        all.extend(m.named_buffers());
        all.into_iter().map(|(n, _)| n).collect()
    };
    let all = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"];
    let cases = [
        (options(None, true, true), &all[..], "BatchNorm2d(3, momentum=None)"),
        (
            options(Some(0.1), false, true),
            &all[2..],
            "BatchNorm2d(3, affine=False)",
        ),
        (
            options(Some(0.1), true, false),
            &all[..2],
            "BatchNorm2d(3, track_running_stats=False)",
        ),
        (
            options(Some(0.1), false, false),
            &all[..0],
            "BatchNorm2d(3, affine=False, track_running_stats=False)",
        ),
    ];
    for (config, want, name) in cases {
        let bn = BatchNorm2d::with_config(3, config, dev);
        assert_eq!(keys(&bn), want, "{name}");
        assert_eq!(bn.name(), name);
        assert_eq!(bn.config(), config);
    }
    let err = BatchNorm1d::try_with_config(2, options(Some(1.5), true, true), dev)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("BatchNorm1d: momentum 1.5 is outside [0, 1]"),
        "{err}"
    );
}

fn a_pytorch_batch_norm_state_dict_with_i64_count_loads_strictly_and_gives_its_outputs(dev: &Device) {
    let mut bn = BatchNorm2d::new(3, dev);
    wgnn::io::load_safetensors(&mut bn, fixture("norm_bn2d_state.safetensors")).unwrap();
    assert_eq!(bn.num_batches_tracked.to_vec().unwrap(), [3.0]);
    bn.eval();
    assert_close(&bn.forward(&get("bn2d.eval_x", dev)), "bn2d.eval_y");
}

fn batch_norm_buffers_save_as_pytorch_move_with_to_and_are_not_parameters(dev: &Device) {
    let mut bn = BatchNorm2d::new(3, dev);
    wgnn::io::load_safetensors(&mut bn, fixture("norm_bn2d_state.safetensors")).unwrap();
    let names: Vec<String> = bn.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["running_mean", "running_var", "num_batches_tracked"]);
    assert_eq!(bn.parameters().len(), 2, "only weight and bias are trainable");
    // Saved with PyTorch's names and dtypes: the count as I64, shape [].
    let path = std::env::temp_dir().join(format!("wgnn_bn_{}_{:?}.safetensors", std::process::id(), dev.kind()));
    wgnn::io::save_safetensors(&bn, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header = String::from_utf8_lossy(&bytes[8..8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize])
        .into_owned();
    assert!(
        header.contains(r#""num_batches_tracked":{"dtype":"I64","shape":[]"#),
        "{header}"
    );
    let mut again = BatchNorm2d::new(3, dev);
    wgnn::io::load_safetensors(&mut again, &path).unwrap();
    std::fs::remove_file(&path).unwrap();
    // Moved to the CPU, the buffers keep their values (and the count stays an integer).
    again.to(&Device::cpu()).unwrap();
    for ((name, a), (_, b)) in again.named_buffers().iter().zip(bn.named_buffers()) {
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap(), "{name}");
        assert_eq!(a.dtype(), b.dtype(), "{name}");
    }
}

fn the_running_statistics_update_runs_in_the_optimizer_steps_plan(dev: &Device) {
    let dev = super::common::private(dev);
    let bn = BatchNorm1d::new(2, &dev);
    let x = Tensor::new(&[[1.0f32, 10.0], [3.0, 30.0], [5.0, 20.0]], &dev).unwrap();
    let mut opt = Sgd::new(bn.parameters(), SgdConfig::default());
    let loss = bn.forward(&x).square().mean();
    let grads = loss.backward().unwrap();
    let before = dev.stats();
    opt.step(&grads).unwrap();
    let after = dev.stats();
    assert_eq!(
        after.submits - before.submits,
        1,
        "one plan, one submit for the whole step"
    );
    // Applied by that plan: batch means 3, 20; unbiased variances 4, 100.
    assert_eq!(bn.running_mean.to_vec().unwrap(), [0.3, 2.0]);
    assert_eq!(bn.running_var.to_vec().unwrap(), [0.9 + 0.4, 0.9 + 10.0]);
}

/// Two batch norms trained at once on one device, each on its own thread, end with
/// the running statistics and weights each reaches alone, bit for bit: a queued
/// running-statistics update belongs to the thread that queued it, so a plan on the
/// other thread neither runs it late (after a later update of the same buffer) nor
/// leaves its own thread reading the buffer before it; and the two threads run the
/// same cached plans on inputs of their own (on the GPU, one run's upload of its
/// host inputs must not land before the other's submit).
fn batch_norms_trained_on_two_threads_at_once_end_as_each_trained_alone(dev: &Device) {
    let train = |seed: usize| -> Vec<f32> {
        let bn = BatchNorm1d::new(4, dev);
        let mut opt = Sgd::new(
            bn.parameters(),
            SgdConfig {
                lr: 0.1,
                ..Default::default()
            },
        );
        for step in 0..30 {
            let x: Vec<f32> = (0..24)
                .map(|i| ((i * 7 + step * 3 + seed * 11) % 13) as f32 - 5.0)
                .collect();
            let x = Tensor::from_vec(x, &[6, 4], dev).unwrap();
            let y = bn.forward(&x);
            let r: Vec<f32> = (0..24).map(|i| ((i * 5 + seed) % 7) as f32 * 0.1 - 0.3).collect();
            let loss = (&y * &Tensor::from_vec(r, &[6, 4], dev).unwrap()).sum();
            // A plan of its own for the loss, then the step's.
            loss.to_vec().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let mut out = bn.running_mean.to_vec().unwrap();
        out.extend(bn.running_var.to_vec().unwrap());
        out.extend(bn.weight.to_vec().unwrap());
        out
    };
    let alone = [train(1), train(2)];
    for _ in 0..3 {
        let together = std::thread::scope(|s| {
            let other = s.spawn(|| train(2));
            [train(1), other.join().unwrap()]
        });
        assert_eq!(together, alone, "{dev}");
    }
}
