//! Bidirectional `Lstm`, `Gru` and `Rnn` against PyTorch's `bidirectional=True`
//! (`make_bidirectional_fixture.py`): 2-layer LSTMs and GRUs and 1-layer tanh RNNs,
//! with and without an initial state, `batch_first` both ways — outputs `[.., 2H]`,
//! final states `[2·layers, B, H]`, and the gradients of the input, the initial state
//! and every parameter to 1e-5; and the `state_dict` names (`…_reverse`) in PyTorch's
//! order, as a saved file holds them.

use crate::common::{fixture, read_tensor};
use wgnn::nn::{Gru, Lstm, LstmState, Module, Rnn, RnnConfig, TensorSpec};
use wgnn::{Device, Tensor};

crate::device_tests!(
    bidirectional_lstms_match_pytorch,
    bidirectional_grus_match_pytorch,
    bidirectional_tanh_rnns_match_pytorch,
);

const FILE: &str = "bidirectional.safetensors";

fn load(name: &str, dev: &Device) -> Tensor {
    let (shape, data) = read_tensor(&fixture(FILE), name);
    Tensor::from_vec(data, &shape, dev).unwrap()
}

#[track_caller]
fn close(got: &Tensor, name: &str, dev: &Device) {
    let (shape, want) = read_tensor(&fixture(FILE), name);
    assert_eq!(got.shape(), &shape[..], "{dev}: {name}: PyTorch's shape");
    let got = got.to_vec().unwrap();
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "{dev}: {name} is {worst:e} from PyTorch's");
}

/// PyTorch's `state_dict()` keys of case `prefix`, in order (the fixture's metadata).
fn pytorch_keys(prefix: &str) -> Vec<String> {
    let bytes = std::fs::read(fixture(FILE)).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + len]).unwrap();
    let key = format!("\"{prefix}.keys\":\"");
    let rest = &header[header.find(&key).unwrap_or_else(|| panic!("no {key} in {FILE}")) + key.len()..];
    rest[..rest.find('"').unwrap()].split(',').map(String::from).collect()
}

/// The module's parameter names are PyTorch's, in PyTorch's order; a file saved here
/// holds exactly those tensors; then the fixture's weights go in by name.
fn load_weights(prefix: &str, module: &dyn Module) {
    let names: Vec<String> = module.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, pytorch_keys(prefix), "{prefix}: PyTorch's state_dict keys");
    for (name, p) in module.named_parameters() {
        let (shape, data) = read_tensor(&fixture(FILE), &format!("{prefix}.{name}"));
        assert_eq!(p.shape(), &shape[..], "{prefix}.{name}: PyTorch's shape");
        p.assign(&data).unwrap();
    }
}

fn config(layers: usize, batch_first: bool) -> RnnConfig {
    RnnConfig {
        num_layers: layers,
        batch_first,
        bidirectional: true,
        ..Default::default()
    }
}

/// A stack's `forward_seq` from the input and the initial states (none, h0, or h0
/// and c0) to the output and the final states (h_n, and c_n for an LSTM).
type RunStack<'a> = &'a dyn Fn(&Tensor, &[Tensor]) -> (Tensor, Vec<Tensor>);

/// Case `prefix`: every output, final state and gradient to 1e-5. `run` maps the
/// input and the initial states (h0, and c0 for an LSTM) to the output and the final
/// states.
fn check_case(prefix: &str, module: &dyn Module, with_state: bool, lstm: bool, run: RunStack, dev: &Device) {
    load_weights(prefix, module);
    let leaf = |n: &str| load(&format!("{prefix}.{n}"), dev).requires_grad().unwrap();
    let x = leaf("input");
    let state_names: &[&str] = match (with_state, lstm) {
        (false, _) => &[],
        (true, false) => &["h0"],
        (true, true) => &["h0", "c0"],
    };
    let states: Vec<Tensor> = state_names.iter().map(|n| leaf(n)).collect();
    let (out, finals) = run(&x, &states);
    let said = module.output_spec(&TensorSpec::of(&x)).unwrap();
    assert_eq!(said, Some(TensorSpec::of(&out)), "{prefix}: output_spec");
    close(&out, &format!("{prefix}.out"), dev);
    let final_names: &[(&str, &str)] = if lstm {
        &[("h_n", "w_h"), ("c_n", "w_c")]
    } else {
        &[("h_n", "w_h")]
    };
    let mut loss = (&out * &load(&format!("{prefix}.w_out"), dev)).sum();
    for (f, (name, w)) in finals.iter().zip(final_names) {
        close(f, &format!("{prefix}.{name}"), dev);
        loss = &loss + &(f * &load(&format!("{prefix}.{w}"), dev)).sum();
    }
    let grads = loss.backward().unwrap();
    for (name, p) in module.named_parameters() {
        close(grads.get(&p).unwrap(), &format!("{prefix}.grad.{name}"), dev);
    }
    close(grads.get(&x).unwrap(), &format!("{prefix}.grad.input"), dev);
    for (s, name) in states.iter().zip(state_names) {
        close(grads.get(s).unwrap(), &format!("{prefix}.grad.{name}"), dev);
    }
}

