//! Sequence models and autoencoders. Recurrent layers against PyTorch: weights,
//! inputs, outputs, final states and gradients saved by
//! `tests/fixtures/make_sequence_fixture.py` must be matched to 1e-5 on every device;
//! truncated backpropagation through time; autoencoders trained with `fit` detect
//! malignant tumours from benign-only training. Bidirectional recurrent layers
//! (`sequence/bidirectional.rs`) and attention (`sequence/attention.rs`) against
//! PyTorch.

#[path = "sequence/attention.rs"]
mod attention;
#[path = "sequence/bidirectional.rs"]
mod bidirectional;
mod common;
#[path = "sequence/large_layers.rs"]
mod large_layers;
#[path = "sequence/transformer.rs"]
mod transformer;

use common::{fixture, private, read_tensor, serial};
use wgnn::nn::{
    self, Autoencoder, Embedding, Gru, Linear, Lstm, LstmState, Module, Nonlinearity, Rnn, RnnConfig, Sequential,
};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::train::{FitConfig, Loss};
use wgnn::{Device, Tensor};

device_tests!(
    a_two_layer_batch_first_lstm_with_a_state_matches_pytorch,
    a_one_layer_lstm_from_zeros_matches_pytorch,
    an_embedding_matches_pytorch_with_repeated_ids,
    truncated_bptt_carries_the_state_but_not_its_gradient,
    an_lstm_training_step_is_one_submit_with_no_readback,
    a_two_layer_gru_with_a_state_matches_pytorch,
    a_batch_first_tanh_rnn_from_zeros_matches_pytorch,
    a_relu_rnn_without_bias_matches_pytorch,
    an_autoencoder_trained_on_benign_rows_flags_malignant_ones,
    recurrent_layers_pass_finite_difference_gradient_checks,
    recurrent_layers_above_every_threshold_match_pytorch,
);

use large_layers::recurrent_layers_above_every_threshold_match_pytorch;

fn load(name: &str, dev: &Device) -> Tensor {
    let (shape, data) = read_tensor(&fixture("sequence.safetensors"), name);
    Tensor::from_vec(data, &shape, dev).unwrap()
}

fn values(name: &str) -> Vec<f32> {
    read_tensor(&fixture("sequence.safetensors"), name).1
}

#[track_caller]
fn assert_close(got: &Tensor, want: &str) {
    let (got, want_v) = (got.to_vec().unwrap(), values(want));
    assert_eq!(got.len(), want_v.len(), "{want}: length");
    let worst = got.iter().zip(&want_v).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(worst <= 1e-5, "{want}: differs from PyTorch by {worst}");
}

/// Runs case `prefix` of the fixture: loads the weights into `lstm`, checks outputs,
/// states and every gradient.
fn check_lstm_case(prefix: &str, lstm: &Lstm, with_state: bool, dev: &Device) {
    load_weights(prefix, lstm);
    let leaf = |n: &str| load(&format!("{prefix}.{n}"), dev).requires_grad().unwrap();
    let x = leaf("input");
    let state = with_state.then(|| LstmState {
        h: leaf("h0"),
        c: leaf("c0"),
    });
    let (out, last) = lstm.forward_seq(&x, state.as_ref());
    assert_close(&out, &format!("{prefix}.out"));
    assert_close(&last.h, &format!("{prefix}.h_n"));
    assert_close(&last.c, &format!("{prefix}.c_n"));
    let w = |n: &str| load(&format!("{prefix}.{n}"), dev);
    let loss = (&out * &w("w_out")).sum() + (&last.h * &w("w_h")).sum() + (&last.c * &w("w_c")).sum();
    let grads = loss.backward().unwrap();
    for (name, p) in lstm.named_parameters() {
        assert_close(grads.get(&p).unwrap(), &format!("{prefix}.grad.{name}"));
    }
    assert_close(grads.get(&x).unwrap(), &format!("{prefix}.grad.input"));
    if let Some(s) = &state {
        assert_close(grads.get(&s.h).unwrap(), &format!("{prefix}.grad.h0"));
        assert_close(grads.get(&s.c).unwrap(), &format!("{prefix}.grad.c0"));
    }
}

