//! Training end to end on both backends: XOR, the MNIST subset, the steady state of
//! a training step, laziness that never changes meaning, and checkpoints that resume
//! bit for bit and survive being killed mid-write.

#[path = "training/batching.rs"]
mod batching;
mod common;
#[cfg(all(feature = "mpi", unix))]
#[path = "training/distributed.rs"]
mod distributed;
#[path = "training/dp_sgd.rs"]
mod dp_sgd;
#[path = "training/efficiency.rs"]
mod efficiency;
#[path = "training/explain.rs"]
mod explain;
#[path = "training/fairness.rs"]
mod fairness;
#[path = "training/federated.rs"]
mod federated;
#[path = "training/first_week.rs"]
mod first_week;
#[path = "training/norm_layers.rs"]
mod norm_layers;
#[path = "training/objectives.rs"]
mod objectives;
#[path = "training/privacy.rs"]
mod privacy;
#[path = "training/pytorch_cnn.rs"]
mod pytorch_cnn;

use common::serial;
use wgnn::data::DataLoader;
use wgnn::data::{self, Dataset};
use wgnn::metrics::{Average, ConfusionMatrix, Metric};
use wgnn::nn::{self, Dropout, Linear, Module, Perceptron, Sequential};
use wgnn::optim::lr::{PlateauConfig, ReduceLrOnPlateau};
use wgnn::optim::{Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, Optimizer, RmsProp, RmsPropConfig, Sgd, SgdConfig};
use wgnn::train::{EarlyStopping, FitConfig, Loss, LrScheduler, ModelCheckpoint, Penalty};
use wgnn::{Device, Error, Tensor};

device_tests!(
    xor_is_learned_by_a_2_3_1_mlp_on_every_device,
    mnist_subset_reaches_88_percent_test_accuracy_in_5_epochs_on_every_device,
    a_training_step_in_steady_state_is_one_submit_with_no_readback_and_flat_memory,
    a_loss_built_before_a_step_and_read_after_it_has_its_pre_step_value,
    a_loss_that_reads_a_parameter_directly_keeps_its_pre_step_value_and_costs_no_extra_plan,
    a_value_read_before_the_step_is_not_recomputed_by_it,
    a_pending_graph_that_reads_an_updated_parameter_reports_an_error,
    sgd_and_adam_match_torch_optim_on_a_quadratic,
    five_adam_and_adamw_steps_on_an_mlp_match_pytorchs_weights,
    five_adam_and_adamw_steps_on_a_quadratic_match_pytorch_to_the_last_bits,
    optimizer_state_that_decays_below_the_normal_range_is_stored_as_zero,
    the_same_seed_gives_bit_identical_losses_with_dropout_on_each_device,
    dropout_is_the_identity_in_eval_mode_and_scales_in_training,
    clip_norm_bounds_the_global_norm_and_clip_value_each_element,
    a_data_loader_covers_every_row_once_per_epoch_and_reuses_the_partial_batch_plan,
    the_perceptron_rule_separates_separable_data_and_never_solves_xor,
    fit_with_validation_split_early_stopping_and_plateau_converges_and_writes_a_report,
    nesterov_the_seeds_momentum_form_and_adamw_follow_their_update_rules,
    binary_metrics_from_fit_equal_host_counts_and_roc_auc_from_predict,
    thousands_of_training_steps_keep_device_and_host_memory_flat,
    a_checkpoint_saved_mid_training_continues_bit_for_bit,
    resuming_fit_from_a_checkpoint_equals_the_uninterrupted_run_bit_for_bit,
    a_profiled_training_step_times_each_launch_and_changes_no_result,
);

/// Multi-tensor apply: a step of a model with six parameters updates all of them in
/// as few launches as the device can bind (each parameter binds its gradient, itself
/// and its state, the coefficients are shared: `(max_storage_buffers − 1) / (2 +
/// state)` parameters per launch, one launch on the CPU), for plain SGD, SGD with
/// momentum, Adam, RMSprop (momentum, centered) and Adagrad; three steps on the GPU
/// end where three on the CPU do, with the same bits whether the GPU runs the
/// parameters in one dispatch or one each, and four words per invocation or one.
#[test]
fn an_optimizer_step_updates_many_parameters_per_launch_with_the_cpus_values() {
    let _serial = serial();
    let run = |dev: &Device, which: usize, form: Option<&str>| {
        let dev = common::private(dev);
        dev.debug_kernel_variant(form);
        wgnn::manual_seed(3);
        let model = Sequential::new()
            .add(Linear::new(5, 7, &dev))
            .add(nn::Tanh)
            .add(Linear::new(7, 6, &dev))
            .add(nn::Tanh)
            .add(Linear::new(6, 2, &dev));
        let params = model.parameters();
        let (mut opt, state): (Box<dyn Optimizer>, usize) = match which {
            0 => (Box::new(Sgd::new(params, SgdConfig::default())), 0),
            1 => {
                let config = SgdConfig {
                    momentum: 0.9,
                    ..SgdConfig::default()
                };
                (Box::new(Sgd::new(params, config)), 1)
            }
            2 => (Box::new(Adam::new(params, AdamConfig::default())), 2),
            3 => {
                let config = RmsPropConfig {
                    momentum: 0.9,
                    centered: true,
                    weight_decay: 0.01,
                    ..RmsPropConfig::default()
                };
                (Box::new(RmsProp::new(params, config)), 3)
            }
            _ => (Box::new(Adagrad::new(params, AdagradConfig::default())), 1),
        };
        let x = Tensor::from_vec((0..20).map(|i| (i as f32 * 0.37).sin()).collect(), &[4, 5], &dev).unwrap();
        let y = Tensor::from_labels(&[0, 1, 1, 0], &dev).unwrap();
        dev.set_profile(true);
        for _ in 0..3 {
            let loss = nn::loss::cross_entropy(&model.forward(&x), &y);
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let report = dev.profile_report();
        let kernel = ["sgd", "sgd_momentum", "adam", "rmsprop", "adagrad"][which];
        let launches = report.plans[0].launches.iter().filter(|l| l.kernel == kernel).count();
        let bindings = dev.info().max_storage_buffers_per_shader_stage as usize;
        let per_launch = ((bindings - 1) / (2 + state)).clamp(1, 32);
        assert_eq!(
            launches,
            6usize.div_ceil(per_launch),
            "{dev}: {kernel} launches per step"
        );
        let weights: Vec<f32> = model.parameters().iter().flat_map(|p| p.to_vec().unwrap()).collect();
        weights
    };
    for which in 0..5 {
        let cpu = run(&Device::cpu(), which, None);
        // The CPU update of a parameter over two threads, half of its words each
        // (automatic from 32 Ki words; forced here on these small ones): the same bits.
        let split = {
            use wgnn::fast_path::{self, FastPath};
            let _split = fast_path::force(FastPath::UpdateSplit, true);
            let before = fast_path::taken(FastPath::UpdateSplit);
            let weights = run(&Device::cpu(), which, None);
            assert!(fast_path::taken(FastPath::UpdateSplit) > before, "the split update ran");
            weights
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&split),
            bits(&cpu),
            "optimizer {which}: the split CPU update differs"
        );
        if let Some(gpu) = common::gpu() {
            // Both GPU forms of the update, all parameters in one launch or one
            // launch each (the autotune picks per adapter), give the same bits; and
            // so do four words per invocation (the 12-word weight) and one.
            let one = run(&gpu, which, Some("one launch"));
            let each = run(&gpu, which, Some("per parameter"));
            let scalar = {
                let _words = wgnn::fast_path::force(wgnn::fast_path::FastPath::Vec4, false);
                run(&gpu, which, Some("one launch"))
            };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&one),
                bits(&scalar),
                "optimizer {which}: vec4 and scalar words differ"
            );
            assert!(
                common::max_rel_diff(&one, &cpu) < 1e-5,
                "optimizer {which}: GPU and CPU differ"
            );
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&one),
                bits(&each),
                "optimizer {which}: the two launch forms differ"
            );
        }
    }
}

/// The MNIST subset, split once (train 4000, test 1000) and parsed once per test
/// binary: the per-device tests would otherwise each parse the file again.
fn mnist_subset() -> (Dataset, Dataset) {
    static SETS: std::sync::OnceLock<(Dataset, Dataset)> = std::sync::OnceLock::new();
    SETS.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist_5k.csv.gz");
        data::load_mnist_csv_gz(path).unwrap().shuffle_split(0, 4000)
    })
    .clone()
}

