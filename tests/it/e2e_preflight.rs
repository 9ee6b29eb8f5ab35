//! Preemptive generation end to end (ring 3, ARCHITECTURE §2g): every service as its own
//! process, the stack's default stand-ins. The Deepgram stand-in sends an interim with the
//! whole line once the caller's voice paused (before the endpointing's final): the stt
//! publishes a `preflight` on a new turn, the agent answers it, the ingress holds its audio.
//! When the final has the same words, its transcript comes on the same turn: one LLM
//! request, the answer heard, the conversation stored once. When the final differs (a
//! stand-in line `interim|final`), the transcript takes a newer turn: the preflight's
//! answer is discarded unheard and the final's answer is the one the caller hears. A
//! tenant can turn it off.

use std::time::Duration;

use sb_replay::CallLog;
use sb_runtime::redis::session::{Role, Session};
use sb_schemas::{Body, CallSid};
use sb_sim::caller::CallReport;
use serde_json::Value;

use crate::e2e::{asking, call, log_after_end, stack};

const QUESTION: &str = "What are your opening hours?";

/// (turn, text) of every event of one kind the closure picks out.
fn texts(log: &CallLog, pick: impl Fn(&Body) -> Option<&String>) -> Vec<(u32, String)> {
    log.envelopes()
        .filter_map(|e| pick(&e.body).map(|text| (e.turn, text.clone())))
        .collect()
}

fn preflights(log: &CallLog) -> Vec<(u32, String)> {
    texts(log, |b| match b {
        Body::Preflight(p) => Some(&p.text),
        _ => None,
    })
}

fn transcripts(log: &CallLog) -> Vec<(u32, String)> {
    texts(log, |b| match b {
        Body::Transcript(t) => Some(&t.text),
        _ => None,
    })
}

/// Turns whose sentences the caller's playback reached (marks `{turn}:{sentence}` echoed
/// without a `clear`).
fn heard_turns(report: &CallReport) -> Vec<u32> {
    let mut turns: Vec<u32> = report
        .marks
        .iter()
        .filter(|m| !m.cleared)
        .filter_map(|m| m.name.split(':').next()?.parse().ok())
        .collect();
    turns.dedup();
    turns
}

async fn completions(stack: &sb_stack::Stack) -> u64 {
    let stats: Value = reqwest::get(format!("{}/sim/stats", stack.llm.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["completions"].as_u64().unwrap()
}

async fn session(stack: &sb_stack::Stack, sid: &CallSid) -> Session {
    let redis = sb_runtime::redis::Redis::connect(
        &stack.redis.url,
        sb_runtime::redis::Keys::new(""),
        Duration::from_secs(1800),
    )
    .await
    .unwrap();
    redis.session_load(sid).await.unwrap().unwrap()
}

/// The stable interim has the final's words: `preflight` and `transcript` on the same
/// turn, one LLM request, the answer heard (turn 1's sentences, played), and the session
/// holds the caller's final words and the answer once.
#[tokio::test]
async fn a_preflight_with_the_final_words_is_the_answer() {
    let (stack, _dir) = stack(|_| {}).await;
    let report = call(&stack, &asking(&[QUESTION], 20_000)).await;
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;

    assert_eq!(preflights(&log), [(1, QUESTION.to_owned())]);
    assert_eq!(transcripts(&log), [(1, QUESTION.to_owned())]);
    assert_eq!(completions(&stack).await, 1, "the preflight's request only");
    assert!(
        report.turns[1].voice_to_voice_ms.is_some(),
        "the answer was heard: {report}"
    );
    assert_eq!(heard_turns(&report), [0, 1], "{:?}", report.marks);
    let turns: Vec<(Role, u32)> = session(&stack, &sid)
        .await
        .turns
        .iter()
        .map(|t| (t.role, t.turn))
        .collect();
    assert_eq!(
        turns,
        [(Role::Assistant, 0), (Role::User, 1), (Role::Assistant, 1)]
    );
    let user = &session(&stack, &sid).await.turns[1];
    assert_eq!(user.text, QUESTION);
    stack.stop().await;
}

/// The caller's last words change the question (the stand-in's interims say less than
/// its final): the preflight's turn 1 is superseded by the transcript's turn 2, nothing of
/// turn 1 is played, turn 2's answer is heard, and the conversation holds turn 2 only.
#[tokio::test]
async fn a_preflight_the_final_contradicts_is_discarded() {
    let said = "What are your opening hours on Sunday?";
    let (stack, _dir) = stack(|config| {
        config.stt_script = vec![format!("What are your opening|{said}")];
    })
    .await;
    let report = call(&stack, &asking(&[said], 20_000)).await;
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;

    assert_eq!(preflights(&log), [(1, "What are your opening".to_owned())]);
    assert_eq!(transcripts(&log), [(2, said.to_owned())]);
    assert!(
        report.turns[1].voice_to_voice_ms.is_some(),
        "the final's answer was heard: {report}"
    );
    assert_eq!(heard_turns(&report), [0, 2], "{:?}", report.marks);
    assert!(
        !log.envelopes()
            .any(|e| e.turn == 1 && matches!(e.body, Body::Played(_))),
        "nothing of the discarded turn was played"
    );
    // The preflight may or may not have reached the model before it was superseded.
    let requests = completions(&stack).await;
    assert!((1..=2).contains(&requests), "{requests}");
    let turns: Vec<(Role, u32, String)> = session(&stack, &sid)
        .await
        .turns
        .into_iter()
        .filter(|t| t.turn > 0)
        .map(|t| (t.role, t.turn, t.text))
        .collect();
    assert_eq!(turns.len(), 2, "{turns:?}");
    assert_eq!(turns[0], (Role::User, 2, said.to_owned()));
    assert_eq!((turns[1].0, turns[1].1), (Role::Assistant, 2));
    stack.stop().await;
}

/// A tenant with `turn_taking.preemptive = false`: the stt publishes no preflight, the
/// answer waits for the transcript and is heard as before.
#[tokio::test]
async fn a_tenant_can_turn_preflights_off() {
    let (stack, _dir) = stack(|config| config.preemptive = false).await;
    let report = call(&stack, &asking(&[QUESTION], 20_000)).await;
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;
    assert_eq!(preflights(&log), []);
    assert_eq!(transcripts(&log), [(1, QUESTION.to_owned())]);
    assert_eq!(completions(&stack).await, 1);
    assert_eq!(heard_turns(&report), [0, 1], "{:?}", report.marks);
    stack.stop().await;
}
