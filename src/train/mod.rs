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
//! Any module trains the same way: the README's second program is an LSTM regressor
//! written with `#[derive(Module)]`, trained by `fit` on a sine wave and saved under
//! its own parameter names (`lstm.weight_ih_l0`, …, `head.bias`); it runs as a
//! doctest with the README's other programs.

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
