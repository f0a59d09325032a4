//! Recurrent layers at sizes above every fast path's threshold, where the CPU backend
//! once computed the second half of an LSTM's or GRU's rows from the wrong words: whole
//! layers forward and backward against PyTorch (`make_large_sequence_fixture.py`), with
//! each CPU fast path forced on and off (`wgnn::fast_path`) demanding the same bits,
//! the GPU's product variants, subgroup reductions and views (forced on and off)
//! through the same layers, and a property test of random layer shapes across the
//! thresholds, CPU against GPU.

use proptest::prelude::*;

use crate::common::{fixture, gpu, packed_tiles_run, private, read_tensor, serial};
use wgnn::fast_path::{self, FastPath};
use wgnn::nn::{Gru, Lstm, LstmState, Module, Rnn, RnnConfig};
use wgnn::{Device, GpuOptions, Tensor};

/// The fixture's sampling stride: it keeps every 7th element of each result.
const STRIDE: usize = 7;

/// A 32-bit key of a name (the fixture script's `key`).
fn key(name: &str) -> u32 {
    name.bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
}

/// `n` values in [−bound, bound) from a hash of (index, name), as the fixture script
/// makes its weights, inputs and readout weights.
fn values(name: &str, n: usize, bound: f64) -> Vec<f32> {
    let k = key(name);
    (0..n as u32)
        .map(|i| {
            let mut x = i.wrapping_mul(0x9E37_79B1).wrapping_add(k.wrapping_mul(0x85EB_CA77));
            x ^= x >> 15;
            x = x.wrapping_mul(0x2C1B_3C6D);
            x ^= x >> 12;
            x = x.wrapping_mul(0x297A_2D39);
            x ^= x >> 15;
            ((x as f64 / 4_294_967_296.0 * 2.0 - 1.0) * bound) as f32
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Lstm,
    Gru,
    Rnn,
}

/// A recurrent layer stack of one of the three kinds.
enum Layer {
    Lstm(Lstm),
    Gru(Gru),
    Rnn(Rnn),
}

/// One recurrent layer stack and its input.
#[derive(Clone, Copy, Debug)]
struct Case {
    prefix: &'static str,
    kind: Kind,
    input: usize,
    hidden: usize,
    layers: usize,
    batch_first: bool,
    batch: usize,
    steps: usize,
    state: bool,
}

/// The fixture's cases: 6,144, 12,288, 6,400 and 8,192 units a cell (the cell split
/// from 4,096), products of 4–38 MFLOP (the two-thread split from 4), wider than tall
/// (the column split), and 4–5 steps whose weight gradients are joined.
const CASES: [Case; 4] = [
    Case {
        prefix: "L",
        kind: Kind::Lstm,
        input: 24,
        hidden: 192,
        layers: 2,
        batch_first: true,
        batch: 32,
        steps: 5,
        state: true,
    },
    Case {
        prefix: "M",
        kind: Kind::Lstm,
        input: 16,
        hidden: 256,
        layers: 1,
        batch_first: false,
        batch: 48,
        steps: 4,
        state: false,
    },
    Case {
        prefix: "G",
        kind: Kind::Gru,
        input: 16,
        hidden: 160,
        layers: 2,
        batch_first: true,
        batch: 40,
        steps: 5,
        state: true,
    },
    Case {
        prefix: "R",
        kind: Kind::Rnn,
        input: 16,
        hidden: 256,
        layers: 1,
        batch_first: true,
        batch: 32,
        steps: 5,
        state: false,
    },
];

/// Runs `case` forward and backward on `dev` with the fixture's weights, inputs and
/// loss: every result the fixture holds, by its name, in full. (Making the layers
/// draws from the global random stream: callers hold `serial()`, so that seeded
/// tests running beside them keep their draws.)
fn run_case(case: &Case, dev: &Device) -> Vec<(String, Vec<f32>)> {
    let Case { prefix, kind, .. } = *case;
    let config = RnnConfig {
        num_layers: case.layers,
        batch_first: case.batch_first,
        ..Default::default()
    };
    let layer = match kind {
        Kind::Lstm => Layer::Lstm(Lstm::new(case.input, case.hidden, config, dev)),
        Kind::Gru => Layer::Gru(Gru::new(case.input, case.hidden, config, dev)),
        Kind::Rnn => Layer::Rnn(Rnn::new(case.input, case.hidden, config, dev)),
    };
    let module: &dyn Module = match &layer {
        Layer::Lstm(l) => l,
        Layer::Gru(g) => g,
        Layer::Rnn(r) => r,
    };
    let bound = 1.0 / (case.hidden as f64).sqrt();
    for (name, p) in module.named_parameters() {
        p.assign(&values(&format!("{prefix}.{name}"), p.numel(), bound))
            .unwrap();
    }
    let leaf = |name: &str, shape: &[usize], grad: bool| {
        let n = shape.iter().product();
        let t = Tensor::from_vec(values(&format!("{prefix}.{name}"), n, 1.0), shape, dev).unwrap();
        if grad {
            t.requires_grad().unwrap()
        } else {
            t
        }
    };
    let x_shape = if case.batch_first {
        [case.batch, case.steps, case.input]
    } else {
        [case.steps, case.batch, case.input]
    };
    let s_shape = [case.layers, case.batch, case.hidden];
    let x = leaf("input", &x_shape, true);
    let mut leaves = vec![("input", x.clone())];
    let h0 = case.state.then(|| leaf("h0", &s_shape, true));
    let c0 = (case.state && kind == Kind::Lstm).then(|| leaf("c0", &s_shape, true));
    leaves.extend(h0.iter().map(|t| ("h0", t.clone())));
    leaves.extend(c0.iter().map(|t| ("c0", t.clone())));
    let (out, h_n, c_n) = match &layer {
        Layer::Lstm(lstm) => {
            let state = h0.map(|h| LstmState {
                h,
                c: c0.expect("an LSTM's state has c"),
            });
            let (out, last) = lstm.forward_seq(&x, state.as_ref());
            (out, last.h, Some(last.c))
        }
        Layer::Gru(gru) => {
            let (out, h_n) = gru.forward_seq(&x, h0.as_ref());
            (out, h_n, None)
        }
        Layer::Rnn(rnn) => {
            let (out, h_n) = rnn.forward_seq(&x, h0.as_ref());
            (out, h_n, None)
        }
    };
    let weigh = |t: &Tensor, name: &str| (t * &leaf(name, t.shape(), false)).sum();
    let mut loss = weigh(&out, "w_out") + weigh(&h_n, "w_h");
    if let Some(c) = &c_n {
        loss = loss + weigh(c, "w_c");
    }
    let grads = loss.backward().unwrap();
    let mut results = vec![("out".to_string(), out), ("h_n".to_string(), h_n)];
    results.extend(c_n.map(|c| ("c_n".to_string(), c)));
    for (name, p) in module.named_parameters() {
        results.push((format!("grad.{name}"), grads.get(&p).unwrap().clone()));
    }
    for (name, t) in leaves {
        results.push((format!("grad.{name}"), grads.get(&t).unwrap().clone()));
    }
    results
        .into_iter()
        .map(|(name, t)| (format!("{prefix}.{name}"), t.to_vec().unwrap()))
        .collect()
}

/// Asserts PyTorch's `allclose(atol 1e-5, rtol 1e-4)` on every sampled element.
#[track_caller]
fn assert_matches_pytorch(results: &[(String, Vec<f32>)], what: &str) {
    for (name, got) in results {
        let (_, want) = read_tensor(&fixture("sequence_large.safetensors"), name);
        let sampled: Vec<f32> = got.iter().copied().step_by(STRIDE).collect();
        assert_eq!(sampled.len(), want.len(), "{what}: {name}: length");
        let (worst, at) = sampled
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs() / (1e-5 + 1e-4 * w.abs()))
            .zip(0..)
            .fold((0.0f32, 0), |best, (r, i)| if r > best.0 { (r, i) } else { best });
        assert!(
            worst <= 1.0,
            "{what}: {name}[{}] = {} where PyTorch has {}: {worst:.1}× the tolerance",
            at * STRIDE,
            sampled[at],
            want[at]
        );
    }
}

fn bits(results: &[(String, Vec<f32>)]) -> Vec<u32> {
    results
        .iter()
        .flat_map(|(_, v)| v.iter().map(|x| x.to_bits()))
        .collect()
}

/// Whole LSTM, GRU and RNN stacks above every threshold, forward and backward, match
/// PyTorch on each device with the automatic choices, and on the CPU also with
/// autograd's joined weight-gradient products off (the one CPU fast path whose sums
/// differ by design).
pub fn recurrent_layers_above_every_threshold_match_pytorch(dev: &Device) {
    let _serial = serial();
    for case in &CASES {
        let split = fast_path::taken(FastPath::CellSplit);
        let results = run_case(case, dev);
        assert_matches_pytorch(
            &results,
            &format!("{} {:?} on {:?}", case.prefix, case.kind, dev.kind()),
        );
        if dev.kind() == wgnn::DeviceKind::Cpu && case.kind != Kind::Rnn {
            assert!(
                fast_path::taken(FastPath::CellSplit) > split,
                "{}: the cells were not split",
                case.prefix
            );
        }
    }
    if dev.kind() == wgnn::DeviceKind::Cpu {
        let _apart = fast_path::force(FastPath::JoinedGradients, false);
        for case in &CASES {
            let results = run_case(case, dev);
            assert_matches_pytorch(&results, &format!("{} without joined gradients", case.prefix));
        }
    }
}

/// Each CPU fast path, forced off and forced on through whole recurrent layers above
/// its threshold (and, for the cell split, below it), gives the same bits as the
/// automatic choice, and the forced-on run really takes it.
#[test]
fn every_cpu_fast_path_gives_the_same_bits_through_whole_recurrent_layers() {
    let _serial = serial();
    let dev = Device::cpu_private();
    let paths = [
        FastPath::CellSplit,
        FastPath::GemmSplit,
        FastPath::GemmColumns,
        FastPath::GemmThreads,
        FastPath::Simd,
        FastPath::Simd512,
        FastPath::Fusion,
        FastPath::Views,
        FastPath::ReduceSplit,
    ];
    // Above every threshold (L, G), and below the cell split (16 × 64 units).
    let small = Case {
        prefix: "S",
        kind: Kind::Gru,
        input: 8,
        hidden: 64,
        layers: 2,
        batch_first: false,
        batch: 16,
        steps: 3,
        state: true,
    };
    for case in [CASES[0], CASES[2], small] {
        let split = fast_path::taken(FastPath::CellSplit);
        let auto = bits(&run_case(&case, &dev));
        let split_auto = fast_path::taken(FastPath::CellSplit) > split;
        assert_eq!(
            split_auto,
            case.hidden * case.batch >= 4096,
            "{}: the automatic cell split",
            case.prefix
        );
        for path in paths {
            for on in [false, true] {
                let before = fast_path::taken(path);
                let got = {
                    // The column and thread splits are kinds of the two-part split.
                    let kind_of_split = on && matches!(path, FastPath::GemmColumns | FastPath::GemmThreads);
                    let _split = kind_of_split.then(|| fast_path::force(FastPath::GemmSplit, true));
                    let _forced = fast_path::force(path, on);
                    bits(&run_case(&case, &dev))
                };
                if on {
                    assert!(
                        fast_path::taken(path) > before,
                        "{}: {path:?} forced on was not taken",
                        case.prefix
                    );
                } else {
                    assert_eq!(
                        fast_path::taken(path),
                        before,
                        "{}: {path:?} forced off was taken",
                        case.prefix
                    );
                }
                assert!(got == auto, "{}: {path:?} forced {on} changes the bits", case.prefix);
            }
        }
    }
}

/// The recurrent weights packed once per plan run (`FastPath::PackedOperand`, whose
/// products sum each output as one fma chain, not as `matrixmultiply` does): taken by
/// itself in every fixture case (at most 128 rows per step) on a CPU with its SIMD
/// tiles, and through each case
/// forced on, forced off and automatic the layers match PyTorch; above 128 rows it is
/// not taken by itself (the same bits as forced off), and forced on there it agrees
/// with the unpacked products.
#[test]
fn recurrent_weights_packed_once_per_run_match_pytorch_on_both_sides_of_the_threshold() {
    let _serial = serial();
    let dev = Device::cpu_private();
    let path = FastPath::PackedOperand;
    let run = |case: &Case, on: Option<bool>| {
        let _forced = on.map(|on| fast_path::force(path, on));
        let before = fast_path::taken(path);
        let results = run_case(case, &dev);
        (results, fast_path::taken(path) > before)
    };
    // Taken by itself where one of its SIMD tiles runs.
    let simd = packed_tiles_run();
    for case in &CASES {
        for on in [None, Some(false), Some(true)] {
            let (results, taken) = run(case, on);
            assert_eq!(taken, on.unwrap_or(simd), "{}: packed {on:?} taken", case.prefix);
            assert_matches_pytorch(&results, &format!("{} with packed weights {on:?}", case.prefix));
        }
    }
    // 136 rows a step: above the threshold.
    let tall = Case {
        prefix: "L",
        batch: 136,
        steps: 3,
        ..CASES[0]
    };
    let (auto, taken) = run(&tall, None);
    assert!(!taken, "packed above 128 rows");
    let (off, _) = run(&tall, Some(false));
    assert!(
        bits(&auto) == bits(&off),
        "the automatic choice above 128 rows is not the unpacked one"
    );
    let (on, taken) = run(&tall, Some(true));
    assert!(taken, "packed forced on was not taken");
    for ((name, on), (_, off)) in on.iter().zip(&off) {
        for (i, (a, b)) in on.iter().zip(off).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
                "{name}[{i}]: {a} packed, {b} not"
            );
        }
    }
}