/// Adam steps of the seed's MLP on the CPU, on MNIST rows: its 784×128 weight (100,352
/// words) is above the split update's threshold and every other parameter below it.
/// Taken as it comes (the big weight's update on two threads), with the split forced
/// off, with it forced on for every parameter, with the AVX2 builds of the loops
/// instead of the AVX-512 ones, and with the CPU backend limited to one thread: the
/// same loss and weights, bit for bit, after every step.
#[test]
fn adam_steps_of_the_mlp_have_the_same_bits_with_the_update_split_on_or_off_and_on_one_thread() {
    use wgnn::fast_path::{self, FastPath};
    let _serial = serial();
    let (train, _) = mnist_subset();
    let run = || {
        let dev = Device::cpu_private();
        wgnn::manual_seed(5);
        let net = mlp(&dev);
        let mut opt = Adam::new(net.parameters(), AdamConfig::default());
        let mut out = Vec::new();
        for step in 0..4 {
            let rows: Vec<usize> = (step * 64..(step + 1) * 64).collect();
            let (x, y) = batch(&train, &rows, &dev);
            let loss = nn::loss::cross_entropy(&net.forward(&x), &y);
            opt.step(&loss.backward().unwrap()).unwrap();
            out.push(loss.item().unwrap().to_bits());
            for p in net.parameters() {
                out.extend(p.to_vec().unwrap().iter().map(|v| v.to_bits()));
            }
        }
        out
    };
    let before = fast_path::taken(FastPath::UpdateSplit);
    let automatic = run();
    assert!(
        fast_path::taken(FastPath::UpdateSplit) > before,
        "the big weight's update was not split"
    );
    let off = {
        let _off = fast_path::force(FastPath::UpdateSplit, false);
        let before = fast_path::taken(FastPath::UpdateSplit);
        let out = run();
        assert_eq!(
            fast_path::taken(FastPath::UpdateSplit),
            before,
            "split while forced off"
        );
        out
    };
    let on = {
        let _on = fast_path::force(FastPath::UpdateSplit, true);
        run()
    };
    // The AVX2 builds of the loops (Adam's, the epilogues', the loss's) and tiles
    // instead of the AVX-512 ones, where the CPU has AVX-512.
    let avx2 = {
        let _avx2 = fast_path::force(FastPath::Simd512, false);
        run()
    };
    wgnn::set_num_threads(1);
    let one_thread = run();
    wgnn::set_num_threads(0);
    assert!(automatic == avx2, "the AVX2 builds changed the steps");
    assert!(automatic == off, "the split update changed the steps");
    assert!(automatic == on, "splitting every parameter changed the steps");
    assert!(automatic == one_thread, "one thread changed the steps");
}

/// The MLP's weights packed once per step for its products (`FastPath::PackedOperand`,
/// one fma chain per output: other rounding than `matrixmultiply`'s): at batch 128,
/// the threshold, taken by itself where a SIMD tile runs (then the bits of forced
/// on), at 136 not (the bits of forced off); forced on and off taken exactly as
/// forced, and the two close after four Adam steps on both sides.
#[test]
fn mlp_steps_with_weights_packed_once_match_the_unpacked_ones_on_both_sides_of_the_threshold() {
    use wgnn::fast_path::{self, FastPath};
    let _serial = serial();
    let (train, _) = mnist_subset();
    let path = FastPath::PackedOperand;
    let run = |rows_per_step: usize, on: Option<bool>| {
        let _forced = on.map(|on| fast_path::force(path, on));
        let before = fast_path::taken(path);
        let dev = Device::cpu_private();
        wgnn::manual_seed(5);
        let net = mlp(&dev);
        let mut opt = Adam::new(net.parameters(), AdamConfig::default());
        let mut out = Vec::new();
        for step in 0..4 {
            let rows: Vec<usize> = (step * rows_per_step..(step + 1) * rows_per_step).collect();
            let (x, y) = batch(&train, &rows, &dev);
            let loss = nn::loss::cross_entropy(&net.forward(&x), &y);
            opt.step(&loss.backward().unwrap()).unwrap();
            out.push(loss.item().unwrap());
            for p in net.parameters() {
                out.extend(p.to_vec().unwrap());
            }
        }
        (out, fast_path::taken(path) > before)
    };
    let simd = common::packed_tiles_run();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (rows, packs) in [(128, simd), (136, false)] {
        let (auto, taken) = run(rows, None);
        assert_eq!(taken, packs, "batch {rows}: packed automatically");
        let (off, taken) = run(rows, Some(false));
        assert!(!taken, "batch {rows}: packed while forced off");
        let (on, taken) = run(rows, Some(true));
        assert!(taken, "batch {rows}: not packed while forced on");
        let same = if packs { &on } else { &off };
        assert!(bits(&auto) == bits(same), "batch {rows}: the automatic choice's bits");
        for (i, (a, b)) in on.iter().zip(&off).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 + 1e-3 * b.abs(),
                "batch {rows}, value {i}: {a} packed, {b} not"
            );
        }
    }
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

fn xor_is_learned_by_a_2_3_1_mlp_on_every_device(dev: &Device) {
    let _serial = serial();
    wgnn::manual_seed(1);
    let x = Tensor::from_vec(vec![0., 0., 0., 1., 1., 0., 1., 1.], &[4, 2], dev).unwrap();
    let y = Tensor::from_vec(vec![0., 1., 1., 0.], &[4, 1], dev).unwrap();
    let model = Sequential::new()
        .add(Linear::new(2, 3, dev))
        .add(nn::Tanh)
        .add(Linear::new(3, 1, dev))
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

fn mnist_subset_reaches_88_percent_test_accuracy_in_5_epochs_on_every_device(dev: &Device) {
    let _serial = serial();
    let (train, test) = mnist_subset();
    wgnn::manual_seed(0);
    let model = mlp(dev);
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
            let (x, y) = batch(&train, rows, dev);
            let loss = nn::loss::cross_entropy(&model.forward(&x), &y);
            opt.step(&loss.backward().unwrap()).unwrap();
        }
    }
    let (x, _) = batch(&test, &(0..test.n).collect::<Vec<_>>(), dev);
    let predicted = model.forward(&x).argmax(1).to_labels().unwrap();
    let acc = predicted.iter().zip(&test.labels).filter(|(p, l)| p == l).count() as f32 / test.n as f32;
    eprintln!("{dev}: test accuracy {acc}");
    assert!(acc >= 0.88, "{dev}: test accuracy {acc} after 5 epochs");
}

