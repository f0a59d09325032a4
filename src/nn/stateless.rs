//! Layers without parameters that reshape or normalize along an axis: `Flatten`,
//! `Unflatten`, `Identity` and `Softmax` along any axis, as PyTorch's `nn.Flatten()`,
//! `nn.Unflatten(dim, sizes)`, `nn.Identity()` and `nn.Softmax(dim)`.

use super::{Module, TensorSpec};
use crate::tensor::Axis;
use crate::Tensor;

/// An axis argument kept by a layer until it sees an input: counted from the front
/// when non-negative, from the back when negative (`isize::MIN` when it is neither in
/// any rank, so that it stays out of range).
fn signed_axis(axis: impl Axis) -> isize {
    const PROBE: usize = isize::MAX as usize;
    match axis.index(PROBE) {
        Some(i) if i <= PROBE / 2 => i as isize,
        Some(i) => i as isize - PROBE as isize,
        None => isize::MIN,
    }
}

/// `axis` of a shape of rank `rank`, or why not, for layer `layer`.
fn resolve(layer: &str, axis: isize, shape: &[usize]) -> std::result::Result<usize, String> {
    axis.index(shape.len())
        .ok_or_else(|| format!("{layer}: axis {axis} out of range for shape {shape:?}"))
}

/// `[N, d1, d2, ..]` → `[N, d1·d2·..]`, as `nn.Flatten()` (`start_dim=1`): the
/// bridge from convolutions and pooling to `Linear`. A reshape: no copy, no
/// parameters; label tensors flatten too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Module)]
pub struct Flatten;

impl Flatten {
    fn shape(input: &[usize]) -> std::result::Result<Vec<usize>, String> {
        match input {
            [n, rest @ ..] if !rest.is_empty() => Ok(vec![*n, rest.iter().product()]),
            _ => Err(format!(
                "Flatten: expects a batch axis and at least one more, got shape {input:?}"
            )),
        }
    }
}

impl Module for Flatten {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x.reshape(&Flatten::shape(x.shape()).unwrap_or_else(|why| panic!("{why}")))
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        let shape = Flatten::shape(&input.shape)?;
        Ok(Some(TensorSpec {
            shape,
            dtype: input.dtype,
        }))
    }
}

/// One axis of the input split into several, as `nn.Unflatten(dim, sizes)`:
/// `Unflatten::new(1, &[16, 5, 5])` takes `[N, 400]` to `[N, 16, 5, 5]`. The axis may
/// be negative (`-1`: the last). A reshape: no copy, no parameters.
#[derive(Clone, Debug, PartialEq, Eq, Module)]
pub struct Unflatten {
    #[module(skip)]
    axis: isize,
    #[module(skip)]
    sizes: Vec<usize>,
}

impl Unflatten {
    /// Splits `axis` into `sizes`, whose product must be that axis's length.
    pub fn new(axis: impl Axis, sizes: &[usize]) -> Unflatten {
        Unflatten {
            axis: signed_axis(axis),
            sizes: sizes.to_vec(),
        }
    }

    fn shape(&self, input: &[usize]) -> std::result::Result<Vec<usize>, String> {
        let axis = resolve("Unflatten", self.axis, input)?;
        let product: usize = self.sizes.iter().product();
        if product != input[axis] {
            return Err(format!(
                "Unflatten: sizes {:?} (product {product}) do not split axis {axis} of length {} in shape {input:?}",
                self.sizes, input[axis]
            ));
        }
        let mut out = input[..axis].to_vec();
        out.extend(&self.sizes);
        out.extend(&input[axis + 1..]);
        Ok(out)
    }
}

impl Module for Unflatten {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x.reshape(&self.shape(x.shape()).unwrap_or_else(|why| panic!("{why}")))
    }

    fn name(&self) -> String {
        format!("Unflatten(dim={}, unflattened_size={:?})", self.axis, self.sizes)
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        let shape = self.shape(&input.shape)?;
        Ok(Some(TensorSpec {
            shape,
            dtype: input.dtype,
        }))
    }
}

/// The input, unchanged, as `nn.Identity()`: a placeholder where a model has a
/// layer slot (e.g. a removed head). No parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Module)]
pub struct Identity;

impl Module for Identity {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.clone()
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        Ok(Some(input.clone()))
    }
}

/// Softmax along an axis, as `nn.Softmax(dim)`: `Softmax::new(1)` on `[N, C, L]`
/// normalizes over the channels, `Softmax::new(-1)` over the last axis. The value
/// `nn::Softmax` (a constant of this type) is the last axis, as it always was. No
/// parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Module)]
pub struct Softmax {
    #[module(skip)]
    axis: isize,
}

/// Softmax over the last axis: `Sequential::new().add(nn::Softmax)` as before
/// [`Softmax::new`] took an axis.
#[allow(non_upper_case_globals)]
pub const Softmax: Softmax = Softmax { axis: -1 };

impl Softmax {
    /// Softmax along `axis` (negative counts from the back).
    pub fn new(axis: impl Axis) -> Softmax {
        Softmax {
            axis: signed_axis(axis),
        }
    }
}

impl Default for Softmax {
    /// The last axis.
    fn default() -> Softmax {
        Softmax
    }
}

impl Module for Softmax {
    #[track_caller]
    fn forward(&self, x: &Tensor) -> Tensor {
        x.softmax(self.axis)
    }

    fn name(&self) -> String {
        match self.axis {
            -1 => "Softmax".into(),
            axis => format!("Softmax(dim={axis})"),
        }
    }

    fn output_spec(&self, input: &TensorSpec) -> std::result::Result<Option<TensorSpec>, String> {
        input.expect_f32()?;
        resolve("Softmax", self.axis, &input.shape)?;
        Ok(Some(input.clone()))
    }
}
