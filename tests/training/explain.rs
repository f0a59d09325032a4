//! `wgnn::explain` against Captum 0.9 (`tests/fixtures/make_explain_fixture.py`): on a
//! 6 → 8 tanh → 3 MLP with PyTorch's weights, saliency, gradient × input, and
//! integrated gradients by the trapezoid rule (Captum's, rescaled: see the test) and
//! Gauss–Legendre with their completeness gaps, on each device; and bad input.

use crate::common::{fixture, read_tensor};
use wgnn::explain::{self, IgRule};
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::{Device, Tensor};

crate::device_tests!(explanations_match_captum,);

fn get(name: &str) -> Vec<f32> {
    read_tensor(&fixture("explain.safetensors"), name).1
}

fn close(got: &[f32], name: &str, tol: f32, dev: &Device) {
    let want = get(name);
    assert_eq!(got.len(), want.len(), "{name}");
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0f32, f32::max);
    assert!(worst <= tol, "{dev}: {name} is {worst:e} from Captum's");
}

fn explanations_match_captum(dev: &Device) {
    let model = Sequential::new()
        .add(Linear::new(6, 8, dev))
        .add(nn::Tanh)
        .add(Linear::new(8, 3, dev));
    for (name, p) in model.named_parameters() {
        p.assign(&get(&name)).unwrap();
    }
    let x = Tensor::from_vec(get("x"), &[4, 6], dev).unwrap();
    let target: Vec<u32> = get("target").iter().map(|&t| t as u32).collect();
    let s = explain::saliency(&model, &x, &target).unwrap().to_vec().unwrap();
    close(&s, "saliency", 1e-6, dev);
    let gx = explain::gradient_x_input(&model, &x, &target)
        .unwrap()
        .to_vec()
        .unwrap();
    close(&gx, "input_x_gradient", 1e-6, dev);
    let zero = Tensor::zeros(&[1, 6], dev);
    // Captum's `riemann_trapezoid` weighs its n points by 1/n, not 1/(n − 1) (the ends
    // halved), so its attributions are (n − 1)/n of the trapezoid rule's, and its
    // convergence delta carries that 1/n error; wgnn applies the rule itself.
    let ig = explain::integrated_gradients(&model, &x, &zero, &target, 20).unwrap();
    let scaled: Vec<f32> = ig
        .attributions
        .to_vec()
        .unwrap()
        .iter()
        .map(|a| a * 20.0 / 21.0)
        .collect();
    close(&scaled, "ig_trapezoid", 1e-5, dev);
    let captum_gap = get("ig_trapezoid_delta").into_iter().fold(0.0f32, f32::max);
    let finer = explain::integrated_gradients(&model, &x, &zero, &target, 80).unwrap();
    assert!(
        finer.completeness_gap < ig.completeness_gap && ig.completeness_gap < captum_gap,
        "{dev}: completeness gaps: 80 steps {}, 20 steps {}, Captum's 21 points {captum_gap}",
        finer.completeness_gap,
        ig.completeness_gap
    );
    let gl = explain::integrated_gradients_with(&model, &x, &zero, &target, 8, IgRule::GaussLegendre).unwrap();
    close(&gl.attributions.to_vec().unwrap(), "ig_gauss", 1e-5, dev);
    assert!(
        gl.completeness_gap < 1e-5,
        "{dev}: 8 Gauss-Legendre nodes close the gap: {}",
        gl.completeness_gap
    );

    let o = explain::occlusion(&model, &x, &target, &[2], &[1], 0.0)
        .unwrap()
        .to_vec()
        .unwrap();
    close(&o, "occlusion_w2_s1", 1e-5, dev);
    let o = explain::occlusion(&model, &x, &target, &[3], &[2], 0.5)
        .unwrap()
        .to_vec()
        .unwrap();
    close(&o, "occlusion_w3_s2", 1e-5, dev);
    // SmoothGrad: no noise is saliency; the same seed repeats; another seed differs.
    let sal = explain::saliency(&model, &x, &target).unwrap().to_vec().unwrap();
    let sg0 = explain::smoothgrad(&model, &x, &target, 3, 0.0, 1)
        .unwrap()
        .to_vec()
        .unwrap();
    assert!(
        sg0.iter().zip(&sal).all(|(a, b)| (a - b).abs() <= 1e-6),
        "{dev}: σ 0 is saliency"
    );
    let sg = |seed| {
        explain::smoothgrad(&model, &x, &target, 16, 0.3, seed)
            .unwrap()
            .to_vec()
            .unwrap()
    };
    assert_eq!(sg(5), sg(5), "{dev}: seeded");
    assert_ne!(sg(5), sg(6), "{dev}: another seed, other noise");

    // Permutation importance: a column the model never reads has none; with the model
    // reading only column 0, shuffling it costs accuracy and the rest cost nothing.
    let probe = Sequential::new().add(Linear::new(6, 2, dev));
    let mut w = vec![0.0f32; 12];
    (w[0], w[6]) = (1.0, -1.0);
    probe.named_parameters()[0].1.assign(&w).unwrap();
    probe.named_parameters()[1].1.assign(&[0.0, 0.0]).unwrap();
    let rows: Vec<f32> = (0..40 * 6).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
    let tab = Tensor::from_vec(rows.clone(), &[40, 6], dev).unwrap();
    let labels: Vec<u32> = (0..40).map(|i| u32::from(rows[i * 6] < 0.0)).collect();
    let imp = explain::permutation_importance(&probe, &tab, &labels, 5, 3).unwrap();
    assert!(imp[0].mean > 0.2, "{dev}: the column read: {:?}", imp[0]);
    assert!(
        imp[1..].iter().all(|i| i.mean == 0.0 && i.std == 0.0),
        "{dev}: columns not read: {imp:?}"
    );
    assert_eq!(
        imp,
        explain::permutation_importance(&probe, &tab, &labels, 5, 3).unwrap(),
        "{dev}: seeded"
    );

    let says = |r: wgnn::Result<Tensor>, what: &str| {
        let e = r.expect_err("an error").to_string();
        assert!(e.contains(what), "{e}");
    };
    says(
        explain::saliency(&model, &x, &[0, 1]),
        "inputs of shape [4, 6] and 2 targets",
    );
    says(explain::saliency(&model, &x, &[0, 1, 3, 0]), "target class 3 of row 2");
    says(explain::occlusion(&model, &x, &target, &[2], &[3], 0.0), "strides [3]");
    says(explain::smoothgrad(&model, &x, &target, 0, 0.1, 1), "0 samples");
    let wide = Tensor::zeros(&[1, 5], dev);
    let e = explain::integrated_gradients(&model, &x, &wide, &target, 4).expect_err("an error");
    assert!(e.to_string().contains("baseline of shape [1, 5]"), "{e}");
}

