//! Products with batch axes (`torch.matmul`'s broadcasting) and vector operands,
//! `Linear` on inputs of any rank, and negative axes: against PyTorch
//! (tests/fixtures/make_batched_fixture.py), one launch per batched product, every
//! GEMM tile giving the same bits. (The parity and finite-difference checks of these
//! ops run with the others, from `batched_matmul_cases` in tests/common/cases.rs.)

use super::common::cases::*;
use super::common::{self, check_variant, fixture, gpu, max_rel_diff, private, read_tensor};
use super::gradcheck;
use wgnn::{Device, Tensor};

crate::device_tests!(
    batched_matmul_matches_pytorch_with_broadcast_batches_and_vectors,
    a_batched_matmul_is_one_launch_with_the_batch_on_the_grid,
    empty_batches_and_matrices_give_empty_or_zero_products,
    linear_applies_to_the_last_axis_of_an_input_of_any_rank,
    negative_axes_match_pytorch,
    negative_axes_name_the_axes_counted_from_the_back,
);

/// A tensor of tests/fixtures/batched.safetensors (make_batched_fixture.py).
fn batched_fixture(name: &str, dev: &Device) -> Tensor {
    let (shape, data) = read_tensor(&fixture("batched.safetensors"), name);
    Tensor::from_vec(data, &shape, dev).unwrap()
}

#[track_caller]
fn assert_matches_fixture(got: &Tensor, name: &str, tol: f32) {
    let (shape, want) = read_tensor(&fixture("batched.safetensors"), name);
    assert_eq!(got.shape(), &shape[..], "{name}: shape");
    let d = max_rel_diff(&got.to_vec().unwrap(), &want);
    assert!(d <= tol, "{name}: differs from PyTorch by {d}");
}

/// `torch.matmul` of operands whose batch axes broadcast (both ways, one side a
/// single matrix) and of vectors, forward and the gradients of both operands.
fn batched_matmul_matches_pytorch_with_broadcast_batches_and_vectors(dev: &Device) {
    for case in ["bcast", "bmm", "shared_b", "shared_a", "vec_mat", "mat_vec"] {
        let leaf = |x: &str| batched_fixture(&format!("{case}.{x}"), dev).requires_grad().unwrap();
        let (a, b) = (leaf("a"), leaf("b"));
        let out = a.matmul(&b);
        assert_matches_fixture(&out, &format!("{case}.out"), 1e-5);
        let w = batched_fixture(&format!("{case}.w"), dev);
        let grads = (&out * &w).sum().backward().unwrap();
        assert_matches_fixture(grads.get(&a).unwrap(), &format!("{case}.grad.a"), 1e-5);
        assert_matches_fixture(grads.get(&b).unwrap(), &format!("{case}.grad.b"), 1e-5);
    }
}

/// The batch is the z axis of one launch's grid, broadcast operands read through
/// zero strides, whatever the transposes: one dispatch per product, and a batch past
/// the 65,535 workgroups a grid axis may have is cut into launches of that many.
fn a_batched_matmul_is_one_launch_with_the_batch_on_the_grid(shared: &Device) {
    let dev = &common::private(shared);
    let data = |shape: &[usize], seed| Tensor::randn(shape, seed, dev).unwrap();
    let cpu = Device::cpu();
    let on_cpu = |t: &Tensor| Tensor::from_vec(t.to_vec().unwrap(), t.shape(), &cpu).unwrap();
    let (a, b) = (data(&[2, 1, 33, 7], 1), data(&[3, 17, 7], 2));
    let (c, d) = (data(&[5, 7, 9], 3), data(&[9, 4], 4));
    type Product = Box<dyn Fn(&Tensor, &Tensor) -> Tensor>;
    let products: [(&str, Product, &Tensor, &Tensor); 3] = [
        (
            "broadcast, B transposed",
            Box::new(|x, y| x.matmul(&y.transpose(-1, -2))),
            &a,
            &b,
        ),
        ("A transposed", Box::new(|x, y| x.transpose(1, 2).matmul(y)), &c, &c),
        ("shared B", Box::new(|x, y| x.matmul(y)), &c, &d),
    ];
    for (what, f, x, y) in &products {
        let before = dev.stats();
        let out = f(x, y);
        out.realize().unwrap();
        assert_eq!((dev.stats() - before).dispatches, 1, "{what}: one launch");
        let want = f(&on_cpu(x), &on_cpu(y)).to_vec().unwrap();
        assert!(max_rel_diff(&out.to_vec().unwrap(), &want) < 1e-5, "{what}");
    }
    let batch = 65_535 + 6;
    let (x, y) = (data(&[batch, 2, 3], 5), data(&[batch, 3, 2], 6));
    let before = dev.stats();
    let out = x.matmul(&y);
    out.realize().unwrap();
    let launches = match dev.kind() {
        wgnn::DeviceKind::Gpu => 2,
        wgnn::DeviceKind::Cpu => 1,
    };
    assert_eq!((dev.stats() - before).dispatches, launches, "{batch} products");
    let want = on_cpu(&x).matmul(&on_cpu(&y)).to_vec().unwrap();
    assert!(max_rel_diff(&out.to_vec().unwrap(), &want) < 1e-5);
}

