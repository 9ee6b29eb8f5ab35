//! Neural voice-activity detection on the phone leg: is this 16 ms of caller audio a voice?
//!
//! Consumes 8 kHz µ-law in pieces of any size (Twilio's 20 ms frames); produces, through a
//! callback, one verdict per 16 ms of audio: its end on the stream's audio timeline (ms of
//! audio pushed so far) and whether the detector's score reached the threshold. The
//! detector is `earshot`'s small neural network (pure Rust, no model file, ~8 KiB of state),
//! which tells a voice from line noise, clicks and tones, unlike an energy threshold; it
//! listens at 16 kHz, so the audio is upsampled on the way in (band-limited, [`Resampler`]).
//! Near-silent frames (every sample within [`QUIET_PEAK`], −54 dBFS: digital silence,
//! comfort noise) are not shown to the network once it has heard [`QUIET_WINDOW`] of them
//! in a row (400 ms: long enough for its memory to settle into silence, so what follows is
//! judged as if it had heard them all, each voice's edges within a frame): they are no
//! voice, and the network costs a call ~1 ms of CPU per second of audio.
//! State: the detector's, the upsampler's and a partial frame, per stream; the owner keeps
//! one [`VoiceDetector`] per call.

use crate::mulaw;
use crate::resample::Resampler;

/// The detector's input rate.
const RATE: u32 = 16_000;
/// The detector's frame: 256 samples at 16 kHz.
const FRAME: usize = 256;
/// One frame's length in µs (16 ms).
const FRAME_US: u64 = 16_000;
/// A frame whose samples all stay within this (−54 dBFS) is near silence.
pub const QUIET_PEAK: i16 = 64;
/// Near-silent frames the network hears in a row before the rest are skipped (400 ms): its
/// input window (three frames) holds nothing else by then, and its memory has settled.
pub const QUIET_WINDOW: u32 = 25;

/// A verdict on one 16 ms frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The frame's end on the audio timeline, in ms since the stream began.
    pub end_ms: u64,
    /// Its score (0: no voice, 1: voice).
    pub score: f32,
    /// The score reached the threshold.
    pub voice: bool,
}

/// Frame length in ms, for callers summing frames.
pub const FRAME_MS: u32 = 16;

/// The detector for one caller's audio.
pub struct VoiceDetector {
    detector: Box<earshot::Detector>,
    upsampler: Resampler,
    threshold: f32,
    pending: Vec<i16>,
    /// Frames judged so far.
    frames: u64,
    /// Frames the network scored (the rest were skipped as near silence).
    scored: u64,
    /// Near-silent frames in a row the network has heard.
    quiet_run: u32,
    /// [`QUIET_PEAK`], or 0 to show every frame to the network.
    quiet_peak: i16,
}

