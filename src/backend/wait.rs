//! Waiting for a future from synchronous code. On native targets this blocks the
//! thread (`pollster`). A browser tab's thread cannot block: there a future is only
//! taken if it is ready at once (a CPU value, host data), and a GPU readback is an
//! [`Error::WouldBlock`] that names the async form to call instead.

use std::future::Future;

use crate::{Error, Result};

/// The value of `future`, waited for where the platform can wait. `what` and
/// `instead` name the blocking call and its async form for the browser's error.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn wait<T>(
    future: impl Future<Output = Result<T>>,
    _what: &'static str,
    _instead: &'static str,
) -> Result<T> {
    pollster::block_on(future)
}

/// The value of `future` if it is ready now; else [`Error::WouldBlock`].
#[cfg(target_arch = "wasm32")]
pub(crate) fn wait<T>(future: impl Future<Output = Result<T>>, what: &'static str, instead: &'static str) -> Result<T> {
    use futures::FutureExt;
    future
        .now_or_never()
        .unwrap_or(Err(Error::WouldBlock { what, instead }))
}

/// Whether synchronous code may block on the GPU here (native targets, not a browser).
pub(crate) const CAN_BLOCK: bool = cfg!(not(target_arch = "wasm32"));

/// [`Error::WouldBlock`] for a debugging or profiling mode that waits on the GPU
/// after each kernel, which a browser cannot do.
pub(crate) fn blocking_mode(what: &'static str) -> Error {
    Error::WouldBlock {
        what,
        instead: "the native build (this mode waits on the GPU after each kernel)",
    }
}
