//! Checks of a data set's values before training: NaN or infinite values, labels
//! not below the number of classes, bad sample weights. Host rows are scanned; rows
//! on a device are checked there with one number read back, and read in full only to
//! locate a value already known to be bad. The device checks are async: a browser
//! tab reads a GPU value only by awaiting it.

use crate::tensor::DType;
use crate::{Result, Tensor};

/// The first non-finite value of `data` (rows shaped `row`): `(what, row, column,
/// value)`.
fn first_in(what: &'static str, data: &[f32], row: &[usize]) -> Option<(&'static str, usize, usize, f32)> {
    let width = row.iter().product::<usize>().max(1);
    let i = data.iter().position(|v| !v.is_finite())?;
    Some((what, i / width, i % width, data[i]))
}

/// The first NaN or infinite value of host rows, inputs first, then the targets
/// unless they are `labels`.
pub(super) fn first_non_finite_host(
    x: &[f32],
    x_row: &[usize],
    y: &[f32],
    y_row: &[usize],
    labels: bool,
) -> Option<(&'static str, usize, usize, f32)> {
    first_in("features", x, x_row).or_else(|| if labels { None } else { first_in("targets", y, y_row) })
}

/// Whether `t` holds a NaN or an infinity, found on its device: `Σ 0·t` is NaN
/// exactly then (one number read back).
async fn any_non_finite(t: &Tensor) -> Result<bool> {
    Ok(scalar(&t.mul_scalar(0.0).sum()).await?.is_nan())
}

/// The value of a one-element tensor, awaited.
async fn scalar(t: &Tensor) -> Result<f32> {
    Ok(t.to_vec_async().await?[0])
}

/// [`first_non_finite_host`] for rows on a device.
pub(super) async fn first_non_finite_device(
    x: &Tensor,
    y: &Tensor,
    labels: bool,
) -> Result<Option<(&'static str, usize, usize, f32)>> {
    let row = |t: &Tensor| t.shape()[1..].to_vec();
    if any_non_finite(x).await? {
        return Ok(first_in("features", &x.to_vec_async().await?, &row(x)));
    }
    if !labels && y.dtype() == DType::F32 && any_non_finite(y).await? {
        return Ok(first_in("targets", &y.to_vec_async().await?, &row(y)));
    }
    Ok(None)
}

/// The first label of `y` (on a device) not below `classes`: every label in range
/// has a one in its one-hot row, so the ones sum to the rows exactly then.
pub(super) async fn first_label_out_of_range_device(y: &Tensor, classes: usize) -> Result<Option<(usize, u32)>> {
    let rows = y.shape()[0];
    if scalar(&y.one_hot(classes).sum()).await? == rows as f32 {
        return Ok(None);
    }
    let labels: Vec<u32> = y.to_vec_async().await?.into_iter().map(|l| l as u32).collect();
    Ok(labels
        .iter()
        .position(|&l| l as usize >= classes)
        .map(|i| (i, labels[i])))
}

/// The first sample weight that is negative or not finite: `(index, value)`.
pub(super) fn first_bad_weight(w: &Tensor) -> Result<Option<(usize, f32)>> {
    // Σ relu(−w) + Σ 0·w is 0 exactly when every weight is finite and not negative.
    let bad = w.neg().relu().sum() + w.mul_scalar(0.0).sum();
    if bad.item()? == 0.0 {
        return Ok(None);
    }
    let values = w.to_vec()?;
    Ok(values
        .iter()
        .position(|v| !v.is_finite() || *v < 0.0)
        .map(|i| (i, values[i])))
}
