//! RIFF/WAVE files: write 16-bit PCM (mono, stereo) and 8-bit µ-law, parse them back.
//!
//! Consumes sample buffers or file bytes; produces the other. The parser walks the chunk
//! list (skipping `LIST`, `fact` and other chunks, honouring pad bytes) and tolerates the
//! streaming header that `espeak-ng --stdout` writes, whose RIFF and `data` sizes say
//! "unknown" (0x7FFFF000 or 0xFFFFFFFF): a data chunk longer than the bytes present is cut to
//! what is there. State: none.

use thiserror::Error;

/// WAVE format tag of linear PCM.
const FORMAT_PCM: u16 = 1;
/// WAVE format tag of G.711 µ-law.
const FORMAT_MULAW: u16 = 7;

/// Why bytes are not a WAV file this module can read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WavError {
    /// Fewer bytes than a RIFF header, or a chunk header cut short.
    #[error("wav: truncated ({0} bytes)")]
    Truncated(usize),
    /// The file does not start with `RIFF....WAVE`.
    #[error("wav: not a RIFF/WAVE file")]
    NotWave,
    /// No `fmt ` chunk before the `data` chunk, or one shorter than 16 bytes.
    #[error("wav: missing or short fmt chunk")]
    BadFormatChunk,
    /// No `data` chunk.
    #[error("wav: no data chunk")]
    NoData,
    /// A format other than 16-bit PCM or 8-bit µ-law, or zero channels/rate.
    #[error("wav: unsupported format tag {format} with {bits} bits per sample")]
    Unsupported {
        /// The WAVE format tag (1 = PCM, 7 = µ-law, 0xFFFE = extensible, …).
        format: u16,
        /// Bits per sample.
        bits: u16,
    },
}

impl WavError {
    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Truncated(_) => "truncated",
            Self::NotWave => "not_wave",
            Self::BadFormatChunk => "bad_format_chunk",
            Self::NoData => "no_data",
            Self::Unsupported { .. } => "unsupported",
        }
    }
}

/// Sample encoding inside a WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Signed 16-bit little-endian linear PCM.
    Pcm16,
    /// 8-bit G.711 µ-law.
    Mulaw,
}

/// What a WAV header says, and where the samples are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Samples per second per channel.
    pub rate: u32,
    /// Interleaved channels.
    pub channels: u16,
    /// Sample encoding.
    pub encoding: Encoding,
    /// Offset of the first sample byte.
    pub data_offset: usize,
    /// Sample bytes present (the declared size, cut to the bytes available).
    pub data_len: usize,
}

/// A mono 16-bit PCM WAV file.
pub fn mono(samples: &[i16], rate: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(samples.len() * 2);
    for sample in samples {
        data.extend_from_slice(&sample.to_le_bytes());
    }
    file(FORMAT_PCM, 1, rate, 16, &data)
}

/// A stereo 16-bit PCM WAV file; the shorter channel is padded with silence.
pub fn stereo(left: &[i16], right: &[i16], rate: u32) -> Vec<u8> {
    let frames = left.len().max(right.len());
    let mut data = Vec::with_capacity(frames * 4);
    for i in 0..frames {
        data.extend_from_slice(&left.get(i).copied().unwrap_or(0).to_le_bytes());
        data.extend_from_slice(&right.get(i).copied().unwrap_or(0).to_le_bytes());
    }
    file(FORMAT_PCM, 2, rate, 16, &data)
}

/// A mono 8-bit µ-law WAV file (format tag 7, with the `fact` chunk non-PCM files carry),
/// as Azure's `riff-8khz-8bit-mono-mulaw` output format.
pub fn mulaw(bytes: &[u8], rate: u32) -> Vec<u8> {
    file(FORMAT_MULAW, 1, rate, 8, bytes)
}

fn file(format: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    let block_align = channels * bits / 8;
    let byte_rate = rate.saturating_mul(u32::from(block_align));
    let pcm = format == FORMAT_PCM;
    let fmt_len: u32 = if pcm { 16 } else { 18 };
    let data_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let fact_len: u32 = if pcm { 0 } else { 12 };
    let riff_len = (4 + 8 + fmt_len + fact_len + 8).saturating_add(data_len + (data_len & 1));
    let mut out = Vec::with_capacity(data.len() + 64);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&riff_len.to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&fmt_len.to_le_bytes());
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&byte_rate.to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    if !pcm {
        out.extend_from_slice(&0u16.to_le_bytes()); // cbSize: no extension.
        out.extend_from_slice(b"fact");
        out.extend_from_slice(&4u32.to_le_bytes());
        let frames = data_len / u32::from(block_align.max(1));
        out.extend_from_slice(&frames.to_le_bytes());
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Reads the header of a WAV file (or of the first bytes of a streamed one).
pub fn header(bytes: &[u8]) -> Result<Header, WavError> {
    if bytes.len() < 12 {
        return Err(WavError::Truncated(bytes.len()));
    }
    if &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWave);
    }
    let mut at = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    loop {
        let (Some(id), Some(len)) = (bytes.get(at..at + 4), u32_at(bytes, at + 4)) else {
            return Err(if format.is_some() {
                WavError::NoData
            } else {
                WavError::BadFormatChunk
            });
        };
        let body = at + 8;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        match id {
            b"fmt " => {
                let fields = (
                    u16_at(bytes, body),
                    u16_at(bytes, body + 2),
                    u32_at(bytes, body + 4),
                    u16_at(bytes, body + 14),
                );
                let (Some(tag), Some(channels), Some(rate), Some(bits)) = fields else {
                    return Err(WavError::BadFormatChunk);
                };
                if len < 16 {
                    return Err(WavError::BadFormatChunk);
                }
                format = Some((tag, channels, rate, bits));
            }
            b"data" => {
                let (tag, channels, rate, bits) = format.ok_or(WavError::BadFormatChunk)?;
                let encoding = match (tag, bits) {
                    (FORMAT_PCM, 16) => Encoding::Pcm16,
                    (FORMAT_MULAW, 8) => Encoding::Mulaw,
                    _ => return Err(WavError::Unsupported { format: tag, bits }),
                };
                if channels == 0 || rate == 0 {
                    return Err(WavError::Unsupported { format: tag, bits });
                }
                let available = bytes.len().saturating_sub(body);
                return Ok(Header {
                    rate,
                    channels,
                    encoding,
                    data_offset: body,
                    data_len: len.min(available),
                });
            }
            _ => {}
        }
        at = body.saturating_add(len).saturating_add(len & 1);
    }
}

