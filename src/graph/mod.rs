//! The lazy graph: the op table, autograd and plans.

pub(crate) mod autograd;
pub(crate) mod elementwise;
pub(crate) mod op;
pub(crate) mod plan;
