//! Router tests (oneshot) for `POST /twilio/stream-ended`, every stream's `<Connect
//! action>`: a call whose stream dropped while a socket still held it is connected anew
//! with a `lost` handoff, at most three times; a call that ended, one no socket held, one
//! under another tenant and a bad signature are hung up or refused.

#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::*;
use sb_ingress::{Backend as _, app};
use sb_runtime::redis::handoff::MAX_RECONNECTS;
use sb_twilio::IncomingCall;
use sb_twilio::twiml::{Verb, parse};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const ACTION: &str = "/twilio/stream-ended?tenant=acme";

fn in_progress(n: u128) -> Vec<(String, String)> {
    let mut call = IncomingCall::ringing(ACCOUNT, sid(n).as_str(), CALLER, ACME, "inbound");
    for (name, value) in &mut call.params {
        if name == "CallStatus" {
            *value = "in-progress".into();
        }
    }
    call.params
}

fn hangs_up(body: &str) -> bool {
    parse(body).unwrap().verbs == [Verb::Hangup]
}

/// The webhook's stream names the action; while a socket holds the call, a dropped stream
/// is connected anew with a handoff token (three times), then the call is hung up.
#[tokio::test]
async fn a_dropped_stream_is_connected_anew_while_its_call_is_held() {
    let (state, backend) = state();
    let app = app(state);
    let (status, body) = post_signed(&app, "/twilio/voice", &in_progress(40)).await;
    assert_eq!(status, StatusCode::OK);
    let stream = parse(&body).unwrap().connect_stream().unwrap().clone();
    assert_eq!(
        stream.action.as_deref(),
        Some(&*format!("{PUBLIC}{ACTION}"))
    );

    // Nobody held the call (a refused socket): hang up.
    let (status, body) = post_signed(&app, ACTION, &in_progress(40)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(hangs_up(&body), "{body}");

    backend.live_claim(&sid(40), "dead-replica").await.unwrap();
    for attempt in 1..=MAX_RECONNECTS {
        let (status, body) = post_signed(&app, ACTION, &in_progress(40)).await;
        assert_eq!(status, StatusCode::OK);
        let again = parse(&body).unwrap().connect_stream().unwrap().clone();
        let token = again
            .parameters
            .iter()
            .find(|(name, _)| name == "handoff")
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| panic!("attempt {attempt}: no handoff token in {body}"));
        let handoff = backend.handoff(&sid(40)).unwrap();
        assert_eq!(handoff.token, token);
        assert!(handoff.lost && handoff.stopped, "{handoff:?}");
        assert_eq!(
            again.action, stream.action,
            "the new stream names the action too"
        );
    }
    let (_, body) = post_signed(&app, ACTION, &in_progress(40)).await;
    assert!(hangs_up(&body), "dropped too often: {body}");
}

/// A call whose `end` was claimed hangs up; a tenant that is not the admitted one, or not
/// configured, hangs up; a bad signature is refused with 403 and changes nothing.
#[tokio::test]
async fn an_ended_foreign_or_unsigned_stream_is_not_connected_again() {
    let (state, backend) = state();
    let app = app(state);
    post_signed(&app, "/twilio/voice", &in_progress(41)).await;
    backend.live_claim(&sid(41), "dead-replica").await.unwrap();

    let (status, _) = send(&app, request(ACTION, &in_progress(41), Some("bad"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for path in [
        "/twilio/stream-ended?tenant=globex",
        "/twilio/stream-ended?tenant=nobody",
        "/twilio/stream-ended",
    ] {
        let (status, body) = post_signed(&app, path, &in_progress(41)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(hangs_up(&body), "{path}: {body}");
    }
    assert!(
        backend.handoff(&sid(41)).is_none(),
        "no handoff was written"
    );

    backend.claim_end(&sid(41)).await.unwrap();
    let (_, body) = post_signed(&app, ACTION, &in_progress(41)).await;
    assert!(hangs_up(&body), "{body}");
    assert!(backend.handoff(&sid(41)).is_none());
}
