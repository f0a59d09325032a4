//! The first week of a PyTorch or Keras user: `#[derive(Module)]` names a custom
//! module's members by field, `Model::new` trains any module with `fit` (a reusable
//! `FitConfig`, regression metrics) and keeps its names, `Module::to` moves a trained
//! model between devices, and tensors are written as nested arrays.

use crate::common::{gpu, private, serial};
use wgnn::metrics::Metric;
use wgnn::nn::{self, Dropout, Linear, Lstm, Module, RnnConfig};
use wgnn::optim::{Adam, AdamConfig};
use wgnn::train::{EarlyStopping, FitConfig, Loss, Model};
use wgnn::{Device, Tensor};

/// The first custom model of the DESIGN's first-week API: an LSTM regressor.
#[derive(Module)]
struct Regressor {
    lstm: Lstm,
    head: Linear,
}

impl Module for Regressor {
    fn forward(&self, x: &Tensor) -> Tensor {
        let out = self.lstm.forward(x);
        self.head.forward(&out.select(1, out.shape()[1] - 1))
    }
}

/// Every kind of field the derive knows.
#[derive(Module)]
struct Kinds {
    scale: Tensor,
    shift: Option<Tensor>,
    blocks: Vec<Linear>,
    extra: Option<Linear>,
    drop: Dropout,
    #[module(buffer)]
    running: Tensor,
    #[module(skip)]
    #[allow(dead_code)]
    width: usize,
}

impl Module for Kinds {
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.blocks.iter().fold(x.clone(), |h, b| b.forward(&h).relu());
        self.drop.forward(&(&h * &self.scale))
    }
}

#[derive(Module)]
struct Pair(Linear, nn::Tanh, Linear);

impl Module for Pair {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.2.forward(&self.1.forward(&self.0.forward(x)))
    }
}

fn names(m: &dyn Module) -> Vec<String> {
    m.named_parameters().into_iter().map(|(n, _)| n).collect()
}

#[test]
fn the_derive_names_parameters_children_lists_and_buffers_by_field() {
    let _serial = serial();
    let dev = Device::cpu();
    let leaf = |shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_vec(vec![1.0; n], shape, &dev)
            .unwrap()
            .requires_grad()
            .unwrap()
    };
    let mut k = Kinds {
        scale: leaf(&[3]),
        shift: None,
        blocks: vec![Linear::new(3, 3, &dev), Linear::new(3, 3, &dev)],
        extra: Some(Linear::new(3, 1, &dev)),
        drop: Dropout::new(0.5),
        running: Tensor::zeros(&[3], &dev),
        width: 3,
    };
    assert_eq!(
        names(&k),
        [
            "scale",
            "blocks.0.weight",
            "blocks.0.bias",
            "blocks.1.weight",
            "blocks.1.bias",
            "extra.weight",
            "extra.bias"
        ]
    );
    let buffers: Vec<String> = k.named_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(buffers, ["running"]);
    k.eval();
    assert!(!k.drop.is_training(), "eval reaches a child");
    k.train();
    assert!(k.drop.is_training(), "train reaches a child");
    let pair = Pair(Linear::new(2, 4, &dev), nn::Tanh, Linear::new(4, 1, &dev));
    assert_eq!(names(&pair), ["0.weight", "0.bias", "2.weight", "2.bias"]);
}

/// A sine wave, 16 steps in, the next value out.
fn sine_windows(rows: usize, dev: &Device) -> (Tensor, Tensor) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for r in 0..rows {
        let start = r as f32 * 0.37;
        x.extend((0..16).map(|t| (start + t as f32 * 0.3).sin()));
        y.push((start + 16.0 * 0.3).sin());
    }
    (
        Tensor::from_vec(x, &[rows, 16, 1], dev).unwrap(),
        Tensor::from_vec(y, &[rows, 1], dev).unwrap(),
    )
}

