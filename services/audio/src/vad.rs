//! Energy-based voice-activity detection over 20 ms frames of µ-law (or linear PCM).
//!
//! Consumes audio in arbitrary-sized pieces; produces [`VadEvent`] transitions stamped on the
//! audio timeline (milliseconds of audio pushed so far, not wall-clock time). A frame is
//! voiced when its RMS level reaches [`Config::threshold_dbfs`]; speech starts after
//! [`Config::min_speech_ms`] of consecutive voiced frames (so clicks do not count) and ends
//! after [`Config::hangover_ms`] of consecutive unvoiced frames (so pauses between words do
//! not split an utterance). State: the [`Vad`] value — a partial frame, the clock and the
//! current run lengths; the owner keeps one per audio stream.

use crate::{FRAME_MS, SAMPLE_RATE, mulaw};

/// Detector settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// A frame whose RMS level is at or above this (dB relative to full scale) is voiced.
    /// Speech on a phone line sits around -30..-15 dBFS, line noise below -50.
    pub threshold_dbfs: f32,
    /// Voiced audio needed before speech is declared (debounces clicks).
    pub min_speech_ms: u32,
    /// Unvoiced audio needed before speech is declared over (bridges gaps between words).
    pub hangover_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            threshold_dbfs: -40.0,
            min_speech_ms: 60,
            hangover_ms: 200,
        }
    }
}

/// A transition between silence and speech, stamped in ms of audio since the stream began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began at `at_ms` (the start of the first voiced frame of the run).
    SpeechStart {
        /// Audio time of the first voiced frame.
        at_ms: u64,
    },
    /// Speech ended at `at_ms` (the end of the last voiced frame); reported once the
    /// hangover has passed, so later than `at_ms` on the audio timeline.
    SpeechEnd {
        /// Audio time just after the last voiced frame.
        at_ms: u64,
    },
}

/// RMS level of `samples` in dBFS (`-inf` for digital silence or an empty slice).
pub fn frame_dbfs(samples: &[i16]) -> f32 {
    dbfs(samples.iter().copied())
}

/// RMS level of µ-law `bytes` in dBFS, decoded on the fly (no buffer).
pub fn mulaw_dbfs(bytes: &[u8]) -> f32 {
    dbfs(bytes.iter().map(|&b| mulaw::decode(b)))
}

fn dbfs(samples: impl ExactSizeIterator<Item = i16>) -> f32 {
    let n = samples.len();
    if n == 0 {
        return f32::NEG_INFINITY;
    }
    let energy: f64 = samples.map(|s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / n as f64).sqrt();
    (20.0 * (rms / 32768.0).log10()) as f32
}

/// The detector for one audio stream.
#[derive(Debug, Clone)]
pub struct Vad {
    config: Config,
    /// Samples per 20 ms frame at the stream's rate.
    frame_len: usize,
    /// Samples received that do not fill a frame yet.
    pending: Vec<i16>,
    /// Audio time at the end of the last complete frame.
    clock_ms: u64,
    speaking: bool,
    /// Consecutive voiced audio while silent (candidate speech start).
    voiced_run_ms: u64,
    /// Consecutive unvoiced audio since the last voiced frame.
    unvoiced_run_ms: u64,
    /// Audio time just after the last voiced frame.
    last_voiced_end_ms: Option<u64>,
}

impl Vad {
    /// A detector for 8 kHz audio.
    pub fn new(config: Config) -> Self {
        Self::with_rate(config, SAMPLE_RATE)
    }

    /// A detector for audio at `rate` Hz (frames stay 20 ms long).
    pub fn with_rate(config: Config, rate: u32) -> Self {
        let frame_len = crate::samples_for_ms(FRAME_MS, rate).max(1);
        Self {
            config,
            frame_len,
            pending: Vec::with_capacity(frame_len),
            clock_ms: 0,
            speaking: false,
            voiced_run_ms: 0,
            unvoiced_run_ms: 0,
            last_voiced_end_ms: None,
        }
    }

    /// Feeds µ-law bytes (any length); returns the transitions they complete.
    pub fn push_mulaw(&mut self, bytes: &[u8]) -> Vec<VadEvent> {
        self.push_pcm(&mulaw::decode_slice(bytes))
    }