/// Loads the fixture's weights into `module` (checking PyTorch's names and shapes).
fn load_weights(prefix: &str, module: &dyn Module) {
    for (name, p) in module.named_parameters() {
        let want = read_tensor(&fixture("sequence.safetensors"), &format!("{prefix}.{name}"));
        assert_eq!(p.shape(), &want.0[..], "{name}: PyTorch's shape");
        p.assign(&want.1).unwrap();
    }
}

/// A GRU's or RNN's `forward_seq`.
type RunSeq<'a> = &'a dyn Fn(&Tensor, Option<&Tensor>) -> (Tensor, Tensor);

/// Case `prefix` of a GRU or RNN (one state tensor): outputs, final state, every
/// gradient.
fn check_single_state_case(prefix: &str, module: &dyn Module, run: RunSeq, with_state: bool, dev: &Device) {
    load_weights(prefix, module);
    let leaf = |n: &str| load(&format!("{prefix}.{n}"), dev).requires_grad().unwrap();
    let x = leaf("input");
    let h0 = with_state.then(|| leaf("h0"));
    let (out, h_n) = run(&x, h0.as_ref());
    assert_close(&out, &format!("{prefix}.out"));
    assert_close(&h_n, &format!("{prefix}.h_n"));
    let w = |n: &str| load(&format!("{prefix}.{n}"), dev);
    let loss = (&out * &w("w_out")).sum() + (&h_n * &w("w_h")).sum();
    let grads = loss.backward().unwrap();
    for (name, p) in module.named_parameters() {
        assert_close(grads.get(&p).unwrap(), &format!("{prefix}.grad.{name}"));
    }
    assert_close(grads.get(&x).unwrap(), &format!("{prefix}.grad.input"));
    if let Some(h0) = &h0 {
        assert_close(grads.get(h0).unwrap(), &format!("{prefix}.grad.h0"));
    }
}

fn a_two_layer_gru_with_a_state_matches_pytorch(dev: &Device) {
    let cfg = RnnConfig {
        num_layers: 2,
        ..Default::default()
    };
    let gru = Gru::new(3, 4, cfg, dev);
    check_single_state_case("g", &gru, &|x, h| gru.forward_seq(x, h), true, dev);
}

fn a_batch_first_tanh_rnn_from_zeros_matches_pytorch(dev: &Device) {
    let cfg = RnnConfig {
        batch_first: true,
        ..Default::default()
    };
    let rnn = Rnn::new(3, 4, cfg, dev);
    check_single_state_case("r", &rnn, &|x, h| rnn.forward_seq(x, h), false, dev);
}

fn a_relu_rnn_without_bias_matches_pytorch(dev: &Device) {
    let cfg = RnnConfig {
        bias: false,
        ..Default::default()
    };
    let rnn = Rnn::try_with(3, 4, Nonlinearity::Relu, cfg, dev).unwrap();
    assert_eq!(rnn.named_parameters().len(), 2, "no bias_ih_l0, bias_hh_l0");
    check_single_state_case("q", &rnn, &|x, h| rnn.forward_seq(x, h), true, dev);
}

fn a_two_layer_batch_first_lstm_with_a_state_matches_pytorch(dev: &Device) {
    let cfg = RnnConfig {
        num_layers: 2,
        batch_first: true,
        ..Default::default()
    };
    let lstm = Lstm::new(3, 5, cfg, dev);
    let names: Vec<String> = lstm.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "weight_ih_l0",
            "weight_hh_l0",
            "bias_ih_l0",
            "bias_hh_l0",
            "weight_ih_l1",
            "weight_hh_l1",
            "bias_ih_l1",
            "bias_hh_l1"
        ]
    );
    check_lstm_case("a", &lstm, true, dev);
}

fn a_one_layer_lstm_from_zeros_matches_pytorch(dev: &Device) {
    let lstm = Lstm::new(4, 3, RnnConfig::default(), dev);
    check_lstm_case("b", &lstm, false, dev);
}

