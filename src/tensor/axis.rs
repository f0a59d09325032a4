//! Axis arguments as users write them: a `usize` counts from the front, a negative
//! `i32`, `i64` or `isize` from the back (`-1` is the last axis), as in PyTorch. Every
//! public op that takes an axis takes `impl Axis`, so `x.sum_axis(1, false)`,
//! `x.softmax(-1)` and `x.sum_axis(axis, false)` with `axis: usize` all compile (an
//! unsuffixed literal is an `i32`).

use std::fmt::Display;

use crate::Tensor;

/// An axis of a tensor, counted from the front (`0` is the first) or, when negative,
/// from the back (`-1` is the last), as PyTorch's `dim` arguments.
///
/// Implemented for `usize`, `u32`, `i32`, `i64` and `isize`. An axis outside the
/// tensor's rank makes the op panic (misuse inside a tensor expression), naming the
/// op, the axis and the shape.
pub trait Axis: Copy + Display {
    /// The axis this names among `rank` axes (`0..rank`), or `None` when it is out of
    /// range (`-rank..rank` for signed types).
    fn index(self, rank: usize) -> Option<usize>;
}

impl Axis for usize {
    fn index(self, rank: usize) -> Option<usize> {
        (self < rank).then_some(self)
    }
}

impl Axis for u32 {
    fn index(self, rank: usize) -> Option<usize> {
        usize::try_from(self).ok()?.index(rank)
    }
}

/// Signed axes: non-negative ones count from the front, negative ones from the back.
macro_rules! signed_axis {
    ($($t:ty),+) => {$(
        impl Axis for $t {
            fn index(self, rank: usize) -> Option<usize> {
                let back = usize::try_from(self.unsigned_abs()).ok()?;
                if self >= 0 {
                    back.index(rank)
                } else {
                    rank.checked_sub(back)
                }
            }
        }
    )+};
}

signed_axis!(i32, i64, isize);

impl Tensor {
    /// `axis` of this tensor as an index, for op `op`.
    ///
    /// # Panics
    /// When `axis` is outside the tensor's rank, naming the op, the axis and the shape.
    #[track_caller]
    pub(crate) fn axis(&self, op: &str, axis: impl Axis) -> usize {
        axis.index(self.shape().len()).unwrap_or_else(|| {
            panic!(
                "{op}: axis {axis} out of range for shape {:?} (rank {})",
                self.shape(),
                self.shape().len()
            )
        })
    }

    /// A position where a new axis is inserted (`0..=rank`; `-1` appends, as
    /// `torch.unsqueeze`), for op `op`.
    ///
    /// # Panics
    /// When `axis` is outside `-(rank + 1)..=rank`, naming the op, the axis and the shape.
    #[track_caller]
    pub(crate) fn new_axis(&self, op: &str, axis: impl Axis) -> usize {
        axis.index(self.shape().len() + 1).unwrap_or_else(|| {
            panic!(
                "{op}: position {axis} for a new axis is out of range for shape {:?}",
                self.shape()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_axes_count_from_the_back_and_out_of_range_is_none() {
        assert_eq!((-1i32).index(3), Some(2));
        assert_eq!((-3i64).index(3), Some(0));
        assert_eq!((-4isize).index(3), None);
        assert_eq!(2usize.index(3), Some(2));
        assert_eq!(3u32.index(3), None);
        assert_eq!(3i32.index(3), None);
        assert_eq!((-1i32).index(0), None);
        assert_eq!(i64::MIN.index(3), None);
    }
}
