//! Structure-aware fuzzing of the file readers (IDX, CSV, safetensors, checkpoints) with
//! `proptest`: each case starts from a valid file described by its structure
//! (dimensions, rows and fields, tensor headers), edits that structure (wrong or
//! huge dimensions, ragged rows, non-numbers, NaN, wrong dtypes, shapes and offsets,
//! a header length past the end), then mutates the bytes (truncation, bit flips,
//! insertions, deletions, duplications) and may gzip the result (whole, cut short or
//! corrupted). Every reader must return `Ok` with consistent contents or an `Err`
//! that names the file: never panic, never abort on a huge allocation, never hang.
//! A failing case is shrunk by proptest to a minimal one, printed with the
//! failure; it becomes a regression test at the end of this file. (Ten-minute runs
//! of each target found none: 212,000 IDX cases, 114,000 CSV cases, and 956,000
//! safetensors cases.)
//!
//! `cargo test` runs a short, seeded pass (a few seconds). `WGNN_FUZZ_SECS=600`
//! runs each target that long with fresh random seeds; run one target at a time:
//! `WGNN_FUZZ_SECS=600 cargo test --test bad_input -- fuzz::idx`.
//!
//! Checkpoints (`checkpoint`): a valid checkpoint written by `fit`, its metadata
//! entries and tensors edited (values, names, shapes, dtypes, NaN contents), then
//! byte-mutated, loaded with `io::load_checkpoint` (a failed load must leave model
//! and optimizer unchanged) and resumed by `fit`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use wgnn::data::{self, Dataset};
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::Device;

/// Cases of the short pass that `cargo test` runs for each target.
const SHORT_CASES: u32 = 1000;

/// Runs `check` on cases drawn from `strategy`: [`SHORT_CASES`] seeded cases, or
/// fresh random cases for `WGNN_FUZZ_SECS` seconds. `check` says whether the file
/// was read (`true`) or refused. A failure is shrunk and reported with the minimal
/// case.
fn fuzz<S: Strategy>(target: &str, strategy: S, check: impl Fn(&S::Value) -> Result<bool, TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    fuzz_cases(target, SHORT_CASES, strategy, check)
}

/// [`fuzz`] with `short` cases in the short pass (for targets whose cases are slow).
fn fuzz_cases<S: Strategy>(
    target: &str,
    short: u32,
    strategy: S,
    check: impl Fn(&S::Value) -> Result<bool, TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let budget = std::env::var("WGNN_FUZZ_SECS").ok().and_then(|s| s.parse::<u64>().ok());
    let (cases, read, slowest) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let timed = |value: S::Value| {
        let start = Instant::now();
        let result = check(&value);
        cases.fetch_add(1, Ordering::Relaxed);
        read.fetch_add(matches!(result, Ok(true)) as u64, Ordering::Relaxed);
        slowest.fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        result.map(|_| ())
    };
    let start = Instant::now();
    let run = |runner: &mut TestRunner| match runner.run(&strategy, timed) {
        Ok(()) => {}
        Err(TestError::Fail(reason, minimal)) => {
            panic!("fuzz target {target}: {reason}\nminimal failing case: {minimal:#?}")
        }
        Err(e) => panic!("fuzz target {target}: {e}"),
    };
    match budget {
        None => {
            let config = Config {
                cases: short,
                failure_persistence: None,
                ..Config::default()
            };
            run(&mut TestRunner::new_with_rng(
                config,
                TestRng::deterministic_rng(RngAlgorithm::ChaCha),
            ));
        }
        Some(secs) => {
            while start.elapsed() < Duration::from_secs(secs) {
                let config = Config {
                    cases: 2000,
                    failure_persistence: None,
                    max_shrink_iters: 100_000,
                    ..Config::default()
                };
                run(&mut TestRunner::new(config));
            }
        }
    }
    eprintln!(
        "fuzz target {target}: {} cases ({} read, the others refused) in {:.1} s, slowest case {:.1} ms, no failure",
        cases.load(Ordering::Relaxed),
        read.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        slowest.load(Ordering::Relaxed) as f64 / 1000.0
    );
}

