//! `wgnn::fairness` against Fairlearn 0.15 (`tests/fixtures/make_fairness_fixture.py`):
//! per-group count, selection rate, accuracy, TPR, FPR and precision and the four
//! gaps on three seeded cases (one with a group without positives, one with a group
//! never selected); Kamiran–Calders reweighing makes label and group independent;
//! bad input is named.

use wgnn::fairness;

struct Case {
    y: Vec<u32>,
    p: Vec<u32>,
    g: Vec<u32>,
    groups: Vec<Vec<f64>>,
    gaps: Vec<f64>,
}

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fairness.txt");
    let text = std::fs::read_to_string(path).expect("tests/fixtures/fairness.txt");
    let nums = |s: &str| -> Vec<f64> { s.split_whitespace().map(|v| v.parse().unwrap()).collect() };
    let mut out: Vec<Case> = Vec::new();
    for line in text.lines() {
        let (kind, rest) = line.split_once(' ').unwrap();
        match kind {
            "case" => {
                let rest = rest.split_once(' ').unwrap().1;
                let parts: Vec<Vec<u32>> = rest
                    .split('|')
                    .map(|p| nums(p).iter().map(|&v| v as u32).collect())
                    .collect();
                out.push(Case {
                    y: parts[0].clone(),
                    p: parts[1].clone(),
                    g: parts[2].clone(),
                    groups: Vec::new(),
                    gaps: Vec::new(),
                });
            }
            "group" => out.last_mut().unwrap().groups.push(nums(rest)[1..].to_vec()),
            "gaps" => out.last_mut().unwrap().gaps = nums(rest)[1..].to_vec(),
            _ => {}
        }
    }
    out
}

#[test]
fn the_fairness_report_is_fairlearns_metric_frame_and_gaps() {
    let all = cases();
    assert_eq!(all.len(), 3);
    for (n, c) in all.iter().enumerate() {
        let r = fairness::report(&c.y, &c.p, &c.g).unwrap();
        assert_eq!(r.groups.len(), c.groups.len(), "case {n}: groups");
        for (got, want) in r.groups.iter().zip(&c.groups) {
            let g = [
                got.group as f64,
                got.count as f64,
                got.selection_rate,
                got.accuracy,
                got.true_positive_rate,
                got.false_positive_rate,
                got.precision,
            ];
            for (k, (a, b)) in g.iter().zip(want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-12,
                    "case {n}, group {}: column {k} is {a}, Fairlearn {b}",
                    got.group
                );
            }
        }
        let gaps = [
            r.demographic_parity_difference(),
            r.demographic_parity_ratio(),
            r.equalized_odds_difference(),
            r.equal_opportunity_difference(),
        ];
        for (k, (a, b)) in gaps.iter().zip(&c.gaps).enumerate() {
            assert!((a - b).abs() <= 1e-12, "case {n}: gap {k} is {a}, Fairlearn {b}");
        }
        let dir = std::env::temp_dir().join(format!("wgnn-fairness-{}-{n}", std::process::id()));
        r.write_png(&dir, "groups", |g| format!("group {g}")).unwrap();
        let png = std::fs::read(dir.join("groups.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG", "a PNG");
        assert!(std::fs::metadata(dir.join("groups.svg")).unwrap().len() > 1000);
        std::fs::remove_dir_all(&dir).ok();
        let table = r.to_markdown();
        assert!(
            table.contains("| all |") && table.contains("demographic parity difference"),
            "{table}"
        );
    }
}

#[test]
fn reweighing_makes_the_label_independent_of_the_group() {
    let c = &cases()[0];
    let w = fairness::reweighing(&c.y, &c.g).unwrap();
    let total: f64 = w.iter().map(|&v| v as f64).sum();
    assert!(
        (total - c.y.len() as f64).abs() < 1e-3,
        "the weights keep the sample count: {total}"
    );
    let base = c.y.iter().filter(|&&y| y == 1).count() as f64 / c.y.len() as f64;
    for g in 0..3 {
        let (mut pos, mut all) = (0.0f64, 0.0f64);
        for i in (0..c.y.len()).filter(|&i| c.g[i] == g) {
            all += w[i] as f64;
            pos += if c.y[i] == 1 { w[i] as f64 } else { 0.0 };
        }
        assert!(
            (pos / all - base).abs() < 1e-6,
            "group {g}: weighted P(y = 1) {} against {base}",
            pos / all
        );
    }
}

#[test]
fn bad_fairness_input_is_named() {
    let says = |e: wgnn::Error, what: &str| assert!(e.to_string().contains(what), "{e}");
    says(
        fairness::report(&[0, 1], &[0], &[0, 0]).unwrap_err(),
        "2 labels, 1 predictions and 2 group ids",
    );
    says(fairness::report(&[], &[], &[]).unwrap_err(), "no samples");
    says(
        fairness::report(&[0, 2], &[0, 1], &[0, 0]).unwrap_err(),
        "label 2 at sample 1",
    );
    says(
        fairness::reweighing(&[0, 1], &[0]).unwrap_err(),
        "2 labels and 1 group ids",
    );
}

/// Group thresholds close the demographic-parity gap (to one sample's share of the
/// smallest group) and the equal-opportunity gap of scores biased by group, where one
/// shared threshold leaves large gaps.
#[test]
fn group_thresholds_close_the_gaps_a_shared_threshold_leaves() {
    use fairness::Parity;
    let c = &cases()[0];
    // Scores that favour group 2 and penalize group 0, loosely tied to the label.
    let scores: Vec<f32> = (0..c.y.len())
        .map(|i| 0.3 * c.y[i] as f32 + 0.2 * c.g[i] as f32 + ((i * 37 % 101) as f32) / 200.0)
        .collect();
    let shared: Vec<u32> = scores.iter().map(|&s| u32::from(s >= 0.6)).collect();
    let before = fairness::report(&c.y, &shared, &c.g).unwrap();
    let smallest = before.groups.iter().map(|g| g.count).min().unwrap() as f64;
    let t = fairness::group_thresholds(&scores, &c.y, &c.g, Parity::Selection, before.overall.selection_rate).unwrap();
    let after = fairness::report(&c.y, &fairness::apply_thresholds(&scores, &c.g, &t).unwrap(), &c.g).unwrap();
    assert!(before.demographic_parity_difference() > 0.3, "{}", before.to_markdown());
    assert!(
        after.demographic_parity_difference() <= 1.0 / smallest + 1e-12,
        "{}",
        after.to_markdown()
    );
    let t = fairness::group_thresholds(&scores, &c.y, &c.g, Parity::TruePositives, 0.8).unwrap();
    let after = fairness::report(&c.y, &fairness::apply_thresholds(&scores, &c.g, &t).unwrap(), &c.g).unwrap();
    assert!(after.equal_opportunity_difference() < 0.05, "{}", after.to_markdown());
    let e = fairness::group_thresholds(&scores, &c.y, &c.g, Parity::Selection, 1.5).unwrap_err();
    assert!(e.to_string().contains("target rate 1.5"), "{e}");
    let e = fairness::apply_thresholds(&[0.5], &[7], &t).unwrap_err();
    assert!(e.to_string().contains("no threshold for group 7"), "{e}");
}
