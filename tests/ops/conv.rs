//! Convolutions (`conv1d`, `conv2d`, `conv_transpose2d`) and their layers: against
//! PyTorch (tests/fixtures/make_conv_fixture.py), CPU-vs-GPU parity forward and
//! backward at odd sizes (strides, padding, dilation, groups, depthwise, 1×1 and 5×5
//! kernels, tiles with ragged edges), finite differences on each device, and the
//! layers in `Sequential` and `#[derive(Module)]` structs.

use super::common::cases::*;
use super::common::{check_variant, fixture, joined, max_rel_diff, read_tensor};
use super::{assert_parity, gradcheck};
use wgnn::nn::{self, Conv1d, Conv2d, ConvConfig, ConvTranspose2d, Module};
use wgnn::{Conv2dArgs, ConvArgs, Device, Tensor};

crate::device_tests!(
    convolutions_match_pytorch_forward_and_backward,
    convolutions_with_per_axis_stride_padding_and_dilation_match_pytorch,
    convolutions_pass_a_finite_difference_gradient_check,
    conv_layers_work_in_sequential_and_derived_modules_with_pytorchs_names,
    a_transposed_convolution_is_the_input_gradient_of_a_convolution,
    an_activation_after_a_convolution_joins_its_epilogue,
    a_batch_norm_in_evaluation_folds_into_the_convolution_before_it,
);

#[test]
fn convolutions_match_between_cpu_and_gpu_forward_and_backward() {
    assert_parity(&conv_cases(), CONV_TOL);
}

/// Every tile the GPU autotune can pick for a convolution gives the same bits as
/// every other, in all three passes (forward, input gradient, weight gradient), so
/// that a timing never changes a result, and matches the CPU to `CONV_TOL`: every
/// case of the parity test (strides, dilation, groups, depthwise, 1×1, 5×5,
/// ragged edges, 1-D, transposed) and the second convolution of examples/cnn.rs
/// (16 → 32 channels, 14×14, batch 4), whose GEMMs span several tiles each way.
/// Each tile is forced with `Device::debug_kernel_variant`; the profiler confirms
/// that every convolution launch ran it.
#[test]
fn every_conv_tile_gives_the_same_bits_in_all_three_passes_and_matches_the_cpu() {
    let Some(shared) = super::gpu() else { return };
    let gpu = super::private(&shared);
    gpu.set_profile(true);
    let mut cases = conv_cases();
    cases.push(case(
        "conv2d of examples/cnn.rs",
        vec![vec![4, 16, 14, 14], vec![32, 16, 3, 3], vec![32]],
        Draw::Normal,
        |x| x[0].conv2d(&x[1], Some(&x[2]), args(1, 1, 1, 1)),
    ));
    for (i, c) in cases.iter().enumerate() {
        let seed = 300 + i as u64;
        gpu.reset_profile();
        let expected = joined(super::evaluate(c, &Device::cpu(), seed));
        let mut first = None;
        for tile in CONV_TILES {
            gpu.clear_plan_cache();
            gpu.debug_kernel_variant(Some(tile));
            let got = joined(super::evaluate(c, &gpu, seed));
            let report = gpu.profile_report();
            gpu.reset_profile();
            let passes: Vec<(&str, &str)> = report
                .plans
                .iter()
                .flat_map(|p| &p.launches)
                .filter(|l| l.kernel.starts_with("conv"))
                .map(|l| (l.kernel.as_str(), l.variant.as_str()))
                .collect();
            assert!(
                passes.len() >= 3 && passes.iter().all(|(_, v)| *v == tile),
                "{}: tile {tile} forced, the launches ran {passes:?}",
                c.name
            );
            check_variant(c.name, tile, &got, &expected, CONV_TOL, &mut first);
        }
    }
    gpu.debug_kernel_variant(None);
}

fn convolutions_pass_a_finite_difference_gradient_check(dev: &Device) {
    let small = |c: &Case| c.shapes.iter().all(|s| s.iter().product::<usize>() <= 5000);
    for c in conv_cases().iter().filter(|c| small(c)) {
        gradcheck(c, dev);
    }
}

/// A tensor of tests/fixtures/conv.safetensors.
fn conv_fixture(name: &str, dev: &Device) -> Tensor {
    let (shape, data) = read_tensor(&fixture("conv.safetensors"), name);
    Tensor::from_vec(data, &shape, dev).unwrap()
}