/// A folder of its own for one target's files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(target: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("wgnn-fuzz-{target}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A byte-level edit of a file; positions are fractions of the current length.
#[derive(Clone, Debug)]
enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, u8),
    Duplicate(Index, u8),
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(0u8),
        Just(0xff),
        Just(0x80),
        Just(b','),
        Just(b'\n'),
        Just(b'"'),
        any::<u8>()
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<Index>(), prop::collection::vec(interesting_byte(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1u8..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 1u8..32).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    // Half the cases keep the structure-level edits alone.
    prop_oneof![Just(Vec::new()), prop::collection::vec(mutation(), 1..4)]
}

impl Mutation {
    fn apply(&self, b: &mut Vec<u8>) {
        let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
        let len = b.len();
        match self {
            Mutation::Truncate(i) => b.truncate(at(i, len)),
            Mutation::FlipBit(i, bit) if len > 0 => b[at(i, len)] ^= 1 << bit,
            Mutation::SetByte(i, v) if len > 0 => b[at(i, len)] = *v,
            Mutation::Insert(i, bytes) => {
                let p = at(i, len + 1);
                b.splice(p..p, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let p = at(i, len);
                b.drain(p..(p + *n as usize).min(len));
            }
            Mutation::Duplicate(i, n) => {
                let p = at(i, len);
                let piece = b[p..(p + *n as usize).min(len)].to_vec();
                b.splice(p..p, piece);
            }
            _ => {}
        }
    }
}

/// How the bytes reach the disk: as they are, gzipped, or gzipped and then cut
/// short or corrupted.
#[derive(Clone, Debug)]
enum Wrap {
    Raw,
    Gzip,
    GzipCut(Index),
    GzipFlip(Index, u8),
}

fn wrap() -> impl Strategy<Value = Wrap> {
    prop_oneof![
        4 => Just(Wrap::Raw),
        2 => Just(Wrap::Gzip),
        1 => any::<Index>().prop_map(Wrap::GzipCut),
        1 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Wrap::GzipFlip(i, b)),
    ]
}

impl Wrap {
    fn apply(&self, bytes: Vec<u8>) -> Vec<u8> {
        if let Wrap::Raw = self {
            return bytes;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        let mut out = gz.finish().unwrap();
        match self {
            Wrap::GzipCut(i) => out.truncate(i.index(out.len())),
            Wrap::GzipFlip(i, bit) => {
                let p = i.index(out.len());
                out[p] ^= 1 << bit;
            }
            _ => {}
        }
        out
    }
}

fn mutate(mut bytes: Vec<u8>, edits: &[Mutation], wrap: &Wrap) -> Vec<u8> {
    for m in edits {
        m.apply(&mut bytes);
    }
    wrap.apply(bytes)
}

/// What a successful read must hold together.
fn consistent(d: &Dataset) -> Result<(), TestCaseError> {
    prop_assert_eq!(d.labels.len(), d.n);
    prop_assert_eq!(d.features.len(), d.n * d.dim);
    prop_assert!(
        d.features.iter().all(|v| v.is_finite()),
        "a non-finite feature was accepted"
    );
    Ok(())
}

/// An error must name the file it is about.
fn names_file(e: &wgnn::Error, paths: &[&Path]) -> Result<(), TestCaseError> {
    let message = e.to_string();
    prop_assert!(
        paths.iter().any(|p| message.contains(&*p.to_string_lossy())),
        "error does not name the file: {}",
        message
    );
    Ok(())
}

fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(255),
        Just(256),
        Just(0x0000_0801),
        Just(0x0000_0803),
        Just(0x1_0000),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(u32::MAX),
        any::<u32>(),
    ]
}

// ---------------------------------------------------------------- IDX

#[derive(Clone, Debug)]
struct IdxCase {
    count: u32,
    rows: u32,
    cols: u32,
    /// Header words overwritten: (images file?, word index, value).
    header: Vec<(bool, Index, u32)>,
    images: Vec<Mutation>,
    labels: Vec<Mutation>,
    images_wrap: Wrap,
    labels_wrap: Wrap,
}

