//! Turn-taking on the socket, on paused time: the caller's voice (real audio through the
//! neural detector) pauses the bot within the tenant's minimum plus a frame; qualifying
//! words make the pause a barge-in that keeps the words heard; a backchannel or a cough
//! resumes the bot from the cut word, so every word of the sentence is heard; `speech`
//! mode barges in at the pause.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::line::{Line, is_clear, until};
use sb_ingress::Outgoing;
use sb_schemas::{BargeInTrigger, Body, Kind, Mulaw, Partial, TtsChunk};
use sb_twilio::OutboundMessage;
use sb_twilio::media::parse_outbound;
use tokio::time::Instant;

/// The tenants' default (`turn_taking.min_interruption_ms`).
const MIN_INTERRUPTION: Duration = Duration::from_millis(250);
const FALSE_INTERRUPTION: Duration = Duration::from_millis(1500);
const FRAME: Duration = Duration::from_millis(20);

/// The bot's sentence: 16 words of loud audio, 80 ms of silence between them; 6.32 s.
fn bot_sentence() -> Vec<u8> {
    let mut audio = Vec::new();
    for word in 0..16u8 {
        if word > 0 {
            audio.extend(std::iter::repeat_n(0xFF, 80 * 8));
        }
        audio.extend(std::iter::repeat_n(0x10 + word, 320 * 8));
    }
    audio
}

/// Delivers `audio` as turn `turn`'s only sentence, in 400 ms chunks.
fn deliver_sentence(line: &Line, turn: u32, audio: &[u8]) {
    let pieces: Vec<&[u8]> = audio.chunks(3200).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        line.deliver(
            turn,
            Body::TtsChunk(TtsChunk {
                sentence: 0,
                chunk: i as u32,
                last,
                turn_last: last,
                payload: Mulaw(Bytes::copy_from_slice(piece)),
            }),
        );
    }
}

/// Caller audio: speech-like voice for `text`, as 20 ms µ-law frames.
fn voice(text: &str) -> Vec<Vec<u8>> {
    let samples = sb_audio::synth::speechlike(text);
    sb_audio::mulaw::encode_slice(&samples)
        .chunks(160)
        .map(|frame| {
            let mut frame = frame.to_vec();
            frame.resize(160, sb_audio::mulaw::SILENCE);
            frame
        })
        .collect()
}

/// What went to Twilio, with when.
#[derive(Default)]
struct Heard {
    out: Vec<(Instant, OutboundMessage)>,
}

impl Heard {
    /// Takes what the ingress has sent so far.
    fn drain(&mut self, line: &mut Line) {
        while let Ok(Outgoing::Text(text)) = line.from_ingress.try_recv() {
            self.out
                .push((Instant::now(), parse_outbound(&text).unwrap()));
        }
    }

    fn clears(&self) -> Vec<Instant> {
        self.out
            .iter()
            .filter(|(_, m)| is_clear(m))
            .map(|(at, _)| *at)
            .collect()
    }

    /// Bot audio sent after `from`.
    fn audio_after(&self, from: Instant) -> Vec<u8> {
        let after: Vec<_> = self
            .out
            .iter()
            .filter(|(at, _)| *at > from)
            .cloned()
            .collect();
        common::line::media_bytes(&after)
    }
}

/// Plays the caller's `frames` in real time (one per 20 ms), then `silence` of silence,
/// collecting what the ingress sends. Returns when the first voiced frame went out.
async fn speak(
    line: &mut Line,
    heard: &mut Heard,
    frames: &[Vec<u8>],
    silence: Duration,
) -> Instant {
    let onset = Instant::now();
    let quiet = vec![sb_audio::mulaw::SILENCE; 160];
    let silent_frames = (silence.as_millis() / FRAME.as_millis()) as usize;
    for frame in frames
        .iter()
        .chain(std::iter::repeat_n(&quiet, silent_frames))
    {
        line.media(frame);
        // The socket task handles the frame at this instant (time stands still while a
        // task can run), then the caller's next frame is 20 ms later.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        heard.drain(line);
        tokio::time::sleep(FRAME).await;
    }
    onset
}

