//! The examples' headline checks: a `--min-…` or `--max-…` flag makes a run fail
//! (exit status 1, after everything is printed) when its headline figure misses the
//! bound, so that CI asserts what the README and the example's docs claim. Included
//! by each example with `#[path = "common/check.rs"] mod check;`.

/// With `bound` (given by `flag`): prints whether `figure`, named `what`, is at most
/// the bound, and exits with status 1 when it is not (a NaN never is).
#[allow(dead_code)]
pub fn at_most(what: &str, figure: f64, bound: Option<f64>, flag: &str) {
    if let Some(bound) = bound {
        report(what, figure, bound, flag, figure <= bound, "<=");
    }
}

/// With `bound` (given by `flag`): prints whether `figure`, named `what`, is at least
/// the bound, and exits with status 1 when it is not (a NaN never is).
#[allow(dead_code)]
pub fn at_least(what: &str, figure: f64, bound: Option<f64>, flag: &str) {
    if let Some(bound) = bound {
        report(what, figure, bound, flag, figure >= bound, ">=");
    }
}

fn report(what: &str, figure: f64, bound: f64, flag: &str, held: bool, relation: &str) {
    if held {
        println!("check: {what} {figure:.4} {relation} {bound} ({flag}): ok");
    } else {
        eprintln!("check FAILED: {what} {figure:.4} is not {relation} {bound} ({flag})");
        std::process::exit(1);
    }
}