fn idx_case() -> impl Strategy<Value = IdxCase> {
    (
        (0u32..6, 0u32..5, 0u32..5),
        prop_oneof![
            Just(Vec::new()),
            prop::collection::vec((any::<bool>(), any::<Index>(), interesting_u32()), 1..3)
        ],
        mutations(),
        mutations(),
        wrap(),
        wrap(),
    )
        .prop_map(
            |((count, rows, cols), header, images, labels, images_wrap, labels_wrap)| IdxCase {
                count,
                rows,
                cols,
                header,
                images,
                labels,
                images_wrap,
                labels_wrap,
            },
        )
}

impl IdxCase {
    fn files(&self) -> (Vec<u8>, Vec<u8>) {
        let mut images: Vec<u8> = [0x0803, self.count, self.rows, self.cols]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        images.extend((0..self.count * self.rows * self.cols).map(|i| (i * 37 % 256) as u8));
        let mut labels: Vec<u8> = [0x0801, self.count].iter().flat_map(|w| w.to_be_bytes()).collect();
        labels.extend((0..self.count).map(|i| (i % 10) as u8));
        for (in_images, word, value) in &self.header {
            let file = if *in_images { &mut images } else { &mut labels };
            let w = word.index(if *in_images { 4 } else { 2 });
            file[4 * w..4 * w + 4].copy_from_slice(&value.to_be_bytes());
        }
        (
            mutate(images, &self.images, &self.images_wrap),
            mutate(labels, &self.labels, &self.labels_wrap),
        )
    }
}

#[test]
fn idx() {
    let scratch = Scratch::new("idx");
    fuzz("idx", idx_case(), |case| {
        let (images, labels) = case.files();
        let (ip, lp) = (scratch.write("images", &images), scratch.write("labels", &labels));
        match data::load_idx(&ip, &lp) {
            Ok(d) => consistent(&d).map(|_| true),
            Err(e) => names_file(&e, &[&ip, &lp]).map(|_| false),
        }
    });
}

// ---------------------------------------------------------------- CSV

/// A field of a CSV row: mostly numbers, sometimes something that is not one.
fn field() -> impl Strategy<Value = String> {
    let weird = prop_oneof![
        Just(""),
        Just("nan"),
        Just("NaN"),
        Just("inf"),
        Just("-inf"),
        Just("1e40"),
        Just("-1e-50"),
        Just("abc"),
        Just(" 3 "),
        Just("0x10"),
        Just("\u{feff}1"),
        Just("-0"),
        Just("4294967296"),
        Just("-1"),
        Just("1.5"),
        Just("\"1\""),
        Just("1;2"),
        Just("\t7"),
        Just("256"),
        Just("+5"),
    ]
    .prop_map(str::to_string);
    prop_oneof![
        6 => (0u32..300).prop_map(|v| v.to_string()),
        3 => any::<f32>().prop_filter("finite", |v| v.is_finite()).prop_map(|v| v.to_string()),
        1 => (-1e6f32..1e6).prop_map(|v| format!("{v:e}")),
        2 => weird,
    ]
}

#[derive(Clone, Debug)]
enum RowEdit {
    Replace(Index, Index, String),
    DropField(Index, Index),
    AddField(Index, String),
    BlankLine(Index),
    CarriageReturn(Index),
}

fn row_edit() -> impl Strategy<Value = RowEdit> {
    prop_oneof![
        (any::<Index>(), any::<Index>(), field()).prop_map(|(r, c, f)| RowEdit::Replace(r, c, f)),
        (any::<Index>(), any::<Index>()).prop_map(|(r, c)| RowEdit::DropField(r, c)),
        (any::<Index>(), field()).prop_map(|(r, f)| RowEdit::AddField(r, f)),
        any::<Index>().prop_map(RowEdit::BlankLine),
        any::<Index>().prop_map(RowEdit::CarriageReturn),
    ]
}

