//! Mixed precision, as PyTorch's `torch.autocast`: while an [`Autocast`] guard is
//! alive, every GEMM built on its thread for its device — `Linear`, the gate
//! products of `Rnn`/`Lstm`/`Gru`, attention's projections, any `matmul` — rounds
//! its two inputs to f16 ([`crate::DType::F16`], half the bytes) and multiplies them
//! with f32 accumulation into an f32 result (the products of two halves are exact in
//! f32, so this is what a tensor core computes). The backward GEMMs of such a product
//! take f16 inputs too (the incoming gradient rounded to f16: what loss scaling,
//! [`crate::optim::GradScaler`], protects from underflow), and the f16 copies of the
//! activations are what the backward pass keeps. Everything else — bias, activations,
//! normalizations, losses, convolutions, the weights themselves ("master weights")
//! and the optimizers' state — stays f32.
//!
//! f16 needs `SHADER_F16` on a GPU ([`crate::DeviceInfo::shader_f16`]; lavapipe has
//! it, a browser may not, [`crate::GpuOptions::disable_f16`] turns it off). Without it
//! the guard is inactive: the same code runs in f32 and says so once on stderr
//! (`WGNN_QUIET` silences it). The CPU reference backend always runs f16: its twins
//! round exactly as the GPU stores, so the two agree as they do in f32.
//!
//! [`Mixed`] wraps a model so that its forward passes (and so `fit`'s) run under
//! autocast: the per-model switch.

use std::marker::PhantomData;
use std::sync::Once;

use crate::nn::{Member, MemberMut, Module, ModuleFields};
use crate::{Device, Tensor};

/// While alive, GEMMs built on this thread for its device take f16 inputs (see the
/// [module docs](self)). Made by [`autocast`]; not `Send` (it is a thread's state).
#[must_use = "autocast lasts as long as the guard"]
pub struct Autocast {
    active: bool,
    _thread: PhantomData<*const ()>,
}

/// Mixed precision on `device` for this thread until the guard is dropped, as
/// `with torch.autocast(...)`. Where the device cannot run f16
/// ([`f16_supported`] is false) the guard is inactive and the notice is said once.
pub fn autocast(device: &Device) -> Autocast {
    let active = f16_supported(device);
    if active {
        crate::ops::cast::enter_autocast(device);
    } else {
        static SAID: Once = Once::new();
        SAID.call_once(|| {
            if std::env::var_os("WGNN_QUIET").is_none() {
                eprintln!(
                    "wgnn: autocast: {} has no half-precision shaders (SHADER_F16 missing or \
                     GpuOptions::disable_f16): running in f32",
                    device.info().name
                );
            }
        });
    }
    Autocast {
        active,
        _thread: PhantomData,
    }
}

/// Whether `device` runs f16 kernels: always on the CPU; on a GPU where it has
/// `SHADER_F16` and [`crate::GpuOptions::disable_f16`] was not set.
pub fn f16_supported(device: &Device) -> bool {
    device.shader_f16()
}

impl Autocast {
    /// Whether GEMMs are cast (false where the device has no f16).
    pub fn is_active(&self) -> bool {
        self.active
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        if self.active {
            crate::ops::cast::leave_autocast();
        }
    }
}

/// A model whose forward passes run under [`autocast`] on their input's device: the
/// per-model switch (Keras' `mixed_float16` policy for one model). Its parameters,
/// buffers and their names are the inner model's, unchanged, so checkpoints and
/// optimizers see no difference.
#[derive(Clone, Debug)]
pub struct Mixed<M>(pub M);

impl<M: Module> ModuleFields for Mixed<M> {
    fn members(&self) -> Vec<(String, Member<'_>)> {
        self.0.members()
    }
    fn members_mut(&mut self) -> Vec<(String, MemberMut<'_>)> {
        self.0.members_mut()
    }
}

impl<M: Module> Module for Mixed<M> {
    fn forward(&self, x: &Tensor) -> Tensor {
        let _amp = autocast(x.device());
        self.0.forward(x)
    }
    fn output_spec(&self, input: &crate::nn::TensorSpec) -> std::result::Result<Option<crate::nn::TensorSpec>, String> {
        self.0.output_spec(input)
    }
}
