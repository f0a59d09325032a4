//! # wgnn — neural networks on WebGPU
//!
//! A neural-network compute engine: lazy tensors build a graph, autograd appends the
//! backward pass to the same graph, and a plan executor runs it on a wgpu GPU
//! (Vulkan, Metal, DX12, GL) or on the CPU reference backend. A training step —
//! forward, backward, optimizer update — is one plan: on the GPU one submit and no
//! readback.
//!
//! ```no_run
//! use wgnn::{Device, Tensor};
//! use wgnn::nn::{self, Linear, Module, Sequential};
//! use wgnn::optim::{Adam, AdamConfig, Optimizer};
//!
//! # fn main() -> wgnn::Result<()> {
//! let dev = Device::best();
//! let model = Sequential::new().add(Linear::new(2, 8, &dev)).add(nn::Tanh).add(Linear::new(8, 1, &dev));
//! let mut opt = Adam::new(model.parameters(), AdamConfig { lr: 0.05, ..Default::default() });
//! let x = Tensor::from_vec(vec![0., 0., 0., 1., 1., 0., 1., 1.], &[4, 2], &dev)?;
//! let y = Tensor::from_vec(vec![0., 1., 1., 0.], &[4, 1], &dev)?;
//! for _ in 0..500 {
//!     let loss = nn::loss::mse(&model.forward(&x), &y);
//!     opt.step(&loss.backward()?)?;
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

/// The README's programs (the CSV classifier, the LSTM regressor), compiled and run as
/// doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

// `#[derive(Module)]` names `::wgnn` paths, also inside this crate.
extern crate self as wgnn;

pub mod amp;
mod backend;
pub mod data;
mod device;
pub mod distributed;
mod error;
pub mod explain;
pub mod fairness;
pub mod fast_path;
pub mod federated;
mod graph;
pub mod io;
#[cfg(test)]
mod layering;
pub mod metrics;
pub mod nn;
pub(crate) mod ops;
pub mod optim;
pub mod privacy;
pub mod prune;
pub mod quantize;
pub mod rng;
mod tensor;
pub mod train;

pub use backend::cpu::threads::{get_num_threads, set_num_threads};
pub use backend::info::{DeviceInfo, DeviceKind, GpuOptions};
pub use backend::Clock;
pub use device::profile::{LaunchProfile, PlanProfile, ProfileReport};
pub use device::{Device, Stats, Tolerance};
pub use error::{Error, Result};
pub use graph::autograd::Gradients;
pub use ops::pool::PoolWindow;
pub use ops::{Conv2dArgs, ConvArgs};
pub use rng::manual_seed;
pub use tensor::{Axis, DType, Tensor, TensorData};