#[derive(Clone, Debug)]
struct CsvCase {
    /// MNIST layout (785 pixel columns, `load_mnist_csv_gz`) or a labelled CSV.
    mnist: bool,
    skip: usize,
    rows: Vec<Vec<String>>,
    edits: Vec<RowEdit>,
    bytes: Vec<Mutation>,
    wrap: Wrap,
}

fn csv_case() -> impl Strategy<Value = CsvCase> {
    let labelled = (1usize..6).prop_flat_map(|cols| {
        prop::collection::vec(
            (prop::collection::vec(field(), cols), 0u32..12).prop_map(|(mut r, label)| {
                r.push(label.to_string());
                r
            }),
            0..6,
        )
    });
    let mnist = prop::collection::vec(
        prop::collection::vec((0u32..256).prop_map(|v| v.to_string()), 785),
        0..3,
    );
    (
        prop_oneof![3 => labelled.prop_map(|r| (false, r)), 1 => mnist.prop_map(|r| (true, r))],
        0usize..3,
        prop_oneof![Just(Vec::new()), prop::collection::vec(row_edit(), 1..4)],
        mutations(),
        wrap(),
    )
        .prop_map(|((mnist, rows), skip, edits, bytes, wrap)| CsvCase {
            mnist,
            skip,
            rows,
            edits,
            bytes,
            wrap,
        })
}

impl CsvCase {
    fn file(&self) -> Vec<u8> {
        let mut rows = self.rows.clone();
        let mut ends = vec!["\n"; rows.len()];
        for edit in &self.edits {
            if rows.is_empty() {
                break;
            }
            let n = rows.len();
            match edit {
                RowEdit::Replace(r, c, f) => {
                    let row = &mut rows[r.index(n)];
                    if !row.is_empty() {
                        let c = c.index(row.len());
                        row[c] = f.clone();
                    }
                }
                RowEdit::DropField(r, c) => {
                    let row = &mut rows[r.index(n)];
                    if !row.is_empty() {
                        let c = c.index(row.len());
                        row.remove(c);
                    }
                }
                RowEdit::AddField(r, f) => rows[r.index(n)].push(f.clone()),
                RowEdit::BlankLine(r) => {
                    let r = r.index(n);
                    rows.insert(r, Vec::new());
                    ends.insert(r, "\n");
                }
                RowEdit::CarriageReturn(r) => ends[r.index(n)] = "\r\n",
            }
        }
        let text: String = rows.iter().zip(&ends).map(|(r, end)| r.join(",") + end).collect();
        mutate(text.into_bytes(), &self.bytes, &self.wrap)
    }
}

#[test]
fn csv() {
    let scratch = Scratch::new("csv");
    fuzz("csv", csv_case(), |case| {
        let path = scratch.write("data.csv", &case.file());
        let read = if case.mnist {
            data::load_mnist_csv_gz(&path)
        } else {
            data::load_csv_labelled(&path, case.skip)
        };
        match read {
            Ok(d) => consistent(&d).map(|_| true),
            Err(e) => names_file(&e, &[&path]).map(|_| false),
        }
    });
}

// ---------------------------------------------------------------- safetensors

/// The module every safetensors case is loaded into.
fn module() -> Sequential {
    let dev = Device::cpu();
    Sequential::new()
        .add(Linear::new(3, 2, &dev))
        .add(nn::Tanh)
        .add(Linear::new(2, 1, &dev))
}

/// One tensor entry of a safetensors header.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    offsets: (u64, u64),
}

#[derive(Clone, Debug)]
enum HeaderEdit {
    Dtype(Index, String),
    Shape(Index, Vec<u64>),
    Offsets(Index, u64, u64),
    Rename(Index, String),
    Remove(Index),
    Duplicate(Index),
    Metadata(String),
    /// The 8-byte length prefix: an absolute value or one off the real length.
    Length(u64),
    LengthOff(i8),
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(3),
        Just(7),
        Just(1 << 31),
        Just(1 << 32),
        Just(1 << 62),
        Just(u64::MAX),
        Just(u64::MAX / 2 + 1),
        0u64..64,
    ]
}

