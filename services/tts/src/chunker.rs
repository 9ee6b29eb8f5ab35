//! Cutting audio into the chunks published on `audio.{t}.{sid}.out`.
//!
//! Consumes µ-law bytes in pieces of any size (a provider's body reads, or a whole cached
//! sentence); produces chunks that are whole 20 ms frames (multiples of 160 bytes): the
//! first as soon as one frame is there (so playback starts early), later ones of
//! `chunk_bytes`, and at the end the tail padded with µ-law silence (possibly empty).
//! State: the bytes not yet cut, for one sentence.

use bytes::{Bytes, BytesMut};
use sb_audio::FRAME_BYTES;

/// µ-law silence (0 decodes from `0xFF`).
const SILENCE: u8 = 0xFF;

#[derive(Debug)]
pub struct Chunker {
    buf: BytesMut,
    size: usize,
    sent_any: bool,
}

impl Chunker {
    /// Chunks of `chunk_bytes`, rounded down to whole frames (at least one frame).
    pub fn new(chunk_bytes: usize) -> Self {
        let size = (chunk_bytes / FRAME_BYTES).max(1) * FRAME_BYTES;
        Self {
            buf: BytesMut::new(),
            size,
            sent_any: false,
        }
    }

    /// Adds audio; returns the chunks now complete.
    pub fn push(&mut self, audio: &[u8]) -> Vec<Bytes> {
        self.buf.extend_from_slice(audio);
        let mut out = Vec::new();
        if !self.sent_any && self.buf.len() >= FRAME_BYTES {
            let frames = (self.buf.len() / FRAME_BYTES) * FRAME_BYTES;
            out.push(self.buf.split_to(frames.min(self.size)).freeze());
            self.sent_any = true;
        }
        while self.buf.len() >= self.size {
            out.push(self.buf.split_to(self.size).freeze());
        }
        out
    }

    /// The rest, padded with silence to whole frames (empty when nothing is left).
    pub fn finish(&mut self) -> Bytes {
        let rest = self.buf.len() % FRAME_BYTES;
        if rest != 0 {
            self.buf
                .resize(self.buf.len() + FRAME_BYTES - rest, SILENCE);
        }
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (chunk size, pieces in, chunk lengths out incl. the final tail).
    #[test]
    fn chunk_table() {
        let cases: &[(usize, &[usize], &[usize])] = &[
            // The first chunk leaves as soon as one frame is there.
            (1600, &[100, 100], &[160, 160]),
            (1600, &[160], &[160, 0]),
            (1600, &[800, 800, 800], &[800, 1600, 0]),
            (1600, &[5000], &[1600, 1600, 1600, 320]),
            (1600, &[0], &[0]),
            (1600, &[], &[0]),
            (800, &[799, 1], &[640, 160]),
            // Sizes that are not whole frames are rounded down; tiny ones become one frame.
            (1000, &[2000], &[960, 960, 160]),
            (10, &[400], &[160, 160, 160]),
        ];
        for (size, pieces, expected) in cases {
            let mut chunker = Chunker::new(*size);
            let mut lengths = Vec::new();
            let mut total = 0;
            for piece in *pieces {
                total += piece;
                lengths.extend(chunker.push(&vec![0x55; *piece]).iter().map(Bytes::len));
            }
            let tail = chunker.finish();
            lengths.push(tail.len());
            assert_eq!(lengths, *expected, "size {size}, pieces {pieces:?}");
            assert!(lengths.iter().all(|l| l % FRAME_BYTES == 0));
            assert!(lengths.iter().sum::<usize>() >= total);
        }
    }

    /// The audio comes out unchanged and in order; only the tail gets silence.
    #[test]
    fn bytes_are_preserved() {
        let audio: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut chunker = Chunker::new(320);
        let mut out = Vec::new();
        for piece in audio.chunks(77) {
            for chunk in chunker.push(piece) {
                out.extend_from_slice(&chunk);
            }
        }
        out.extend_from_slice(&chunker.finish());
        assert_eq!(&out[..1000], &audio[..]);
        assert!(out[1000..].iter().all(|&b| b == SILENCE));
        assert_eq!(out.len(), 1120);
    }
}
