//! End to end: live tenant configuration (ring 3, issue 16). Every service as its own
//! process, real NATS (the `TENANTS` bucket) and Redis; the console's admin API changes
//! `acme`'s system prompt while a call is live. The LLM stand-in answers every turn with
//! `Persona: {system}`, so each answer says which prompt it was given.

use std::time::Duration;

use futures::StreamExt as _;
use sb_schemas::{Body, CallSid, decode};
use sb_stack::Stack;
use sb_tests::eventually;
use serde_json::Value;

use crate::e2e::{asking, call, log_after_end, stack};

const OLD: &str = "You are Ada";
const NEW: &str = "You are Bob";
const FIRST: &str = "What are your opening hours?";
const SECOND: &str = "And on Sundays?";

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// `PUT /v1/admin/tenants/acme` with acme's current table, `field` set to `value`.
async fn change_acme(stack: &Stack, field: &str, value: &str) -> reqwest::Response {
    let url = format!("{}/v1/admin/tenants/acme", stack.console_url());
    let token = sb_stack::stack::OPERATOR_TOKEN;
    let doc: Value = client()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut tenant = doc["tenant"].clone();
    tenant[field] = Value::from(value);
    client()
        .put(&url)
        .bearer_auth(token)
        .json(&tenant)
        .send()
        .await
        .unwrap()
}

/// acme's prompt replaced through the admin API; the new revision.
async fn set_prompt(stack: &Stack, prompt: &str) -> u64 {
    let answer = change_acme(stack, "system_prompt", prompt).await;
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    answer.json::<Value>().await.unwrap()["revision"]
        .as_u64()
        .unwrap()
}

/// Everything the bot said in `turn`, joined.
fn said(log: &sb_replay::CallLog, turn: u32) -> String {
    log.envelopes()
        .filter(|e| e.turn == turn)
        .filter_map(|e| match &e.body {
            Body::Sentence(s) => Some(s.text.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A prompt changed through the admin API: the live call keeps the prompt it started with
/// for its next turn, the next call gets the new one; an invalid change is refused naming
/// the field, and stores nothing.
#[tokio::test]
async fn a_prompt_changed_live_applies_to_the_next_call_while_a_live_call_keeps_its_own() {
    let (stack, _dir) = stack(|c| {
        c.stt_script = vec![FIRST.into(), SECOND.into()];
        c.llm_replies = vec!["Persona: {system}".into()];
    })
    .await;
    let first = set_prompt(&stack, OLD).await;
    sb_stack::live_tenant::applied(&stack, first).await.unwrap();

    // The live call: a question, an answer, a pause (the change happens here), a question.
    let js = stack.jetstream().await.unwrap();
    let mut sentences = js.client().subscribe("call.acme.*.sentence").await.unwrap();
    let scenario = asking(&[FIRST], 20_000).replace(
        "[[steps]]\nhangup = true\n",
        &format!(
            "[[steps]]\npause_ms = 5000\n[[steps]]\nsay = \"{SECOND}\"\n\
             [[steps]]\nwait_for_bot = 20000\n[[steps]]\nhangup = true\n"
        ),
    );
    let live = {
        let config = stack.caller_config();
        let scenario = sb_sim::caller::Scenario::from_toml(&scenario).unwrap();
        tokio::spawn(async move { sb_sim::caller::place_call(config, &scenario).await })
    };
    let sid = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), sentences.next())
            .await
            .expect("the first answer is spoken")
            .unwrap();
        let event = decode(&message.payload).unwrap();
        if event.turn == 1 {
            break event.call_sid;
        }
    };
    let second = set_prompt(&stack, NEW).await;
    assert!(second > first);
    sb_stack::live_tenant::applied(&stack, second)
        .await
        .unwrap();
    // The change must land before the live call's second question, or this test proves
    // nothing: the caller pauses 5 s for it.
    // With preemptive generation the answer can be heard before its transcript is stored.
    let subject = format!("call.acme.{sid}.transcript");
    let transcripts = eventually("the first transcript", Duration::from_secs(10), || async {
        js.get_stream("CALLS")
            .await
            .ok()?
            .get_last_raw_message_by_subject(&subject)
            .await
            .ok()
    })
    .await
    .unwrap();
    assert_eq!(
        decode(&transcripts.payload).unwrap().turn,
        1,
        "the second question came before the change was applied (a slow machine?)"
    );

    let report = live.await.unwrap().expect("the live call completes");
    assert_eq!(CallSid::parse(&report.call_sid).unwrap(), sid);
    let log = log_after_end(&stack, &sid).await;
    for turn in [1, 2] {
        let answer = said(&log, turn);
        assert!(
            answer.contains("Ada") && !answer.contains("Bob"),
            "turn {turn}: {answer:?}"
        );
    }

    let next = call(&stack, &asking(&[FIRST], 20_000)).await;
    let next_sid = CallSid::parse(&next.call_sid).unwrap();
    let answer = said(&log_after_end(&stack, &next_sid).await, 1);
    assert!(
        answer.contains("Bob") && !answer.contains("Ada"),
        "{answer:?}"
    );

    // Refused, naming the tenant and the field; the revision stays.
    let refused = change_acme(&stack, "greeting", "").await;
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        "tenant \"acme\": field `greeting`: must not be empty"
    );
    let list: Value = client()
        .get(format!("{}/v1/admin/tenants", stack.console_url()))
        .bearer_auth(sb_stack::stack::OPERATOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["revision"].as_u64(), Some(second));
    stack.stop().await;
}