fn an_embedding_matches_pytorch_with_repeated_ids(dev: &Device) {
    let emb = Embedding::new(7, 4, dev);
    emb.weight.assign(&values("e.weight")).unwrap();
    let ids: Vec<u32> = values("e.ids").iter().map(|&v| v as u32).collect();
    let ids = Tensor::from_labels(&ids, dev).unwrap().reshape(&[2, 3]);
    let out = emb.forward(&ids);
    assert_eq!(out.shape(), &[2, 3, 4]);
    assert_close(&out, "e.out");
    let g = (&out * &load("e.w_out", dev)).sum().backward().unwrap();
    assert_close(g.get(&emb.weight).unwrap(), "e.grad.weight");
}

fn truncated_bptt_carries_the_state_but_not_its_gradient(dev: &Device) {
    let _serial = serial();
    wgnn::manual_seed(3);
    let lstm = Lstm::new(2, 4, RnnConfig::default(), dev);
    let x = Tensor::randn(&[6, 3, 2], 11, dev).unwrap();
    // The whole sequence at once, and in two chunks carrying the (detached) state.
    let (whole, _) = lstm.forward_seq(&x, None);
    let x1 = x.narrow(0, 0, 3).requires_grad_copy();
    let (first, state) = lstm.forward_seq(&x1, None);
    let x2 = x.narrow(0, 3, 3);
    let (second, _) = lstm.forward_seq(&x2, Some(&state.detach()));
    let joined = Tensor::cat(&[&first, &second], 0).to_vec().unwrap();
    let whole = whole.to_vec().unwrap();
    let worst = joined
        .iter()
        .zip(&whole)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-6, "chunked run differs from the whole by {worst}");
    // The second chunk's loss reaches the weights but not the first chunk's input;
    // without the detach it would.
    let grads = second.sum().backward().unwrap();
    assert!(grads.get(&lstm.parameters()[0]).is_some());
    assert!(grads.get(&x1).is_none(), "the gradient crossed a detached state");
    let (attached, _) = lstm.forward_seq(&x2, Some(&state));
    assert!(attached.sum().backward().unwrap().get(&x1).is_some());
    // A computed state detaches to a tensor with no link to the graph that made it,
    // so carrying it step after step keeps no history alive.
    state.h.realize().unwrap();
    assert!(format!("{:?}", state.h.detach()).starts_with("Tensor(leaf"));
    assert_eq!(state.h.detach().to_vec().unwrap(), state.h.to_vec().unwrap());
}

fn an_lstm_training_step_is_one_submit_with_no_readback(shared: &Device) {
    let dev = &private(shared);
    let _serial = serial();
    wgnn::manual_seed(5);
    let cfg = RnnConfig {
        num_layers: 2,
        batch_first: true,
        dropout: 0.2,
        ..Default::default()
    };
    let (lstm, head) = (Lstm::new(3, 8, cfg, dev), Linear::new(8, 1, dev));
    let mut params = lstm.parameters();
    params.extend(head.parameters());
    let mut opt = Adam::new(params, AdamConfig::default());
    let x = Tensor::randn(&[4, 7, 3], 1, dev).unwrap();
    let y = Tensor::randn(&[4, 1], 2, dev).unwrap();
    let step = |opt: &mut Adam| {
        let (out, _) = lstm.forward_seq(&x, None);
        let last = out.select(1, 6);
        let loss = nn::loss::mse(&head.forward(&last), &y);
        opt.step(&loss.backward().unwrap().clip_norm(1.0)).unwrap();
        loss
    };
    let first = step(&mut opt).item().unwrap();
    step(&mut opt);
    let before = dev.stats();
    let loss = step(&mut opt);
    let after = dev.stats();
    assert_eq!(after.submits - before.submits, 1, "one plan, one submit");
    assert_eq!(after.bytes_downloaded, before.bytes_downloaded, "no readback");
    assert_eq!(after.plan_cache_misses, before.plan_cache_misses, "the plan is reused");
    assert!(loss.item().unwrap() < first, "the loss went down");
}

trait RequiresGradCopy {
    fn requires_grad_copy(&self) -> Tensor;
}

impl RequiresGradCopy for Tensor {
    /// A trainable leaf holding this tensor's values.
    fn requires_grad_copy(&self) -> Tensor {
        Tensor::from_vec(self.to_vec().unwrap(), self.shape(), self.device())
            .unwrap()
            .requires_grad()
            .unwrap()
    }
}