    /// Feeds linear PCM samples (any length); returns the transitions they complete.
    pub fn push_pcm(&mut self, samples: &[i16]) -> Vec<VadEvent> {
        let mut events = Vec::new();
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (self.frame_len - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == self.frame_len {
                let level = frame_dbfs(&self.pending);
                self.pending.clear();
                events.extend(self.frame(level >= self.config.threshold_dbfs));
            }
        }
        events
    }

    fn frame(&mut self, voiced: bool) -> Option<VadEvent> {
        let frame_ms = u64::from(FRAME_MS);
        let start_ms = self.clock_ms;
        self.clock_ms += frame_ms;
        if voiced {
            self.unvoiced_run_ms = 0;
            self.last_voiced_end_ms = Some(self.clock_ms);
            if self.speaking {
                return None;
            }
            self.voiced_run_ms += frame_ms;
            if self.voiced_run_ms >= u64::from(self.config.min_speech_ms).max(frame_ms) {
                self.speaking = true;
                let at_ms = self.clock_ms - self.voiced_run_ms;
                self.voiced_run_ms = 0;
                return Some(VadEvent::SpeechStart { at_ms });
            }
            return None;
        }
        self.voiced_run_ms = 0;
        self.unvoiced_run_ms += frame_ms;
        if self.speaking && self.unvoiced_run_ms >= u64::from(self.config.hangover_ms).max(frame_ms)
        {
            self.speaking = false;
            return Some(VadEvent::SpeechEnd {
                at_ms: self.last_voiced_end_ms.unwrap_or(start_ms),
            });
        }
        None
    }

    /// Ends the current speech now (e.g. a client asked to finalize), as if the hangover
    /// had passed; `None` when not speaking.
    pub fn force_end(&mut self) -> Option<VadEvent> {
        if !self.speaking {
            return None;
        }
        self.speaking = false;
        self.voiced_run_ms = 0;
        Some(VadEvent::SpeechEnd {
            at_ms: self.last_voiced_end_ms.unwrap_or(self.clock_ms),
        })
    }

    /// Whether speech is in progress (started and not yet ended).
    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Audio processed so far, in ms (complete frames only).
    pub fn position_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Unvoiced audio since the last voiced frame, in ms.
    pub fn trailing_silence_ms(&self) -> u64 {
        self.unvoiced_run_ms
    }

