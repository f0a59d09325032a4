//! The lazy graph: autograd and plans (the op table is `crate::ops`).

pub(crate) mod autograd;
pub(crate) mod debug;
mod fuse;
pub(crate) mod plan;
pub(crate) mod profile;