fn bidirectional_lstms_match_pytorch(dev: &Device) {
    for (prefix, batch_first, with_state) in [("lstm_s", true, true), ("lstm_z", false, false)] {
        let lstm = Lstm::new(3, 4, config(2, batch_first), dev);
        let run = |x: &Tensor, s: &[Tensor]| {
            let state = (!s.is_empty()).then(|| LstmState {
                h: s[0].clone(),
                c: s[1].clone(),
            });
            let (out, last) = lstm.forward_seq(x, state.as_ref());
            (out, vec![last.h, last.c])
        };
        check_case(prefix, &lstm, with_state, true, &run, dev);
    }
}

fn bidirectional_grus_match_pytorch(dev: &Device) {
    for (prefix, batch_first, with_state) in [("gru_s", false, true), ("gru_z", true, false)] {
        let gru = Gru::new(3, 4, config(2, batch_first), dev);
        let run = |x: &Tensor, s: &[Tensor]| {
            let (out, h) = gru.forward_seq(x, s.first());
            (out, vec![h])
        };
        check_case(prefix, &gru, with_state, false, &run, dev);
    }
}

fn bidirectional_tanh_rnns_match_pytorch(dev: &Device) {
    for (prefix, batch_first, with_state) in [("rnn_s", true, true), ("rnn_z", false, false)] {
        let rnn = Rnn::new(3, 5, config(1, batch_first), dev);
        let run = |x: &Tensor, s: &[Tensor]| {
            let (out, h) = rnn.forward_seq(x, s.first());
            (out, vec![h])
        };
        check_case(prefix, &rnn, with_state, false, &run, dev);
    }
}

/// A bidirectional stack saved here holds exactly PyTorch's `state_dict()` keys
/// (`make_bidirectional_fixture.py --check` loads such files into PyTorch with
/// `strict=True`), reads back into a fresh stack, and names itself as PyTorch does.
#[test]
fn a_bidirectional_state_dict_has_pytorchs_names() {
    let dev = Device::cpu();
    let lstm = Lstm::new(3, 4, config(2, true), &dev);
    let names: Vec<String> = lstm.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "weight_ih_l0",
            "weight_hh_l0",
            "bias_ih_l0",
            "bias_hh_l0",
            "weight_ih_l0_reverse",
            "weight_hh_l0_reverse",
            "bias_ih_l0_reverse",
            "bias_hh_l0_reverse",
            "weight_ih_l1",
            "weight_hh_l1",
            "bias_ih_l1",
            "bias_hh_l1",
            "weight_ih_l1_reverse",
            "weight_hh_l1_reverse",
            "bias_ih_l1_reverse",
            "bias_hh_l1_reverse",
        ]
    );
    assert_eq!(
        lstm.named_parameters()[8].1.shape(),
        &[16, 8],
        "layer 1 reads 2H features"
    );
    assert_eq!(lstm.name(), "LSTM(3, 4, num_layers=2, bidirectional=True)");
    let dir = std::env::temp_dir().join(format!("wgnn-bidirectional-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: [(&str, Box<dyn Module>); 3] = [
        ("lstm_s", Box::new(lstm)),
        ("gru_z", Box::new(Gru::new(3, 4, config(2, true), &dev))),
        ("rnn_z", Box::new(Rnn::new(3, 5, config(1, false), &dev))),
    ];
    for (prefix, module) in cases {
        let path = dir.join(format!("{prefix}.safetensors"));
        wgnn::io::save_safetensors(module.as_ref(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&bytes[8..8 + len]).unwrap();
        let keys = pytorch_keys(prefix);
        assert_eq!(
            header.matches("\"data_offsets\"").count(),
            keys.len(),
            "{prefix}: {header}"
        );
        for key in &keys {
            assert!(
                header.contains(&format!("\"{key}\":")),
                "{prefix}: {key} is not saved: {header}"
            );
        }
        let mut fresh: Box<dyn Module> = match prefix {
            "lstm_s" => Box::new(Lstm::new(3, 4, config(2, true), &dev)),
            "gru_z" => Box::new(Gru::new(3, 4, config(2, true), &dev)),
            _ => Box::new(Rnn::new(3, 5, config(1, false), &dev)),
        };
        wgnn::io::load_safetensors(fresh.as_mut(), &path).unwrap();
        for ((_, a), (_, b)) in module.named_parameters().iter().zip(fresh.named_parameters()) {
            assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