fn dtype_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop_oneof![Just("F32"), Just("F64"), Just("F16"), Just("BF16")],
        1 => prop_oneof![Just("I32"), Just("U8"), Just("BOOL"), Just("F8_E4M3"), Just("I64"), Just("f32"), Just("")],
    ]
    .prop_map(str::to_string)
}

fn header_edit() -> impl Strategy<Value = HeaderEdit> {
    let name = prop_oneof![
        Just("0.weight"),
        Just("0.bias"),
        Just("2.weight"),
        Just("x"),
        Just("__metadata__")
    ];
    prop_oneof![
        (any::<Index>(), dtype_name()).prop_map(|(i, d)| HeaderEdit::Dtype(i, d)),
        (any::<Index>(), prop::collection::vec(interesting_u64(), 0..4)).prop_map(|(i, s)| HeaderEdit::Shape(i, s)),
        (any::<Index>(), interesting_u64(), interesting_u64()).prop_map(|(i, a, b)| HeaderEdit::Offsets(i, a, b)),
        (any::<Index>(), name).prop_map(|(i, n)| HeaderEdit::Rename(i, n.to_string())),
        any::<Index>().prop_map(HeaderEdit::Remove),
        any::<Index>().prop_map(HeaderEdit::Duplicate),
        prop_oneof![Just("{}"), Just("{\"a\":\"b\"}"), Just("1"), Just("{\"a\":1}")]
            .prop_map(|m| HeaderEdit::Metadata(m.to_string())),
        interesting_u64().prop_map(HeaderEdit::Length),
        any::<i8>().prop_map(HeaderEdit::LengthOff),
    ]
}

#[derive(Clone, Debug)]
struct SafetensorsCase {
    dtypes: Vec<String>,
    seed: u8,
    edits: Vec<HeaderEdit>,
    bytes: Vec<Mutation>,
}

fn safetensors_case() -> impl Strategy<Value = SafetensorsCase> {
    (
        prop::collection::vec(dtype_name(), 4),
        any::<u8>(),
        prop_oneof![Just(Vec::new()), prop::collection::vec(header_edit(), 1..4)],
        mutations(),
    )
        .prop_map(|(dtypes, seed, edits, bytes)| SafetensorsCase {
            dtypes,
            seed,
            edits,
            bytes,
        })
}

fn dtype_size(dtype: &str) -> u64 {
    match dtype {
        "F64" | "I64" => 8,
        "F32" | "I32" => 4,
        "F16" | "BF16" => 2,
        _ => 1,
    }
}

impl SafetensorsCase {
    fn file(&self) -> Vec<u8> {
        let mut entries = Vec::new();
        let mut end = 0;
        for ((name, shape), dtype) in [
            ("0.weight", vec![2, 3]),
            ("0.bias", vec![2]),
            ("2.weight", vec![1, 2]),
            ("2.bias", vec![1]),
        ]
        .into_iter()
        .zip(&self.dtypes)
        {
            let bytes = shape.iter().product::<u64>() * dtype_size(dtype);
            entries.push(Entry {
                name: name.to_string(),
                dtype: dtype.clone(),
                shape,
                offsets: (end, end + bytes),
            });
            end += bytes;
        }
        let mut metadata = None;
        let mut length = HeaderEdit::LengthOff(0);
        for edit in &self.edits {
            let n = entries.len();
            let pick = |i: &Index| i.index(n.max(1));
            match edit {
                HeaderEdit::Dtype(i, d) if n > 0 => entries[pick(i)].dtype = d.clone(),
                HeaderEdit::Shape(i, s) if n > 0 => entries[pick(i)].shape = s.clone(),
                HeaderEdit::Offsets(i, a, b) if n > 0 => entries[pick(i)].offsets = (*a, *b),
                HeaderEdit::Rename(i, name) if n > 0 => entries[pick(i)].name = name.clone(),
                HeaderEdit::Remove(i) if n > 0 => {
                    entries.remove(pick(i));
                }
                HeaderEdit::Duplicate(i) if n > 0 => entries.push(entries[pick(i)].clone()),
                HeaderEdit::Metadata(m) => metadata = Some(m.clone()),
                HeaderEdit::Length(_) | HeaderEdit::LengthOff(_) => length = edit.clone(),
                _ => {}
            }
        }
        let mut fields: Vec<String> = entries
            .iter()
            .map(|e| {
                let shape: Vec<String> = e.shape.iter().map(u64::to_string).collect();
                format!(
                    "\"{}\":{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
                    e.name,
                    e.dtype,
                    shape.join(","),
                    e.offsets.0,
                    e.offsets.1
                )
            })
            .collect();
        if let Some(m) = metadata {
            fields.insert(0, format!("\"__metadata__\":{m}"));
        }
        let mut header = format!("{{{}}}", fields.join(",")).into_bytes();
        while header.len() % 8 != 0 {
            header.push(b' ');
        }
        let real = header.len() as u64;
        let length = match length {
            HeaderEdit::Length(l) => l,
            HeaderEdit::LengthOff(d) => real.wrapping_add_signed(i64::from(d)),
            _ => unreachable!(),
        };
        let mut file = length.to_le_bytes().to_vec();
        file.extend(header);
        file.extend((0..end).map(|i| (i as u8).wrapping_mul(31).wrapping_add(self.seed)));
        mutate(file, &self.bytes, &Wrap::Raw)
    }
}

