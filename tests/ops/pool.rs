//! Pooling and the parameter-free layers: CPU-vs-GPU parity and finite differences
//! on odd sizes, PyTorch's outputs and gradients (tests/fixtures/make_pool_fixture.py),
//! max pooling's ties going to the first index with the same bits on every device,
//! and the layers in `Sequential` and `#[derive(Module)]` structs.

use super::common::cases::*;
use super::common::{devices, fixture, max_rel_diff, read_tensor};
use super::{assert_parity, gradcheck};
use wgnn::nn::{
    self, AdaptiveAvgPool2d, AvgPool2d, Flatten, Gelu, Identity, Linear, MaxPool1d, MaxPool2d, Module, Sequential,
    Softmax, TensorSpec, Unflatten,
};
use wgnn::{Device, PoolWindow, Tensor};

crate::device_tests!(
    pooling_passes_a_finite_difference_gradient_check,
    pooling_matches_pytorch_forward_and_backward,
    pooling_with_ceil_mode_count_include_pad_false_and_non_square_windows_matches_pytorch,
    pooling_layers_with_pytorchs_options_give_the_ops_values_and_shapes,
    flatten_unflatten_gelu_and_softmax_layers_match_pytorch,
    pooling_layers_work_in_sequential_and_derived_modules_without_parameters,
    an_empty_batch_pools_to_an_empty_batch,
);

#[test]
fn pooling_matches_between_cpu_and_gpu() {
    assert_parity(&pool_cases(), POOL_TOL);
}

fn pooling_passes_a_finite_difference_gradient_check(dev: &Device) {
    for c in &pool_cases() {
        gradcheck(c, dev);
    }
}

/// A tensor of tests/fixtures/pool.safetensors.
fn pool_fixture(name: &str, dev: &Device) -> Tensor {
    let (shape, data) = read_tensor(&fixture("pool.safetensors"), name);
    Tensor::from_vec(data, &shape, dev).unwrap()
}

/// `f` applied to case `name`'s input: its output and the gradient of the weighted
/// readout against PyTorch's, to 1e-5.
#[track_caller]
fn assert_case_matches_pytorch(name: &str, dev: &Device, f: &dyn Fn(&Tensor) -> Tensor) {
    assert_file_case_matches_pytorch("pool.safetensors", name, dev, f);
}

/// As `assert_case_matches_pytorch`, for a case of fixture `file`.
#[track_caller]
fn assert_file_case_matches_pytorch(file: &str, name: &str, dev: &Device, f: &dyn Fn(&Tensor) -> Tensor) {
    let get = |what: &str| {
        let (shape, data) = read_tensor(&fixture(file), &format!("{name}.{what}"));
        Tensor::from_vec(data, &shape, dev).unwrap()
    };
    let x = get("x").requires_grad().unwrap();
    let out = f(&x);
    let grads = (&out * &get("w")).sum().backward().unwrap();
    for (got, what) in [(&out, "out"), (grads.get(&x).unwrap(), "grad")] {
        let (shape, want) = read_tensor(&fixture(file), &format!("{name}.{what}"));
        assert_eq!(got.shape(), &shape[..], "{name}.{what}: shape");
        let d = max_rel_diff(&got.to_vec().unwrap(), &want);
        assert!(d <= 1e-5, "{name}.{what}: differs from PyTorch by {d}");
    }
}

fn pooling_matches_pytorch_forward_and_backward(dev: &Device) {
    for (k, s, p) in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0)] {
        let name = format!("max2d.k{k}s{s}p{p}");
        assert_case_matches_pytorch(&name, dev, &|x| x.max_pool2d(k, s, p));
        let x = pool_fixture(&format!("{name}.x"), dev);
        let indices = x.max_pool2d_with_indices(k, s, p).1.to_labels().unwrap();
        let (_, want) = read_tensor(&fixture("pool.safetensors"), &format!("{name}.indices"));
        let want: Vec<u32> = want.iter().map(|&i| i as u32).collect();
        assert_eq!(indices, want, "{name}: indices");
        let name = format!("avg2d.k{k}s{s}p{p}");
        assert_case_matches_pytorch(&name, dev, &|x| x.avg_pool2d(k, s, p));
    }
    for (h, w) in [(3, 4), (1, 1), (4, 9), (9, 5)] {
        assert_case_matches_pytorch(&format!("adaptive.{h}x{w}"), dev, &|x| x.adaptive_avg_pool2d(h, w));
    }
    for (k, s, p) in [(3, 2, 1), (2, 1, 0), (4, 3, 2)] {
        assert_case_matches_pytorch(&format!("max1d.k{k}s{s}p{p}"), dev, &|x| x.max_pool1d(k, s, p));
    }
}