/// On the MNIST MLP (784 → 128 ReLU → 10, one epoch on the committed subset),
/// integrated gradients from a black image at 64 trapezoid intervals add up: the
/// completeness gaps of 8 test digits are below 1% of the score differences they
/// explain (summed: a digit whose score barely differs from the black image's would
/// make a per-row ratio meaningless).
#[test]
fn integrated_gradients_add_up_within_one_percent_at_64_steps_on_the_mnist_mlp() {
    let _serial = crate::common::serial();
    use wgnn::metrics::Metric;
    use wgnn::optim::{Adam, AdamConfig};
    use wgnn::train::{FitConfig, Loss};
    let dev = Device::cpu();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist_5k.csv.gz");
    let (train, test) = wgnn::data::load_mnist_csv_gz(&path).unwrap().shuffle_split(0, 4000);
    wgnn::manual_seed(0);
    let net = Sequential::new()
        .add(Linear::new(784, 128, &dev))
        .add(nn::Relu)
        .add(Linear::new(128, 10, &dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    let mut model = net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy]).unwrap();
    let (x, y) = train.tensors(&dev).unwrap();
    model
        .fit(&x, &y, FitConfig::new().epochs(1).batch_size(32).verbose(0))
        .unwrap();
    let n = 8;
    let sample = Tensor::from_vec(test.features[..n * 784].to_vec(), &[n, 784], &dev).unwrap();
    let black = Tensor::zeros(&[1, 784], &dev);
    let target = &test.labels[..n];
    let ig = explain::integrated_gradients(&model.net, &sample, &black, target, 64).unwrap();
    let at_x = model.net.forward(&sample).to_vec().unwrap();
    let at_b = model.net.forward(&black).to_vec().unwrap();
    let diffs: Vec<f32> = (0..n)
        .map(|i| (at_x[i * 10 + target[i] as usize] - at_b[target[i] as usize]).abs())
        .collect();
    let (gaps, total): (f32, f32) = (ig.row_gaps.iter().sum(), diffs.iter().sum());
    eprintln!(
        "completeness gaps {:?} against score differences {diffs:?}",
        ig.row_gaps
    );
    assert!(
        gaps <= 0.01 * total,
        "completeness gaps {:?} sum to {gaps}, {:.2} % of the score differences {diffs:?}",
        ig.row_gaps,
        100.0 * gaps / total
    );
}