/// A batch with no products, empty matrices and an empty inner dimension, as
/// `torch.matmul`: empty results, or zeros (and zero gradients) when only K is empty.
fn empty_batches_and_matrices_give_empty_or_zero_products(dev: &Device) {
    for (sa, sb, out) in [
        (vec![0, 3, 4], vec![0, 4, 5], vec![0, 3, 5]),
        (vec![2, 0, 4], vec![2, 4, 5], vec![2, 0, 5]),
        (vec![1, 3, 4], vec![0, 4, 5], vec![0, 3, 5]),
        (vec![2, 3, 0], vec![2, 0, 5], vec![2, 3, 5]),
        (vec![2, 3, 0], vec![0, 5], vec![2, 3, 5]),
    ] {
        let leaf = |s: &[usize]| {
            let ones = vec![1.0; s.iter().product()];
            Tensor::from_vec(ones, s, dev).unwrap().requires_grad().unwrap()
        };
        let (a, b) = (leaf(&sa), leaf(&sb));
        let y = a.matmul(&b);
        assert_eq!(y.shape(), &out[..], "{sa:?} · {sb:?}");
        assert!(y.to_vec().unwrap().iter().all(|&v| v == 0.0), "{sa:?} · {sb:?}");
        let grads = y.sum().backward().unwrap();
        for (t, s) in [(&a, &sa), (&b, &sb)] {
            let g = grads.get(t).map(|g| g.to_vec().unwrap()).unwrap_or_default();
            assert!(
                g.len() == s.iter().product::<usize>() && g.iter().all(|&v| v == 0.0),
                "{sa:?} · {sb:?}"
            );
        }
    }
}

/// `Linear` on `[.., in]`, as `torch.nn.Linear`: the same numbers and gradients as
/// the rows flattened into one 2-D product, for inputs of rank 1 and 3; and a
/// finite-difference check of the input's gradient through the fused activation.
fn linear_applies_to_the_last_axis_of_an_input_of_any_rank(dev: &Device) {
    let _serial = common::serial();
    wgnn::manual_seed(3);
    let layer = wgnn::nn::Linear::new(5, 4, dev);
    for shape in [vec![2, 3, 5], vec![5], vec![1, 2, 1, 5]] {
        let x = Tensor::randn(&shape, 7, dev).unwrap().requires_grad().unwrap();
        let y = wgnn::nn::Module::forward(&layer, &x).tanh();
        let mut out_shape = shape.clone();
        *out_shape.last_mut().unwrap() = 4;
        assert_eq!(y.shape(), &out_shape[..]);
        let rows = x.reshape(&[x.numel() / 5, 5]);
        let flat = rows.linear(&layer.weight, layer.bias.as_ref()).tanh();
        assert_eq!(y.to_vec().unwrap(), flat.to_vec().unwrap(), "{shape:?}");
        let w = Tensor::randn(&out_shape, 8, dev).unwrap();
        let g = (&y * &w).sum().backward().unwrap();
        let gf = (&flat * &w.reshape(flat.shape())).sum().backward().unwrap();
        for (t, what) in [(&x, "x"), (&layer.weight, "weight")] {
            let (a, b) = (
                g.get(t).unwrap().to_vec().unwrap(),
                gf.get(t).unwrap().to_vec().unwrap(),
            );
            assert!(max_rel_diff(&a, &b) < 1e-6, "{shape:?}: d{what}");
        }
    }
    let c = case(
        "linear_rank3",
        vec![vec![2, 3, 5], vec![4, 5], vec![4]],
        Draw::Normal,
        |x| x[0].linear(&x[1], Some(&x[2])).tanh(),
    );
    gradcheck(&c, dev);
}

