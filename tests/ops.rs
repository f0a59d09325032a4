//! Every op, forward and backward: CPU-vs-GPU parity on random inputs of odd sizes,
//! and finite-difference gradient checks on each device.

#[path = "ops/batched.rs"]
mod batched;
mod common;
#[path = "ops/conv.rs"]
mod conv;
#[path = "ops/half.rs"]
mod half;
#[path = "ops/norm.rs"]
mod norm;
#[path = "ops/pool.rs"]
mod pool;

use common::cases::*;
use common::{check_variant, devices, gpu, max_rel_diff, private};
use wgnn::fast_path::{self, FastPath};
use wgnn::nn::loss;
use wgnn::optim::{Optimizer, Sgd, SgdConfig};
use wgnn::{DType, Device, Error, Tensor};

device_tests!(
    argmax_matches_the_cpu_and_picks_the_first_maximum,
    a_parameter_used_twice_gets_the_sum_of_both_gradients,
    a_weight_used_in_many_products_gets_their_summed_gradient_from_one_product,
    large_launches_fold_into_a_two_dimensional_grid,
    dropout_with_p_zero_is_the_identity_and_p_one_zeroes_everything,
    label_tensors_reshape_slice_join_and_select_keeping_their_values,
    an_embedding_lookup_takes_a_batch_of_sequences_of_indices,
    an_index_past_the_table_is_a_typed_error_before_anything_runs,
    gelu_follows_the_exact_erf_and_pytorchs_tanh_form,
    an_op_with_two_outputs_computes_both_in_one_launch,
    views_give_the_bits_of_copies_without_their_launches,
    a_value_and_ranges_of_it_kept_by_one_plan_keep_their_values_over_runs,
    joins_written_in_place_give_the_bits_of_copies,
    a_range_of_a_permutation_copies_only_the_range,
    a_chain_of_elementwise_ops_is_one_launch_with_the_values_of_the_unfused_chain,
    a_product_computes_the_maps_that_read_it_in_its_epilogue,
    an_mlp_training_step_is_nine_launches_before_the_update,
    cross_entropy_is_one_launch_each_way_with_the_values_of_the_per_row_mean,
    values_a_plan_hands_out_and_their_aliases_read_right_run_after_run,
    the_outputs_of_a_realized_op_stay_readable_in_any_order,
    the_gradient_of_max_with_indices_goes_to_the_first_maximum_only,
    every_op_passes_a_finite_difference_gradient_check,
    cross_entropy_passes_a_finite_difference_gradient_check,
    small_and_extreme_arguments_keep_their_precision,
    nan_check_names_the_log_of_a_negative_number_in_the_middle_of_a_chain,
    nan_check_names_zero_over_zero_and_an_overflowing_exp,
    nan_check_names_a_gradient_node_by_the_forward_line_it_came_from,
    nan_check_passes_a_finite_graph_with_the_same_values,
);

/// Output values and the gradient of the readout with respect to every input.
fn evaluate(c: &Case, dev: &Device, seed: u64) -> (Vec<f32>, Vec<Vec<f32>>) {
    let xs = inputs(c, dev, seed);
    let out = (c.f)(&xs);
    let values = out.to_vec().unwrap();
    let grads = readout(&out, seed).backward().unwrap();
    let g = xs
        .iter()
        .map(|x| {
            grads
                .get(x)
                .map(|g| g.to_vec().unwrap())
                .unwrap_or_else(|| vec![0.0; x.numel()])
        })
        .collect();
    (values, g)
}

fn assert_parity(cases: &[Case], tol: f32) {
    let Some(gpu) = gpu() else { return };
    let cpu = Device::cpu();
    for (i, c) in cases.iter().enumerate() {
        let seed = 100 + i as u64;
        let (out_c, grads_c) = evaluate(c, &cpu, seed);
        let (out_g, grads_g) = evaluate(c, &gpu, seed);
        let d = max_rel_diff(&out_g, &out_c);
        assert!(d <= tol, "{} {:?}: forward differs by {d}", c.name, c.shapes);
        for (j, (gg, gc)) in grads_g.iter().zip(&grads_c).enumerate() {
            let d = max_rel_diff(gg, gc);
            assert!(
                d <= tol,
                "{} {:?}: gradient of input {j} differs by {d}",
                c.name,
                c.shapes
            );
        }
    }
}

#[test]
fn elementwise_reduce_and_shape_ops_match_between_cpu_and_gpu() {
    assert_parity(&elementwise_cases(), ELEMENTWISE_TOL);
}

#[test]
fn slicing_joining_and_gathering_match_between_cpu_and_gpu() {
    assert_parity(&sequence_op_cases(), SEQUENCE_OP_TOL);
}

#[test]
fn recurrent_cells_match_between_cpu_and_gpu() {
    assert_parity(&recurrent_cases(), RECURRENT_TOL);
}

#[test]
fn matmuls_match_between_cpu_and_gpu_including_odd_tile_edges() {
    assert_parity(&matmul_cases(), MATMUL_TOL);
}

/// Every GEMM tile the GPU autotune can pick (the two-stage `db` tiles and their
/// warp-tiled `wt` forms, offered to GPUs that are not CPUs, forced here) gives the
/// same bits as every other, so a timing never changes a result, and matches the
/// CPU: on shapes that take the vec4 path without edges, ragged edges in each
/// dimension, scalar loads (rows not a multiple of 4), a split K (long K, small
/// output) and every transpose, forward and backward (whose products have other
/// shapes again), with a bias and ReLU epilogue.
#[test]
fn every_gemm_tile_gives_the_same_bits_and_matches_the_cpu() {
    let Some(shared) = gpu() else { return };
    let gpu = private(&shared);
    // (The two-stage tiles are offered to GPUs that are not CPUs; forced here.)
    let tiles = GEMM_TILES;
    let shapes = [
        (128, 256, 128),
        (37, 70, 13),
        (32, 784, 128),
        (20, 1030, 12),
        (256, 64, 384),
        (4, 8, 4),
    ];
    let run = |dev: &Device, m: usize, k: usize, n: usize, ta: bool, tb: bool, linear: bool| {
        let (out, inputs) = gemm_case(dev, (m, k, n), ta, tb, linear);
        let grads = readout(&out, 4).backward().unwrap();
        let mut values = vec![out.to_vec().unwrap()];
        values.extend(inputs.iter().map(|x| grads.get(x).unwrap().to_vec().unwrap()));
        values
    };
    for (m, k, n) in shapes {
        for (ta, tb, linear) in [
            (false, false, false),
            (true, false, false),
            (false, true, false),
            (true, true, false),
            (false, true, true),
        ] {
            let what = format!("{m}x{k}x{n} ta {ta} tb {tb} linear {linear}");
            let cpu = run(&Device::cpu(), m, k, n, ta, tb, linear);
            let mut first = None;
            for tile in tiles {
                gpu.clear_plan_cache();
                gpu.debug_kernel_variant(Some(tile));
                let got = run(&gpu, m, k, n, ta, tb, linear);
                check_variant(&what, tile, &got, &cpu, MATMUL_TOL, &mut first);
            }
        }
    }
    gpu.debug_kernel_variant(None);
}

/// The two-stage GEMM tiles and their warp-tiled forms (offered to GPUs, forced on
/// any adapter), and where the adapter is a CPU its flat tiles (no workgroup memory,
/// no barrier) and, where its subgroups are 8 lanes, their subgroup-shuffle form,
/// give the bits of the tiled GEMM: every m, n, k in {1, 3, 5, 127, 129, 784} in all
/// four transposes (vec4 loads where rows allow, ragged edges, a K split where K is
/// long and the output small), each tile forced and the profiler confirming it ran.
#[test]
fn every_gemm_tile_gives_the_bits_of_the_tiled_gemm_for_every_size() {
    let Some(shared) = gpu() else { return };
    let gpu = private(&shared);
    gpu.set_profile(true);
    let sizes = [1, 3, 5, 127, 129, 784];
    // The tiled GEMM, then the GPU tiles: two-stage and warp-tiled.
    let mut tiles = vec!["32x32k16"];
    tiles.extend(GEMM_TILES.iter().filter(|t| t.starts_with("db") || t.starts_with("wt")));
    if gpu.info().device_type == "Cpu" {
        tiles.extend(FLAT_GEMM_TILES);
    }
    if shuffles_offered(&gpu) {
        tiles.extend(["shuf8x32", "shuf16x32", "shuf32x32", "shuf48x32"]);
    }
    let mut cases = Vec::new();
    for m in sizes {
        for k in sizes {
            for n in sizes {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    cases.push((m, k, n, ta, tb));
                }
            }
        }
    }
    for (i, (m, k, n, ta, tb)) in cases.into_iter().enumerate() {
        let what = format!("{m}x{k}x{n} ta {ta} tb {tb}");
        let a = Tensor::randn(&if ta { [k, m] } else { [m, k] }, 2 * i as u64, &gpu).unwrap();
        let b = Tensor::randn(&if tb { [n, k] } else { [k, n] }, 2 * i as u64 + 1, &gpu).unwrap();
        let mut first: Option<Vec<u32>> = None;
        for &tile in &tiles {
            gpu.clear_plan_cache();
            gpu.debug_kernel_variant(Some(tile));
            let got = a.matmul_t(&b, ta, tb).to_vec().unwrap();
            assert_ran(&gpu, tile, &what);
            let bits: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
            match &first {
                None => first = Some(bits),
                Some(f) => assert!(*f == bits, "{what}: tile {tile} gives other bits than {}", tiles[0]),
            }
        }
    }
    gpu.debug_kernel_variant(None);
}