/// Parses a 16-bit PCM or 8-bit µ-law WAV file into `(rate, channels, samples)`; samples of
/// several channels stay interleaved, µ-law is decoded to 16-bit.
pub fn parse(bytes: &[u8]) -> Result<(u32, u16, Vec<i16>), WavError> {
    let header = header(bytes)?;
    let data = &bytes[header.data_offset..header.data_offset + header.data_len];
    let samples = match header.encoding {
        Encoding::Pcm16 => data
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect(),
        Encoding::Mulaw => crate::mulaw::decode_slice(data),
    };
    Ok((header.rate, header.channels, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mono file round-trips and has the canonical 44-byte header.
    #[test]
    fn mono_round_trip() {
        let samples = [0i16, 1, -1, i16::MAX, i16::MIN, 1234];
        let bytes = mono(&samples, 8_000);
        assert_eq!(bytes.len(), 44 + samples.len() * 2);
        assert_eq!(&bytes[0..4], b"RIFF");
        assert_eq!(u32_at(&bytes, 4), Some(36 + 12));
        assert_eq!(u32_at(&bytes, 28), Some(16_000), "byte rate");
        assert_eq!(parse(&bytes), Ok((8_000, 1, samples.to_vec())));
    }

    /// Stereo interleaves left/right and pads the shorter channel.
    #[test]
    fn stereo_interleaves_and_pads() {
        let bytes = stereo(&[1, 2, 3], &[-1], 16_000);
        assert_eq!(parse(&bytes), Ok((16_000, 2, vec![1, -1, 2, 0, 3, 0])));
        assert_eq!(u16_at(&bytes, 32), Some(4), "block align");
    }

    /// A µ-law file has format tag 7, an 18-byte fmt chunk, a fact chunk, and decodes.
    #[test]
    fn mulaw_file() {
        let data = crate::mulaw::encode_slice(&[0, 1000, -1000]);
        let bytes = mulaw(&data, 8_000);
        assert_eq!(u16_at(&bytes, 20), Some(FORMAT_MULAW));
        assert_eq!(u32_at(&bytes, 16), Some(18));
        assert_eq!(&bytes[38..42], b"fact");
        let parsed = header(&bytes).expect("valid header");
        assert_eq!((parsed.encoding, parsed.data_len), (Encoding::Mulaw, 3));
        assert_eq!(parse(&bytes), Ok((8_000, 1, vec![0, 988, -988])));
        assert_eq!(bytes.len() % 2, 0, "odd data is padded");
    }

    /// espeak-ng's streaming header (sizes 0x7FFFF000) parses, cut to the bytes present,
    /// and unknown chunks before `data` are skipped.
    #[test]
    fn streaming_sizes_and_unknown_chunks() {
        let mut bytes = mono(&[5, 6, 7], 22_050);
        bytes[4..8].copy_from_slice(&0x7FFF_F000u32.to_le_bytes());
        bytes[40..44].copy_from_slice(&0x7FFF_F000u32.to_le_bytes());
        assert_eq!(parse(&bytes), Ok((22_050, 1, vec![5, 6, 7])));

        let mut with_list = bytes[..36].to_vec();
        with_list.extend_from_slice(b"LIST\x03\x00\x00\x00abc\x00");
        with_list.extend_from_slice(&bytes[36..]);
        assert_eq!(parse(&with_list), Ok((22_050, 1, vec![5, 6, 7])));
    }

    /// Garbage, truncation and unsupported formats are errors, never panics.
    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(parse(b"RIFF"), Err(WavError::Truncated(4)));
        assert_eq!(parse(b"RIFX\0\0\0\0WAVEfmt "), Err(WavError::NotWave));
        let good = mono(&[1, 2], 8_000);
        assert_eq!(parse(&good[..30]), Err(WavError::BadFormatChunk));
        assert_eq!(parse(&good[..36]), Err(WavError::NoData));
        let mut float = good.clone();
        float[20] = 3; // IEEE float
        float[34] = 32;
        assert_eq!(
            parse(&float),
            Err(WavError::Unsupported {
                format: 3,
                bits: 32
            })
        );
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]);
        }
        assert_eq!(WavError::NoData.kind(), "no_data");
    }
}
