//! Loading data sets into memory.
//!
//! The loaders here produce a [`Dataset`]: row-major `f32` features plus one target
//! per row, a `u32` class label (`Dataset`, the default) or an `f32` value for a
//! regression (`Dataset<f32>`). Readers are provided for
//!
//! - the gzipped MNIST CSV shipped in `data/mnist_5k.csv.gz` ([`load_mnist_csv_gz`]),
//! - the IDX format of MNIST and Fashion-MNIST, gzipped or raw ([`load_idx`],
//!   [`load_idx_dir`]),
//! - plain numeric CSV files whose last column is the label ([`load_csv_labelled`]),
//!   or a float target for a regression ([`load_csv_regression`], a `Dataset<f32>`).
//!
//! [`audio`] reads 16-bit PCM WAV files and computes log-mel spectrograms (speech
//! features) with an FFT.
//!
//! [`Dataset::shuffle_split`] shuffles with a small built-in PRNG, so a given seed gives
//! the same split on every platform and with every version of every dependency, and
//! [`standardize`] scales feature columns with statistics taken from one set only.
//!
//! Gzip is detected by the magic bytes `1f 8b` at the start of a file, never by its name.
//! Errors name the file, and for malformed contents the byte offset where the problem
//! was found; for a gzipped file that offset counts bytes of the decompressed stream.

pub mod audio;
mod checks;
mod csv;
mod loader;
mod prefetch;

pub use csv::{load_csv_labelled, load_csv_regression, load_mnist_csv_gz, parse_mnist_csv_gz};
pub use loader::{DataLoader, Target};
pub(crate) use prefetch::Batch;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An in-memory data set: row-major features and one target per row, a u32 class
/// label (`Dataset`, the default) or an f32 value for a regression (`Dataset<f32>`,
/// from [`load_csv_regression`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset<T = u32> {
    /// `n * dim` feature values, row after row.
    pub features: Vec<f32>,
    /// `n` targets: class labels, or values for a regression.
    pub labels: Vec<T>,
    /// Number of rows.
    pub n: usize,
    /// Number of features per row.
    pub dim: usize,
}

/// A regression data set: f32 targets.
pub type RegressionDataset = Dataset<f32>;

impl<T: Copy> Dataset<T> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the set has no rows.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Rows at the given indices (copied, in the order given, repeats allowed), as a new
    /// `Dataset`.
    ///
    /// # Panics
    /// If an index is not below `self.len()`.
    pub fn select(&self, idx: &[usize]) -> Dataset<T> {
        let mut features = Vec::with_capacity(idx.len() * self.dim);
        let mut labels = Vec::with_capacity(idx.len());
        for &i in idx {
            assert!(
                i < self.n,
                "Dataset::select: index {i} out of range for {} rows",
                self.n
            );
            features.extend_from_slice(&self.features[i * self.dim..(i + 1) * self.dim]);
            labels.push(self.labels[i]);
        }
        Dataset {
            features,
            labels,
            n: idx.len(),
            dim: self.dim,
        }
    }

    /// Shuffles the rows deterministically with `seed`, then splits them into the first
    /// `n_first` rows and the rest.
    ///
    /// The shuffle is a Fisher-Yates shuffle driven by splitmix64, built in so that the
    /// same seed gives the same split everywhere. `n_first` larger than `len()` is
    /// clamped (the second set is then empty).
    pub fn shuffle_split(&self, seed: u64, n_first: usize) -> (Dataset<T>, Dataset<T>) {
        let order = permutation(self.n, seed);
        let k = n_first.min(self.n);
        (self.select(&order[..k]), self.select(&order[k..]))
    }
}

impl Dataset<u32> {
    /// The features `[n, dim]` and labels `[n]` as tensors on `device`, for
    /// `Model::fit` / `evaluate` / `predict`.
    pub fn tensors(&self, device: &crate::Device) -> Result<(crate::Tensor, crate::Tensor)> {
        Ok((
            crate::Tensor::from_vec(self.features.clone(), &[self.n, self.dim], device)?,
            crate::Tensor::from_labels(&self.labels, device)?,
        ))
    }
}

