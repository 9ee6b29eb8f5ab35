use std::time::Duration;

use bytes::Bytes;
use sb_audio::FRAME_BYTES;
use sb_schemas::{Mulaw, TtsChunk};
use tokio::time::Instant;

use crate::playback::tests::Rig;

/// Chunk `chunk` of sentence 0 of `turn`: `frames` 20 ms frames of the byte `turn`.
fn chunk(turn: u32, chunk: u32, frames: usize, last: bool) -> TtsChunk {
    TtsChunk {
        sentence: 0,
        chunk,
        last,
        turn_last: last,
        payload: Mulaw(Bytes::from(vec![turn as u8; frames * FRAME_BYTES])),
    }
}

/// The turns whose audio was sent, in order (one entry per run of frames).
fn turns_heard(rig: &Rig) -> Vec<u8> {
    let mut heard: Vec<u8> = rig
        .sent
        .media
        .iter()
        .map(|(_, audio, _)| audio[0])
        .collect();
    heard.dedup();
    heard
}

/// A held turn sends nothing and does not count as playing (a barge-in has nothing to
/// cut); its transcript plays it from its start, paced, after the turn before it.
#[tokio::test(start_paused = true)]
async fn held_audio_waits_for_its_transcript() {
    let mut rig = Rig::new();
    rig.push(1, chunk(1, 0, 10, true)).unwrap();
    assert_eq!(rig.playback.hold(2), 0);
    assert_eq!(rig.playback.held_turn(), Some(2));
    // Out of order, and one twice.
    for piece in [chunk(2, 1, 10, true), chunk(2, 0, 10, false)] {
        assert_eq!(rig.push(2, piece), Ok(0));
    }
    assert_eq!(
        rig.push(2, chunk(2, 0, 10, false)),
        Err(super::Dropped::Duplicate)
    );
    rig.play_until(Duration::from_secs(3)).await;
    tokio::time::sleep_until(rig.start + Duration::from_secs(3)).await;
    assert_eq!(turns_heard(&rig), [1]);
    assert_eq!(rig.sent.mark_names(), ["1:0"]);
    assert_eq!(rig.playback.playing_turn(Instant::now()), None);
    assert!(rig.playback.barge_in(Instant::now()).is_none());

    let released = rig.playback.release(2, Instant::now());
    assert_eq!((released.played, released.discarded), (2, 0));
    assert_eq!(rig.playback.held_turn(), None);
    let from = Instant::now();
    rig.play_until(Duration::from_secs(6)).await;
    assert_eq!(turns_heard(&rig), [1, 2]);
    assert_eq!(rig.sent.mark_names(), ["1:0", "2:0"]);
    assert_eq!(rig.sent.audio().len(), 30 * FRAME_BYTES);
    // Paced from the release: 20 frames take 400 ms, less the lead.
    let last_frame = rig.sent.media.last().map(|(at, _, _)| *at).unwrap();
    let released_at = from.duration_since(rig.start).as_millis() as u64;
    assert!(
        last_frame >= released_at + 300,
        "{last_frame} {released_at}"
    );
    // Later chunks of the released turn play as usual.
    assert_eq!(
        rig.push(2, chunk(2, 2, 1, true)),
        Err(super::Dropped::Duplicate)
    );
}

/// The final differed, so its transcript came on a newer turn: the held turn is
/// discarded unheard, and the newer turn's audio plays. A newer turn's audio arriving
/// first supersedes a held turn the same way.
#[tokio::test(start_paused = true)]
async fn a_newer_turn_discards_the_held_one() {
    let mut rig = Rig::new();
    rig.playback.hold(1);
    rig.push(1, chunk(1, 0, 5, true)).unwrap();
    let released = rig.playback.release(2, Instant::now());
    assert_eq!((released.played, released.discarded), (0, 1));
    assert_eq!(rig.playback.held_turn(), None);
    rig.push(2, chunk(2, 0, 5, true)).unwrap();
    rig.play_until(Duration::from_secs(2)).await;
    assert_eq!(turns_heard(&rig), [2]);

    let mut rig = Rig::new();
    rig.playback.hold(3);
    rig.push(3, chunk(3, 0, 5, false)).unwrap();
    rig.push(3, chunk(3, 1, 5, true)).unwrap();
    assert_eq!(rig.push(4, chunk(4, 0, 5, true)), Ok(2));
    // A newer preflight supersedes the held one too.
    assert_eq!(rig.playback.hold(5), 0);
    rig.push(5, chunk(5, 0, 5, true)).unwrap();
    assert_eq!(rig.playback.hold(6), 1);
    rig.play_until(Duration::from_secs(2)).await;
    assert_eq!(turns_heard(&rig), [4]);
}

/// A preflight that arrives after its turn started playing, or after its transcript (the
/// two travel on different subjects), or for a turn cut by a barge-in, holds nothing.
#[tokio::test(start_paused = true)]
async fn a_late_preflight_holds_nothing() {
    let mut rig = Rig::new();
    rig.push(1, chunk(1, 0, 5, true)).unwrap();
    rig.playback.hold(1);
    assert_eq!(rig.playback.held_turn(), None);
    rig.playback.release(2, Instant::now());
    rig.playback.hold(2);
    assert_eq!(rig.playback.held_turn(), None);
    rig.push(3, chunk(3, 0, 50, true)).unwrap();
    rig.play_until(Duration::from_millis(200)).await;
    rig.playback.barge_in(Instant::now()).unwrap();
    rig.playback.hold(3);
    assert_eq!(rig.playback.held_turn(), None);
}