/// `net` with Adam at 0.01 and an MSE loss.
fn adam_model(net: Regressor, metrics: &[Metric]) -> Model<Regressor> {
    let opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
    );
    Model::new(net, opt, Loss::Mse, metrics).unwrap()
}

fn regressor(dev: &Device) -> Regressor {
    let config = RnnConfig {
        batch_first: true,
        ..Default::default()
    };
    Regressor {
        lstm: Lstm::new(1, 16, config, dev),
        head: Linear::new(16, 1, dev),
    }
}

/// A derived module trained by `fit` through `Model::new` learns the sine wave, and
/// saves with its own names (no `0.` prefix), which load back into a fresh one.
#[test]
fn a_derived_lstm_regressor_trains_with_fit_and_saves_under_its_own_names() {
    let _serial = serial();
    let dev = Device::cpu();
    wgnn::manual_seed(4);
    let net = regressor(&dev);
    let mut model = adam_model(net, &[]);
    let (x, y) = sine_windows(256, &dev);
    let config = FitConfig {
        epochs: 30,
        batch_size: 32,
        verbose: false,
        ..Default::default()
    };
    let history = model.fit(&x, &y, config).unwrap();
    let loss = *history.history["loss"].last().unwrap();
    assert!(loss < 0.01, "the regressor did not learn the sine wave: MSE {loss}");
    let dir = std::env::temp_dir().join(format!("wgnn-derive-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("regressor.safetensors");
    wgnn::io::save_safetensors(&model.net, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let header = String::from_utf8_lossy(&bytes[8..8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize]);
    for name in ["\"lstm.weight_ih_l0\"", "\"head.weight\"", "\"head.bias\""] {
        assert!(header.contains(name), "{name} missing from {header}");
    }
    assert!(!header.contains("\"0."), "a prefix crept in: {header}");
    let mut fresh = regressor(&dev);
    wgnn::io::load_safetensors(&mut fresh, &path).unwrap();
    assert_eq!(
        fresh.forward(&x).to_vec().unwrap(),
        model.net.forward(&x).to_vec().unwrap()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A trained model moved to the GPU and back gives the CPU's outputs; its parameters
/// stay trainable, and an optimizer built after the move trains it there.
#[test]
fn module_to_moves_a_trained_model_to_the_gpu_and_back_with_the_same_outputs() {
    let Some(shared) = gpu() else { return };
    let _serial = serial();
    let cpu = Device::cpu();
    let gpu = private(&shared);
    wgnn::manual_seed(5);
    let mut net = regressor(&cpu);
    let (x, _) = sine_windows(8, &cpu);
    let before = net.forward(&x).to_vec().unwrap();
    net.to(&gpu).unwrap();
    assert!(net
        .parameters()
        .iter()
        .all(|p| p.device().same(&gpu) && p.is_trainable()));
    let on_gpu = net.forward(&x.to(&gpu).unwrap()).to_vec().unwrap();
    let worst = before
        .iter()
        .zip(&on_gpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "GPU outputs differ from the CPU's by {worst}");
    net.to(&cpu).unwrap();
    assert_eq!(
        net.forward(&x).to_vec().unwrap(),
        before,
        "back on the CPU: the same bits"
    );
    let labels = Tensor::from_labels(&[3, 1, 4, 1, 5, 9], &cpu).unwrap().reshape(&[2, 3]);
    let moved = labels.to(&gpu).unwrap();
    assert_eq!(
        (moved.shape(), moved.to_labels().unwrap()),
        (&[2, 3][..], vec![3, 1, 4, 1, 5, 9])
    );
}

/// Moving to a device that was lost is an error, and the module is as it was.
#[test]
fn module_to_a_lost_device_is_an_error_and_moves_nothing() {
    let Some(shared) = gpu() else { return };
    let _serial = serial();
    let cpu = Device::cpu();
    let lost = private(&shared);
    lost.debug_destroy();
    wgnn::manual_seed(6);
    let mut net = regressor(&cpu);
    let (x, _) = sine_windows(4, &cpu);
    let before = net.forward(&x).to_vec().unwrap();
    // wgpu reports the destroyed device on the first buffer made there (or, once it
    // has noticed, as a loss): either way an error, before anything moved.
    let err = net.to(&lost).expect_err("a lost device");
    assert!(
        matches!(err, wgnn::Error::DeviceLost { .. } | wgnn::Error::Gpu { .. }),
        "{err:?}"
    );
    assert!(net.parameters().iter().all(|p| p.device().same(&cpu)));
    assert_eq!(net.forward(&x).to_vec().unwrap(), before);
}

#[test]
fn tensors_are_written_as_nested_arrays_and_read_back_as_rows() {
    let dev = Device::cpu();
    let t = Tensor::new(&[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev).unwrap();
    assert_eq!(t.shape(), [2, 3]);
    assert_eq!(t.to_vec2().unwrap(), [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    let cube = Tensor::new(&[[[1.0f32], [2.0]], [[3.0], [4.0]]], &dev).unwrap();
    assert_eq!(cube.shape(), [2, 2, 1]);
    assert_eq!(cube.to_vec3().unwrap(), [[[1.0], [2.0]], [[3.0], [4.0]]]);
    let four = Tensor::new(&[[[[0.5f32; 2]; 3]; 1]; 2], &dev).unwrap();
    assert_eq!(four.shape(), [2, 1, 3, 2]);
    let ragged = Tensor::new(&vec![vec![1.0f32, 2.0], vec![3.0]], &dev)
        .unwrap_err()
        .to_string();
    assert!(ragged.contains("ragged") && ragged.contains("row 1"), "{ragged}");
    assert!(t.to_vec3().unwrap_err().to_string().contains("rank 3"));
    let s = Tensor::from_slice(&[1.0, 2.0], &[2], &dev).unwrap();
    assert_eq!((&s * 2.0).to_vec().unwrap(), [2.0, 4.0]);
    assert_eq!((2.0 * &s).to_vec().unwrap(), [2.0, 4.0]);
    assert_eq!((1.0 - &s).to_vec().unwrap(), [0.0, -1.0]);
    assert_eq!((&s / 3.0).to_vec().unwrap(), [1.0 / 3.0, 2.0 / 3.0]);
    assert_eq!((3.0 / &s).to_vec().unwrap(), [3.0, 1.5]);
    assert_eq!((&s + 0.5).to_vec().unwrap(), [1.5, 2.5]);
}

/// MAE, RMSE and R² logged by `fit` and `evaluate` equal the host's formulas on the
/// model's predictions; early stopping on `val_rmse` treats lower as better; one
/// `FitConfig` serves two runs through `clone`.
#[test]
fn regression_metrics_match_the_host_and_a_fit_config_is_reused_by_clone() {
    let _serial = serial();
    let dev = Device::cpu();
    wgnn::manual_seed(8);
    let (x, y) = sine_windows(200, &dev);
    let config = FitConfig::new()
        .epochs(6)
        .batch_size(25)
        .validation_split(0.2)
        .verbose(false)
        .callback(EarlyStopping::new("val_rmse", 2));
    for run in 0..2 {
        let net = regressor(&dev);
        let mut model = adam_model(net, &[Metric::Mae, Metric::Rmse, Metric::R2]);
        let history = model.fit(&x, &y, config.clone()).unwrap();
        for name in ["mae", "rmse", "r2", "val_mae", "val_rmse", "val_r2"] {
            assert!(history.history.contains_key(name), "run {run}: {name} not logged");
        }
        let scores = model.evaluate(&x, &y).unwrap();
        let pred = model.predict(&x).unwrap().to_vec().unwrap();
        let truth = y.to_vec().unwrap();
        let n = truth.len() as f64;
        let err: Vec<f64> = pred.iter().zip(&truth).map(|(p, t)| f64::from(p - t)).collect();
        let mae = err.iter().map(|e| e.abs()).sum::<f64>() / n;
        let sse: f64 = err.iter().map(|e| e * e).sum();
        let mean = truth.iter().map(|&t| f64::from(t)).sum::<f64>() / n;
        let sst: f64 = truth.iter().map(|&t| (f64::from(t) - mean).powi(2)).sum();
        let close = |name: &str, want: f64| {
            let got = scores[name];
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{name}: {got} vs the host's {want}"
            );
        };
        close("mae", mae);
        close("rmse", (sse / n).sqrt());
        close("r2", 1.0 - sse / sst);
    }
    let opt = Adam::new(regressor(&dev).parameters(), AdamConfig::default());
    let err = Model::new(regressor(&dev), opt, Loss::CrossEntropy, &[Metric::Rmse])
        .err()
        .expect("rmse needs a regression loss")
        .to_string();
    assert!(err.contains("rmse") && err.contains("regression"), "{err}");
}

/// `evaluate` and `predict` take `&self`: they run without dropout whatever the
/// model's mode, and leave the mode as it was.
#[test]
fn evaluate_and_predict_take_a_shared_model_and_leave_its_mode_alone() {
    let _serial = serial();
    let dev = Device::cpu();
    wgnn::manual_seed(9);
    let net = nn::Sequential::new()
        .add(Linear::new(16, 32, &dev))
        .add(Dropout::new(0.5))
        .add(Linear::new(32, 1, &dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let model = Model::new(net, opt, Loss::Mse, &[Metric::Mae]).unwrap();
    let x = Tensor::new(&[[0.25f32; 16]; 4], &dev).unwrap();
    let y = Tensor::new(&[[1.0f32]; 4], &dev).unwrap();
    let training = |m: &Model| {
        let drop = m.net.layers()[1].as_ref();
        drop.name() == "Dropout(0.5)" && m.net.forward(&x).to_vec().unwrap() != m.net.forward(&x).to_vec().unwrap()
    };
    assert!(
        training(&model),
        "a new model is in training mode (dropout draws masks)"
    );
    let (a, b) = (
        model.predict(&x).unwrap().to_vec().unwrap(),
        model.predict(&x).unwrap().to_vec().unwrap(),
    );
    assert_eq!(a, b, "predict runs without dropout");
    let scores = model.evaluate(&x, &y).unwrap();
    let mae = a.iter().map(|p| (p - 1.0).abs() as f64).sum::<f64>() / 4.0;
    assert!((scores["mae"] - mae).abs() < 1e-6, "{} vs {mae}", scores["mae"]);
    assert!(training(&model), "evaluate and predict left the training mode alone");
}

crate::device_tests!(rmsprop_and_adagrad_match_pytorch_over_five_steps);

/// RMSprop (plain, and centered with momentum and weight decay) and Adagrad (plain,
/// and with lr decay, weight decay and an initial accumulator) take five steps on
/// an MLP and on `Σw²` as `torch.optim` does (`make_optimizer_fixture.py`).
fn rmsprop_and_adagrad_match_pytorch_over_five_steps(dev: &Device) {
    use wgnn::optim::{Adagrad, AdagradConfig, Optimizer, RmsProp, RmsPropConfig};
    let make = |name: &str, params: Vec<Tensor>| -> Box<dyn Optimizer> {
        match name {
            "rmsprop" => Box::new(RmsProp::new(params, RmsPropConfig::default())),
            "rmsprop_full" => Box::new(RmsProp::new(
                params,
                RmsPropConfig {
                    alpha: 0.9,
                    eps: 1e-6,
                    weight_decay: 0.1,
                    momentum: 0.9,
                    centered: true,
                    ..Default::default()
                },
            )),
            "adagrad" => Box::new(Adagrad::new(
                params,
                AdagradConfig {
                    lr: 0.1,
                    ..Default::default()
                },
            )),
            _ => Box::new(Adagrad::new(
                params,
                AdagradConfig {
                    lr: 0.1,
                    lr_decay: 0.05,
                    weight_decay: 0.1,
                    initial_accumulator_value: 0.2,
                    eps: 1e-8,
                },
            )),
        }
    };
    let fixture = crate::common::fixture("optimizer_steps.safetensors");
    let adam = crate::common::fixture("adam_steps.safetensors");
    let (x_shape, x) = crate::common::read_tensor(&crate::common::fixture("mlp_io.safetensors"), "input");
    let x = Tensor::from_vec(x, &x_shape, dev).unwrap();
    let target = Tensor::from_vec(crate::common::read_tensor(&adam, "target").1, &[5, 3], dev).unwrap();
    let (_, w0) = crate::common::read_tensor(&adam, "quadratic.w0");
    let worst = |got: &[f32], want: &[f32]| got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    for name in ["rmsprop", "rmsprop_full", "adagrad", "adagrad_full"] {
        let model = crate::common::fixture_mlp(dev);
        let mut opt = make(name, model.parameters());
        for _ in 0..5 {
            let loss = nn::loss::mse(&model.forward(&x), &target);
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        for (key, param) in model.named_parameters() {
            let (_, want) = crate::common::read_tensor(&fixture, &format!("{name}.{key}"));
            let d = worst(&param.to_vec().unwrap(), &want);
            assert!(d <= 2e-6, "{dev}: {name}: {key} is {d:e} from PyTorch's after 5 steps");
        }
        let w = Tensor::from_vec(w0.clone(), &[w0.len()], dev)
            .unwrap()
            .requires_grad()
            .unwrap();
        let mut opt = make(name, vec![w.clone()]);
        for _ in 0..5 {
            opt.step(&w.square().sum().backward().unwrap()).unwrap();
        }
        let (_, want) = crate::common::read_tensor(&fixture, &format!("quadratic.{name}"));
        let d = worst(&w.to_vec().unwrap(), &want);
        assert!(d <= 1e-6, "{dev}: quadratic {name}: {d:e} from PyTorch's after 5 steps");
        let state = opt.state().unwrap();
        assert_eq!(state.steps, 5, "{name}");
    }
}

/// One learning rate: `fit` refuses a schedule whose base is not the optimizer's
/// rate before it trains anything, takes one built from the optimizer, and a
/// per-batch one-cycle schedule drives the optimizer's rate step by step.
#[test]
fn a_schedule_must_start_from_the_optimizers_rate_and_can_step_per_batch() {
    use wgnn::optim::lr::{CosineAnnealingLr, LrSchedule, OneCycleLr, StepLr};
    use wgnn::optim::Optimizer;
    use wgnn::train::LrScheduler;
    let _serial = serial();
    let dev = Device::cpu();
    wgnn::manual_seed(10);
    let (x, y) = sine_windows(64, &dev);
    let net = regressor(&dev);
    let mut model = adam_model(net, &[]);
    let before: Vec<Vec<f32>> = model.net.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
    let wrong = FitConfig::new()
        .verbose(false)
        .callback(LrScheduler::new(CosineAnnealingLr::new(0.1, 5, 0.0)));
    let err = model
        .fit(&x, &y, wrong)
        .expect_err("a base of 0.1 against the optimizer's 0.01")
        .to_string();
    assert!(
        err.contains("0.1") && err.contains("0.01") && err.contains("for_optimizer"),
        "{err}"
    );
    let after: Vec<Vec<f32>> = model.net.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
    assert_eq!(before, after, "nothing trained before the refusal");
    let right = StepLr::for_optimizer(model.optimizer.as_ref(), 1, 0.5);
    model
        .fit(
            &x,
            &y,
            FitConfig::new()
                .epochs(2)
                .verbose(false)
                .callback(LrScheduler::new(right)),
        )
        .unwrap();
    assert!(
        (model.optimizer.lr() - 2.5e-3).abs() < 1e-12,
        "{}",
        model.optimizer.lr()
    );
    // 64 rows in batches of 16: 4 steps an epoch, 8 in all; the rate after them is
    // the schedule's eighth.
    let cycle = OneCycleLr::new(0.05, 8);
    let mut reference = cycle.clone();
    for _ in 0..8 {
        reference.step();
    }
    model.optimizer.set_lr(cycle.lr());
    let config = FitConfig::new()
        .epochs(2)
        .batch_size(16)
        .verbose(false)
        .callback(LrScheduler::per_batch(cycle));
    model.fit(&x, &y, config).unwrap();
    assert_eq!(model.optimizer.lr(), reference.lr());
}

/// Fine-tuning: a frozen part of a model gets no gradient and keeps its weights
/// while the rest trains with an optimizer built from `trainable_parameters`.
#[test]
fn a_frozen_part_keeps_its_weights_while_the_rest_trains() {
    let _serial = serial();
    let dev = Device::cpu();
    wgnn::manual_seed(11);
    let net = regressor(&dev);
    net.lstm.freeze().unwrap();
    assert_eq!(net.trainable_parameters().len(), 2, "the head's weight and bias");
    let frozen: Vec<Vec<f32>> = net.lstm.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
    let head = net.head.weight.to_vec().unwrap();
    let opt = Adam::new(net.trainable_parameters(), AdamConfig::default());
    let mut model = Model::new(net, opt, Loss::Mse, &[]).unwrap();
    let (x, y) = sine_windows(32, &dev);
    model.fit(&x, &y, FitConfig::new().epochs(2).verbose(false)).unwrap();
    let after: Vec<Vec<f32>> = model
        .net
        .lstm
        .parameters()
        .iter()
        .map(|p| p.to_vec().unwrap())
        .collect();
    assert_eq!(after, frozen, "the frozen LSTM did not move");
    assert_ne!(model.net.head.weight.to_vec().unwrap(), head, "the head trained");
    model.net.lstm.unfreeze().unwrap();
    assert_eq!(model.net.trainable_parameters().len(), 6);
}

crate::device_tests!(param_groups_with_their_own_rates_and_decay_match_pytorch);

/// Three groups (defaults; 3× the rate and weight decay 0.05; half the rate and no
/// decay) under a StepLR that halves every group's rate every two steps: SGD with
/// momentum and Adam give PyTorch's weights after five steps
/// (`make_param_groups_fixture.py`).
fn param_groups_with_their_own_rates_and_decay_match_pytorch(dev: &Device) {
    use wgnn::optim::lr::{LrSchedule, StepLr};
    use wgnn::optim::{Optimizer, ParamGroup, Sgd, SgdConfig};
    let fixture = crate::common::fixture("param_groups.safetensors");
    let adam = crate::common::fixture("adam_steps.safetensors");
    let (x_shape, x) = crate::common::read_tensor(&crate::common::fixture("mlp_io.safetensors"), "input");
    let x = Tensor::from_vec(x, &x_shape, dev).unwrap();
    let target = Tensor::from_vec(crate::common::read_tensor(&adam, "target").1, &[5, 3], dev).unwrap();
    for (name, lr) in [("sgd", 0.05f32), ("adam", 1e-2)] {
        let model = crate::common::fixture_mlp(dev);
        let groups = vec![
            ParamGroup::new(model.parameters_under("0").unwrap()),
            ParamGroup::new(model.parameters_under("2").unwrap())
                .lr(3.0 * lr)
                .weight_decay(0.05),
            ParamGroup::new(model.parameters_under("4").unwrap())
                .lr(lr / 2.0)
                .weight_decay(0.0),
        ];
        let mut opt: Box<dyn Optimizer> = match name {
            "sgd" => {
                let config = SgdConfig {
                    lr,
                    momentum: 0.9,
                    weight_decay: 0.01,
                    ..Default::default()
                };
                Box::new(Sgd::with_groups(groups, config).unwrap())
            }
            _ => {
                let config = AdamConfig {
                    lr,
                    weight_decay: 0.01,
                    ..Default::default()
                };
                Box::new(Adam::with_groups(groups, config).unwrap())
            }
        };
        let mut schedule = StepLr::for_optimizer(&*opt, 2, 0.5);
        for _ in 0..5 {
            let loss = nn::loss::mse(&model.forward(&x), &target);
            opt.step(&loss.backward().unwrap()).unwrap();
            schedule.step();
            opt.set_lr(schedule.lr());
        }
        for (key, param) in model.named_parameters() {
            let (_, want) = crate::common::read_tensor(&fixture, &format!("{name}.{key}"));
            let got = param.to_vec().unwrap();
            let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(d <= 2e-6, "{dev}: {name}: {key} is {d:e} from PyTorch's after 5 steps");
        }
        // The groups travel with a checkpoint's state and must match on loading.
        let state = opt.state().unwrap();
        assert!(
            state.hyper.iter().any(|(n, v)| n == "group1.lr" && *v == 3.0 * lr),
            "{:?}",
            state.hyper
        );
        let mut single: Box<dyn Optimizer> = match name {
            "sgd" => Box::new(Sgd::new(
                model.parameters(),
                SgdConfig {
                    lr,
                    momentum: 0.9,
                    ..Default::default()
                },
            )),
            _ => Box::new(Adam::new(
                model.parameters(),
                AdamConfig {
                    lr,
                    ..Default::default()
                },
            )),
        };
        let err = single.load_state(&state).unwrap_err().to_string();
        assert!(err.contains("group1.lr"), "{err}");
    }
}

/// A two-layer classifier of the breast-cancer CSV's 30 features.
fn cancer_classifier(dev: &Device) -> Model<nn::Sequential> {
    let net = nn::Sequential::new()
        .add(Linear::new(30, 16, dev))
        .add(nn::Relu)
        .add(Linear::new(16, 2, dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    Model::new(net, opt, Loss::CrossEntropy, &[Metric::Accuracy]).unwrap()
}

#[test]
fn an_unknown_monitor_is_an_error_listing_the_logged_names_before_any_step() {
    let _serial = serial();
    let dev = Device::cpu();
    let (x, y) = (
        Tensor::zeros(&[20, 30], &dev),
        Tensor::from_labels(&[1; 20], &dev).unwrap(),
    );
    let mut model = cancer_classifier(&dev);
    let before: Vec<Vec<f32>> = model.net.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
    let config = FitConfig::new()
        .validation_split(0.25)
        .callback(EarlyStopping::new("val_acc", 3))
        .verbose(0);
    let err = model.fit(&x, &y, config).unwrap_err().to_string();
    for needle in ["'val_acc'", "loss, accuracy, val_loss, val_accuracy"] {
        assert!(err.contains(needle), "{needle:?} is not in: {err}");
    }
    let after: Vec<Vec<f32>> = model.net.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
    assert_eq!(before, after, "no step ran");
    // A validation name without validation data says so.
    let config = FitConfig::new().callback(EarlyStopping::new("val_loss", 3)).verbose(0);
    let err = model.fit(&x, &y, config).unwrap_err().to_string();
    assert!(err.contains("no validation data"), "{err}");
    // The names fit logs are accepted, whichever callback watches them.
    let config = FitConfig::new()
        .validation_split(0.25)
        .callback(EarlyStopping::new("val_accuracy", 3))
        .callback(wgnn::train::ModelCheckpoint::best_only(
            std::env::temp_dir().join("wgnn-unused.ckpt"),
            "bogus",
        ))
        .verbose(0);
    let err = model.fit(&x, &y, config).unwrap_err().to_string();
    assert!(
        err.contains("unknown monitor 'bogus' (fit: callback 1 monitors it"),
        "{err}"
    );
}

#[test]
fn fit_leaves_the_model_in_the_mode_it_found_it_in_even_when_it_fails() {
    let _serial = serial();
    let dev = Device::cpu();
    let net = nn::Sequential::new()
        .add(Linear::new(4, 8, &dev))
        .add(Dropout::new(0.3))
        .add(Linear::new(8, 1, &dev))
        .add(Dropout::new(0.1));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let mut model = Model::new(net, opt, Loss::Mse, &[]).unwrap();
    let (x, y) = (Tensor::zeros(&[8, 4], &dev), Tensor::zeros(&[8, 1], &dev));
    let config = || FitConfig::new().batch_size(4).verbose(0);
    let modes = |m: &Model| {
        let mut out = Vec::new();
        m.net.training_modes(&mut out);
        out
    };
    model.net.eval();
    model.fit(&x, &y, config()).unwrap();
    assert!(!model.net.is_training(), "a model in eval mode stays in eval mode");
    model.net.train();
    model.fit(&x, &y, config()).unwrap();
    assert!(
        model.net.is_training(),
        "a model in training mode stays in training mode"
    );
    // Mixed modes come back as they were, also from a fit that fails mid-epoch.
    let mut mixed = nn::Sequential::new()
        .add(Linear::new(4, 8, &dev))
        .add(Dropout::new(0.3));
    mixed.eval();
    let net = nn::Sequential::new()
        .add(mixed)
        .add(Dropout::new(0.1))
        .add(Linear::new(8, 1, &dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let failing = Loss::custom(|pred, _| pred.clone()); // [batch, 1]: not a loss
    let mut model = Model::new(net, opt, failing, &[]).unwrap();
    let found = modes(&model);
    assert_eq!(found, [false, false, true, false, true, true]);
    let err = model.fit(&x, &y, config()).unwrap_err().to_string();
    assert!(err.contains("custom loss must return a scalar"), "{err}");
    assert_eq!(modes(&model), found, "fit put every module's mode back");
}

/// The CSV classifier a new user writes (examples/csv_classifier.rs is the long
/// form): load, split, a `Normalize` layer fitted to the training rows first in the
/// model, `fit` with a validation split, save, reload into a fresh model, and the
/// same scores on the test rows.
#[test]
fn a_csv_classifier_saves_its_standardization_and_scores_the_same_after_reloading() {
    let _serial = serial();
    let dev = Device::cpu();
    wgnn::manual_seed(0);
    let all = wgnn::data::load_csv_labelled(concat!(env!("CARGO_MANIFEST_DIR"), "/data/breast_cancer.csv"), 1).unwrap();
    let (train, test) = all.shuffle_split(0, 455);
    let ((x, y), (x_test, y_test)) = (train.tensors(&dev).unwrap(), test.tensors(&dev).unwrap());
    let build = |norm: nn::Normalize| {
        let net = nn::Sequential::new()
            .add(norm)
            .add(Linear::new(30, 16, &dev))
            .add(nn::Relu)
            .add(Linear::new(16, 2, &dev));
        let opt = Adam::new(net.parameters(), AdamConfig::default());
        Model::new(net, opt, Loss::CrossEntropy, &[Metric::Accuracy]).unwrap()
    };
    let mut model = build(nn::Normalize::adapt(&x).unwrap());
    let config = FitConfig::new()
        .epochs(15)
        .batch_size(16)
        .validation_split(0.2)
        .verbose(0);
    let history = model.fit(&x, &y, config).unwrap();
    assert!(*history.history["val_accuracy"].last().unwrap() > 0.93);
    let path = std::env::temp_dir().join(format!("wgnn-csv-classifier-{}.safetensors", std::process::id()));
    wgnn::io::save_safetensors(&model.net, &path).unwrap();
    let mut fresh = build(nn::Normalize::new(30, &dev));
    wgnn::io::load_safetensors(&mut fresh.net, &path).unwrap();
    std::fs::remove_file(&path).ok();
    let (scores, reloaded) = (
        model.evaluate(&x_test, &y_test).unwrap(),
        fresh.evaluate(&x_test, &y_test).unwrap(),
    );
    assert!(scores["accuracy"] > 0.93, "test accuracy {}", scores["accuracy"]);
    assert_eq!(
        scores, reloaded,
        "the reloaded model, standardization included, scores the same"
    );
}