impl Dataset<f32> {
    /// The features `[n, dim]` and targets `[n, 1]` as tensors on `device`, for a
    /// regression model with one output.
    pub fn tensors(&self, device: &crate::Device) -> Result<(crate::Tensor, crate::Tensor)> {
        Ok((
            crate::Tensor::from_vec(self.features.clone(), &[self.n, self.dim], device)?,
            crate::Tensor::from_vec(self.labels.clone(), &[self.n, 1], device)?,
        ))
    }
}

/// A seeded permutation of `0..n` (Fisher–Yates driven by splitmix64; the same on
/// every platform).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = crate::rng::SplitMix64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below((i + 1) as u128) as usize;
        order.swap(i, j);
    }
    order
}

/// Reads a whole file, decompressing it if it starts with the gzip magic `1f 8b`.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).map_err(|e| Error::io(path, e))?;
    maybe_gunzip(raw, path)
}

/// `raw` decompressed if it starts with the gzip magic `1f 8b`, else as it is;
/// `path` names it in errors.
fn maybe_gunzip(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if raw.len() < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    let mut dec = flate2::read::MultiGzDecoder::new(&raw[..]);
    match dec.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(e) => Err(Error::format(
            path,
            out.len() as u64,
            format!(
                "gzip stream is corrupt or truncated ({e}) after {} decompressed bytes \
                 from {} compressed bytes",
                out.len(),
                raw.len()
            ),
        )),
    }
}

/// The big-endian u32 at `off` (the caller has checked the length).
fn be_u32(bytes: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
}