fn a_training_step_in_steady_state_is_one_submit_with_no_readback_and_flat_memory(shared: &Device) {
    let _serial = serial();
    let (train, _) = mnist_subset();
    // A device of its own: other tests run in parallel on the shared ones.
    let dev = common::private(shared);
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
        // Only the batch crosses the bus (32 images and 32 labels), and Adam's eight
        // coefficients of this step (its bias corrections, computed on the host).
        assert_eq!(one.bytes_uploaded, (32 * 784 + 32 + 8) * 4, "{dev}");
        // The host's time: the batch's upload and wgpu's finish and submit are parts
        // of the whole, and each took some.
        assert!(one.upload_ns > 0 && one.submit_ns > 0, "{dev}: {one:?}");
        assert!(one.upload_ns + one.submit_ns <= one.record_ns, "{dev}: {one:?}");
    } else {
        assert!(one.record_ns > 0, "{dev}: {one:?}");
        assert_eq!((one.upload_ns, one.submit_ns), (0, 0), "{dev}");
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

fn a_loss_built_before_a_step_and_read_after_it_has_its_pre_step_value(dev: &Device) {
    let _serial = serial();
    wgnn::manual_seed(3);
    let model = Sequential::new().add(Linear::new(3, 2, dev));
    let x = Tensor::randn(&[4, 3], 1, dev).unwrap();
    let y = Tensor::randn(&[4, 2], 2, dev).unwrap();
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

fn a_loss_that_reads_a_parameter_directly_keeps_its_pre_step_value_and_costs_no_extra_plan(dev: &Device) {
    let _serial = serial();
    let w = Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3], dev)
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

fn a_value_read_before_the_step_is_not_recomputed_by_it(dev: &Device) {
    let _serial = serial();
    let model = Sequential::new().add(Linear::new(3, 2, dev));
    let x = Tensor::randn(&[4, 3], 1, dev).unwrap();
    let y = Tensor::randn(&[4, 2], 2, dev).unwrap();
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

fn a_pending_graph_that_reads_an_updated_parameter_reports_an_error(dev: &Device) {
    let _serial = serial();
    let model = Sequential::new().add(Linear::new(3, 2, dev));
    let x = Tensor::randn(&[4, 3], 1, dev).unwrap();
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

fn sgd_and_adam_match_torch_optim_on_a_quadratic(dev: &Device) {
    let _serial = serial();
    // f(w) = Σ w², g = 2w. Reference values from the update rules of
    // torch.optim.SGD(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01,
    // nesterov=False) and torch.optim.Adam(lr=0.1), three steps from w = [1, -2].
    let w = Tensor::from_vec(vec![1.0, -2.0], &[2], dev)
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

    let w = Tensor::from_vec(vec![1.0, -2.0], &[2], dev)
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

fn breast_cancer() -> Dataset {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/breast_cancer.csv");
    let mut all = data::load_csv_labelled(path, 1).unwrap();
    data::standardize(&mut all, &mut []);
    all
}

/// Adam (`lr=1e-2`) or AdamW (`lr=1e-2, weight_decay=0.1`) for `params`.
fn adam_or_adamw(decoupled: bool, params: Vec<Tensor>) -> Box<dyn Optimizer> {
    let config = AdamConfig {
        lr: 1e-2,
        weight_decay: if decoupled { 0.1 } else { 0.0 },
        ..Default::default()
    };
    if decoupled {
        Box::new(AdamW::new(params, config))
    } else {
        Box::new(Adam::new(params, config))
    }
}

/// Five steps of `torch.optim.Adam(lr=1e-2)` and `AdamW(lr=1e-2, weight_decay=0.1)`
/// from PyTorch's weights (tests/fixtures/make_adam_fixture.py). The bias corrections
/// are computed on the host in f64, as PyTorch does; what is left is the rounding of
/// the gradients (PyTorch's own weights move by 2.3e-7 when its gradients are
/// rounded from f64 instead of computed in f32).
fn five_adam_and_adamw_steps_on_an_mlp_match_pytorchs_weights(dev: &Device) {
    let (x_shape, x) = common::read_tensor(&common::fixture("mlp_io.safetensors"), "input");
    let fixture = common::fixture("adam_steps.safetensors");
    let (_, target) = common::read_tensor(&fixture, "target");
    let x = Tensor::from_vec(x, &x_shape, dev).unwrap();
    let target = Tensor::from_vec(target, &[5, 3], dev).unwrap();
    for (name, decoupled) in [("adam", false), ("adamw", true)] {
        let model = common::fixture_mlp(dev);
        let mut opt = adam_or_adamw(decoupled, model.parameters());
        for _ in 0..5 {
            let loss = nn::loss::mse(&model.forward(&x), &target);
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        let mut worst = 0.0f32;
        for (key, param) in model.named_parameters() {
            let (_, expected) = common::read_tensor(&fixture, &format!("{name}.{key}"));
            let got = param.to_vec().unwrap();
            worst = got
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(worst, f32::max);
        }
        eprintln!("{dev}: {name}: max |w - w_pytorch| after 5 steps = {worst:e}");
        assert!(worst <= 5e-7, "{dev}: {name}: weights {worst:e} from PyTorch's");
    }
}

/// The same optimizers on `Σw²`, whose gradient `2w` is exact in f32 everywhere, so
/// only the optimizer's own rounding is left.
fn five_adam_and_adamw_steps_on_a_quadratic_match_pytorch_to_the_last_bits(dev: &Device) {
    let fixture = common::fixture("adam_steps.safetensors");
    let (_, w0) = common::read_tensor(&fixture, "quadratic.w0");
    for (name, decoupled) in [("adam", false), ("adamw", true)] {
        let w = Tensor::from_vec(w0.clone(), &[w0.len()], dev)
            .unwrap()
            .requires_grad()
            .unwrap();
        let mut opt = adam_or_adamw(decoupled, vec![w.clone()]);
        for _ in 0..5 {
            opt.step(&w.square().sum().backward().unwrap()).unwrap();
        }
        let (_, expected) = common::read_tensor(&fixture, &format!("quadratic.{name}"));
        let got = w.to_vec().unwrap();
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!("{dev}: quadratic {name}: max |w - w_pytorch| after 5 steps = {worst:e}");
        assert!(
            worst <= 3e-8,
            "{dev}: quadratic {name}: weights {worst:e} from PyTorch's"
        );
    }
}

/// Where a gradient stays zero, a momentum buffer, Adam's moments and RMSprop's
/// averages decay geometrically; a value that falls below the smallest normal f32 is
/// stored as zero (each operation on a subnormal costs an x86 core a microcode
/// assist: the seed MLP's epochs ran 1.4× slower once its dead units' moments got
/// there). One step with a gradient on every word, then 900 with a gradient on the
/// first half only, decay 0.9 (a state of 0.1 or 1 crosses into the subnormals after
/// 810–830 steps and would reach zero only after 950–970): the second half's state
/// is exactly zero, no state value is subnormal, and the first half's is the
/// constant gradient's fixed point, normal.
fn optimizer_state_that_decays_below_the_normal_range_is_stored_as_zero(dev: &Device) {
    let n = 300;
    let half: Vec<f32> = (0..n).map(|i| if i < n / 2 { 1.0 } else { 0.0 }).collect();
    let half = Tensor::from_vec(half, &[n], dev).unwrap();
    type Make = fn(Vec<Tensor>) -> Box<dyn Optimizer>;
    let optimizers: [(&str, Make); 3] = [
        ("SGD with momentum", |p| {
            Box::new(Sgd::new(
                p,
                SgdConfig {
                    lr: 1e-3,
                    momentum: 0.9,
                    ..Default::default()
                },
            ))
        }),
        ("Adam", |p| {
            Box::new(Adam::new(
                p,
                AdamConfig {
                    lr: 1e-3,
                    beta1: 0.9,
                    beta2: 0.9,
                    ..Default::default()
                },
            ))
        }),
        ("RMSprop", |p| {
            Box::new(RmsProp::new(
                p,
                RmsPropConfig {
                    lr: 1e-3,
                    alpha: 0.9,
                    momentum: 0.9,
                    ..Default::default()
                },
            ))
        }),
    ];
    for (name, make) in optimizers {
        let w = Tensor::from_vec((0..n).map(|i| i as f32 / n as f32).collect(), &[n], dev)
            .unwrap()
            .requires_grad()
            .unwrap();
        let mut opt = make(vec![w.clone()]);
        opt.step(&w.sum().backward().unwrap()).unwrap();
        for _ in 0..900 {
            opt.step(&(&w * &half).sum().backward().unwrap()).unwrap();
        }
        let state = opt.state().unwrap();
        for (buffer, values) in &state.buffers[0] {
            let what = format!("{name} {buffer} on {dev:?}");
            assert!(values.iter().all(|v| !v.is_subnormal()), "{what}: a subnormal value");
            assert!(
                values[n / 2..].iter().all(|v| v.to_bits() == 0),
                "{what}: the decayed half is not zero: {:?}",
                &values[n / 2..n / 2 + 3]
            );
            assert!(values[..n / 2].iter().all(|v| v.is_normal()), "{what}: the live half");
        }
        assert!(
            w.to_vec().unwrap().iter().all(|v| v.is_finite()),
            "{name}: finite weights"
        );
    }
}

fn the_same_seed_gives_bit_identical_losses_with_dropout_on_each_device(dev: &Device) {
    let _serial = serial();
    let (train, _) = mnist_subset();
    let run = |seed: u64| {
        wgnn::manual_seed(seed);
        let net = Sequential::new()
            .add(Linear::new(784, 64, dev))
            .add(nn::Relu)
            .add(Dropout::new(0.5))
            .add(Linear::new(64, 10, dev));
        let mut opt = Sgd::new(
            net.parameters(),
            SgdConfig {
                lr: 0.05,
                ..Default::default()
            },
        );
        (0..5)
            .map(|s| {
                let (x, y) = batch(&train, &(s * 32..s * 32 + 32).collect::<Vec<_>>(), dev);
                let loss = nn::loss::cross_entropy(&net.forward(&x), &y);
                opt.step(&loss.backward().unwrap()).unwrap();
                loss.item().unwrap().to_bits()
            })
            .collect::<Vec<u32>>()
    };
    let (a, b) = (run(5), run(5));
    assert_eq!(a, b, "{dev}: two runs with seed 5 differ");
    assert_ne!(run(6), a, "{dev}: the loss does not depend on the dropout mask");
}

fn dropout_is_the_identity_in_eval_mode_and_scales_in_training(dev: &Device) {
    let _serial = serial();
    let x = Tensor::ones(&[4, 1000], dev);
    let mut net = Sequential::new().add(Dropout::new(0.25));
    let y = net.forward(&x).to_vec().unwrap();
    assert!(y.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6), "{dev}");
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f32 / y.len() as f32;
    assert!((kept - 0.75).abs() < 0.03, "{dev}: kept {kept}");
    net.eval();
    assert_eq!(net.forward(&x).to_vec().unwrap(), vec![1.0; 4000], "{dev}");
}

/// Trains logistic regression on the breast-cancer data with SGD and returns its
/// weights.
fn logistic_weights(penalty: Option<Penalty>) -> Vec<f32> {
    let data = breast_cancer();
    let dev = Device::cpu();
    wgnn::manual_seed(3);
    let layer = Linear::new(30, 1, &dev);
    let x = Tensor::from_vec(data.features.clone(), &[data.n, 30], &dev).unwrap();
    let y: Vec<f32> = data.labels.iter().map(|&l| l as f32).collect();
    let y = Tensor::from_vec(y, &[data.n, 1], &dev).unwrap();
    let mut opt = Sgd::new(
        layer.parameters(),
        SgdConfig {
            lr: 0.05,
            ..Default::default()
        },
    );
    let w = std::slice::from_ref(&layer.weight);
    for _ in 0..400 {
        let mut loss = nn::loss::binary_cross_entropy_with_logits(&layer.forward(&x), &y);
        loss = match penalty {
            Some(Penalty::L1(l)) => loss + nn::loss::l1_penalty(w, l),
            Some(Penalty::L2(l)) => loss + nn::loss::l2_penalty(w, l),
            None => loss,
        };
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    layer.weight.to_vec().unwrap()
}

#[test]
fn l1_drives_weights_to_zero_and_l2_only_shrinks_them() {
    let _serial = serial();
    let near_zero = |w: &[f32]| w.iter().filter(|v| v.abs() < 0.01).count();
    let norm = |w: &[f32]| w.iter().map(|v| v * v).sum::<f32>().sqrt();
    let plain = logistic_weights(None);
    let l1 = logistic_weights(Some(Penalty::L1(0.05)));
    let l2 = logistic_weights(Some(Penalty::L2(0.05)));
    eprintln!(
        "near-zero of 30: none {}, L1 {}, L2 {}; norms {:.3} {:.3} {:.3}",
        near_zero(&plain),
        near_zero(&l1),
        near_zero(&l2),
        norm(&plain),
        norm(&l1),
        norm(&l2)
    );
    assert!(
        near_zero(&l1) >= 10,
        "L1 left only {} weights near zero",
        near_zero(&l1)
    );
    assert!(near_zero(&l1) >= near_zero(&plain) + 8 && near_zero(&l1) >= near_zero(&l2) + 8);
    assert!(
        norm(&l2) < 0.8 * norm(&plain),
        "L2 did not shrink: {} vs {}",
        norm(&l2),
        norm(&plain)
    );
}

fn clip_norm_bounds_the_global_norm_and_clip_value_each_element(dev: &Device) {
    let _serial = serial();
    let w = Tensor::from_vec(vec![3.0, -4.0, 12.0], &[3], dev)
        .unwrap()
        .requires_grad()
        .unwrap();
    let g = (&w * &w).sum().mul_scalar(0.5).backward().unwrap(); // gradient = w, norm 13
    assert!((g.global_norm().item().unwrap() - 13.0).abs() < 1e-4, "{dev}");
    let clipped = g.clip_norm(1.3);
    let got = clipped.get(&w).unwrap().to_vec().unwrap();
    for (a, b) in got.iter().zip([0.3, -0.4, 1.2]) {
        assert!((a - b).abs() < 1e-5, "{dev}: {got:?}");
    }
    // Below the bound nothing changes.
    assert_eq!(
        g.clip_norm(100.0).get(&w).unwrap().to_vec().unwrap(),
        vec![3.0, -4.0, 12.0]
    );
    assert_eq!(
        g.clip_value(3.5).get(&w).unwrap().to_vec().unwrap(),
        vec![3.0, -3.5, 3.5]
    );
}

fn a_data_loader_covers_every_row_once_per_epoch_and_reuses_the_partial_batch_plan(dev: &Device) {
    let _serial = serial();
    let (train, _) = mnist_subset();
    let small = train.select(&(0..100).collect::<Vec<_>>());
    let mut loader = DataLoader::from_dataset(&small, 32).unwrap().shuffle(9);
    assert_eq!(loader.len(), 4);
    let mut first_epoch = Vec::new();
    for b in loader.epoch(dev) {
        first_epoch.extend(b.unwrap().1.to_labels().unwrap());
    }
    let mut sorted = first_epoch.clone();
    sorted.sort();
    let mut want = small.labels.clone();
    want.sort();
    assert_eq!(sorted, want, "{dev}: an epoch must see every row once");
    let second: Vec<u32> = loader
        .epoch(dev)
        .flat_map(|b| b.unwrap().1.to_labels().unwrap())
        .collect();
    assert_ne!(second, first_epoch, "{dev}: reshuffled each epoch");
    assert_eq!(DataLoader::from_dataset(&small, 32).unwrap().drop_last(true).len(), 3);
    assert_eq!(DataLoader::from_dataset(&small, 1).unwrap().len(), 100);
    assert_eq!(DataLoader::from_dataset(&small, 1000).unwrap().len(), 1);

    // Training over 3 epochs of 4 batches (the last one of 4 rows): the step plan is
    // compiled for the full and the partial batch in epoch 1, then only reused.
    wgnn::manual_seed(1);
    let net = mlp(dev);
    let mut opt = Adam::new(net.parameters(), AdamConfig::default());
    let mut misses_after_epoch = Vec::new();
    for _ in 0..3 {
        for b in loader.epoch(dev) {
            let (x, y) = b.unwrap();
            opt.step(&nn::loss::cross_entropy(&net.forward(&x), &y).backward().unwrap())
                .unwrap();
        }
        misses_after_epoch.push(dev.stats().plan_cache_misses);
    }
    assert_eq!(
        misses_after_epoch[0], misses_after_epoch[2],
        "{dev}: recompiled after epoch 1"
    );
}

fn the_perceptron_rule_separates_separable_data_and_never_solves_xor(dev: &Device) {
    let _serial = serial();
    // Two clouds of the breast-cancer data along "worst concave points" and
    // "worst perimeter" would overlap; use a separable set: y = [x0 + 2 x1 > 0.3].
    let pts: Vec<[f32; 2]> = wgnn::rng::uniform(4, 80, -1.0, 1.0)
        .chunks(2)
        .map(|c| [c[0], c[1]])
        .collect();
    let pts: Vec<[f32; 2]> = pts
        .into_iter()
        .filter(|p| (p[0] + 2.0 * p[1] - 0.3).abs() > 0.1)
        .collect();
    let x: Vec<f32> = pts.iter().flatten().copied().collect();
    let y: Vec<u32> = pts.iter().map(|p| (p[0] + 2.0 * p[1] > 0.3) as u32).collect();
    let mut p = Perceptron::new(2, 0.1, dev).unwrap();
    let errors = p.fit(&x, &y, 100).unwrap();
    assert_eq!(errors.last(), Some(&0), "{dev}: mistakes per epoch {errors:?}");

    let xor_x = [0., 0., 0., 1., 1., 0., 1., 1.];
    let xor_y = [0, 1, 1, 0];
    let mut p = Perceptron::new(2, 0.1, dev).unwrap();
    let errors = p.fit(&xor_x, &xor_y, 50).unwrap();
    assert_eq!(errors.len(), 50, "{dev}");
    assert!(errors.iter().all(|&e| e >= 1), "{dev}: XOR solved? {errors:?}");
}

fn fit_with_validation_split_early_stopping_and_plateau_converges_and_writes_a_report(dev: &Device) {
    let _serial = serial();
    let (train, test) = mnist_subset();
    let train = train.select(&(0..2000).collect::<Vec<_>>());
    wgnn::manual_seed(2);
    let net = Sequential::new()
        .add(Linear::new(784, 64, dev))
        .add(nn::Relu)
        .add(Dropout::new(0.2))
        .add(Linear::new(64, 10, dev));
    let opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: 2e-3,
            ..Default::default()
        },
    );
    let mut model = net
        .compile(opt, Loss::CrossEntropy, &[Metric::Accuracy, Metric::F1(Average::Macro)])
        .unwrap()
        .penalty(Penalty::L2(1e-4));
    let (x, y) = batch(&train, &(0..train.n).collect::<Vec<_>>(), dev);
    let plateau = ReduceLrOnPlateau::new(
        2e-3,
        PlateauConfig {
            patience: 0,
            factor: 0.5,
            ..Default::default()
        },
    );
    let summary = model.net.summary();
    assert!(
        summary.contains("Linear(784, 64)") && summary.contains("50890"),
        "{summary}"
    );
    let history = model
        .fit(
            &x,
            &y,
            FitConfig {
                epochs: 12,
                batch_size: 64,
                validation_split: 0.2,
                callbacks: vec![
                    Box::new(EarlyStopping::new("val_loss", 2).restore_best_weights()),
                    Box::new(LrScheduler::on_metric(plateau, "val_loss")),
                ],
                ..Default::default()
            },
        )
        .unwrap();
    let val_acc = history.get("val_accuracy").unwrap();
    let loss = history.get("loss").unwrap();
    assert!(loss.last() < loss.first(), "{dev}: loss did not fall: {loss:?}");
    assert!(
        val_acc.iter().copied().fold(0.0, f64::max) > 0.85,
        "{dev}: val accuracy {val_acc:?}"
    );
    assert!(history.get("val_f1_macro").is_some() && history.lr.len() == history.epochs());

    // Device-side metrics equal the host's count from `predict`.
    let (tx, ty) = batch(&test, &(0..test.n).collect::<Vec<_>>(), dev);
    let scores = model.evaluate(&tx, &ty).unwrap();
    let predicted = model.predict(&tx).unwrap().argmax(1).to_labels().unwrap();
    let cm = ConfusionMatrix::from_labels(&test.labels, &predicted, 10).unwrap();
    assert!((scores["accuracy"] - cm.accuracy()).abs() < 1e-9, "{dev}");
    assert!(
        (scores["f1_macro"] - cm.f1(Average::Macro).unwrap()).abs() < 1e-9,
        "{dev}"
    );
    assert!(scores["accuracy"] > 0.85, "{dev}: test accuracy {}", scores["accuracy"]);

    let dir = std::env::temp_dir().join(format!("wgnn-report-{}-{:?}", std::process::id(), dev.kind()));
    let summary = history.write_report(&dir, "MNIST subset").unwrap();
    let md = std::fs::read_to_string(&summary).unwrap();
    for f in [
        "loss.png",
        "loss.svg",
        "accuracy.png",
        "lr.png",
        "confusion.png",
        "confusion.svg",
    ] {
        assert!(
            dir.join(f).metadata().map(|m| m.len() > 1000).unwrap_or(false),
            "{dev}: {f} missing"
        );
    }
    assert!(
        md.contains("loss.png") && md.contains("llvmpipe") == (dev.kind() != wgnn::DeviceKind::Cpu)
            || dev.kind() == wgnn::DeviceKind::Cpu
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fit_evaluate_and_compile_report_bad_input_as_errors() {
    let _serial = serial();
    let dev = Device::cpu();
    let make = |loss, metrics: &[Metric]| {
        let net = Sequential::new().add(Linear::new(4, 3, &dev));
        let opt = Sgd::new(net.parameters(), SgdConfig::default());
        net.compile(opt, loss, metrics)
    };
    let e = make(Loss::Mse, &[Metric::Accuracy])
        .err()
        .expect("accuracy of an MSE model");
    assert!(e.to_string().contains("accuracy"), "{e}");
    assert!(make(Loss::CrossEntropy, &[Metric::RocAuc]).is_err());
    let mut model = make(Loss::CrossEntropy, &[Metric::Accuracy]).unwrap();
    let x = Tensor::zeros(&[10, 5], &dev); // 5 features, the model takes 4
    let y = Tensor::from_labels(&[0; 10], &dev).unwrap();
    let e = model.fit(&x, &y, FitConfig::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("layer 0 `Linear(4, 3)` expects 4 features, the data has 5"),
        "{e}"
    );
    let x = Tensor::zeros(&[10, 4], &dev);
    let e = model
        .fit(
            &x,
            &y,
            FitConfig {
                validation_split: 1.0,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("validation_split"), "{e}");
    let cb = EarlyStopping::new("val_f1", 1);
    let e = model
        .fit(
            &x,
            &y,
            FitConfig {
                callbacks: vec![Box::new(cb)],
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("val_f1"), "{e}");
    let short = Tensor::from_labels(&[0; 9], &dev).unwrap();
    assert!(model.evaluate(&x, &short).is_err());
}

/// Three steps on f(w) = Σ w² from w = [1, -2] with `opt`, against `reference`, which
/// applies one update to (w, g = 2w) per call, in f64.
fn follows_rule(
    dev: &Device,
    make: impl Fn(Tensor) -> Box<dyn Optimizer>,
    mut reference: impl FnMut(&mut [f64; 2], usize),
) {
    let w = Tensor::from_vec(vec![1.0, -2.0], &[2], dev)
        .unwrap()
        .requires_grad()
        .unwrap();
    let mut opt = make(w.clone());
    let mut wr = [1.0f64, -2.0];
    for t in 1..=3 {
        opt.step(&w.square().sum().backward().unwrap()).unwrap();
        reference(&mut wr, t);
    }
    let got = w.to_vec().unwrap();
    for i in 0..2 {
        assert!((got[i] as f64 - wr[i]).abs() < 5e-5, "{dev}: {got:?} vs {wr:?}");
    }
}

fn nesterov_the_seeds_momentum_form_and_adamw_follow_their_update_rules(dev: &Device) {
    let _serial = serial();
    // torch.optim.SGD(lr=0.05, momentum=0.8, nesterov=True): buf = g at step 1, then
    // buf = μ·buf + g; the step uses g + μ·buf.
    let mut buf = [0.0f64; 2];
    follows_rule(
        dev,
        |w| {
            Box::new(Sgd::new(
                vec![w],
                SgdConfig {
                    lr: 0.05,
                    momentum: 0.8,
                    nesterov: true,
                    ..Default::default()
                },
            ))
        },
        |w, t| {
            for i in 0..2 {
                let g = 2.0 * w[i];
                buf[i] = if t == 1 { g } else { 0.8 * buf[i] + g };
                w[i] -= 0.05 * (g + 0.8 * buf[i]);
            }
        },
    );
    // The seed's v = βv + (1 − β)g is dampening = β; PyTorch starts the buffer at g.
    let mut v = [0.0f64; 2];
    follows_rule(
        dev,
        |w| {
            Box::new(Sgd::new(
                vec![w],
                SgdConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    dampening: 0.9,
                    ..Default::default()
                },
            ))
        },
        |w, t| {
            for i in 0..2 {
                let g = 2.0 * w[i];
                v[i] = if t == 1 { g } else { 0.9 * v[i] + 0.1 * g };
                w[i] -= 0.1 * v[i];
            }
        },
    );
    // torch.optim.AdamW(lr=0.1, weight_decay=0.1): w ← w·(1 − lr·wd), then Adam.
    let (mut m, mut s) = ([0.0f64; 2], [0.0f64; 2]);
    follows_rule(
        dev,
        |w| {
            Box::new(AdamW::new(
                vec![w],
                AdamConfig {
                    lr: 0.1,
                    weight_decay: 0.1,
                    ..Default::default()
                },
            ))
        },
        |w, t| {
            for i in 0..2 {
                let g = 2.0 * w[i];
                w[i] *= 1.0 - 0.1 * 0.1;
                m[i] = 0.9 * m[i] + 0.1 * g;
                s[i] = 0.999 * s[i] + 0.001 * g * g;
                let (bc1, bc2) = (1.0 - 0.9f64.powi(t as i32), 1.0 - 0.999f64.powi(t as i32));
                w[i] -= 0.1 / bc1 * m[i] / (s[i].sqrt() / bc2.sqrt() + 1e-8);
            }
        },
    );
}

fn binary_metrics_from_fit_equal_host_counts_and_roc_auc_from_predict(dev: &Device) {
    let _serial = serial();
    let data = breast_cancer();
    let (train, test) = data.shuffle_split(1, 455);
    wgnn::manual_seed(4);
    let net = Sequential::new()
        .add(Linear::new(30, 8, dev))
        .add(nn::Tanh)
        .add(Linear::new(8, 1, dev));
    let opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
    );
    let metrics = [
        Metric::Accuracy,
        Metric::F1(Average::Binary { positive: 1 }),
        Metric::RocAuc,
    ];
    let mut model = net.compile(opt, Loss::BinaryCrossEntropyWithLogits, &metrics).unwrap();
    let targets = |d: &Dataset| {
        let y: Vec<f32> = d.labels.iter().map(|&l| l as f32).collect();
        Tensor::from_vec(y, &[d.n, 1], dev).unwrap()
    };
    let x = Tensor::from_vec(train.features.clone(), &[train.n, 30], dev).unwrap();
    let config = FitConfig {
        epochs: 20,
        batch_size: 32,
        ..Default::default()
    };
    let history = model.fit(&x, &targets(&train), config).unwrap();
    assert!(history.get("roc_auc").is_none(), "ROC-AUC is an evaluation metric");
    let xt = Tensor::from_vec(test.features.clone(), &[test.n, 30], dev).unwrap();
    let scores = model.evaluate(&xt, &targets(&test)).unwrap();
    let logits = model.predict(&xt).unwrap().to_vec().unwrap();
    let predicted: Vec<u32> = logits.iter().map(|&z| (z >= 0.0) as u32).collect();
    let cm = ConfusionMatrix::from_labels(&test.labels, &predicted, 2).unwrap();
    assert_eq!(model.confusion_matrix(&xt, &targets(&test)).unwrap(), cm, "{dev}");
    assert!((scores["accuracy"] - cm.accuracy()).abs() < 1e-9, "{dev}");
    assert!(
        (scores["f1"] - cm.f1(Average::Binary { positive: 1 }).unwrap()).abs() < 1e-9,
        "{dev}"
    );
    let probabilities: Vec<f32> = logits.iter().map(|&z| 1.0 / (1.0 + (-z).exp())).collect();
    let auc = wgnn::metrics::roc_auc(&probabilities, &test.labels).unwrap();
    assert!(
        (scores["roc_auc"] - auc).abs() < 1e-6,
        "{dev}: {} vs {auc}",
        scores["roc_auc"]
    );
    assert!(scores["accuracy"] > 0.9 && auc > 0.95, "{dev}: {scores:?}");
}

#[test]
fn a_best_only_checkpoint_holds_the_weights_early_stopping_restores() {
    let _serial = serial();
    let (train, _) = mnist_subset();
    let train = train.select(&(0..1000).collect::<Vec<_>>());
    let dev = Device::cpu();
    let path = std::env::temp_dir().join(format!("wgnn-checkpoint-{}.safetensors", std::process::id()));
    wgnn::manual_seed(8);
    let net = mlp(&dev);
    let opt = Sgd::new(
        net.parameters(),
        SgdConfig {
            lr: 0.5,
            ..Default::default()
        },
    );
    let mut model = net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy]).unwrap();
    let (x, y) = batch(&train, &(0..train.n).collect::<Vec<_>>(), &dev);
    let config = FitConfig {
        epochs: 15,
        validation_split: 0.3,
        callbacks: vec![
            Box::new(wgnn::train::ModelCheckpoint::best_only(&path, "val_loss")),
            Box::new(EarlyStopping::new("val_loss", 2).restore_best_weights()),
        ],
        ..Default::default()
    };
    let history = model.fit(&x, &y, config).unwrap();
    let reason = history.stop_reason.clone().unwrap_or_default();
    assert!(reason.contains("restored the weights of epoch"), "{reason}");
    let mut saved = mlp(&dev);
    wgnn::io::load_safetensors(&mut saved, &path).unwrap();
    for (a, b) in saved.parameters().iter().zip(model.net.parameters()) {
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_training_toolkit_contract_of_design_md_compiles_and_runs() {
    let _serial = serial();
    use wgnn::optim::lr::{CosineAnnealingLr, ExponentialLr, LrSchedule, StepLr};
    let dev = Device::cpu();
    wgnn::manual_seed(42);
    let drop = nn::Dropout::new(0.5);
    let model = Sequential::new().add(Linear::new(3, 4, &dev)).add(drop);
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: 1e-3,
            ..Default::default()
        },
    );
    let mut s = StepLr::new(0.1, 3, 0.5);
    let mut c = CosineAnnealingLr::new(0.1, 10, 0.001);
    let mut e = ExponentialLr::new(0.1, 0.9);
    let mut p = ReduceLrOnPlateau::new(0.1, Default::default());
    let metric = 0.5f32;
    for _ in 0..3 {
        s.step();
        c.step();
        e.step();
        p.step_with(metric);
    }
    opt.set_lr(s.lr());
    assert_eq!(opt.lr(), 0.05);
    assert!((c.lr() - (0.001 + 0.099 * (1.0 + (std::f64::consts::PI * 0.3).cos()) / 2.0)).abs() < 1e-12);
    assert!((e.lr() - 0.1 * 0.9f64.powi(3)).abs() < 1e-12);
    assert_eq!(p.lr(), 0.1);
}

/// Steps of the soak test, and how many of them are warm-up (plans compiled, pools
/// and allocator arenas filled).
const SOAK_STEPS: usize = 3000;
const SOAK_WARMUP: usize = 300;
/// Host memory the soak may gain after warm-up: a leak of 512 bytes a step shows.
const SOAK_RSS_SLACK: u64 = 1 << 20;

/// Resident memory of this process (Linux `/proc/self/statm`, 4 KiB pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

/// Thousands of steps of a small MLP learning a rule (a fresh batch uploaded each
/// step, Adam, the loss read every 100 steps): after warm-up the device's live buffer bytes do not
/// move and the process's resident memory stays within [`SOAK_RSS_SLACK`]. Runs in
/// a child process (this binary, running only `soak_child`), so that no other test's
/// allocations are counted.
fn thousands_of_training_steps_keep_device_and_host_memory_flat(dev: &Device) {
    let kind = match dev.kind() {
        wgnn::DeviceKind::Cpu => "cpu",
        wgnn::DeviceKind::Gpu => "gpu",
    };
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "soak_child", "--nocapture", "--test-threads=1"])
        .env("WGNN_SOAK_CHILD", kind)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "{dev}: soak failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("soak done"), "{dev}: the child did not soak:\n{stdout}");
}

/// The child of `thousands_of_training_steps_keep_device_and_host_memory_flat`; does
/// nothing unless that test started it.
#[test]
fn soak_child() {
    let Ok(kind) = std::env::var("WGNN_SOAK_CHILD") else {
        return;
    };
    let dev = if kind == "gpu" {
        Device::gpu().unwrap()
    } else {
        Device::cpu()
    };
    wgnn::manual_seed(5);
    let model = Sequential::new()
        .add(Linear::new(16, 64, &dev))
        .add(nn::Tanh)
        .add(Linear::new(64, 4, &dev));
    let mut opt = Adam::new(model.parameters(), AdamConfig::default());
    let (mut warm_bytes, mut warm_rss) = (0, 0);
    for step in 0..SOAK_STEPS {
        let features: Vec<f32> = (0..32 * 16)
            .map(|i| ((i * 31 + step * 7) % 97) as f32 / 97.0 - 0.5)
            .collect();
        // The class is the largest of the first four features: learnable.
        let labels: Vec<u32> = features
            .chunks(16)
            .map(|row| (0..4).fold(0, |best, c| if row[c] > row[best] { c } else { best }) as u32)
            .collect();
        let x = Tensor::from_vec(features, &[32, 16], &dev).unwrap();
        let y = Tensor::from_labels(&labels, &dev).unwrap();
        let loss = nn::loss::cross_entropy(&model.forward(&x), &y);
        opt.step(&loss.backward().unwrap()).unwrap();
        if step % 100 == 99 {
            let loss = loss.item().unwrap();
            let (bytes, rss) = (dev.stats().live_buffer_bytes, rss_bytes());
            if step + 1 == SOAK_WARMUP {
                (warm_bytes, warm_rss) = (bytes, rss);
            }
            if (step + 1) % 500 == 0 || step + 1 == SOAK_WARMUP {
                println!(
                    "{dev}: step {}: loss {loss:.4}, device {bytes} B, rss {:.2} MiB",
                    step + 1,
                    rss as f64 / 1048576.0
                );
            }
            if step + 1 > SOAK_WARMUP {
                assert_eq!(bytes, warm_bytes, "{dev}: live device bytes moved at step {}", step + 1);
                assert!(
                    rss <= warm_rss + SOAK_RSS_SLACK,
                    "{dev}: resident memory grew by {} B between step {SOAK_WARMUP} and {}",
                    rss - warm_rss,
                    step + 1
                );
            }
        }
    }
    println!("{dev}: soak done");
}

/// A file in the temporary folder, unique to this process, test and device.
fn temp_file(name: &str, dev: &Device) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("wgnn-{}-{:?}-{name}", std::process::id(), dev.kind()))
}