/// On the GPU, whole recurrent layers with their products in K slices or not, with
/// vec4 loads or scalar ones, with each GEMM tile (the GPUs' two-stage and
/// warp-tiled forms forced too), fused or unfused, and row
/// reductions with subgroups or without, all match PyTorch; the choices meant to give
/// the same bits (tiles, vec4) do, and a forced path is taken exactly when forced on.
#[test]
fn every_gpu_product_variant_matches_pytorch_through_whole_recurrent_layers() {
    let _serial = serial();
    let Some(shared) = gpu() else { return };
    let case = CASES[0];
    let gpu = private(&shared);
    let auto = run_case(&case, &gpu);
    assert_matches_pytorch(&auto, "GPU");
    let mut runs: Vec<(String, Vec<u32>)> = Vec::new();
    let forced = [
        (FastPath::SplitK, false),
        (FastPath::SplitK, true),
        (FastPath::Vec4, false),
        (FastPath::Fusion, false),
    ];
    for (path, on) in forced {
        gpu.clear_plan_cache();
        let _forced = fast_path::force(path, on);
        let before = fast_path::taken(path);
        let results = run_case(&case, &gpu);
        assert_eq!(fast_path::taken(path) > before, on, "GPU: {path:?} forced {on}");
        assert_matches_pytorch(&results, &format!("GPU, {path:?} forced {on}"));
        // Split-K forced either way sums in other orders where the automatic choice
        // differs; unfused, a GPU compiler may not contract what it did fused.
        if path == FastPath::Vec4 {
            runs.push((format!("{path:?} {on}"), bits(&results)));
        }
    }
    for tile in ["64x64k16", "128x64k8", "32x32k16", "db128x64k8", "wt128x64k8"] {
        gpu.clear_plan_cache();
        gpu.debug_kernel_variant(Some(tile));
        let results = run_case(&case, &gpu);
        assert_matches_pytorch(&results, &format!("GPU, tile {tile}"));
        runs.push((format!("tile {tile}"), bits(&results)));
    }
    gpu.debug_kernel_variant(None);
    for (what, got) in &runs {
        assert!(
            *got == bits(&auto),
            "GPU: {what} gives other bits than the automatic choice"
        );
    }
    let options = GpuOptions {
        disable_subgroups: true,
        ..GpuOptions::default()
    };
    let no_subgroups = Device::gpu_with(&options).unwrap();
    let results = run_case(&case, &no_subgroups);
    assert_matches_pytorch(&results, "GPU without subgroups");
}

