//! Training reports: after `fit`, [`write_report`] fills a folder with pictures (PNG and SVG) and a
//! `summary.md` that ties them together: the curves per epoch, the learning rate, the confusion
//! matrix, per-layer health and why training stopped.
//!
//! Every file is written under a temporary name and renamed into place, so a crash never leaves a
//! half-written file. PNG text is drawn with an embedded DejaVu Sans, so no system font is needed.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use plotters::chart::SeriesLabelPosition::{LowerRight, UpperRight};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordi32;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle, FontTransform};

pub use super::history::{LayerStat, LrChange};
use crate::{Error, Result};

/// One curve pair: e.g. name "loss", train per epoch, val per epoch (may be empty).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curve {
    /// The log's name without the `val_` prefix (`"loss"`, `"accuracy"`, …).
    pub name: String,
    /// Its value on the training data, per epoch.
    pub train: Vec<f64>,
    /// Its value on the validation data, per epoch; empty without validation.
    pub val: Vec<f64>,
}

/// Everything a report shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportData {
    /// Heading of `summary.md`.
    pub title: String,
    /// "loss" first, then metrics.
    pub curves: Vec<Curve>,
    /// Learning rate used in each epoch.
    pub lr: Vec<f64>,
    /// Learning-rate changes, listed in a table.
    pub lr_changes: Vec<LrChange>,
    /// `(classes, counts)`, row-major, row = true class, column = predicted class.
    pub confusion: Option<(usize, Vec<u64>)>,
    /// May be empty: classes are then called "0", "1", ...
    pub class_names: Vec<String>,
    /// Per-layer health, as a table (may be empty).
    pub layers: Vec<LayerStat>,
    /// Why early stopping fired, if it did.
    pub stop_reason: Option<String>,
    /// Seed, adapter, driver, wgnn version, epochs, batch size, ...
    pub meta: Vec<(String, String)>,
}

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(255, 127, 14);
const GRID: RGBColor = RGBColor(225, 225, 225);
const LINE_SIZE: (u32, u32) = (900, 540);
/// Above this many classes the confusion matrix is only summarised, not drawn.
const MAX_CLASSES: usize = 200;

type Series<'a> = (&'a str, &'a [f64], RGBColor);