#[track_caller]
fn assert_matches_fixture(got: &Tensor, name: &str) {
    let (shape, want) = read_tensor(&fixture("conv.safetensors"), name);
    assert_eq!(got.shape(), &shape[..], "{name}: shape");
    let d = max_rel_diff(&got.to_vec().unwrap(), &want);
    assert!(d <= 1e-5, "{name}: differs from PyTorch by {d}");
}

/// The cases of make_conv_fixture.py: (name, op, bias, stride, padding, dilation,
/// groups, output_padding).
const FIXTURE_CASES: [(&str, &str, bool, [usize; 5]); 11] = [
    ("c1d", "conv1d", true, [2, 1, 1, 1, 0]),
    ("c1d_dil", "conv1d", false, [1, 2, 2, 2, 0]),
    ("c2d", "conv2d", true, [1, 1, 1, 1, 0]),
    ("c2d_stride", "conv2d", true, [2, 1, 1, 1, 0]),
    ("c2d_dil", "conv2d", false, [1, 2, 2, 1, 0]),
    ("c2d_groups", "conv2d", true, [2, 0, 1, 3, 0]),
    ("c2d_depthwise", "conv2d", true, [1, 2, 1, 3, 0]),
    ("c2d_1x1", "conv2d", true, [1, 0, 1, 1, 0]),
    ("ct2d", "conv_transpose2d", true, [2, 1, 1, 1, 1]),
    ("ct2d_groups", "conv_transpose2d", false, [1, 0, 2, 2, 0]),
    ("ct2d_k2", "conv_transpose2d", true, [2, 0, 1, 1, 0]),
];

/// `F.conv1d`, `F.conv2d` and `F.conv_transpose2d` over the fixture's configurations:
/// outputs and the gradients of input, weight and bias to 1e-5.
fn convolutions_match_pytorch_forward_and_backward(dev: &Device) {
    for (case, op, has_bias, [stride, padding, dilation, groups, output_padding]) in FIXTURE_CASES {
        let leaf = |x: &str| conv_fixture(&format!("{case}.{x}"), dev).requires_grad().unwrap();
        let (x, w) = (leaf("x"), leaf("w"));
        let b = has_bias.then(|| leaf("b"));
        let a = ConvArgs {
            stride,
            padding,
            dilation,
            groups,
            output_padding,
        };
        let out = match op {
            "conv1d" => x.conv1d(&w, b.as_ref(), a),
            "conv2d" => x.conv2d(&w, b.as_ref(), a),
            _ => x.conv_transpose2d(&w, b.as_ref(), a),
        };
        assert_matches_fixture(&out, &format!("{case}.out"));
        let r = conv_fixture(&format!("{case}.r"), dev);
        let grads = (&out * &r).sum().backward().unwrap();
        assert_matches_fixture(grads.get(&x).unwrap(), &format!("{case}.grad.x"));
        assert_matches_fixture(grads.get(&w).unwrap(), &format!("{case}.grad.w"));
        if let Some(b) = &b {
            assert_matches_fixture(grads.get(b).unwrap(), &format!("{case}.grad.b"));
        }
    }
}

/// The `*_rect` cases of make_conv_fixture.py (PyTorch's tuple arguments): (name,
/// transposed, bias, stride, padding, dilation, groups, output_padding).
type RectCase = (
    &'static str,
    bool,
    bool,
    [usize; 2],
    [usize; 2],
    [usize; 2],
    usize,
    [usize; 2],
);
const RECT_CASES: [RectCase; 3] = [
    ("c2d_rect", false, true, [2, 1], [1, 2], [1, 2], 1, [0, 0]),
    ("c2d_rect_groups", false, false, [1, 2], [0, 1], [2, 1], 2, [0, 0]),
    ("ct2d_rect", true, true, [2, 3], [1, 0], [1, 1], 1, [1, 2]),
];

