//! Audio to play down the phone: espeak-ng speech, tones, silence, and a deterministic
//! speech-like signal for machines without espeak-ng (or tests that want speed).
//!
//! Consumes text; produces 8 kHz mono 16-bit PCM. [`speak`] runs
//! `espeak-ng --stdout -v <voice>` as a child process, writes the text to its standard input
//! (so text starting with `-` is never taken for an option), parses the WAV it prints and
//! resamples 22 050 Hz → 8 kHz. State: only the cached answer of [`espeak_available`].

use std::f32::consts::PI;
use std::process::Stdio;
use std::sync::OnceLock;

use thiserror::Error;
use tokio::io::AsyncWriteExt as _;

use crate::wav::{self, WavError};
use crate::{SAMPLE_RATE, resample, samples_for_ms};

/// Why speech could not be synthesised.
#[derive(Debug, Error)]
pub enum SynthError {
    /// `espeak-ng` is not installed (not on `PATH`).
    #[error("espeak-ng is not installed")]
    Unavailable,
    /// Starting or talking to the child process failed.
    #[error("espeak-ng i/o: {0}")]
    Io(#[from] std::io::Error),
    /// espeak-ng exited unsuccessfully (unknown voice, bad option, …).
    #[error("espeak-ng failed ({status}): {stderr}")]
    Failed {
        /// The exit status as printed.
        status: String,
        /// What it wrote to standard error, trimmed.
        stderr: String,
    },
    /// Its output was not a WAV file this crate can read.
    #[error("espeak-ng output: {0}")]
    Wav(#[from] WavError),
}

impl SynthError {
    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Io(_) => "io",
            Self::Failed { .. } => "failed",
            Self::Wav(_) => "wav",
        }
    }
}

/// Whether `espeak-ng` runs on this machine. Checked once per process (a blocking
/// `espeak-ng --version` of a few milliseconds), then cached.
pub fn espeak_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::process::Command::new("espeak-ng")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// Speaks `text` with espeak-ng voice `voice` (e.g. `en-us`), as 8 kHz PCM.
pub async fn speak(text: &str, voice: &str) -> Result<Vec<i16>, SynthError> {
    let (rate, samples) = speak_native(text, voice).await?;
    Ok(resample::resample(&samples, rate, SAMPLE_RATE))
}

