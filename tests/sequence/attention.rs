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
    fused_attention_matches_the_composed_one,
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
/// of their gradients), and the fused attention's slices, dealt out whole to two
/// threads, or to four, give the same bits as one thread, above the 4 MFLOP
/// threshold (taken automatically) and below it.
#[test]
fn attention_with_its_batched_products_split_over_threads_gives_the_same_bits() {
    use wgnn::fast_path::{self, FastPath};
    let dev = Device::cpu_private();
    // [b, heads, t, d]: 16 products of 2·128·128·32 flops (16.8 MFLOP), and 2 tiny ones.
    for ((shape, above), fused) in [([2usize, 8, 128, 32], true), ([1, 2, 8, 4], false)]
        .into_iter()
        .flat_map(|case| [(case, false), (case, true)])
    {
        let _fused = fast_path::force(FastPath::FusedAttention, fused);
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

/// The fused attention (one op, online softmax, weights recomputed in the backward)
/// against the composed one (products, softmax) on the CPU: outputs and the
/// gradients of q, k and v, on each device, for causal masks with fewer queries than
/// keys, float masks that broadcast ([Tq, Tk], a padding mask [B, 1, 1, Tk] with
/// −∞), value heads of another size than the keys', rank 3 and rank 4 — and the
/// fused op is the one that ran.
fn fused_attention_matches_the_composed_one(dev: &Device) {
    use wgnn::fast_path::{self, FastPath};
    let cpu = Device::cpu();
    // (q shape, k shape, v shape, causal, mask shape)
    type Case = (Vec<usize>, Vec<usize>, Vec<usize>, bool, Option<Vec<usize>>);
    let cases: Vec<Case> = vec![
        (vec![2, 3, 7, 8], vec![2, 3, 7, 8], vec![2, 3, 7, 8], false, None),
        (vec![2, 3, 5, 8], vec![2, 3, 9, 8], vec![2, 3, 9, 4], true, None),
        (vec![3, 6, 4], vec![3, 11, 4], vec![3, 11, 6], false, Some(vec![6, 11])),
        (
            vec![2, 2, 6, 4],
            vec![2, 2, 6, 4],
            vec![2, 2, 6, 4],
            true,
            Some(vec![2, 1, 1, 6]),
        ),
        (vec![1, 70, 16], vec![1, 70, 16], vec![1, 70, 16], true, None),
    ];
    for (n, (qs, ks, vs, causal, ms)) in cases.into_iter().enumerate() {
        let data = |shape: &[usize], seed: u64| Tensor::randn(shape, seed, &cpu).unwrap().to_vec().unwrap();
        let (qd, kd, vd) = (data(&qs, 1 + n as u64), data(&ks, 2), data(&vs, 3));
        // A padding mask hides the last two keys of the second batch entry.
        let md = ms.as_ref().map(|m| {
            let mut d = data(m, 4);
            if m.len() == 4 {
                d.iter_mut().for_each(|x| *x = 0.0);
                d[m[3] * 2 - 1] = f32::NEG_INFINITY;
                d[m[3] * 2 - 2] = f32::NEG_INFINITY;
            }
            d
        });
        let run = |on: &Device, fused: bool| {
            let _forced = fast_path::force(FastPath::FusedAttention, fused);
            let leaf = |d: &[f32], s: &[usize]| Tensor::from_vec(d.to_vec(), s, on).unwrap().requires_grad().unwrap();
            let (q, k, v) = (leaf(&qd, &qs), leaf(&kd, &ks), leaf(&vd, &vs));
            let mask = md
                .as_ref()
                .map(|d| Tensor::from_vec(d.clone(), ms.as_ref().unwrap(), on).unwrap());
            let before = fast_path::taken(FastPath::FusedAttention);
            let y = nn::scaled_dot_product_attention(&q, &k, &v, mask.as_ref(), causal, 0.0);
            assert_eq!(
                fast_path::taken(FastPath::FusedAttention) > before,
                fused,
                "case {n}: fused {fused}"
            );
            let w = Tensor::randn(y.shape(), 5, on).unwrap();
            let grads = (&y * &w).sum().backward().unwrap();
            let mut all = vec![y.to_vec().unwrap()];
            all.extend([&q, &k, &v].map(|t| grads.get(t).unwrap().to_vec().unwrap()));
            all
        };
        let want = run(&cpu, false);
        let got = run(dev, true);
        for (what, (g, w)) in ["out", "dq", "dk", "dv"].iter().zip(got.iter().zip(&want)) {
            let worst = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 2e-5,
                "{dev}: case {n}: fused {what} is {worst:e} from the composed one"
            );
        }
    }
}
