//! `wgnn::privacy` against Opacus 1.6 (`tests/fixtures/make_privacy_fixture.py`):
//! the ε of `RDPAccountant` over a grid of noise multipliers, sample rates (with and
//! without sampling), steps and δ, its optimal order, and `get_noise_multiplier`'s σ
//! for ε = 1, 3, 8; and the settings it refuses.

use wgnn::privacy;

fn cases(kind: &str) -> Vec<Vec<f64>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/privacy.txt");
    let text = std::fs::read_to_string(path).expect("tests/fixtures/privacy.txt");
    text.lines()
        .filter_map(|l| l.strip_prefix(kind)?.strip_prefix(' '))
        .map(|l| l.split(' ').map(|v| v.parse().expect("a number")).collect())
        .collect()
}

#[test]
fn rdp_epsilon_is_opacus_rdp_accountants() {
    let rows = cases("epsilon");
    assert_eq!(rows.len(), 150);
    let orders = privacy::default_orders();
    for r in rows {
        let (sigma, q, steps, delta, want, alpha) = (r[0], r[1], r[2] as usize, r[3], r[4], r[5]);
        let got = privacy::rdp_epsilon(sigma, q, steps, delta);
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "σ {sigma}, q {q}, {steps} steps, δ {delta}: ε {got}, Opacus {want}"
        );
        let (_, order) = privacy::rdp_epsilon_with_orders(sigma, q, steps, delta, &orders).unwrap();
        assert_eq!(
            order, alpha,
            "σ {sigma}, q {q}, {steps} steps, δ {delta}: the optimal order"
        );
    }
}

#[test]
fn noise_multiplier_for_is_opacus_get_noise_multiplier() {
    let rows = cases("noise_multiplier");
    assert_eq!(rows.len(), 9);
    for r in rows {
        let (eps, delta, q, steps, want) = (r[0], r[1], r[2], r[3] as usize, r[4]);
        let got = privacy::noise_multiplier_for(eps, delta, q, steps, 0.01).unwrap();
        assert!(
            (got - want).abs() <= 1e-12,
            "ε {eps}, q {q}, {steps} steps: σ {got}, Opacus {want}"
        );
        assert!(privacy::rdp_epsilon(got, q, steps, delta) <= eps);
    }
}

#[test]
fn privacy_settings_out_of_range_are_named() {
    let says = |r: wgnn::Result<f64>, what: &str| {
        let e = r.expect_err("an error").to_string();
        assert!(e.contains(what), "{e}");
    };
    says(privacy::try_rdp_epsilon(1.0, 1.5, 10, 1e-5), "sample rate 1.5");
    says(
        privacy::try_rdp_epsilon(1.0, 0.0, 10, 1e-5),
        "sample rate 0 is outside (0, 1]",
    );
    says(privacy::try_rdp_epsilon(-1.0, 0.1, 10, 1e-5), "noise multiplier -1");
    says(privacy::try_rdp_epsilon(1.0, 0.1, 10, 0.0), "δ 0");
    says(privacy::noise_multiplier_for(0.0, 1e-5, 0.1, 10, 0.01), "target ε 0");
    says(privacy::noise_multiplier_for(1e-9, 1e-5, 1.0, 100_000, 0.01), "too low");
    assert_eq!(privacy::rdp_epsilon(0.0, 0.1, 10, 1e-5), f64::INFINITY);
}