/// On the GPU, whole recurrent layers (an LSTM stack and a GRU stack, each with a
/// state) with their ranges and joins as views of one buffer and written in place
/// (`FastPath::Views`) or copied: the same bits either way and as the automatic
/// choice, PyTorch's numbers, the path taken exactly when forced on, and fewer
/// launches with it.
#[test]
fn views_and_joins_in_place_give_the_same_bits_through_whole_recurrent_layers_on_the_gpu() {
    let _serial = serial();
    let Some(shared) = gpu() else { return };
    let gpu = private(&shared);
    for case in [CASES[0], CASES[2]] {
        gpu.clear_plan_cache();
        let auto = bits(&run_case(&case, &gpu));
        let mut launches = [0; 2];
        for on in [false, true] {
            gpu.clear_plan_cache();
            let _forced = fast_path::force(FastPath::Views, on);
            let before = fast_path::taken(FastPath::Views);
            let dispatches = gpu.stats().dispatches;
            let results = run_case(&case, &gpu);
            launches[on as usize] = gpu.stats().dispatches - dispatches;
            let what = format!("{} on the GPU, views forced {on}", case.prefix);
            assert_eq!(fast_path::taken(FastPath::Views) > before, on, "{what}: taken");
            assert_matches_pytorch(&results, &what);
            assert!(bits(&results) == auto, "{what}: other bits than the automatic choice");
        }
        assert!(
            launches[1] < launches[0],
            "{}: {} launches with views, {} without",
            case.prefix,
            launches[1],
            launches[0]
        );
    }
}