/// Lets the bot play for `span` (the caller silent), collecting what is sent.
async fn bot_plays(line: &mut Line, heard: &mut Heard, span: Duration) {
    let frames = (span.as_millis() / FRAME.as_millis()) as usize;
    speak(
        line,
        heard,
        &vec![vec![sb_audio::mulaw::SILENCE; 160]; frames],
        Duration::ZERO,
    )
    .await;
}

/// Words mode: the caller's voice over the bot clears within the minimum plus one frame
/// of its onset; then two real words make it a barge-in whose `bargein` says how much of
/// the cut sentence was heard; the pause marker comes and goes.
#[tokio::test(start_paused = true)]
async fn words_mode_pauses_at_once_and_words_make_it_a_barge_in() {
    let mut line = Line::open(41, "acme");
    line.start().await;
    let mut heard = Heard::default();
    deliver_sentence(&line, 1, &bot_sentence());
    bot_plays(&mut line, &mut heard, Duration::from_millis(1000)).await;
    assert!(heard.clears().is_empty());

    let onset = speak(
        &mut line,
        &mut heard,
        &voice("wait, stop that please"),
        Duration::ZERO,
    )
    .await;
    let clears = heard.clears();
    assert_eq!(clears.len(), 1, "one clear for the pause");
    let latency = clears[0].duration_since(onset);
    assert!(
        latency <= MIN_INTERRUPTION + FRAME,
        "cleared {latency:?} after the onset"
    );
    assert_eq!(line.backend.paused(&line.sid), Some(1), "the stt is told");
    assert!(
        line.backend.of_kind(Kind::BargeIn).is_empty(),
        "paused, not decided"
    );

    line.deliver(
        1,
        Body::Partial(Partial {
            epoch: 1,
            text: "wait stop".into(),
        }),
    );
    let backend = line.backend.clone();
    until(|| !backend.of_kind(Kind::BargeIn).is_empty()).await;
    let Body::BargeIn(barge) = &backend.of_kind(Kind::BargeIn)[0].body else {
        panic!()
    };
    assert_eq!(barge.trigger, BargeInTrigger::Words);
    assert_eq!(barge.sentences_heard, 0);
    let cut = barge.cut.expect("the cut sentence");
    assert_eq!(cut.sentence_ms, 16 * 320 + 15 * 80);
    // The caller heard from the start until the pause (the lead sent ahead was not heard).
    let heard_ms = clears[0].duration_since(onset).as_millis() as u32 + 1000;
    assert!(
        cut.heard_ms.abs_diff(heard_ms) <= 40,
        "heard {} ms, about {heard_ms} expected",
        cut.heard_ms
    );
    until(|| backend.paused(&line.sid).is_none()).await;
    // The turn is over: nothing more of it plays.
    tokio::time::sleep(FALSE_INTERRUPTION * 2).await;
    heard.drain(&mut line);
    assert!(heard.audio_after(clears[0]).is_empty());
    assert!(line.backend.of_kind(Kind::Resumed).is_empty());
    line.close().await;
}