/// The cases of make_pool_fixture.py's `OPTION_CASES`: (name, op, kernel, stride,
/// padding, ceil_mode, count_include_pad); 1-D cases use the second entries.
type OptionCase = (
    &'static str,
    &'static str,
    [usize; 2],
    [usize; 2],
    [usize; 2],
    bool,
    bool,
);
const OPTION_CASES: [OptionCase; 15] = [
    ("max2d_ceil_k2s2p0", "max2d", [2, 2], [2, 2], [0, 0], true, true),
    ("max2d_ceil_k3s2p1", "max2d", [3, 3], [2, 2], [1, 1], true, true),
    ("max2d_ceil_k2s3p1", "max2d", [2, 2], [3, 3], [1, 1], true, true),
    ("max2d_k3x2_s2x1_p1x0", "max2d", [3, 2], [2, 1], [1, 0], false, true),
    ("max2d_ceil_k2x3_s3x2_p1x1", "max2d", [2, 3], [3, 2], [1, 1], true, true),
    ("avg2d_ceil_k2s2p0", "avg2d", [2, 2], [2, 2], [0, 0], true, true),
    ("avg2d_ceil_k3s2p1", "avg2d", [3, 3], [2, 2], [1, 1], true, true),
    ("avg2d_ceil_k2s3p1", "avg2d", [2, 2], [3, 3], [1, 1], true, true),
    ("avg2d_nopad_k3s2p1", "avg2d", [3, 3], [2, 2], [1, 1], false, false),
    ("avg2d_nopad_k3s1p1", "avg2d", [3, 3], [1, 1], [1, 1], false, false),
    ("avg2d_nopad_ceil_k3s2p1", "avg2d", [3, 3], [2, 2], [1, 1], true, false),
    ("avg2d_k3x2_s2x2_p1x1", "avg2d", [3, 2], [2, 2], [1, 1], false, true),
    (
        "avg2d_nopad_ceil_k2x3_s1x2_p1x1",
        "avg2d",
        [2, 3],
        [1, 2],
        [1, 1],
        true,
        false,
    ),
    ("max1d_ceil_k2s2p0", "max1d", [1, 2], [1, 2], [0, 0], true, true),
    ("max1d_ceil_k3s2p1", "max1d", [1, 3], [1, 2], [0, 1], true, true),
];

/// The window of an `OPTION_CASES` row.
fn option_window(row: &OptionCase) -> PoolWindow {
    let &(_, _, kernel, stride, padding, ceil_mode, count_include_pad) = row;
    PoolWindow {
        kernel,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
    }
}

/// PyTorch's `ceil_mode=True` (a last partial window, and its rule that the last
/// window starts inside the input or its left padding), `count_include_pad=False`
/// and `(kh, kw)` kernels, strides and paddings: outputs and gradients to 1e-5
/// (tests/fixtures/pool_options.safetensors).
fn pooling_with_ceil_mode_count_include_pad_false_and_non_square_windows_matches_pytorch(dev: &Device) {
    for row in &OPTION_CASES {
        let window = option_window(row);
        let f: &dyn Fn(&Tensor) -> Tensor = match row.1 {
            "max2d" => &|x| x.max_pool2d_with(window),
            "avg2d" => &|x| x.avg_pool2d_with(window),
            _ => &|x| x.max_pool1d_with(window),
        };
        assert_file_case_matches_pytorch("pool_options.safetensors", row.0, dev, f);
    }
}

