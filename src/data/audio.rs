//! Audio for speech models: 16-bit PCM WAV files in ([`read_wav`], [`parse_wav`]) and
//! log-mel spectrograms out ([`LogMel`]).
//!
//! [`LogMel`] computes what `torchaudio.transforms.MelSpectrogram(sample_rate, n_fft,
//! hop_length=…, f_min, f_max, n_mels, power=2.0, center=False, norm=None,
//! mel_scale="htk")` followed by `AmplitudeToDB("power", top_db=None)` computes: frames
//! of `n_fft` samples every `hop_length`, a periodic Hann window, the power of the
//! one-sided FFT (rustfft), triangular filters evenly spaced on the HTK mel scale
//! (`2595·log10(1 + f/700)`, unnormalized: between the first and the last filter's
//! centre the filters sum to 1), and `10·log10(max(power, 1e-10))`.
//! `tests/fixtures/make_log_mel_fixture.py` computes the same with `torch.stft` for the
//! unit test that holds it to that.
//!
//! Frames are not centred (no padding): a signal of `len ≥ n_fft` samples gives
//! `1 + (len − n_fft) / hop_length` frames, and the output is row-major `[frames, n_mels]`,
//! a sequence of mel vectors in time order (transpose it for a `Conv1d` over channels).

use std::path::Path;
use std::sync::Arc;

use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

use crate::error::{Error, Result};

/// Power below this is clamped before the logarithm (torchaudio's `amin`): −100 dB.
const AMIN: f32 = 1e-10;

/// Samples of a WAV file, mixed down to mono, scaled to `[-1, 1)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Wav {
    /// One value per sample frame: the mean of the channels, `i16 / 32768`.
    pub samples: Vec<f32>,
    /// Sample frames per second.
    pub sample_rate: u32,
}

/// Reads a RIFF/WAVE file of 16-bit PCM (any number of channels, averaged to mono).
/// Errors: [`Error::Io`] when it cannot be read, [`Error::Format`] (with the byte
/// offset) when it is not such a file.
pub fn read_wav(path: impl AsRef<Path>) -> Result<Wav> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_wav(&bytes, path)
}

/// [`read_wav`] on bytes already in memory; `path` only names them in errors.
pub fn parse_wav(bytes: &[u8], path: impl AsRef<Path>) -> Result<Wav> {
    let path = path.as_ref();
    let bad = |offset: usize, reason: String| Error::format(path, offset as u64, reason);
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(bad(0, "not a RIFF/WAVE file".into()));
    }
    let (mut offset, mut format, mut data) = (12, None, None);
    while offset + 8 <= bytes.len() {
        let (id, size) = (&bytes[offset..offset + 4], u32_at(offset + 4) as usize);
        let body = offset + 8;
        if size > bytes.len() - body {
            let reason = format!(
                "chunk '{}' of {size} bytes runs past the end",
                String::from_utf8_lossy(id)
            );
            return Err(bad(offset, reason));
        }
        match id {
            b"fmt " if size >= 16 => format = Some(body),
            b"fmt " => return Err(bad(offset, format!("'fmt ' chunk of {size} bytes (at least 16)"))),
            b"data" => data = Some((body, size)),
            _ => {}
        }
        offset = body + size + (size & 1); // chunks are padded to an even length
    }
    let Some(fmt) = format else {
        return Err(bad(12, "no 'fmt ' chunk".into()));
    };
    let (tag, channels, sample_rate, bits) = (u16_at(fmt), u16_at(fmt + 2), u32_at(fmt + 4), u16_at(fmt + 14));
    // 1 is PCM; 0xFFFE (extensible) is read as PCM when its samples are 16-bit integers.
    if !(tag == 1 || tag == 0xFFFE) || bits != 16 {
        let reason = format!("format tag {tag:#x} with {bits}-bit samples; only 16-bit PCM is read");
        return Err(bad(fmt, reason));
    }
    if channels == 0 || sample_rate == 0 {
        return Err(bad(fmt, format!("{channels} channels at {sample_rate} Hz")));
    }
    let Some((start, size)) = data else {
        return Err(bad(12, "no 'data' chunk".into()));
    };
    let frame = 2 * channels as usize;
    let scale = 1.0 / (32768.0 * f32::from(channels));
    let samples = bytes[start..start + size - size % frame]
        .chunks_exact(frame)
        .map(|f| {
            f.chunks_exact(2)
                .map(|s| f32::from(i16::from_le_bytes([s[0], s[1]])))
                .sum::<f32>()
                * scale
        })
        .collect();
    Ok(Wav { samples, sample_rate })
}

