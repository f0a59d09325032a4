//! Errors wgpu reports through callbacks (uncaptured errors, device loss), and
//! error scopes around plan compilation.

use super::*;

/// Errors wgpu reports through callbacks: set there, taken by the next call.
#[derive(Default)]
pub(super) struct Faults {
    pub(super) any: AtomicBool,
    pub(super) lost: Mutex<Option<String>>,
    pub(super) error: Mutex<Option<String>>,
}

impl Faults {
    /// `Err` if the device was lost or reported an uncaptured error since the last
    /// check (one atomic load when all is well).
    pub(super) fn check(&self, context: &str) -> Result<()> {
        if !self.any.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(reason) = self.lost.lock().unwrap().clone() {
            return Err(Error::DeviceLost { reason });
        }
        self.any.store(false, Ordering::Release);
        match self.error.lock().unwrap().take() {
            Some(reason) => Err(Error::Gpu {
                context: context.into(),
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// Error scopes around plan compilation; fields in reverse order of pushing, so an
/// early return drops (pops) them in the order wgpu requires. None in a browser,
/// which cannot wait for a scope in synchronous code: errors there reach the
/// uncaptured-error handler and the next [`Faults::check`].
pub(super) struct Scopes {
    pub(super) validation: wgpu::ErrorScopeGuard,
    pub(super) out_of_memory: wgpu::ErrorScopeGuard,
}

impl Scopes {
    /// The first error caught, as an `Error` naming `context`, or a device loss.
    pub(super) fn pop(self, faults: &Faults, context: impl Fn() -> String) -> Result<()> {
        let popped = async { Ok((self.validation.pop().await, self.out_of_memory.pop().await)) };
        let (validation, out_of_memory) = wait(popped, "compiling a plan", "the native build")?;
        faults.check(&context())?;
        match validation.or(out_of_memory) {
            Some(e) => Err(Error::Gpu {
                context: context(),
                reason: e.to_string(),
            }),
            None => Ok(()),
        }
    }
}