/// The bits of every parameter, in order.
fn weight_bits(model: &dyn Module) -> Vec<Vec<u32>> {
    (model.parameters().iter())
        .map(|p| p.to_vec().unwrap().into_iter().map(f32::to_bits).collect())
        .collect()
}

fn a_checkpoint_saved_mid_training_continues_bit_for_bit(dev: &Device) {
    let _serial = serial();
    let data = breast_cancer();
    let make = |seed: u64| {
        wgnn::manual_seed(seed);
        let net = Sequential::new()
            .add(Linear::new(30, 32, dev))
            .add(nn::Relu)
            .add(Dropout::new(0.3))
            .add(Linear::new(32, 2, dev));
        let config = AdamConfig {
            lr: 1e-2,
            ..Default::default()
        };
        let opt: Box<dyn Optimizer> = Box::new(Adam::new(net.parameters(), config));
        (net, opt)
    };
    // Step `s` trains on rows 32s.. (mod 512) and returns the loss's bits.
    let step = |net: &Sequential, opt: &mut dyn Optimizer, s: usize| {
        let rows: Vec<usize> = (0..32).map(|r| (s * 32 + r) % 512).collect();
        let (x, y) = batch(&data, &rows, dev);
        let loss = nn::loss::cross_entropy(&net.forward(&x), &y);
        opt.step(&loss.backward().unwrap()).unwrap();
        loss.item().unwrap().to_bits()
    };
    let path = temp_file("loop.ckpt", dev);
    let (net, mut opt) = make(3);
    for s in 0..4 {
        step(&net, opt.as_mut(), s);
    }
    opt.set_lr(5e-3);
    wgnn::io::save_checkpoint(&net, &opt, &path).unwrap();
    let losses: Vec<u32> = (4..10).map(|s| step(&net, opt.as_mut(), s)).collect();

    // Another seed gives other weights and other dropout masks: the checkpoint puts
    // back the weights, the moments, the step count, the lr and the random stream.
    let (mut net2, mut opt2) = make(77);
    assert_ne!(weight_bits(&net2), weight_bits(&net));
    wgnn::io::load_checkpoint(&mut net2, &mut opt2, &path).unwrap();
    assert_eq!(opt2.lr(), 5e-3, "{dev}");
    let resumed: Vec<u32> = (4..10).map(|s| step(&net2, opt2.as_mut(), s)).collect();
    assert_eq!(resumed, losses, "{dev}: the losses after the checkpoint differ");
    assert_eq!(weight_bits(&net2), weight_bits(&net), "{dev}: the weights differ");
    let (a, b) = (opt.state().unwrap(), opt2.state().unwrap());
    assert_eq!((a.steps, &a.kind), (10, &"Adam".to_string()), "{dev}");
    assert_eq!(a, b, "{dev}: the optimizer states differ");
    let _ = std::fs::remove_file(&path);
}