/// The HTK mel of a frequency in Hz: `2595·log10(1 + hz/700)` (1000 Hz ≈ 1000 mel).
pub fn hz_to_mel(hz: f64) -> f64 {
    2595.0 * (1.0 + hz / 700.0).log10()
}

/// The frequency in Hz of an HTK mel, the inverse of [`hz_to_mel`].
pub fn mel_to_hz(mel: f64) -> f64 {
    700.0 * (10f64.powf(mel / 2595.0) - 1.0)
}

/// Settings of a [`LogMel`], named as torchaudio's `MelSpectrogram` arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct MelConfig {
    /// Samples per second of the signals it will be given.
    pub sample_rate: f32,
    /// Samples per frame: the window's length and the FFT's size (any size; powers of
    /// two are fastest). The spectrum has `n_fft / 2 + 1` bins.
    pub n_fft: usize,
    /// Samples from one frame's start to the next one's.
    pub hop_length: usize,
    /// Mel filters (output channels).
    pub n_mels: usize,
    /// Lowest frequency of the first filter, Hz.
    pub f_min: f32,
    /// Highest frequency of the last filter, Hz: at most `sample_rate / 2`.
    pub f_max: f32,
}

impl Default for MelConfig {
    /// Common speech settings at 16 kHz: 25 ms frames every 10 ms, 40 filters over
    /// 0–8000 Hz.
    fn default() -> MelConfig {
        MelConfig {
            sample_rate: 16_000.0,
            n_fft: 400,
            hop_length: 160,
            n_mels: 40,
            f_min: 0.0,
            f_max: 8000.0,
        }
    }
}