/// The flat GEMM tiles (and, where subgroups are on, the shuffle tiles) with a bias
/// and ReLU epilogue, backward (products of other shapes and transposes again), a K
/// split forced on and off, scalar loads forced (`FastPath::Vec4` off) and subgroups
/// off: the same bits as the tiled GEMM, and the CPU's values.
#[test]
fn flat_gemm_tiles_give_the_same_bits_with_epilogues_gradients_and_every_switch() {
    let Some(shared) = gpu() else { return };
    if shared.info().device_type != "Cpu" {
        return;
    }
    let options = wgnn::GpuOptions {
        disable_subgroups: true,
        ..Default::default()
    };
    let devices = [private(&shared), Device::gpu_with(&options).unwrap()];
    let tiles = ["32x32k16", "64x64k16", "flat3x32", "flat4x32", "flat6x32", "flat4x64"];
    let run = |dev: &Device, (m, k, n): (usize, usize, usize), ta: bool, tb: bool| {
        let leaf = |shape: [usize; 2], seed| Tensor::randn(&shape, seed, dev).unwrap().requires_grad().unwrap();
        let a = leaf(if ta { [k, m] } else { [m, k] }, 1);
        let b = leaf(if tb { [n, k] } else { [k, n] }, 2);
        let bias_leaf = leaf([1, n], 3);
        let bias = bias_leaf.reshape(&[n]);
        let out = if tb && !ta {
            a.linear(&b, Some(&bias)).relu()
        } else {
            (a.matmul_t(&b, ta, tb) + bias).relu()
        };
        let grads = readout(&out, 4).backward().unwrap();
        let mut values = vec![out.to_vec().unwrap()];
        for x in [&a, &b, &bias_leaf] {
            values.push(grads.get(x).unwrap().to_vec().unwrap());
        }
        values
    };
    let switches = [
        None,
        Some((FastPath::SplitK, true)),
        Some((FastPath::SplitK, false)),
        Some((FastPath::Vec4, false)),
    ];
    for gpu in &devices {
        gpu.set_profile(true);
        for shape in [(32, 784, 128), (37, 70, 13), (5, 129, 3), (128, 256, 64)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let cpu = run(&Device::cpu(), shape, ta, tb);
                for switch in switches {
                    let _forced = switch.map(|(path, on)| fast_path::force(path, on));
                    let what = format!("{shape:?} ta {ta} tb {tb} {switch:?}");
                    let mut first = None;
                    let shuffles = ["shuf8x32", "shuf16x32", "shuf32x32", "shuf48x32"];
                    let offered = if shuffles_offered(gpu) { &shuffles[..] } else { &[] };
                    for &tile in tiles.iter().chain(offered) {
                        gpu.clear_plan_cache();
                        gpu.debug_kernel_variant(Some(tile));
                        let got = run(gpu, shape, ta, tb);
                        assert_ran(gpu, tile, &what);
                        check_variant(&what, tile, &got, &cpu, MATMUL_TOL, &mut first);
                    }
                }
            }
        }
        gpu.debug_kernel_variant(None);
    }
}

/// Every GEMM launch `dev` profiled since the last call ran `tile` (with a K split
/// or not); the profile is reset.
/// Whether the adapter is offered the subgroup-shuffle flat tiles: a CPU adapter
/// whose subgroups are eight lanes (llvmpipe on AVX2), subgroups on.
pub(crate) fn shuffles_offered(dev: &Device) -> bool {
    let info = dev.info();
    info.device_type == "Cpu" && info.subgroups && info.subgroup_sizes == (8, 8)
}

fn assert_ran(dev: &Device, tile: &str, what: &str) {
    let report = dev.profile_report();
    dev.reset_profile();
    let ran: Vec<String> = report
        .plans
        .iter()
        .flat_map(|p| &p.launches)
        .filter(|l| l.kernel.starts_with("matmul") && !l.variant.is_empty())
        .map(|l| l.variant.clone())
        .collect();
    assert!(
        !ran.is_empty() && ran.iter().all(|v| v.starts_with(tile)),
        "{what}: tile {tile} forced, the GEMMs ran {ran:?}"
    );
}

/// Row reductions take the subgroup path where the adapter has `SUBGROUP` (lavapipe
/// has it) and the workgroup-memory tree where it has not or where
/// `GpuOptions::disable_subgroups` says so: both match the CPU, sums and maxima,
/// short rows and rows long enough to be split into chunks, and each repeats its
/// bits from run to run.
#[test]
fn row_reductions_match_the_cpu_with_and_without_subgroups() {
    let Some(shared) = gpu() else { return };
    let with = private(&shared);
    let without = Device::gpu_with(&wgnn::GpuOptions {
        backends: shared.info().backend.to_lowercase(),
        disable_subgroups: true,
        ..Default::default()
    })
    .unwrap();
    let cpu = Device::cpu();
    let mut paths = Vec::new();
    for dev in [&with, &without] {
        dev.set_profile(true);
        for n in [1, 7, 33, 129, 1000, 70_000] {
            for max in [false, true] {
                let run = |d: &Device| {
                    let x = Tensor::randn(&[3, n], 11, d).unwrap();
                    let r = if max {
                        x.max_axis(1, false)
                    } else {
                        x.sum_axis(1, false)
                    };
                    r.to_vec().unwrap()
                };
                let (got, want) = (run(dev), run(&cpu));
                let tol = if max { 0.0 } else { 1e-4 * (n as f32).sqrt() };
                assert!(
                    max_rel_diff(&got, &want) <= tol,
                    "{dev}: n {n} max {max}: {got:?} vs {want:?}"
                );
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&run(dev)), bits(&got), "{dev}: n {n}: another run gave other bits");
            }
        }
        let report = dev.profile_report();
        let launches = report.plans.iter().flat_map(|p| &p.launches);
        let rows: Vec<&str> = launches
            .filter(|l| l.kernel.starts_with("reduce_rows"))
            .map(|l| l.variant.as_str())
            .collect();
        assert!(!rows.is_empty(), "{dev}: no row reduction ran");
        paths.push(rows.iter().all(|v| *v == "subgroups"));
    }
    assert!(!paths[1], "disable_subgroups: the plain path must run");
    if shared.info().name.contains("llvmpipe") {
        assert!(paths[0], "lavapipe has SUBGROUP: the subgroup path must run");
    }
}

/// A join of more inputs than one launch reads (7): every value lands where the CPU
/// puts it, along the first and a middle axis, for floats and labels, whether the
/// GPU copies a launch's inputs in one dispatch or one each (the autotune's choice).
#[test]
fn joining_many_inputs_copies_every_word_in_one_dispatch_or_one_each() {
    let Some(shared) = gpu() else { return };
    let run = |dev: &Device| {
        let pieces: Vec<Tensor> = (0..10)
            .map(|i| Tensor::randn(&[3, 1 + i % 4, 5], 20 + i as u64, dev).unwrap())
            .collect();
        let refs: Vec<&Tensor> = pieces.iter().collect();
        let rows: Vec<Tensor> = (0..8)
            .map(|i| Tensor::randn(&[1 + i % 3, 2, 5], 40 + i as u64, dev).unwrap())
            .collect();
        let row_refs: Vec<&Tensor> = rows.iter().collect();
        let labels: Vec<Tensor> = (0..9u32)
            .map(|i| Tensor::from_labels(&[i, i + 100, u32::MAX - i], dev).unwrap())
            .collect();
        let label_refs: Vec<&Tensor> = labels.iter().collect();
        (
            Tensor::cat(&refs, 1).to_vec().unwrap(),
            Tensor::cat(&row_refs, 0).to_vec().unwrap(),
            Tensor::cat(&label_refs, 0).to_labels().unwrap(),
        )
    };
    let want = run(&Device::cpu());
    for form in ["one launch", "per input"] {
        let gpu = private(&shared);
        gpu.debug_kernel_variant(Some(form));
        assert!(run(&gpu) == want, "{form}: the GPU join differs from the CPU's");
    }
}

#[test]
fn cross_entropy_matches_between_cpu_and_gpu() {
    let Some(gpu) = gpu() else { return };
    for (rows, classes) in [(1, 1), (7, 3), (33, 10), (129, 7), (1000, 10)] {
        let run = |dev: &Device| {
            let logits = Tensor::randn(&[rows, classes], 5, dev)
                .unwrap()
                .requires_grad()
                .unwrap();
            let labels: Vec<u32> = (0..rows as u32).map(|r| (r * 7 + 3) % classes as u32).collect();
            let labels = Tensor::from_labels(&labels, dev).unwrap();
            let l = loss::cross_entropy(&logits, &labels);
            let g = l.backward().unwrap();
            (l.to_vec().unwrap(), g.get(&logits).unwrap().to_vec().unwrap())
        };
        let (lc, gc) = run(&Device::cpu());
        let (lg, gg) = run(&gpu);
        assert!(
            max_rel_diff(&lg, &lc) < CROSS_ENTROPY_TOL && max_rel_diff(&gg, &gc) < CROSS_ENTROPY_TOL,
            "cross_entropy [{rows}, {classes}]"
        );
    }
}

fn argmax_matches_the_cpu_and_picks_the_first_maximum(dev: &Device) {
    let x = Tensor::from_vec(vec![1.0, 3.0, 3.0, 0.0, -1.0, -2.0], &[2, 3], dev).unwrap();
    assert_eq!(x.argmax(1).to_labels().unwrap(), vec![1, 0]);
    assert_eq!(x.argmax(0).to_labels().unwrap(), vec![0, 0, 0]);
    for n in sizes() {
        let x = Tensor::randn(&[3, n], 9, dev).unwrap();
        let cpu = Tensor::randn(&[3, n], 9, &Device::cpu()).unwrap();
        assert_eq!(x.argmax(1).to_labels().unwrap(), cpu.argmax(1).to_labels().unwrap());
    }
}

