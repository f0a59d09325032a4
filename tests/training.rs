//! Training end to end on both backends: XOR, the MNIST subset, the steady state of
//! a training step, and laziness that never changes meaning.

mod common;

use common::devices;
use wgnn::data::{self, Dataset};
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use wgnn::{Device, Error, Tensor};

fn mnist_subset() -> (Dataset, Dataset) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist_5k.csv.gz");
    data::load_mnist_csv_gz(path).unwrap().shuffle_split(0, 4000)
}

fn mlp(dev: &Device) -> Sequential {
    Sequential::new()
        .add(Linear::new(784, 128, dev))
        .add(nn::Relu)
        .add(Linear::new(128, 10, dev))
}

fn batch(set: &Dataset, rows: &[usize], dev: &Device) -> (Tensor, Tensor) {
    let b = set.select(rows);
    (
        Tensor::from_vec(b.features, &[rows.len(), set.dim], dev).unwrap(),
        Tensor::from_labels(&b.labels, dev).unwrap(),
    )
}

#[test]
fn xor_is_learned_by_a_2_3_1_mlp_on_every_device() {
    for dev in devices() {
        wgnn::manual_seed(1);
        let x = Tensor::from_vec(vec![0., 0., 0., 1., 1., 0., 1., 1.], &[4, 2], &dev).unwrap();
        let y = Tensor::from_vec(vec![0., 1., 1., 0.], &[4, 1], &dev).unwrap();
        let model = Sequential::new()
            .add(Linear::new(2, 3, &dev))
            .add(nn::Tanh)
            .add(Linear::new(3, 1, &dev))
            .add(nn::Sigmoid);
        let mut opt = Adam::new(
            model.parameters(),
            AdamConfig {
                lr: 0.1,
                ..Default::default()
            },
        );
        for _ in 0..500 {
            let loss = nn::loss::binary_cross_entropy(&model.forward(&x), &y);
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let out = model.forward(&x).to_vec().unwrap();
        let predicted: Vec<f32> = out.iter().map(|&p| (p > 0.5) as u32 as f32).collect();
        assert_eq!(predicted, vec![0., 1., 1., 0.], "{dev}: outputs {out:?}");
    }
}

#[test]
fn mnist_subset_reaches_88_percent_test_accuracy_in_5_epochs_on_every_device() {
    let (train, test) = mnist_subset();
    for dev in devices() {
        wgnn::manual_seed(0);
        let model = mlp(&dev);
        let mut opt = Adam::new(
            model.parameters(),
            AdamConfig {
                lr: 1e-3,
                ..Default::default()
            },
        );
        let order: Vec<usize> = (0..train.n).collect();
        for _ in 0..5 {
            for rows in order.chunks(32) {
                let (x, y) = batch(&train, rows, &dev);
                let loss = nn::loss::cross_entropy(&model.forward(&x), &y);
                opt.step(&loss.backward().unwrap()).unwrap();
            }
        }
        let (x, _) = batch(&test, &(0..test.n).collect::<Vec<_>>(), &dev);
        let predicted = model.forward(&x).argmax(1).to_labels().unwrap();
        let acc = predicted.iter().zip(&test.labels).filter(|(p, l)| p == l).count() as f32 / test.n as f32;
        eprintln!("{dev}: test accuracy {acc}");
        assert!(acc >= 0.88, "{dev}: test accuracy {acc} after 5 epochs");
    }
}

#[test]
fn a_training_step_in_steady_state_is_one_submit_with_no_readback_and_flat_memory() {
    let (train, _) = mnist_subset();
    // Devices of its own: other tests run in parallel on the shared ones.
    let private = |d: &Device| match d.kind() {
        wgnn::DeviceKind::Cpu => Device::cpu_private(),
        wgnn::DeviceKind::Gpu => Device::gpu_with_backends(&d.info().backend.to_lowercase()).unwrap(),
    };
    for dev in devices().iter().map(private) {
        wgnn::manual_seed(0);
        let model = mlp(&dev);
        let mut opt = Adam::new(model.parameters(), AdamConfig::default());
        let step = |i: usize, opt: &mut Adam| {
            let rows: Vec<usize> = (i * 32..i * 32 + 32).map(|r| r % train.n).collect();
            let (x, y) = batch(&train, &rows, &dev);
            let loss = nn::loss::cross_entropy(&model.forward(&x), &y);
            opt.step(&loss.backward().unwrap()).unwrap();
        };
        for i in 0..3 {
            step(i, &mut opt);
        }
        let before = dev.stats();
        step(3, &mut opt);
        let one = dev.stats() - before;
        eprintln!("{dev}: one step: {one:?}");
        assert_eq!(one.submits, 1, "{dev}");
        assert_eq!(one.bytes_downloaded, 0, "{dev}");
        assert_eq!(one.plan_cache_misses, 0, "{dev}");
        if dev.kind() == wgnn::DeviceKind::Gpu {
            // Only the batch crosses the bus: 32 images and 32 labels.
            assert_eq!(one.bytes_uploaded, (32 * 784 + 32) * 4, "{dev}");
        }
        let live = dev.stats().live_buffer_bytes;
        for i in 4..104 {
            step(i, &mut opt);
        }
        assert_eq!(
            dev.stats().live_buffer_bytes,
            live,
            "{dev}: live buffer bytes grew over 100 steps"
        );
    }
}

#[test]
fn a_loss_built_before_a_step_and_read_after_it_has_its_pre_step_value() {
    for dev in devices() {
        wgnn::manual_seed(3);
        let model = Sequential::new().add(Linear::new(3, 2, &dev));
        let x = Tensor::randn(&[4, 3], 1, &dev).unwrap();
        let y = Tensor::randn(&[4, 2], 2, &dev).unwrap();
        let expected = nn::loss::mse(&model.forward(&x), &y).item().unwrap();
        let loss = nn::loss::mse(&model.forward(&x), &y);
        let mut opt = Sgd::new(
            model.parameters(),
            SgdConfig {
                lr: 0.5,
                ..Default::default()
            },
        );
        opt.step(&loss.backward().unwrap()).unwrap();
        assert_eq!(loss.item().unwrap(), expected, "{dev}");
        let after = nn::loss::mse(&model.forward(&x), &y).item().unwrap();
        assert!(
            after < expected,
            "{dev}: the step did not reduce the loss ({expected} -> {after})"
        );
    }
}

#[test]
fn a_loss_that_reads_a_parameter_directly_keeps_its_pre_step_value_and_costs_no_extra_plan() {
    for dev in devices() {
        let w = Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3], &dev)
            .unwrap()
            .requires_grad()
            .unwrap();
        // sum(w) reads the parameter directly; its gradient rule does not need it.
        let loss = (&w * &w).sum() + w.sum();
        let mut opt = Sgd::new(
            vec![w.clone()],
            SgdConfig {
                lr: 0.1,
                ..Default::default()
            },
        );
        opt.step(&loss.backward().unwrap()).unwrap();
        let before = dev.stats();
        assert_eq!(loss.item().unwrap(), 16.0, "{dev}");
        let read = dev.stats() - before;
        assert_eq!(
            (read.plan_cache_hits + read.plan_cache_misses, read.bytes_uploaded),
            (0, 0),
            "{dev}: {read:?}"
        );
    }
}

