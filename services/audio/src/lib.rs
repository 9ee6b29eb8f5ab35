//! Telephone audio for Switchboard: G.711 µ-law, band-limited resampling, an energy
//! voice-activity detector, espeak-ng synthesis with deterministic fallbacks, and WAV files.
//!
//! Consumes and produces plain sample buffers (`i16` PCM, `u8` µ-law); the only I/O is
//! [`synth::speak`], which runs `espeak-ng` as a child process. State: none, except the
//! [`vad::Vad`] a caller owns and a cached answer to "is espeak-ng installed".
//!
//! The phone leg is 8 kHz mono µ-law in 20 ms frames of 160 bytes ([`SAMPLE_RATE`],
//! [`FRAME_MS`], [`FRAME_BYTES`]); the ingress, the stt and TTS stages, every stand-in and
//! the scripted caller use these constants rather than their own.

pub mod mulaw;
pub mod resample;
pub mod synth;
pub mod vad;
pub mod voice;
pub mod wav;

/// Sample rate of the phone leg (Twilio Media Streams, G.711), in Hz.
pub const SAMPLE_RATE: u32 = 8000;

/// Duration of one media frame, in milliseconds.
pub const FRAME_MS: u32 = 20;

/// Bytes in one 20 ms frame of 8 kHz µ-law (one byte per sample).
pub const FRAME_BYTES: usize = 160;

/// Number of samples in `ms` milliseconds at `rate` Hz (rounded down).
pub fn samples_for_ms(ms: u32, rate: u32) -> usize {
    usize::try_from(u64::from(ms) * u64::from(rate) / 1000).unwrap_or(usize::MAX)
}

/// Duration in milliseconds of `samples` samples at `rate` Hz (rounded down; 0 for rate 0).
pub fn ms_for_samples(samples: usize, rate: u32) -> u64 {
    if rate == 0 {
        return 0;
    }
    (samples as u64).saturating_mul(1000) / u64::from(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame constants agree with each other: 20 ms at 8 kHz is 160 one-byte samples.
    #[test]
    fn frame_constants_agree() {
        assert_eq!(samples_for_ms(FRAME_MS, SAMPLE_RATE), FRAME_BYTES);
        assert_eq!(
            ms_for_samples(FRAME_BYTES, SAMPLE_RATE),
            u64::from(FRAME_MS)
        );
        assert_eq!(ms_for_samples(10, 0), 0);
    }
}
