//! Counter-based random numbers (Philox4x32-10): value `i` of a stream depends only
//! on the seed and `i`, so results never depend on order, thread or device.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32-10 of counter `ctr` under `key`.
pub fn philox4x32(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for _ in 0..10 {
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        c = [
            ((p1 >> 32) as u32) ^ c[1] ^ k[0],
            p1 as u32,
            ((p0 >> 32) as u32) ^ c[3] ^ k[1],
            p0 as u32,
        ];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// The `i`-th 32-bit word of the stream keyed by `seed`.
fn word(seed: u64, i: u64) -> u32 {
    let block = philox4x32(
        [(i / 4) as u32, ((i / 4) >> 32) as u32, 0, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    block[(i % 4) as usize]
}

/// Uniform in [0, 1) with 24 random bits.
fn unit(seed: u64, i: u64) -> f32 {
    (word(seed, i) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// `n` uniform values in `[low, high)`.
pub fn uniform(seed: u64, n: usize, low: f32, high: f32) -> Vec<f32> {
    (0..n as u64).map(|i| low + (high - low) * unit(seed, i)).collect()
}

/// `n` standard normal values (Box–Muller on pairs of uniforms).
pub fn normal(seed: u64, n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let u1 = 1.0 - unit(seed, 2 * i) as f64; // (0, 1]
            let u2 = unit(seed, 2 * i + 1) as f64;
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

/// splitmix64 (Steele, Lea, Flood 2014): a tiny sequential PRNG with a fixed,
/// documented output, for shuffling and search draws that must be the same on every
/// platform and with every version of every dependency.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..bound` (`0 < bound <= 2^64`), by multiply-shift.
    pub(crate) fn below(&mut self, bound: u128) -> u128 {
        (u128::from(self.next_u64()) * bound) >> 64
    }
}

/// Dropout's 64-bit Philox key from its two u32 words (as the key tensor holds them).
pub(crate) fn dropout_key(lo: u32, hi: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The integer threshold and the scale of dropout with probability `p`: element `i`
/// is kept when the top 24 bits of word `i` are at least `threshold`, which happens
/// with probability `1 − p` (to 2⁻²⁴); kept values are scaled by `1 / (1 − p)`.
pub(crate) fn dropout_threshold(p: f32) -> (u32, f32) {
    let threshold = (f64::from(p) * 16_777_216.0).round().clamp(0.0, 16_777_216.0) as u32;
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    (threshold, scale)
}

/// Whether dropout keyed by `key` keeps element `i` (twin of `shaders/dropout.wgsl`).
pub(crate) fn dropout_keeps(key: u64, i: u64, threshold: u32) -> bool {
    word(key, i) >> 8 >= threshold
}

/// The seed the last [`manual_seed`] gave, anywhere in the process: where a thread's
/// stream starts when the thread has not seeded its own.
static DEFAULT_SEED: AtomicU64 = AtomicU64::new(0x5EED);

thread_local! {
    /// This thread's stream: its seed and how many seeds it has handed out, or `None`
    /// until the thread first seeds or draws.
    static STREAM: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// This thread's stream, started from the process's last seed when it has none yet.
fn stream() -> (u64, u64) {
    STREAM
        .with(|s| s.get())
        .unwrap_or((DEFAULT_SEED.load(Ordering::SeqCst), 0))
}

/// Seeds everything random that follows on this thread (parameter init, shuffling,
/// dropout keys), as `torch.manual_seed` does. Each thread draws from its own stream,
/// so models built on two threads at once never take each other's draws (tests run in
/// parallel threads, and so may a user's jobs); a thread that never called
/// `manual_seed` starts from the seed the last call gave anywhere in the process.
pub fn manual_seed(seed: u64) {
    DEFAULT_SEED.store(seed, Ordering::SeqCst);
    STREAM.with(|s| s.set(Some((seed, 0))));
}

/// The seed this thread's stream runs from (the last [`manual_seed`], or the
/// default), for reports.
pub fn seed() -> u64 {
    stream().0
}

/// Where this thread's random stream stands: its seed and how many seeds
/// [`next_seed`] has handed out since. A checkpoint stores it, so a resumed run draws
/// the same dropout keys, init and shuffling seeds as the run it continues.
pub(crate) fn position() -> (u64, u64) {
    stream()
}

/// Puts this thread's random stream back where [`position`] found it.
pub(crate) fn set_position(position: (u64, u64)) {
    STREAM.with(|s| s.set(Some(position)));
}

/// A fresh seed for the next random tensor: this thread's seed mixed with its counter.
pub fn next_seed() -> u64 {
    let (s, n) = stream();
    STREAM.with(|cell| cell.set(Some((s, n + 1))));
    let b = philox4x32([n as u32, (n >> 32) as u32, 0x6e6e, 0], [s as u32, (s >> 32) as u32]);
    ((b[0] as u64) << 32) | b[1] as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_matches_the_random123_known_answer() {
        // Random123 kat_vectors: philox4x32 10 rounds, ctr and key all ones.
        let out = philox4x32([0xffff_ffff; 4], [0xffff_ffff; 2]);
        assert_eq!(out, [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]);
    }

    #[test]
    fn each_thread_draws_from_its_own_stream() {
        manual_seed(11);
        let first = next_seed();
        manual_seed(11);
        // Another thread seeding and drawing meanwhile takes nothing from this one.
        std::thread::spawn(|| {
            manual_seed(12);
            next_seed();
        })
        .join()
        .unwrap();
        assert_eq!(next_seed(), first);
        // A thread that never seeded starts from the last seed given anywhere.
        manual_seed(13);
        let here = next_seed();
        let there = std::thread::spawn(next_seed).join().unwrap();
        assert_eq!(here, there);
    }

    #[test]
    fn uniform_stays_in_range_and_normal_has_unit_scale() {
        assert!(uniform(1, 1000, -2.0, 3.0).iter().all(|&v| (-2.0..3.0).contains(&v)));
        let v = normal(7, 20_000);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    }
}
