//! G.711 µ-law: 16-bit linear PCM to and from 8-bit µ-law, exactly as PROTOCOLS §8.
//!
//! Consumes `i16` samples or µ-law bytes; produces the other. The encoder is the classic
//! sox/CCITT one (bias 0x84, clip 32635, bit-inverted code word); note that CPython's
//! `audioop.lin2ulaw` differs for 381 negative inputs (it shifts to 14 bits first), so
//! fixtures made with audioop are only byte-exact for non-negative samples. Decoding goes
//! through a 256-entry table built at compile time. State: none.

/// µ-law code of digital silence (PCM 0).
pub const SILENCE: u8 = 0xFF;

const BIAS: i32 = 0x84;
const CLIP: i32 = 32635;

/// `(BIAS << exponent) - BIAS`: the magnitude at the bottom of each segment.
const EXP_BASE: [i32; 8] = [0, 132, 396, 924, 1980, 4092, 8316, 16764];

/// Decode table, identical to `_st_ulaw2linear16` in CPython's audioop.c.
const DECODE: [i16; 256] = build_decode_table();

const fn decode_slow(byte: u8) -> i16 {
    let u = !byte;
    let negative = u & 0x80 != 0;
    let exp = ((u >> 4) & 0x07) as usize;
    let mant = (u & 0x0F) as i32;
    let magnitude = EXP_BASE[exp] + (mant << (exp + 3));
    // The largest magnitude is 32124, so the cast cannot truncate.
    if negative {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn build_decode_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = decode_slow(i as u8);
        i += 1;
    }
    table
}

/// Encodes one 16-bit sample to a µ-law byte (classic G.711 encoder).
pub fn encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0x00 };
    if s < 0 {
        s = -s; // -32768 becomes 32768, clipped below.
    }
    if s > CLIP {
        s = CLIP;
    }
    s += BIAS;
    let mut exp = 7;
    let mut mask = 0x4000;
    while exp > 0 && (s & mask) == 0 {
        exp -= 1;
        mask >>= 1;
    }
    let mant = (s >> (exp + 3)) & 0x0F;
    // sign | exp << 4 | mant fits in 8 bits (sign 0x80, exp <= 7, mant <= 15).
    !((sign | (exp << 4) | mant) as u8)
}

/// Decodes one µ-law byte to a 16-bit sample.
pub fn decode(byte: u8) -> i16 {
    DECODE[usize::from(byte)]
}

/// Encodes a buffer of samples, one byte per sample.
pub fn encode_slice(samples: &[i16]) -> Vec<u8> {
    samples.iter().map(|&s| encode(s)).collect()
}

/// Decodes a buffer of µ-law bytes, one sample per byte.
pub fn decode_slice(bytes: &[u8]) -> Vec<i16> {
    bytes.iter().map(|&b| decode(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    /// Every "PCM in → µ-law → decodes to" row of PROTOCOLS §8 holds for this encoder/decoder.
    #[test]
    fn known_pairs_table() {
        let rows: &[(&[i16], u8, i16)] = &[
            (&[0, 1, 2, 3], 0xFF, 0),
            (&[-1, -2], 0x7F, 0),
            (&[4, 8], 0xFE, 8),
            (&[-8], 0x7E, -8),
            (&[16], 0xFD, 16),
            (&[100], 0xF2, 104),
            (&[-100], 0x72, -104),
            (&[1000], 0xCE, 988),
            (&[-1000], 0x4E, -988),
            (&[4096], 0xAF, 4092),
            (&[8000], 0xA0, 7932),
            (&[16000], 0x90, 15996),
            (&[-16000], 0x10, -15996),
            (&[32124, 32767], 0x80, 32124),
            (&[-32767, -32768], 0x00, -32124),
        ];
        for (inputs, byte, decoded) in rows {
            for &input in *inputs {
                assert_eq!(encode(input), *byte, "encode({input})");
            }
            assert_eq!(decode(*byte), *decoded, "decode({byte:#04x})");
        }
    }

    /// The decode-only anchors of PROTOCOLS §8 hold.
    #[test]
    fn decode_anchors() {
        let anchors: &[(u8, i16)] = &[
            (0x00, -32124),
            (0x01, -31100),
            (0x0F, -16764),
            (0x10, -15996),
            (0x70, -120),
            (0x7E, -8),
            (0x7F, 0),
            (0x80, 32124),
            (0x81, 31100),
            (0x8F, 16764),
            (0xEF, 132),
            (0xF0, 120),
            (0xFE, 8),
            (0xFF, 0),
        ];
        for &(byte, sample) in anchors {
            assert_eq!(decode(byte), sample, "decode({byte:#04x})");
        }
    }

    /// Decoding then re-encoding any byte returns it (except 0x7F, the second code for 0),
    /// and the table is odd-symmetric: the sign bit only flips the sign.
    #[test]
    fn table_round_trips_and_is_symmetric() {
        for byte in 0..=255u8 {
            let sample = decode(byte);
            if byte != 0x7F {
                assert_eq!(encode(sample), byte, "round trip of {byte:#04x}");
            }
            assert_eq!(decode(byte ^ 0x80), -sample, "symmetry of {byte:#04x}");
        }
    }

    /// 20 ms of digital silence is 160 × 0xFF, whose base64 is the §8 fixture.
    #[test]
    fn silence_fixture() {
        let frame = encode_slice(&[0i16; 160]);
        assert!(frame.iter().all(|&b| b == SILENCE));
        let expected = format!("{}/w==", "////".repeat(53));
        assert_eq!(expected.len(), 216);
        assert_eq!(STANDARD.encode(&frame), expected);
    }

    /// The 1 kHz sine fixture of §8 encodes to `FF A9 A0 A9 FF 29 20 29` = `/6mgqf8pICk=`.
    #[test]
    fn sine_fixture() {
        let samples = [0, 5657, 8000, 5657, 0, -5657, -8000, -5657];
        let bytes = encode_slice(&samples);
        assert_eq!(bytes, [0xFF, 0xA9, 0xA0, 0xA9, 0xFF, 0x29, 0x20, 0x29]);
        assert_eq!(STANDARD.encode(&bytes), "/6mgqf8pICk=");
        let decoded = decode_slice(&bytes);
        assert_eq!(decoded.len(), samples.len());
        assert_eq!(decoded[2], 7932);
    }

    /// Encoding is monotonic in the magnitude: louder input never decodes quieter.
    #[test]
    fn encoding_is_monotonic() {
        let mut previous = i16::MIN;
        for sample in (0..=i16::MAX).step_by(7) {
            let decoded = decode(encode(sample));
            assert!(
                decoded >= previous,
                "{sample} decoded to {decoded} < {previous}"
            );
            assert!((i32::from(decoded) - i32::from(sample.min(32124))).abs() <= 1024);
            previous = decoded;
        }
    }
}
