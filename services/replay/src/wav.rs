//! A stereo WAV of the call from the event log: caller left, bot right.
//!
//! Caller frames sit at their frame number × 20 ms. Bot audio of each turn starts when its
//! first chunk was stored (relative to the first caller frame), in (sentence, chunk) order,
//! never overlapping the previous turn, and is cut where a barge-in interrupted it — an
//! approximation of what the ingress played (the scripted caller records the exact one).
//! Consumes a [`CallLog`]; produces WAV bytes. State: none.

use std::collections::BTreeMap;

use sb_audio::{FRAME_BYTES, FRAME_MS, SAMPLE_RATE, mulaw};
use sb_schemas::Body;

use crate::CallLog;

/// Renders the call as a 16-bit stereo WAV at 8 kHz.
pub fn render(log: &CallLog) -> Vec<u8> {
    let rate = u64::from(SAMPLE_RATE);
    let start = log.start_micros();
    let offset = |at: u64| (at.saturating_sub(start) * rate / 1_000_000) as usize;
    let mut caller: Vec<i16> = Vec::new();
    let mut first_frame_at: Option<u64> = None;
    let mut bot: BTreeMap<u32, BotTurn<'_>> = BTreeMap::new();
    let mut cut: BTreeMap<u32, u64> = BTreeMap::new();
    for e in log.envelopes() {
        match &e.body {
            Body::Audio(a) => {
                let frame_us = u64::from(FRAME_MS) * 1_000;
                let zero = *first_frame_at.get_or_insert(e.at - a.seq * frame_us);
                // One sample per µ-law byte.
                let at = offset(zero) + (a.seq as usize) * FRAME_BYTES;
                place(&mut caller, at, &mulaw::decode_slice(&a.payload.0));
            }
            Body::TtsChunk(c) => {
                let turn = bot.entry(e.turn).or_insert(BotTurn {
                    first_at: e.at,
                    chunks: BTreeMap::new(),
                });
                turn.first_at = turn.first_at.min(e.at);
                turn.chunks.insert((c.sentence, c.chunk), &c.payload.0);
            }
            Body::BargeIn(_) => {
                cut.entry(e.turn).or_insert(e.at);
            }
            _ => {}
        }
    }
    let mut right: Vec<i16> = Vec::new();
    for (turn, BotTurn { first_at, chunks }) in bot {
        let begin = offset(first_at).max(right.len());
        let mut samples: Vec<i16> = chunks
            .values()
            .flat_map(|b| mulaw::decode_slice(b))
            .collect();
        if let Some(&cut_at) = cut.get(&turn) {
            samples.truncate(offset(cut_at).saturating_sub(begin));
        }
        place(&mut right, begin, &samples);
    }
    let len = caller.len().max(right.len());
    caller.resize(len, 0);
    right.resize(len, 0);
    sb_audio::wav::stereo(&caller, &right, SAMPLE_RATE)
}

/// One turn's bot audio: when its first chunk was stored, and its chunks by (sentence, chunk).
struct BotTurn<'a> {
    first_at: u64,
    chunks: BTreeMap<(u32, u32), &'a [u8]>,
}

fn place(track: &mut Vec<i16>, at: usize, samples: &[i16]) {
    if track.len() < at + samples.len() {
        track.resize(at + samples.len(), 0);
    }
    track[at..at + samples.len()].copy_from_slice(samples);
}