/// Central differences of the readout, on up to 12 coordinates of each input.
fn gradcheck(c: &Case, dev: &Device) {
    let seed = 7;
    let (_, analytic) = evaluate(c, dev, seed);
    let base: Vec<Vec<f32>> = c
        .shapes
        .iter()
        .enumerate()
        .map(|(i, s)| draw(c.draw, s.iter().product(), seed + i as u64))
        .collect();
    let value_at = |data: &[Vec<f32>]| -> f64 {
        let xs: Vec<Tensor> = data
            .iter()
            .zip(&c.shapes)
            .map(|(d, s)| Tensor::from_vec(d.clone(), s, dev).unwrap())
            .collect();
        // The readout in f64 on the host, so the difference quotient is not lost in
        // f32 summation.
        let out = (c.f)(&xs);
        let w = wgnn::rng::normal(seed ^ 0xabc, out.numel());
        out.to_vec()
            .unwrap()
            .iter()
            .zip(&w)
            .map(|(&o, &w)| o as f64 * w as f64)
            .sum::<f64>()
    };
    let eps = 1e-3f32;
    for (input, grad) in analytic.iter().enumerate() {
        let n = base[input].len();
        for k in 0..n.min(12) {
            let coord = (k * 7919) % n;
            let mut plus = base.clone();
            plus[input][coord] += eps;
            let mut minus = base.clone();
            minus[input][coord] -= eps;
            let numeric = (value_at(&plus) - value_at(&minus)) / (2.0 * eps as f64);
            let a = grad[coord] as f64;
            let err = (numeric - a).abs() / numeric.abs().max(a.abs()).max(1.0);
            assert!(
                err < 2e-2,
                "{} {:?}: input {input}[{coord}]: analytic {a}, numeric {numeric}",
                c.name,
                c.shapes
            );
        }
    }
}

fn every_op_passes_a_finite_difference_gradient_check(dev: &Device) {
    let small = |c: &Case| c.shapes.iter().all(|s| s.iter().product::<usize>() <= 5000);
    for cases in [
        elementwise_cases(),
        matmul_cases(),
        sequence_op_cases(),
        recurrent_cases(),
    ] {
        for c in cases.iter().filter(|c| small(c)) {
            gradcheck(c, dev);
        }
    }
}

fn cross_entropy_passes_a_finite_difference_gradient_check(dev: &Device) {
    let c = case("cross_entropy", vec![vec![5, 4]], Draw::Normal, |x| {
        let labels = Tensor::from_labels(&[0, 3, 1, 1, 2], x[0].device()).unwrap();
        loss::cross_entropy(&x[0], &labels)
    });
    gradcheck(&c, dev);
}

fn a_parameter_used_twice_gets_the_sum_of_both_gradients(dev: &Device) {
    let w = Tensor::from_vec(vec![1.0, -2.0, 3.0], &[3], dev)
        .unwrap()
        .requires_grad()
        .unwrap();
    let f = (&w * &w).sum() + w.sum();
    let g = f.backward().unwrap();
    assert_eq!(g.get(&w).unwrap().to_vec().unwrap(), vec![3.0, -3.0, 7.0]);
}

/// A weight used in several products (an RNN's recurrent weight, once per time
/// step) gets the sum of their gradients, computed as one product over the joined
/// inner dimensions instead of one product per use and a chain of additions: for
/// both forms the joining meets (inner dimension along rows or along columns), uses
/// of different sizes, against sums in f64 on the host.
fn a_weight_used_in_many_products_gets_their_summed_gradient_from_one_product(shared: &Device) {
    let dev = &common::private(shared);
    let leaf = |shape: &[usize], seed| Tensor::randn(shape, seed, dev).unwrap().requires_grad().unwrap();
    let data = |shape: &[usize], seed| Tensor::randn(shape, seed, dev).unwrap();
    // w [4, 6] as x_i·w (x_i [r_i, 4]): dw = Σ x_iᵀ·r_i, joined along rows;
    // u [4, 6] as uᵀ·z_i (z_i [4, c_i]): du = Σ z_i·r_iᵀ, joined along columns.
    let (w, u) = (leaf(&[4, 6], 1), leaf(&[4, 6], 2));
    let sizes = [3usize, 5, 2, 7, 1, 4, 6, 2, 3];
    let xs: Vec<Tensor> = sizes
        .iter()
        .enumerate()
        .map(|(i, &r)| data(&[r, 4], 10 + i as u64))
        .collect();
    let zs: Vec<Tensor> = sizes
        .iter()
        .enumerate()
        .map(|(i, &c)| data(&[4, c], 30 + i as u64))
        .collect();
    let rs: Vec<Tensor> = sizes
        .iter()
        .enumerate()
        .map(|(i, &r)| data(&[r, 6], 50 + i as u64))
        .collect();
    let ts: Vec<Tensor> = sizes
        .iter()
        .enumerate()
        .map(|(i, &c)| data(&[6, c], 70 + i as u64))
        .collect();
    let mut loss = Tensor::full(&[], 0.0, dev);
    for i in 0..sizes.len() {
        loss = &loss + &(&xs[i].matmul(&w) * &rs[i]).sum();
        loss = &loss + &(&u.matmul_t(&zs[i], true, false) * &ts[i]).sum();
    }
    let grads = loss.backward().unwrap();
    dev.set_profile(true);
    let (dw, du) = (
        grads.get(&w).unwrap().to_vec().unwrap(),
        grads.get(&u).unwrap().to_vec().unwrap(),
    );
    let report = dev.profile_report();
    dev.set_profile(false);
    let products: usize = report
        .plans
        .iter()
        .flat_map(|p| &p.launches)
        .filter(|l| l.kernel.starts_with("matmul"))
        .count();
    assert_eq!(products, 2, "one product per weight: {:?}", report.plans);
    // Σ_i Σ_r a_i[r, j]·b_i[r, k] in f64, the inner index r along rows of both.
    let expected = |a: &[Tensor], b: &[Tensor], a_rows: bool, b_rows: bool| {
        let mut sum = vec![0f64; 24];
        for (a, b) in a.iter().zip(b) {
            let (av, bv) = (a.to_vec().unwrap(), b.to_vec().unwrap());
            let inner = if a_rows { a.shape()[0] } else { a.shape()[1] };
            let at = |r: usize, j: usize| if a_rows { av[r * 4 + j] } else { av[j * inner + r] } as f64;
            let bt = |r: usize, k: usize| if b_rows { bv[r * 6 + k] } else { bv[k * inner + r] } as f64;
            for r in 0..inner {
                for j in 0..4 {
                    for k in 0..6 {
                        sum[j * 6 + k] += at(r, j) * bt(r, k);
                    }
                }
            }
        }
        sum
    };
    for (got, want, what) in [
        (&dw, expected(&xs, &rs, true, true), "w"),
        (&du, expected(&zs, &ts, false, false), "u"),
    ] {
        for (g, e) in got.iter().zip(&want) {
            assert!((*g as f64 - e).abs() <= 1e-4 * e.abs().max(1.0), "d{what}: {g} vs {e}");
        }
    }
}

fn large_launches_fold_into_a_two_dimensional_grid(dev: &Device) {
    // 2^24 + 3 elements: more than 65,535 workgroups of 256.
    let n = (1 << 24) + 3;
    let x = Tensor::full(&[n], 2.0, dev);
    let y = x.mul_scalar(1.5).to_vec().unwrap();
    assert_eq!(y.len(), n);
    assert!(y.iter().all(|&v| v == 3.0), "some elements were not written");
    let total = x.sum().item().unwrap() as f64;
    assert!((total - 2.0 * n as f64).abs() / (2.0 * n as f64) < 1e-6, "sum {total}");
}

#[test]
fn dropout_drops_the_same_elements_on_cpu_and_gpu_at_the_expected_rate() {
    let n = 200_003;
    let cpu_mask = |p: f32| {
        let x = Tensor::ones(&[n], &Device::cpu());
        x.dropout(p, 2024).to_vec().unwrap()
    };
    for p in [0.1f32, 0.5, 0.9] {
        let reference = cpu_mask(p);
        let kept = reference.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
        assert!((kept - (1.0 - p as f64)).abs() < 0.005, "p = {p}: kept {kept}");
        assert!(
            reference.iter().all(|&v| v == 0.0 || v == 1.0 / (1.0 - p)),
            "p = {p}: scale"
        );
        for dev in devices() {
            let x = Tensor::from_vec(vec![1.0; n], &[n], &dev)
                .unwrap()
                .requires_grad()
                .unwrap();
            let y = x.dropout(p, 2024);
            let out = y.to_vec().unwrap();
            assert_eq!(out, reference, "{dev}: p = {p}: mask differs from the CPU's");
            // The backward pass regenerates the same mask: d(sum y)/dx = keep / (1 - p).
            let g = y.sum().backward().unwrap();
            assert_eq!(
                g.get(&x).unwrap().to_vec().unwrap(),
                reference,
                "{dev}: p = {p}: gradient mask"
            );
        }
    }
}

fn dropout_with_p_zero_is_the_identity_and_p_one_zeroes_everything(dev: &Device) {
    let x = Tensor::randn(&[129], 3, dev).unwrap();
    assert_eq!(x.dropout(0.0, 1).to_vec().unwrap(), x.to_vec().unwrap());
    assert!(x.dropout(1.0, 1).to_vec().unwrap().iter().all(|&v| v == 0.0));
}

