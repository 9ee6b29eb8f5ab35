//! End to end: call webhooks (ring 3, issue 16). The local stack's tenants `acme` and
//! `globex` send their webhooks to the tenant-server stand-in (`/webhooks/acme`,
//! `/webhooks/globex`), which checks every signature and can fail or stall an endpoint;
//! the webhooks worker retries every 200 ms doubling (up to 2 s), each attempt 2 s at most.

use std::time::Duration;

use sb_schemas::CallSid;
use sb_tests::eventually;
use serde_json::Value;

use crate::e2e::{asking, call, stack};

fn schema() -> jsonschema::Validator {
    let path = sb_tests::workspace_root().join("docs/schemas/webhook.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

/// What `/webhooks/{tenant}` received of `event` for `sid`, in order; every body checked
/// against the documented schema.
async fn hooks(stack: &sb_stack::Stack, tenant: &str, event: &str, sid: &CallSid) -> Vec<Value> {
    let schema = schema();
    let received = sb_sim::tenant::fetch_received(&stack.tenant_server.url())
        .await
        .unwrap();
    let ours: Vec<Value> = received
        .into_iter()
        .filter(|r| {
            r["path"] == format!("/webhooks/{tenant}")
                && r["event"] == event
                && r["body"]["call_sid"] == sid.as_str()
        })
        .collect();
    for request in &ours {
        let errors: Vec<String> = schema
            .iter_errors(&request["body"])
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:?} in {}", request["body"]);
    }
    ours
}

/// Waits until `/webhooks/{tenant}` answered `event` of `sid` with a 2xx.
async fn delivered(
    stack: &sb_stack::Stack,
    tenant: &str,
    event: &str,
    sid: &CallSid,
) -> Vec<Value> {
    eventually("the webhook delivered", Duration::from_secs(30), || async {
        let got = hooks(stack, tenant, event, sid).await;
        got.iter().any(|r| r["status"] == 200).then_some(got)
    })
    .await
    .unwrap()
}

/// The endpoint fails the first two deliveries of each event: `call.started` and
/// `call.ended` each arrive three times with one delivery id and a valid signature, the
/// third answered 200. The report is the call as heard, with the right outcome.
#[tokio::test]
async fn call_ended_arrives_once_with_the_call_as_heard_after_two_failures() {
    const QUESTION: &str = "What are your opening hours?";
    const ANSWER: &str = "We're open nine to five.";
    let (stack, _dir) = stack(|c| {
        c.stt_script = vec![QUESTION.into()];
        c.llm_replies = vec![ANSWER.into()];
        c.tenant_args = ["--hook-fail", "acme=2"].map(String::from).to_vec();
    })
    .await;
    let report = call(&stack, &asking(&[QUESTION], 20_000)).await;
    assert!(report.turns[1].voice_to_voice_ms.is_some(), "{report}");
    let sid = CallSid::parse(&report.call_sid).unwrap();

    for event in ["call.started", "call.ended"] {
        let got = delivered(&stack, "acme", event, &sid).await;
        let statuses: Vec<&Value> = got.iter().map(|r| &r["status"]).collect();
        assert_eq!(
            statuses,
            [500, 500, 200],
            "{event}: two failures, then one delivery"
        );
        let ids: Vec<&Value> = got.iter().map(|r| &r["idempotency_key"]).collect();
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "{event}: one delivery id: {ids:?}"
        );
        assert_eq!(got[0]["body"]["id"], *ids[0]);
        assert!(got.iter().all(|r| r["signature"] == "valid"), "{event}");
    }
    let ended = delivered(&stack, "acme", "call.ended", &sid).await;
    let data = &ended[2]["body"]["data"];
    assert_eq!(data["outcome"], "completed");
    assert_eq!(data["end_reason"], "stop");
    assert_eq!(data["direction"], "inbound");
    assert_eq!(data["to"], "+15005550006");
    assert_eq!(data["turns"], 1);
    let lines: Vec<(String, String)> = data["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["speaker"].as_str().unwrap().to_owned(),
                l["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (
                "agent".to_owned(),
                "Thanks for calling Acme. How can I help you today?".to_owned()
            ),
            ("caller".to_owned(), QUESTION.to_owned()),
            ("agent".to_owned(), ANSWER.to_owned()),
        ],
        "the call as heard"
    );
    assert!(data["latency_ms"]["p50"].as_f64().is_some(), "{data}");
    stack.stop().await;
}

/// `acme`'s endpoint stalls past the attempt timeout on every delivery; `globex`'s calls
/// go on and its webhooks arrive while `acme`'s are still being retried.
#[tokio::test]
async fn a_dead_endpoint_delays_only_its_own_tenant() {
    const QUESTION: &str = "What are your opening hours?";
    let (stack, _dir) = stack(|c| {
        c.stt_script = vec![QUESTION.into()];
        c.llm_replies = vec!["We're open nine to five.".into()];
        c.tenant_args = ["--hook-delay-ms", "acme=60000"].map(String::from).to_vec();
    })
    .await;
    let acme = call(&stack, &asking(&[QUESTION], 20_000)).await;
    let globex_call = asking(&[QUESTION], 20_000).replace("+15005550006", "+15005550007");
    let globex = call(&stack, &globex_call).await;
    assert!(globex.turns[1].voice_to_voice_ms.is_some(), "{globex}");
    let (acme_sid, globex_sid) = (
        CallSid::parse(&acme.call_sid).unwrap(),
        CallSid::parse(&globex.call_sid).unwrap(),
    );
    let got = delivered(&stack, "globex", "call.ended", &globex_sid).await;
    assert_eq!(
        got.len(),
        1,
        "globex's report delivered at the first attempt"
    );
    let stalled = hooks(&stack, "acme", "call.ended", &acme_sid).await;
    assert!(!stalled.is_empty(), "acme's endpoint was tried");
    assert!(
        stalled.iter().all(|r| r["answered_us"] == 0),
        "acme's endpoint never answered in time: {stalled:?}"
    );
    stack.stop().await;
}
