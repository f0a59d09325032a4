//! Boundaries with the outside world: typed errors for bad input, model files
//! (including one written by PyTorch), and data files.

mod common;
#[path = "io/pytorch_models.rs"]
mod pytorch_models;

use common::{fixture, gpu, max_rel_diff, private, read_tensor, serial};
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::{Device, Error, GpuOptions, Tensor};

device_tests!(
    a_model_saved_by_pytorch_loads_and_gives_pytorchs_outputs,
    saving_and_loading_round_trips_every_parameter,
    f64_f16_and_bf16_files_written_by_pytorch_load_as_pytorchs_float,
    from_vec_with_the_wrong_length_is_a_typed_error,
    labels_out_of_range_are_a_typed_error_when_the_loss_is_computed,
    the_gpu_adapter_reports_its_name_and_limits,
    a_failed_step_leaves_parameters_and_optimizer_state_as_they_were,
);

/// The fixture's architecture: Linear(4, 8), ReLU, Linear(8, 6), Tanh, Linear(6, 3), Sigmoid.
fn fixture_model(dev: &Device) -> Sequential {
    Sequential::new()
        .add(Linear::new(4, 8, dev))
        .add(nn::Relu)
        .add(Linear::new(8, 6, dev))
        .add(nn::Tanh)
        .add(Linear::new(6, 3, dev))
        .add(nn::Sigmoid)
}

fn a_model_saved_by_pytorch_loads_and_gives_pytorchs_outputs(dev: &Device) {
    let (x_shape, x) = read_tensor(&fixture("mlp_io.safetensors"), "input");
    let (_, expected) = read_tensor(&fixture("mlp_io.safetensors"), "output");
    let mut model = fixture_model(dev);
    wgnn::io::load_safetensors(&mut model, fixture("mlp.safetensors")).unwrap();
    let out = model
        .forward(&Tensor::from_vec(x, &x_shape, dev).unwrap())
        .to_vec()
        .unwrap();
    let d = max_rel_diff(&out, &expected);
    assert!(d <= 1e-5, "{dev}: outputs differ from PyTorch's by {d}");
}

fn saving_and_loading_round_trips_every_parameter(dev: &Device) {
    // A directory per device: the CPU and GPU tests may run at the same time.
    let dir = std::env::temp_dir().join(format!("wgnn-io-{}-{:?}", std::process::id(), dev.kind()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let a = fixture_model(dev);
    wgnn::io::save_safetensors(&a, &path).unwrap();
    let mut b = fixture_model(dev);
    wgnn::io::load_safetensors(&mut b, &path).unwrap();
    for ((na, ta), (nb, tb)) in a.named_parameters().iter().zip(b.named_parameters()) {
        assert_eq!(na, &nb);
        assert_eq!(ta.to_vec().unwrap(), tb.to_vec().unwrap(), "{dev}: {na}");
    }
    assert!(!dir.join("model.safetensors.tmp").exists());
}

/// `nn.Linear(16, 8)` state dicts cast by PyTorch to F64, F16 and BF16, edge cases
/// included (tests/fixtures/make_dtype_fixtures.py), load as the f32 values that
/// PyTorch's `tensor.float()` gives, bit for bit.
fn f64_f16_and_bf16_files_written_by_pytorch_load_as_pytorchs_float(dev: &Device) {
    for dtype in ["f64", "f16", "bf16"] {
        let mut layer = Linear::new(16, 8, dev);
        wgnn::io::load_safetensors(&mut layer, fixture(&format!("linear_{dtype}.safetensors"))).unwrap();
        for (name, param) in layer.named_parameters() {
            let (_, expected) = read_tensor(&fixture("linear_as_f32.safetensors"), &format!("{dtype}.{name}"));
            let got = param.to_vec().unwrap();
            for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{dev}: {dtype} {name}[{i}]: loaded {a:e}, PyTorch's float() gives {b:e}"
                );
            }
        }
    }
}