fn label_tensors_reshape_slice_join_and_select_keeping_their_values(dev: &Device) {
    // Large labels too: their bits as f32 are NaNs and denormals, which copies keep.
    let labels: Vec<u32> = vec![0, 1, 2, 3, 4, 5, 0x7fc0_0001, 0xffff_ffff, 7, 8, 9, 10];
    let t = Tensor::from_labels(&labels, dev).unwrap().reshape(&[3, 4]);
    assert_eq!(t.dtype(), DType::U32);
    assert_eq!(t.narrow(1, 1, 2).to_labels().unwrap(), vec![1, 2, 5, 0x7fc0_0001, 8, 9]);
    assert_eq!(
        t.select(0, 1).to_labels().unwrap(),
        vec![4, 5, 0x7fc0_0001, 0xffff_ffff]
    );
    assert_eq!(t.select(1, 3).to_labels().unwrap(), vec![3, 0xffff_ffff, 10]);
    let both = Tensor::cat(&[&t.narrow(0, 2, 1), &t.narrow(0, 0, 1)], 0);
    assert_eq!(both.to_labels().unwrap(), vec![7, 8, 9, 10, 0, 1, 2, 3]);
    assert_eq!(t.t().to_labels().unwrap()[..4], [0, 4, 7, 1]);
    let stacked = Tensor::stack(&[&t.select(1, 0), &t.select(1, 1)], 1);
    assert_eq!(stacked.shape(), &[3, 2]);
    assert_eq!(stacked.to_labels().unwrap(), vec![0, 1, 4, 5, 7, 8]);
}

fn an_embedding_lookup_takes_a_batch_of_sequences_of_indices(dev: &Device) {
    // A [num, dim] table and [batch, time] indices: rows gathered into [batch, time, dim],
    // and the table's gradient counts each row as often as it was picked.
    let (num, dim) = (5, 3);
    let table: Vec<f32> = (0..num * dim).map(|i| i as f32).collect();
    let w = Tensor::from_vec(table.clone(), &[num, dim], dev)
        .unwrap()
        .requires_grad()
        .unwrap();
    let idx = [4u32, 0, 4, 2, 2, 4];
    let ids = Tensor::from_labels(&idx, dev).unwrap().reshape(&[2, 3]);
    let out = w.index_select(0, &ids.reshape(&[6])).reshape(&[2, 3, dim]);
    let expected: Vec<f32> = idx
        .iter()
        .flat_map(|&r| table[r as usize * dim..][..dim].to_vec())
        .collect();
    assert_eq!(out.to_vec().unwrap(), expected);
    let g = out.sum().backward().unwrap();
    let counts = [1.0, 0.0, 2.0, 0.0, 3.0];
    let expected: Vec<f32> = counts.iter().flat_map(|&c| vec![c; dim]).collect();
    assert_eq!(g.get(&w).unwrap().to_vec().unwrap(), expected);
}

fn an_index_past_the_table_is_a_typed_error_before_anything_runs(dev: &Device) {
    let w = Tensor::zeros(&[4, 2], dev);
    let ids = Tensor::from_labels(&[1, 4, 0], dev).unwrap();
    match w.index_select(0, &ids).to_vec() {
        Err(Error::LabelOutOfRange {
            label: 4,
            index: 1,
            classes: 4,
            ..
        }) => {}
        other => panic!("expected LabelOutOfRange, got {other:?}"),
    }
}