/// Reductions, softmaxes and shape ops with negative axes, against PyTorch.
fn negative_axes_match_pytorch(dev: &Device) {
    let x = batched_fixture("axes.x", dev).requires_grad().unwrap();
    assert_matches_fixture(&x.sum_axis(-1, false), "axes.sum_m1", 1e-6);
    assert_matches_fixture(&x.mean_axis(-2, true), "axes.mean_m2", 1e-6);
    assert_matches_fixture(&x.max_axis(-1, false), "axes.max_m1", 0.0);
    let argmax = x.argmax(-2).to_labels().unwrap();
    let (_, want) = read_tensor(&fixture("batched.safetensors"), "axes.argmax_m2");
    assert_eq!(argmax.iter().map(|&i| i as f32).collect::<Vec<_>>(), want);
    assert_matches_fixture(&x.softmax(-1), "axes.softmax_m1", 1e-6);
    assert_matches_fixture(&x.log_softmax(-3), "axes.log_softmax_m3", 1e-6);
    assert_matches_fixture(&x.transpose(-1, -3), "axes.transpose_m1_m3", 0.0);
    assert_matches_fixture(&Tensor::cat(&[&x, &x.mul_scalar(2.0)], -1), "axes.cat_m1", 0.0);
    assert_matches_fixture(&x.unsqueeze(-1), "axes.unsqueeze_m1", 0.0);
    let w = batched_fixture("axes.w", dev);
    let grads = (&x.log_softmax(-1) * &w).sum().backward().unwrap();
    assert_matches_fixture(grads.get(&x).unwrap(), "axes.grad.x", 1e-5);
}