#[test]
fn a_tensor_of_integers_is_refused_naming_its_dtype() {
    use safetensors::tensor::{serialize_to_file, Dtype, TensorView};
    let path = std::env::temp_dir().join(format!("wgnn-int-{}.safetensors", std::process::id()));
    let (weight, bias) = (vec![0u8; 2 * 3 * 4], vec![0u8; 2 * 4]);
    let views = [
        ("weight", TensorView::new(Dtype::I32, vec![2, 3], &weight).unwrap()),
        ("bias", TensorView::new(Dtype::F32, vec![2], &bias).unwrap()),
    ];
    serialize_to_file(views, None, &path).unwrap();
    let mut layer = Linear::new(3, 2, &Device::cpu());
    let before = layer.weight.to_vec().unwrap();
    let err = wgnn::io::load_safetensors(&mut layer, &path).unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert!(matches!(err, Error::Load { .. }), "{err}");
    assert!(err.to_string().contains("\"weight\" is I32"), "{err}");
    assert_eq!(layer.weight.to_vec().unwrap(), before);
}

#[test]
fn strict_loading_reports_every_problem_and_leaves_the_module_untouched() {
    let dev = Device::cpu();
    // Linear(4, 8) then Linear(8, 5): "2.weight" has the wrong shape, "4.*" are
    // unexpected, and "3.weight"/"3.bias" are missing.
    let mut model = Sequential::new()
        .add(Linear::new(4, 8, &dev))
        .add(nn::Relu)
        .add(Linear::new(8, 5, &dev))
        .add(Linear::new(5, 2, &dev));
    let before: Vec<Vec<f32>> = model.parameters().iter().map(|t| t.to_vec().unwrap()).collect();
    let err = wgnn::io::load_safetensors(&mut model, fixture("mlp.safetensors")).unwrap_err();
    let Error::Load { problems, .. } = &err else {
        panic!("expected Error::Load, got {err}")
    };
    let text = problems.join("\n");
    for needle in [
        "\"2.weight\" has shape [6, 8]",
        "missing tensor \"3.weight\"",
        "missing tensor \"3.bias\"",
        "unexpected tensor \"4.weight\"",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    let after: Vec<Vec<f32>> = model.parameters().iter().map(|t| t.to_vec().unwrap()).collect();
    assert_eq!(before, after, "a failed load changed the module");
    assert!(matches!(
        wgnn::io::load_safetensors(&mut model, "/nonexistent/m.safetensors"),
        Err(Error::Io { .. })
    ));
}

fn from_vec_with_the_wrong_length_is_a_typed_error(dev: &Device) {
    let err = Tensor::from_vec(vec![0.0; 5], &[2, 3], dev).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ShapeData {
                len: 5,
                expected: 6,
                ..
            }
        ),
        "{dev}: {err}"
    );
}

fn labels_out_of_range_are_a_typed_error_when_the_loss_is_computed(dev: &Device) {
    let logits = Tensor::randn(&[3, 4], 0, dev).unwrap().requires_grad().unwrap();
    let labels = Tensor::from_labels(&[0, 4, 1], dev).unwrap();
    let loss = nn::loss::cross_entropy(&logits, &labels);
    let err = loss.item().unwrap_err();
    assert!(
        matches!(
            err,
            Error::LabelOutOfRange {
                label: 4,
                index: 1,
                classes: 4,
                ..
            }
        ),
        "{dev}: {err}"
    );
    let grads = loss.backward().unwrap();
    assert!(grads.get(&logits).unwrap().to_vec().is_err(), "{dev}");
}

#[test]
fn asking_for_a_gpu_with_no_backend_is_a_typed_error() {
    assert!(matches!(Device::gpu_with_backends("none"), Err(Error::NoAdapter(_))));
}

#[test]
fn backward_of_a_non_scalar_is_a_typed_error() {
    let x = Tensor::randn(&[2, 2], 0, &Device::cpu())
        .unwrap()
        .requires_grad()
        .unwrap();
    assert!(matches!(x.exp().backward(), Err(Error::Invalid(_))));
}

#[test]
fn idx_files_with_a_wrong_magic_or_a_truncated_payload_are_typed_errors() {
    let dir = std::env::temp_dir().join(format!("wgnn-idx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let images = dir.join("images");
    let labels = dir.join("labels");
    let mut header = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2];
    header.extend([0u8; 8]);
    std::fs::write(&images, &header).unwrap();
    std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 2, 3, 4]).unwrap();
    let ok = wgnn::data::load_idx(&images, &labels).unwrap();
    assert_eq!((ok.n, ok.dim, ok.labels.clone()), (2, 4, vec![3, 4]));

    std::fs::write(&images, [&[0u8, 0, 8, 4][..], &header[4..]].concat()).unwrap();
    assert!(matches!(
        wgnn::data::load_idx(&images, &labels),
        Err(Error::Format { offset: 0, .. })
    ));

    std::fs::write(&images, &header[..header.len() - 3]).unwrap();
    let err = wgnn::data::load_idx(&images, &labels).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
}

