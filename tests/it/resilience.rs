//! Calls that survive faults (issue 15), against the whole stack: every service a process,
//! real NATS and Redis, the stand-ins and the scripted caller.

use std::time::Duration;

use futures::TryStreamExt as _;
use sb_schemas::{Body, CallSid};
use sb_sim::caller::{CallReport, CallerConfig, EndedBy, Scenario, place_call};
use sb_stack::{
    Stack,
    stack::{AUTH_TOKEN, PUBLIC_URL, Service},
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
    stored_calls(js, "transcript").await
}

/// The `kind` events stored on CALLS, every call.
async fn stored_calls(js: &async_nats::jetstream::Context, kind: &str) -> Option<usize> {
    let stream = js.get_stream("CALLS").await.ok()?;
    let counts: Vec<(String, usize)> = stream
        .info_with_subjects(format!("call.*.*.{kind}"))
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

/// How many messages `stream` holds on subjects matching `filter`.
async fn stored(js: &async_nats::jetstream::Context, stream: &str, filter: &str) -> Option<usize> {
    let stream = js.get_stream(stream).await.ok()?;
    let counts: Vec<(String, usize)> = stream
        .info_with_subjects(filter)
        .await
        .ok()?
        .try_collect()
        .await
        .ok()?;
    Some(counts.iter().map(|(_, n)| n).sum())
}

/// The ingress replica serving a call now (its active-calls gauge is 1).
async fn serving_replica(stack: &Stack) -> Option<usize> {
    let http = reqwest::Client::new();
    for (i, replica) in stack.replicas(Service::Ingress).iter().enumerate() {
        let url = format!("http://{}/metrics", replica.addr);
        let text = http.get(url).send().await.ok()?.text().await.ok()?;
        let active = text
            .lines()
            .find(|l| l.starts_with("switchboard_ingress_active_calls "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if active == Some(1.0) {
            return Some(i);
        }
    }
    None
}

/// A call on a stack with two ingress replicas, in the middle of its first, long answer
/// (its transcript is in and three chunks of the answer are stored): the stack, the
/// caller's task, the replica serving the call and the logs' directory.
async fn mid_answer() -> (
    Stack,
    tokio::task::JoinHandle<Result<CallReport, sb_sim::caller::CallerError>>,
    usize,
    tempfile::TempDir,
) {
    let replies = [
        "We open at nine in the morning and close at five in the evening, every day of the \
         week but Sunday, when we rest.",
        "Yes, every card works.",
    ];
    let (stack, dir) = stack(|c| {
        c.replicas.ingress = 2;
        c.stt_script = QUESTIONS.map(String::from).to_vec();
        c.llm_replies = replies.map(String::from).to_vec();
    })
    .await;
    let js = stack.jetstream().await.unwrap();
    let scenario = Scenario::from_toml(&asking(&QUESTIONS[..2], 20_000)).unwrap();
    let config = stack.caller_config();
    let caller = tokio::spawn(async move { place_call(config, &scenario).await });
    // The first answer starts on its preflight (preemptive answers), before the transcript
    // is stored: count the bot audio from there, or the whole answer may be stored already.
    eventually("the first question", Duration::from_secs(60), || async {
        let heard = stored_calls(&js, "preflight").await? + transcripts(&js).await?;
        (heard >= 1).then_some(())
    })
    .await
    .unwrap();
    let before = stored(&js, "AUDIO", "audio.*.*.out").await.unwrap();
    eventually("the answer's audio", Duration::from_secs(30), || async {
        (stored(&js, "AUDIO", "audio.*.*.out").await? >= before + 3).then_some(())
    })
    .await
    .unwrap();
    let serving = eventually("the serving ingress", Duration::from_secs(10), || {
        serving_replica(&stack)
    })
    .await
    .unwrap();
    (stack, caller, serving, dir)
}

/// After the call ended: both questions were answered, every sentence of `turns` was heard
/// to its end (its mark echoed, not cleared), and the call has one `end`, its hang-up.
async fn heard_whole_and_ended_once(stack: &Stack, report: &CallReport, turns: &[u32]) {
    for (i, turn) in report.turns.iter().enumerate() {
        assert!(
            turn.first_bot_audio_ms.is_some(),
            "turn {i} unanswered: {report}"
        );
    }
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(stack, &sid).await;
    for &turn in turns {
        let sentences: Vec<u32> = log
            .envelopes()
            .filter_map(|e| match &e.body {
                Body::Sentence(s) if e.turn == turn => Some(s.index),
                _ => None,
            })
            .collect();
        assert!(!sentences.is_empty(), "turn {turn} was answered");
        for index in sentences {
            let name = format!("{turn}:{index}");
            assert!(
                report.marks.iter().any(|m| m.name == name && !m.cleared),
                "sentence {name} was not heard to its end: {report}"
            );
        }
    }
    let ends: Vec<_> = log
        .envelopes()
        .filter_map(|e| match &e.body {
            Body::End(end) => Some(end.reason),
            _ => None,
        })
        .collect();
    assert_eq!(ends, [sb_schemas::EndReason::Stop], "one end, the hang-up");
}

/// The ingress serving a call is drained (SIGTERM) while the bot is mid-sentence: the
/// call moves to the other replica through a Twilio redirect, the caller hears the rest of
/// the sentence after a gap of at most 500 ms and the next question is answered; the call
/// has one `end`, its hang-up.
#[tokio::test]
async fn an_ingress_drained_mid_sentence_moves_its_call() {
    let (mut stack, caller, serving, _dir) = mid_answer().await;
    let exited = stack
        .stop_replica(Service::Ingress, serving, Duration::from_secs(15))
        .await
        .unwrap();
    assert!(exited, "the drained ingress exited once its call moved");

    let report = caller.await.unwrap().expect("the call completes");
    eprintln!(
        "migration: longest gap {} ms, late frames {}",
        report.longest_gap_ms, report.late_frames
    );
    assert_eq!(report.redirects, 1, "{report}");
    assert!(
        report.longest_gap_ms <= 500,
        "the caller heard {} ms of silence mid-sentence: {report}",
        report.longest_gap_ms
    );
    heard_whole_and_ended_once(&stack, &report, &[1]).await;
    let resumed = counter_total(
        &stack,
        "switchboard_ingress_migrations_total{outcome=\"resumed\"",
    )
    .await;
    assert_eq!(resumed, 1.0);
    stack.stop().await;
}

/// An ingress SIGKILLed mid-answer: the caller's stream drops, Twilio requests the
/// stream's `<Connect action>`, another replica connects the call anew (a `lost` handoff)
/// and resumes it from where the log says it stood: the answer goes on from the sentence
/// the caller was in, the next question is answered, and the call ends once, by the
/// caller's hang-up.
#[tokio::test]
async fn an_ingress_killed_mid_call_reconnects_its_call() {
    let (mut stack, caller, serving, _dir) = mid_answer().await;
    stack.kill(Service::Ingress, serving).await.unwrap();

    let report = caller.await.unwrap().expect("the call completes");
    eprintln!(
        "reconnect: longest gap {} ms, late frames {}",
        report.longest_gap_ms, report.late_frames
    );
    assert_eq!(report.reconnects, 1, "{report}");
    assert_eq!(report.ended_by, EndedBy::Caller, "{report}");
    heard_whole_and_ended_once(&stack, &report, &[1, 2]).await;
    let reconnected = counter_total(
        &stack,
        "switchboard_ingress_migrations_total{outcome=\"reconnected\"",
    )
    .await;
    assert_eq!(reconnected, 1.0);
    stack.stop().await;
}
