//! Channel-driven tests of the trust boundary between a call's webhook and its media socket
//! (the in-memory backend, paused time): a socket serves a call only with the credential
//! its webhook issued, for the tenant that webhook admitted, one socket at a time; refused
//! sockets are closed with 1008, counted by reason and leave no trace. (A status callback
//! ending only admitted calls: `status.rs`.)

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use common::line::{Line, media_bytes};
use common::*;
use sb_ingress::{app, testing::MemoryBackend};
use sb_runtime::redis::idempotency::AdmissionRecord;
use sb_schemas::testing::tenant_id;
use sb_schemas::{Body, Kind};
use sb_twilio::{CallBinding, CallCredentials, IncomingCall, credential, twiml};

/// The refusals counted so far for `reason` (0 when none).
fn refused(metrics: &str, reason: &str) -> u64 {
    let needle = format!("switchboard_ingress_sockets_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&needle)?.parse().ok())
        .unwrap_or(0)
}

/// Sends `start` with `tenant` and `credential` on `line`; asserts it is closed with 1008
/// and counted under `reason`.
async fn assert_refused(line: &mut Line, tenant: &str, credential: Option<&str>, reason: &str) {
    let metrics = sb_runtime::metrics::install();
    let before = refused(&metrics.render(), reason);
    let start = line.start_with(tenant, credential);
    line.send(start);
    assert_eq!(line.closed_with().await, Some(1008), "{reason}");
    assert_eq!(refused(&metrics.render(), reason), before + 1, "{reason}");
}

/// Asserts the backend holds no trace of `line`'s call: nothing published, no STT lease,
/// no session, no live-socket claim.
fn assert_untouched(backend: &MemoryBackend, line: &Line) {
    assert!(backend.published().is_empty(), "{:?}", backend.kinds());
    assert!(backend.leases().is_empty());
    assert_eq!(backend.session(&line.sid), None);
    assert_eq!(backend.live_owner(&line.sid), None);
}

/// A second socket for a live acme call — with no credential, with the live call's own
/// credential but `tenant=globex`, or with that credential as sent (a replay) — is closed
/// with 1008 and counted by reason; the live call keeps its session (acme), its claim, its
/// one STT lease, keeps playing, and on `stop` publishes its one `end` under acme and
/// releases the claim. Replayed after the call ended, the credential is refused (`ended`).
#[tokio::test(start_paused = true)]
async fn a_second_socket_cannot_take_over_a_live_call() {
    let mut line = Line::open(1, "acme");
    line.start().await;
    let owner = line
        .backend
        .live_owner(&line.sid)
        .expect("the call holds the claim");
    let captured = line.credential("acme");
    for (tenant, credential, reason) in [
        ("globex", None, "no_credential"),
        ("globex", Some(captured.as_str()), "tenant_mismatch"),
        ("acme", Some(captured.as_str()), "already_live"),
    ] {
        let mut second = line.another();
        assert_refused(&mut second, tenant, credential, reason).await;
        second.task.await.unwrap();
    }
    let backend = line.backend.clone();
    assert_eq!(backend.kinds(), [Kind::Start]);
    assert_eq!(backend.leases().len(), 1);
    assert_eq!(backend.session(&line.sid), Some((tenant_id("acme"), 0)));
    assert_eq!(backend.live_owner(&line.sid), Some(owner));
    line.chunk(0, (0, 0), 2, (true, true), 9);
    assert_eq!(media_bytes(&line.until_mark("0:0").await), [9; 320]);

    let sid = line.sid.clone();
    let mut ghost = line.another();
    let backend = line.close().await;
    let ends = backend.of_kind(Kind::End);
    assert_eq!(ends.len(), 1);
    // The same credential replayed once the call ended (it is still valid): no ghost call.
    let published = backend.published().len();
    assert_refused(&mut ghost, "acme", Some(captured.as_str()), "ended").await;
    ghost.task.await.unwrap();
    assert_eq!(
        backend.published().len(),
        published,
        "the ghost published nothing"
    );
    assert_eq!(ends[0].tenant, tenant_id("acme"));
    assert!(
        backend
            .published()
            .iter()
            .all(|e| e.tenant == tenant_id("acme"))
    );
    assert_eq!(backend.live_owner(&sid), None, "released on end");
}

/// Without an admission record, the credential decides: one forged with another secret is
/// refused (`bad_credential`) and leaves no trace; a call the rate limit declined is
/// refused (`not_admitted`) even with a credential our secret made; and a genuine
/// credential whose record Redis lost (a restart, a failover; only an admitting webhook
/// issues one) starts the call.
#[tokio::test(start_paused = true)]
async fn without_an_admission_record_the_credential_decides() {
    let mut line = Line::unadmitted(&config(), 2, "acme");
    let binding = CallBinding {
        call_sid: line.sid.as_str(),
        tenant: "acme",
        stream_url: &line.state.settings.stream_url,
    };
    let forged = CallCredentials::new(
        b"not-the-ingress-secret-0123456789",
        Duration::from_secs(300),
    )
    .issue(&binding, SystemTime::now());
    assert_refused(&mut line, "acme", Some(&forged), "bad_credential").await;
    assert_untouched(&line.backend, &line);

    let genuine = line.credential("acme");
    line.backend
        .record_admission(&line.sid, AdmissionRecord::Declined);
    let mut declined = line.another();
    assert_refused(&mut declined, "acme", Some(&genuine), "not_admitted").await;
    assert_untouched(&line.backend, &line);

    let mut lost = Line::unadmitted(&config(), 3, "acme");
    lost.start().await;
    assert_eq!(
        lost.backend.of_kind(Kind::Start).len(),
        1,
        "the call started"
    );
}

/// A credential is good only as issued: expired (replayed late), tampered with, made for
/// another stream URL or garbage, it is refused (`expired`, `bad_credential`) and the call
/// is left alone; the genuine one then starts it.
#[tokio::test(start_paused = true)]
async fn only_a_fresh_untouched_credential_starts_the_call() {
    let mut line = Line::open(3, "acme");
    let url = line.state.settings.stream_url.clone();
    let binding = |stream_url| CallBinding {
        call_sid: line.sid.as_str(),
        tenant: "acme",
        stream_url,
    };
    let credentials = &line.state.settings.credentials;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = credentials.issue_until(&binding(&url), now - 1);
    let other_url = credentials.issue(
        &binding("wss://evil.example.com/twilio/media"),
        SystemTime::now(),
    );
    let genuine = line.credential("acme");
    let mut tampered = genuine.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for (credential, reason) in [
        (expired.as_str(), "expired"),
        (other_url.as_str(), "bad_credential"),
        (tampered.as_str(), "bad_credential"),
        ("v1.1.x", "bad_credential"),
        ("v9.99999999999.AAAA", "bad_credential"),
    ] {
        let mut socket = line.another();
        assert_refused(&mut socket, "acme", Some(credential), reason).await;
    }
    assert_untouched(&line.backend, &line);
    line.start().await;
    assert_eq!(line.backend.leases().len(), 1);
    line.close().await;
}

/// The TwiML of a real webhook answer, echoed as Twilio echoes it, starts the call; the
/// `start` event carries the other parameters but not the credential.
#[tokio::test(start_paused = true)]
async fn the_webhooks_parameters_start_the_call() {
    let mut line = Line::unadmitted(&config(), 4, "acme");
    let router = app(line.state.clone());
    let call = IncomingCall::ringing("AC1", line.sid.as_str(), CALLER, ACME, "inbound");
    let (status, body) = post_signed(&router, "/twilio/voice", &call.params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response = twiml::parse(&body).unwrap();
    let parameters = response.connect_stream().unwrap().parameters.clone();
    let presented = parameters
        .iter()
        .find(|(name, _)| name == credential::PARAMETER)
        .map(|(_, value)| value.clone());
    let mut start = line.start_with("acme", presented.as_deref());
    if let sb_twilio::InboundMessage::Start { start, .. } = &mut start {
        assert_eq!(
            start.custom_parameters,
            parameters.iter().cloned().collect()
        );
    }
    line.send(start);
    let backend = line.backend.clone();
    common::line::until(|| !backend.of_kind(Kind::Start).is_empty()).await;
    let Body::Start(started) = &backend.of_kind(Kind::Start)[0].body else {
        panic!()
    };
    assert_eq!(
        started.custom_parameters.get("tenant").map(String::as_str),
        Some("acme")
    );
    assert!(
        !started
            .custom_parameters
            .contains_key(credential::PARAMETER)
    );
    line.close().await;
}

/// Redis down: the ingress cannot read the admission record, so the credential decides,
/// for the tenant the socket names: a genuine one starts the call (a call is not refused
/// for Redis), a forged one or one for another tenant is still refused.
#[tokio::test(start_paused = true)]
async fn redis_down_the_credential_alone_decides() {
    let mut line = Line::open(5, "acme");
    line.backend.fail_redis(true);
    let genuine = line.credential("acme");
    let mut as_globex = line.another();
    assert_refused(&mut as_globex, "globex", Some(&genuine), "bad_credential").await;
    let mut forged = line.another();
    let fake = genuine.replacen("v1.", "v1.1", 1);
    assert_refused(&mut forged, "acme", Some(&fake), "bad_credential").await;
    assert!(line.backend.published().is_empty());
    line.start().await;
    assert_eq!(
        line.backend.of_kind(Kind::Start)[0].tenant,
        tenant_id("acme")
    );
    line.close().await;
}