impl std::fmt::Debug for VoiceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceDetector")
            .field("threshold", &self.threshold)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl VoiceDetector {
    /// A detector calling a frame a voice from `threshold` (0 to 1; 0.5 is the model's
    /// default).
    pub fn new(threshold: f32) -> Self {
        Self {
            detector: earshot::Detector::default_boxed(),
            upsampler: Resampler::new(crate::SAMPLE_RATE, RATE),
            threshold,
            pending: Vec::with_capacity(FRAME * 2),
            frames: 0,
            scored: 0,
            quiet_run: 0,
            quiet_peak: QUIET_PEAK,
        }
    }

    /// A detector that shows every frame to the network (to compare with the skipping).
    pub fn without_skipping(threshold: f32) -> Self {
        Self {
            quiet_peak: 0,
            ..Self::new(threshold)
        }
    }

    /// Frames the network scored so far.
    pub fn scored(&self) -> u64 {
        self.scored
    }

    /// The network's score for `frame`, or 0 when it is near silence after enough of it.
    fn score(&mut self, frame: &[i16]) -> f32 {
        let quiet = frame
            .iter()
            .all(|&s| s.unsigned_abs() < self.quiet_peak.unsigned_abs());
        if !quiet {
            self.quiet_run = 0;
        } else if self.quiet_run >= QUIET_WINDOW {
            return 0.0;
        } else {
            self.quiet_run += 1;
        }
        self.scored += 1;
        self.detector.predict_i16(frame)
    }

    /// Takes 8 kHz µ-law; calls `verdict` for each 16 ms frame completed by it.
    pub fn push_mulaw(&mut self, bytes: &[u8], mut verdict: impl FnMut(Verdict)) {
        let pcm: Vec<i16> = bytes.iter().map(|&b| mulaw::decode(b)).collect();
        let upsampled = self.upsampler.push(&pcm);
        self.pending.extend_from_slice(&upsampled);
        let mut start = 0;
        while self.pending.len() - start >= FRAME {
            let frame: [i16; FRAME] = self.pending[start..start + FRAME]
                .try_into()
                .expect("a whole frame");
            let score = self.score(&frame);
            start += FRAME;
            self.frames += 1;
            verdict(Verdict {
                end_ms: self.frames * FRAME_US / 1000,
                score,
                voice: score >= self.threshold,
            });
        }
        self.pending.drain(..start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames judged voice, in order, for `samples` at 8 kHz.
    fn verdicts(samples: &[i16]) -> Vec<bool> {
        let mut detector = VoiceDetector::new(0.5);
        let mut out = Vec::new();
        for frame in mulaw::encode_slice(samples).chunks(crate::FRAME_BYTES) {
            detector.push_mulaw(frame, |v| out.push(v.voice));
        }
        out
    }

    fn noise(seconds: f32, amplitude: i32) -> Vec<i16> {
        let mut seed = 7u32;
        (0..(seconds * 8000.0) as usize)
            .map(|i| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let n = ((seed >> 16) as i16 as i32 * amplitude / 32768) as i16;
                // A click every half second.
                if i % 4000 < 8 {
                    n.saturating_mul(30)
                } else {
                    n
                }
            })
            .collect()
    }

    /// Verdicts (voice or not) of `detector` on `samples`.
    fn judged(detector: &mut VoiceDetector, samples: &[i16]) -> Vec<bool> {
        let mut out = Vec::new();
        for frame in mulaw::encode_slice(samples).chunks(crate::FRAME_BYTES) {
            detector.push_mulaw(frame, |v| out.push(v.voice));
        }
        out
    }

    /// The voice segments in `verdicts`: (first frame, frame after the last).
    fn voice_runs(verdicts: &[bool]) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        let mut start = None;
        for (i, &voice) in verdicts.iter().chain([&false]).enumerate() {
            match (voice, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    runs.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        runs
    }

    /// Silence, speech, faint noise with clicks, speech, silence: the network skips the
    /// long silences and hears the same voice
    /// as a detector shown every frame: the same segments longer than two frames, each edge
    /// within one frame (its memory of the skipped frames is all that differs).
    #[test]
    fn near_silence_is_skipped_and_the_same_voice_is_heard() {
        let speech = crate::synth::speechlike("hello there how are you");
        let silence = vec![0i16; 24_000];
        let faint = noise(4.0, 40);
        let audio: Vec<i16> = [&silence[..], &speech, &faint, &speech, &silence].concat();
        let mut skipping = VoiceDetector::new(0.5);
        let mut every = VoiceDetector::without_skipping(0.5);
        let (gated, full) = (judged(&mut skipping, &audio), judged(&mut every, &audio));
        let frames = full.len() as u64;
        // A blip of a frame or two (a click) is no voice to turn-taking, which wants 250 ms.
        let runs = |v: &[bool]| -> Vec<(usize, usize)> {
            voice_runs(v)
                .into_iter()
                .filter(|(s, e)| e - s > 2)
                .collect()
        };
        let (gated, full) = (runs(&gated), runs(&full));
        assert_eq!(gated.len(), full.len(), "{gated:?} vs {full:?}");
        assert_eq!(full.len(), 2, "both utterances heard, no noise: {full:?}");
        for ((gs, ge), (fs, fe)) in gated.iter().zip(&full) {
            assert!(
                gs.abs_diff(*fs) <= 1 && ge.abs_diff(*fe) <= 1,
                "{gated:?} vs {full:?}"
            );
        }
        assert_eq!(every.scored(), frames);
        // The silences (2 × 187 frames) are skipped but for their first QUIET_WINDOW frames.
        assert!(
            frames - skipping.scored() >= 300,
            "{} of {frames} frames scored",
            skipping.scored()
        );
    }

    /// The timeline: 20 ms pieces give a verdict every 16 ms, stamped at its end.
    #[test]
    fn one_verdict_per_16_ms_on_the_audio_timeline() {
        let mut detector = VoiceDetector::new(0.5);
        let mut ends = Vec::new();
        for _ in 0..50 {
            detector.push_mulaw(&[mulaw::SILENCE; 160], |v| ends.push(v.end_ms));
        }
        // One second of audio less the upsampler's look-ahead (16 input samples).
        assert!((60..=62).contains(&ends.len()), "{} verdicts", ends.len());
        assert_eq!(ends[0], 16);
        assert!(ends.windows(2).all(|w| w[1] == w[0] + 16));
    }

    /// Line noise with clicks never holds a voice for a quarter second; synthetic vowels
    /// (a voiced harmonic series with a syllable rhythm) do.
    #[test]
    fn noise_and_clicks_are_not_a_voice_but_a_voice_is() {
        let quiet = verdicts(&noise(2.0, 300));
        let longest_run = |v: &[bool]| {
            v.split(|voice| !voice)
                .map(<[bool]>::len)
                .max()
                .unwrap_or(0)
        };
        assert!(
            longest_run(&quiet[10..]) * 16 < 250,
            "noise judged a voice for {} ms",
            longest_run(&quiet[10..]) * 16
        );
        let speech = crate::synth::speechlike("hello there how are you doing today");
        let voiced = verdicts(&speech);
        assert!(
            longest_run(&voiced) * 16 >= 250,
            "speech-like audio judged a voice for only {} ms",
            longest_run(&voiced) * 16
        );
    }
}
