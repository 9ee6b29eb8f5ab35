//! Outbound calls placed through the Twilio stand-in live like Twilio's: per-number callee
//! scripts (busy, no-answer, failed, human, voicemail), signed status callbacks for the
//! requested events (`completed` always) with Twilio's fields, async AMD results, hang-up
//! through REST, and what `TwilioState` lets tests assert (history, callbacks, live calls).
//! State: one stand-in and one callback receiver per test, on free loopback ports; no
//! ingress (calls answered by a human or a machine simply last).

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

mod receiver;

use std::time::Duration;

use receiver::{Received, Receiver};
use sb_sim::SimServer;
use sb_sim::caller::Scenario;
use sb_sim::twilio::{self, CallbackKind, Callee, Callees, Config, Timing, TwilioState};
use sb_twilio::rest::{call_path, calls_path};
use sb_twilio::{CallStatus, CallTarget, CreateCall, MachineDetection, UpdateCall};
use serde_json::Value;

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "outbound-token";
const WAIT: Duration = Duration::from_secs(10);

async fn start(callees: Callees) -> (SimServer, TwilioState, Receiver) {
    let mut config = Config::new(AC, TOKEN);
    config.callees = Some(callees);
    config.timing = Timing {
        ring: Duration::from_millis(50),
        amd_delay: Duration::from_millis(100),
        max_call: Duration::from_secs(30),
    };
    let (server, state) = twilio::spawn(config).await.unwrap();
    (server, state, Receiver::start(TOKEN).await)
}

/// A create request with every status event and, optionally, async AMD.
fn create(to: &str, receiver: &Receiver, amd: Option<MachineDetection>) -> CreateCall {
    let mut create = CreateCall::new(
        to,
        "+15005550006",
        CallTarget::Url("https://agent.example.com/twilio/voice".into()),
    );
    create.status_callback = Some(format!("{}/status", receiver.url));
    create.status_callback_event = ["initiated", "ringing", "answered", "completed"]
        .map(String::from)
        .to_vec();
    if let Some(mode) = amd {
        create.machine_detection = Some(mode);
        create.async_amd = true;
        create.async_amd_status_callback = Some(format!("{}/amd", receiver.url));
    }
    create
}

async fn post(server: &SimServer, path: String, body: String) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.http_url()))
        .basic_auth(AC, Some(TOKEN))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

async fn place(server: &SimServer, create: &CreateCall) -> String {
    let call = post(server, calls_path(AC), create.to_form()).await;
    assert_eq!(call["status"], "queued");
    call["sid"].as_str().unwrap().to_owned()
}

fn statuses(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .filter(|r| r.path == "/status")
        .map(|r| r.get("CallStatus").unwrap().to_owned())
        .collect()
}

fn completed(sid: &str) -> impl Fn(&[Received]) -> bool + '_ {
    move |seen| {
        seen.iter().any(|r| {
            r.get("CallSid") == Some(sid)
                && r.get("CallStatus")
                    .is_some_and(|s| CallStatus::parse(s).is_some_and(|s| s.is_final()))
        })
    }
}

/// Waits until the stand-in recorded the call's final status callback (the receiver may
/// see it before the stand-in has its answer).
async fn settled(state: &TwilioState, sid: &str) {
    let done = |s: &TwilioState| {
        s.call(sid).is_some_and(|c| {
            c.callbacks.iter().any(|cb| {
                cb.param("CallStatus")
                    .and_then(CallStatus::parse)
                    .is_some_and(CallStatus::is_final)
            })
        })
    };
    assert!(state.wait_until(WAIT, done).await, "{:#?}", state.call(sid));
}

