//! Numeric CSV readers: feature columns then one target column, the target a class
//! label ([`load_csv_labelled`], the MNIST CSV) or a float value for a regression
//! ([`load_csv_regression`]). Errors name the file, the line and the column.

use std::path::Path;

use super::{maybe_gunzip, read_maybe_gz, Dataset};
use crate::error::{Error, Result};

/// How the feature fields of a CSV are checked.
#[derive(Clone, Copy)]
pub(super) enum Fields {
    /// Any finite number.
    Float,
    /// An integer pixel value 0..=255.
    Pixel,
}

/// How the last column of a CSV is read: a u32 class label or an f32 target.
pub(super) trait TargetField: Sized {
    /// What a valid value is, for error messages ("label … is not {what}").
    const WHAT: &'static str;
    /// The name of the column's values in error messages.
    const NAME: &'static str;
    /// The value of a (trimmed) field, if it is one.
    fn parse(field: &str) -> Option<Self>;
}

impl TargetField for u32 {
    const WHAT: &'static str = "a non-negative integer";
    const NAME: &'static str = "label";
    fn parse(field: &str) -> Option<u32> {
        field.parse().ok()
    }
}

impl TargetField for f32 {
    const WHAT: &'static str = "a finite number";
    const NAME: &'static str = "target";
    fn parse(field: &str) -> Option<f32> {
        field.parse::<f32>().ok().filter(|v| v.is_finite())
    }
}

/// One data line being read: its number (1-based), where it starts in the file,
/// and each field with its byte offset.
struct Line<'a> {
    number: usize,
    start: usize,
    fields: Vec<(usize, &'a str)>,
}

/// The data lines of `text`: the first `skip` lines and blank lines left out.
fn data_lines(text: &str, skip: usize) -> impl Iterator<Item = Line<'_>> {
    let mut line_start = 0usize;
    text.split_inclusive('\n')
        .enumerate()
        .filter_map(move |(lineno, line)| {
            let start = line_start;
            line_start += line.len();
            let content = line.trim_end_matches(['\n', '\r']);
            if lineno < skip || content.trim().is_empty() {
                return None;
            }
            let mut at = start;
            let fields = (content.split(','))
                .map(|field| {
                    let f = (at, field);
                    at += field.len() + 1;
                    f
                })
                .collect();
            Some(Line {
                number: lineno + 1,
                start,
                fields,
            })
        })
}

/// Appends the feature fields of `line` (all but the last) to `features`.
fn push_features(line: &Line<'_>, path: &Path, fields: Fields, features: &mut Vec<f32>) -> Result<()> {
    let c = line.fields.len();
    for (col, &(off, field)) in line.fields[..c - 1].iter().enumerate() {
        let value = field.trim();
        let bad = |what: &str| {
            Error::format(
                path,
                off as u64,
                format!("line {}, column {}: {value:?} is not {what}", line.number, col + 1),
            )
        };
        let v: f32 = match value.parse::<f32>() {
            Ok(v) if v.is_finite() => v,
            _ => return Err(bad("a finite number")),
        };
        match fields {
            Fields::Float => features.push(v),
            Fields::Pixel => {
                if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
                    return Err(bad("a pixel value (an integer in 0..=255)"));
                }
                features.push(v / 255.0);
            }
        }
    }
    Ok(())
}

/// The error for a file without data rows.
fn no_rows(bytes: &[u8], path: &Path, skip: usize) -> Error {
    if bytes.is_empty() {
        return Error::format(path, 0, "the file is empty");
    }
    let after = if skip > 0 {
        format!(" after the {skip} skipped line(s)")
    } else {
        String::new()
    };
    Error::format(path, bytes.len() as u64, format!("the file has no data rows{after}"))
}

