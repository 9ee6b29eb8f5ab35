//! End to end: every service as its own process, real NATS and Redis, the vendor stand-ins
//! and the scripted caller (ring 3, issue 6). Each test places whole calls.

use std::time::Duration;

use sb_replay::CallLog;
use sb_runtime::redis::session::Role;
use sb_schemas::{Body, CallSid, EndReason};
use sb_sim::caller::{CallReport, CallerConfig, Scenario, place_call};
use sb_stack::{
    Stack, StackConfig,
    demo::{BOT_REPLIES, CALLER_LINES},
    stack::{AUTH_TOKEN, PUBLIC_URL, Service, ensure_built},
};
use sb_tests::eventually;

pub(crate) async fn stack(configure: impl FnOnce(&mut StackConfig)) -> (Stack, tempfile::TempDir) {
    let t = std::time::Instant::now();
    ensure_built(false).expect("the service binaries build");
    eprintln!("e2e: binaries ready after {:?}", t.elapsed());
    // SB_KEEP_RUN=1 keeps the logs of the stack's processes after the test.
    let dir = tempfile::Builder::new()
        .prefix("sb-e2e-")
        .disable_cleanup(std::env::var_os("SB_KEEP_RUN").is_some())
        .tempdir()
        .unwrap();
    eprintln!("e2e: logs in {}", dir.path().display());
    let mut config = StackConfig::new(dir.path());
    config.stt_script = CALLER_LINES.map(String::from).to_vec();
    config.llm_replies = BOT_REPLIES.map(String::from).to_vec();
    configure(&mut config);
    let stack = Stack::start(config).await.expect("the stack starts");
    eprintln!("e2e: stack up after {:?}", t.elapsed());
    (stack, dir)
}

pub(crate) async fn call(stack: &Stack, scenario: &str) -> CallReport {
    let scenario = Scenario::from_toml(scenario).unwrap();
    place_call(stack.caller_config(), &scenario)
        .await
        .expect("the call completes")
}

/// The call's events once `end` is stored (the stages finish just after the hang-up).
pub(crate) async fn log_after_end(stack: &Stack, sid: &CallSid) -> CallLog {
    let js = stack.jetstream().await.unwrap();
    eventually("the end event", Duration::from_secs(20), || async {
        let log = CallLog::load(&js, sid).await.ok()?;
        let ended = log.envelopes().any(|e| matches!(e.body, Body::End(_)));
        ended.then_some(log)
    })
    .await
    .unwrap()
}

fn sentences(log: &CallLog, turn: u32) -> Vec<(String, bool)> {
    log.envelopes()
        .filter(|e| e.turn == turn)
        .filter_map(|e| match &e.body {
            Body::Sentence(s) => Some((s.text.clone(), s.fallback)),
            _ => None,
        })
        .collect()
}

/// A call to the demo tenant: wait for the greeting, ask each question and wait for its
/// answer (the last wait `last_wait_ms`), hang up.
/// The subjects of the transcripts stored so far (`None` while `CALLS` cannot be read).
pub(crate) async fn transcript_subjects(
    js: &async_nats::jetstream::Context,
) -> Option<Vec<String>> {
    let stream = js.get_stream("CALLS").await.ok()?;
    let counts: std::collections::HashMap<String, usize> = futures::TryStreamExt::try_collect(
        stream
            .info_with_subjects("call.*.*.transcript")
            .await
            .ok()?,
    )
    .await
    .ok()?;
    Some(counts.into_keys().collect())
}

pub(crate) fn asking(questions: &[&str], last_wait_ms: u64) -> String {
    let mut toml = String::from("to = \"+15005550006\"\ntones = true\n");
    toml += "[[steps]]\nwait_for_bot = 20000\n";
    for (i, question) in questions.iter().enumerate() {
        let wait = if i + 1 == questions.len() {
            last_wait_ms
        } else {
            20_000
        };
        toml += &format!("[[steps]]\nsay = \"{question}\"\n[[steps]]\nwait_for_bot = {wait}\n");
    }
    toml + "[[steps]]\nhangup = true\n"
}

pub(crate) const CONVERSATION: &str = r#"
from = "+14155551234"
to = "+15005550006"
tones = true
[[steps]]
wait_for_bot = 20000
[[steps]]
say = "What are your opening hours?"
[[steps]]
wait_for_bot = 20000
[[steps]]
say = "Do you have any offers at the moment?"
[[steps]]
say = "Sorry, could you just email them to me?"
barge_in_after_ms = 1500
[[steps]]
wait_for_bot = 20000
[[steps]]
hangup = true
"#;

