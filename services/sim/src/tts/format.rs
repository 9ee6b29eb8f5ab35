//! Output audio formats of the three TTS faces and how PCM becomes their bytes.
//!
//! Consumes a format request (Azure's `X-Microsoft-OutputFormat`, Deepgram's
//! `encoding`/`sample_rate`/`container` query, OpenAI's `response_format`) and synthesised
//! PCM at any rate; produces the exact bytes to send: headerless µ-law or s16le, or a RIFF
//! file (format 7 for µ-law, 1 for PCM). State: none.

use sb_audio::{mulaw, resample, wav};

/// Sample encoding of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// 8-bit G.711 µ-law.
    Mulaw,
    /// 16-bit signed little-endian PCM.
    Pcm16,
}

/// An output format: encoding, rate, and whether a RIFF header comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub encoding: Encoding,
    pub rate: u32,
    pub riff: bool,
}

/// Azure format names this stand-in produces.
const AZURE: &[(&str, Format)] = &[
    (
        "raw-8khz-8bit-mono-mulaw",
        Format {
            encoding: Encoding::Mulaw,
            rate: 8_000,
            riff: false,
        },
    ),
    (
        "riff-8khz-8bit-mono-mulaw",
        Format {
            encoding: Encoding::Mulaw,
            rate: 8_000,
            riff: true,
        },
    ),
    (
        "raw-8khz-16bit-mono-pcm",
        Format {
            encoding: Encoding::Pcm16,
            rate: 8_000,
            riff: false,
        },
    ),
    (
        "raw-16khz-16bit-mono-pcm",
        Format {
            encoding: Encoding::Pcm16,
            rate: 16_000,
            riff: false,
        },
    ),
    (
        "raw-24khz-16bit-mono-pcm",
        Format {
            encoding: Encoding::Pcm16,
            rate: 24_000,
            riff: false,
        },
    ),
    (
        "riff-8khz-16bit-mono-pcm",
        Format {
            encoding: Encoding::Pcm16,
            rate: 8_000,
            riff: true,
        },
    ),
    (
        "riff-16khz-16bit-mono-pcm",
        Format {
            encoding: Encoding::Pcm16,
            rate: 16_000,
            riff: true,
        },
    ),
    (
        "riff-24khz-16bit-mono-pcm",
        Format {
            encoding: Encoding::Pcm16,
            rate: 24_000,
            riff: true,
        },
    ),
];

/// Sample rates Deepgram's `/v1/speak` accepts.
const DEEPGRAM_RATES: &[u32] = &[8_000, 16_000, 24_000, 32_000, 48_000];