/// A log-mel spectrogram transform: its window, filters and FFT plan, made once by
/// [`LogMel::new`] and applied to any number of signals with [`LogMel::compute`].
///
/// ```
/// use wgnn::data::audio::{LogMel, MelConfig};
///
/// // 16 kHz, 25 ms frames every 10 ms, 40 filters over 0–8000 Hz.
/// let mel = LogMel::new(MelConfig::default())?;
/// let second: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.3).sin()).collect();
/// let db = mel.compute(&second)?; // [frames, 40], row-major
/// assert_eq!(mel.frames(second.len()), 98);
/// assert_eq!(db.len(), 98 * 40);
/// # Ok::<(), wgnn::Error>(())
/// ```
pub struct LogMel {
    config: MelConfig,
    window: Vec<f32>,
    filters: Vec<f32>,
    fft: Arc<dyn Fft<f32>>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LogMel {
    /// The transform for `config`; [`Error::InvalidSetting`] (naming the field) when a
    /// size is 0, the frequencies are not `0 ≤ f_min < f_max ≤ sample_rate / 2`, or
    /// `n_mels` is so large for `n_fft` that a filter falls between two FFT bins and
    /// would always be 0.
    pub fn new(config: MelConfig) -> Result<LogMel> {
        let invalid = |setting: &'static str, why: String| Error::InvalidSetting {
            setting,
            message: format!("log-mel {setting}: {why}"),
        };
        if !(config.sample_rate.is_finite() && config.sample_rate > 0.0) {
            return Err(invalid(
                "sample_rate",
                format!("{} is not a positive rate", config.sample_rate),
            ));
        }
        for (setting, value) in [
            ("n_fft", config.n_fft),
            ("hop_length", config.hop_length),
            ("n_mels", config.n_mels),
        ] {
            if value == 0 {
                return Err(invalid(setting, "is 0".into()));
            }
        }
        let nyquist = config.sample_rate / 2.0;
        if !(config.f_min >= 0.0 && config.f_min < config.f_max && config.f_max <= nyquist) {
            let why = format!(
                "f_min {} and f_max {} are not 0 ≤ f_min < f_max ≤ {nyquist} (half the sample rate)",
                config.f_min, config.f_max
            );
            return Err(invalid("f_max", why));
        }
        let filters = mel_filters(&config);
        let bins = config.n_fft / 2 + 1;
        if let Some(empty) = filters.chunks_exact(bins).position(|row| row.iter().all(|&w| w == 0.0)) {
            let why = format!(
                "{} filters over {}–{} Hz are too narrow for {bins} FFT bins: filter {empty} covers none \
                 (use fewer filters or a larger n_fft)",
                config.n_mels, config.f_min, config.f_max
            );
            return Err(invalid("n_mels", why));
        }
        let n = config.n_fft;
        // Periodic Hann, as torch.hann_window(n) (periodic=True).
        let window = (0..n)
            .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32)
            .collect();
        let fft = FftPlanner::new().plan_fft_forward(n);
        Ok(LogMel {
            config,
            window,
            filters,
            fft,
        })
    }

    /// The settings it was made with.
    pub fn config(&self) -> &MelConfig {
        &self.config
    }

    /// The filters, row-major `[n_mels, n_fft / 2 + 1]` (torchaudio's `melscale_fbanks`
    /// transposed).
    pub fn filters(&self) -> &[f32] {
        &self.filters
    }

    /// Frames in a signal of `samples` samples: `1 + (samples − n_fft) / hop_length`, or
    /// 0 when it is shorter than one frame.
    pub fn frames(&self, samples: usize) -> usize {
        match samples.checked_sub(self.config.n_fft) {
            Some(rest) => 1 + rest / self.config.hop_length,
            None => 0,
        }
    }

    /// The log-mel spectrogram of `signal` in dB, row-major `[frames, n_mels]`.
    /// [`Error::Invalid`] when the signal is shorter than one frame (`n_fft`) or holds
    /// a NaN or an infinity.
    pub fn compute(&self, signal: &[f32]) -> Result<Vec<f32>> {
        let (n, hop, n_mels) = (self.config.n_fft, self.config.hop_length, self.config.n_mels);
        let frames = self.frames(signal.len());
        if frames == 0 {
            let why = format!(
                "log-mel: a signal of {} samples is shorter than one frame ({n})",
                signal.len()
            );
            return Err(Error::Invalid(why));
        }
        if let Some(i) = signal.iter().position(|s| !s.is_finite()) {
            return Err(Error::Invalid(format!("log-mel: sample {i} is {}", signal[i])));
        }
        let bins = n / 2 + 1;
        let mut buf = vec![Complex32::default(); n];
        let mut scratch = vec![Complex32::default(); self.fft.get_inplace_scratch_len()];
        let mut power = vec![0.0f32; bins];
        let mut out = Vec::with_capacity(frames * n_mels);
        for f in 0..frames {
            let frame = &signal[f * hop..f * hop + n];
            for ((b, &s), &w) in buf.iter_mut().zip(frame).zip(&self.window) {
                *b = Complex32::new(s * w, 0.0);
            }
            self.fft.process_with_scratch(&mut buf, &mut scratch);
            for (p, b) in power.iter_mut().zip(&buf) {
                *p = b.norm_sqr();
            }
            out.extend(self.filters.chunks_exact(bins).map(|row| {
                let mel: f32 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
                10.0 * mel.max(AMIN).log10()
            }));
        }
        Ok(out)
    }
}