/// A picture, drawn the same way on the PNG and the SVG backend.
enum Figure<'a> {
    /// Title (also the y label), series, log y axis, legend at the top (else at the
    /// bottom), the x label.
    Lines(&'a str, Vec<Series<'a>>, bool, bool, &'a str),
    /// Classes, counts, class names for the ticks.
    Confusion(usize, &'a [u64], Vec<String>),
    /// Title (also the y label), category names, then per series its name and one
    /// value per category: grouped bars.
    Bars(&'a str, &'a [String], &'a [(String, Vec<f64>)]),
}

/// Writes a grouped bar chart as `{stem}.png` and `{stem}.svg` in `dir` (created if
/// missing): one group of bars per category, one bar per series, a legend (used for
/// the fairness report's per-group rates and the explanations' feature importances).
/// `Err` when a series has not one value per category.
pub fn write_bars(
    dir: impl AsRef<Path>,
    stem: &str,
    title: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<()> {
    let dir = dir.as_ref();
    if let Some((name, v)) = series.iter().find(|(_, v)| v.len() != categories.len()) {
        let msg = format!(
            "report: series {name} has {} values for {} categories",
            v.len(),
            categories.len()
        );
        return Err(Error::Invalid(msg));
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    save(dir, stem, LINE_SIZE, &Figure::Bars(title, categories, series))
}

/// Writes line curves as `{stem}.png` and `{stem}.svg` in `dir` (created if
/// missing): one line per series over the steps 1, 2, … (e.g. the test accuracy per
/// round of federated runs, `x_label` "round"), `title` also the y label, a legend.
/// Non-finite values
/// are left out.
pub fn write_lines(
    dir: impl AsRef<Path>,
    stem: &str,
    title: &str,
    x_label: &str,
    series: &[(String, Vec<f64>)],
) -> Result<()> {
    let dir = dir.as_ref();
    const PALETTE: [RGBColor; 8] = [
        TRAIN,
        VAL,
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    let lines: Vec<Series> = series
        .iter()
        .enumerate()
        .map(|(k, (name, v))| (name.as_str(), v.as_slice(), PALETTE[k % PALETTE.len()]))
        .collect();
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    save(
        dir,
        stem,
        LINE_SIZE,
        &Figure::Lines(title, lines, false, false, x_label),
    )
}

/// Writes the report into `dir` (created if missing) and returns the path of its `summary.md`.
pub fn write_report(dir: impl AsRef<Path>, data: &ReportData) -> Result<PathBuf> {
    let dir = dir.as_ref();
    if let Some((n, counts)) = &data.confusion {
        if n.checked_mul(*n) != Some(counts.len()) {
            let msg = format!("report: {n} classes need {n}² confusion counts, got {}", counts.len());
            return Err(Error::Invalid(msg));
        }
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut md = String::new();
    summary_head(&mut md, data);
    curves_section(&mut md, dir, data)?;
    lr_section(&mut md, dir, data)?;
    layers_section(&mut md, data);
    confusion_section(&mut md, dir, data)?;
    let path = dir.join("summary.md");
    write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// The title, the settings and why training stopped.
fn summary_head(md: &mut String, data: &ReportData) {
    let _ = write!(md, "# {}\n\n", one_line(&data.title));
    if !data.meta.is_empty() {
        let meta = data.meta.iter().map(|(k, v)| vec![cell(k), cell(v)]);
        table(md, "setting|value", meta);
    }
    let lens = data.curves.iter().map(|c| c.train.len().max(c.val.len()));
    let epochs = lens.fold(data.lr.len(), usize::max);
    let why = match &data.stop_reason {
        Some(r) => format!("Stopped after {epochs} epochs: {}.", one_line(r).trim_end_matches('.')),
        None => format!("Ran all {epochs} epochs."),
    };
    let _ = writeln!(md, "## Why training stopped\n\n{why}\n");
}

/// A table of every curve's final and best values, and a plot of each.
fn curves_section(md: &mut String, dir: &Path, data: &ReportData) -> Result<()> {
    md.push_str("## Curves\n\n");
    let (mut rows, mut notes, mut images) = (Vec::new(), String::new(), String::new());
    for c in &data.curves {
        let lower = lower_is_better(&c.name);
        let has_val = c.val.iter().any(|v| v.is_finite());
        let (best, split) = match has_val {
            true => (best_of(&c.val, lower), "validation"),
            false => (best_of(&c.train, lower), "train"),
        };
        let (b, e) = match best {
            Some((e, v)) => (format!("{} ({split})", num(v)), e.to_string()),
            None => ("—".into(), "—".into()),
        };
        let last = |v: &[f64]| v.last().map_or("—".into(), |&x| num(x));
        rows.push(vec![cell(&c.name), last(&c.train), last(&c.val), b, e]);
        if best.is_none() {
            let _ = writeln!(notes, "- `{}` has no finite values; not plotted.", one_line(&c.name));
            continue;
        }
        let stem = file_stem(&c.name);
        let mut series = vec![("train", c.train.as_slice(), TRAIN)];
        if has_val {
            series.push(("validation", c.val.as_slice(), VAL));
        }
        save(
            dir,
            &stem,
            LINE_SIZE,
            &Figure::Lines(&c.name, series, false, lower, "epoch"),
        )?;
        let _ = writeln!(images, "![{}]({stem}.png)\n", one_line(&c.name));
    }
    if rows.is_empty() {
        md.push_str("No curves were recorded.\n\n");
    } else {
        table(md, "curve|final train|final validation|best|best epoch", rows);
    }
    if !notes.is_empty() {
        notes.push('\n');
    }
    md.push_str(&(notes + &images));
    Ok(())
}

/// The learning rate's plot and its changes.
fn lr_section(md: &mut String, dir: &Path, data: &ReportData) -> Result<()> {
    md.push_str("## Learning rate\n\n");
    let finite = data.lr.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if lo <= hi {
        let series = vec![("learning rate", data.lr.as_slice(), TRAIN)];
        let log = lo > 0.0 && hi > 10.0 * lo;
        save(
            dir,
            "lr",
            LINE_SIZE,
            &Figure::Lines("learning rate", series, log, true, "epoch"),
        )?;
        md.push_str("![learning rate](lr.png)\n\n");
    } else {
        md.push_str("No learning rate was recorded.\n\n");
    }
    if data.lr_changes.is_empty() {
        md.push_str("The learning rate did not change.\n\n");
    } else {
        let rows = data.lr_changes.iter();
        let rows = rows.map(|c| vec![c.epoch.to_string(), num(c.from), num(c.to), cell(&c.reason)]);
        table(md, "epoch|from|to|reason", rows);
    }
    Ok(())
}

/// A table of the per-layer statistics.
fn layers_section(md: &mut String, data: &ReportData) {
    md.push_str("## Layers\n\n");
    if data.layers.is_empty() {
        md.push_str("No layer statistics were recorded.\n\n");
    } else {
        let rows = data.layers.iter().map(|l| {
            let (g, w) = (num(l.grad_norm), num(l.weight_norm));
            vec![cell(&l.name), g, w, pct(l.dead_relu), pct(l.saturated)]
        });
        table(md, "layer|grad norm|weight norm|dead ReLU|saturated", rows);
    }
}

/// The share of correct predictions and the confusion matrix's plot, if there is one.
fn confusion_section(md: &mut String, dir: &Path, data: &ReportData) -> Result<()> {
    let Some((n, counts)) = &data.confusion else {
        return Ok(());
    };
    md.push_str("## Confusion matrix\n\n");
    let total: u64 = counts.iter().sum();
    if total == 0 {
        md.push_str("The confusion matrix is empty, so it is not plotted.\n\n");
        return Ok(());
    }
    let right: u64 = (0..*n).map(|i| counts[i * n + i]).sum();
    let share = 100.0 * right as f64 / total as f64;
    let _ = writeln!(md, "{right} of {total} predictions correct ({share:.2}%).\n");
    if *n > MAX_CLASSES {
        let _ = writeln!(md, "Not plotted: more than {MAX_CLASSES} classes.\n");
    } else {
        let name = |i: usize| data.class_names.get(i).map_or(i.to_string(), |s| short(s, 24));
        let names: Vec<String> = (0..*n).map(name).collect();
        let size = grid(*n, &names).4;
        save(dir, "confusion", size, &Figure::Confusion(*n, counts, names))?;
        md.push_str("![confusion matrix](confusion.png)\n\n");
    }
    Ok(())
}

/// Appends a markdown table; `head` separates the column names with `|`.
fn table(md: &mut String, head: &str, rows: impl IntoIterator<Item = Vec<String>>) {
    let cols = head.split('|').count();
    let _ = writeln!(md, "| {} |\n|{}", head.replace('|', " | "), "---|".repeat(cols));
    for r in rows {
        let _ = writeln!(md, "| {} |", r.join(" | "));
    }
    md.push('\n');
}

/// Whether smaller is better for a curve of this name (losses and errors); metrics are bigger-is-better.
fn lower_is_better(name: &str) -> bool {
    const LOWER: [&str; 6] = ["loss", "err", "mse", "mae", "perplexity", "ppl"];
    LOWER.iter().any(|k| name.to_lowercase().contains(k))
}

/// A fraction as a percentage, "—" when absent.
fn pct(f: Option<f64>) -> String {
    match f {
        Some(f) if f.is_finite() => format!("{:.1}%", f * 100.0),
        Some(f) => num(f),
        None => "—".into(),
    }
}

/// 1-based epoch and value of the best finite entry.
fn best_of(v: &[f64], lower: bool) -> Option<(usize, f64)> {
    let better = |a: f64, b: f64| if lower { a < b } else { a > b };
    let finite = v.iter().enumerate().filter(|(_, x)| x.is_finite());
    finite.fold(None, |best, (i, &x)| match best {
        Some((_, b)) if !better(x, b) => best,
        _ => Some((i + 1, x)),
    })
}

/// A number with at most four significant digits, e.g. `0.1306`, `12.5`, `3.2e-5`.
fn num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() || v == 0.0 {
        format!("{v}")
    } else if (1e-3..1e5).contains(&a) {
        trim(format!("{v:.*}", (3 - a.log10().floor() as i32).clamp(0, 6) as usize))
    } else {
        sci(v)
    }
}

/// `v` as `1.5e-4`.
fn sci(v: f64) -> String {
    let s = format!("{v:.3e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    format!("{}e{e}", trim(m.to_string()))
}

/// Drops trailing zeros after a decimal point.
fn trim(s: String) -> String {
    match s.contains('.') {
        true => s.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => s,
    }
}

/// Tick text on an axis whose largest magnitude is `scale`, in one style for the whole axis.
fn tick(v: f64, scale: f64) -> String {
    if v.abs() <= scale * 1e-9 {
        "0".into()
    } else if !(1e-2..1e5).contains(&scale) {
        sci(v)
    } else {
        num(v)
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Text for a markdown table cell.
fn cell(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}

/// A safe file stem for a curve name; never clashes with the report's own files.
fn file_stem(name: &str) -> String {
    let keep = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let s: String = name.chars().map(|c| if keep(c) { c } else { '_' }).collect();
    match s.as_str() {
        "" => "curve".into(),
        "lr" | "confusion" | "summary" => format!("{s}_curve"),
        _ => s,
    }
}

/// `s` on one line, cut to `max` characters.
fn short(s: &str, max: usize) -> String {
    let s = one_line(s);
    match s.chars().count() <= max {
        true => s,
        false => s.chars().take(max - 1).chain(['…']).collect(),
    }
}

/// Rough width in pixels of `s` in DejaVu Sans at `px` pixels.
fn text_w(s: &str, px: u32) -> u32 {
    (s.chars().count() as f64 * 0.55 * px as f64).ceil() as u32
}

/// Layout of a confusion picture: cell side, left margin, label every `step`-th class, rotated
/// column labels, picture size.
fn grid(n: usize, names: &[String]) -> (i32, i32, usize, bool, (u32, u32)) {
    let cell = (600 / n.max(1) as u32).clamp(3, 90);
    let step = 14usize.div_ceil(cell as usize);
    let widest = names.iter().step_by(step).map(|s| text_w(s, 15)).max().unwrap_or(0);
    let rotate = widest + 6 > cell * step as u32;
    let (left, side) = (widest + 50, cell * n as u32);
    let bottom = if rotate { widest + 50 } else { 70 };
    (
        cell as i32,
        left as i32,
        step,
        rotate,
        (left + side + 40, 60 + side + bottom),
    )
}

fn tmp_name(dst: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = dst.file_name().unwrap_or_default().to_string_lossy();
    let ext = dst.extension().unwrap_or_default().to_string_lossy();
    // The extension stays last: the PNG encoder picks the format from it.
    let id = format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    dst.with_file_name(format!(".{name}.{id}.tmp.{ext}"))
}

/// Flushes `tmp` to disk and renames it to `dst`; removes it on failure.
fn commit(tmp: &Path, dst: &Path) -> Result<()> {
    let synced = fs::File::open(tmp).and_then(|f| f.sync_all());
    let r = synced
        .map_err(|e| Error::io(tmp, e))
        .and_then(|_| fs::rename(tmp, dst).map_err(|e| Error::io(dst, e)));
    if r.is_err() {
        let _ = fs::remove_file(tmp);
    }
    r
}

fn write_atomic(dst: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_name(dst);
    fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    commit(&tmp, dst)
}

/// Draws `fig` into `{stem}.png` and `{stem}.svg` in `dir`.
fn save(dir: &Path, stem: &str, size: (u32, u32), fig: &Figure) -> Result<()> {
    static FONT_OK: OnceLock<bool> = OnceLock::new();
    if !*FONT_OK.get_or_init(|| register_font("sans-serif", FontStyle::Normal, FONT).is_ok()) {
        return Err(Error::Invalid("report: the embedded font could not be loaded".into()));
    }
    let (png, svg_path) = (dir.join(format!("{stem}.png")), dir.join(format!("{stem}.svg")));
    let err = |p: &Path, e: String| Error::Invalid(format!("report: drawing {}: {e}", p.display()));
    let tmp = tmp_name(&png);
    if let Err(e) = render(BitMapBackend::new(&tmp, size).into_drawing_area(), fig) {
        let _ = fs::remove_file(&tmp);
        return Err(err(&png, e.to_string()));
    }
    commit(&tmp, &png)?;
    let mut svg = String::new();
    let drawn = render(SVGBackend::with_string(&mut svg, size).into_drawing_area(), fig);
    drawn.map_err(|e| err(&svg_path, e.to_string()))?;
    write_atomic(&svg_path, svg.as_bytes())
}

fn render<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &Figure) -> DrawResult<DB> {
    draw(&root, fig)?;
    root.present()
}

type DrawResult<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Text style of DejaVu Sans at `px` pixels, anchored at `(h, v)`.
fn font(px: u32, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle::from(("sans-serif", px).into_font()).pos(Pos::new(h, v))
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &Figure) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (title, series, log_y, legend_top, x_label) = match fig {
        Figure::Lines(title, series, log_y, legend_top, x) => (*title, series, *log_y, *legend_top, *x),
        Figure::Confusion(n, counts, names) => return draw_grid(root, *n, counts, names),
        Figure::Bars(title, categories, series) => return draw_bars(root, title, categories, series),
    };
    let n = series.iter().map(|s| s.1.len()).max().unwrap_or(0) as i32;
    let ok = |v: &&f64| v.is_finite() && (!log_y || **v > 0.0);
    let finite = series.iter().flat_map(|s| s.1.iter()).filter(ok);
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let mut b = ChartBuilder::on(root);
    b.caption(title, ("sans-serif", 26)).margin(18);
    b.x_label_area_size(50).y_label_area_size(90);
    if log_y {
        let chart = b.build_cartesian_2d(0..n + 1, (lo / 1.3..hi * 1.3).log_scale())?;
        draw_lines(chart, title, x_label, series, n, log_y, legend_top)
    } else {
        let pad = 0.06 * if hi > lo { hi - lo } else { lo.abs().max(1.0) };
        let chart = b.build_cartesian_2d(0..n + 1, lo - pad..hi + pad)?;
        draw_lines(chart, title, x_label, series, n, log_y, legend_top)
    }
}

/// Grouped bars: category `c`, series `k` of `m` at x from `c + k/(m+1)`, width
/// `1/(m+1)`; the y axis from 0 (or the smallest value, when negative).
fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    categories: &[String],
    series: &[(String, Vec<f64>)],
) -> DrawResult<DB> {
    let values = series.iter().flat_map(|s| s.1.iter()).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(a, b), &v| (a.min(v), b.max(v)));
    // Room above the bars for the legend (upper right).
    let pad = 0.10 * (hi - lo).max(1e-9) + 0.06 * (hi - lo).max(1e-9) * series.len() as f64;
    let n = categories.len() as f64;
    let mut b = ChartBuilder::on(root);
    b.caption(title, ("sans-serif", 26)).margin(18);
    b.x_label_area_size(50).y_label_area_size(90);
    let mut chart = b.build_cartesian_2d(0.0..n, lo - if lo < 0.0 { pad } else { 0.0 }..hi + pad)?;
    let scale = lo.abs().max(hi.abs());
    let yfmt = |y: &f64| tick(*y, scale);
    let xfmt = |x: &f64| {
        let c = x.floor() as usize;
        if (x - c as f64 - 0.5).abs() < 1e-6 && c < categories.len() {
            categories[c].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .y_desc(title)
        .x_labels(categories.len() * 2 + 1)
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .disable_x_mesh()
        .draw()?;
    let m = series.len() as f64;
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, RGBColor(230, 150, 0), BLACK];
    for (k, (name, v)) in series.iter().enumerate() {
        let color = palette[k % palette.len()].mix(0.8);
        let bars = v.iter().enumerate().filter(|(_, y)| y.is_finite()).map(move |(c, &y)| {
            let x0 = c as f64 + (k as f64 + 0.5) / (m + 1.0);
            Rectangle::new([(x0, 0.0), (x0 + 1.0 / (m + 1.0), y)], color.filled())
        });
        let swatch = move |(x, y): (i32, i32)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.filled());
        chart.draw_series(bars)?.label(name.as_str()).legend(swatch);
    }
    let mut legend = chart.configure_series_labels();
    legend.position(UpperRight).label_font(("sans-serif", 16)).margin(12);
    legend.background_style(WHITE.mix(0.85)).border_style(BLACK.mix(0.4));
    legend.draw()?;
    Ok(())
}

fn draw_lines<'a, DB: DrawingBackend + 'a, Y: Ranged<ValueType = f64> + ValueFormatter<f64>>(
    mut chart: ChartContext<'a, DB, Cartesian2d<RangedCoordi32, Y>>,
    y_desc: &str,
    x_desc: &str,
    series: &[Series],
    n: i32,
    log_y: bool,
    legend_top: bool,
) -> DrawResult<DB> {
    let xfmt = |x: &i32| if (1..=n).contains(x) { x.to_string() } else { "".into() };
    let scale = chart.y_range().start.abs().max(chart.y_range().end.abs());
    let yfmt = |y: &f64| tick(*y, scale);
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .x_labels(12.min(n as usize + 2))
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 14))
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .draw()?;
    for &(label, values, color) in series {
        // NaN (and, on a log axis, non-positive) values break the line into segments.
        let pts: Vec<(i32, f64)> = values.iter().enumerate().map(|(i, &v)| (i as i32 + 1, v)).collect();
        let gap = |p: &(i32, f64)| !p.1.is_finite() || (log_y && p.1 <= 0.0);
        let segments = pts.split(gap).filter(|s| !s.is_empty());
        for (k, seg) in segments.enumerate() {
            let r = if n <= 60 || seg.len() == 1 { 3 } else { 0 };
            let line = LineSeries::new(seg.iter().copied(), color.filled().stroke_width(2)).point_size(r);
            let ann = chart.draw_series(line)?;
            if k == 0 {
                let swatch = move |(x, y): (i32, i32)| PathElement::new([(x, y), (x + 24, y)], color.stroke_width(3));
                ann.label(label).legend(swatch);
            }
        }
    }
    let pos = if legend_top { UpperRight } else { LowerRight };
    let mut legend = chart.configure_series_labels();
    legend.position(pos).label_font(("sans-serif", 16)).margin(12);
    legend.background_style(WHITE.mix(0.85)).border_style(BLACK.mix(0.4));
    legend.draw()?;
    Ok(())
}

/// Heat map coloured by each row's share (recall), with the counts written in the cells.
fn draw_grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    n: usize,
    k: &[u64],
    names: &[String],
) -> DrawResult<DB> {
    let (c, x0, step, rotate, _) = grid(n, names);
    let (y0, side) = (60, c * n as i32);
    let (h, v) = (HPos::Center, VPos::Center);
    root.draw_text("confusion matrix", &font(24, h, VPos::Top), (x0 + side / 2, 14))?;
    let count_px = (c as f64 * 0.32).min(18.0) as u32;
    for i in 0..n {
        let row: u64 = k[i * n..(i + 1) * n].iter().sum();
        for j in 0..n {
            let share = if row > 0 { k[i * n + j] as f64 / row as f64 } else { 0.0 };
            let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * share).round() as u8;
            let (x, y) = (x0 + j as i32 * c, y0 + i as i32 * c);
            let rect = [(x, y), (x + c, y + c)];
            let fill = RGBColor(mix(247, 8), mix(251, 48), mix(255, 107));
            root.draw(&Rectangle::new(rect, fill.filled()))?;
            if c >= 8 {
                root.draw(&Rectangle::new(rect, GRID.stroke_width(1)))?;
            }
            let txt = k[i * n + j].to_string();
            if count_px >= 8 && text_w(&txt, count_px) < c as u32 {
                let style = font(count_px, h, v).color(if share > 0.5 { &WHITE } else { &BLACK });
                root.draw_text(&txt, &style, (x + c / 2, y + c / 2))?;
            }
        }
    }
    let outer = [(x0, y0), (x0 + side, y0 + side)];
    root.draw(&Rectangle::new(outer, BLACK.stroke_width(1)))?;
    for (i, name) in names.iter().enumerate().step_by(step) {
        let mid = i as i32 * c + c / 2;
        root.draw_text(name, &font(15, HPos::Right, v), (x0 - 8, y0 + mid))?;
        let xs = match rotate {
            true => font(15, HPos::Right, v).transform(FontTransform::Rotate270),
            false => font(15, h, VPos::Top),
        };
        root.draw_text(name, &xs, (x0 + mid, y0 + side + 8))?;
    }
    let bottom = root.dim_in_pixel().1 as i32 - 10;
    root.draw_text("predicted", &font(18, h, VPos::Bottom), (x0 + side / 2, bottom))?;
    let ys = font(18, h, VPos::Top).transform(FontTransform::Rotate270);
    root.draw_text("true", &ys, (10, y0 + side / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wgnn-report-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn curve(name: &str, train: Vec<f64>, val: Vec<f64>) -> Curve {
        Curve {
            name: name.into(),
            train,
            val,
        }
    }

    fn sample() -> ReportData {
        let loss: Vec<f64> = (0..10).map(|e| 1.2 * (-0.3 * e as f64).exp() + 0.05).collect();
        let val_loss: Vec<f64> = (0..10)
            .map(|e| 1.25 * (-0.25 * e as f64).exp() + 0.12 + e as f64 / 100.0)
            .collect();
        let acc = loss.iter().map(|l| 1.0 - l / 1.5).collect();
        let val_acc = val_loss.iter().map(|l| 1.0 - l / 1.4).collect();
        let reason = "plateau: val loss flat for 2 epochs".into();
        let layers = [
            ("fc1", 0.0123, 4.56, Some(0.125), None),
            ("fc2", 3.2e-5, 1.5, None, Some(0.02)),
        ];
        let layers = layers.map(|(name, grad_norm, weight_norm, dead_relu, saturated)| LayerStat {
            name: name.into(),
            grad_norm,
            weight_norm,
            dead_relu,
            saturated,
        });
        ReportData {
            title: "mnist mlp".into(),
            curves: vec![curve("loss", loss, val_loss), curve("accuracy", acc, val_acc)],
            lr: [[1e-3; 6].as_slice(), &[1e-4; 4]].concat(),
            lr_changes: vec![LrChange {
                epoch: 6,
                from: 1e-3,
                to: 1e-4,
                reason,
            }],
            confusion: Some((3, vec![50, 3, 2, 4, 40, 6, 1, 5, 44])),
            class_names: vec!["cat".into(), "dog".into(), "bird".into()],
            layers: layers.into(),
            stop_reason: Some("early stopping: val loss did not improve for 3 epochs".into()),
            meta: vec![("seed".into(), "42".into()), ("batch size".into(), "64".into())],
        }
    }

    #[test]
    fn writes_all_files() {
        let dir = temp_dir("full");
        let summary = write_report(&dir, &sample()).unwrap();
        assert_eq!(summary, dir.join("summary.md"));
        for stem in ["loss", "accuracy", "lr", "confusion"] {
            let png = fs::read(dir.join(format!("{stem}.png"))).unwrap();
            assert!(png.len() > 5000 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "{stem}.png");
            let svg = fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
            assert!(svg.starts_with("<svg"), "{stem}.svg");
            let curve = stem == "loss" || stem == "accuracy";
            assert!(!curve || svg.contains("epoch") && svg.contains("validation") && svg.contains("train"));
        }
        let md = fs::read_to_string(&summary).unwrap();
        let needles = [
            "![loss](loss.png)",
            "![accuracy](accuracy.png)",
            "![learning rate](lr.png)",
            "![confusion matrix](confusion.png)",
            "| 6 | 0.001 | 1e-4 | plateau: val loss flat for 2 epochs |",
            "| fc2 | 3.2e-5 | 1.5 | — | 2.0% |",
            "| loss | 0.1306 | 0.3417 | 0.3417 (validation) | 10 |",
            "Stopped after 10 epochs: early stopping: val loss did not improve for 3 epochs.",
            "134 of 155 predictions correct",
        ];
        for needle in needles {
            assert!(md.contains(needle), "summary.md lacks {needle}:\n{md}");
        }
        for entry in fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(
                !name.to_string_lossy().starts_with('.'),
                "temporary file left behind: {name:?}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn odd_data_does_not_panic() {
        let dir = temp_dir("odd");
        let mut d = sample();
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        let (loss, empty) = (
            curve("loss", vec![nan, 0.5, inf, 0.3], vec![]),
            curve("f1/macro", vec![], vec![]),
        );
        d.curves = vec![loss, empty, curve("top5", vec![0.7], vec![nan])];
        (d.lr, d.confusion, d.stop_reason) = (vec![nan, 0.1, 0.01, 0.001], Some((0, vec![])), None);
        let md = fs::read_to_string(write_report(&dir, &d).unwrap()).unwrap();
        assert!(
            md.contains("Ran all 4 epochs") && md.contains("`f1/macro` has no finite values"),
            "{md}"
        );
        assert!(dir.join("top5.png").exists() && !dir.join("f1_macro.png").exists());
        assert!(!dir.join("confusion.png").exists());
        d.curves[0].train = (0..200).map(|e| 1.0 / (1.0 + e as f64)).collect();
        d.confusion = Some((40, (0..1600).map(|i| if i % 41 == 0 { 90 } else { i % 7 }).collect()));
        d.class_names = (0..40).map(|i| format!("class number {i}")).collect();
        write_report(&dir, &d).unwrap();
        assert!(dir.join("confusion.png").exists());
        d.confusion = Some((201, vec![1; 201 * 201]));
        let md = fs::read_to_string(write_report(&dir, &d).unwrap()).unwrap();
        assert!(md.contains("Not plotted: more than 200 classes"), "{md}");
        d.confusion = Some((3, vec![1, 2]));
        assert!(matches!(write_report(&dir, &d), Err(Error::Invalid(_))));
        fs::remove_dir_all(&dir).unwrap();
    }
}