/// erf in f64 from its Taylor series (exact to ~1e-12 for |x| < 4).
fn erf64(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

fn gelu_follows_the_exact_erf_and_pytorchs_tanh_form(dev: &Device) {
    let xs: Vec<f32> = (0..161).map(|i| -4.0 + i as f32 * 0.05).collect();
    let x = Tensor::from_vec(xs.clone(), &[xs.len()], dev).unwrap();
    let (erf, gelu, gelu_tanh) = (
        x.erf().to_vec().unwrap(),
        x.gelu().to_vec().unwrap(),
        x.gelu_tanh().to_vec().unwrap(),
    );
    for (i, &v) in xs.iter().enumerate() {
        let v = v as f64;
        let k = (2.0 / std::f64::consts::PI).sqrt();
        let want = [
            erf64(v),
            0.5 * v * (1.0 + erf64(v / 2f64.sqrt())),
            0.5 * v * (1.0 + (k * (v + 0.044715 * v * v * v)).tanh()),
        ];
        for (got, want) in [erf[i], gelu[i], gelu_tanh[i]].iter().zip(want) {
            assert!(
                (*got as f64 - want).abs() < 1e-6 * want.abs().max(1.0),
                "x = {v}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn scatter_add_gives_the_same_bits_on_cpu_and_gpu() {
    let Some(gpu) = gpu() else { return };
    // Many sources per row, in random order, with values of mixed magnitude: any
    // other summation order would change low bits.
    for (m, rows, inner) in [(1, 1, 1), (1000, 7, 33), (4099, 129, 3)] {
        let idx: Vec<u32> = wgnn::rng::uniform(5, m, 0.0, rows as f32)
            .iter()
            .map(|u| (*u as u32).min(rows as u32 - 1))
            .collect();
        let data: Vec<f32> = wgnn::rng::normal(6, m * inner)
            .iter()
            .enumerate()
            .map(|(i, v)| v * 10f32.powi((i % 7) as i32 - 3))
            .collect();
        let run = |dev: &Device| {
            let src = Tensor::from_vec(data.clone(), &[m, inner], dev).unwrap();
            let ids = Tensor::from_labels(&idx, dev).unwrap();
            src.scatter_add(0, &ids, rows).to_vec().unwrap()
        };
        let (c, g) = (run(&Device::cpu()), run(&gpu));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&c), bits(&g), "m = {m}, rows = {rows}, inner = {inner}");
    }
}

/// Views (`FastPath::Views`): the entries of an unbind along the leading axis and
/// narrows along leading axes (at offsets of 4 and 9 words: on a GPU whose alignment
/// is larger, a copy), read by products, kept, and differentiated (their gradients'
/// joins are unbinds and narrows of the output's gradient too, and the narrows'
/// gradients pads written in place): the host's values, the same bits with views
/// forced off, and fewer launches with them on.
fn views_give_the_bits_of_copies_without_their_launches(shared: &Device) {
    let dev = &common::private(shared);
    let run = |on: bool| {
        let _forced = fast_path::force(FastPath::Views, on);
        let x = Tensor::randn(&[5, 64, 4], 3, dev).unwrap().requires_grad().unwrap();
        let w = Tensor::randn(&[4, 3], 4, dev).unwrap().requires_grad().unwrap();
        x.realize().unwrap();
        let host = x.to_vec().unwrap();
        let entries = x.unbind(0);
        let flat = x.reshape(&[320, 4]);
        let (four, nine) = (flat.narrow(0, 1, 7), flat.reshape(&[1280]).narrow(0, 9, 60));
        let mut outs: Vec<Tensor> = entries.iter().map(|e| e.matmul(&w).tanh()).collect();
        outs.push(four.matmul(&w));
        let out = Tensor::stack(&outs[..5].iter().collect::<Vec<_>>(), 0);
        let loss = out.sum() + outs[5].sum() * 0.5 + (&nine * &nine).sum();
        let before = dev.stats();
        let grads = loss.backward().unwrap();
        for t in [&entries[2], &four, &nine, &out] {
            t.realize().unwrap();
        }
        let launches = (dev.stats() - before).dispatches;
        assert_eq!(
            entries[2].to_vec().unwrap(),
            host[2 * 256..3 * 256],
            "{dev}: views {on}: entry 2"
        );
        assert_eq!(four.to_vec().unwrap(), host[4..32], "{dev}: views {on}: rows 1..8");
        assert_eq!(nine.to_vec().unwrap(), host[9..69], "{dev}: views {on}: words 9..69");
        let values = [
            out.to_vec().unwrap(),
            grads.get(&x).unwrap().to_vec().unwrap(),
            grads.get(&w).unwrap().to_vec().unwrap(),
        ]
        .concat();
        (values, launches)
    };
    let (copies, copy_launches) = run(false);
    let (views, view_launches) = run(true);
    assert!(views == copies, "{dev}: views change the bits");
    assert!(
        view_launches + 5 <= copy_launches,
        "{dev}: {view_launches} launches with views, {copy_launches} with copies"
    );
}

/// A product and two ranges of it (views of its buffer), all held, are kept by one
/// plan (the CPU hands the product's buffer out and copies the ranges first), run
/// three times on new inputs: each run's values are the product alone computes,
/// the ranges are its rows, and the values handed out by a run stay as they were
/// while later runs write the plan's buffers.
fn a_value_and_ranges_of_it_kept_by_one_plan_keep_their_values_over_runs(shared: &Device) {
    let dev = &common::private(shared);
    let w = Tensor::randn(&[8, 64], 2, dev).unwrap();
    let x = Tensor::randn(&[6, 8], 1, dev).unwrap();
    let mut runs = Vec::new();
    for seed in 0..3 {
        x.assign(&Tensor::randn(&[6, 8], 10 + seed, dev).unwrap().to_vec().unwrap())
            .unwrap();
        let y = x.matmul(&w);
        let (head, row) = (y.narrow(0, 0, 2), y.narrow(0, 3, 1));
        (head.sum() + row.sum()).realize().unwrap();
        let alone = x.matmul(&w).to_vec().unwrap();
        let got = [y.to_vec().unwrap(), head.to_vec().unwrap(), row.to_vec().unwrap()];
        assert_eq!(got[0], alone, "{dev}: run {seed}: the product");
        assert_eq!(got[1], alone[..128], "{dev}: run {seed}: rows 0..2");
        assert_eq!(got[2], alone[192..256], "{dev}: run {seed}: row 3");
        runs.push(([y, head, row], got));
    }
    for (k, (tensors, got)) in runs.iter().enumerate() {
        for (t, want) in tensors.iter().zip(got) {
            assert_eq!(&t.to_vec().unwrap(), want, "{dev}: run {k}'s values changed");
        }
    }
}

/// Joins written in place (`FastPath::Views`, fused plans): a stack of products'
/// activations (one of them kept) is no launch, and the join of its entries a view
/// of it, while a chain whose parts read each other, a part joined twice, a join of
/// joins, a join with a leaf copied in and a join of second outputs (two of one
/// LSTM cell, one of another) stay correct; values and gradients with the bits of
/// copies (views forced off).
fn joins_written_in_place_give_the_bits_of_copies(shared: &Device) {
    let dev = &common::private(shared);
    let run = |on: bool| {
        let _forced = fast_path::force(FastPath::Views, on);
        let leaf = |shape: &[usize], seed| Tensor::randn(shape, seed, dev).unwrap().requires_grad().unwrap();
        let w = leaf(&[64, 64], 1);
        let xs: Vec<Tensor> = (0..4).map(|i| leaf(&[4, 64], 10 + i)).collect();
        let acts: Vec<Tensor> = xs.iter().map(|x| x.matmul(&w).tanh()).collect();
        let joined = Tensor::stack(&acts.iter().collect::<Vec<_>>(), 0);
        let mut chain = vec![xs[0].clone()];
        for _ in 0..3 {
            let next = chain.last().unwrap().matmul(&w).tanh();
            chain.push(next);
        }
        let chained = Tensor::stack(&chain[1..].iter().collect::<Vec<_>>(), 0);
        let twice = Tensor::cat(&[&acts[0], &acts[0]], 0);
        let of_joins = Tensor::cat(
            &[
                &Tensor::stack(&[&acts[1], &acts[2]], 0),
                &Tensor::stack(&[&chain[1], &acts[3]], 0),
            ],
            0,
        );
        let with_leaf = Tensor::cat(&[&xs[1], &acts[2]], 0);
        // The entries of a join written in place, joined again: a view of it.
        let rejoined = Tensor::cat(&joined.unbind(0).iter().collect::<Vec<_>>(), 0);
        // Second outputs as parts (an LSTM cell's h and c, after its activations):
        // two outputs of one cell (one written in place, one copied) and another's.
        let (wg, c0) = (leaf(&[64, 256], 2), leaf(&[4, 64], 3));
        let gates: Vec<Tensor> = xs.iter().map(|x| x.matmul(&wg)).collect();
        let (h_a, c_a) = Tensor::lstm_cell(&gates[0], &gates[1], &c0);
        let (h_b, _) = Tensor::lstm_cell(&gates[2], &gates[3], &c0);
        let cells = Tensor::stack(&[&h_a, &c_a, &h_b], 0);
        let all = [&joined, &chained, &twice, &of_joins, &with_leaf, &rejoined, &cells];
        let loss = all
            .iter()
            .enumerate()
            .map(|(i, t)| (*t * *t).sum() * (i as f32 + 1.0))
            .reduce(|a, b| a + b)
            .unwrap();
        let before = dev.stats();
        let grads = loss.backward().unwrap();
        for t in all.iter().copied().chain([&acts[1]]) {
            t.realize().unwrap();
        }
        let launches = (dev.stats() - before).dispatches;
        let mut values: Vec<f32> = all.iter().flat_map(|t| t.to_vec().unwrap()).collect();
        values.extend(acts[1].to_vec().unwrap());
        for p in xs.iter().chain([&w, &wg, &c0]) {
            values.extend(grads.get(p).unwrap().to_vec().unwrap());
        }
        (values, launches)
    };
    let (copies, copy_launches) = run(false);
    let (joins, join_launches) = run(true);
    assert!(joins == copies, "{dev}: joins change the bits");
    assert!(
        join_launches < copy_launches,
        "{dev}: {join_launches} launches with joins, {copy_launches} with copies"
    );
}

/// `narrow` of a permutation not yet computed narrows its input and permutes the
/// range (a batch-first sequence's last step); a permutation that moves axes of one
/// entry only is a reshape: no launch, and the values and gradients of the
/// permutation computed first; the gradient of a range of a range is the direct
/// range's.
fn a_range_of_a_permutation_copies_only_the_range(shared: &Device) {
    let dev = &common::private(shared);
    let x = Tensor::randn(&[6, 4, 5], 3, dev).unwrap().requires_grad().unwrap();
    let weights = Tensor::randn(&[4, 2, 5], 4, dev).unwrap();
    let last = |computed_first: bool| {
        let batch_first = x.permute(&[1, 0, 2]);
        if computed_first {
            batch_first.realize().unwrap();
        }
        let range = batch_first.narrow(1, 3, 2);
        let grads = (&range * &weights).sum().backward().unwrap();
        (range.to_vec().unwrap(), grads.get(&x).unwrap().to_vec().unwrap())
    };
    assert_eq!(last(false), last(true), "{dev}: narrow of a permutation");
    // A range of a range: its gradient (zeros around zeros around g) is one pad.
    let nested = x.narrow(0, 1, 5).narrow(0, 3, 2);
    let direct = x.narrow(0, 4, 2);
    let weights = Tensor::randn(&[2, 4, 5], 6, dev).unwrap();
    let grad_of = |range: &Tensor| {
        let grads = (range * &weights).sum().backward().unwrap();
        grads.get(&x).unwrap().to_vec().unwrap()
    };
    assert_eq!(
        grad_of(&nested),
        grad_of(&direct),
        "{dev}: gradient of a range of a range"
    );
    let step = x.narrow(0, 5, 1);
    step.realize().unwrap();
    let before = dev.stats();
    let moved = step.permute(&[1, 0, 2]);
    assert_eq!(moved.shape(), &[4, 1, 5]);
    assert_eq!(
        moved.to_vec().unwrap(),
        step.to_vec().unwrap(),
        "{dev}: an axis of one moved"
    );
    assert_eq!(
        (dev.stats() - before).dispatches,
        0,
        "{dev}: moving an axis of one copies nothing"
    );
}

fn an_op_with_two_outputs_computes_both_in_one_launch(shared: &Device) {
    let dev = &common::private(shared);
    let x = Tensor::from_vec(vec![1.0, 5.0, 2.0, 7.0, -1.0, 7.0], &[2, 3], dev).unwrap();
    x.realize().unwrap();
    let (values, indices) = x.max_with_indices(1);
    let before = dev.stats();
    values.realize().unwrap();
    let after = dev.stats();
    assert_eq!(
        after.dispatches - before.dispatches,
        1,
        "one kernel writes both outputs"
    );
    assert_eq!(after.submits - before.submits, 1);
    // Realizing the values kept the indices too: reading them runs nothing.
    assert_eq!(indices.to_labels().unwrap(), vec![1, 0]);
    assert_eq!(dev.stats().dispatches, after.dispatches);
    assert_eq!(values.to_vec().unwrap(), vec![5.0, 7.0]);
}

/// `relu(exp(x·2 + b) − c) · x` with a broadcast bias row: six maps over three
/// inputs, read once each, fuse into one launch (NaN-check mode compiles the same
/// graph unfused, one launch per map). The CPU gives the same bits fused or not (the
/// maps run in the same order on f32 values); a GPU compiler may contract a product
/// and a sum into an fma, so there the values agree to rounding. A value someone
/// holds is not fused away: it is computed and kept.
fn a_chain_of_elementwise_ops_is_one_launch_with_the_values_of_the_unfused_chain(shared: &Device) {
    let dev = &common::private(shared);
    let (rows, cols) = (37, 300);
    let x = Tensor::randn(&[rows, cols], 1, dev).unwrap();
    let b = Tensor::randn(&[cols], 2, dev).unwrap();
    let c = Tensor::randn(&[rows, cols], 3, dev).unwrap();
    let chain = || &(&(&x.mul_scalar(2.0) + &b).exp() - &c).relu() * &x;
    let before = dev.stats();
    let fused = chain().to_vec().unwrap();
    let launches = (dev.stats() - before).dispatches;
    assert_eq!(launches, 1, "six maps, one launch");
    dev.set_check_nan(true);
    let before = dev.stats();
    let plain = chain().to_vec().unwrap();
    assert_eq!((dev.stats() - before).dispatches, 6, "unfused: one launch per map");
    dev.set_check_nan(false);
    match dev.kind() {
        wgnn::DeviceKind::Cpu => assert!(fused.iter().zip(&plain).all(|(f, p)| f.to_bits() == p.to_bits())),
        wgnn::DeviceKind::Gpu => assert!(max_rel_diff(&fused, &plain) < 1e-6),
    }
    // Holding an intermediate keeps it: two launches, both values right.
    let held = &x.mul_scalar(2.0) + &b;
    let out = held.exp();
    let before = dev.stats();
    out.realize().unwrap();
    assert_eq!((dev.stats() - before).dispatches, 2);
    let (h, o) = (held.to_vec().unwrap(), out.to_vec().unwrap());
    assert!(h
        .iter()
        .zip(&o)
        .all(|(h, o)| (h.exp() - o).abs() <= 1e-6 * o.abs().max(1.0)));
}

/// A graph built anew on each call.
type Graph<'a> = Box<dyn Fn() -> Tensor + 'a>;

/// A 2-D product read only by elementwise maps of its shape computes them as it
/// stores its results (ReLU's gradient `g · step(y)`, a
/// scaled difference, an exp), one launch instead of two or more, with the unfused
/// graph's values: bit for bit on the CPU, to rounding on a GPU (whose compiler may
/// contract). Shapes with vec4 and scalar loads, ragged edges and a split K (long K,
/// small output, forced on and off); on the GPU every tile forced gives the same
/// bits (on CPU adapters the flat tiles too). A held product, a batched one or a
/// map that broadcasts a row is not fused.
fn a_product_computes_the_maps_that_read_it_in_its_epilogue(shared: &Device) {
    let dev = &common::private(shared);
    let shapes = [(37, 70, 13), (128, 256, 128), (20, 1030, 12), (4, 8, 4), (3, 5, 1)];
    for (m, k, n) in shapes {
        let what = format!("{dev}: {m}x{k}x{n}");
        let a = Tensor::randn(&[m, k], 1, dev).unwrap();
        let w = Tensor::randn(&[n, k], 2, dev).unwrap();
        let bias = Tensor::randn(&[n], 3, dev).unwrap();
        let y = Tensor::randn(&[m, n], 4, dev).unwrap();
        let s = Tensor::from_vec(vec![0.25], &[1], dev).unwrap();
        let at = Tensor::randn(&[k, m], 8, dev).unwrap();
        let graphs: [(&str, Graph); 3] = [
            ("relu gradient", Box::new(|| &a.matmul_t(&w, false, true) * &y.step())),
            (
                "linear, relu, scaled difference",
                Box::new(|| (&(&a.linear(&w, Some(&bias)).relu() - &y) * &s).mul_scalar(3.0)),
            ),
            (
                "exp of a product of stored transposes",
                Box::new(|| at.matmul_t(&w, true, true).exp()),
            ),
        ];
        for (name, graph) in &graphs {
            let run = |fused: bool| {
                dev.set_check_nan(!fused);
                let before = dev.stats();
                let out = graph().to_vec().unwrap();
                let launches = (dev.stats() - before).dispatches;
                dev.set_check_nan(false);
                (out, launches)
            };
            for split in [None, Some(false), Some(true)] {
                // (A K split changes the order of the sums: both runs under the same.)
                let _split = split.map(|on| fast_path::force(FastPath::SplitK, on));
                dev.clear_plan_cache();
                let (plain, plain_launches) = run(false);
                let (fused, launches) = run(true);
                assert!(
                    launches < plain_launches,
                    "{what}, {name}: {launches} launches fused, {plain_launches} not"
                );
                match dev.kind() {
                    wgnn::DeviceKind::Cpu => assert!(
                        fused.iter().zip(&plain).all(|(f, p)| f.to_bits() == p.to_bits()),
                        "{what}, {name}"
                    ),
                    wgnn::DeviceKind::Gpu => {
                        let d = max_rel_diff(&fused, &plain);
                        assert!(d < 1e-6, "{what}, {name}: {d}");
                    }
                }
            }
        }
        if dev.kind() == wgnn::DeviceKind::Gpu {
            let mut tiles = vec![
                "64x64k16",
                "128x128k8",
                "32x32k16",
                "db128x64k8",
                "db64x64k8",
                "wt128x64k8",
            ];
            if dev.info().device_type == "Cpu" {
                tiles.extend(["flat3x32", "flat6x32", "flat4x64"]);
            }
            if shuffles_offered(dev) {
                tiles.extend(["shuf8x32", "shuf48x32"]);
            }
            let (_, graph) = &graphs[1];
            let mut first: Option<Vec<u32>> = None;
            for tile in tiles {
                dev.clear_plan_cache();
                dev.debug_kernel_variant(Some(tile));
                let bits: Vec<u32> = graph().to_vec().unwrap().iter().map(|x| x.to_bits()).collect();
                match &first {
                    None => first = Some(bits),
                    Some(f) => assert!(*f == bits, "{what}: tile {tile} gives other bits"),
                }
            }
            dev.debug_kernel_variant(None);
        }
    }
    // Not fused: a product someone holds (computed and kept: two launches), and a
    // map that adds a broadcast row (one launch each).
    let a = Tensor::randn(&[8, 6], 5, dev).unwrap();
    let b = Tensor::randn(&[6, 4], 6, dev).unwrap();
    let held = a.matmul(&b);
    let out = held.exp();
    let before = dev.stats();
    out.realize().unwrap();
    assert_eq!((dev.stats() - before).dispatches, 2);
    let (h, o) = (held.to_vec().unwrap(), out.to_vec().unwrap());
    assert!(h
        .iter()
        .zip(&o)
        .all(|(h, o)| (h.exp() - o).abs() <= 1e-6 * o.abs().max(1.0)));
    let row = Tensor::randn(&[4], 7, dev).unwrap();
    let before = dev.stats();
    (&a.matmul(&b) + &row).realize().unwrap();
    assert_eq!(
        (dev.stats() - before).dispatches,
        2,
        "a broadcast row is not read at the output's index"
    );
}

/// The seed's MLP (784-128-10, ReLU, cross-entropy) trained by Adam: the forward and
/// backward of a step are nine launches — two products forward (ReLU in the first's
/// epilogue), the mean cross-entropy, its gradient, the hidden gradient product with
/// ReLU's gradient in its epilogue, the weight gradients' products and the bias
/// gradients' sums — and backward's seed is no launch. (Unfused, as the debugging
/// modes compile it, there are more.) The fused step's loss and updated weights are
/// the unfused step's.
fn an_mlp_training_step_is_nine_launches_before_the_update(shared: &Device) {
    let dev = &common::private(shared);
    // Leaves (from host values), so that a step can be undone with `assign`.
    let param = |shape: &[usize], bound: f32, seed| {
        let values = Tensor::rand(shape, -bound, bound, seed, dev).unwrap().to_vec().unwrap();
        Tensor::from_vec(values, shape, dev).unwrap().requires_grad().unwrap()
    };
    let (w1, b1) = (param(&[128, 784], 0.035, 1), param(&[128], 0.035, 2));
    let (w2, b2) = (param(&[10, 128], 0.088, 3), param(&[10], 0.088, 4));
    let x = Tensor::rand(&[32, 784], 0.0, 1.0, 3, dev).unwrap();
    let y = Tensor::from_labels(&(0..32).map(|i| i % 10).collect::<Vec<u32>>(), dev).unwrap();
    let mut opt = Sgd::new(
        vec![w1.clone(), b1.clone(), w2.clone(), b2.clone()],
        SgdConfig::default(),
    );
    let params = [w1.clone(), b1.clone(), w2.clone(), b2.clone()];
    let start: Vec<Vec<f32>> = params.iter().map(|p| p.to_vec().unwrap()).collect();
    // One SGD step from the starting weights: its launches, then the loss and the
    // updated weights, all bits.
    let mut step = || {
        for (p, v) in params.iter().zip(&start) {
            p.assign(v).unwrap();
        }
        dev.reset_profile();
        let h = x.linear(&w1, Some(&b1)).relu();
        let loss = loss::cross_entropy(&h.linear(&w2, Some(&b2)), &y);
        opt.step(&loss.backward().unwrap()).unwrap();
        let report = dev.profile_report();
        let launches: Vec<String> = report.plans[0]
            .launches
            .iter()
            .filter(|l| l.kernel != "sgd")
            .map(|l| l.kernel.clone())
            .collect();
        let mut values = vec![loss.item().unwrap()];
        values.extend(params.iter().flat_map(|p| p.to_vec().unwrap()));
        (launches, values)
    };
    dev.set_profile(true);
    // The count without K splits (a split product is one launch of two passes).
    let _unsplit = fast_path::force(FastPath::SplitK, false);
    let (fused, fused_values) = step();
    assert_eq!(fused.len(), 9, "{dev}: an MLP step's forward and backward: {fused:?}");
    assert!(!fused.iter().any(|k| k == "fill"), "{dev}: {fused:?}");
    let (unfused, unfused_values) = {
        let _off = fast_path::force(FastPath::Fusion, false);
        step()
    };
    assert!(unfused.len() > 9, "{dev}: unfused {unfused:?}");
    dev.set_profile(false);
    // The whole step, fused and not: the same loss and weights — bit for bit on the
    // CPU (each fused kernel runs the unfused kernels' operations in their order),
    // within float rounding on the GPU (a shader compiler may contract a product
    // tail into an fma).
    assert!(fused_values[0].is_finite(), "{dev}");
    if dev.kind() == wgnn::DeviceKind::Cpu {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&fused_values) == bits(&unfused_values),
            "{dev}: the fused step differs"
        );
    } else {
        let diff = common::max_rel_diff(&fused_values, &unfused_values);
        assert!(diff < 1e-5, "{dev}: the fused step differs by {diff}");
    }
}

