//! XOR, the classic: a single-layer perceptron cannot learn it (the classes are not
//! linearly separable); a 2-3-1 MLP with a tanh hidden layer can.
//!
//! `cargo run --release --example xor [-- --device cpu|gpu]`

use clap::Parser;

use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::{Result, Tensor};

#[path = "common/device.rs"]
mod device;

const INPUTS: [[f32; 2]; 4] = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]];
const TARGETS: [f32; 4] = [0.0, 1.0, 1.0, 0.0];

/// XOR: a single-layer perceptron cannot learn it, a 2-3-1 MLP with a tanh hidden layer can.
#[derive(Parser)]
#[command(name = "xor")]
struct Args {
    #[command(flatten)]
    device: device::DeviceArg,
}

/// Trains `model` (ending in a sigmoid) with binary cross-entropy and returns its
/// outputs on the four inputs.
fn train(model: &Sequential, x: &Tensor, y: &Tensor, lr: f32, epochs: usize) -> Result<Vec<f32>> {
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr,
            ..Default::default()
        },
    );
    for _ in 0..epochs {
        let loss = nn::loss::binary_cross_entropy(&model.forward(x), y);
        opt.step(&loss.backward()?)?;
    }
    model.forward(x).to_vec()
}

fn print_table(title: &str, outputs: &[f32]) -> usize {
    println!("{title}");
    println!("  x1 x2 | target | output  | predicted");
    let mut correct = 0;
    for ((x, &t), &o) in INPUTS.iter().zip(&TARGETS).zip(outputs) {
        let predicted = (o > 0.5) as u32;
        let mark = if predicted as f32 == t { "ok" } else { "WRONG" };
        correct += (predicted as f32 == t) as usize;
        println!("   {}  {} |   {}    | {o:.4}  | {predicted} {mark}", x[0], x[1], t);
    }
    println!("  {correct}/4 correct\n");
    correct
}

fn main() -> Result<()> {
    let dev = Args::parse().device.open()?;
    println!("device: {}\n", dev.info());
    wgnn::manual_seed(0);
    let x = Tensor::from_vec(INPUTS.concat(), &[4, 2], &dev)?;
    let y = Tensor::from_vec(TARGETS.to_vec(), &[4, 1], &dev)?;

    let perceptron = Sequential::new().add(Linear::new(2, 1, &dev)).add(nn::Sigmoid);
    let p_out = train(&perceptron, &x, &y, 0.1, 1000)?;
    let p_correct = print_table("Single-layer perceptron (2 -> 1, sigmoid):", &p_out);

    let mlp = Sequential::new()
        .add(Linear::new(2, 3, &dev))
        .add(nn::Tanh)
        .add(Linear::new(3, 1, &dev))
        .add(nn::Sigmoid);
    let m_out = train(&mlp, &x, &y, 0.1, 1000)?;
    let m_correct = print_table("MLP (2 -> 3 tanh -> 1, sigmoid):", &m_out);

    println!("perceptron {p_correct}/4, MLP {m_correct}/4");
    // The headline, checked: the MLP solves XOR, the perceptron cannot.
    if m_correct != 4 || p_correct == 4 {
        eprintln!("check FAILED: expected the MLP at 4/4 and the perceptron below 4/4");
        std::process::exit(1);
    }
    Ok(())
}