/// The n-th call to a number gets the n-th callee of its script (the last repeats):
/// busy, no-answer, failed, failed. Each sends `initiated`, `ringing` and its final status
/// with Twilio's fields, signed over the URL as given, numbered from 0; the resource and
/// the state's history follow.
#[tokio::test]
async fn callee_scripts_end_calls_busy_no_answer_failed() {
    const TO: &str = "+15005550001";
    let callees =
        Callees::default().with_number(TO, vec![Callee::Busy, Callee::NoAnswer, Callee::Failed]);
    let (server, state, receiver) = start(callees).await;
    let mut sids = Vec::new();
    for _ in 0..4 {
        let sid = place(&server, &create(TO, &receiver, None)).await;
        receiver.wait_for(completed(&sid)).await;
        settled(&state, &sid).await;
        sids.push(sid);
    }
    let expected = ["busy", "no-answer", "failed", "failed"];
    for (sid, end) in sids.iter().zip(expected) {
        let got = receiver.for_call(sid);
        assert_eq!(statuses(&got), ["initiated", "ringing", end], "{sid}");
        assert!(got.iter().all(|r| r.valid), "{got:#?}");
        let numbers: Vec<&str> = got
            .iter()
            .map(|r| r.get("SequenceNumber").unwrap())
            .collect();
        assert_eq!(numbers, ["0", "1", "2"]);
        for r in &got {
            assert_eq!(r.get("Direction"), Some("outbound-api"));
            assert_eq!(r.get("CallbackSource"), Some("call-progress-events"));
            assert_eq!(
                (r.get("AccountSid"), r.get("ApiVersion")),
                (Some(AC), Some("2010-04-01"))
            );
            assert_eq!(
                (r.get("To"), r.get("From")),
                (Some(TO), Some("+15005550006"))
            );
            assert!(r.get("Timestamp").is_some_and(|t| t.ends_with("+0000")));
        }
        let last = got.last().unwrap();
        assert_eq!(
            (last.get("CallDuration"), last.get("Duration")),
            (Some("0"), Some("0"))
        );
        assert_eq!(last.get("AnsweredBy"), None, "no AMD was requested");
        let record = state.call(sid).unwrap();
        assert_eq!(record.resource.status.as_str(), end);
        assert_eq!(
            record.callee.as_ref().unwrap().kind(),
            if end == "failed" { "failed" } else { end }
        );
        assert_eq!(
            record.statuses()[..3],
            [
                CallStatus::Queued,
                CallStatus::Initiated,
                CallStatus::Ringing
            ]
        );
        assert_eq!(record.callbacks.len(), 3);
        assert!(record.callbacks.iter().all(|c| c.http_status == Some(204)));
    }
    assert_eq!(state.calls_to(TO), 4);
    assert_eq!(state.created_at().len(), 4);
    assert_eq!(state.live_calls(), 0);
    assert_eq!(state.max_live_calls(), 1);
}

/// A human callee without an ingress: answered (`in-progress`), AMD says `human` through
/// the async AMD callback, the call completes after the scenario's spoken length with
/// `CallDuration`, `Duration` and `AnsweredBy`; fetch and list reflect it.
#[tokio::test]
async fn human_callee_with_async_amd() {
    const TO: &str = "+15005550002";
    let scenario = Scenario::from_toml("tones = true\n[[steps]]\npause_ms = 300").unwrap();
    let (server, state, receiver) = start(Callees::new(Callee::Human(scenario))).await;
    let sid = place(
        &server,
        &create(TO, &receiver, Some(MachineDetection::Enable)),
    )
    .await;
    receiver.wait_for(completed(&sid)).await;
    settled(&state, &sid).await;
    let got = receiver.for_call(&sid);
    assert_eq!(
        statuses(&got),
        ["initiated", "ringing", "in-progress", "completed"]
    );
    let amd: Vec<&Received> = got.iter().filter(|r| r.path == "/amd").collect();
    assert_eq!(amd.len(), 1, "{got:#?}");
    assert!(amd[0].valid);
    assert_eq!(
        (amd[0].get("AnsweredBy"), amd[0].get("AccountSid")),
        (Some("human"), Some(AC))
    );
    assert_eq!(amd[0].get("MachineDetectionDuration"), Some("100"));
    let last = got.last().unwrap();
    assert_eq!(last.get("AnsweredBy"), Some("human"));
    assert_eq!(
        (last.get("CallDuration"), last.get("Duration")),
        (Some("0"), Some("1"))
    );

    let record = state.call(&sid).unwrap();
    assert_eq!(record.resource.answered_by.as_deref(), Some("human"));
    assert_eq!(record.resource.status, CallStatus::Completed);
    assert!(record.resource.start_time.is_some() && record.resource.end_time.is_some());
    let kinds: Vec<CallbackKind> = record.callbacks.iter().map(|c| c.kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == CallbackKind::Amd).count(), 1);
    let fetched = reqwest::Client::new()
        .get(format!("{}{}", server.http_url(), call_path(AC, &sid)))
        .basic_auth(AC, Some(TOKEN))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        (fetched["status"].as_str(), fetched["answered_by"].as_str()),
        (Some("completed"), Some("human"))
    );
}

