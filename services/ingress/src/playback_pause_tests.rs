use std::time::Duration;

use bytes::Bytes;
use sb_audio::FRAME_BYTES;
use sb_schemas::{CutSentence, Mulaw, TtsChunk};
use tokio::time::Instant;

use crate::playback::tests::Rig;

/// Loud µ-law (a word) and digital silence (a gap between words).
const LOUD: u8 = 0x10;
const QUIET: u8 = 0xFF;

/// One sentence of three words with 60 ms gaps: 200 ms, 300 ms, 400 ms of voice; 1020 ms.
fn sentence_audio() -> Vec<u8> {
    let mut audio = Vec::new();
    for (i, ms) in [200, 300, 400].into_iter().enumerate() {
        if i > 0 {
            audio.extend(std::iter::repeat_n(QUIET, 60 * 8));
        }
        // Each word its own loud byte, so a test can tell them apart.
        audio.extend(std::iter::repeat_n(LOUD + i as u8, ms * 8));
    }
    audio
}

/// The sentence as chunks of `chunk_ms`, the last one marked.
fn push_sentence(rig: &mut Rig, turn: u32, sentence: u32, audio: &[u8], chunk_ms: usize) {
    let pieces: Vec<&[u8]> = audio.chunks(chunk_ms * 8).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        rig.push(
            turn,
            TtsChunk {
                sentence,
                chunk: i as u32,
                last,
                turn_last: last,
                payload: Mulaw(Bytes::copy_from_slice(piece)),
            },
        )
        .unwrap();
    }
}

/// Plays until `ms` after the start, then lets the clock reach it.
async fn play_to(rig: &mut Rig, ms: u64) {
    rig.play_until(Duration::from_millis(ms)).await;
    tokio::time::sleep_until(rig.start + Duration::from_millis(ms)).await;
}

/// A pause mid-word holds everything (time passes, chunks arrive, nothing is sent); the
/// resume replays from the start of the word the pause cut, so the caller hears every
/// word of the sentence, and the sentence's mark follows its end.
#[tokio::test(start_paused = true)]
async fn a_resume_replays_from_the_start_of_the_cut_word() {
    let mut rig = Rig::new();
    let audio = sentence_audio();
    push_sentence(&mut rig, 1, 0, &audio, 400);
    play_to(&mut rig, 400).await;
    // 400 ms heard: inside the second word (260..560 ms).
    let paused = rig.playback.pause(Instant::now()).expect("playing");
    assert_eq!((paused.cut.turn, paused.cut.sentence), (1, 0));
    assert_eq!(paused.cut.heard, 400 * 8);
    assert_eq!(paused.cut.total, Some(audio.len()));
    assert_eq!(paused.resume_from, 260 * 8, "the second word's start");
    let sent_before = rig.sent.media.len();
    let heard_before = 400 * 8;

    // Paused: a second sentence arrives, a second passes, nothing goes out.
    push_sentence(&mut rig, 1, 1, &[LOUD; 1600], 200);
    play_to(&mut rig, 1400).await;
    assert_eq!(
        rig.sent.media.len(),
        sent_before,
        "nothing sent while paused"
    );
    assert_eq!(rig.playback.next_wake(), None);

    let resume = rig.playback.resume_playing(Instant::now()).unwrap();
    assert_eq!((resume.turn, resume.sentence), (1, 0));
    assert_eq!(resume.offset_ms, 260);
    assert_eq!(resume.paused_ms, 1000);
    play_to(&mut rig, 4000).await;
    let after: Vec<u8> = rig.sent.media[sent_before..]
        .iter()
        .flat_map(|(_, a, _)| a.to_vec())
        .collect();
    // From the cut word's start to the end of the sentence, then the next sentence.
    assert_eq!(after[..audio.len() - 260 * 8], audio[260 * 8..]);
    assert_eq!(after[audio.len() - 260 * 8..], [LOUD; 1600]);
    assert!(
        260 * 8 <= heard_before,
        "what was heard before and what plays after cover the sentence"
    );
    assert_eq!(rig.sent.mark_names(), ["1:0", "1:1"]);
}

/// A barge-in after a pause cuts where the pause did: the sentences before it were heard,
/// and the cut sentence's heard and whole length let the agent keep the words heard.
#[tokio::test(start_paused = true)]
async fn a_barge_in_after_a_pause_reports_the_cut_sentence() {
    let mut rig = Rig::new();
    push_sentence(&mut rig, 2, 0, &[QUIET; 800], 100);
    let audio = sentence_audio();
    push_sentence(&mut rig, 2, 1, &audio, 400);
    play_to(&mut rig, 100 + 700).await;
    let paused = rig.playback.pause(Instant::now()).unwrap();
    assert_eq!((paused.cut.sentence, paused.cut.heard), (1, 700 * 8));
    tokio::time::advance(Duration::from_millis(500)).await;
    let cut = rig.playback.barge_in(Instant::now()).unwrap();
    assert_eq!(cut.turn, 2);
    assert_eq!(cut.sentences_heard, 1);
    assert_eq!(
        cut.cut,
        Some(CutSentence {
            heard_ms: 700,
            sentence_ms: 1020
        })
    );
    assert!(rig.playback.paused().is_none());
    assert_eq!(rig.playback.next_wake(), None, "the cut turn is stale");
}

/// What Twilio still buffers (the lead) was not heard: the cut point is the pacing clock's,
/// not what was sent; a cut with no quiet frame before it resumes at the cut itself.
#[tokio::test(start_paused = true)]
async fn the_cut_point_leaves_out_what_twilio_still_buffers() {
    let mut rig = Rig::new();
    push_sentence(&mut rig, 0, 0, &[LOUD; 16_000], 400);
    play_to(&mut rig, 1000).await;
    let sent: usize = rig.sent.media.iter().map(|(_, a, _)| a.len()).sum();
    assert!(sent > 1000 * 8, "the lead is sent ahead");
    let point = rig.playback.cut_point(Instant::now()).unwrap();
    assert_eq!(point.heard, 1000 * 8);
    let paused = rig.playback.pause(Instant::now()).unwrap();
    assert_eq!(paused.resume_from, 1000 * 8, "no word start within reach");
    assert_eq!(paused.resume_from % FRAME_BYTES, 0);
    assert!(rig.playback.pause(Instant::now()).is_none(), "paused once");
}

/// Nothing playing, nothing to pause.
#[tokio::test(start_paused = true)]
async fn no_pause_without_bot_audio() {
    let mut rig = Rig::new();
    assert!(rig.playback.pause(Instant::now()).is_none());
    push_sentence(&mut rig, 0, 0, &[LOUD; 800], 100);
    play_to(&mut rig, 5000).await;
    assert!(rig.playback.pause(Instant::now()).is_none(), "finished");
}