/// torchaudio's `melscale_fbanks(n_fft/2 + 1, f_min, f_max, n_mels, sample_rate,
/// norm=None, mel_scale="htk")`, transposed to `[n_mels, bins]`, computed in f64.
fn mel_filters(c: &MelConfig) -> Vec<f32> {
    let bins = c.n_fft / 2 + 1;
    let nyquist = f64::from(c.sample_rate) / 2.0;
    let freq = |k: usize| {
        if bins == 1 {
            0.0
        } else {
            nyquist * k as f64 / (bins - 1) as f64
        }
    };
    let (m_min, m_max) = (hz_to_mel(f64::from(c.f_min)), hz_to_mel(f64::from(c.f_max)));
    let points: Vec<f64> = (0..c.n_mels + 2)
        .map(|i| mel_to_hz(m_min + (m_max - m_min) * i as f64 / (c.n_mels + 1) as f64))
        .collect();
    let mut filters = Vec::with_capacity(c.n_mels * bins);
    for m in 0..c.n_mels {
        let (lo, centre, hi) = (points[m], points[m + 1], points[m + 2]);
        filters.extend((0..bins).map(|k| {
            let f = freq(k);
            let up = (f - lo) / (centre - lo);
            let down = (hi - f) / (hi - centre);
            up.min(down).max(0.0) as f32
        }));
    }
    filters
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f32, rate: f32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate).sin())
            .collect()
    }

    /// A WAV file of 16-bit samples, `channels` interleaved, with an extra chunk
    /// before the data (which readers must skip).
    fn wav_bytes(samples: &[i16], channels: u16, rate: u32) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(4 + 24 + 10 + 8 + data.len() as u32).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
        b.extend_from_slice(&(2 * channels).to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"LIST");
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0, 0]); // one byte and its pad
        b.extend_from_slice(b"data");
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(&data);
        b
    }

    #[test]
    fn a_wav_is_read_as_mono_samples_scaled_to_one() {
        let bytes = wav_bytes(&[16384, -16384, 32767, 32767, -32768, 0], 2, 22050);
        let wav = parse_wav(&bytes, "two.wav").unwrap();
        assert_eq!(wav.sample_rate, 22050);
        assert_eq!(wav.samples, vec![0.0, 32767.0 / 32768.0, -0.5]);
    }

    #[test]
    fn a_malformed_wav_is_a_format_error_that_says_why() {
        let good = wav_bytes(&[1, 2, 3], 1, 8000);
        let mut eight_bit = good.clone();
        eight_bit[34] = 8;
        let cases: [(&[u8], &str); 4] = [
            (b"RIFX", "not a RIFF/WAVE file"),
            (&good[..good.len() - 2], "runs past the end"),
            (&eight_bit, "only 16-bit PCM"),
            (&good[..36], "no 'data' chunk"),
        ];
        for (bytes, why) in cases {
            let err = parse_wav(bytes, "bad.wav").unwrap_err();
            assert!(matches!(err, Error::Format { .. }), "{err}");
            assert!(err.to_string().contains(why), "{err} should say {why}");
        }
    }

    #[test]
    fn the_mel_scale_puts_1000_hz_at_1000_mel_and_inverts() {
        assert!((hz_to_mel(1000.0) - 1000.0).abs() < 0.02); // 999.985
        for hz in [0.0, 60.0, 440.0, 7600.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9);
        }
    }

    #[test]
    fn frames_are_counted_as_torch_stft_without_centring() {
        let mel = LogMel::new(MelConfig::default()).unwrap();
        assert_eq!(mel.frames(399), 0);
        assert_eq!(mel.frames(400), 1);
        assert_eq!(mel.frames(559), 1);
        assert_eq!(mel.frames(560), 2);
        assert_eq!(mel.compute(&vec![0.1; 16_000]).unwrap().len(), 98 * 40);
    }

    /// The mel distance between neighbouring filter centres of the default config
    /// (40 filters over 0–8000 Hz): filter `m` is centred at `(m + 1)·step` mel.
    fn default_step() -> f64 {
        hz_to_mel(8000.0) / 41.0
    }

    #[test]
    fn filters_sum_to_one_between_the_first_and_last_centre() {
        let mel = LogMel::new(MelConfig::default()).unwrap();
        let bins = 201;
        let (first, last) = (mel_to_hz(default_step()), mel_to_hz(40.0 * default_step()));
        for k in 0..bins {
            let f = 8000.0 * k as f64 / (bins - 1) as f64;
            if f > first && f < last {
                let sum: f32 = (0..40).map(|m| mel.filters()[m * bins + k]).sum();
                assert!((sum - 1.0).abs() < 1e-5, "bin {k} ({f} Hz): {sum}");
            }
        }
    }

    #[test]
    fn a_sine_is_loudest_in_the_filter_centred_nearest_its_frequency() {
        let mel = LogMel::new(MelConfig::default()).unwrap();
        let step = default_step();
        for hz in [300.0, 1000.0, 2500.0, 6000.0] {
            let out = mel.compute(&sine(hz, 16_000.0, 4000)).unwrap();
            let nearest = (hz_to_mel(f64::from(hz)) / step).round() as usize - 1;
            for frame in out.chunks_exact(40) {
                let loudest = (0..40).max_by(|&a, &b| frame[a].total_cmp(&frame[b])).unwrap();
                assert_eq!(loudest, nearest, "{hz} Hz");
            }
        }
    }

    #[test]
    fn silence_is_minus_100_db() {
        let mel = LogMel::new(MelConfig::default()).unwrap();
        assert!(mel.compute(&[0.0; 400]).unwrap().iter().all(|&v| v == -100.0));
    }

    #[test]
    fn bad_settings_and_signals_are_errors_that_name_them() {
        let base = MelConfig::default();
        let cases = [
            (
                MelConfig {
                    n_fft: 0,
                    ..base.clone()
                },
                "n_fft",
            ),
            (
                MelConfig {
                    hop_length: 0,
                    ..base.clone()
                },
                "hop_length",
            ),
            (
                MelConfig {
                    f_max: 9000.0,
                    ..base.clone()
                },
                "f_max",
            ),
            (
                MelConfig {
                    f_min: 8000.0,
                    ..base.clone()
                },
                "f_max",
            ),
            (
                MelConfig {
                    sample_rate: f32::NAN,
                    ..base.clone()
                },
                "sample_rate",
            ),
            (
                MelConfig {
                    n_mels: 200,
                    ..base.clone()
                },
                "n_mels",
            ),
        ];
        for (config, setting) in cases {
            match LogMel::new(config) {
                Err(Error::InvalidSetting { setting: s, message }) => assert_eq!(s, setting, "{message}"),
                other => panic!("{setting}: {other:?}"),
            }
        }
        let mel = LogMel::new(base).unwrap();
        let short = mel.compute(&[0.0; 399]).unwrap_err().to_string();
        assert!(short.contains("shorter than one frame"), "{short}");
        let nan = mel.compute(&[f32::NAN; 400]).unwrap_err().to_string();
        assert!(nan.contains("sample 0 is NaN"), "{nan}");
    }

    #[test]
    fn it_matches_torch_stft_and_torchaudio_s_filters() {
        // tests/fixtures/make_log_mel_fixture.py: a chirp plus noise at 22,050 Hz,
        // torch.stft(center=False) in f64 and torchaudio's filter formula.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/log_mel.safetensors");
        let bytes = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let f32s = |name: &str| -> Vec<f32> {
            let t = st.tensor(name).unwrap();
            t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap();
        let ints = |key: &str| -> usize { meta.get(key).unwrap().parse().unwrap() };
        let floats = |key: &str| -> f32 { meta.get(key).unwrap().parse().unwrap() };
        let config = MelConfig {
            sample_rate: floats("sample_rate"),
            n_fft: ints("n_fft"),
            hop_length: ints("hop_length"),
            n_mels: ints("n_mels"),
            f_min: floats("f_min"),
            f_max: floats("f_max"),
        };
        let mel = LogMel::new(config).unwrap();
        let filters = f32s("filters");
        let worst = mel
            .filters()
            .iter()
            .zip(&filters)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-6, "filters differ by {worst}");
        let (got, want) = (mel.compute(&f32s("signal")).unwrap(), f32s("log_mel"));
        assert_eq!(got.len(), want.len());
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst < 2e-3, "log-mel differs by up to {worst} dB");
    }
}
