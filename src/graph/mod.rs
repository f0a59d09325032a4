//! The lazy graph: autograd, fusion and plans, and the `Tensor` methods that run them
//! (`values.rs`); the op table is `crate::ops`, the tensor handle `crate::tensor`.

mod arena;
pub(crate) mod autograd;
pub(crate) mod debug;
pub(crate) mod deferred;
mod fuse;
mod joins;
mod lower;
pub(crate) mod plan;
pub(crate) mod profile;
mod values;

pub(crate) use plan::realize_all;