const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Checks an IDX file's magic and header and returns its dimensions and the payload.
///
/// `what` names the kind of file for messages ("image" or "label").
fn parse_idx<'a>(bytes: &'a [u8], path: &Path, magic: u32, ndims: usize, what: &str) -> Result<(Vec<usize>, &'a [u8])> {
    if bytes.len() < 4 {
        return Err(Error::format(
            path,
            0,
            format!(
                "expected IDX {what} magic 0x{magic:08x}, found only {} bytes in the file",
                bytes.len()
            ),
        ));
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        let hint = match found {
            IDX_IMAGES_MAGIC => " (that is an IDX image file)",
            IDX_LABELS_MAGIC => " (that is an IDX label file)",
            _ => "",
        };
        return Err(Error::format(
            path,
            0,
            format!("expected IDX {what} magic 0x{magic:08x}, found 0x{found:08x}{hint}"),
        ));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(Error::format(
            path,
            bytes.len() as u64,
            format!("truncated IDX header: expected {header} bytes, found {}", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndims).map(|d| be_u32(bytes, 4 + 4 * d) as usize).collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let Some(expected) = expected else {
        return Err(Error::format(
            path,
            4,
            format!("IDX dimensions {dims:?} overflow the address space"),
        ));
    };
    let payload = &bytes[header..];
    if payload.len() < expected {
        return Err(Error::format(
            path,
            bytes.len() as u64,
            format!(
                "truncated IDX {what} payload: header {dims:?} needs {expected} data bytes \
                 after the {header}-byte header, found {} (data ends at byte {})",
                payload.len(),
                bytes.len()
            ),
        ));
    }
    if payload.len() > expected {
        return Err(Error::format(
            path,
            (header + expected) as u64,
            format!(
                "IDX {what} file has {} bytes after the {expected} data bytes that header \
                 {dims:?} describes",
                payload.len() - expected
            ),
        ));
    }
    Ok((dims, payload))
}

/// Reads an IDX image file + IDX label file (each gzipped or raw: gzip is detected by
/// the 0x1f 0x8b magic, not by the name).
///
/// Both are big-endian: images carry magic 0x00000803, count, rows, cols, then
/// count*rows*cols u8 pixels; labels carry magic 0x00000801, count, then count u8
/// labels. Pixels are scaled to [0, 1] by /255; `dim` is rows*cols.
///
/// # Errors
/// - [`Error::Io`] when a file cannot be read (e.g. it is missing);
/// - [`Error::Format`] at offset 0 for a wrong magic number (naming the expected and the
///   found magic), at the end of the data for a truncated payload (naming the expected
///   and the found byte counts), for trailing bytes, for a corrupt gzip stream, and when
///   the image and label counts differ.
pub fn load_idx(images: impl AsRef<Path>, labels: impl AsRef<Path>) -> Result<Dataset> {
    let (ipath, lpath) = (images.as_ref(), labels.as_ref());
    let ibytes = read_maybe_gz(ipath)?;
    let (idims, pixels) = parse_idx(&ibytes, ipath, IDX_IMAGES_MAGIC, 3, "image")?;
    let lbytes = read_maybe_gz(lpath)?;
    let (ldims, lab) = parse_idx(&lbytes, lpath, IDX_LABELS_MAGIC, 1, "label")?;
    let (n, dim) = (idims[0], idims[1] * idims[2]);
    if ldims[0] != n {
        return Err(Error::format(
            lpath,
            4,
            format!(
                "label file holds {} labels but image file {} holds {n} images",
                ldims[0],
                ipath.display()
            ),
        ));
    }
    Ok(Dataset {
        features: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels: lab.iter().map(|&l| u32::from(l)).collect(),
        n,
        dim,
    })
}

/// The first of `candidates` that exists, or an [`Error::Io`] (not found) naming the
/// first candidate and listing all of them.
fn find_first(candidates: &[PathBuf]) -> Result<PathBuf> {
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(Error::io(
        &candidates[0],
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no such file (tried {})", tried.join(", ")),
        ),
    ))
}

/// In `dir`, finds `{split}-images-idx3-ubyte[.gz]` and `{split}-labels-idx1-ubyte[.gz]`
/// (split = "train" or "t10k") and loads them with [`load_idx`].
///
/// When both the gzipped and the raw file exist, the gzipped one is used.
///
/// # Errors
/// [`Error::Io`] naming the paths tried when a file is missing; otherwise as
/// [`load_idx`].
pub fn load_idx_dir(dir: impl AsRef<Path>, split: &str) -> Result<Dataset> {
    let dir = dir.as_ref();
    let find = |stem: String| find_first(&[dir.join(format!("{stem}.gz")), dir.join(&stem)]);
    let images = find(format!("{split}-images-idx3-ubyte"))?;
    let labels = find(format!("{split}-labels-idx1-ubyte"))?;
    load_idx(images, labels)
}

/// Standardizes each feature column to mean 0 / std 1 in place using the statistics of
/// `fit_on`, returns (mean, std) per column.
///
/// `fit_on` and every set in `others` are transformed with the same statistics. The
/// standard deviation is the population one (divided by n, as scikit-learn's
/// `StandardScaler`); a column with zero spread (or an empty `fit_on`) gets std 1, so it
/// is only centred. To keep the statistics with a model instead (saved and loaded with
/// it), make its first layer [`crate::nn::Normalize`] (`Normalize::from_stats` with
/// what this returns, or `Normalize::adapt` on the training features).
///
/// # Panics
/// If a set in `others` has a different `dim` from `fit_on`.
pub fn standardize<T>(fit_on: &mut Dataset<T>, others: &mut [&mut Dataset<T>]) -> (Vec<f32>, Vec<f32>) {
    let dim = fit_on.dim;
    for o in others.iter() {
        assert_eq!(
            o.dim, dim,
            "standardize: a set has {} features, the fitted set {dim}",
            o.dim
        );
    }
    let (mean, std) = crate::nn::column_stats(&fit_on.features, dim);
    let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let std32: Vec<f32> = std.iter().map(|&s| s as f32).collect();
    let apply = |d: &mut Dataset<T>| {
        if dim == 0 {
            return;
        }
        for row in d.features.chunks_exact_mut(dim) {
            for ((v, m), s) in row.iter_mut().zip(&mean).zip(&std) {
                *v = ((f64::from(*v) - m) / s) as f32;
            }
        }
    };
    apply(fit_on);
    for o in others.iter_mut() {
        apply(o);
    }
    (mean32, std32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let k = COUNTER.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("wgnn-data-test-{}-{tag}-{k}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// 3 images of 2x2 and their labels, as IDX bytes.
    fn tiny_idx() -> (Vec<u8>, Vec<u8>) {
        let mut img = Vec::new();
        for v in [0x803u32, 3, 2, 2] {
            img.extend_from_slice(&v.to_be_bytes());
        }
        img.extend_from_slice(&[0, 255, 51, 102, 1, 2, 3, 4, 255, 255, 0, 0]);
        let mut lab = Vec::new();
        for v in [0x801u32, 3] {
            lab.extend_from_slice(&v.to_be_bytes());
        }
        lab.extend_from_slice(&[7, 0, 9]);
        (img, lab)
    }

    fn check_tiny(d: &Dataset) {
        assert_eq!((d.n, d.dim), (3, 4));
        assert_eq!(d.labels, vec![7, 0, 9]);
        assert_eq!(&d.features[..4], &[0.0, 1.0, 0.2, 0.4]);
        assert_eq!(d.features[4], 1.0 / 255.0);
        assert_eq!(d.features.len(), 12);
    }

    #[test]
    fn idx_round_trip_raw_and_gz() {
        let t = TempDir::new("idx");
        let (img, lab) = tiny_idx();
        fs::write(t.path("i.raw"), &img).unwrap();
        fs::write(t.path("l.raw"), &lab).unwrap();
        check_tiny(&load_idx(t.path("i.raw"), t.path("l.raw")).unwrap());
        // Gzipped content under names without .gz: detection goes by the magic.
        fs::write(t.path("i.bin"), gzip(&img)).unwrap();
        fs::write(t.path("l.bin"), gzip(&lab)).unwrap();
        check_tiny(&load_idx(t.path("i.bin"), t.path("l.bin")).unwrap());
        // Mixed.
        check_tiny(&load_idx(t.path("i.bin"), t.path("l.raw")).unwrap());
    }

    #[test]
    fn idx_dir_finds_gz_and_raw() {
        let t = TempDir::new("dir");
        let (img, lab) = tiny_idx();
        fs::write(t.path("train-images-idx3-ubyte.gz"), gzip(&img)).unwrap();
        fs::write(t.path("train-labels-idx1-ubyte"), &lab).unwrap();
        check_tiny(&load_idx_dir(&t.0, "train").unwrap());
        match load_idx_dir(&t.0, "t10k") {
            Err(Error::Io { path, source }) => {
                assert_eq!(path, t.path("t10k-images-idx3-ubyte.gz"));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
                let msg = source.to_string();
                let raw = t.path("t10k-images-idx3-ubyte");
                assert!(msg.contains(&*raw.to_string_lossy()), "{msg}");
            }
            other => panic!("expected Error::Io, got {other:?}"),
        }
    }

    #[test]
    fn idx_wrong_magic_is_format_error() {
        let t = TempDir::new("magic");
        let (img, lab) = tiny_idx();
        fs::write(t.path("i"), &img).unwrap();
        fs::write(t.path("l"), &lab).unwrap();
        // Arguments swapped: the label file is read as images.
        match load_idx(t.path("l"), t.path("i")) {
            Err(Error::Format { path, offset, reason }) => {
                assert_eq!(path, t.path("l"));
                assert_eq!(offset, 0);
                assert!(reason.contains("0x00000803"), "{reason}");
                assert!(reason.contains("0x00000801"), "{reason}");
            }
            other => panic!("expected Error::Format, got {other:?}"),
        }
    }

    #[test]
    fn idx_truncated_is_format_error() {
        let t = TempDir::new("trunc");
        let (img, lab) = tiny_idx();
        fs::write(t.path("i"), &img[..img.len() - 5]).unwrap();
        fs::write(t.path("l"), &lab).unwrap();
        match load_idx(t.path("i"), t.path("l")) {
            Err(Error::Format { offset, reason, .. }) => {
                assert_eq!(offset, (img.len() - 5) as u64);
                assert!(reason.contains("needs 12"), "{reason}");
                assert!(reason.contains("found 7"), "{reason}");
            }
            other => panic!("expected Error::Format, got {other:?}"),
        }
        // A truncated gzip stream is a format error as well.
        let gz = gzip(&img);
        fs::write(t.path("igz"), &gz[..gz.len() / 2]).unwrap();
        assert!(matches!(
            load_idx(t.path("igz"), t.path("l")),
            Err(Error::Format { .. })
        ));
    }

    #[test]
    fn idx_count_mismatch_and_missing_file() {
        let t = TempDir::new("count");
        let (img, mut lab) = tiny_idx();
        lab[7] = 2;
        lab.pop();
        fs::write(t.path("i"), &img).unwrap();
        fs::write(t.path("l"), &lab).unwrap();
        match load_idx(t.path("i"), t.path("l")) {
            Err(Error::Format { path, reason, .. }) => {
                assert_eq!(path, t.path("l"));
                assert!(reason.contains("2 labels"), "{reason}");
                assert!(reason.contains("3 images"), "{reason}");
            }
            other => panic!("expected Error::Format, got {other:?}"),
        }
        match load_idx(t.path("nope"), t.path("l")) {
            Err(Error::Io { path, .. }) => assert_eq!(path, t.path("nope")),
            other => panic!("expected Error::Io, got {other:?}"),
        }
    }

    fn numbered(n: usize) -> Dataset {
        Dataset {
            features: (0..n * 2).map(|v| v as f32).collect(),
            labels: (0..n as u32).collect(),
            n,
            dim: 2,
        }
    }

    #[test]
    fn shuffle_split_is_deterministic_permutation() {
        let d = numbered(50);
        let (a, b) = d.shuffle_split(42, 30);
        let (a2, b2) = d.shuffle_split(42, 30);
        assert_eq!((&a, &b), (&a2, &b2));
        assert_eq!((a.len(), b.len()), (30, 20));
        let mut all: Vec<u32> = a.labels.iter().chain(&b.labels).copied().collect();
        assert_ne!(all, d.labels, "the order should change");
        // Rows stay intact.
        for (k, &l) in a.labels.iter().enumerate() {
            assert_eq!(a.features[2 * k], (2 * l) as f32);
            assert_eq!(a.features[2 * k + 1], (2 * l + 1) as f32);
        }
        all.sort_unstable();
        assert_eq!(all, d.labels);
        let (c, _) = d.shuffle_split(43, 30);
        assert_ne!(a.labels, c.labels);
        // Fixed output of the built-in PRNG (splitmix64 reference value for seed 0):
        // guards against accidental changes that would alter every seeded split.
        assert_eq!(crate::rng::SplitMix64(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        let (all_rows, none) = d.shuffle_split(1, 1000);
        assert_eq!((all_rows.len(), none.len()), (50, 0));
        assert!(none.is_empty());
    }

    #[test]
    fn select_copies_rows() {
        let d = numbered(4);
        let s = d.select(&[3, 1, 3]);
        assert_eq!(s.labels, vec![3, 1, 3]);
        assert_eq!(s.features, vec![6.0, 7.0, 2.0, 3.0, 6.0, 7.0]);
        assert_eq!((s.n, s.dim), (3, 2));
    }

    #[test]
    fn csv_labelled_parses_and_reports_bad_fields() {
        let t = TempDir::new("csv");
        fs::write(t.path("ok.csv"), "3,2,a,b\n1.5, -2 ,0\r\n3e1,4,1\n\n").unwrap();
        let d = load_csv_labelled(t.path("ok.csv"), 1).unwrap();
        assert_eq!((d.n, d.dim), (2, 2));
        assert_eq!(d.features, vec![1.5, -2.0, 30.0, 4.0]);
        assert_eq!(d.labels, vec![0, 1]);

        fs::write(t.path("bad.csv"), "h\n1,2,0\n1,x,1\n").unwrap();
        match load_csv_labelled(t.path("bad.csv"), 1) {
            Err(Error::Format { offset, reason, .. }) => {
                assert!(reason.contains("line 3, column 2"), "{reason}");
                assert_eq!(offset, 10);
            }
            other => panic!("expected Error::Format, got {other:?}"),
        }
        fs::write(t.path("lab.csv"), "1,2,0.5\n").unwrap();
        match load_csv_labelled(t.path("lab.csv"), 0) {
            Err(Error::Format { reason, .. }) => {
                assert!(reason.contains("line 1, column 3"), "{reason}")
            }
            other => panic!("expected Error::Format, got {other:?}"),
        }
        fs::write(t.path("cols.csv"), "1,2,0\n1,1\n").unwrap();
        match load_csv_labelled(t.path("cols.csv"), 0) {
            Err(Error::Format { reason, .. }) => assert!(reason.contains("line 2"), "{reason}"),
            other => panic!("expected Error::Format, got {other:?}"),
        }
        fs::write(t.path("nan.csv"), "1,NaN,0\n").unwrap();
        assert!(matches!(
            load_csv_labelled(t.path("nan.csv"), 0),
            Err(Error::Format { .. })
        ));
    }

    #[test]
    fn csv_regression_reads_float_targets_and_names_a_bad_one() {
        let t = TempDir::new("regression");
        fs::write(t.path("ok.csv"), "x,y\n1,2.5\n-3, -0.125\n").unwrap();
        let d = load_csv_regression(t.path("ok.csv"), 1).unwrap();
        assert_eq!((d.n, d.dim), (2, 1));
        assert_eq!((d.features, d.labels), (vec![1.0, -3.0], vec![2.5, -0.125]));
        fs::write(t.path("bad.csv"), "x,y\n1,2\n2,inf\n").unwrap();
        match load_csv_regression(t.path("bad.csv"), 1) {
            Err(Error::Format { reason, offset, .. }) => {
                assert!(reason.contains("line 3, column 2: target \"inf\""), "{reason}");
                assert_eq!(offset, 10);
            }
            other => panic!("expected Error::Format, got {other:?}"),
        }
    }

    #[test]
    fn mnist_csv_gz() {
        let t = TempDir::new("mnist");
        let mut text = String::new();
        for label in [3u32, 8] {
            let row: Vec<String> = (0..784).map(|i| (i % 256).to_string()).collect();
            text.push_str(&format!("{},{label}\n", row.join(",")));
        }
        fs::write(t.path("m.csv.gz"), gzip(text.as_bytes())).unwrap();
        let d = load_mnist_csv_gz(t.path("m.csv.gz")).unwrap();
        assert_eq!((d.n, d.dim), (2, 784));
        assert_eq!(d.labels, vec![3, 8]);
        assert_eq!(d.features[255], 1.0);
        assert_eq!(d.features[784 + 1], 1.0 / 255.0);

        fs::write(t.path("short.csv.gz"), gzip(b"1,2,3\n")).unwrap();
        assert!(matches!(
            load_mnist_csv_gz(t.path("short.csv.gz")),
            Err(Error::Format { .. })
        ));
    }

    #[test]
    fn standardize_uses_fit_statistics() {
        let mut a = Dataset {
            features: vec![1.0, 5.0, 3.0, 5.0],
            labels: vec![0, 1],
            n: 2,
            dim: 2,
        };
        let mut b = Dataset {
            features: vec![5.0, 6.0],
            labels: vec![0],
            n: 1,
            dim: 2,
        };
        let (mean, std) = standardize(&mut a, &mut [&mut b]);
        assert_eq!(mean, vec![2.0, 5.0]);
        assert_eq!(std, vec![1.0, 1.0]); // second column is constant: std 1
        assert_eq!(a.features, vec![-1.0, 0.0, 1.0, 0.0]);
        assert_eq!(b.features, vec![3.0, 1.0]);
    }
}