fn the_gpu_adapter_reports_its_name_and_limits(dev: &Device) {
    let info = dev.info();
    eprintln!(
        "device: {info} (max storage binding {} bytes)",
        info.max_storage_buffer_binding_size
    );
    assert!(!info.name.is_empty() && info.max_storage_buffer_binding_size > 0);
}

/// On a headless machine (no display, no `XDG_RUNTIME_DIR`) probing the GPU prints
/// nothing: Mesa's device-select layer would otherwise make libwayland print
/// `error: XDG_RUNTIME_DIR is invalid or not set` (src/backend/headless.rs). The
/// probe runs in a child process with that environment: this test binary, running
/// only `headless_probe_child`.
#[test]
fn probing_the_gpu_on_a_headless_machine_prints_nothing() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "headless_probe_child", "--nocapture", "--test-threads=1"])
        .env("WGNN_HEADLESS_PROBE_CHILD", "1")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("WAYLAND_SOCKET")
        .env_remove("NODEVICE_SELECT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("probed: "), "the child did not probe:\n{stdout}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "noise on stderr:\n{stderr}");
}

/// The child of `probing_the_gpu_on_a_headless_machine_prints_nothing`; does
/// nothing unless that test started it.
#[test]
fn headless_probe_child() {
    if std::env::var_os("WGNN_HEADLESS_PROBE_CHILD").is_none() {
        return;
    }
    match Device::gpu() {
        Ok(dev) => println!("probed: {dev}"),
        Err(e) => println!("probed: no GPU ({e})"),
    }
}