/// `F.conv2d` / `F.conv_transpose2d` with (height, width) pairs for stride, padding,
/// dilation and output padding (`Tensor::conv2d_with`, `conv_transpose2d_with`):
/// outputs and gradients to 1e-5; and `Conv2d::with_args` holding the fixture's
/// weights gives the op's output, the shape `output_spec` predicts and PyTorch's
/// `repr`.
fn convolutions_with_per_axis_stride_padding_and_dilation_match_pytorch(dev: &Device) {
    for (case, transposed, has_bias, stride, padding, dilation, groups, output_padding) in RECT_CASES {
        let leaf = |x: &str| conv_fixture(&format!("{case}.{x}"), dev).requires_grad().unwrap();
        let (x, w) = (leaf("x"), leaf("w"));
        let b = has_bias.then(|| leaf("b"));
        let a = Conv2dArgs {
            stride,
            padding,
            dilation,
            groups,
            output_padding,
        };
        let out = match transposed {
            false => x.conv2d_with(&w, b.as_ref(), a),
            true => x.conv_transpose2d_with(&w, b.as_ref(), a),
        };
        assert_matches_fixture(&out, &format!("{case}.out"));
        let r = conv_fixture(&format!("{case}.r"), dev);
        let grads = (&out * &r).sum().backward().unwrap();
        assert_matches_fixture(grads.get(&x).unwrap(), &format!("{case}.grad.x"));
        assert_matches_fixture(grads.get(&w).unwrap(), &format!("{case}.grad.w"));
        if let Some(b) = &b {
            assert_matches_fixture(grads.get(b).unwrap(), &format!("{case}.grad.b"));
        }
        if transposed {
            continue;
        }
        let ws = w.shape().to_vec();
        let layer = Conv2d::with_args(ws[1] * groups, ws[0], [ws[2], ws[3]], a, has_bias, dev);
        layer.weight.assign(&w.to_vec().unwrap()).unwrap();
        if let (Some(p), Some(b)) = (&layer.bias, &b) {
            p.assign(&b.to_vec().unwrap()).unwrap();
        }
        let y = layer.forward(&x);
        assert_eq!(y.to_vec().unwrap(), out.to_vec().unwrap(), "{case}: the layer");
        let spec = layer.output_spec(&nn::TensorSpec::of(&x)).unwrap().unwrap();
        assert_eq!(spec.shape, y.shape(), "{case}: output_spec");
        assert_eq!(layer.args(), a, "{case}");
    }
    let d = Device::cpu();
    let names = RECT_CASES[..2]
        .iter()
        .map(|&(_, _, bias, stride, padding, dilation, groups, _)| {
            let args = Conv2dArgs {
                stride,
                padding,
                dilation,
                groups,
                output_padding: [0; 2],
            };
            Conv2d::with_args(2 * groups, 3 * groups, [2, 3], args, bias, &d).name()
        });
    // PyTorch's repr of the same layers.
    assert_eq!(
        names.collect::<Vec<_>>(),
        [
            "Conv2d(2, 3, kernel_size=(2, 3), stride=(2, 1), padding=(1, 2), dilation=(1, 2))",
            "Conv2d(4, 6, kernel_size=(2, 3), stride=(1, 2), padding=(0, 1), dilation=(2, 1), groups=2, bias=False)",
        ]
    );
    let zero = Conv2dArgs {
        stride: [1, 0],
        ..Default::default()
    };
    let err = Conv2d::try_with_args(2, 3, [3, 3], zero, true, &d).err().unwrap();
    assert!(err.to_string().contains("Conv2d: stride [1, 0]"), "{err}");
}

#[derive(Module)]
struct TinyCnn {
    features: nn::Sequential,
    upsample: ConvTranspose2d,
    audio: Conv1d,
}

impl Module for TinyCnn {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.upsample.forward(&self.features.forward(x))
    }
}