fn resuming_fit_from_a_checkpoint_equals_the_uninterrupted_run_bit_for_bit(dev: &Device) {
    let _serial = serial();
    let data = breast_cancer();
    let (x, y) = batch(&data, &(0..data.n).collect::<Vec<_>>(), dev);
    let model = |seed: u64| {
        wgnn::manual_seed(seed);
        let net = Sequential::new()
            .add(Linear::new(30, 32, dev))
            .add(nn::Relu)
            .add(Dropout::new(0.3))
            .add(Linear::new(32, 2, dev));
        let opt = Adam::new(
            net.parameters(),
            AdamConfig {
                lr: 0.02,
                ..Default::default()
            },
        );
        net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy]).unwrap()
    };
    let config = |epochs: usize, checkpoint: &std::path::Path, resume_from: Option<std::path::PathBuf>| {
        let plateau = PlateauConfig {
            patience: 0,
            factor: 0.5,
            ..Default::default()
        };
        FitConfig {
            epochs,
            batch_size: 32,
            validation_split: 0.25,
            callbacks: vec![
                Box::new(LrScheduler::on_metric(
                    ReduceLrOnPlateau::new(0.02, plateau),
                    "val_loss",
                )),
                Box::new(EarlyStopping::new("val_loss", 100).restore_best_weights()),
                Box::new(ModelCheckpoint::every_epoch(checkpoint)),
            ],
            verbose: false,
            layer_stats: false,
            resume_from,
            ..Default::default()
        }
    };
    let (whole, part, resumed) = (
        temp_file("whole.ckpt", dev),
        temp_file("part.ckpt", dev),
        temp_file("resumed.ckpt", dev),
    );
    let mut a = model(5);
    let full = a.fit(&x, &y, config(8, &whole, None)).unwrap();
    let mut b = model(5);
    b.fit(&x, &y, config(3, &part, None)).unwrap();
    // A fresh model and optimizer from another seed, and the stream moved on.
    let mut c = model(99);
    let rest = c.fit(&x, &y, config(8, &resumed, Some(part.clone()))).unwrap();

    assert!(
        full.lr_changes.iter().any(|c| c.epoch > 3),
        "{dev}: the plateau schedule never cut the lr after the checkpoint: {:?}",
        full.lr
    );
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for log in ["loss", "accuracy", "val_loss", "val_accuracy"] {
        assert_eq!(
            bits(rest.get(log).unwrap()),
            bits(full.get(log).unwrap()),
            "{dev}: {log} differs: {:?} vs {:?}",
            rest.get(log),
            full.get(log)
        );
    }
    assert_eq!(bits(&rest.lr), bits(&full.lr), "{dev}: lr");
    assert_eq!(rest.lr_changes, full.lr_changes, "{dev}");
    assert_eq!(
        weight_bits(&c.net),
        weight_bits(&a.net),
        "{dev}: the final weights differ"
    );
    assert_eq!(c.optimizer.state().unwrap(), a.optimizer.state().unwrap(), "{dev}");
    for p in [whole, part, resumed] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn loading_a_checkpoint_of_another_architecture_names_every_mismatch_and_changes_nothing() {
    let _serial = serial();
    let dev = Device::cpu();
    let x = Tensor::from_vec((0..8).map(|v| v as f32 / 8.0).collect(), &[2, 4], &dev).unwrap();
    let trained = |net: &Sequential, opt: &mut dyn Optimizer| {
        let y = Tensor::from_labels(&[0, 1], &dev).unwrap();
        opt.step(&nn::loss::cross_entropy(&net.forward(&x), &y).backward().unwrap())
            .unwrap();
    };
    wgnn::manual_seed(1);
    let net = Sequential::new()
        .add(Linear::new(4, 8, &dev))
        .add(nn::Relu)
        .add(Linear::new(8, 3, &dev));
    let mut adam = Adam::new(net.parameters(), AdamConfig::default());
    trained(&net, &mut adam);
    let path = temp_file("other-architecture.ckpt", &dev);
    wgnn::io::save_checkpoint(&net, &adam, &path).unwrap();

    let mut other = Sequential::new()
        .add(Linear::new(4, 6, &dev))
        .add(nn::Relu)
        .add(Linear::new(6, 3, &dev))
        .add(nn::Relu)
        .add(Linear::new(3, 2, &dev));
    let mut sgd = Sgd::new(
        other.parameters(),
        SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        },
    );
    trained(&other, &mut sgd);
    let (weights, state) = (weight_bits(&other), sgd.state().unwrap());
    let draw = || Linear::new(3, 3, &dev).weight.to_vec().unwrap();
    wgnn::manual_seed(9);
    let err = wgnn::io::load_checkpoint(&mut other, &mut sgd, &path).unwrap_err();
    let after_failed_load = draw();
    let Error::Load { problems, .. } = &err else {
        panic!("not a load error: {err}")
    };
    let message = err.to_string();
    for needle in [
        "\"0.weight\" has shape [8, 4], the module expects [6, 4]",
        "\"0.bias\" has shape [8], the module expects [6]",
        "\"2.weight\" has shape [3, 8], the module expects [3, 6]",
        "missing tensor \"4.weight\"",
        "missing tensor \"4.bias\"",
        "the checkpoint holds Adam state, the optimizer is SGD with momentum",
    ] {
        assert!(message.contains(needle), "`{needle}` not in: {message}");
    }
    assert_eq!(problems.len(), 6, "{problems:#?}");
    assert_eq!(weight_bits(&other), weights, "the model changed");
    assert_eq!(sgd.state().unwrap(), state, "the optimizer changed");
    wgnn::manual_seed(9);
    assert_eq!(after_failed_load, draw(), "the random stream moved");

    // The right architecture with another optimizer kind is refused too.
    let mut same = Sequential::new()
        .add(Linear::new(4, 8, &dev))
        .add(nn::Relu)
        .add(Linear::new(8, 3, &dev));
    let mut adamw = AdamW::new(same.parameters(), AdamConfig::default());
    let err = wgnn::io::load_checkpoint(&mut same, &mut adamw, &path).unwrap_err();
    assert!(
        err.to_string().contains("holds Adam state, the optimizer is AdamW"),
        "{err}"
    );
    // A plain model file is not a checkpoint, but a checkpoint is a model file.
    let plain = temp_file("plain.safetensors", &dev);
    wgnn::io::save_safetensors(&net, &plain).unwrap();
    let err = wgnn::io::load_checkpoint(&mut same, &mut adamw, &plain).unwrap_err();
    assert!(err.to_string().contains("not a wgnn checkpoint"), "{err}");
    wgnn::io::load_safetensors(&mut same, &path).unwrap();
    assert_eq!(weight_bits(&same), weight_bits(&net));
    for p in [path, plain] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn every_optimizers_state_round_trips_through_a_checkpoint() {
    let _serial = serial();
    let dev = Device::cpu();
    let make = |kind: &str, p: Vec<Tensor>| -> Box<dyn Optimizer> {
        let sgd = |momentum| SgdConfig {
            lr: 0.1,
            momentum,
            weight_decay: 1e-3,
            nesterov: momentum > 0.0,
            ..Default::default()
        };
        let adam = AdamConfig {
            lr: 0.01,
            weight_decay: 1e-2,
            ..Default::default()
        };
        match kind {
            "SGD" => Box::new(Sgd::new(p, sgd(0.0))),
            "SGD with momentum" => Box::new(Sgd::new(p, sgd(0.9))),
            "Adam" => Box::new(Adam::new(p, adam)),
            _ => Box::new(AdamW::new(p, adam)),
        }
    };
    let x = Tensor::from_vec((0..12).map(|v| v as f32 / 12.0).collect(), &[3, 4], &dev).unwrap();
    let y = Tensor::from_labels(&[0, 1, 1], &dev).unwrap();
    let path = temp_file("optimizers.ckpt", &dev);
    for kind in ["SGD", "SGD with momentum", "Adam", "AdamW"] {
        let net = Sequential::new().add(Linear::new(4, 2, &dev));
        let mut opt = make(kind, net.parameters());
        for _ in 0..3 {
            opt.step(&nn::loss::cross_entropy(&net.forward(&x), &y).backward().unwrap())
                .unwrap();
        }
        opt.set_lr(0.0123);
        wgnn::io::save_checkpoint(&net, &opt, &path).unwrap();
        let mut fresh = Sequential::new().add(Linear::new(4, 2, &dev));
        let mut loaded = make(kind, fresh.parameters());
        wgnn::io::load_checkpoint(&mut fresh, &mut loaded, &path).unwrap();
        let (want, got) = (opt.state().unwrap(), loaded.state().unwrap());
        assert_eq!((want.kind.as_str(), want.steps, want.lr), (kind, 3, 0.0123));
        assert_eq!(got, want, "{kind}");
        assert_eq!(weight_bits(&fresh), weight_bits(&net), "{kind}");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn resuming_fit_needs_a_checkpoint_written_by_fit_with_the_same_callbacks() {
    let _serial = serial();
    let dev = Device::cpu();
    let x = Tensor::from_vec((0..24).map(|v| v as f32 / 24.0).collect(), &[6, 4], &dev).unwrap();
    let y = Tensor::from_labels(&[0, 1, 2, 0, 1, 2], &dev).unwrap();
    let model = || {
        let net = Sequential::new().add(Linear::new(4, 3, &dev));
        let opt = Adam::new(net.parameters(), AdamConfig::default());
        net.compile(opt, Loss::CrossEntropy, &[]).unwrap()
    };
    let (plain, from_fit) = (temp_file("plain.ckpt", &dev), temp_file("fit.ckpt", &dev));
    let mut m = model();
    wgnn::io::save_checkpoint(&m.net, &m.optimizer, &plain).unwrap();
    let config = |callbacks: Vec<Box<dyn wgnn::train::Callback>>, resume_from: &std::path::Path| FitConfig {
        epochs: 2,
        callbacks,
        verbose: false,
        layer_stats: false,
        resume_from: Some(resume_from.into()),
        ..Default::default()
    };
    let before = weight_bits(&m.net);
    let err = m.fit(&x, &y, config(vec![], &plain)).unwrap_err();
    assert!(
        err.to_string().contains("written by save_checkpoint, not by fit"),
        "{err}"
    );
    let mut writer = model();
    let first = FitConfig {
        epochs: 1,
        callbacks: vec![Box::new(ModelCheckpoint::every_epoch(&from_fit))],
        verbose: false,
        layer_stats: false,
        ..Default::default()
    };
    writer.fit(&x, &y, first).unwrap();
    let err = m.fit(&x, &y, config(vec![], &from_fit)).unwrap_err();
    assert!(err.to_string().contains("with 1 callbacks, this fit has 0"), "{err}");
    assert_eq!(weight_bits(&m.net), before, "a refused resume changed the model");
    let history = m
        .fit(
            &x,
            &y,
            config(vec![Box::new(ModelCheckpoint::every_epoch(&from_fit))], &from_fit),
        )
        .unwrap();
    assert_eq!(
        history.epochs(),
        2,
        "the history holds the epoch before the checkpoint too"
    );
    for p in [plain, from_fit] {
        let _ = std::fs::remove_file(p);
    }
}

/// Set in the child process of the crash test: the checkpoint file it writes.
const CRASH_CHILD: &str = "WGNN_TEST_CHECKPOINT_CRASH_CHILD";

/// The crash test's model (about 70,000 parameters, an 800 kB checkpoint) and the
/// values its parameter `k` holds after step `step`.
fn crash_model() -> (Sequential, Adam) {
    let dev = Device::cpu();
    let net = Sequential::new()
        .add(Linear::new(256, 256, &dev))
        .add(nn::Tanh)
        .add(Linear::new(256, 16, &dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    (net, opt)
}

fn crash_values(step: u64, k: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| step as f32 + (k * n + i) as f32 * 1e-6).collect()
}

/// The child: trains and writes a checkpoint after every step, each holding the
/// step count and weights that say which step wrote them, until it is killed.
fn write_checkpoints_until_killed(path: &str) -> ! {
    let (net, mut opt) = crash_model();
    let dev = Device::cpu();
    let x = Tensor::ones(&[4, 256], &dev);
    let y = Tensor::zeros(&[4, 16], &dev);
    for step in 1.. {
        let loss = nn::loss::mse(&net.forward(&x), &y);
        opt.step(&loss.backward().unwrap()).unwrap();
        for (k, p) in net.parameters().iter().enumerate() {
            p.assign(&crash_values(step, k, p.numel())).unwrap();
        }
        wgnn::io::save_checkpoint(&net, &opt, path).unwrap();
    }
    unreachable!()
}

#[cfg(unix)]
#[test]
fn a_checkpoint_killed_while_being_written_leaves_the_old_or_the_new_one() {
    use std::os::unix::process::ExitStatusExt;
    const NAME: &str = "a_checkpoint_killed_while_being_written_leaves_the_old_or_the_new_one";
    if let Ok(path) = std::env::var(CRASH_CHILD) {
        write_checkpoints_until_killed(&path);
    }
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("wgnn-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.ckpt");
    let tmp = dir.join("run.ckpt.tmp");
    let (mut net, mut opt) = crash_model();
    let mut random = 0x2545_f491_4f6c_dd1du64;
    let (mut kills, mut cut_short, mut loaded, mut seen) = (0, 0, 0, std::collections::BTreeSet::new());
    while kills < 200 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--test-threads=1"])
            .env(CRASH_CHILD, &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // xorshift64: delays from 0 to 120 ms, over the child's start and many writes.
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        std::thread::sleep(std::time::Duration::from_micros(random % 120_000));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "the child ended by itself: {status}");
        kills += 1;
        cut_short += tmp.exists() as usize;
        if !path.exists() {
            assert!(seen.is_empty(), "kill {kills}: the checkpoint is gone");
            continue;
        }
        wgnn::io::load_checkpoint(&mut net, &mut opt, &path)
            .unwrap_or_else(|e| panic!("kill {kills}: the checkpoint does not load: {e}"));
        let step = opt.state().unwrap().steps;
        for (k, p) in net.parameters().iter().enumerate() {
            assert!(
                p.to_vec().unwrap() == crash_values(step, k, p.numel()),
                "kill {kills}: parameter {k} is not what step {step} wrote"
            );
        }
        seen.insert(step);
        loaded += 1;
    }
    eprintln!(
        "{kills} kills; after {loaded} of them a checkpoint was there and loaded, after {cut_short} a temporary file was left (a write was cut short); checkpoints of {} distinct steps, up to step {:?}",
        seen.len(),
        seen.last()
    );
    assert!(seen.len() > 10, "too few writes completed to test anything: {seen:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn a_profiled_training_step_times_each_launch_and_changes_no_result(shared: &Device) {
    let _serial = serial();
    let (train, _) = mnist_subset();
    // Three Adam steps of the 784-128-10 MLP at batch 32, on a device of its own;
    // the losses' bits and the launches of the last step.
    let run = |profile: bool| {
        let dev = common::private(shared);
        dev.set_profile(profile);
        wgnn::manual_seed(0);
        let model = mlp(&dev);
        let mut opt = Adam::new(model.parameters(), AdamConfig::default());
        let mut losses = Vec::new();
        let mut launches = 0;
        for i in 0..3 {
            let rows: Vec<usize> = (i * 32..i * 32 + 32).collect();
            let (x, y) = batch(&train, &rows, &dev);
            let loss = nn::loss::cross_entropy(&model.forward(&x), &y);
            let before = dev.stats();
            opt.step(&loss.backward().unwrap()).unwrap();
            launches = (dev.stats() - before).dispatches;
            losses.push(loss.item().unwrap().to_bits());
        }
        (losses, launches, dev)
    };
    let (plain, launches, _) = run(false);
    let (profiled, profiled_launches, dev) = run(true);
    assert_eq!(plain, profiled, "{dev}: profiling changed the losses");
    assert_eq!(launches, profiled_launches, "{dev}");
    let report = dev.profile_report();
    eprintln!("{report}");
    let step = report
        .plans
        .iter()
        .find(|p| p.runs == 3)
        .unwrap_or_else(|| panic!("{dev}: no plan ran three times:\n{report}"));
    let dispatches: u64 = step.launches.iter().map(|l| l.dispatches).sum();
    assert_eq!(dispatches, launches, "{dev}: one entry per launch, with its dispatches");
    let expected_clock = match dev.kind() {
        wgnn::DeviceKind::Cpu => vec![wgnn::Clock::CpuWall],
        wgnn::DeviceKind::Gpu => vec![wgnn::Clock::GpuTimestamps, wgnn::Clock::HostPerLaunch],
    };
    assert!(expected_clock.contains(&step.clock), "{dev}: {:?}", step.clock);
    assert!(step.launches.iter().all(|l| l.seconds >= 0.0 && l.seconds.is_finite()));
    assert!(step.seconds_per_run() > 0.0, "{dev}: no time measured");
    let shares: f64 = step.launches.iter().map(|l| l.share).sum();
    assert!((shares - 1.0).abs() < 1e-9, "{dev}: shares sum to {shares}");
    // The first layer's forward GEMM: 32×784 by 784×128, 2·m·n·k flops, and the
    // bytes of its operands, bias and result.
    let first = step
        .launches
        .iter()
        .find(|l| l.kernel == "matmul" && l.op == "matmul" && l.shape == [32, 128] && !l.location.starts_with("grad"))
        .unwrap_or_else(|| panic!("{dev}: no forward matmul [32, 128]:\n{report}"));
    assert_eq!(first.flops, 2 * 32 * 784 * 128, "{dev}");
    assert_eq!(first.bytes, 4 * (32 * 784 + 784 * 128 + 128 + 32 * 128), "{dev}");
    let updates = step.launches.iter().filter(|l| l.kernel == "adam").count();
    assert!(updates > 0, "{dev}: no optimizer launch");
    let table = report.to_string();
    assert!(
        table.contains("matmul (matmul)") && table.contains("GFLOP/s"),
        "{table}"
    );
}