/// Training steps of a two-layer LSTM with a linear head (ten parameters: more than
/// the GPU binds in one Adam launch) give the same bits whether the GPU updates the
/// parameters in as few launches as it can bind or in one each, and end within
/// rounding of the CPU's.
#[test]
fn adam_steps_of_a_recurrent_model_give_the_same_bits_in_one_launch_or_one_per_parameter() {
    let _serial = serial();
    use wgnn::nn::Linear;
    use wgnn::optim::{Adam, AdamConfig, Optimizer};
    let Some(shared) = gpu() else { return };
    let case = CASES[0];
    let run = |dev: &Device, form: Option<&str>| {
        dev.debug_kernel_variant(form);
        let config = RnnConfig {
            num_layers: 2,
            batch_first: true,
            ..Default::default()
        };
        let lstm = Lstm::new(case.input, case.hidden, config, dev);
        let head = Linear::new(case.hidden, 3, dev);
        let mut params = lstm.parameters();
        params.extend(head.parameters());
        assert_eq!(params.len(), 10);
        for (k, p) in params.iter().enumerate() {
            p.assign(&values(&format!("adam.{k}"), p.numel(), 0.07)).unwrap();
        }
        let x_shape = [case.batch, case.steps, case.input];
        let x = Tensor::from_vec(values("adam.x", x_shape.iter().product(), 1.0), &x_shape, dev).unwrap();
        let y = Tensor::from_vec(values("adam.y", case.batch * 3, 1.0), &[case.batch, 3], dev).unwrap();
        let mut opt = Adam::new(
            params.clone(),
            AdamConfig {
                lr: 1e-2,
                ..Default::default()
            },
        );
        for _ in 0..3 {
            let (out, _) = lstm.forward_seq(&x, None);
            let last = out.select(1, case.steps - 1);
            let loss = wgnn::nn::loss::mse(&head.forward(&last), &y);
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        dev.debug_kernel_variant(None);
        params.iter().map(|p| p.to_vec().unwrap()).collect::<Vec<_>>()
    };
    let cpu = run(&Device::cpu(), None);
    let mut first: Option<Vec<u32>> = None;
    for form in ["one launch", "per parameter"] {
        let gpu = private(&shared);
        let got = run(&gpu, Some(form));
        for (k, (g, c)) in got.iter().zip(&cpu).enumerate() {
            let worst = g.iter().zip(c).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 1e-4, "{form}: parameter {k} is {worst} from the CPU's");
        }
        let got: Vec<u32> = got.iter().flatten().map(|v| v.to_bits()).collect();
        match &first {
            None => first = Some(got),
            Some(f) => assert!(*f == got, "{form} gives other bits than one launch"),
        }
    }
}

/// A layer of random kind and shape, its state present or not.
fn any_case() -> impl Strategy<Value = Case> {
    (
        0..3usize,
        1..48usize,
        1..260usize,
        1..3usize,
        1..4usize,
        1..20usize,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(kind, batch, hidden, layers, steps, input, state, batch_first)| Case {
            prefix: "P",
            kind: [Kind::Lstm, Kind::Gru, Kind::Rnn][kind],
            input,
            hidden,
            layers,
            batch_first,
            batch,
            steps,
            state,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]
    /// Random recurrent stacks, below and above the cell split (up to 12,480 units) and
    /// the product splits: the CPU and the GPU agree on every output and gradient.
    #[test]
    fn random_recurrent_layers_agree_between_cpu_and_gpu(case in any_case()) {
        let Some(gpu) = gpu() else { return Ok(()) };
        let _serial = serial();
        let cpu = run_case(&case, &Device::cpu());
        let got = run_case(&case, &gpu);
        for ((name, c), (_, g)) in cpu.iter().zip(&got) {
            let scale = c.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let worst = c.iter().zip(g).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            prop_assert!(worst <= 2e-4 * scale, "{:?}: {} differs by {} (largest value {})", case, name, worst, scale);
        }
    }
}
