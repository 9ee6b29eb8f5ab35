//! End to end: a tenant's own tools (ring 3, issue 16). Every service as its own process,
//! real NATS and Redis, the LLM stand-in scripting the model's tool calls and the
//! tenant-server stand-in serving `acme`'s tools (`book_visit` answers after 600 ms, so
//! its filler is heard), checking the signature and recording each request.

use sb_replay::CallLog;
use sb_schemas::{Body, CallSid, ToolOutcome};
use serde_json::Value;

use crate::e2e::{asking, call, log_after_end, stack};

const BOOK_LINE: &str = "Can I book a visit on Friday afternoon?";
const BOOK: &str = r#"tool:book_visit {"day":"friday","time":"afternoon"}"#;
const BOOKED: &str = "You're booked for Friday at 3 pm. See you then!";
const FILLER: &str = "One moment while I check that.";
const FALLBACK: &str = "Sorry, I didn't catch that. Could you say it again?";
const HOURS: &str = "We're open nine to five.";

/// (text, last, fallback) of a turn's sentences.
fn sentences(log: &CallLog, turn: u32) -> Vec<(String, bool, bool)> {
    log.envelopes()
        .filter(|e| e.turn == turn)
        .filter_map(|e| match &e.body {
            Body::Sentence(s) => Some((s.text.clone(), s.last, s.fallback)),
            _ => None,
        })
        .collect()
}

fn tool_outcomes(log: &CallLog, turn: u32) -> Vec<ToolOutcome> {
    log.envelopes()
        .filter(|e| e.turn == turn)
        .filter_map(|e| match &e.body {
            Body::ToolResult(r) => Some(r.outcome),
            _ => None,
        })
        .collect()
}

/// Whether the caller's playback reached (not cleared) the end of sentences `0..count`
/// of `turn` (the ingress marks each sentence's end `{turn}:{sentence}`).
fn heard(report: &sb_sim::caller::CallReport, turn: u32, count: u32) -> bool {
    (0..count).all(|s| {
        let name = format!("{turn}:{s}");
        report.marks.iter().any(|m| m.name == name && !m.cleared)
    })
}

/// The tool requests the tenant server received (its webhooks left out).
async fn received(stack: &sb_stack::Stack) -> Vec<Value> {
    let all = sb_sim::tenant::fetch_received(&stack.tenant_server.url())
        .await
        .unwrap();
    all.into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/tools/")))
        .collect()
}

/// The model books a visit: the tenant server gets one signed request with the call's
/// numbers, the caller hears the filler and then the tenant's answer, and the call's log
/// holds the tool call and its result.
#[tokio::test]
async fn a_tool_call_reaches_the_tenant_signed_and_its_answer_is_heard() {
    let (stack, _dir) = stack(|c| {
        c.stt_script = vec![BOOK_LINE.into()];
        c.llm_replies = vec![BOOK.into()];
    })
    .await;
    let report = call(&stack, &asking(&[BOOK_LINE], 20_000)).await;
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;

    let received = received(&stack).await;
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    assert_eq!(request["path"], "/tools/book_visit");
    assert_eq!(request["signature"], "valid");
    assert_eq!(request["body"]["arguments"]["day"], "friday");
    let context = &request["body"]["call"];
    assert_eq!(context["tenant"], "acme");
    assert_eq!(context["call_sid"], sid.as_str());
    assert_eq!(context["direction"], "inbound");
    assert_eq!(context["from"], "+14155551234");
    assert_eq!(context["to"], "+15005550006");

    assert_eq!(tool_outcomes(&log, 1), [ToolOutcome::Ok]);
    let said = sentences(&log, 1);
    assert_eq!(said[0], (FILLER.to_owned(), false, false), "{said:?}");
    let answer: Vec<&str> = said[1..].iter().map(|s| s.0.as_str()).collect();
    assert_eq!(answer.join(" "), BOOKED, "{said:?}");
    assert!(said.last().unwrap().1, "the answer ends the turn");
    let count = u32::try_from(said.len()).unwrap();
    assert!(
        heard(&report, 1, count),
        "filler and answer played: {report}"
    );
    stack.stop().await;
}

/// The booking endpoint fails twice (500): the caller hears the fallback phrase, and the
/// next question is answered as usual.
#[tokio::test]
async fn a_failing_tool_speaks_the_fallback_and_the_call_goes_on() {
    let (stack, _dir) = stack(|c| {
        c.stt_script = vec![BOOK_LINE.into(), "What are your hours?".into()];
        c.llm_replies = vec![BOOK.into(), HOURS.into()];
        c.tenant_args = ["--fail", "book_visit=2", "--delay-ms", "book_visit=0"]
            .map(String::from)
            .to_vec();
    })
    .await;
    let report = call(
        &stack,
        &asking(&[BOOK_LINE, "What are your hours?"], 20_000),
    )
    .await;
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;
    assert_eq!(received(&stack).await.len(), 2, "one retry");
    assert_eq!(tool_outcomes(&log, 1), [ToolOutcome::Status]);
    assert_eq!(sentences(&log, 1), [(FALLBACK.to_owned(), true, true)]);
    assert!(report.turns[1].voice_to_voice_ms.is_some(), "{report}");
    assert_eq!(sentences(&log, 2), [(HOURS.to_owned(), true, false)]);
    assert!(report.turns[2].voice_to_voice_ms.is_some(), "{report}");
    stack.stop().await;
}

/// The caller talks over the filler while the tool runs: the tool's result is recorded
/// but its answer is never asked for nor said; the new question is answered.
#[tokio::test]
async fn a_barge_in_during_a_tool_call_drops_its_answer() {
    let (stack, _dir) = stack(|c| {
        c.stt_script = vec![BOOK_LINE.into(), "Never mind, what are your hours?".into()];
        c.llm_replies = vec![BOOK.into(), HOURS.into()];
        c.tenant_args = ["--delay-ms", "book_visit=2500"].map(String::from).to_vec();
    })
    .await;
    let scenario = format!(
        r#"
to = "+15005550006"
tones = true
[[steps]]
wait_for_bot = 20000
[[steps]]
say = "{BOOK_LINE}"
[[steps]]
say = "Never mind, what are your hours?"
barge_in_after_ms = 400
[[steps]]
wait_for_bot = 20000
[[steps]]
hangup = true
"#
    );
    let report = call(&stack, &scenario).await;
    let sid = CallSid::parse(&report.call_sid).unwrap();
    let log = log_after_end(&stack, &sid).await;
    assert!(
        log.envelopes()
            .any(|e| e.turn == 1 && matches!(e.body, Body::BargeIn(_))),
        "the caller barged in on turn 1"
    );
    assert_eq!(tool_outcomes(&log, 1), [ToolOutcome::Ok], "recorded");
    let said: Vec<String> = sentences(&log, 1).into_iter().map(|s| s.0).collect();
    assert!(!said.contains(&BOOKED.to_owned()), "{said:?}");
    assert_eq!(sentences(&log, 2), [(HOURS.to_owned(), true, false)]);
    let stats: Value = reqwest::get(format!("{}/sim/stats", stack.llm.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["completions"], 2,
        "the tool call and turn 2, no answer to turn 1"
    );
    stack.stop().await;
}