fn an_autoencoder_trained_on_benign_rows_flags_malignant_ones(dev: &Device) {
    let _serial = serial();
    wgnn::manual_seed(7);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/breast_cancer.csv");
    let all = wgnn::data::load_csv_labelled(path, 1).unwrap();
    // Label 1 is benign: train on 250 benign rows, score the other benign and every
    // malignant row.
    let order = wgnn::data::permutation(all.n, 3);
    let benign: Vec<usize> = order.iter().copied().filter(|&i| all.labels[i] == 1).collect();
    let (mut train, mut rest) = (all.select(&benign[..250]), all.select(&benign[250..]));
    let malignant: Vec<usize> = order.iter().copied().filter(|&i| all.labels[i] == 0).collect();
    let mut sick = all.select(&malignant);
    wgnn::data::standardize(&mut train, &mut [&mut rest, &mut sick]);
    let encoder = Sequential::new().add(Linear::new(30, 8, dev)).add(nn::Tanh);
    let decoder = Sequential::new().add(Linear::new(8, 30, dev));
    let ae = Autoencoder::new(encoder, decoder);
    let names: Vec<String> = ae.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "encoder.0.weight",
            "encoder.0.bias",
            "decoder.0.weight",
            "decoder.0.bias"
        ]
    );
    let opt = wgnn::optim::Adam::new(
        ae.parameters(),
        AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
    );
    let mut model = ae.compile(opt, Loss::Mse).unwrap();
    let (x, _) = train.tensors(dev).unwrap();
    let cfg = FitConfig {
        epochs: 60,
        batch_size: 32,
        verbose: false,
        ..Default::default()
    };
    let history = model.fit(&x, &x, cfg).unwrap();
    let losses = &history.history["loss"];
    assert!(
        losses.last().unwrap() < &(losses[0] * 0.5),
        "the reconstruction improved: {losses:?}"
    );
    // The original shares the trained weights.
    let errors = |d: &wgnn::data::Dataset| ae.reconstruction_error(&d.tensors(dev).unwrap().0).unwrap();
    let (normal, anomalous) = (errors(&rest), errors(&sick));
    let scores: Vec<f32> = normal.iter().chain(&anomalous).copied().collect();
    let truth: Vec<u32> = normal.iter().map(|_| 0).chain(anomalous.iter().map(|_| 1)).collect();
    let auc = wgnn::metrics::roc_auc(&scores, &truth).unwrap();
    assert!(auc > 0.9, "ROC-AUC {auc}");
    // A threshold at the 95th percentile of the training errors flags few normal rows.
    let threshold = Autoencoder::percentile_threshold(&errors(&train), 95.0).unwrap();
    let false_alarms = normal.iter().filter(|&&e| e > threshold).count() as f64 / normal.len() as f64;
    let caught = anomalous.iter().filter(|&&e| e > threshold).count() as f64 / anomalous.len() as f64;
    assert!(
        false_alarms < 0.2 && caught > 0.6,
        "false alarms {false_alarms}, caught {caught}"
    );
}

#[test]
fn thresholds_follow_numpy_percentiles_and_meet_the_false_positive_rate() {
    let errors = [4.0, 1.0, 3.0, 2.0, 10.0];
    // numpy.percentile([4, 1, 3, 2, 10], q): 0 -> 1, 50 -> 3, 90 -> 7.6, 100 -> 10
    for (q, want) in [(0.0, 1.0), (50.0, 3.0), (90.0, 7.6), (100.0, 10.0)] {
        let got = Autoencoder::percentile_threshold(&errors, q).unwrap();
        assert!((got - want).abs() < 1e-5, "q = {q}: {got}");
    }
    // At most 20 % of these five flagged (above the threshold): one.
    let t = Autoencoder::threshold_for_false_positive_rate(&errors, 0.2).unwrap();
    assert_eq!(errors.iter().filter(|&&e| e > t).count(), 1);
    let t = Autoencoder::threshold_for_false_positive_rate(&errors, 0.0).unwrap();
    assert_eq!(t, 10.0);
    assert!(Autoencoder::percentile_threshold(&[], 50.0).is_err());
    assert!(Autoencoder::percentile_threshold(&[1.0, f32::NAN], 50.0).is_err());
    assert!(Autoencoder::threshold_for_false_positive_rate(&errors, 1.5).is_err());
}