#[test]
fn safetensors() {
    let scratch = Scratch::new("safetensors");
    fuzz("safetensors", safetensors_case(), |case| {
        let path = scratch.write("model.safetensors", &case.file());
        let mut model = module();
        let before: Vec<Vec<f32>> = model.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
        match wgnn::io::load_safetensors(&mut model, &path) {
            Ok(()) => Ok(true),
            Err(e) => {
                let after: Vec<Vec<f32>> = model.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
                prop_assert!(before == after, "a failed load changed the module");
                names_file(&e, &[&path]).map(|_| false)
            }
        }
    });
}

// ---------------------------------------------------------------- checkpoints

/// The compiled model every checkpoint case belongs to: Linear(3, 4), Tanh, Dropout,
/// Linear(4, 2), Adam, cross-entropy.
fn checkpoint_model() -> wgnn::train::Model {
    use wgnn::optim::{Adam, AdamConfig};
    let dev = Device::cpu();
    let net = Sequential::new()
        .add(Linear::new(3, 4, &dev))
        .add(nn::Tanh)
        .add(nn::Dropout::new(0.25))
        .add(Linear::new(4, 2, &dev));
    let opt = Adam::new(net.parameters(), AdamConfig::default());
    net.compile(opt, wgnn::train::Loss::CrossEntropy, &[]).unwrap()
}

/// Eight rows of three features and two classes.
fn checkpoint_data() -> (wgnn::Tensor, wgnn::Tensor) {
    let dev = Device::cpu();
    let x = (0..24).map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.5).collect();
    let x = wgnn::Tensor::from_vec(x, &[8, 3], &dev).unwrap();
    let y = wgnn::Tensor::from_labels(&[0, 1, 1, 0, 1, 0, 0, 1], &dev).unwrap();
    (x, y)
}

fn checkpoint_config(epochs: usize, path: &Path, resume: Option<&Path>) -> wgnn::train::FitConfig {
    use wgnn::optim::lr::ReduceLrOnPlateau;
    use wgnn::train::{EarlyStopping, LrScheduler, ModelCheckpoint};
    wgnn::train::FitConfig {
        epochs,
        batch_size: 3,
        verbose: false,
        layer_stats: false,
        seed: Some(5),
        callbacks: vec![
            Box::new(EarlyStopping::new("loss", 3).restore_best_weights()),
            Box::new(LrScheduler::on_metric(
                ReduceLrOnPlateau::new(1e-3, Default::default()),
                "loss",
            )),
            Box::new(ModelCheckpoint::every_epoch(path)),
        ],
        resume_from: resume.map(Path::to_path_buf),
        ..Default::default()
    }
}

/// A valid checkpoint written by `fit` after two epochs (model, Adam, random
/// stream, and fit's own state: epochs, data order, history, callbacks).
/// A checkpoint's bytes, its tensors (name, shape, dtype, data) and its metadata.
type CheckpointParts = (
    Vec<u8>,
    Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)>,
    Vec<(String, String)>,
);