/// `cross_entropy` is one kernel forward (the rows' losses and their mean) and one
/// backward (seeded by no launch): the values of the per-row losses' mean and its
/// gradient — bit for bit on the CPU, where both sum in the same order — for batches
/// below and above the kernel's 256 partial sums, and a label out of range is still
/// the typed error.
fn cross_entropy_is_one_launch_each_way_with_the_values_of_the_per_row_mean(shared: &Device) {
    let dev = &common::private(shared);
    for (rows, classes) in [(1, 3), (37, 10), (300, 7), (1000, 2)] {
        let logits = Tensor::rand(&[rows, classes], -4.0, 4.0, rows as u64, dev)
            .unwrap()
            .requires_grad()
            .unwrap();
        let labels: Vec<u32> = (0..rows).map(|i| (i * 7 % classes) as u32).collect();
        let y = Tensor::from_labels(&labels, dev).unwrap();
        let fused = loss::cross_entropy(&logits, &y);
        let before = dev.stats();
        let value = fused.item().unwrap();
        assert_eq!((dev.stats() - before).dispatches, 1, "{dev}: {rows} rows forward");
        let grad = fused.backward().unwrap().get(&logits).unwrap().clone();
        let before = dev.stats();
        let g = grad.to_vec().unwrap();
        assert_eq!((dev.stats() - before).dispatches, 1, "{dev}: {rows} rows backward");
        let plain = loss::cross_entropy_per_row(&logits, &y).mean();
        let want = plain.item().unwrap();
        let want_g = plain.backward().unwrap().get(&logits).unwrap().to_vec().unwrap();
        match dev.kind() {
            wgnn::DeviceKind::Cpu => {
                assert_eq!(value.to_bits(), want.to_bits(), "{rows} rows");
                assert!(
                    g.iter().zip(&want_g).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{rows} rows"
                );
            }
            wgnn::DeviceKind::Gpu => {
                assert!(
                    (value - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{dev}: {value} vs {want}"
                );
                assert!(max_rel_diff(&g, &want_g) < 1e-6, "{dev}: {rows} rows");
            }
        }
    }
    let logits = Tensor::randn(&[2, 3], 9, dev).unwrap();
    let y = Tensor::from_labels(&[0, 3], dev).unwrap();
    match loss::cross_entropy(&logits, &y).item() {
        Err(Error::LabelOutOfRange {
            label: 3,
            index: 1,
            classes: 3,
            ..
        }) => {}
        other => panic!("{dev}: expected LabelOutOfRange, got {other:?}"),
    }
}

/// A plan hands the values someone holds out of its scratch memory (the CPU moves
/// the buffer out and takes pooled memory for the next run instead of copying): a
/// held value, a held reshape of it (the same buffer: copied, not moved twice) and
/// a value computed from it, run after run with the plan from the cache, each with
/// its own right numbers while the earlier runs' values are still held.
fn values_a_plan_hands_out_and_their_aliases_read_right_run_after_run(shared: &Device) {
    let dev = &common::private(shared);
    let mut held = Vec::new();
    for run in 0..4 {
        let data: Vec<f32> = (0..6000).map(|i| ((i + run * 7) % 13) as f32 * 0.25).collect();
        let x = Tensor::from_vec(data.clone(), &[60, 100], dev).unwrap();
        let y = x.mul_scalar(3.0).exp().mul_scalar(0.5);
        let z = y.reshape(&[6000]);
        let s = z.add_scalar(1.0).sum();
        s.realize().unwrap();
        held.push((data, y, z, s));
    }
    for (data, y, z, s) in &held {
        let want: Vec<f32> = data.iter().map(|v| (v * 3.0).exp() * 0.5).collect();
        let (y, z) = (y.to_vec().unwrap(), z.to_vec().unwrap());
        assert!(max_rel_diff(&y, &want) < 1e-5, "{dev}");
        assert_eq!(y, z, "{dev}: the reshape reads the same buffer");
        let total: f32 = want.iter().map(|v| v + 1.0).sum();
        assert!((s.item().unwrap() - total).abs() <= 1e-4 * total, "{dev}");
    }
    assert_eq!(dev.stats().plan_cache_misses, 1, "{dev}: one plan, run four times");
}

fn the_outputs_of_a_realized_op_stay_readable_in_any_order(dev: &Device) {
    let x = Tensor::randn(&[4, 9], 3, dev).unwrap();
    let reference = x.to_vec().unwrap();
    let rows: Vec<&[f32]> = reference.chunks(9).collect();
    let want_idx: Vec<u32> = x.argmax(1).to_labels().unwrap();
    let want_max: Vec<f32> = rows
        .iter()
        .map(|r| r.iter().copied().fold(f32::MIN, f32::max))
        .collect();
    // Indices first (the values are computed and kept beside them), then values.
    let (values, indices) = x.max_with_indices(1);
    assert_eq!(indices.to_labels().unwrap(), want_idx);
    assert_eq!(values.to_vec().unwrap(), want_max);
    // Values only, the indices dropped unread.
    let (values, _) = x.max_with_indices(1);
    assert_eq!(values.to_vec().unwrap(), want_max);
    // A consumer of the second output alone.
    let (_, indices) = x.max_with_indices(1);
    let picked = indices.one_hot(9).sum_axis(0, false);
    assert_eq!(picked.to_vec().unwrap().iter().sum::<f32>(), 4.0);
}

fn the_gradient_of_max_with_indices_goes_to_the_first_maximum_only(dev: &Device) {
    let x = Tensor::from_vec(vec![1.0, 3.0, 3.0, 0.0, 2.0, -1.0], &[2, 3], dev)
        .unwrap()
        .requires_grad()
        .unwrap();
    let w = Tensor::from_vec(vec![10.0, 20.0], &[2], dev).unwrap();
    // With the indices held and with them dropped (recomputed for the gradient).
    let (values, indices) = x.max_with_indices(1);
    let g = (&values * &w).sum().backward().unwrap();
    assert_eq!(
        g.get(&x).unwrap().to_vec().unwrap(),
        vec![0.0, 10.0, 0.0, 0.0, 20.0, 0.0]
    );
    assert_eq!(indices.to_labels().unwrap(), vec![1, 1]);
    let (values, _) = x.max_with_indices(0);
    let g = values.sum().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec().unwrap(), vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
}

/// The largest relative error of `got` against an f64 reference.
fn worst_rel_error(got: &[f32], reference: &[f64]) -> f64 {
    got.iter()
        .zip(reference)
        .map(|(&g, &r)| (g as f64 - r).abs() / r.abs().max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

/// Where a naive formula cancels or rounds away what matters: tanh and log1p of
/// small arguments, BCE-with-logits of confident logits (log1p(e^-|z|), 0 with
/// log(1 + ·)), cross-entropy of large logits (log Σ rounded to the ulp of the max
/// before), small integer powers (exp2(p·log2 x) on the GPU before). Each within a
/// few f32 ulps of an f64 reference on every device.
fn small_and_extreme_arguments_keep_their_precision(dev: &Device) {
    let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), &[v.len()], dev).unwrap();
    let small = [1e-7f32, -1e-5, 3e-4, -0.002, 0.01, -0.07, 0.2, 0.249, 0.251, -0.6, 3.0];
    let ulps = |n: f64| n * f32::EPSILON as f64;

    let tanh_ref: Vec<f64> = small.iter().map(|&x| (x as f64).tanh()).collect();
    let e = worst_rel_error(&t(&small).tanh().to_vec().unwrap(), &tanh_ref);
    assert!(e <= ulps(4.0), "{dev}: tanh off by {e:e} (relative)");

    let log1p_in = [1e-10f32, -1e-7, 1e-5, 3e-3, 0.1, 1.0, 100.0, 1e20];
    let log1p_ref: Vec<f64> = log1p_in.iter().map(|&x| (x as f64).ln_1p()).collect();
    let e = worst_rel_error(&t(&log1p_in).log1p().to_vec().unwrap(), &log1p_ref);
    assert!(e <= ulps(4.0), "{dev}: log1p off by {e:e} (relative)");

    // Confident, correct logits: each term is log1p(e^-|z|).
    let z = [30.0f32, -25.0, 18.0, -40.0];
    let y = [1.0f32, 0.0, 1.0, 0.0];
    let bce_ref = z.iter().map(|&z| (-(z.abs() as f64)).exp().ln_1p()).sum::<f64>() / 4.0;
    let bce = loss::binary_cross_entropy_with_logits(&t(&z), &t(&y)).item().unwrap();
    let e = worst_rel_error(&[bce], &[bce_ref]);
    assert!(e <= ulps(8.0), "{dev}: BCE-with-logits {bce:e} vs {bce_ref:e}");

    let logits = [1e4f32, 1e4 + 1.0, 1e4 - 2.0, -3e4, -3e4 + 0.5, -3e4 + 0.25];
    let labels = Tensor::from_labels(&[0, 2], dev).unwrap();
    let xent = loss::cross_entropy(&Tensor::from_vec(logits.to_vec(), &[2, 3], dev).unwrap(), &labels);
    let row_loss = |row: &[f32], label: usize| {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        s.ln() - (row[label] as f64 - m)
    };
    let xent_ref = (row_loss(&logits[..3], 0) + row_loss(&logits[3..], 2)) / 2.0;
    let e = worst_rel_error(&[xent.item().unwrap()], &[xent_ref]);
    assert!(e <= ulps(8.0), "{dev}: cross-entropy off by {e:e} (relative)");

    let cube_in = [1.5f32, -2.5, 10.1, 0.3, -7.7];
    let cube_ref: Vec<f64> = cube_in.iter().map(|&x| (x as f64).powi(3)).collect();
    let e = worst_rel_error(&t(&cube_in).pow_scalar(3.0).to_vec().unwrap(), &cube_ref);
    assert!(e <= ulps(2.0), "{dev}: x^3 off by {e:e} (relative)");
}

/// A device of `dev`'s kind of its own, in NaN-check mode.
fn checking(dev: &Device) -> Device {
    let dev = private(dev);
    dev.set_check_nan(true);
    dev
}

/// The `NonFinite` error of reading `t`: (op, shape, location, value, index).
fn non_finite(t: &Tensor) -> (String, Vec<usize>, String, f32, usize) {
    match t.to_vec() {
        Err(Error::NonFinite {
            op,
            shape,
            location,
            value,
            index,
            ..
        }) => (op, shape, location, value, index),
        other => panic!("expected a NonFinite error, got {other:?}"),
    }
}

fn nan_check_names_the_log_of_a_negative_number_in_the_middle_of_a_chain(dev: &Device) {
    let dev = checking(dev);
    let x = Tensor::from_vec(vec![1.0, -2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &dev).unwrap();
    let scaled = x.mul_scalar(0.5).add_scalar(0.25);
    let line = line!() + 1;
    let logs = scaled.log();
    let out = logs.mul_scalar(3.0).exp().sum();
    let (op, shape, location, value, index) = non_finite(&out);
    assert_eq!(op, "Unary(Log)");
    assert_eq!(shape, vec![2, 3]);
    assert!(location.starts_with(&format!("tests/ops.rs:{line}:")), "{location}");
    assert!(value.is_nan() && index == 1, "{value} at {index}");
    let message = out.to_vec().unwrap_err().to_string();
    assert!(message.contains(&format!("tests/ops.rs:{line}:")), "{message}");
}

fn nan_check_names_zero_over_zero_and_an_overflowing_exp(dev: &Device) {
    let dev = checking(dev);
    let x = Tensor::from_vec(vec![0.0, 1.0, 2.0], &[3], &dev).unwrap();
    let y = Tensor::from_vec(vec![0.0, 2.0, 4.0], &[3], &dev).unwrap();
    let line = line!() + 1;
    let ratio = &x / &y;
    let (op, _, location, value, index) = non_finite(&ratio.square());
    assert_eq!((op.as_str(), index), ("Binary(Div)", 0));
    assert!(
        value.is_nan() && location.starts_with(&format!("tests/ops.rs:{line}:")),
        "{value} {location}"
    );

    let big = Tensor::from_vec(vec![1.0, 50.0, 100.0], &[3], &dev).unwrap();
    let line = line!() + 1;
    let e = big.exp();
    let (op, _, location, value, index) = non_finite(&e.mul_scalar(0.0).sum());
    assert_eq!((op.as_str(), value, index), ("Unary(Exp)", f32::INFINITY, 2));
    assert!(location.starts_with(&format!("tests/ops.rs:{line}:")), "{location}");
}

fn nan_check_names_a_gradient_node_by_the_forward_line_it_came_from(dev: &Device) {
    let dev = checking(dev);
    let w = Tensor::from_vec(vec![4.0, 0.0, 1.0], &[3], &dev)
        .unwrap()
        .requires_grad()
        .unwrap();
    let line = line!() + 1;
    let root = w.sqrt();
    // Forward values are finite (sqrt(0) = 0); the gradient 1 / (2·sqrt(0)) is not.
    let grads = root.sum().backward().unwrap();
    let (_, shape, location, value, index) = non_finite(grads.get(&w).unwrap());
    assert_eq!((shape, value, index), (vec![3], f32::INFINITY, 1));
    assert!(
        location.contains(&format!(
            "in the backward of the Unary(Sqrt) built at tests/ops.rs:{line}:"
        )),
        "{location}"
    );
}

fn nan_check_passes_a_finite_graph_with_the_same_values(dev: &Device) {
    let graph = |dev: &Device| {
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], dev).unwrap();
        let w = Tensor::from_vec(vec![0.5, -1.0, 0.25, 2.0, 1.5, -0.5], &[3, 2], dev).unwrap();
        x.matmul(&w).tanh().log_softmax(1).to_vec().unwrap()
    };
    let checked = checking(dev);
    assert_eq!(graph(&checked), graph(dev));
    assert!(checked.stats().submits > 1 || checked.kind() == wgnn::DeviceKind::Cpu);
}