/// The layers' builders (`ceil_mode`, `count_include_pad`, `with_window`) give the
/// ops' values, the shape `output_spec` predicts and PyTorch's `repr`.
fn pooling_layers_with_pytorchs_options_give_the_ops_values_and_shapes(dev: &Device) {
    let x = Tensor::randn(&[2, 3, 8, 10], 4, dev).unwrap();
    let rect = PoolWindow {
        kernel: [2, 3],
        stride: [1, 2],
        padding: [1, 1],
        ceil_mode: true,
        count_include_pad: false,
    };
    let layers: [(Box<dyn Module>, Tensor, &str); 4] = [
        (
            Box::new(MaxPool2d::new(2, 3).padding(1).ceil_mode(true)),
            x.max_pool2d_with(PoolWindow {
                ceil_mode: true,
                ..PoolWindow::square(2, 3, 1)
            }),
            "MaxPool2d(kernel_size=2, stride=3, padding=1, ceil_mode=True)",
        ),
        (
            Box::new(AvgPool2d::new(3, 2).padding(1).count_include_pad(false)),
            x.avg_pool2d_with(PoolWindow {
                count_include_pad: false,
                ..PoolWindow::square(3, 2, 1)
            }),
            "AvgPool2d(kernel_size=3, stride=2, padding=1, count_include_pad=False)",
        ),
        (
            Box::new(AvgPool2d::with_window(rect)),
            x.avg_pool2d_with(rect),
            "AvgPool2d(kernel_size=(2, 3), stride=(1, 2), padding=1, ceil_mode=True, count_include_pad=False)",
        ),
        (
            Box::new(MaxPool1d::new(2, 2).ceil_mode(true)),
            x.reshape(&[2, 24, 10]).max_pool1d_with(PoolWindow {
                ceil_mode: true,
                ..PoolWindow::line(2, 2, 0)
            }),
            "MaxPool1d(kernel_size=2, stride=2, padding=0, ceil_mode=True)",
        ),
    ];
    for (layer, want, name) in &layers {
        let input = if layer.name().starts_with("MaxPool1d") {
            x.reshape(&[2, 24, 10])
        } else {
            x.clone()
        };
        let got = layer.forward(&input);
        assert_eq!(layer.name(), *name);
        assert_eq!(got.to_vec().unwrap(), want.to_vec().unwrap(), "{name}");
        let said = layer.output_spec(&TensorSpec::of(&input)).unwrap();
        assert_eq!(said, Some(TensorSpec::of(&got)), "{name}: output_spec");
    }
    // The old accessor keeps its meaning for square windows.
    assert_eq!(MaxPool2d::new(3, 2).padding(1).config(), (3, 2, 1));
    assert_eq!(MaxPool1d::new(4, 3).padding(2).config(), (4, 3, 2));
}

fn flatten_unflatten_gelu_and_softmax_layers_match_pytorch(dev: &Device) {
    let layers: [(&str, Box<dyn Module>); 5] = [
        ("flatten", Box::new(Flatten)),
        ("unflatten", Box::new(Unflatten::new(1, &[3, 4]))),
        ("gelu", Box::new(Gelu)),
        ("softmax1", Box::new(Softmax::new(1))),
        ("softmax_m2", Box::new(Softmax::new(-2))),
    ];
    for (name, layer) in &layers {
        assert_case_matches_pytorch(name, dev, &|x| layer.forward(x));
        let x = pool_fixture(&format!("{name}.x"), dev);
        let said = layer.output_spec(&TensorSpec::of(&x)).unwrap();
        assert_eq!(said, Some(TensorSpec::of(&layer.forward(&x))), "{name}: output_spec");
    }
}

/// The first maximum of each window in window order, and each input's gradient as
/// the windows that chose it add it in that order: an independent host reference.
fn first_max_reference(x: &[f32], [h, w]: [usize; 2], k: usize, s: usize, p: usize, g: &[f32]) -> (Vec<u32>, Vec<f32>) {
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let planes = x.len() / (h * w);
    let (mut indices, mut grad) = (Vec::new(), vec![0.0f32; x.len()]);
    for plane in 0..planes {
        for (y, xo) in (0..oh).flat_map(|y| (0..ow).map(move |xo| (y, xo))) {
            let mut best: Option<(f32, usize)> = None;
            for r in (y * s).saturating_sub(p)..(y * s + k - p).min(h) {
                for c in (xo * s).saturating_sub(p)..(xo * s + k - p).min(w) {
                    let v = x[plane * h * w + r * w + c];
                    if best.is_none_or(|(b, _)| v > b) {
                        best = Some((v, r * w + c));
                    }
                }
            }
            let at = best.unwrap().1;
            grad[plane * h * w + at] += g[indices.len()];
            indices.push(at as u32);
        }
    }
    (indices, grad)
}

