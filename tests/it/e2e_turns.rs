//! Turn-taking end to end (ring 3, issue 18): every service as its own process, the sim
//! caller speaking over the bot. A backchannel ("Uh-huh.", transcribed by the Deepgram
//! stand-in) and a cough (a voice the stand-in hears no words in) each pause the bot and
//! then resume it from the cut word: the caller hears every word of both answers, no turn
//! starts for either, the log holds a `resumed` per pause and no `bargein`. A real
//! interruption (words) keeps, in the session, the assistant's words up to the cut.

use std::time::Duration;

use sb_runtime::redis::session::Role;
use sb_schemas::{Body, CallSid, Kind};

use crate::e2e::{call, log_after_end, stack};

const FIRST_QUESTION: &str = "What are your opening hours?";
const SECOND_QUESTION: &str = "And where exactly are you?";
const FIRST_ANSWER: &str = "We are open from nine in the morning until five in the evening on \
    weekdays, and from ten until two on Saturdays, closed on Sundays and public holidays.";
const SECOND_ANSWER: &str = "You will find us on the corner of Main Street and Harbour Road, \
    right across from the old railway station, next to the big blue bakery.";

const SCENARIO: &str = r#"
from = "+14155551234"
to = "+15005550006"
tones = true
[[steps]]
wait_for_bot = 20000
[[steps]]
say = "What are your opening hours?"
[[steps]]
say = "Uh-huh."
barge_in_after_ms = 1200
[[steps]]
pause_ms = 2600
[[steps]]
wait_for_bot = 20000
[[steps]]
say = "And where exactly are you?"
[[steps]]
say = "ahem hmm"
barge_in_after_ms = 1200
[[steps]]
pause_ms = 2600
[[steps]]
wait_for_bot = 20000
[[steps]]
hangup = true
"#;

#[tokio::test]
async fn a_backchannel_and_a_cough_pause_the_bot_and_it_resumes() {
    let (stack, _dir) = stack(|config| {
        config.stt_script = [FIRST_QUESTION, "Uh-huh.", SECOND_QUESTION, ""]
            .map(String::from)
            .to_vec();
        config.llm_replies = [FIRST_ANSWER, SECOND_ANSWER].map(String::from).to_vec();
    })
    .await;
    let report = call(&stack, SCENARIO).await;
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;
    let of = |kind: Kind| {
        log.envelopes()
            .filter(|e| e.kind() == kind)
            .cloned()
            .collect::<Vec<_>>()
    };

    // Both pauses: a clear each, heard by the caller while the bot spoke.
    let paused: Vec<_> = report
        .turns
        .iter()
        .filter_map(|t| t.barge_in.as_ref())
        .collect();
    assert_eq!(paused.len(), 2, "{report}");
    assert!(paused.iter().all(|b| b.clear_ms.is_some()), "{report}");

    // Each resumed its own answer; nothing was a barge-in or a turn.
    let resumed = of(Kind::Resumed);
    assert_eq!(
        resumed.iter().map(|e| e.turn).collect::<Vec<_>>(),
        [1, 2],
        "{resumed:?}"
    );
    assert!(of(Kind::BargeIn).is_empty(), "{:?}", of(Kind::BargeIn));
    let transcripts: Vec<(u32, String)> = of(Kind::Transcript)
        .into_iter()
        .filter_map(|e| match e.body {
            Body::Transcript(t) => Some((e.turn, t.text)),
            _ => None,
        })
        .collect();
    assert_eq!(
        transcripts,
        [(1, FIRST_QUESTION.into()), (2, SECOND_QUESTION.into())],
        "the backchannel and the cough start no turn"
    );

    // Every word heard: what the caller played covers all the bot audio of the call (the
    // audio before each pause, and from the cut word's start to the end after it).
    let bot_bytes: u64 = of(Kind::TtsChunk)
        .iter()
        .map(|e| match &e.body {
            Body::TtsChunk(c) => c.payload.0.len() as u64,
            _ => 0,
        })
        .sum();
    assert!(
        report.bot_bytes_played >= bot_bytes,
        "played {} of {bot_bytes} bytes of bot audio: {report}",
        report.bot_bytes_played
    );

    // The session's answers are whole: nothing was interrupted.
    let redis = sb_runtime::redis::Redis::connect(
        &stack.redis.url,
        sb_runtime::redis::Keys::new(""),
        Duration::from_secs(1800),
    )
    .await
    .unwrap();
    let session = redis.session_load(&sid).await.unwrap().unwrap();
    let answers: Vec<_> = session
        .turns
        .iter()
        .filter(|t| t.role == Role::Assistant && t.turn > 0)
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers.iter().all(|t| !t.interrupted), "{answers:?}");
    stack.stop().await;
}
