//! Band-limited sample-rate conversion for mono 16-bit PCM (Kaiser-windowed sinc, polyphase).
//!
//! Consumes a whole buffer at one rate; produces the buffer at another ([`resample`]), or the
//! same piece by piece as audio streams in ([`Resampler`], identical output). Used for espeak-ng
//! output (22 050 Hz), OpenAI `pcm` (24 000 Hz) and 16 kHz linear16 going to and from the
//! 8 kHz phone leg. The low-pass cut-off sits at 45 % of the lower of the two rates (3.6 kHz
//! for 8 kHz), the transition band ends at that rate's Nyquist, and the stop band is about
//! 70 dB down, so a downsampled tone above the new Nyquist does not fold back audibly.
//! Samples outside the buffer count as silence. State: none (the filter table is built per
//! call).

use std::f64::consts::PI;

/// Zero crossings of the sinc on each side of the centre, at the lower rate.
const ZERO_CROSSINGS: f64 = 16.0;

/// Cut-off as a fraction of the lower sample rate (Nyquist is 0.5).
const CUTOFF: f64 = 0.45;

/// Kaiser window shape for ≈ 70 dB stop-band attenuation.
const KAISER_BETA: f64 = 6.76;

/// Largest number of phases precomputed into a table; odd ratios compute taps per sample.
const MAX_TABLE_PHASES: u64 = 1024;

/// Resamples mono PCM from `from_hz` to `to_hz`.
///
/// The output has `ceil(len × to / from)` samples. Equal rates return a copy; a zero rate
/// returns an empty buffer (there is no meaningful conversion).
pub fn resample(input: &[i16], from_hz: u32, to_hz: u32) -> Vec<i16> {
    if from_hz == 0 || to_hz == 0 || input.is_empty() {
        return Vec::new();
    }
    if from_hz == to_hz {
        return input.to_vec();
    }
    let g = gcd(u64::from(from_hz), u64::from(to_hz));
    // Output sample n sits at input position n × step / up.
    let up = u64::from(to_hz) / g;
    let step = u64::from(from_hz) / g;
    let kernel = Kernel::new(from_hz, to_hz);
    let out_len = (input.len() as u64 * up).div_ceil(step);
    let table: Option<Vec<Vec<f64>>> = (up <= MAX_TABLE_PHASES)
        .then(|| (0..up).map(|p| kernel.taps(p as f64 / up as f64)).collect());
    let mut output = Vec::with_capacity(usize::try_from(out_len).unwrap_or(0));
    for n in 0..out_len {
        let position = n * step;
        let base = (position / up) as i64;
        let phase = position % up;
        let computed;
        let taps = match &table {
            Some(table) => &table[phase as usize],
            None => {
                computed = kernel.taps(phase as f64 / up as f64);
                &computed
            }
        };
        let first = base - kernel.half + 1;
        let mut acc = 0.0;
        for (j, &tap) in taps.iter().enumerate() {
            let index = first + j as i64;
            if let Some(&sample) = usize::try_from(index).ok().and_then(|i| input.get(i)) {
                acc += tap * f64::from(sample);
            }
        }
        output.push(acc.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16);
    }
    output
}

/// The windowed-sinc low-pass, expressed in input samples.
struct Kernel {
    /// Cut-off in cycles per input sample.
    cutoff: f64,
    /// Taps on each side of the centre, in input samples.
    half: i64,
    /// Half-width of the window, in input samples.
    width: f64,
}

impl Kernel {
    fn new(from_hz: u32, to_hz: u32) -> Self {
        let lower = f64::from(from_hz.min(to_hz));
        let cutoff = CUTOFF * lower / f64::from(from_hz);
        let width = ZERO_CROSSINGS / (2.0 * cutoff);
        Self {
            cutoff,
            half: width.ceil() as i64,
            width,
        }
    }

    /// Taps for an output sample `frac` (0 ≤ frac < 1) input samples after input `base`;
    /// tap `j` weighs input `base - half + 1 + j`. Normalised to unit DC gain.
    fn taps(&self, frac: f64) -> Vec<f64> {
        let mut taps: Vec<f64> = (0..2 * self.half)
            .map(|j| {
                let offset = frac - (j - self.half + 1) as f64;
                self.at(offset)
            })
            .collect();
        let sum: f64 = taps.iter().sum();
        if sum.abs() > f64::EPSILON {
            for tap in &mut taps {
                *tap /= sum;
            }
        }
        taps
    }

    fn at(&self, x: f64) -> f64 {
        if x.abs() >= self.width {
            return 0.0;
        }
        let arg = 2.0 * self.cutoff * x;
        let sinc = if arg.abs() < 1e-12 {
            1.0
        } else {
            (PI * arg).sin() / (PI * arg)
        };
        let r = x / self.width;
        let window =
            bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / bessel_i0(KAISER_BETA);
        2.0 * self.cutoff * sinc * window
    }
}