/// Inputs full of equal values (three levels, and a constant plane): every window
/// picks its first maximum, row by row, on both devices, and the gradient — each
/// input summing the windows that chose it, in window order — has the same bits on
/// the CPU, the GPU and a host reference.
#[test]
fn max_pool_ties_go_to_the_first_index_with_the_same_bits_on_every_device() {
    let (h, w) = (7, 9);
    let mut data: Vec<f32> = (0..2 * 3 * h * w).map(|i| ((i * 7) % 3) as f32).collect();
    data[..h * w].fill(0.5);
    for (k, s, p) in [(3, 1, 1), (2, 2, 0), (3, 2, 1), (2, 1, 1)] {
        let mut seen: Vec<(Vec<u32>, Vec<u32>, Vec<u32>)> = Vec::new();
        for dev in devices() {
            let x = Tensor::from_vec(data.clone(), &[2, 3, h, w], &dev)
                .unwrap()
                .requires_grad()
                .unwrap();
            let (values, indices) = x.max_pool2d_with_indices(k, s, p);
            let g = wgnn::rng::normal(5, values.numel());
            let weights = Tensor::from_vec(g.clone(), values.shape(), &dev).unwrap();
            let grads = (&values * &weights).sum().backward().unwrap();
            let grad = grads.get(&x).unwrap().to_vec().unwrap();
            let (want_indices, want_grad) = first_max_reference(&data, [h, w], k, s, p, &g);
            let indices = indices.to_labels().unwrap();
            assert_eq!(indices, want_indices, "k{k} s{s} p{p} on {dev}: first maximum");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&grad), bits(&want_grad), "k{k} s{s} p{p} on {dev}: gradient bits");
            seen.push((indices, bits(&values.to_vec().unwrap()), bits(&grad)));
        }
        assert!(seen.windows(2).all(|d| d[0] == d[1]), "k{k} s{s} p{p}: devices differ");
    }
    // The smallest tie: one window of four equal values passes its gradient to the first.
    let x = Tensor::from_vec(vec![1.0; 4], &[1, 1, 2, 2], &Device::cpu())
        .unwrap()
        .requires_grad()
        .unwrap();
    let grads = x.max_pool2d(2, 2, 0).mul_scalar(3.0).sum().backward().unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec().unwrap(), [3.0, 0.0, 0.0, 0.0]);
}

/// A small CNN-shaped head of pooling layers: no parameters of their own, shapes as
/// `output_spec` says, the same values as the ops, and gradients reaching the
/// `Linear` behind them; a derived module takes them as fields.
fn pooling_layers_work_in_sequential_and_derived_modules_without_parameters(dev: &Device) {
    let x = Tensor::randn(&[2, 3, 9, 11], 3, dev).unwrap();
    let head = Linear::new(3 * 2 * 3, 4, dev);
    let weight = head.weight.clone();
    let net = Sequential::new()
        .add(MaxPool2d::new(3, 2).padding(1))
        .add(AvgPool2d::new(2, 2))
        .add(Identity)
        .add(Flatten)
        .add(head)
        .add(Gelu)
        .add(nn::Softmax);
    assert_eq!(net.parameters().len(), 2, "only the Linear's");
    let out = net.forward(&x);
    assert_eq!(
        net.output_spec(&TensorSpec::of(&x)).unwrap(),
        Some(TensorSpec::of(&out))
    );
    let manual = x.max_pool2d(3, 2, 1).avg_pool2d(2, 2, 0).reshape(&[2, 18]);
    let manual = manual.linear(&weight, net.parameters().get(1)).gelu().softmax(-1);
    assert_eq!(out.to_vec().unwrap(), manual.to_vec().unwrap());
    let grads = out.select(1, 0).sum().backward().unwrap();
    assert!(grads.get(&weight).unwrap().to_vec().unwrap().iter().any(|g| *g != 0.0));

    #[derive(Module)]
    struct Features {
        pool: MaxPool1d,
        global: AdaptiveAvgPool2d,
        unflatten: Unflatten,
        softmax: Softmax,
    }
    impl Module for Features {
        fn forward(&self, x: &Tensor) -> Tensor {
            let [n, c, h, w] = x.shape().try_into().unwrap();
            let rows = self.pool.forward(&x.reshape(&[n, c * h, w]));
            let planes = self.unflatten.forward(&rows);
            self.softmax.forward(&self.global.forward(&planes))
        }
    }
    let f = Features {
        pool: MaxPool1d::new(3, 2),
        global: AdaptiveAvgPool2d::new(1, 1),
        unflatten: Unflatten::new(-2, &[3, 9]),
        softmax: Softmax::new(1),
    };
    assert!(f.named_parameters().is_empty() && f.named_buffers().is_empty());
    let y = f.forward(&x);
    assert_eq!(y.shape(), &[2, 3, 1, 1]);
    let want = x.reshape(&[2, 27, 11]).max_pool1d(3, 2, 0).reshape(&[2, 3, 9, 5]);
    let want = want.adaptive_avg_pool2d(1, 1).softmax(1);
    assert_eq!(y.to_vec().unwrap(), want.to_vec().unwrap());
}

/// A batch of no images gives a batch of no pooled images, on every device.
fn an_empty_batch_pools_to_an_empty_batch(dev: &Device) {
    let x = Tensor::zeros(&[0, 3, 7, 9], dev);
    for y in [
        x.max_pool2d(3, 2, 1),
        x.avg_pool2d(2, 2, 0),
        x.adaptive_avg_pool2d(1, 1),
    ] {
        assert_eq!(y.shape()[..2], [0, 3]);
        assert!(y.to_vec().unwrap().is_empty());
    }
}