/// Every op that takes an axis reads `-1` as the last, `-rank` as the first, as the
/// same axis given from the front (any integer type), and names the op, the axis and
/// the shape when it is out of range.
fn negative_axes_name_the_axes_counted_from_the_back(dev: &Device) {
    let x = Tensor::randn(&[2, 3, 4], 1, dev).unwrap();
    let labels = Tensor::from_labels(&[2, 0, 1], dev).unwrap();
    type AxisOp<'a> = Box<dyn Fn(i64) -> Tensor + 'a>;
    let ops: Vec<(&str, AxisOp)> = vec![
        ("sum_axis", Box::new(|a| x.sum_axis(a, true))),
        ("mean_axis", Box::new(|a| x.mean_axis(a, false))),
        ("max_axis", Box::new(|a| x.max_axis(a, true))),
        ("max_with_indices", Box::new(|a| x.max_with_indices(a).0)),
        ("softmax", Box::new(|a| x.softmax(a))),
        ("log_softmax", Box::new(|a| x.log_softmax(a))),
        ("narrow", Box::new(|a| x.narrow(a, 1, 1))),
        ("select", Box::new(|a| x.select(a, 1))),
        ("unbind", Box::new(|a| x.unbind(a)[1].clone())),
        ("cat", Box::new(|a| Tensor::cat(&[&x, &x], a))),
        ("transpose", Box::new(|a| x.transpose(a, 0))),
        (
            "index_select",
            Box::new(|a| x.narrow(a, 0, 2).index_select(a, &labels.narrow(0, 1, 2))),
        ),
        (
            "permute",
            Box::new(|a| x.permute(&[a, (a + 1).rem_euclid(3), (a + 2).rem_euclid(3)])),
        ),
    ];
    for (name, op) in &ops {
        for axis in 0..3i64 {
            let back = op(axis - 3);
            let front = op(axis);
            assert_eq!(back.shape(), front.shape(), "{name}({})", axis - 3);
            let (b, f) = (back.to_vec().unwrap(), front.to_vec().unwrap());
            assert_eq!(b, f, "{name}({}) is {name}({axis})", axis - 3);
        }
    }
    let labels = |a: i64| x.argmax(a).to_labels().unwrap();
    for axis in 0..3 {
        assert_eq!(labels(axis - 3), labels(axis), "argmax({})", axis - 3);
    }
    assert_eq!(x.unsqueeze(-1).shape(), &[2, 3, 4, 1]);
    assert_eq!(x.unsqueeze(-4).shape(), &[1, 2, 3, 4]);
    assert_eq!(Tensor::stack(&[&x, &x], -1).shape(), &[2, 3, 4, 2]);
    assert_eq!(x.sum_axis(1usize, false).shape(), &[2, 4]);
    assert_eq!(x.sum_axis(-2isize, false).shape(), &[2, 4]);
    assert_eq!(x.sum_axis(1u32, false).shape(), &[2, 4]);
    let g = x.clone().requires_grad().unwrap();
    let (gb, gf) = (
        g.softmax(-2).square().sum().backward().unwrap(),
        g.softmax(1).square().sum().backward().unwrap(),
    );
    assert_eq!(
        gb.get(&g).unwrap().to_vec().unwrap(),
        gf.get(&g).unwrap().to_vec().unwrap()
    );
    for (axis, op) in [(-4i64, "sum_axis"), (3, "sum_axis")] {
        let message = panic_message(|| x.sum_axis(axis, false));
        for needle in [op, &format!("axis {axis}"), "[2, 3, 4]"] {
            assert!(message.contains(needle), "{needle:?} is not in {message:?}");
        }
    }
    let message = panic_message(|| x.unsqueeze(-5));
    assert!(message.contains("unsqueeze") && message.contains("-5"), "{message}");
}

/// The message of the panic `f` raises.
fn panic_message<T>(f: impl FnOnce() -> T) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .err()
        .expect("the op panics");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Every GEMM tile gives a batched product the same bits as every other, and the
/// CPU's values: broadcast batches, transposes, a fused activation, vec4 and scalar
/// loads, ragged edges, forward and backward.
#[test]
fn every_gemm_tile_gives_a_batched_product_the_same_bits() {
    let Some(shared) = gpu() else { return };
    let gpu = private(&shared);
    let mut tiles = GEMM_TILES.to_vec();
    if gpu.info().device_type == "Cpu" {
        tiles.extend(FLAT_GEMM_TILES); // lavapipe's own
    }
    if crate::shuffles_offered(&gpu) {
        tiles.extend(["shuf8x32", "shuf48x32"]);
    }
    let run = |dev: &Device, (m, k, n): (usize, usize, usize), tb: bool| {
        let leaf = |shape: &[usize], seed| Tensor::randn(shape, seed, dev).unwrap().requires_grad().unwrap();
        let a = leaf(&[2, 1, k, m], 1);
        let b = leaf(&if tb { [3, n, k] } else { [3, k, n] }, 2);
        let out = a.transpose(-1, -2).matmul_t(&b, false, tb).relu();
        let grads = readout(&out, 4).backward().unwrap();
        let mut values = vec![out.to_vec().unwrap()];
        for x in [&a, &b] {
            values.push(grads.get(x).unwrap().to_vec().unwrap());
        }
        values
    };
    for shape in [(37, 70, 13), (64, 32, 128), (4, 8, 4)] {
        for tb in [false, true] {
            let cpu = run(&Device::cpu(), shape, tb);
            let mut first = None;
            for &tile in &tiles {
                gpu.clear_plan_cache();
                gpu.debug_kernel_variant(Some(tile));
                let got = run(&gpu, shape, tb);
                check_variant(&format!("{shape:?} tb {tb}"), tile, &got, &cpu, MATMUL_TOL, &mut first);
            }
        }
    }
    gpu.debug_kernel_variant(None);
}
