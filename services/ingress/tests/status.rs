//! Router tests (oneshot) for the call status callback: `end` once per admitted call, under
//! the tenant its webhook admitted; nothing for a call no webhook admitted; bad signatures
//! and bodies refused.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::*;
use sb_ingress::app;
use sb_runtime::redis::idempotency::AdmissionRecord;
use sb_schemas::testing::tenant_id;
use sb_schemas::{Body as Event, EndReason, Kind};
use sb_twilio::{IncomingCall, StatusCallback};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

fn ringing(n: u128, to: &str) -> IncomingCall {
    IncomingCall::ringing(ACCOUNT, sid(n).as_str(), CALLER, to, "inbound")
}

fn setup() -> (axum::Router, sb_ingress::testing::MemoryBackend) {
    let (state, backend) = state();
    (app(state), backend)
}

fn status_params(n: u128, to: &str, status: &str, sequence: u64) -> Vec<(String, String)> {
    let call = ringing(n, to);
    let mut callback =
        StatusCallback::completed(&call, 42, sequence, "Tue, 31 Aug 2010 20:36:44 +0000");
    callback
        .params
        .iter_mut()
        .find(|(k, _)| k == "CallStatus")
        .unwrap()
        .1 = status.into();
    callback.params
}

/// A final status publishes `end` once per admitted call whatever arrives after it
/// (repeats, other final statuses, late progress callbacks); progress statuses publish
/// nothing.
#[tokio::test]
async fn status_callbacks_end_the_call_once() {
    let (app, backend) = setup();
    let (status, _) = send(
        &app,
        signed(PUBLIC, "/twilio/voice", &ringing(20, ACME).params),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let post = |params: Vec<(String, String)>| signed(PUBLIC, "/twilio/status", &params);
    let (status, _) = send(&app, post(status_params(20, ACME, "in-progress", 1))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(backend.kinds(), [Kind::Webhook]);
    for (callback, sequence) in [
        ("completed", 3),
        ("completed", 3),
        ("busy", 4),
        ("ringing", 0),
    ] {
        let (status, _) = send(&app, post(status_params(20, ACME, callback, sequence))).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let ends = backend.of_kind(Kind::End);
    assert_eq!(ends.len(), 1);
    assert_eq!(
        ends[0].body,
        Event::End(sb_schemas::End {
            reason: EndReason::Completed
        })
    );
    assert_eq!(ends[0].call_sid, sid(20));
}

/// A call the tenant placed (admitted for it, as the dialer records it) ends under that
/// tenant; `no-answer` maps to its reason; bad signatures and bodies are refused.
#[tokio::test]
async fn status_callback_for_outbound_and_bad_requests() {
    let (app, backend) = setup();
    backend.record_admission(&sid(21), AdmissionRecord::Admitted(tenant_id("globex")));
    let call = IncomingCall::ringing(ACCOUNT, sid(21).as_str(), GLOBEX, CALLER, "outbound-api");
    let mut callback = StatusCallback::completed(&call, 0, 2, "Tue, 31 Aug 2010 20:36:44 +0000");
    callback
        .params
        .iter_mut()
        .find(|(k, _)| k == "CallStatus")
        .unwrap()
        .1 = "no-answer".into();
    let (status, _) = send(&app, signed(PUBLIC, "/twilio/status", &callback.params)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let ends = backend.of_kind(Kind::End);
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].tenant.as_str(), "globex");
    assert_eq!(
        ends[0].body,
        Event::End(sb_schemas::End {
            reason: EndReason::NoAnswer
        })
    );

    let params = status_params(22, ACME, "completed", 1);
    let unsigned = request("/twilio/status", &params, Some("AAAA"));
    assert_eq!(send(&app, unsigned).await.0, StatusCode::FORBIDDEN);
    let mut missing = params.clone();
    missing.retain(|(k, _)| k != "CallStatus");
    assert_eq!(
        send(&app, signed(PUBLIC, "/twilio/status", &missing))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(backend.of_kind(Kind::End).len(), 1);
}

/// A signed final status callback ends only a call a webhook admitted: for one never
/// admitted, or declined by the rate limit, nothing is published; with Redis down the call
/// is ended under its number's tenant rather than left without an `end`.
#[tokio::test]
async fn status_callback_ends_only_admitted_calls() {
    let (state, backend) = state();
    let router = app(state);
    let completed = |n: u128| {
        let call = IncomingCall::ringing("AC1", sid(n).as_str(), CALLER, ACME, "inbound");
        StatusCallback::completed(&call, 3, 2, "Tue, 31 Aug 2010 20:36:44 +0000").params
    };
    let (status, _) = post_signed(&router, "/twilio/status", &completed(6)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    backend.record_admission(&sid(7), AdmissionRecord::Declined);
    let (status, _) = post_signed(&router, "/twilio/status", &completed(7)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(backend.published().is_empty(), "{:?}", backend.kinds());

    backend.record_admission(&sid(8), AdmissionRecord::Admitted(tenant_id("acme")));
    post_signed(&router, "/twilio/status", &completed(8)).await;
    backend.fail_redis(true);
    post_signed(&router, "/twilio/status", &completed(9)).await;
    let ends: Vec<_> = backend
        .of_kind(Kind::End)
        .into_iter()
        .map(|e| (e.call_sid, e.tenant, e.body))
        .collect();
    let end = Event::End(sb_schemas::End {
        reason: EndReason::Completed,
    });
    assert_eq!(
        ends,
        [
            (sid(8), tenant_id("acme"), end.clone()),
            (sid(9), tenant_id("acme"), end)
        ]
    );
}
