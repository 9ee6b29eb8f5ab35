//! Calls that survive faults (issue 15), against the whole stack: every service a process,
//! real NATS and Redis, the stand-ins and the scripted caller.

use std::time::Duration;

use futures::TryStreamExt as _;
use sb_schemas::{Body, CallSid};
use sb_sim::caller::{CallerConfig, Scenario, place_call};
use sb_stack::{
    Stack,
    stack::{AUTH_TOKEN, PUBLIC_URL},
};
use sb_tests::eventually;

use crate::e2e::{asking, log_after_end, stack};

/// Three questions, and what the LLM stand-in answers to the n-th of the conversation.
const QUESTIONS: [&str; 3] = [
    "What are your opening hours?",
    "Can I pay by card?",
    "Where are you located?",
];
const REPLIES: [&str; 3] = [
    "We open at nine.",
    "Yes, every card works.",
    "On the main square.",
];

/// How many transcripts `CALLS` holds (one call runs at a time here).
async fn transcripts(js: &async_nats::jetstream::Context) -> Option<usize> {
    let stream = js.get_stream("CALLS").await.ok()?;
    let counts: Vec<(String, usize)> = stream
        .info_with_subjects("call.*.*.transcript")
        .await
        .ok()?
        .try_collect()
        .await
        .ok()?;
    Some(counts.iter().map(|(_, n)| n).sum())
}

/// The sum of a counter over every service's `/metrics`.
pub(crate) async fn counter_total(stack: &Stack, name: &str) -> f64 {
    let http = reqwest::Client::new();
    let mut total = 0.0;
    for (_, addr) in stack.service_addrs() {
        let Ok(response) = http.get(format!("http://{addr}/metrics")).send().await else {
            continue;
        };
        let text = response.text().await.unwrap_or_default();
        total += text
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

/// Redis restarts empty in the middle of a call: the session is rebuilt from the call's
/// events, so every later question is answered in order (the LLM stand-in answers by how
/// many answers the history holds: a lost history would repeat the first answer), turn
/// numbers keep rising, no answer is dropped as a duplicate, and the rebuild is counted.
#[tokio::test]
async fn redis_restarted_empty_mid_call_loses_no_turn() {
    let (mut stack, _dir) = stack(|c| {
        c.stt_script = QUESTIONS.map(String::from).to_vec();
        c.llm_replies = REPLIES.map(String::from).to_vec();
    })
    .await;
    let js = stack.jetstream().await.unwrap();
    let scenario = Scenario::from_toml(&asking(&QUESTIONS, 20_000)).unwrap();
    let config = CallerConfig::new(stack.ingress_url(), PUBLIC_URL, AUTH_TOKEN);
    let caller = tokio::spawn(async move { place_call(config, &scenario).await });

    eventually("the first question", Duration::from_secs(60), || async {
        (transcripts(&js).await? >= 1).then_some(())
    })
    .await
    .unwrap();
    stack.redis.restart().await.unwrap();

    let report = caller.await.unwrap().expect("the call completes");
    for (i, turn) in report.turns.iter().enumerate() {
        assert!(
            turn.first_bot_audio_ms.is_some(),
            "turn {i} unanswered: {report}"
        );
    }
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;
    let mut numbered: Vec<u32> = log
        .envelopes()
        .filter(|e| matches!(e.body, Body::Transcript(_)))
        .map(|e| e.turn)
        .collect();
    numbered.sort_unstable();
    assert_eq!(
        numbered,
        [1, 2, 3],
        "one transcript per question, numbered on"
    );
    for (turn, reply) in (1..).zip(REPLIES) {
        let first = log.envelopes().find_map(|e| match &e.body {
            Body::Sentence(s) if e.turn == turn && s.index == 0 => Some(s.text.clone()),
            _ => None,
        });
        assert_eq!(
            first.as_deref(),
            Some(reply),
            "the answer to question {turn}"
        );
    }
    let dropped = counter_total(
        &stack,
        "switchboard_ingress_dropped_chunks_total{reason=\"duplicate\"",
    )
    .await;
    assert_eq!(dropped, 0.0, "no answer dropped as a duplicate");
    let rebuilt = counter_total(&stack, "switchboard_session_rebuilt_total").await;
    assert!(rebuilt >= 1.0, "a rebuild was counted: {rebuilt}");
    stack.stop().await;
}

/// A bot-audio chunk lost between the tts and the ingress (dropped on receipt by the
/// ingress' fault setting) is read back from the `AUDIO` stream: the caller hears every
/// byte the tts stored, and the repair is counted.
#[tokio::test]
async fn a_lost_bot_audio_chunk_is_recovered() {
    let (stack, _dir) = stack(|c| {
        c.stt_script = QUESTIONS.map(String::from).to_vec();
        c.llm_replies = REPLIES.map(String::from).to_vec();
        // Turn 1's first sentence, its second chunk (the first is one frame, cut early).
        c.service_env
            .push(("SB_FAULT_DROP_BOT_CHUNKS".into(), "1:0:1".into()));
    })
    .await;
    let report = crate::e2e::call(&stack, &asking(&QUESTIONS[..1], 20_000)).await;
    assert!(report.turns[1].first_bot_audio_ms.is_some(), "{report}");
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;
    let bytes: u64 = log
        .envelopes()
        .map(|e| match &e.body {
            Body::TtsChunk(c) => c.payload.0.len() as u64,
            _ => 0,
        })
        .sum();
    assert!(
        log.envelopes().any(|e| matches!(&e.body,
            Body::TtsChunk(c) if e.turn == 1 && c.sentence == 0 && c.chunk == 1)),
        "the dropped chunk exists"
    );
    assert_eq!(
        report.bot_bytes_received, bytes,
        "every stored byte heard: {report}"
    );
    let fetched = counter_total(
        &stack,
        "switchboard_ingress_gap_repairs_total{outcome=\"fetched\"",
    )
    .await;
    assert!(fetched >= 1.0, "the repair was counted: {fetched}");
    stack.stop().await;
}