/// Central differences of a readout of `f(x)` against its analytic gradient, on a
/// few coordinates of the input and of every parameter.
fn gradcheck_module(what: &str, params: &[Tensor], x_shape: &[usize], f: &dyn Fn(&Tensor) -> Tensor, dev: &Device) {
    let x_data = wgnn::rng::normal(21, x_shape.iter().product());
    let x = Tensor::from_vec(x_data.clone(), x_shape, dev)
        .unwrap()
        .requires_grad()
        .unwrap();
    let out = f(&x);
    let w = wgnn::rng::normal(22, out.numel());
    let wt = Tensor::from_vec(w.clone(), out.shape(), dev).unwrap();
    let grads = (&out * &wt).sum().backward().unwrap();
    let readout = |x: &Tensor| -> f64 {
        let out = f(x).to_vec().unwrap();
        out.iter().zip(&w).map(|(&o, &w)| o as f64 * w as f64).sum()
    };
    let eps = 1e-3f32;
    let check = |name: &str, analytic: Vec<f32>, n: usize, perturb: &mut dyn FnMut(usize, f32) -> f64| {
        for k in 0..n.min(6) {
            let i = (k * 7919) % n;
            let numeric = (perturb(i, eps) - perturb(i, -eps)) / (2.0 * eps as f64);
            let a = analytic[i] as f64;
            let err = (numeric - a).abs() / numeric.abs().max(a.abs()).max(1.0);
            assert!(err < 2e-2, "{what} {name}[{i}]: analytic {a}, numeric {numeric}");
        }
    };
    let gx = grads.get(&x).unwrap().to_vec().unwrap();
    check("input", gx, x_data.len(), &mut |i, d| {
        let mut v = x_data.clone();
        v[i] += d;
        readout(&Tensor::from_vec(v, x_shape, dev).unwrap())
    });
    for (p_i, p) in params.iter().enumerate() {
        let base = p.to_vec().unwrap();
        let gp = grads.get(p).unwrap().to_vec().unwrap();
        check(&format!("parameter {p_i}"), gp, base.len(), &mut |i, d| {
            let mut v = base.clone();
            v[i] += d;
            p.assign(&v).unwrap();
            let r = readout(&Tensor::from_vec(x_data.clone(), x_shape, dev).unwrap());
            p.assign(&base).unwrap();
            r
        });
    }
}

fn recurrent_layers_pass_finite_difference_gradient_checks(dev: &Device) {
    let _serial = serial();
    wgnn::manual_seed(9);
    let two = RnnConfig {
        num_layers: 2,
        batch_first: true,
        ..Default::default()
    };
    let lstm = Lstm::new(3, 4, two, dev);
    let state = LstmState {
        h: Tensor::randn(&[2, 2, 4], 5, dev).unwrap(),
        c: Tensor::randn(&[2, 2, 4], 6, dev).unwrap(),
    };
    gradcheck_module(
        "lstm",
        &lstm.parameters(),
        &[2, 5, 3],
        &|x| {
            let (out, s) = lstm.forward_seq(x, Some(&state));
            Tensor::cat(&[&out.reshape(&[40]), &s.c.reshape(&[16])], 0)
        },
        dev,
    );
    let gru = Gru::new(
        3,
        4,
        RnnConfig {
            num_layers: 2,
            ..Default::default()
        },
        dev,
    );
    gradcheck_module(
        "gru",
        &gru.parameters(),
        &[5, 2, 3],
        &|x| gru.forward_seq(x, None).0,
        dev,
    );
    let tanh = Rnn::new(3, 4, RnnConfig::default(), dev);
    let h0 = Tensor::randn(&[1, 2, 4], 7, dev).unwrap();
    gradcheck_module(
        "rnn tanh",
        &tanh.parameters(),
        &[5, 2, 3],
        &|x| tanh.forward_seq(x, Some(&h0)).1,
        dev,
    );
    let relu = Rnn::try_with(3, 4, Nonlinearity::Relu, two, dev).unwrap();
    gradcheck_module("rnn relu", &relu.parameters(), &[2, 5, 3], &|x| relu.forward(x), dev);
}