/// A backchannel ("uh-huh", not qualifying) or a cough (a voice and no words at all)
/// pauses the bot; once the voice has stopped for `false_interruption_ms` the bot resumes
/// from the start of the word it was cut in, to the end of the sentence: the caller hears
/// every word. `resumed` is published; no barge-in.
#[tokio::test(start_paused = true)]
async fn a_backchannel_or_a_cough_resumes_from_the_cut_word() {
    for (n, partial) in [(42, Some("uh-huh")), (43, None)] {
        let mut line = Line::open(n, "acme");
        line.start().await;
        let mut heard = Heard::default();
        let sentence = bot_sentence();
        deliver_sentence(&line, 1, &sentence);
        bot_plays(&mut line, &mut heard, Duration::from_millis(1500)).await;

        let backchannel = voice("uh-huh okay");
        let onset = speak(&mut line, &mut heard, &backchannel, Duration::ZERO).await;
        if let Some(text) = partial {
            line.deliver(
                1,
                Body::Partial(Partial {
                    epoch: 1,
                    text: text.into(),
                }),
            );
        }
        let clears = heard.clears();
        assert_eq!(clears.len(), 1, "{partial:?}: one clear");
        assert!(clears[0].duration_since(onset) <= MIN_INTERRUPTION + FRAME);
        let voice_end = Instant::now();
        // Silence: not yet resumed just before the false-interruption time…
        speak(
            &mut line,
            &mut heard,
            &[],
            FALSE_INTERRUPTION - Duration::from_millis(200),
        )
        .await;
        assert!(
            line.backend.of_kind(Kind::Resumed).is_empty(),
            "{partial:?}: too early"
        );
        // …resumed after it.
        speak(&mut line, &mut heard, &[], Duration::from_millis(400)).await;
        let backend = line.backend.clone();
        until(|| !backend.of_kind(Kind::Resumed).is_empty()).await;
        let resumed = &backend.of_kind(Kind::Resumed)[0];
        let Body::Resumed(resume) = &resumed.body else {
            panic!()
        };
        assert_eq!(resumed.turn, 1);
        assert_eq!(resume.sentence, 0);
        let paused_for = Duration::from_millis(u64::from(resume.paused_ms));
        assert!(
            paused_for
                >= voice_end.duration_since(clears[0]) + FALSE_INTERRUPTION
                    - Duration::from_millis(200),
            "paused {paused_for:?}"
        );
        let from = resume.offset_ms as usize * 8;
        let before: Vec<_> = heard
            .out
            .iter()
            .filter(|(at, _)| *at < clears[0])
            .cloned()
            .collect();
        let sent_before_clear = common::line::media_bytes(&before).len();
        assert!(from <= sent_before_clear, "resumes at or before the cut");
        assert_eq!(sentence[from - 1], 0xFF, "a word starts where it resumes");
        bot_plays(&mut line, &mut heard, Duration::from_secs(8)).await;
        let after = heard.audio_after(clears[0]);
        assert_eq!(
            after,
            sentence[from..],
            "{partial:?}: the rest of the sentence, every word"
        );
        assert!(backend.of_kind(Kind::BargeIn).is_empty());
        assert_eq!(backend.paused(&line.sid), None);
        line.close().await;
    }
}

/// Speech mode: the same voice is a barge-in at the pause, within the minimum plus a
/// frame; the bot does not resume.
#[tokio::test(start_paused = true)]
async fn speech_mode_barges_in_at_the_minimum() {
    let mut line = Line::open(44, "globex");
    line.start().await;
    let mut heard = Heard::default();
    deliver_sentence(&line, 1, &bot_sentence());
    bot_plays(&mut line, &mut heard, Duration::from_millis(600)).await;
    let onset = speak(
        &mut line,
        &mut heard,
        &voice("uh-huh okay"),
        Duration::from_secs(3),
    )
    .await;
    let clears = heard.clears();
    assert_eq!(clears.len(), 1);
    assert!(clears[0].duration_since(onset) <= MIN_INTERRUPTION + FRAME);
    let backend = line.backend.clone();
    until(|| !backend.of_kind(Kind::BargeIn).is_empty()).await;
    let Body::BargeIn(barge) = &backend.of_kind(Kind::BargeIn)[0].body else {
        panic!()
    };
    assert_eq!(barge.trigger, BargeInTrigger::Speech);
    assert!(backend.of_kind(Kind::Resumed).is_empty());
    assert!(heard.audio_after(clears[0]).is_empty());
    line.close().await;
}

/// Line noise and clicks over the bot never pause it.
#[tokio::test(start_paused = true)]
async fn line_noise_does_not_pause_the_bot() {
    let mut line = Line::open(45, "acme");
    line.start().await;
    let mut heard = Heard::default();
    deliver_sentence(&line, 1, &bot_sentence());
    let mut seed = 11u32;
    let noise: Vec<i16> = (0..8000 * 3)
        .map(|i| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let n = ((seed >> 16) as i16 as i32 * 300 / 32768) as i16;
            if i % 4000 < 8 {
                n.saturating_mul(30)
            } else {
                n
            }
        })
        .collect();
    let frames: Vec<Vec<u8>> = sb_audio::mulaw::encode_slice(&noise)
        .chunks(160)
        .map(<[u8]>::to_vec)
        .collect();
    speak(&mut line, &mut heard, &frames, Duration::ZERO).await;
    assert!(heard.clears().is_empty(), "noise paused the bot");
    line.close().await;
}
