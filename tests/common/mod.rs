//! Shared by the test binaries: the devices every test runs on.

use wgnn::Device;

#[allow(dead_code)]
pub mod cases;

/// The CPU, and the GPU when one is found. Under `WGNN_REQUIRE_GPU=1` a missing
/// GPU fails the test instead of skipping it.
#[allow(dead_code)]
pub fn devices() -> Vec<Device> {
    let mut out = vec![Device::cpu()];
    match Device::gpu() {
        Ok(gpu) => out.push(gpu),
        Err(e) => {
            if std::env::var("WGNN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("WGNN_REQUIRE_GPU=1 but no GPU adapter: {e}");
            }
            eprintln!("skipping the GPU half of this test: {e}");
        }
    }
    out
}

/// The GPU, or `None` (with a printed reason) when there is none and it is not
/// required.
#[allow(dead_code)]
pub fn gpu() -> Option<Device> {
    devices().into_iter().nth(1)
}

/// A device of the same kind as `dev` with counters and a plan cache of its own
/// (other tests run in parallel on the shared devices).
#[allow(dead_code)]
pub fn private(dev: &Device) -> Device {
    match dev.kind() {
        wgnn::DeviceKind::Cpu => Device::cpu_private(),
        wgnn::DeviceKind::Gpu => Device::gpu_with_backends(&dev.info().backend.to_lowercase()).unwrap(),
    }
}

/// Whether the CPU backend's packed products run one of their SIMD tiles here
/// (AVX-512, or AVX2 with FMA): where they take `FastPath::PackedOperand` by
/// themselves.
#[allow(dead_code)]
pub fn packed_tiles_run() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f")
        || (std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"));
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// Largest absolute difference, scaled by max(1, |expected|).
#[allow(dead_code)]
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// One forced kernel variant's results (the output, then the gradients of the
/// inputs) checked against the CPU's, `expected`, to `tol`, and against the bits
/// of the first variant checked: `first` keeps its name and bits.
#[allow(dead_code)]
#[track_caller]
pub fn check_variant(
    what: &str,
    variant: &str,
    got: &[Vec<f32>],
    expected: &[Vec<f32>],
    tol: f32,
    first: &mut Option<(String, Vec<u32>)>,
) {
    assert_eq!(
        got.len(),
        expected.len(),
        "{what}, {variant}: not the CPU's number of values"
    );
    for (i, (g, c)) in got.iter().zip(expected).enumerate() {
        let d = max_rel_diff(g, c);
        let which = match i {
            0 => "the output".to_string(),
            i => format!("the gradient of input {}", i - 1),
        };
        assert!(d <= tol, "{what}, {variant}: {which} differs from the CPU by {d}");
    }
    let bits: Vec<u32> = got.iter().flatten().map(|x| x.to_bits()).collect();
    match first {
        None => *first = Some((variant.to_string(), bits)),
        Some((name, f)) => assert!(*f == bits, "{what}: {variant} gives other bits than {name}"),
    }
}

/// An output's values and its inputs' gradients as one list, the output first (as
/// [`check_variant`] takes them).
#[allow(dead_code)]
pub fn joined((out, grads): (Vec<f32>, Vec<Vec<f32>>)) -> Vec<Vec<f32>> {
    std::iter::once(out).chain(grads).collect()
}

/// Serializes tests that use the global random stream (`manual_seed`, layer init,
/// dropout), so a seed gives the same numbers whatever else runs at the same time.
#[allow(dead_code)]
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Expands each `fn name(dev: &Device)` into one test per device, `name::cpu` and
/// `name::gpu`, so a failure or a skip names its device. Without an adapter the GPU
/// test skips with a message, and fails under `WGNN_REQUIRE_GPU=1`.
#[macro_export]
macro_rules! device_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn cpu() {
                super::$name(&wgnn::Device::cpu());
            }
            #[test]
            fn gpu() {
                if let Some(dev) = $crate::common::gpu() {
                    super::$name(&dev);
                }
            }
        }
    )*};
}

/// A file in tests/fixtures.
#[allow(dead_code)]
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The MLP of `mlp.safetensors` (Linear 4→8, ReLU, Linear 8→6, Tanh, Linear 6→3,
/// Sigmoid), with PyTorch's weights loaded: the model of the optimizer fixtures.
#[allow(dead_code)]
pub fn fixture_mlp(dev: &Device) -> wgnn::nn::Sequential {
    use wgnn::nn::{self, Linear};
    let mut model = nn::Sequential::new()
        .add(Linear::new(4, 8, dev))
        .add(nn::Relu)
        .add(Linear::new(8, 6, dev))
        .add(nn::Tanh)
        .add(Linear::new(6, 3, dev))
        .add(nn::Sigmoid);
    wgnn::io::load_safetensors(&mut model, fixture("mlp.safetensors")).unwrap();
    model
}

/// Reads a named f32 tensor from a safetensors file (test-side, independent of wgnn).
#[allow(dead_code)]
pub fn read_tensor(path: &std::path::Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    // {"name":{"dtype":"F32","shape":[5,4],"data_offsets":[a,b]},...}
    let entry = &header[header.find(&format!("\"{name}\"")).unwrap()..];
    let num_list = |key: &str| -> Vec<usize> {
        let s = &entry[entry.find(key).unwrap() + key.len()..];
        let s = &s[s.find('[').unwrap() + 1..s.find(']').unwrap()];
        s.split(',')
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().parse().unwrap())
            .collect()
    };
    let (shape, offsets) = (num_list("\"shape\""), num_list("\"data_offsets\""));
    let data = &bytes[8 + header_len + offsets[0]..8 + header_len + offsets[1]];
    (
        shape,
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    )
}

/// The CNN of examples/cnn.rs (and of tests/fixtures/make_cnn_fixture.py):
/// Conv2d(1, 16, 3, padding 1), BatchNorm2d, ReLU, MaxPool2d(2), Conv2d(16, 32, 3,
/// padding 1), BatchNorm2d, ReLU, MaxPool2d(2), Flatten, Linear(32·7·7, 10), whose
/// names are PyTorch's `nn.Sequential` ones (`0.weight`, `1.running_mean`, …).
#[allow(dead_code)]
pub fn example_cnn(dev: &Device) -> wgnn::nn::Sequential {
    use wgnn::nn::{self, BatchNorm2d, Conv2d, ConvConfig, Flatten, Linear, MaxPool2d};
    let same = ConvConfig {
        padding: 1,
        ..Default::default()
    };
    nn::Sequential::new()
        .add(Conv2d::new(1, 16, 3, same, dev))
        .add(BatchNorm2d::new(16, dev))
        .add(nn::Relu)
        .add(MaxPool2d::new(2, 2))
        .add(Conv2d::new(16, 32, 3, same, dev))
        .add(BatchNorm2d::new(32, dev))
        .add(nn::Relu)
        .add(MaxPool2d::new(2, 2))
        .add(Flatten)
        .add(Linear::new(32 * 7 * 7, 10, dev))
}