/// Parses a numeric CSV whose last column is the target (`T`: a u32 label or an f32
/// value). `skip` leading lines are ignored, as are blank lines. `cols`, when given,
/// is the required number of columns (features + target); otherwise the first data
/// row sets it.
pub(super) fn parse_csv<T: TargetField>(
    bytes: &[u8],
    path: &Path,
    skip: usize,
    cols: Option<usize>,
    fields: Fields,
) -> Result<Dataset<T>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::format(path, e.valid_up_to() as u64, "the file is not valid UTF-8 text"))?;
    let (mut features, mut labels) = (Vec::new(), Vec::new());
    let mut ncols = cols;
    for line in data_lines(text, skip) {
        let c = *ncols.get_or_insert(line.fields.len());
        let at = line.start as u64;
        if c < 2 {
            let why = format!(
                "line {} has {c} column; need at least one feature and the {}",
                line.number,
                T::NAME
            );
            return Err(Error::format(path, at, why));
        }
        if line.fields.len() != c {
            let why = format!("line {} has {} columns, expected {c}", line.number, line.fields.len());
            return Err(Error::format(path, at, why));
        }
        push_features(&line, path, fields, &mut features)?;
        let (off, field) = line.fields[c - 1];
        let value = field.trim();
        let target = T::parse(value).ok_or_else(|| {
            let why = format!(
                "line {}, column {c}: {} {value:?} is not {}",
                line.number,
                T::NAME,
                T::WHAT
            );
            Error::format(path, off as u64, why)
        })?;
        labels.push(target);
    }
    if labels.is_empty() {
        return Err(no_rows(bytes, path, skip));
    }
    Ok(Dataset {
        n: labels.len(),
        features,
        labels,
        dim: ncols.map_or(0, |c| c - 1),
    })
}

/// Reads the gzipped MNIST CSV (no header; 784 pixel ints 0-255 then the label per row);
/// pixels scaled to `[0, 1]` by /255.
///
/// A raw (not gzipped) file is read as well. Every row must have exactly 785 columns.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the line and
/// column of a bad value or the line of a wrong column count.
pub fn load_mnist_csv_gz(path: impl AsRef<Path>) -> Result<Dataset> {
    let path = path.as_ref();
    let bytes = read_maybe_gz(path)?;
    parse_csv(&bytes, path, 0, Some(28 * 28 + 1), Fields::Pixel)
}

/// [`load_mnist_csv_gz`] on bytes already in memory (gzipped or not), e.g. fetched
/// by a web page, where there are no files; `source` names them in errors.
///
/// # Errors
/// [`Error::Format`] as [`load_mnist_csv_gz`], with `source` as the path.
pub fn parse_mnist_csv_gz(bytes: &[u8], source: &str) -> Result<Dataset> {
    let path = Path::new(source);
    let bytes = maybe_gunzip(bytes.to_vec(), path)?;
    parse_csv(&bytes, path, 0, Some(28 * 28 + 1), Fields::Pixel)
}

/// Reads a numeric CSV: `skip` leading lines skipped, last column is an integer label,
/// the others f32 features.
///
/// Fields are separated by commas and may be padded with spaces; blank lines are
/// ignored; every row must have as many columns as the first. A gzipped file (magic
/// `1f 8b`) is decompressed first.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the line and
/// column (1-based) of a value that is not a finite number or a label that is not a
/// non-negative integer, the line of a wrong column count, or a file with no data
/// rows.
pub fn load_csv_labelled(path: impl AsRef<Path>, skip: usize) -> Result<Dataset> {
    let path = path.as_ref();
    let bytes = read_maybe_gz(path)?;
    parse_csv(&bytes, path, skip, None, Fields::Float)
}

/// Reads a numeric CSV for a regression: `skip` leading lines skipped, the last
/// column an f32 target, the others f32 features, as [`load_csv_labelled`] reads
/// them. [`Dataset::tensors`] then gives targets `[n, 1]` for a `Loss::Mse` model
/// with one output.
///
/// ```no_run
/// # fn main() -> wgnn::Result<()> {
/// let data = wgnn::data::load_csv_regression("houses.csv", 1)?;
/// let (x, y) = data.tensors(&wgnn::Device::cpu())?; // [n, features], [n, 1]
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`load_csv_labelled`], with a target that is not a finite number named by
/// its line and column.
pub fn load_csv_regression(path: impl AsRef<Path>, skip: usize) -> Result<Dataset<f32>> {
    let path = path.as_ref();
    let bytes = read_maybe_gz(path)?;
    parse_csv(&bytes, path, skip, None, Fields::Float)
}