/// A GPU of its own in shadow mode.
fn shadowed(gpu: &Device) -> Device {
    let dev = private(gpu);
    dev.set_shadow(Some(wgnn::Tolerance::default()));
    dev
}

#[test]
fn shadow_mode_passes_a_correct_training_step_on_the_gpu() {
    let Some(gpu) = gpu() else { return };
    let dev = shadowed(&gpu);
    let x = Tensor::randn(&[16, 5], 1, &dev).unwrap();
    let labels = Tensor::from_labels(&(0..16).map(|i| i % 3).collect::<Vec<u32>>(), &dev).unwrap();
    let w1 = Tensor::randn(&[8, 5], 2, &dev).unwrap().requires_grad().unwrap();
    let w2 = Tensor::randn(&[3, 8], 3, &dev).unwrap().requires_grad().unwrap();
    let hidden = x.linear(&w1, None).tanh().dropout(0.25, 7);
    let logits = hidden.linear(&w2, None).gelu();
    let loss = loss::cross_entropy(&logits, &labels);
    let grads = loss.backward().unwrap();
    let mut opt = wgnn::optim::Adam::new(vec![w1.clone(), w2.clone()], Default::default());
    wgnn::optim::Optimizer::step(&mut opt, &grads).unwrap();
    assert!(loss.item().unwrap().is_finite());
    assert!(w1.to_vec().unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn shadow_mode_names_the_node_whose_gpu_kernel_is_broken() {
    let Some(gpu) = gpu() else { return };
    let dev = shadowed(&gpu);
    // Break the GPU's `exp` map (only it: the patch matches the unary map's body).
    dev.debug_patch_wgsl("{ return exp(x); }", "{ return exp(x) * 1.01; }");
    let x = Tensor::from_vec(vec![0.1, 0.2, -0.3, 0.4], &[2, 2], &dev).unwrap();
    let before = x.mul_scalar(2.0).tanh();
    let line = line!() + 1;
    let broken = before.exp();
    let after = broken.add_scalar(1.0).log().sum();
    match after.to_vec() {
        Err(Error::Divergence {
            op,
            shape,
            location,
            gpu,
            cpu,
            ..
        }) => {
            assert_eq!((op.as_str(), shape), ("Unary(Exp)", vec![2, 2]));
            assert!(location.starts_with(&format!("tests/ops.rs:{line}:")), "{location}");
            assert!((gpu / cpu - 1.01).abs() < 1e-4, "gpu {gpu} cpu {cpu}");
        }
        other => panic!("expected a Divergence error, got {other:?}"),
    }
    // Without shadow mode the same broken kernel gives a wrong answer silently.
    dev.set_shadow(None);
    let wrong = after.to_vec().unwrap()[0];
    let right = {
        let cpu = Device::cpu();
        let x = Tensor::from_vec(vec![0.1, 0.2, -0.3, 0.4], &[2, 2], &cpu).unwrap();
        x.mul_scalar(2.0)
            .tanh()
            .exp()
            .add_scalar(1.0)
            .log()
            .sum()
            .item()
            .unwrap()
    };
    assert!(
        (wrong - right).abs() > 1e-3,
        "the patch did not break the kernel: {wrong} vs {right}"
    );
}

#[test]
fn attention_matches_between_cpu_and_gpu_forward_and_backward() {
    assert_parity(&attention_cases(), ATTENTION_TOL);
}

/// An embedding lookup's gather over two threads (`FastPath::GatherSplit`, from
/// 16 Ki output words): forward and the table's gradient have the same bits with the
/// split forced on, forced off and automatic, above and below the threshold, and
/// index_select along a middle axis (rows of several outer blocks) too.
#[test]
fn a_gather_split_over_two_threads_gives_the_same_bits_on_both_sides_of_its_threshold() {
    use wgnn::nn::Module as _;
    let dev = Device::cpu_private();
    let path = FastPath::GatherSplit;
    let lookup = |batch: usize, on: Option<bool>| {
        let _forced = on.map(|on| fast_path::force(path, on));
        wgnn::manual_seed(9);
        let table = wgnn::nn::Embedding::new(300, 16, &dev);
        let ids: Vec<u32> = (0..batch * 40).map(|i| (i * 131 % 300) as u32).collect();
        let ids = Tensor::from_labels(&ids, &dev).unwrap().reshape(&[batch, 40]);
        let out = table.forward(&ids);
        let weights = Tensor::randn(out.shape(), 4, &dev).unwrap();
        let grads = (&out * &weights).sum().backward().unwrap();
        let before = fast_path::taken(path);
        let values = [
            out.to_vec().unwrap(),
            grads.get(&table.weight).unwrap().to_vec().unwrap(),
        ]
        .concat();
        (values, fast_path::taken(path) > before)
    };
    // 64 × 40 lookups of 16 words: 40 Ki words; 4 × 40: 2.5 Ki.
    for (batch, above) in [(64, true), (4, false)] {
        let (auto, taken) = lookup(batch, None);
        assert_eq!(taken, above, "batch {batch}: split taken");
        for on in [false, true] {
            let (values, taken) = lookup(batch, Some(on));
            assert_eq!(taken, on, "batch {batch}: forced {on} taken");
            assert!(values == auto, "batch {batch}: forced {on} changes the bits");
        }
    }
    // A middle axis: [3, 50, 200] picking 60 of the 50 (36 Ki words), rows of three outer blocks.
    let x = Tensor::randn(&[3, 50, 200], 5, &dev).unwrap();
    let idx: Vec<u32> = (0..60).map(|i| (i * 7 % 50) as u32).collect();
    let idx = Tensor::from_labels(&idx, &dev).unwrap();
    let host = x.to_vec().unwrap();
    let expected: Vec<f32> = (0..3)
        .flat_map(|o| (0..60).flat_map(move |m| (0..200).map(move |i| (o, m, i))))
        .map(|(o, m, i)| host[(o * 50 + (m * 7 % 50)) * 200 + i])
        .collect();
    for on in [false, true] {
        let _forced = fast_path::force(path, on);
        assert!(
            x.index_select(1, &idx).to_vec().unwrap() == expected,
            "middle axis, split {on}"
        );
    }
}
