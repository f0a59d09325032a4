#[path = "../benches/common/lstm_step.rs"]
mod lstm_step;
fn main() {
    let dev = wgnn::Device::gpu().unwrap();
    let h: usize = std::env::args().nth(1).map_or(128, |a| a.parse().unwrap());
    let mut step = lstm_step::LstmStep::new(h, &dev).unwrap();
    for _ in 0..12 {
        step.step_and_wait().unwrap();
    }
}
