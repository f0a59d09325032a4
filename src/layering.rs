//! The rule that keeps the crate's layers pointing one way, checked by reading the
//! sources (`docs/ARCHITECTURE.md` draws the picture): a module may use what sits on
//! its own layer or below, never above. [`LAYERS`] lists the layers bottom up;
//! [`KNOWN_UPWARD`] the upward uses that exist today and are still to be removed — a
//! new one fails the test, and so does an entry of that list that no longer exists
//! (it must shrink as they go).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The crate's top-level modules, bottom up; modules on one layer may use each other.
const LAYERS: &[&[&str]] = &[
    // Leaves: errors, the fast-path switches, the random streams, host-side metrics.
    &["error", "fast_path", "rng", "metrics"],
    // Devices' execution: buffers, the kernels' CPU and WGSL launches, the executors.
    &["backend"],
    // The device handle: a backend, its counters, plan cache, profiler, debug modes.
    &["device"],
    // The tensor handle and the op table: a node holds its op, and an op's gradient
    // rule and its builders are written in tensors, so the two are one unit.
    &["tensor", "ops"],
    // Autograd, fusion and planning, and the `Tensor` methods that run them.
    &["graph"],
    &["optim"],
    // Layers and models; mixed precision's guards and `Mixed` wrapper of a model.
    &["nn", "amp"],
    &["io", "distributed"],
    &["data"],
    &["train"],
    // Trust and efficiency: privacy (accounting, DP-SGD), group fairness, explanations,
    // federated learning, pruning, int8 quantization.
    &["privacy", "fairness", "explain", "federated", "prune", "quantize"],
];

/// Upward uses that exist today, as (file, module used): each is a debt of the
/// layering, to be removed.
const KNOWN_UPWARD: &[(&str, &str)] = &[
    // The optimizer trait names the collective a distributed optimizer all-reduces with.
    ("src/optim/mod.rs", "distributed"),
];

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first path segments after each `crate::` in `code` (comments removed first):
/// `crate::a::b` gives `a`, `crate::{a, b::c}` gives `a` and `b`.
fn crate_paths(code: &str) -> Vec<String> {
    let code: String = code
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(ident(group[start..].trim_start()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(group[start..].trim_start()));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The names `lib.rs` re-exports at the crate root, by the module they come from.
fn root_names(lib: &str) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = rest.split("::").next().unwrap_or("").to_string();
        let items = rest.trim_end_matches(';');
        let items = match items.find('{') {
            Some(i) => &items[i + 1..items.len() - 1],
            None => items.rsplit("::").next().unwrap_or(""),
        };
        for item in items.split(',') {
            let name = item.trim().rsplit(" as ").next().unwrap_or("").trim();
            if !name.is_empty() {
                names.insert(name.to_string(), module.clone());
            }
        }
    }
    names
}

/// Every use of a module above the user's layer, as (file, module used).
fn upward_uses(src: &Path) -> BTreeSet<(String, String)> {
    let layer_of: HashMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(l, mods)| mods.iter().map(move |m| (*m, l)))
        .collect();
    let roots = root_names(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut upward = BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let user = rel.components().next().expect("a path").as_os_str().to_string_lossy();
        let user = user.trim_end_matches(".rs");
        if user == "lib" || user == "layering" {
            continue;
        }
        let user_layer = *layer_of
            .get(user)
            .unwrap_or_else(|| panic!("src/{user}: a top-level module missing from LAYERS"));
        let code = std::fs::read_to_string(&file).expect("a readable source");
        for name in crate_paths(&code) {
            let used = if layer_of.contains_key(name.as_str()) {
                name.clone()
            } else if let Some(module) = roots.get(&name) {
                module.clone()
            } else {
                panic!(
                    "src/{}: crate::{name} is neither a module nor a root re-export",
                    rel.display()
                )
            };
            if layer_of[used.as_str()] > user_layer {
                upward.insert((format!("src/{}", rel.display()), used));
            }
        }
    }
    upward
}

#[test]
fn no_module_uses_one_on_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = upward_uses(&src);
    let known: BTreeSet<(String, String)> = KNOWN_UPWARD
        .iter()
        .map(|(f, m)| (f.to_string(), m.to_string()))
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    assert!(
        new.is_empty(),
        "uses of a module on a layer above (file, module): {new:?}"
    );
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        gone.is_empty(),
        "KNOWN_UPWARD lists uses that are gone (remove them): {gone:?}"
    );
}

#[test]
fn the_backend_uses_nothing_but_the_leaves() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src.join("backend"), &mut files);
    let roots = root_names(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    for file in files {
        let code = std::fs::read_to_string(&file).expect("a readable source");
        for name in crate_paths(&code) {
            let module = roots.get(&name).cloned().unwrap_or(name);
            assert!(
                LAYERS[0].contains(&module.as_str()) || module == "backend",
                "{}: uses crate::{module}",
                file.display()
            );
        }
    }
}

#[test]
fn crate_paths_reads_plain_and_grouped_uses_but_not_comments() {
    let code = "use crate::a::b;\nuse crate::{c, d::{e, f}, G};\n// crate::h\nlet x = crate::i::j();";
    assert_eq!(crate_paths(code), ["a", "c", "d", "G", "i"]);
}