fn valid_checkpoint() -> &'static CheckpointParts {
    static FILE: std::sync::OnceLock<CheckpointParts> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let scratch = Scratch::new("checkpoint-source");
        let path = scratch.0.join("valid.ckpt");
        let (x, y) = checkpoint_data();
        checkpoint_model()
            .fit(&x, &y, checkpoint_config(2, &path, None))
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors: Vec<_> = file
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec(), view.dtype(), view.data().to_vec()))
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta: Vec<(String, String)> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
        meta.sort();
        (bytes, tensors, meta)
    })
}

/// An edit of a checkpoint's structure: its metadata entries and its tensors.
#[derive(Clone, Debug)]
enum CheckpointEdit {
    SetMeta(Index, String),
    RemoveMeta(Index),
    AddMeta(String, String),
    RemoveTensor(Index),
    RenameTensor(Index, String),
    /// A new shape (data resized to fit, so the file stays well-formed).
    Reshape(Index, Vec<usize>),
    /// A new dtype (data resized to fit).
    Retype(Index, safetensors::Dtype),
    /// Values replaced by this f32 (NaN, ∞, huge…), where the tensor is f32.
    Fill(Index, f32),
}

fn meta_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just::<&str>(""),
        Just("0"),
        Just("1"),
        Just("-1"),
        Just("2"),
        Just("1e40"),
        Just("NaN"),
        Just("inf"),
        Just("18446744073709551616"),
        Just("4294967296"),
        Just("abc"),
        Just("adam"),
        Just("adamw"),
        Just("sgd"),
        Just("none"),
        Just("0.001,0.9"),
        Just("1,2,3,4,5,6,7,8,9"),
        Just("wgnn-checkpoint"),
        Just("\\"),
        Just("\n"),
    ]
    .prop_map(|s| s.to_string())
    .boxed()
    .prop_union("[ -~]{0,12}".boxed())
}

