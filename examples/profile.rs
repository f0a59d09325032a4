//! Profiles the training step of an MLP (784-128-10, ReLU, cross-entropy, Adam 1e-3)
//! kernel by kernel: a few warm-up steps, then `Device::set_profile`, steps, and the
//! report (time per launch, share of the step, GFLOP/s, GB/s, where each node was
//! built).
//!
//! `WGNN_DEVICE=cpu|gpu cargo run --release --example profile [-- BATCH [STEPS]]`
//! (batch 128 and 50 profiled steps by default). Any other program gets the same
//! table on stderr with `WGNN_PROFILE=1`.

use clap::Parser;

use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::{Device, Result, Tensor};

/// Profiles the training step of an MLP (784-128-10, ReLU, cross-entropy, Adam 1e-3) kernel by
/// kernel, on the device WGNN_DEVICE names (cpu, gpu or auto, the default).
#[derive(Parser)]
#[command(name = "profile")]
struct Args {
    /// Rows per batch.
    #[arg(default_value_t = 128)]
    batch: usize,
    /// Profiled steps (after 10 warm-up steps).
    #[arg(default_value_t = 50)]
    steps: usize,
}

fn main() -> Result<()> {
    let Args { batch, steps } = Args::parse();
    let dev = Device::from_env()?;
    wgnn::manual_seed(0);
    let model = Sequential::new()
        .add(Linear::new(784, 128, &dev))
        .add(nn::Relu)
        .add(Linear::new(128, 10, &dev));
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: 1e-3,
            ..Default::default()
        },
    );
    // A fixed batch of pixel-like values and labels, uploaded every step as a data
    // loader's would be.
    let pixels: Vec<f32> = (0..batch * 784).map(|i| (i * 37 % 256) as f32 / 255.0).collect();
    let labels: Vec<u32> = (0..batch).map(|i| (i * 7 % 10) as u32).collect();
    let mut step = || -> Result<Tensor> {
        let x = Tensor::from_vec(pixels.clone(), &[batch, 784], &dev)?;
        let y = Tensor::from_labels(&labels, &dev)?;
        let loss = nn::loss::cross_entropy(&model.forward(&x), &y);
        opt.step(&loss.backward()?)?;
        Ok(loss)
    };
    for _ in 0..10 {
        step()?;
    }
    dev.reset_profile();
    dev.set_profile(true);
    let mut loss = None;
    for _ in 0..steps {
        loss = Some(step()?);
    }
    dev.set_profile(false);
    let loss = loss.map_or(Ok(f32::NAN), |l| l.item())?;
    println!("{dev}: MLP 784-128-10, batch {batch}, Adam; loss after the last step {loss:.4}");
    print!("{}", dev.profile_report());
    Ok(())
}