/// A whole conversation: the greeting is heard; each question's answer is heard, in
/// order; the barge-in makes the ingress send `clear` and no audio of the interrupted
/// answer plays afterwards; the session keeps the interrupted answer truncated; the
/// hang-up publishes `end` and shortens the session's TTL; every event of the call,
/// caller audio included, is in JetStream.
#[tokio::test]
async fn a_conversation_with_a_barge_in() {
    let (stack, _dir) = stack(|_| {}).await;
    let report = call(&stack, CONVERSATION).await;
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;

    // Greeting heard, then an answer to each question.
    assert!(
        report.turns[0].first_bot_audio_ms.is_some(),
        "greeting heard: {report}"
    );
    assert!(
        report.turns[1].voice_to_voice_ms.is_some(),
        "first answer heard: {report}"
    );
    assert!(
        report.turns[2].first_bot_audio_ms.is_some(),
        "second answer started: {report}"
    );
    assert!(
        report.turns[3].voice_to_voice_ms.is_some(),
        "reply after the barge-in heard: {report}"
    );
    assert_eq!(
        sentences(&log, 1)[0].0,
        "We're open from nine to five, Monday to Friday, and ten to two on Saturdays."
    );
    assert!(
        sentences(&log, 2)[0].0.starts_with("Yes!"),
        "{:?}",
        sentences(&log, 2)
    );
    assert!(
        report.protocol_errors.is_empty(),
        "{:?}",
        report.protocol_errors
    );

    // Barge-in: a clear, and nothing of turn 2 played after it.
    let barge = report.turns[3]
        .barge_in
        .as_ref()
        .expect("the caller barged in");
    let clear_ms = barge.clear_ms.expect("the ingress sent clear");
    let late: Vec<_> = report
        .marks
        .iter()
        .filter(|m| m.name.starts_with("2:") && m.echoed_ms > clear_ms && !m.cleared)
        .collect();
    assert!(
        late.is_empty(),
        "turn 2 audio played after the clear: {late:?}"
    );
    assert!(
        log.envelopes()
            .any(|e| e.turn == 2 && matches!(e.body, Body::BargeIn(_)))
    );

    // The session: the interrupted answer truncated to what was heard; TTL shortened.
    let redis = sb_runtime::redis::Redis::connect(
        &stack.redis.url,
        sb_runtime::redis::Keys::new(""),
        Duration::from_secs(1800),
    )
    .await
    .unwrap();
    let session = redis
        .session_load(&sid)
        .await
        .unwrap()
        .expect("session kept after the call");
    let interrupted = session
        .turns
        .iter()
        .find(|t| t.role == Role::Assistant && t.turn == 2)
        .expect("turn 2's answer is in the session");
    assert!(interrupted.interrupted, "{interrupted:?}");
    assert!(
        interrupted.text.len() < BOT_REPLIES[1].len(),
        "truncated: {interrupted:?}"
    );
    let mut raw = redis::Client::open(stack.redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(redis.keys().session(&sid))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "session TTL after the call: {ttl}");

    // Everything is in JetStream: webhook, start, every caller frame, the end.
    let count = |f: fn(&Body) -> bool| log.envelopes().filter(|e| f(&e.body)).count();
    assert_eq!(count(|b| matches!(b, Body::Webhook(_))), 1);
    assert_eq!(count(|b| matches!(b, Body::Start(_))), 1);
    let frames: u64 = log
        .envelopes()
        .map(|e| match &e.body {
            Body::Audio(a) => a.payload.0.len() as u64 / 160,
            _ => 0,
        })
        .sum();
    assert_eq!(frames, report.frames_sent, "every caller frame stored");
    assert!(count(|b| matches!(b, Body::Played(_))) >= 2);
    assert!(
        log.envelopes()
            .any(|e| matches!(&e.body, Body::End(end) if end.reason == EndReason::Stop))
    );
    stack.stop().await;
}

/// With the LLM answering 503 to everything, the caller still hears an answer: the
/// tenant's fallback phrase.
#[tokio::test]
async fn a_dead_llm_gives_the_fallback_phrase() {
    let (stack, _dir) =
        stack(|c| c.llm_args = vec!["--unavailable-share".into(), "1".into()]).await;
    let report = call(&stack, &asking(&["What are your opening hours?"], 20_000)).await;
    assert!(
        report.turns[1].voice_to_voice_ms.is_some(),
        "an answer was heard: {report}"
    );
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;
    let said = sentences(&log, 1);
    assert_eq!(
        said,
        [(
            "Sorry, I didn't catch that. Could you say it again?".to_owned(),
            true
        )]
    );
    stack.stop().await;
}

/// The stt worker is killed (SIGKILL, no hand-off) after the first answer; a new worker
/// takes the call over once the lease expires, and the next question is still answered.
#[tokio::test]
async fn a_killed_stt_worker_is_replaced_mid_call() {
    let (mut stack, _dir) = stack(|_| {}).await;
    let questions = [
        "What are your opening hours?",
        "Do you have any offers at the moment?",
    ];
    // The last answer waits out the lease expiry and the new worker's catch-up.
    let scenario = Scenario::from_toml(&asking(&questions, 40_000)).unwrap();
    let js = stack.jetstream().await.unwrap();
    let caller = CallerConfig::new(stack.ingress_url(), PUBLIC_URL, AUTH_TOKEN);
    let placed = tokio::spawn(async move { place_call(caller, &scenario).await });

    // As soon as the first question is transcribed, crash the only stt worker.
    let first = eventually("the first transcript", Duration::from_secs(30), || async {
        transcript_subjects(&js).await?.into_iter().next()
    })
    .await
    .unwrap();
    eprintln!("e2e: first transcript stored; crashing stt");
    stack.kill(Service::Stt, 0).await.unwrap();
    stack.start_replica(Service::Stt).await.unwrap();
    eprintln!("e2e: new stt worker ready");

    let report = placed.await.unwrap().expect("the call completes");
    assert!(first.contains(&report.call_sid));
    assert!(
        report.turns[2].voice_to_voice_ms.is_some(),
        "the question after the crash was answered: {report}"
    );
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;
    let transcripts: Vec<(u32, u64)> = log
        .envelopes()
        .filter_map(|e| match &e.body {
            Body::Transcript(t) => Some((e.turn, t.epoch)),
            _ => None,
        })
        .collect();
    assert_eq!(
        transcripts.len(),
        2,
        "each utterance transcribed once: {transcripts:?}"
    );
    assert_eq!(transcripts[1].0, 2);
    assert!(
        transcripts[1].1 >= 2,
        "the second came from the new owner: {transcripts:?}"
    );
    stack.stop().await;
}