    /// Audio time just after the last voiced frame, if any frame was voiced.
    pub fn last_voiced_end_ms(&self) -> Option<u64> {
        self.last_voiced_end_ms
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;

    fn run(vad: &mut Vad, pcm: &[i16]) -> Vec<VadEvent> {
        // Feed in odd-sized pieces, as a network would, to exercise frame reassembly.
        pcm.chunks(97)
            .flat_map(|piece| vad.push_mulaw(&mulaw::encode_slice(piece)))
            .collect()
    }

    fn concat(parts: &[Vec<i16>]) -> Vec<i16> {
        parts.concat()
    }

    /// The µ-law level is the level of the decoded samples.
    #[test]
    fn mulaw_level_is_the_decoded_level() {
        let bytes = mulaw::encode_slice(&[3000, -3000, 120, -7].repeat(40));
        assert_eq!(mulaw_dbfs(&bytes), frame_dbfs(&mulaw::decode_slice(&bytes)));
        assert_eq!(mulaw_dbfs(&[]), f32::NEG_INFINITY);
    }

    /// Digital silence and low noise (-60 dBFS) never trigger speech.
    #[test]
    fn silence_and_low_noise_stay_silent() {
        let mut vad = Vad::new(Config::default());
        assert!(run(&mut vad, &synth::silence(2_000)).is_empty());
        // Pseudo-random noise, RMS about 30 (≈ -60 dBFS).
        let noise: Vec<i16> = (0..16_000u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 16) % 101) as i16 - 50)
            .collect();
        assert!(frame_dbfs(&noise) < -55.0);
        assert!(run(&mut vad, &noise).is_empty());
        assert_eq!(vad.position_ms(), 4_000);
    }

    /// Two tone bursts separated by 600 ms of silence give start/end pairs at the burst
    /// edges; a 100 ms gap inside the first burst is bridged by the 200 ms hangover.
    #[test]
    fn tone_bursts_give_transitions_at_their_edges() {
        let audio = concat(&[
            synth::silence(500),
            synth::tone(400, 440.0, 8_000),
            synth::silence(100),
            synth::tone(300, 440.0, 8_000),
            synth::silence(600),
            synth::tone(500, 300.0, 6_000),
            synth::silence(400),
        ]);
        let mut vad = Vad::new(Config::default());
        let events = run(&mut vad, &audio);
        assert_eq!(
            events,
            vec![
                VadEvent::SpeechStart { at_ms: 500 },
                VadEvent::SpeechEnd { at_ms: 1_300 },
                VadEvent::SpeechStart { at_ms: 1_900 },
                VadEvent::SpeechEnd { at_ms: 2_400 },
            ]
        );
        assert!(!vad.is_speaking());
        assert_eq!(vad.trailing_silence_ms(), 400);
    }

    /// A 40 ms click is shorter than min_speech_ms and is ignored; a quiet tone below the
    /// threshold is ignored; the same tone above a lowered threshold is speech.
    #[test]
    fn clicks_and_quiet_tones() {
        let mut vad = Vad::new(Config::default());
        let audio = concat(&[
            synth::silence(200),
            synth::tone(40, 1_000.0, 20_000),
            synth::silence(500),
        ]);
        assert!(run(&mut vad, &audio).is_empty());

        let quiet = synth::tone(500, 500.0, 200); // ≈ -47 dBFS
        assert!(run(&mut Vad::new(Config::default()), &quiet).is_empty());
        let sensitive = Config {
            threshold_dbfs: -50.0,
            ..Config::default()
        };
        let events = run(&mut Vad::new(sensitive), &quiet);
        assert_eq!(events, vec![VadEvent::SpeechStart { at_ms: 0 }]);
    }

    /// force_end closes speech in progress at the last voiced frame, once.
    #[test]
    fn force_end_closes_speech() {
        let mut vad = Vad::new(Config::default());
        run(&mut vad, &synth::tone(300, 440.0, 8_000));
        assert!(vad.is_speaking());
        assert_eq!(vad.force_end(), Some(VadEvent::SpeechEnd { at_ms: 300 }));
        assert_eq!(vad.force_end(), None);
    }

    /// 16 kHz linear PCM uses 320-sample frames and the same timeline.
    #[test]
    fn other_rates() {
        let tone16k = crate::resample::resample(&synth::tone(400, 440.0, 8_000), 8_000, 16_000);
        let mut audio = vec![0i16; 3_200];
        audio.extend_from_slice(&tone16k);
        audio.extend(vec![0i16; 6_400]);
        let mut vad = Vad::with_rate(Config::default(), 16_000);
        let events = vad.push_pcm(&audio);
        assert_eq!(
            events,
            vec![
                VadEvent::SpeechStart { at_ms: 200 },
                VadEvent::SpeechEnd { at_ms: 600 }
            ]
        );
    }

    /// The deterministic speech stand-in (two sentences) and, when installed, espeak-ng
    /// speech are each detected as one utterance, starting near their first sound.
    #[tokio::test]
    async fn synthetic_speech_is_speech() {
        // A syllable of the stand-in is loud enough to be speech.
        assert!(frame_dbfs(&synth::speechlike("Hello.")[400..560]) > -25.0);
        let mut audio = synth::silence(300);
        audio.extend(synth::speechlike(
            "Hello there, I would like to book a table. For two, please!",
        ));
        audio.extend(synth::silence(800));
        // Switchboard's endpointing: the speech-like signal's pauses must not split it.
        let mut vad = Vad::new(Config {
            hangover_ms: 300,
            ..Config::default()
        });
        let events = run(&mut vad, &audio);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0], VadEvent::SpeechStart { at_ms: 300 });

        if synth::espeak_available() {
            let mut audio = synth::silence(300);
            audio.extend(
                synth::speak("Hello there, I would like to book a table.", "en-us")
                    .await
                    .expect("espeak-ng speaks"),
            );
            audio.extend(synth::silence(1_000));
            let mut vad = Vad::new(Config {
                hangover_ms: 500,
                ..Config::default()
            });
            let events = run(&mut vad, &audio);
            assert_eq!(events.len(), 2, "espeak: {events:?}");
            let VadEvent::SpeechStart { at_ms } = events[0] else {
                panic!("starts with speech: {events:?}")
            };
            assert!(
                (300..500).contains(&at_ms),
                "espeak speech starts at {at_ms}"
            );
        }
    }
}