/// A voicemail callee with `DetectMessageEnd`: answered, `machine_end_beep` after its
/// greeting, and the call stays up (recording) until it is hung up through REST; then
/// `completed`. Only `completed` is sent when no events are listed.
#[tokio::test]
async fn voicemail_waits_for_the_hang_up() {
    const TO: &str = "+15005550003";
    let callees = Callees::default().with_number(
        TO,
        vec![Callee::Voicemail {
            greeting: Duration::from_millis(150),
        }],
    );
    let (server, state, receiver) = start(callees).await;
    let mut request = create(TO, &receiver, Some(MachineDetection::DetectMessageEnd));
    request.status_callback_event.clear();
    let sid = place(&server, &request).await;
    receiver
        .wait_for(|seen| seen.iter().any(|r| r.path == "/amd"))
        .await;
    let amd = receiver.for_call(&sid);
    assert_eq!(amd[0].get("AnsweredBy"), Some("machine_end_beep"));
    assert_eq!(amd[0].get("MachineDetectionDuration"), Some("150"));
    assert_eq!(
        state.call(&sid).unwrap().resource.status,
        CallStatus::InProgress
    );
    assert_eq!(state.live_calls(), 1);

    let done = post(
        &server,
        call_path(AC, &sid),
        UpdateCall::hang_up().to_form(),
    )
    .await;
    assert_eq!(done["status"], "completed");
    receiver.wait_for(completed(&sid)).await;
    let got = receiver.for_call(&sid);
    assert_eq!(statuses(&got), ["completed"], "only completed was due");
    assert_eq!(
        got.last().unwrap().get("AnsweredBy"),
        Some("machine_end_beep")
    );
    assert_eq!(got.last().unwrap().get("SequenceNumber"), Some("0"));
    let history = state.call(&sid).unwrap().statuses();
    assert_eq!(
        history,
        [
            CallStatus::Queued,
            CallStatus::Initiated,
            CallStatus::Ringing,
            CallStatus::InProgress,
            CallStatus::Completed
        ]
    );
    assert_eq!(state.live_calls(), 0);
}

/// Hanging up a ringing no-answer call cancels it: `canceled`, sent once, and the
/// call's life stops there.
#[tokio::test]
async fn a_ringing_call_can_be_canceled() {
    const TO: &str = "+15005550004";
    let (server, state, receiver) = start(Callees::new(Callee::NoAnswer)).await;
    let mut config_slow = create(TO, &receiver, None);
    config_slow.status_callback_event = vec!["ringing".into()];
    let sid = place(&server, &config_slow).await;
    receiver
        .wait_for(|seen| statuses(seen) == ["ringing"])
        .await;
    let canceled = UpdateCall {
        status: Some(CallStatus::Canceled),
        ..UpdateCall::default()
    };
    post(&server, call_path(AC, &sid), canceled.to_form()).await;
    receiver.wait_for(completed(&sid)).await;
    assert_eq!(statuses(&receiver.for_call(&sid)), ["ringing", "canceled"]);
    settled(&state, &sid).await;
    assert_eq!(state.call(&sid).unwrap().callbacks.len(), 2);
    assert_eq!(
        state.call(&sid).unwrap().resource.status,
        CallStatus::Canceled
    );
}