/// Zeroth-order modified Bessel function of the first kind (power series).
fn bessel_i0(x: f64) -> f64 {
    let half = x / 2.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..64 {
        term *= (half / f64::from(k)) * (half / f64::from(k));
        sum += term;
        if term < sum * 1e-16 {
            break;
        }
    }
    sum
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// [`resample`] for audio that arrives in pieces (a streamed TTS body): every output sample
/// is computed from the same window of input as the whole-buffer conversion would use, so
/// the output is identical sample for sample whatever the piece boundaries (no clicks at
/// the edges). Output sample `n` leaves once the input it needs has arrived; [`Self::finish`]
/// gives the rest, with silence past the end.
pub struct Resampler {
    kernel: Kernel,
    up: u64,
    step: u64,
    table: Option<Vec<Vec<f64>>>,
    /// Input not yet needed by every later output; `buf[0]` is input `buf_start`.
    buf: std::collections::VecDeque<i16>,
    buf_start: u64,
    received: u64,
    next: u64,
    passthrough: bool,
}

impl Resampler {
    /// A converter from `from_hz` to `to_hz` (both above zero).
    pub fn new(from_hz: u32, to_hz: u32) -> Self {
        let (from, to) = (from_hz.max(1), to_hz.max(1));
        let g = gcd(u64::from(from), u64::from(to));
        let (up, step) = (u64::from(to) / g, u64::from(from) / g);
        let kernel = Kernel::new(from, to);
        let table = (up <= MAX_TABLE_PHASES)
            .then(|| (0..up).map(|p| kernel.taps(p as f64 / up as f64)).collect());
        Self {
            kernel,
            up,
            step,
            table,
            buf: std::collections::VecDeque::new(),
            buf_start: 0,
            received: 0,
            next: 0,
            passthrough: from == to,
        }
    }

    /// Takes the next piece; returns the output samples now complete.
    pub fn push(&mut self, input: &[i16]) -> Vec<i16> {
        if self.passthrough {
            return input.to_vec();
        }
        self.buf.extend(input.iter().copied());
        self.received += input.len() as u64;
        let mut out = Vec::new();
        loop {
            let base = self.next * self.step / self.up;
            // The window's last input sample is `base + half`.
            if base + self.kernel.half as u64 >= self.received {
                break;
            }
            out.push(self.sample(self.next));
            self.next += 1;
        }
        self.trim();
        out
    }

    /// The end of the input: the remaining output samples (the whole conversion has
    /// `ceil(len × to / from)` samples, as [`resample`] gives).
    pub fn finish(&mut self) -> Vec<i16> {
        if self.passthrough {
            return Vec::new();
        }
        let total = (self.received * self.up).div_ceil(self.step);
        let mut out = Vec::new();
        while self.next < total {
            out.push(self.sample(self.next));
            self.next += 1;
        }
        out
    }

    fn sample(&self, n: u64) -> i16 {
        let position = n * self.step;
        let base = (position / self.up) as i64;
        let phase = position % self.up;
        let computed;
        let taps = match &self.table {
            Some(table) => &table[phase as usize],
            None => {
                computed = self.kernel.taps(phase as f64 / self.up as f64);
                &computed
            }
        };
        let first = base - self.kernel.half + 1;
        let mut acc = 0.0;
        for (j, &tap) in taps.iter().enumerate() {
            let index = first + j as i64;
            if index < self.buf_start as i64 || index as u64 >= self.received {
                continue;
            }
            if let Some(&sample) = self.buf.get((index as u64 - self.buf_start) as usize) {
                acc += tap * f64::from(sample);
            }
        }
        acc.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
    }

    /// Drops input no later output needs.
    fn trim(&mut self) {
        let base = (self.next * self.step / self.up) as i64;
        let keep_from = (base - self.kernel.half + 1).max(0) as u64;
        while self.buf_start < keep_from && self.buf.pop_front().is_some() {
            self.buf_start += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f64, rate: u32, seconds: f64, amplitude: f64) -> Vec<i16> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                (amplitude * (2.0 * PI * hz * i as f64 / f64::from(rate)).sin()).round() as i16
            })
            .collect()
    }

    /// RMS over the middle of the buffer (skips the filter's edge transients).
    fn rms_middle(samples: &[i16]) -> f64 {
        let skip = samples.len() / 5;
        let middle = &samples[skip..samples.len() - skip];
        let energy: f64 = middle.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        (energy / middle.len() as f64).sqrt()
    }

    /// Magnitude of the `hz` component (single-bin DFT over the middle of the buffer).
    fn tone_level(samples: &[i16], rate: u32, hz: f64) -> f64 {
        let skip = samples.len() / 5;
        let middle = &samples[skip..samples.len() - skip];
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &s) in middle.iter().enumerate() {
            let phase = 2.0 * PI * hz * i as f64 / f64::from(rate);
            re += f64::from(s) * phase.cos();
            im += f64::from(s) * phase.sin();
        }
        2.0 * (re * re + im * im).sqrt() / middle.len() as f64
    }

    /// Output length follows the rate ratio for the conversions the platform uses.
    #[test]
    fn length_follows_ratio() {
        let cases = [
            (22_050, 8_000, 22_050, 8_000),
            (24_000, 8_000, 2_400, 800),
            (8_000, 16_000, 160, 320),
            (8_000, 8_000, 7, 7),
            (16_000, 8_000, 3, 2),
        ];
        for (from, to, len, expected) in cases {
            assert_eq!(
                resample(&vec![0; len], from, to).len(),
                expected,
                "{from}->{to} of {len}"
            );
        }
        assert!(resample(&[1, 2, 3], 0, 8_000).is_empty());
        assert!(resample(&[], 22_050, 8_000).is_empty());
    }

    /// A 1 kHz tone survives 22 050→8 000, 24 000→8 000 and 8 000→24 000 with its frequency
    /// and level (within 0.5 dB), and DC stays DC.
    #[test]
    fn passband_tone_keeps_frequency_and_energy() {
        for (from, to) in [
            (22_050, 8_000),
            (24_000, 8_000),
            (8_000, 24_000),
            (44_100, 8_000),
        ] {
            let input = sine(1_000.0, from, 0.5, 10_000.0);
            let output = resample(&input, from, to);
            let level = tone_level(&output, to, 1_000.0);
            assert!(
                (level / 10_000.0 - 1.0).abs() < 0.06,
                "{from}->{to}: 1 kHz level {level}"
            );
            let ratio = rms_middle(&output) / rms_middle(&input);
            assert!(
                (ratio - 1.0).abs() < 0.06,
                "{from}->{to}: rms ratio {ratio}"
            );
        }
        let dc = resample(&[1_000; 2_205], 22_050, 8_000);
        assert!(
            dc[200..600].iter().all(|&s| (s - 1_000).abs() <= 1),
            "dc gain"
        );
    }

    /// A 6 kHz tone (above the new 4 kHz Nyquist) is at least 50 dB down after
    /// 22 050→8 000 and 24 000→8 000, instead of aliasing to 2 kHz at full level.
    #[test]
    fn tone_above_new_nyquist_is_attenuated() {
        for from in [22_050, 24_000, 16_000] {
            let input = sine(6_000.0, from, 0.5, 20_000.0);
            let output = resample(&input, from, 8_000);
            let rms = rms_middle(&output);
            let db = 20.0 * (rms / rms_middle(&input)).log10();
            assert!(
                db < -50.0,
                "{from}->8000: 6 kHz only {db:.1} dB down (rms {rms})"
            );
        }
    }

    /// A ratio too odd for the phase table (8 000→7 919) still works via per-sample taps.
    #[test]
    fn odd_ratio_without_table() {
        let input = sine(500.0, 8_000, 0.25, 8_000.0);
        let output = resample(&input, 8_000, 7_919);
        assert_eq!(output.len(), (input.len() * 7_919).div_ceil(8_000));
        let level = tone_level(&output, 7_919, 500.0);
        assert!((level / 8_000.0 - 1.0).abs() < 0.06, "level {level}");
    }

    /// Streaming gives exactly the whole-buffer conversion, whatever the piece sizes
    /// (including pieces of one sample and empty ones): nothing changes at the edges.
    #[test]
    fn streaming_equals_whole_buffer() {
        let input: Vec<i16> = (0..4_801)
            .map(|i| {
                let t = f64::from(i) / 24_000.0;
                ((2.0 * PI * 440.0 * t).sin() * 12_000.0 + (2.0 * PI * 3_100.0 * t).sin() * 6_000.0)
                    as i16
            })
            .collect();
        for (from, to) in [
            (24_000, 8_000),
            (22_050, 8_000),
            (16_000, 8_000),
            (8_000, 16_000),
        ] {
            let whole = resample(&input, from, to);
            for sizes in [&[1usize][..], &[7, 0, 160], &[480], &[1_000, 3]] {
                let mut streaming = Resampler::new(from, to);
                let mut out = Vec::new();
                let mut rest = &input[..];
                let mut i = 0;
                while !rest.is_empty() {
                    let n = sizes[i % sizes.len()].min(rest.len());
                    out.extend(streaming.push(&rest[..n]));
                    rest = &rest[n..];
                    i += 1;
                }
                out.extend(streaming.finish());
                assert_eq!(out, whole, "{from} → {to}, pieces {sizes:?}");
            }
        }
    }
}
