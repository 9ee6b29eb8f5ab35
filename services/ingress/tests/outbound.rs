//! Router tests (oneshot) for outbound campaign calls' webhooks: the tenant comes from the
//! dial attempt in the signed URL (`?attempt=…`), never from the called number; the
//! attempt learns the call sid and the `webhook` event carries it; an unknown attempt,
//! one already taken by another call, numbers that are not the attempt's and a malformed
//! id are refused without publishing anything.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::*;
use sb_ingress::OutboundCall;
use sb_ingress::app;
use sb_runtime::redis::campaigns::AttemptId;
use sb_schemas::Body as Event;
use sb_schemas::testing::tenant_id;
use sb_twilio::IncomingCall;
use sb_twilio::twiml;

const CONTACT: &str = "+14155550199";

fn answered(n: u128, from: &str, to: &str) -> IncomingCall {
    IncomingCall::ringing(
        "AC0123456789abcdef0123456789abcdef",
        sid(n).as_str(),
        from,
        to,
        "outbound-api",
    )
}

fn attempt_for_globex() -> (AttemptId, OutboundCall) {
    (
        AttemptId::random(),
        OutboundCall {
            tenant: tenant_id("globex"),
            to: CONTACT.into(),
            from: GLOBEX.into(),
        },
    )
}

/// The attempt's tenant (globex) runs the call though the contact's number has no tenant;
/// the attempt records the sid; the event names the attempt.
#[tokio::test]
async fn an_outbound_webhook_takes_its_tenant_from_the_attempt() {
    let (state, backend) = state();
    let app = app(state);
    let (attempt, call) = attempt_for_globex();
    backend.add_attempt(attempt.clone(), call);
    let path = format!("/twilio/voice?attempt={attempt}");
    let webhook = answered(1, GLOBEX, CONTACT);
    let (status, body) = send(&app, signed(PUBLIC, &path, &webhook.params)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response = twiml::parse(&body).unwrap();
    let stream = response.connect_stream().unwrap();
    assert!(
        stream
            .parameters
            .contains(&("tenant".into(), "globex".into()))
    );
    assert_eq!(backend.attempt_call_sid(&attempt), Some(sid(1)));
    let published = backend.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].tenant.as_str(), "globex");
    let Event::Webhook(w) = &published[0].body else {
        panic!("{:?}", published[0])
    };
    assert_eq!(w.attempt.as_deref(), Some(attempt.as_str()));
}

/// Unknown attempts, an attempt another call took, numbers that are not the attempt's:
/// hung up politely, nothing published. A malformed id: 400.
#[tokio::test]
async fn a_foreign_or_unknown_attempt_is_hung_up() {
    let (state, backend) = state();
    let app = app(state);
    let (attempt, call) = attempt_for_globex();
    backend.add_attempt(attempt.clone(), call);
    let refused = |body: &str| {
        let response = twiml::parse(body).unwrap();
        response.connect_stream().is_err() && response.verbs.contains(&twiml::Verb::Hangup)
    };
    let unknown = format!("/twilio/voice?attempt={}", AttemptId::random());
    let (status, body) = send(
        &app,
        signed(PUBLIC, &unknown, &answered(2, GLOBEX, CONTACT).params),
    )
    .await;
    assert!(status == StatusCode::OK && refused(&body), "{body}");

    let path = format!("/twilio/voice?attempt={attempt}");
    let (_, body) = send(
        &app,
        signed(PUBLIC, &path, &answered(3, GLOBEX, "+14155550100").params),
    )
    .await;
    assert!(refused(&body), "numbers not the attempt's: {body}");
    let (_, body) = send(
        &app,
        signed(PUBLIC, &path, &answered(4, GLOBEX, CONTACT).params),
    )
    .await;
    assert!(!refused(&body), "the right call: {body}");
    let (_, body) = send(
        &app,
        signed(PUBLIC, &path, &answered(5, GLOBEX, CONTACT).params),
    )
    .await;
    assert!(refused(&body), "another call with the same attempt: {body}");

    let bad = "/twilio/voice?attempt=not-an-id";
    let (status, _) = send(
        &app,
        signed(PUBLIC, bad, &answered(6, GLOBEX, CONTACT).params),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        backend.published().len(),
        1,
        "only the right call's webhook"
    );
}