/// Where the adapter has `PIPELINE_CACHE`, compiling a plan writes the driver's
/// kernels to `$WGNN_CACHE_DIR`, and a later process loads that file and computes
/// the same values; `WGNN_CACHE_DIR=off` writes nothing. Each run is a child process
/// (this test binary running only `pipeline_cache_child`) with its own environment.
#[test]
fn the_pipeline_cache_is_written_per_adapter_and_read_back_by_a_later_process() {
    let Some(dev) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("wgnn-pipeline-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let xdg = dir.join("xdg");
    // A child with `WGNN_CACHE_DIR` set to `cache` (or unset) and `XDG_CACHE_HOME=xdg`.
    let run = |cache: Option<&std::path::Path>| {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args(["--exact", "pipeline_cache_child", "--nocapture", "--test-threads=1"])
            .env("WGNN_PIPELINE_CACHE_CHILD", "1")
            .env("XDG_CACHE_HOME", &xdg);
        match cache {
            Some(c) => child.env("WGNN_CACHE_DIR", c),
            None => child.env_remove("WGNN_CACHE_DIR"),
        };
        let output = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
        let values = stdout.split("values: ").nth(1).and_then(|rest| rest.lines().next());
        values.expect("the child computed").to_string()
    };
    let files = |d: &std::path::Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(d)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let cache = dir.join("cache");
    let first = run(Some(&cache));
    if dev.info().backend == "Vulkan" {
        let written = files(&cache);
        assert_eq!(written.len(), 1, "one cache file per adapter: {written:?}");
        let name = written[0].file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("wgpu_pipeline_cache_vulkan_"), "{name}");
        assert!(std::fs::metadata(&written[0]).unwrap().len() > 0);
    }
    assert_eq!(
        run(Some(&cache)),
        first,
        "the run that read the cache computed other values"
    );
    // Off: nothing written, not even in the XDG cache folder (where Mesa keeps its own).
    assert_eq!(run(Some(std::path::Path::new("off"))), first);
    assert!(
        !xdg.join("wgnn").exists(),
        "WGNN_CACHE_DIR=off wrote {:?}",
        files(&xdg.join("wgnn"))
    );
    // Unset: the XDG cache folder.
    assert_eq!(run(None), first);
    if dev.info().backend == "Vulkan" {
        assert_eq!(files(&xdg.join("wgnn")).len(), 1);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The child of `the_pipeline_cache_is_written_per_adapter_and_read_back_by_a_later_process`;
/// does nothing unless that test started it.
#[test]
fn pipeline_cache_child() {
    if std::env::var_os("WGNN_PIPELINE_CACHE_CHILD").is_none() {
        return;
    }
    let dev = Device::gpu().unwrap();
    let x = Tensor::from_vec((0..12).map(|i| i as f32 / 7.0).collect(), &[3, 4], &dev).unwrap();
    let y = x.matmul(&x.t()).relu().sum();
    println!("values: {:?}", y.to_vec().unwrap());
}

/// The GPU autotune times the GEMM tiles of a product worth timing once, writes its
/// choice to `tune-<adapter>.txt` in `$WGNN_CACHE_DIR`, and a later process runs the
/// tile the file names without timing again (the file is edited here to name
/// another tile, which the later process must then run, with the same bits: every
/// tile gives the same values); a choice saved for another set of variants is timed
/// again; a product of the same size class with a ragged edge takes the class's
/// choice. `WGNN_AUTOTUNE=0` runs the default tile and writes no file. Each run is a
/// child process (`autotune_child`).
#[test]
fn the_autotune_choice_is_saved_per_adapter_and_used_by_a_later_process() {
    if gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("wgnn-autotune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run_rows = |autotune: bool, rows: usize| {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "autotune_child", "--nocapture", "--test-threads=1"])
            .env("WGNN_AUTOTUNE_CHILD", "1")
            .env("WGNN_AUTOTUNE_ROWS", rows.to_string())
            .env("WGNN_CACHE_DIR", &dir)
            // `keep`: saved even when a busy machine made the timing unsteady.
            .env("WGNN_AUTOTUNE", if autotune { "keep" } else { "0" })
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let field = |name: &str| {
            let line = stdout.split(name).nth(1).and_then(|rest| rest.lines().next());
            line.unwrap_or_else(|| panic!("no {name} in {stdout}")).to_string()
        };
        (field("variant: "), field("values: "))
    };
    let run = |autotune: bool| run_rows(autotune, 256);
    let tune_files = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("tune-"))
            .collect()
    };
    let (untuned, values) = run(false);
    assert!(tune_files().is_empty(), "WGNN_AUTOTUNE=0 wrote {:?}", tune_files());
    let (chosen, tuned_values) = run(true);
    assert_eq!(tuned_values, values, "the timed tile computed other values");
    let files = tune_files();
    assert_eq!(files.len(), 1, "one choice file per adapter: {files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("matmul nn m256 k512 n256"))
        .unwrap_or_else(|| panic!("no choice for the product in {text}"));
    assert_eq!(line.split('\t').nth(1), Some(chosen.as_str()), "{text}");
    // Name another tile: the next process must run it, with the same bits.
    let other = ["32x32k16", "64x64k16"].into_iter().find(|t| *t != chosen).unwrap();
    std::fs::write(&files[0], text.replace(&format!("\t{chosen}"), &format!("\t{other}"))).unwrap();
    assert_eq!(run(true), (other.to_string(), values));
    // A choice saved for another set of variants (here: a key without the set's
    // fingerprint, as older versions wrote) is not used: the product is timed again
    // and its choice saved under its own key.
    let key = line.split('\t').next().unwrap();
    let (bare, _) = key
        .split_once(" #")
        .unwrap_or_else(|| panic!("no fingerprint in {key:?}"));
    std::fs::write(&files[0], format!("{bare}\t{other}\n")).unwrap();
    run(true);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with(key)),
        "not timed again for its own variants: {text}"
    );
    // A product of 240 rows is of the same size class (m256): it takes the class's
    // choice, though its tiles' code differs (a ragged edge), and times nothing.
    let choice = text
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap()
        .split('\t')
        .nth(1)
        .unwrap()
        .to_string();
    let (ragged, _) = run_rows(true, 240);
    assert_eq!(ragged, choice, "the ragged product did not take its class's choice");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let class = text.lines().filter(|l| l.starts_with(&format!("{bare} #"))).count();
    assert_eq!(class, 1, "the ragged product was timed as a class of its own: {text}");
    assert!(!untuned.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The child of `the_autotune_choice_is_saved_per_adapter_and_used_by_a_later_process`;
/// does nothing unless that test started it.
#[test]
fn autotune_child() {
    if std::env::var_os("WGNN_AUTOTUNE_CHILD").is_none() {
        return;
    }
    let dev = Device::gpu().unwrap();
    dev.set_profile(true);
    let rows = std::env::var("WGNN_AUTOTUNE_ROWS").map_or(256, |r| r.parse().unwrap());
    let a = Tensor::randn(&[rows, 512], 1, &dev).unwrap();
    let b = Tensor::randn(&[512, 256], 2, &dev).unwrap();
    let y = a.matmul(&b);
    let bits: Vec<u32> = y.to_vec().unwrap().iter().map(|v| v.to_bits()).collect();
    let report = dev.profile_report();
    let launch = report.plans[0].launches.iter().find(|l| l.kernel == "matmul").unwrap();
    println!("variant: {}", launch.variant);
    println!(
        "values: {:x}",
        bits.iter().fold(0u64, |h, &b| h.rotate_left(5) ^ b as u64)
    );
}

/// Linear(4, 8), Tanh, Linear(8, 3) with fixed weights (no draw from the seed).
fn fixed_model(dev: &Device) -> Sequential {
    let model = Sequential::new()
        .add(Linear::new(4, 8, dev))
        .add(nn::Tanh)
        .add(Linear::new(8, 3, dev));
    for (k, p) in model.parameters().iter().enumerate() {
        let values: Vec<f32> = (0..p.numel())
            .map(|i| ((i * 7 + k * 3) % 11) as f32 / 11.0 - 0.5)
            .collect();
        p.assign(&values).unwrap();
    }
    model
}

fn batch(dev: &Device, feature: f32) -> (Tensor, Tensor) {
    let x: Vec<f32> = (0..24).map(|i| ((i * 5) % 9) as f32 / 4.0 - 1.0).collect();
    let mut x = x;
    x[5] = feature;
    let x = Tensor::from_vec(x, &[6, 4], dev).unwrap();
    let labels = Tensor::from_labels(&[0, 1, 2, 2, 1, 0], dev).unwrap();
    (x, labels)
}

fn train_step(model: &Sequential, opt: &mut dyn Optimizer, x: &Tensor, labels: &Tensor) -> wgnn::Result<f32> {
    let loss = nn::loss::cross_entropy(&model.forward(x), labels);
    opt.step(&loss.backward()?)?;
    loss.item()
}

fn values(model: &Sequential) -> Vec<Vec<f32>> {
    model.parameters().iter().map(|p| p.to_vec().unwrap()).collect()
}

fn a_failed_step_leaves_parameters_and_optimizer_state_as_they_were(dev: &Device) {
    let _seed = serial();
    let dev = private(dev);
    let (x, labels) = batch(&dev, 0.5);
    let adam = |model: &Sequential| {
        Adam::new(
            model.parameters(),
            AdamConfig {
                lr: 0.05,
                ..Default::default()
            },
        )
    };
    let uninterrupted = fixed_model(&dev);
    let mut opt = adam(&uninterrupted);
    for _ in 0..3 {
        train_step(&uninterrupted, &mut opt, &x, &labels).unwrap();
    }

    let model = fixed_model(&dev);
    let mut opt = adam(&model);
    train_step(&model, &mut opt, &x, &labels).unwrap();
    let after_one = values(&model);
    // Refused before the plan runs: a label past the classes.
    let bad_labels = Tensor::from_labels(&[0, 1, 2, 7, 1, 0], &dev).unwrap();
    let e = train_step(&model, &mut opt, &x, &bad_labels).unwrap_err();
    assert!(matches!(e, Error::LabelOutOfRange { label: 7, .. }), "{e}");
    assert_eq!(values(&model), after_one);
    // Stopped in the middle of the plan: an infinite feature under NaN-check mode
    // (the forward matmul is the first node to go non-finite; no update runs).
    dev.set_check_nan(true);
    let (x_inf, _) = batch(&dev, f32::INFINITY);
    let e = train_step(&model, &mut opt, &x_inf, &labels).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    assert_eq!(values(&model), after_one);
    dev.set_check_nan(false);
    // Adam's moments and step count are untouched too: two more steps land exactly
    // where three uninterrupted steps do.
    for _ in 0..2 {
        train_step(&model, &mut opt, &x, &labels).unwrap();
    }
    assert_eq!(values(&model), values(&uninterrupted));
}

#[test]
fn a_tensor_above_a_lowered_storage_binding_limit_is_refused_before_dispatch() {
    let Some(gpu) = gpu() else { return };
    let limit: u64 = 1 << 20;
    let dev = Device::gpu_with(&GpuOptions {
        backends: gpu.info().backend.to_lowercase(),
        max_storage_buffer_binding_size: Some(limit),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(dev.info().max_storage_buffer_binding_size, limit);
    let words = (limit / 4) as usize + 1;
    match Tensor::from_vec(vec![0.0; words], &[words], &dev) {
        Err(Error::DeviceLimit {
            needed,
            limit: l,
            limit_name,
            ..
        }) => assert!(needed > limit && l == limit && limit_name == "max_storage_buffer_binding_size"),
        other => panic!("expected a DeviceLimit error, got {other:?}"),
    }
    // A computed value too large for the device: refused when the plan is compiled.
    let a = Tensor::from_vec(vec![1.0; 1024], &[1024, 1], &dev).unwrap();
    let b = Tensor::from_vec(vec![2.0; 1024], &[1, 1024], &dev).unwrap();
    let outer = a.matmul(&b); // 4 MiB
    let before = dev.stats();
    let e = outer.sum().to_vec().unwrap_err();
    assert!(matches!(e, Error::DeviceLimit { limit: 1048576, .. }), "{e}");
    let message = e.to_string();
    assert!(
        message.contains("1048576") && message.contains("max_storage_buffer_binding_size"),
        "{message}"
    );
    assert_eq!(dev.stats().dispatches, before.dispatches, "nothing was dispatched");
    // Below the limit the device works.
    let small = a.narrow(0, 0, 100).matmul(&b.narrow(1, 0, 100)).sum().item().unwrap();
    assert_eq!(small, 20000.0);
}

#[test]
fn a_kernel_the_driver_rejects_is_a_gpu_error_naming_the_kernel() {
    let Some(gpu) = gpu() else { return };
    let dev = private(&gpu);
    dev.debug_patch_wgsl("{ return exp(x); }", "{ return exp(x, x); }");
    let x = Tensor::from_vec(vec![1.0, 2.0], &[2], &dev).unwrap();
    match x.exp().to_vec() {
        Err(Error::Gpu { context, .. }) => assert!(context.contains("kernel unary"), "{context}"),
        other => panic!("expected a Gpu error, got {other:?}"),
    }
}

#[test]
fn losing_the_device_mid_training_is_a_typed_error_and_training_resumes_on_a_fresh_one() {
    let Some(gpu) = gpu() else { return };
    let _seed = serial();
    let adam = |model: &Sequential| {
        Adam::new(
            model.parameters(),
            AdamConfig {
                lr: 0.05,
                ..Default::default()
            },
        )
    };
    let reference = private(&gpu);
    let (x, labels) = batch(&reference, 0.5);
    let model = fixed_model(&reference);
    let mut opt = adam(&model);
    let losses: Vec<f32> = (0..6)
        .map(|_| train_step(&model, &mut opt, &x, &labels).unwrap())
        .collect();
    let expected = values(&model);

    let path = std::env::temp_dir().join(format!("wgnn-device-loss-{}.ckpt", std::process::id()));
    let doomed = private(&gpu);
    let (x, labels) = batch(&doomed, 0.5);
    let model = fixed_model(&doomed);
    let mut opt = adam(&model);
    for loss in &losses[..3] {
        assert_eq!(train_step(&model, &mut opt, &x, &labels).unwrap(), *loss);
    }
    wgnn::io::save_checkpoint(&model, &opt, &path).unwrap();
    doomed.debug_destroy();
    let e = train_step(&model, &mut opt, &x, &labels).unwrap_err();
    assert!(matches!(e, Error::DeviceLost { .. }), "{e}");
    assert!(e.to_string().contains("load_checkpoint"), "{e}");
    assert!(matches!(model.forward(&x).to_vec(), Err(Error::DeviceLost { .. })));

    // As the message says: a fresh device, the same model and optimizer, the last checkpoint.
    let fresh = private(&gpu);
    let (x, labels) = batch(&fresh, 0.5);
    let mut model = Sequential::new()
        .add(Linear::new(4, 8, &fresh))
        .add(nn::Tanh)
        .add(Linear::new(8, 3, &fresh));
    let mut opt = adam(&model);
    wgnn::io::load_checkpoint(&mut model, &mut opt, &path).unwrap();
    std::fs::remove_file(&path).unwrap();
    for loss in &losses[3..] {
        assert_eq!(train_step(&model, &mut opt, &x, &labels).unwrap(), *loss);
    }
    assert_eq!(values(&model), expected, "bit for bit as the run that never failed");
}
