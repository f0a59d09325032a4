//! Attention against PyTorch (`tests/fixtures/make_attention_fixture.py`):
//! `nn::MultiheadAttention` with PyTorch's weights loaded by name — self-attention,
//! causal and cross-attention — outputs and the gradients of the inputs and every
//! parameter; `scaled_dot_product_attention` with a float mask; finite differences.

use crate::common::{fixture, read_tensor};
use wgnn::nn::{self, MhaConfig, Module, MultiheadAttention};
use wgnn::{Device, Tensor};

crate::device_tests!(
    multihead_attention_matches_pytorch_self_causal_and_cross,
    scaled_dot_product_attention_with_a_float_mask_matches_pytorch,
    attention_passes_a_finite_difference_check,
);

fn load(name: &str, dev: &Device) -> Tensor {
    let (shape, data) = read_tensor(&fixture("attention.safetensors"), name);
    Tensor::from_vec(data, &shape, dev).unwrap()
}

fn close(got: &Tensor, name: &str, tol: f32, dev: &Device) {
    let (_, want) = read_tensor(&fixture("attention.safetensors"), name);
    let got = got.to_vec().unwrap();
    assert_eq!(got.len(), want.len(), "{dev}: {name}: length");
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(
        worst <= tol,
        "{dev}: {name} is {worst:e} from PyTorch's (tolerance {tol:e})"
    );
}

fn multihead_attention_matches_pytorch_self_causal_and_cross(dev: &Device) {
    let mut mha = MultiheadAttention::new(
        12,
        3,
        MhaConfig {
            batch_first: true,
            ..Default::default()
        },
        dev,
    );
    // One file per process and device: the cpu and gpu halves run in parallel.
    let path = std::env::temp_dir().join(format!("wgnn-mha-{}-{:?}.safetensors", std::process::id(), dev.kind()));
    {
        // The fixture's `mha.*` tensors, renamed to the layer's own keys.
        let names = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"];
        for (name, p) in names.iter().zip(mha.parameters()) {
            let (_, data) = read_tensor(&fixture("attention.safetensors"), &format!("mha.{name}"));
            p.assign(&data).unwrap();
        }
        let named: Vec<String> = mha.named_parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(named, names, "PyTorch's state_dict names");
        wgnn::io::save_safetensors(&mha, &path).unwrap();
        wgnn::io::load_safetensors(&mut mha, &path).unwrap();
        std::fs::remove_file(&path).ok();
    }
    let x = load("x", dev).requires_grad().unwrap();
    let (q, kv) = (
        load("q", dev).requires_grad().unwrap(),
        load("kv", dev).requires_grad().unwrap(),
    );
    for case in ["self", "causal", "cross"] {
        let out = match case {
            "self" => mha.forward(&x),
            "causal" => mha.attend(&x, &x, &x, true),
            _ => mha.attend(&q, &kv, &kv, false),
        };
        close(&out, &format!("{case}.out"), 1e-5, dev);
        let grads = (&out * &load(&format!("g.{case}"), dev)).sum().backward().unwrap();
        let (input, name) = if case == "cross" { (&q, "q") } else { (&x, "q") };
        close(grads.get(input).unwrap(), &format!("{case}.grad.{name}"), 1e-5, dev);
        if case == "cross" {
            close(grads.get(&kv).unwrap(), "cross.grad.kv", 1e-5, dev);
        }
        for (key, p) in mha.named_parameters() {
            close(grads.get(&p).unwrap(), &format!("{case}.grad.{key}"), 1e-5, dev);
        }
    }
}

fn scaled_dot_product_attention_with_a_float_mask_matches_pytorch(dev: &Device) {
    let (q, k, v, mask) = (
        load("sdpa.q", dev),
        load("sdpa.k", dev),
        load("sdpa.v", dev),
        load("sdpa.mask", dev),
    );
    let out = nn::scaled_dot_product_attention(&q, &k, &v, Some(&mask), false, 0.0);
    assert_eq!(out.shape(), &[2, 3, 4, 6]);
    close(&out, "sdpa.out", 1e-5, dev);
}

fn attention_passes_a_finite_difference_check(dev: &Device) {
    wgnn::manual_seed(3);
    let mha = MultiheadAttention::new(6, 2, MhaConfig::default(), dev); // [T, B, E]
    let data: Vec<f32> = (0..3 * 2 * 6).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0).collect();
    let x = Tensor::from_vec(data.clone(), &[3, 2, 6], dev)
        .unwrap()
        .requires_grad()
        .unwrap();
    let loss = |x: &Tensor| mha.attend(x, x, x, true).square().sum();
    let grad = loss(&x).backward().unwrap().get(&x).unwrap().to_vec().unwrap();
    let eps = 1e-2f32;
    for i in [0, 5, 13, 22, 35] {
        let at = |d: f32| {
            let mut moved = data.clone();
            moved[i] += d;
            loss(&Tensor::from_vec(moved, &[3, 2, 6], dev).unwrap()).item().unwrap()
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        let tol = 2e-2 * numeric.abs().max(1.0);
        assert!(
            (grad[i] - numeric).abs() <= tol,
            "{dev}: d/dx[{i}] = {} by autograd, {numeric} by differences",
            grad[i]
        );
    }
}

/// The CPU's batched products (attention's `[B, heads, T, T]` scores and the products
/// of their gradients) dealt out whole to two threads, or to four, give the same bits
/// as one thread, above the 4 MFLOP threshold (taken automatically) and below it.
#[test]
fn attention_with_its_batched_products_split_over_threads_gives_the_same_bits() {
    use wgnn::fast_path::{self, FastPath};
    let dev = Device::cpu_private();
    // [b, heads, t, d]: 16 products of 2·128·128·32 flops (16.8 MFLOP), and 2 tiny ones.
    for (shape, above) in [([2usize, 8, 128, 32], true), ([1, 2, 8, 4], false)] {
        let run = || {
            let leaf = |seed| Tensor::randn(&shape, seed, &dev).unwrap().requires_grad().unwrap();
            let (q, k, v) = (leaf(1), leaf(2), leaf(3));
            let y = nn::scaled_dot_product_attention(&q, &k, &v, None, true, 0.0);
            let grads = y.square().sum().backward().unwrap();
            let mut bits: Vec<u32> = y.to_vec().unwrap().iter().map(|x| x.to_bits()).collect();
            for t in [&q, &k, &v] {
                bits.extend(grads.get(t).unwrap().to_vec().unwrap().iter().map(|x| x.to_bits()));
            }
            bits
        };
        let before = fast_path::taken(FastPath::GemmSplit);
        let auto = run();
        assert_eq!(
            fast_path::taken(FastPath::GemmSplit) > before,
            above,
            "{shape:?}: the automatic split"
        );
        for (split, threads) in [(false, false), (true, false), (true, true)] {
            let _split = fast_path::force(FastPath::GemmSplit, split);
            let _threads = fast_path::force(FastPath::GemmThreads, threads);
            assert!(
                run() == auto,
                "{shape:?}: split {split}, threads {threads} changes the bits"
            );
        }
    }
}
