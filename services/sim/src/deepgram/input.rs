//! What a client gives a `/v1/listen` session: audio bytes to decode, and the transcript
//! script its utterances take their words from.
//!
//! Consumes binary frames (µ-law, linear16, or — with no `encoding` — a WAV stream whose
//! header is read first) split anywhere, even mid-sample; produces mono 16-bit PCM, channels
//! averaged. State: the undecoded tail of the last frame and the stream's format; the
//! script's cursor.

use sb_audio::{mulaw, wav};

use super::params::{AudioEncoding, ListenParams};

/// A WAV header not complete within this many bytes is not audio.
const MAX_HEADER_BYTES: usize = 4_096;

/// Audio that cannot be decoded (close 1008 `DATA-0000`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct UndecodableAudio;

/// Turns a stream's binary frames into mono PCM.
#[derive(Debug)]
pub(crate) struct Decoder {
    encoding: AudioEncoding,
    rate: u32,
    channels: u16,
    /// Bytes of an incomplete sample frame (or of a WAV header still arriving).
    carry: Vec<u8>,
}

impl Decoder {
    pub(crate) fn new(params: &ListenParams) -> Self {
        Self {
            encoding: params.encoding,
            rate: params.sample_rate,
            channels: params.channels,
            carry: Vec::new(),
        }
    }

    /// `(sample rate, channels)`, once known (containerised audio: after its header).
    pub(crate) fn format(&self) -> Option<(u32, u16)> {
        (self.encoding != AudioEncoding::Container).then_some((self.rate, self.channels))
    }

    /// Decodes what `bytes` completes; keeps the rest for the next call.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<i16>, UndecodableAudio> {
        self.carry.extend_from_slice(bytes);
        if self.encoding == AudioEncoding::Container && !self.read_header()? {
            return Ok(Vec::new());
        }
        let bytes_per_sample = if self.encoding == AudioEncoding::Linear16 {
            2
        } else {
            1
        };
        let channels = usize::from(self.channels.max(1));
        let frame_bytes = bytes_per_sample * channels;
        let usable = self.carry.len() / frame_bytes * frame_bytes;
        let mono = self.carry[..usable]
            .chunks_exact(frame_bytes)
            .map(|frame| {
                let sum: i32 = frame
                    .chunks_exact(bytes_per_sample)
                    .map(|sample| match sample {
                        [lo, hi] => i32::from(i16::from_le_bytes([*lo, *hi])),
                        [byte] => i32::from(mulaw::decode(*byte)),
                        _ => 0,
                    })
                    .sum();
                // The mean of i16 values is an i16.
                (sum / channels as i32) as i16
            })
            .collect();
        self.carry.drain(..usable);
        Ok(mono)
    }

    /// Reads a WAV header from the carried bytes; `false` while it is still incomplete.
    fn read_header(&mut self) -> Result<bool, UndecodableAudio> {
        match wav::header(&self.carry) {
            Ok(header) => {
                self.encoding = match header.encoding {
                    wav::Encoding::Pcm16 => AudioEncoding::Linear16,
                    wav::Encoding::Mulaw => AudioEncoding::Mulaw,
                };
                self.rate = header.rate;
                self.channels = header.channels;
                self.carry.drain(..header.data_offset);
                Ok(true)
            }
            Err(
                wav::WavError::Truncated(_) | wav::WavError::BadFormatChunk | wav::WavError::NoData,
            ) if self.carry.len() < MAX_HEADER_BYTES => Ok(false),
            Err(_) => Err(UndecodableAudio),
        }
    }
}

/// Transcript lines in order; when they run out, the fallback (or the last line) repeats.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    lines: Vec<String>,
    next: usize,
    fallback: Option<String>,
}

impl Script {
    pub(crate) fn new(lines: Vec<String>, fallback: Option<String>) -> Self {
        Self {
            lines,
            next: 0,
            fallback,
        }
    }

    /// The line for the next utterance.
    pub(crate) fn next_line(&mut self) -> String {
        if let Some(line) = self.lines.get(self.next) {
            self.next += 1;
            return line.clone();
        }
        self.fallback
            .clone()
            .or_else(|| self.lines.last().cloned())
            .unwrap_or_else(|| "hello".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(query: &str) -> Decoder {
        Decoder::new(&ListenParams::parse(query).expect("valid query"))
    }

    /// µ-law decodes byte by byte; linear16 split mid-sample is reassembled; stereo is
    /// averaged to mono.
    #[test]
    fn decodes_split_frames() {
        let mut mu = decoder("encoding=mulaw&sample_rate=8000");
        assert_eq!(mu.push(&[0xFF, 0xCE, 0x4E]), Ok(vec![0, 988, -988]));
        let mut stereo = decoder("encoding=linear16&sample_rate=16000&channels=2");
        let bytes: Vec<u8> = [100i16, 300, -50, -150]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(stereo.push(&bytes[..3]), Ok(vec![]));
        assert_eq!(stereo.push(&bytes[3..5]), Ok(vec![200]));
        assert_eq!(stereo.push(&bytes[5..]), Ok(vec![-100]));
        assert_eq!(stereo.format(), Some((16_000, 2)));
    }

    /// Without an encoding the WAV header sets the format, even when it arrives in pieces;
    /// bytes that are not a WAV file are undecodable.
    #[test]
    fn container_header() {
        let file = wav::mono(&[7, 8, 9], 16_000);
        let mut container = decoder("");
        assert_eq!(container.format(), None);
        assert_eq!(container.push(&file[..20]), Ok(vec![]));
        assert_eq!(container.push(&file[20..]), Ok(vec![7, 8, 9]));
        assert_eq!(container.format(), Some((16_000, 1)));
        assert_eq!(
            decoder("").push(b"OggS\0\0\0\0\0\0\0\0\0\0"),
            Err(UndecodableAudio)
        );
    }

    /// The script gives lines in order, then the fallback, else the last line, else "hello".
    #[test]
    fn script_order_and_fallbacks() {
        let mut script = Script::new(vec!["a".into(), "b".into()], None);
        let lines: Vec<String> = (0..3).map(|_| script.next_line()).collect();
        assert_eq!(lines, ["a", "b", "b"]);
        let mut fallback = Script::new(vec!["a".into()], Some("z".into()));
        fallback.next_line();
        assert_eq!(fallback.next_line(), "z");
        assert_eq!(Script::new(vec![], None).next_line(), "hello");
    }
}