#[test]
fn a_value_read_before_the_step_is_not_recomputed_by_it() {
    for dev in devices() {
        let model = Sequential::new().add(Linear::new(3, 2, &dev));
        let x = Tensor::randn(&[4, 3], 1, &dev).unwrap();
        let y = Tensor::randn(&[4, 2], 2, &dev).unwrap();
        let loss = nn::loss::mse(&model.forward(&x), &y);
        let grads = loss.backward().unwrap();
        let value = loss.item().unwrap();
        let mut opt = Sgd::new(
            model.parameters(),
            SgdConfig {
                lr: 0.1,
                ..Default::default()
            },
        );
        let before = dev.stats();
        opt.step(&grads).unwrap();
        assert_eq!((dev.stats() - before).submits, 1);
        assert_eq!(loss.item().unwrap(), value, "{dev}");
    }
}

#[test]
fn a_pending_graph_that_reads_an_updated_parameter_reports_an_error() {
    for dev in devices() {
        let model = Sequential::new().add(Linear::new(3, 2, &dev));
        let x = Tensor::randn(&[4, 3], 1, &dev).unwrap();
        let pending = model.forward(&x).sum();
        let loss = model.forward(&x).square().mean();
        let mut opt = Sgd::new(
            model.parameters(),
            SgdConfig {
                lr: 0.1,
                ..Default::default()
            },
        );
        opt.step(&loss.backward().unwrap()).unwrap();
        assert!(matches!(pending.item(), Err(Error::StaleParameter(_))), "{dev}");
    }
}

#[test]
fn sgd_and_adam_match_torch_optim_on_a_quadratic() {
    // f(w) = Σ w², g = 2w. Reference values from the update rules of
    // torch.optim.SGD(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01,
    // nesterov=False) and torch.optim.Adam(lr=0.1), three steps from w = [1, -2].
    for dev in devices() {
        let w = Tensor::from_vec(vec![1.0, -2.0], &[2], &dev)
            .unwrap()
            .requires_grad()
            .unwrap();
        let mut sgd = Sgd::new(
            vec![w.clone()],
            SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                dampening: 0.1,
                weight_decay: 0.01,
                nesterov: false,
            },
        );
        let (mut wr, mut buf) = ([1.0f64, -2.0], [0.0f64; 2]);
        for t in 0..3 {
            sgd.step(&w.square().sum().backward().unwrap()).unwrap();
            for i in 0..2 {
                let g = 2.0 * wr[i] + 0.01 * wr[i];
                buf[i] = if t == 0 { g } else { 0.9 * buf[i] + 0.9 * g };
                wr[i] -= 0.1 * buf[i];
            }
        }
        let got = w.to_vec().unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - wr[i]).abs() < 1e-5, "{dev} sgd: {got:?} vs {wr:?}");
        }

        let w = Tensor::from_vec(vec![1.0, -2.0], &[2], &dev)
            .unwrap()
            .requires_grad()
            .unwrap();
        let mut adam = Adam::new(
            vec![w.clone()],
            AdamConfig {
                lr: 0.1,
                ..Default::default()
            },
        );
        let (mut wr, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
        for t in 1..=3 {
            adam.step(&w.square().sum().backward().unwrap()).unwrap();
            for i in 0..2 {
                let g = 2.0 * wr[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let (bc1, bc2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.999f64.powi(t));
                wr[i] -= 0.1 / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + 1e-8);
            }
        }
        let got = w.to_vec().unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - wr[i]).abs() < 5e-5, "{dev} adam: {got:?} vs {wr:?}");
        }
        assert_eq!(adam.lr(), 0.1);
    }
}
