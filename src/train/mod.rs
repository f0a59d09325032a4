//! Training the way Keras and scikit-learn users expect it: `compile` / `fit` /
//! `evaluate` / `predict` with callbacks and a [`History`], a written training
//! report (native targets), and model selection (k-fold cross-validation, grid and random search).
//! [`ModelCheckpoint`] writes full checkpoints and [`FitConfig::resume_from`]
//! continues a run from one, bit for bit. Beyond the built-in losses: a closure
//! ([`Loss::custom`]), class weights ([`Loss::cross_entropy_weighted`]) and Keras'
//! per-row [`FitConfig::sample_weight`]; [`FitConfig::verbose`] takes Keras' levels.
//!
//! ```no_run
//! use wgnn::metrics::{Average, Metric};
//! use wgnn::nn::{self, Dropout, Linear, Module, Sequential};
//! use wgnn::optim::{lr::ReduceLrOnPlateau, Adam, AdamConfig};
//! use wgnn::train::{EarlyStopping, FitConfig, Loss, LrScheduler};
//! use wgnn::{Device, Tensor};
//!
//! # fn main() -> wgnn::Result<()> {
//! let dev = Device::best();
//! let net = Sequential::new().add(Linear::new(30, 16, &dev)).add(nn::Relu).add(Dropout::new(0.2)).add(Linear::new(16, 2, &dev));
//! let opt = Adam::new(net.parameters(), AdamConfig::default());
//! let mut model = net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy, Metric::F1(Average::Macro)])?;
//! # let (x, y) = (Tensor::zeros(&[100, 30], &dev), Tensor::from_labels(&[0; 100], &dev)?);
//! let history = model.fit(&x, &y, FitConfig {
//!     epochs: 50,
//!     validation_split: 0.2,
//!     callbacks: vec![
//!         Box::new(EarlyStopping::new("val_loss", 5).restore_best_weights()),
//!         Box::new(LrScheduler::on_metric(ReduceLrOnPlateau::new(1e-3, Default::default()), "val_loss")),
//!     ],
//!     ..Default::default()
//! })?;
//! history.write_report("report", "breast cancer MLP")?;
//! # Ok(()) }
//! ```

//!
//! Any module trains the same way: an LSTM regressor written as a PyTorch user
//! writes one, trained on a sine wave by `fit` and saved under its own parameter
//! names (`lstm.weight_ih_l0`, …, `head.bias`):
//!
//! ```
//! use wgnn::metrics::Metric;
//! use wgnn::nn::{Linear, Lstm, Module, RnnConfig};
//! use wgnn::optim::{Adam, AdamConfig};
//! use wgnn::train::{FitConfig, Loss, Model};
//! use wgnn::{Device, Tensor};
//!
//! #[derive(Module)]
//! struct Regressor {
//!     lstm: Lstm,
//!     head: Linear,
//! }
//!
//! impl Module for Regressor {
//!     fn forward(&self, x: &Tensor) -> Tensor {
//!         let out = self.lstm.forward(x); // [batch, time, hidden]
//!         self.head.forward(&out.select(1, out.shape()[1] - 1))
//!     }
//! }
//!
//! # fn main() -> wgnn::Result<()> {
//! let dev = Device::cpu();
//! // 128 windows of 12 steps of a sine wave, and the value after each.
//! let (mut xs, mut ys) = (Vec::new(), Vec::new());
//! for r in 0..128 {
//!     let t0 = r as f32 * 0.37;
//!     xs.extend((0..12).map(|t| (t0 + t as f32 * 0.3).sin()));
//!     ys.push((t0 + 12.0 * 0.3).sin());
//! }
//! let x = Tensor::from_vec(xs, &[128, 12, 1], &dev)?;
//! let y = Tensor::from_vec(ys, &[128, 1], &dev)?;
//! let config = RnnConfig { batch_first: true, ..Default::default() };
//! let net = Regressor { lstm: Lstm::new(1, 16, config, &dev), head: Linear::new(16, 1, &dev) };
//! let opt = Adam::new(net.parameters(), AdamConfig { lr: 1e-2, ..Default::default() });
//! let mut model = Model::new(net, opt, Loss::Mse, &[Metric::Rmse])?;
//! let history = model.fit(&x, &y, FitConfig::new().epochs(20).validation_split(0.2).verbose(false))?;
//! assert!(history.history["val_rmse"].last().unwrap() < &0.1);
//! let path = std::env::temp_dir().join("wgnn-doc-regressor.safetensors");
//! wgnn::io::save_safetensors(&model.net, &path)?;
//! # std::fs::remove_file(&path).ok();
//! # Ok(()) }
//! ```
mod callbacks;
mod config;
mod fit;
mod history;
mod layer_stats;
mod loss;
mod model;
mod progress;
#[cfg(not(target_arch = "wasm32"))]
pub mod report;
mod resume;
pub mod select;
mod tally;

pub use callbacks::{Callback, CallbackState, Control, EarlyStopping, LrScheduler, ModelCheckpoint};
pub use config::{FitConfig, Verbosity};
pub use history::{History, LayerStat, LrChange, Scores};
pub use loss::{ClassWeights, CustomLoss, Loss};
pub use model::{Clip, Model, Penalty};
pub use select::{
    cross_validate, grid, kfold_indices, random, search, CvReport, Evaluation, Leaderboard, Param, SearchSpace, Trial,
    Value,
};