/// Layers hold `weight` `[out, in / groups, k…]` (transposed: `[in, out / groups, k…]`)
/// and `bias`, initialised in ±1/√fan_in; they compose in `Sequential` and derived
/// structs, say their output shape without a graph, and compute the functional op.
fn conv_layers_work_in_sequential_and_derived_modules_with_pytorchs_names(dev: &Device) {
    let _guard = super::common::serial();
    wgnn::manual_seed(3);
    let depthwise = ConvConfig {
        padding: 1,
        groups: 4,
        bias: false,
        ..Default::default()
    };
    let strided = ConvConfig {
        stride: 2,
        ..Default::default()
    };
    let net = TinyCnn {
        features: nn::Sequential::new()
            .add(Conv2d::new(3, 4, 3, ConvConfig::default(), dev))
            .add(nn::Relu)
            .add(Conv2d::new(4, 4, 3, depthwise, dev)),
        upsample: ConvTranspose2d::new(4, 2, 2, strided, dev),
        audio: Conv1d::new(2, 3, 5, ConvConfig::default(), dev),
    };
    let names: Vec<(String, Vec<usize>)> = net
        .named_parameters()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect();
    let expect: Vec<(String, Vec<usize>)> = [
        ("features.0.weight", vec![4, 3, 3, 3]),
        ("features.0.bias", vec![4]),
        ("features.2.weight", vec![4, 1, 3, 3]),
        ("upsample.weight", vec![4, 2, 2, 2]),
        ("upsample.bias", vec![2]),
        ("audio.weight", vec![3, 2, 5]),
        ("audio.bias", vec![3]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(names, expect);
    let bound = 1.0 / (27.0f32).sqrt();
    let w = net.features.parameters()[0].to_vec().unwrap();
    assert!(w.iter().all(|v| v.abs() <= bound) && w.iter().any(|v| v.abs() > bound / 2.0));
    let x = Tensor::randn(&[2, 3, 9, 8], 1, dev).unwrap();
    let spec = net.features.output_spec(&nn::TensorSpec::of(&x)).unwrap().unwrap();
    assert_eq!(spec.shape, vec![2, 4, 7, 6]);
    let y = net.forward(&x);
    assert_eq!(y.shape(), &[2, 2, 14, 12]);
    let first = Conv2d::new(3, 4, 3, ConvConfig::default(), dev);
    let want = x.conv2d(&first.weight, first.bias.as_ref(), ConvArgs::default());
    assert_eq!(first.forward(&x).to_vec().unwrap(), want.to_vec().unwrap());
    assert_eq!(
        net.audio.forward(&Tensor::randn(&[1, 2, 9], 2, dev).unwrap()).shape(),
        &[1, 3, 5]
    );
    assert_eq!(first.name(), "Conv2d(3, 4, kernel_size=(3, 3))");
    assert_eq!(
        net.upsample.name(),
        "ConvTranspose2d(4, 2, kernel_size=(2, 2), stride=(2, 2))"
    );
}

/// `conv_transpose2d(y, w)` is the gradient of `conv2d(·, w)` with respect to its
/// input at upstream gradient y (the definition PyTorch documents).
fn a_transposed_convolution_is_the_input_gradient_of_a_convolution(dev: &Device) {
    let a = args(2, 1, 1, 1);
    let x = Tensor::randn(&[2, 3, 9, 9], 1, dev).unwrap().requires_grad().unwrap();
    let w = Tensor::randn(&[4, 3, 3, 3], 2, dev).unwrap();
    let y = x.conv2d(&w, None, a);
    let g = Tensor::randn(y.shape(), 3, dev).unwrap();
    let dx = (&y * &g).sum().backward().unwrap().get(&x).unwrap().to_vec().unwrap();
    let t = g.conv_transpose2d(&w, None, a).to_vec().unwrap();
    assert!(super::common::max_rel_diff(&t, &dx) < 1e-6);
}

/// The CPU's convolutions with their images dealt out to two threads, or all on one,
/// give the same bits — forward, input gradient and weight gradient, grouped and
/// not — above the 4 MFLOP threshold (where the split is taken by itself) and below.
#[test]
fn cpu_convolutions_give_the_same_bits_with_and_without_the_image_split() {
    use wgnn::fast_path::{self, FastPath};
    let dev = Device::cpu_private();
    // (batch, c_in, c_out, size, groups, split automatically)
    for (batch, cin, cout, size, groups, above) in [
        (6, 8, 16, 20, 1, true),
        (5, 16, 16, 24, 2, true),
        (3, 2, 4, 6, 1, false),
    ] {
        let run = || {
            let x = Tensor::randn(&[batch, cin, size, size], 1, &dev)
                .unwrap()
                .requires_grad()
                .unwrap();
            let w = Tensor::randn(&[cout, cin / groups, 3, 3], 2, &dev)
                .unwrap()
                .requires_grad()
                .unwrap();
            let args = wgnn::ConvArgs {
                padding: 1,
                groups,
                ..Default::default()
            };
            let y = x.conv2d(&w, None, args);
            let grads = y.square().sum().backward().unwrap();
            let mut bits: Vec<u32> = y.to_vec().unwrap().iter().map(|v| v.to_bits()).collect();
            for t in [&x, &w] {
                bits.extend(grads.get(t).unwrap().to_vec().unwrap().iter().map(|v| v.to_bits()));
            }
            bits
        };
        let before = fast_path::taken(FastPath::GemmSplit);
        let auto = run();
        assert_eq!(
            fast_path::taken(FastPath::GemmSplit) > before,
            above,
            "batch {batch}: the automatic split"
        );
        for on in [false, true] {
            let _forced = fast_path::force(FastPath::GemmSplit, on);
            assert!(
                run() == auto,
                "batch {batch}, groups {groups}: the split forced {on} changes the bits"
            );
        }
    }
}

/// A ReLU, sigmoid or tanh after a convolution joins its epilogue, as after `Linear`:
/// one launch for the forward (bias included), the same values as the map applied to
/// the realized convolution, and the same gradients of x, the weight and the bias.
fn an_activation_after_a_convolution_joins_its_epilogue(shared: &Device) {
    let dev = &super::common::private(shared);
    let leaf = |shape: &[usize], seed| Tensor::randn(shape, seed, dev).unwrap().requires_grad().unwrap();
    let (x, w, b) = (leaf(&[2, 3, 9, 7], 1), leaf(&[5, 3, 3, 3], 2), leaf(&[5], 3));
    for (name, act) in [
        ("relu", Tensor::relu as fn(&Tensor) -> Tensor),
        ("sigmoid", Tensor::sigmoid),
        ("tanh", Tensor::tanh),
    ] {
        let args = ConvArgs {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let fused = act(&x.conv2d(&w, Some(&b), args));
        let before = dev.stats();
        fused.realize().unwrap();
        assert_eq!(
            (dev.stats() - before).dispatches,
            1,
            "{name}: convolution and map in one launch"
        );
        let pre = x.conv2d(&w, Some(&b), args);
        pre.realize().unwrap();
        let apart = act(&pre);
        let g = Tensor::randn(fused.shape(), 4, dev).unwrap();
        let grads = |y: &Tensor| {
            let gr = (y * &g).sum().backward().unwrap();
            let mut all = vec![y.to_vec().unwrap()];
            all.extend([&x, &w, &b].map(|t| gr.get(t).unwrap().to_vec().unwrap()));
            all
        };
        for (what, (f, a)) in ["y", "dx", "dw", "db"]
            .iter()
            .zip(grads(&fused).iter().zip(&grads(&apart)))
        {
            let worst = f
                .iter()
                .zip(a)
                .map(|(p, q)| (p - q).abs() / q.abs().max(1.0))
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-6,
                "{dev}: {name}: fused {what} is {worst:e} from the map applied apart"
            );
        }
    }
}

/// `fuse_conv_bn_eval` (PyTorch's `fuse_conv_bn_eval`): after training steps that
/// moved the running statistics, the fused convolution gives the evaluation-mode
/// pair's outputs within 1e-5 relative, with and without a conv bias and with
/// strides; a batch norm of other channels, or one without running statistics, is
/// an `Err` naming it.
fn a_batch_norm_in_evaluation_folds_into_the_convolution_before_it(dev: &Device) {
    use wgnn::nn::{BatchNorm2d, BatchNormConfig};
    for bias in [true, false] {
        wgnn::manual_seed(7);
        let cfg = ConvConfig {
            stride: 2,
            padding: 1,
            bias,
            ..Default::default()
        };
        let conv = Conv2d::new(3, 6, 3, cfg, dev);
        let mut bn = BatchNorm2d::new(6, dev);
        for step in 0..3 {
            let x = Tensor::randn(&[4, 3, 10, 10], 10 + step, dev)
                .unwrap()
                .mul_scalar(2.0)
                .add_scalar(0.5);
            bn.forward(&conv.forward(&x)).realize().unwrap();
        }
        bn.weight.assign(&[0.5, 1.5, -1.0, 2.0, 0.25, 1.0]).unwrap();
        bn.bias.assign(&[0.1, -0.2, 0.3, 0.0, 1.0, -1.0]).unwrap();
        bn.eval();
        let fused = nn::fuse_conv_bn_eval(&conv, &bn).unwrap();
        let x = Tensor::randn(&[2, 3, 10, 10], 99, dev).unwrap();
        let want = bn.forward(&conv.forward(&x)).to_vec().unwrap();
        let got = fused.forward(&x).to_vec().unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-5,
            "{dev}: bias {bias}: the folded convolution is {worst:e} from conv + eval BN"
        );
    }
    let conv = Conv2d::new(3, 6, 3, ConvConfig::default(), dev);
    let err = |r: wgnn::Result<Conv2d>| r.err().expect("an error").to_string();
    let err5 = err(nn::fuse_conv_bn_eval(&conv, &BatchNorm2d::new(5, dev)));
    assert!(
        err5.contains("5 channels") && err5.contains("6 output channels"),
        "{err5}"
    );
    let untracked = BatchNormConfig {
        track_running_stats: false,
        ..Default::default()
    };
    let err6 = err(nn::fuse_conv_bn_eval(
        &conv,
        &BatchNorm2d::with_config(6, untracked, dev),
    ));
    assert!(err6.contains("track_running_stats"), "{err6}");
}