impl Format {
    /// The format an `X-Microsoft-OutputFormat` value names (case-insensitive).
    pub fn azure(name: &str) -> Option<Self> {
        AZURE
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name.trim()))
            .map(|(_, format)| *format)
    }

    /// Deepgram `/v1/speak` query values; the error is Deepgram's `err_msg`.
    /// Defaults as Deepgram: no encoding = mp3 (not produced here), µ-law at 8 kHz,
    /// linear16 at 24 kHz, container `wav` for both.
    pub fn deepgram(
        encoding: Option<&str>,
        rate: Option<&str>,
        container: Option<&str>,
    ) -> Result<Self, String> {
        let (encoding, default_rate) = match encoding.unwrap_or("mp3") {
            "mulaw" => (Encoding::Mulaw, 8_000),
            "linear16" => (Encoding::Pcm16, 24_000),
            other => {
                return Err(format!(
                    "encoding {other:?} is not produced by this stand-in (use mulaw or linear16)"
                ));
            }
        };
        let rate = match rate {
            None => default_rate,
            Some(value) => value
                .parse::<u32>()
                .ok()
                .filter(|r| {
                    DEEPGRAM_RATES.contains(r)
                        && (encoding == Encoding::Pcm16 || *r == 8_000 || *r == 16_000)
                })
                .ok_or_else(|| format!("unsupported sample_rate {value:?} for this encoding"))?,
        };
        let riff = match container.unwrap_or("wav") {
            "wav" => true,
            "none" => false,
            other => return Err(format!("unsupported container {other:?} for this encoding")),
        };
        Ok(Self {
            encoding,
            rate,
            riff,
        })
    }

    /// OpenAI `response_format`: `pcm` (headerless 24 kHz s16le) or `wav`; the default (mp3)
    /// and the other compressed formats are not produced here.
    pub fn openai(response_format: Option<&str>) -> Result<Self, String> {
        match response_format.unwrap_or("mp3") {
            "pcm" => Ok(Self {
                encoding: Encoding::Pcm16,
                rate: 24_000,
                riff: false,
            }),
            "wav" => Ok(Self {
                encoding: Encoding::Pcm16,
                rate: 24_000,
                riff: true,
            }),
            other => Err(format!(
                "response_format {other:?} is not produced by this stand-in (use pcm or wav)"
            )),
        }
    }

    /// The response `Content-Type`.
    pub fn content_type(&self) -> &'static str {
        match (self.riff, self.encoding) {
            (true, _) => "audio/x-wav",
            (false, Encoding::Mulaw) => "audio/basic",
            (false, Encoding::Pcm16) => "audio/pcm",
        }
    }

    /// Bytes of `samples` (mono PCM at `rate`) in this format.
    pub fn render(&self, samples: &[i16], rate: u32) -> Vec<u8> {
        let pcm = resample::resample(samples, rate, self.rate);
        match (self.encoding, self.riff) {
            (Encoding::Mulaw, false) => mulaw::encode_slice(&pcm),
            (Encoding::Mulaw, true) => wav::mulaw(&mulaw::encode_slice(&pcm), self.rate),
            (Encoding::Pcm16, false) => pcm.iter().flat_map(|s| s.to_le_bytes()).collect(),
            (Encoding::Pcm16, true) => wav::mono(&pcm, self.rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every Azure name the brief lists is known; unknown and streaming-less names are not.
    #[test]
    fn azure_names() {
        let mulaw = Format::azure("raw-8khz-8bit-mono-mulaw").expect("known");
        assert_eq!(
            (mulaw.encoding, mulaw.rate, mulaw.riff),
            (Encoding::Mulaw, 8_000, false)
        );
        assert!(Format::azure("RIFF-8khz-8bit-mono-mulaw").is_some_and(|f| f.riff));
        assert_eq!(
            Format::azure("raw-24khz-16bit-mono-pcm").map(|f| f.rate),
            Some(24_000)
        );
        assert_eq!(Format::azure("audio-24khz-48kbitrate-mono-mp3"), None);
        assert_eq!(Format::azure(""), None);
    }

    /// Rendering: raw µ-law is one byte per 8 kHz sample; the RIFF µ-law file is format 7 and
    /// parses back; 24 kHz PCM has three times the samples, two bytes each.
    #[test]
    fn render_lengths_and_headers() {
        let samples = sb_audio::synth::tone(100, 440.0, 8_000);
        let raw = Format::azure("raw-8khz-8bit-mono-mulaw")
            .expect("known")
            .render(&samples, 8_000);
        assert_eq!(raw.len(), 800);
        let riff = Format::azure("riff-8khz-8bit-mono-mulaw")
            .expect("known")
            .render(&samples, 8_000);
        assert_eq!(&riff[..4], b"RIFF");
        assert_eq!(&riff[20..22], &7u16.to_le_bytes());
        assert_eq!(
            wav::parse(&riff).map(|(rate, ch, s)| (rate, ch, s.len())),
            Ok((8_000, 1, 800))
        );
        let pcm24 = Format::openai(Some("pcm"))
            .expect("pcm")
            .render(&samples, 8_000);
        assert_eq!(pcm24.len(), 2_400 * 2);
    }

    /// Deepgram and OpenAI query values map as their APIs define, refusing what is not produced.
    #[test]
    fn deepgram_and_openai_values() {
        let dg = Format::deepgram(Some("mulaw"), Some("8000"), Some("none")).expect("valid");
        assert_eq!(
            (dg.encoding, dg.rate, dg.riff),
            (Encoding::Mulaw, 8_000, false)
        );
        let dg = Format::deepgram(Some("linear16"), None, None).expect("valid");
        assert_eq!((dg.rate, dg.riff), (24_000, true));
        assert!(Format::deepgram(None, None, None).is_err());
        assert!(Format::deepgram(Some("mulaw"), Some("44100"), None).is_err());
        assert!(Format::deepgram(Some("mulaw"), None, Some("ogg")).is_err());
        assert!(Format::openai(None).is_err());
        assert!(Format::openai(Some("wav")).is_ok_and(|f| f.riff));
    }
}