/// Speaks `text` at espeak-ng's own rate: `(rate, mono samples)`, usually 22 050 Hz.
/// Lets callers that want another rate (16 or 24 kHz) resample once.
pub async fn speak_native(text: &str, voice: &str) -> Result<(u32, Vec<i16>), SynthError> {
    let mut child = tokio::process::Command::new("espeak-ng")
        .args(["--stdout", "-v", voice])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => SynthError::Unavailable,
            _ => SynthError::Io(err),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // One line: espeak-ng reads standard input to its end; newlines would only add pauses.
        let line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        stdin.write_all(line.as_bytes()).await?;
        stdin.shutdown().await?;
    }
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        return Err(SynthError::Failed {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let (rate, channels, samples) = wav::parse(&output.stdout)?;
    let mono = if channels > 1 {
        samples
            .chunks(usize::from(channels))
            .map(|frame| frame[0])
            .collect()
    } else {
        samples
    };
    Ok((rate, mono))
}

/// `ms` of a sine at `hz` with peak `amplitude`, 8 kHz, starting at phase 0.
pub fn tone(ms: u32, hz: f32, amplitude: i16) -> Vec<i16> {
    let n = samples_for_ms(ms, SAMPLE_RATE);
    let step = 2.0 * PI * hz / SAMPLE_RATE as f32;
    (0..n)
        .map(|i| (f32::from(amplitude) * (step * i as f32).sin()).round() as i16)
        .collect()
}

/// `ms` of digital silence, 8 kHz.
pub fn silence(ms: u32) -> Vec<i16> {
    vec![0; samples_for_ms(ms, SAMPLE_RATE)]
}

/// Length of one syllable-like burst.
const SYLLABLE_MS: u32 = 150;
/// Dip between syllables of one word (quieter, not silent: words stay one sound).
const SYLLABLE_DIP_MS: u32 = 20;
/// Silence between words.
const WORD_GAP_MS: u32 = 60;
/// Silence after `,` `;` `:`.
const COMMA_GAP_MS: u32 = 120;
/// Silence after `.` `!` `?`: below the 300 ms endpointing Switchboard asks Deepgram for, so
/// one text stays one utterance to the STT stand-in.
const SENTENCE_GAP_MS: u32 = 200;

/// A deterministic stand-in for speech: one voiced burst per syllable (a 3-harmonic buzz
/// at a pitch derived from the word), short dips inside words, gaps between words and
/// longer ones at punctuation (all pauses shorter than 300 ms, so a VAD with a 300 ms
/// hangover hears one utterance). Same text, same samples; longer text, longer audio
/// (≈ 150 ms per syllable). Used when espeak-ng is absent and by tests and benchmarks.
pub fn speechlike(text: &str) -> Vec<i16> {
    let mut out = Vec::new();
    let words: Vec<&str> = text.split_whitespace().collect();
    for (index, word) in words.iter().enumerate() {
        let syllables = count_syllables(word);
        let pitch = 110.0 + (fnv1a(word.as_bytes()) % 80) as f32;
        for syllable in 0..syllables {
            if syllable > 0 {
                out.extend(burst(SYLLABLE_DIP_MS, pitch, 0.2));
            }
            // Pitch falls a little across the word, as in a statement.
            out.extend(burst(SYLLABLE_MS, pitch - 6.0 * syllable as f32, 1.0));
        }
        let gap = match word.chars().last() {
            Some('.' | '!' | '?') => SENTENCE_GAP_MS,
            Some(',' | ';' | ':') => COMMA_GAP_MS,
            _ => WORD_GAP_MS,
        };
        if index + 1 < words.len() {
            out.extend(silence(gap));
        }
    }
    out
}

/// Vowel groups in `word`, counting each digit as a syllable; at least one if the word has
/// any letter or digit, zero for bare punctuation.
fn count_syllables(word: &str) -> usize {
    let mut count = 0;
    let mut in_vowel = false;
    let mut any = false;
    for c in word.chars() {
        let c = c.to_ascii_lowercase();
        any |= c.is_alphanumeric();
        if c.is_ascii_digit() {
            count += 1;
            in_vowel = false;
        } else if "aeiouy".contains(c) {
            if !in_vowel {
                count += 1;
            }
            in_vowel = true;
        } else {
            in_vowel = false;
        }
    }
    if any { count.max(1) } else { 0 }
}

/// One burst: fundamental plus 2nd and 3rd harmonics, 15 ms fade in/out, peak ≈ 9000 × gain.
fn burst(ms: u32, pitch: f32, gain: f32) -> Vec<i16> {
    let n = samples_for_ms(ms, SAMPLE_RATE);
    let fade = samples_for_ms(15, SAMPLE_RATE).min(n / 2).max(1);
    let step = 2.0 * PI * pitch / SAMPLE_RATE as f32;
    (0..n)
        .map(|i| {
            let t = step * i as f32;
            let wave = 0.6 * t.sin() + 0.3 * (2.0 * t).sin() + 0.1 * (3.0 * t).sin();
            let edge = i.min(n - 1 - i);
            let envelope = if edge < fade {
                edge as f32 / fade as f32
            } else {
                1.0
            };
            (9_000.0 * gain * envelope * wave).round() as i16
        })
        .collect()
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tone and silence have the requested length; the tone's peak is the amplitude.
    #[test]
    fn tone_and_silence_lengths() {
        assert_eq!(silence(20).len(), 160);
        assert!(silence(100).iter().all(|&s| s == 0));
        let t = tone(1_000, 1_000.0, 8_000);
        assert_eq!(t.len(), 8_000);
        assert_eq!(&t[..4], &[0, 5657, 8000, 5657]);
        assert_eq!(t.iter().copied().max(), Some(8_000));
    }

    /// speechlike is deterministic, grows with the text, and is silent for empty text.
    #[test]
    fn speechlike_is_deterministic_and_follows_text() {
        let short = speechlike("Hello.");
        assert_eq!(short, speechlike("Hello."));
        let long = speechlike("Hello, I would like to book a table for two tonight.");
        assert!(
            long.len() > 4 * short.len(),
            "{} vs {}",
            long.len(),
            short.len()
        );
        assert!(speechlike("").is_empty());
        assert!(speechlike("  ...  ").is_empty());
        assert_eq!(count_syllables("table"), 2);
        assert_eq!(count_syllables("123"), 3);
    }

    /// espeak-ng (when installed) speaks at 8 kHz, longer text giving longer audio; an unknown
    /// voice is a `Failed` error, not a panic or empty audio; a leading `-` is text.
    #[tokio::test]
    async fn espeak_speaks() {
        if !espeak_available() {
            return;
        }
        let short = speak("Hi.", "en-us").await.expect("speaks");
        let long = speak("Hi. Thanks for calling, how can I help you today?", "en-us")
            .await
            .expect("speaks");
        assert!(short.len() > 1_000, "{}", short.len());
        assert!(long.len() > 2 * short.len());
        let err = speak("Hi.", "xx-no-such-voice")
            .await
            .expect_err("unknown voice");
        assert_eq!(err.kind(), "failed");
        let dash = speak("-- not an option", "en").await.expect("dash is text");
        assert!(!dash.is_empty());
        let (rate, _) = speak_native("ok", "en").await.expect("speaks");
        assert_eq!(rate, 22_050);
    }
}