fn checkpoint_edit() -> impl Strategy<Value = CheckpointEdit> {
    let dtype = prop_oneof![
        Just(safetensors::Dtype::F64),
        Just(safetensors::Dtype::F16),
        Just(safetensors::Dtype::BF16),
        Just(safetensors::Dtype::I32),
        Just(safetensors::Dtype::U8),
    ];
    let name = prop_oneof![
        Just("0.weight"),
        Just("3.bias"),
        Just("optimizer.0.exp_avg"),
        Just("optimizer.9.exp_avg"),
        Just("fit.best.0"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(-1e30f32),
        Just(0.0f32),
        any::<f32>()
    ];
    prop_oneof![
        3 => (any::<Index>(), meta_value()).prop_map(|(i, v)| CheckpointEdit::SetMeta(i, v)),
        1 => any::<Index>().prop_map(CheckpointEdit::RemoveMeta),
        1 => ("(fit|optimizer)\\.[a-z_.0-9]{0,10}", meta_value()).prop_map(|(k, v)| CheckpointEdit::AddMeta(k, v)),
        1 => any::<Index>().prop_map(CheckpointEdit::RemoveTensor),
        1 => (any::<Index>(), name).prop_map(|(i, n)| CheckpointEdit::RenameTensor(i, n.to_string())),
        1 => (any::<Index>(), prop::collection::vec(0usize..6, 0..3)).prop_map(|(i, s)| CheckpointEdit::Reshape(i, s)),
        1 => (any::<Index>(), dtype).prop_map(|(i, d)| CheckpointEdit::Retype(i, d)),
        1 => (any::<Index>(), value).prop_map(|(i, v)| CheckpointEdit::Fill(i, v)),
    ]
}

#[derive(Clone, Debug)]
struct CheckpointCase {
    edits: Vec<CheckpointEdit>,
    bytes: Vec<Mutation>,
}

fn checkpoint_case() -> impl Strategy<Value = CheckpointCase> {
    (prop::collection::vec(checkpoint_edit(), 0..4), mutations())
        .prop_map(|(edits, bytes)| CheckpointCase { edits, bytes })
}

impl CheckpointCase {
    fn file(&self) -> Vec<u8> {
        let (bytes, tensors, meta) = valid_checkpoint();
        if self.edits.is_empty() {
            return mutate(bytes.clone(), &self.bytes, &Wrap::Raw);
        }
        let (mut tensors, mut meta) = (tensors.clone(), meta.clone());
        for edit in &self.edits {
            let (nt, nm) = (tensors.len().max(1), meta.len().max(1));
            match edit {
                CheckpointEdit::SetMeta(i, v) if !meta.is_empty() => meta[i.index(nm)].1 = v.clone(),
                CheckpointEdit::RemoveMeta(i) if !meta.is_empty() => {
                    meta.remove(i.index(nm));
                }
                CheckpointEdit::AddMeta(k, v) => meta.push((k.clone(), v.clone())),
                CheckpointEdit::RemoveTensor(i) if !tensors.is_empty() => {
                    tensors.remove(i.index(nt));
                }
                CheckpointEdit::RenameTensor(i, n) if !tensors.is_empty() => tensors[i.index(nt)].0 = n.clone(),
                CheckpointEdit::Reshape(i, s) if !tensors.is_empty() => {
                    let t = &mut tensors[i.index(nt)];
                    let size = t.2.bitsize() / 8 * s.iter().product::<usize>();
                    t.3.resize(size, 0x3c);
                    t.1 = s.clone();
                }
                CheckpointEdit::Retype(i, d) if !tensors.is_empty() => {
                    let t = &mut tensors[i.index(nt)];
                    t.3.resize(d.bitsize() / 8 * t.1.iter().product::<usize>(), 0x3c);
                    t.2 = *d;
                }
                CheckpointEdit::Fill(i, v) if !tensors.is_empty() => {
                    let t = &mut tensors[i.index(nt)];
                    if t.2 == safetensors::Dtype::F32 {
                        for c in t.3.chunks_exact_mut(4) {
                            c.copy_from_slice(&v.to_le_bytes());
                        }
                    }
                }
                _ => {}
            }
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        tensors.dedup_by(|a, b| a.0 == b.0);
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(name, shape, dtype, data)| {
                let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
                (name.clone(), view)
            })
            .collect();
        let meta: std::collections::HashMap<String, String> = meta.into_iter().collect();
        let file = safetensors::tensor::serialize(views, Some(meta)).unwrap();
        mutate(file, &self.bytes, &Wrap::Raw)
    }
}

/// Loading a damaged checkpoint, directly and by resuming `fit`, is `Ok` or an
/// `Err` naming the file; a failed load leaves the model and the optimizer as they
/// were.
#[test]
fn checkpoint() {
    use wgnn::optim::Optimizer;
    let scratch = Scratch::new("checkpoint");
    let (x, y) = checkpoint_data();
    fuzz_cases("checkpoint", 200, checkpoint_case(), |case| {
        let path = scratch.write("case.ckpt", &case.file());
        let mut model = checkpoint_model();
        let before: Vec<Vec<f32>> = model.net.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
        let state = model.optimizer.state().unwrap();
        let direct = wgnn::io::load_checkpoint(&mut model.net, &mut model.optimizer, &path);
        if let Err(e) = &direct {
            let after: Vec<Vec<f32>> = model.net.parameters().iter().map(|p| p.to_vec().unwrap()).collect();
            prop_assert!(before == after, "a failed load changed the model");
            prop_assert!(
                model.optimizer.state().unwrap() == state,
                "a failed load changed the optimizer"
            );
            names_file(e, &[&path])?;
        }
        let out = scratch.0.join("resumed.ckpt");
        let resumed = checkpoint_model().fit(&x, &y, checkpoint_config(4, &out, Some(&path)));
        if let Err(e) = &resumed {
            let text = e.to_string();
            // fit's own errors (e.g. a history whose numbers are NaN) need not name the file.
            prop_assert!(!text.is_empty());
        }
        Ok(direct.is_ok())
    });
}
