//! Router tests (oneshot) for the incoming-call webhook and the media upgrade: signatures
//! (the PROTOCOLS §2.5 vectors), the stream TwiML and its credential, retries, rate limits,
//! unknown tenants, bad bodies. Status callbacks are in `status.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use sb_ingress::testing::MemoryBackend;
use sb_ingress::{IngressConfig, Settings, app};
use sb_runtime::redis::idempotency::AdmissionRecord;
use sb_schemas::testing::tenant_id;
use sb_schemas::{Body as Event, Kind};
use sb_twilio::IncomingCall;
use sb_twilio::signature::{sign, sign_url};
use sb_twilio::twiml;

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

fn ringing(n: u128, to: &str) -> IncomingCall {
    IncomingCall::ringing(ACCOUNT, sid(n).as_str(), CALLER, to, "inbound")
}

fn setup() -> (Router, MemoryBackend) {
    let (state, backend) = state();
    (app(state), backend)
}

/// The stream's `<Parameter>`s without the credential, and the credential.
fn split_credential(stream: &twiml::ConnectStream) -> (Vec<(String, String)>, String) {
    let (credential, rest): (Vec<_>, Vec<_>) = stream
        .parameters
        .iter()
        .cloned()
        .partition(|(name, _)| name == sb_twilio::credential::PARAMETER);
    assert_eq!(credential.len(), 1, "{:?}", stream.parameters);
    (rest, credential[0].1.clone())
}

/// A correctly signed webhook for a tenant's number is answered with `<Connect><Stream>` to
/// the public wss URL carrying the tenant, the numbers and a credential for exactly this
/// call, tenant and stream URL; it records the admitted tenant and publishes one `webhook`.
#[tokio::test]
async fn accepted_call_connects_the_stream() {
    let (app, backend) = setup();
    let call = ringing(1, ACME);
    let (status, body) = send(&app, signed(PUBLIC, "/twilio/voice", &call.params)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response = twiml::parse(&body).unwrap();
    let stream = response.connect_stream().unwrap();
    assert_eq!(stream.url, "wss://agent.example.com/twilio/media");
    let (parameters, credential) = split_credential(stream);
    assert_eq!(
        parameters,
        pairs(&[("tenant", "acme"), ("from", CALLER), ("to", ACME)])
    );
    let credentials = Settings::from_config(&config()).unwrap().credentials;
    let call_sid = sid(1);
    let binding = |tenant| sb_twilio::CallBinding {
        call_sid: call_sid.as_str(),
        tenant,
        stream_url: "wss://agent.example.com/twilio/media",
    };
    let now = std::time::SystemTime::now();
    assert_eq!(
        credentials.verify(&credential, &binding("acme"), now),
        Ok(())
    );
    assert!(
        credentials
            .verify(&credential, &binding("globex"), now)
            .is_err()
    );
    assert_eq!(
        backend.admission(&sid(1)),
        Some(AdmissionRecord::Admitted(tenant_id("acme")))
    );
    let published = backend.published();
    assert_eq!(published.len(), 1);
    let event = &published[0];
    assert_eq!(
        (event.tenant.as_str(), &event.call_sid, event.turn),
        ("acme", &sid(1), 0)
    );
    let Event::Webhook(webhook) = &event.body else {
        panic!("{event:?}")
    };
    assert_eq!(
        (
            webhook.from.as_str(),
            webhook.to.as_str(),
            webhook.call_status.as_str()
        ),
        (CALLER, ACME, "ringing")
    );
}

/// A Twilio retry gets the same TwiML (with a credential of its own) and publishes nothing
/// new.
#[tokio::test]
async fn retried_webhook_is_answered_again_but_not_reprocessed() {
    let (app, backend) = setup();
    let call = ringing(2, ACME);
    let (_, first) = send(&app, signed(PUBLIC, "/twilio/voice", &call.params)).await;
    let (status, second) = send(&app, signed(PUBLIC, "/twilio/voice", &call.params)).await;
    assert_eq!(status, StatusCode::OK);
    let parameters = |body: &str| {
        let response = twiml::parse(body).unwrap();
        let stream = response.connect_stream().unwrap().clone();
        (stream.url.clone(), split_credential(&stream).0)
    };
    assert_eq!(parameters(&first), parameters(&second));
    assert_eq!(backend.kinds(), [Kind::Webhook]);
}

/// Bad, missing, or wrongly-scoped signatures get 403 and nothing is published.
#[tokio::test]
async fn bad_signatures_are_refused() {
    let (app, backend) = setup();
    let call = ringing(3, ACME);
    let good = sign(TOKEN, &format!("{PUBLIC}/twilio/voice"), &call.params);
    let mut tampered = call.params.clone();
    tampered[0].1.push('x');
    let cases = [
        request("/twilio/voice", &call.params, None),
        request("/twilio/voice", &call.params, Some("bm90IGEgc2lnbmF0dXJl")),
        request("/twilio/voice", &tampered, Some(&good)),
        // Signed for another token, for http instead of https, for another path.
        request(
            "/twilio/voice",
            &call.params,
            Some(&sign(
                "other",
                &format!("{PUBLIC}/twilio/voice"),
                &call.params,
            )),
        ),
        request(
            "/twilio/voice",
            &call.params,
            Some(&sign(
                TOKEN,
                "http://agent.example.com/twilio/voice",
                &call.params,
            )),
        ),
        request(
            "/twilio/voice",
            &call.params,
            Some(&sign(
                TOKEN,
                &format!("{PUBLIC}/twilio/status"),
                &call.params,
            )),
        ),
    ];
    for request in cases {
        let (status, body) = send(&app, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    assert!(backend.published().is_empty());
}

/// The PROTOCOLS §2.5 vectors (token 12345, the SDKs' parameters) pass the signature check
/// exactly where the official validators accept them: such requests then fail only for
/// lacking a real call's fields (400), while the rest fail the signature (403).
#[tokio::test]
async fn protocol_vectors() {
    let common = pairs(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675309"),
        ("Digits", "1234"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]);
    let multi = pairs(&[
        ("Sid", "CA123"),
        ("SidAccount", "AC123"),
        ("Digits", "5678"),
        ("Digits", "1234"),
        ("Digits", "1234"),
    ]);
    let docs = pairs(&[
        ("Digits", "1234"),
        ("To", "+18005551212"),
        ("From", "+14158675310"),
        ("Caller", "+14158675310"),
        ("CallSid", "CA1234567890ABCDE"),
    ]);
    // (public base URL, params, signature, accepted)
    type Case<'a> = (&'a str, &'a Vec<(String, String)>, &'a str, bool);
    let cases: [Case; 10] = [
        (
            "https://mycompany.com",
            &common,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            true,
        ),
        (
            "https://mycompany.com",
            &common,
            "kvajT1Ptam85bY51eRf/AJRuM3w=",
            true,
        ),
        (
            "https://mycompany.com:443",
            &common,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            true,
        ),
        (
            "https://mycompany.com:1234",
            &common,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            true,
        ),
        (
            "https://mycompany.com",
            &multi,
            "IK+Dwps556ElfBT0I3Rgjkr1wJU=",
            true,
        ),
        (
            "https://user:pass@mycompany.com",
            &common,
            "CukzLTc1tT5dXEDIHm/tKBanW10=",
            true,
        ),
        (
            "https://user@mycompany.com",
            &common,
            "2YRLlVAflCqxaNicjMpJcSTgzSs=",
            true,
        ),
        (
            "https://example.com",
            &docs,
            "L/OH5YylLD5NRKLltdqwSvS0BnU=",
            true,
        ),
        // Signed for http (vector 3): this ingress is reached over https.
        (
            "https://mycompany.com",
            &common,
            "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            false,
        ),
        (
            "https://mycompany.com",
            &common,
            "RSOYDt4T1cUTdK1PDd93/VVr8B9=",
            false,
        ),
    ];
    for (public, params, signature, accepted) in cases {
        let mut config = IngressConfig::for_tests("12345", public);
        config.voice_path = "/myapp.php".into();
        let (state, backend) = state_with(&config);
        let app = app(state);
        let request = request("/myapp.php?foo=1&bar=2", params, Some(signature));
        let (status, body) = send(&app, request).await;
        let expected = if accepted {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(status, expected, "{public} {signature}: {body}");
        assert!(backend.published().is_empty());
    }
}

/// A number without a tenant hears the configured polite rejection; nothing is published.
#[tokio::test]
async fn unknown_number_is_declined_politely() {
    let (app, backend) = setup();
    let call = ringing(4, "+19999999999");
    let (status, body) = send(&app, signed(PUBLIC, "/twilio/voice", &call.params)).await;
    assert_eq!(status, StatusCode::OK);
    let response = twiml::parse(&body).unwrap();
    assert_eq!(
        response.said(),
        "Sorry, this number is not in service. Goodbye."
    );
    assert!(response.verbs.contains(&twiml::Verb::Hangup));
    assert!(backend.published().is_empty());
}

/// Over the tenant's rate limit a call is declined politely and not published; its retry is
/// declined the same way; other tenants are unaffected.
#[tokio::test]
async fn rate_limit_declines_politely() {
    let (app, backend) = setup();
    for n in 10..12 {
        let call = ringing(n, TINY);
        let (_, body) = send(&app, signed(PUBLIC, "/twilio/voice", &call.params)).await;
        assert!(twiml::parse(&body).unwrap().connect_stream().is_ok());
    }
    let third = ringing(12, TINY);
    let (status, body) = send(&app, signed(PUBLIC, "/twilio/voice", &third.params)).await;
    assert_eq!(status, StatusCode::OK);
    let response = twiml::parse(&body).unwrap();
    assert!(response.connect_stream().is_err());
    assert!(response.said().contains("lines are busy"), "{body}");
    let (_, retry) = send(&app, signed(PUBLIC, "/twilio/voice", &third.params)).await;
    assert_eq!(retry, body, "the retry is declined the same way");
    let other = ringing(13, ACME);
    let (_, body) = send(&app, signed(PUBLIC, "/twilio/voice", &other.params)).await;
    assert!(twiml::parse(&body).unwrap().connect_stream().is_ok());
    assert_eq!(backend.of_kind(Kind::Webhook).len(), 3);
}

/// Bodies that are not an incoming call (a field Twilio sends once given twice included)
/// get a clear 400 (when signed) and publish nothing; an oversized body gets 413.
#[tokio::test]
async fn bad_bodies_are_rejected() {
    let (app, backend) = setup();
    let call = ringing(5, ACME);
    let mut missing = call.params.clone();
    missing.retain(|(k, _)| k != "CallSid");
    let mut bad_sid = call.params.clone();
    bad_sid.iter_mut().find(|(k, _)| k == "CallSid").unwrap().1 = "CA123".into();
    let mut bad_status = call.params.clone();
    bad_status
        .iter_mut()
        .find(|(k, _)| k == "CallStatus")
        .unwrap()
        .1 = "exploded".into();
    let garbage = pairs(&[("\u{fffd}\u{fffd}", ""), ("x", "")]);
    // A field Twilio sends once, given twice (both signed): which one counts is not for
    // the ingress to guess.
    let mut repeated_to = call.params.clone();
    repeated_to.push(("To".into(), GLOBEX.into()));
    let mut repeated_sid = call.params.clone();
    repeated_sid.push(("CallSid".into(), sid(6).as_str().into()));
    for params in [
        missing,
        bad_sid,
        bad_status,
        garbage,
        Vec::new(),
        repeated_to,
        repeated_sid,
    ] {
        let (status, body) = send(&app, signed(PUBLIC, "/twilio/voice", &params)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{params:?}: {body}");
    }
    let huge = pairs(&[("Padding", &"x".repeat(64 * 1024))]);
    let (status, _) = send(&app, signed(PUBLIC, "/twilio/voice", &huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(backend.published().is_empty());
}

/// The media upgrade is refused with 403 before upgrading unless signed over the `wss://`
/// URL (an `https://` signature is not enough); a correctly signed request gets past the
/// signature check (here it then lacks a real connection to upgrade).
#[tokio::test]
async fn media_upgrade_checks_the_wss_signature() {
    let (app, _) = setup();
    let upgrade = |signature: Option<String>| {
        let mut builder = Request::get("/twilio/media")
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==");
        if let Some(signature) = signature {
            builder = builder.header("X-Twilio-Signature", signature);
        }
        builder.body(Body::empty()).unwrap()
    };
    for signature in [
        None,
        Some(sign_url(TOKEN, "https://agent.example.com/twilio/media")),
        Some(sign_url("other", "wss://agent.example.com/twilio/media")),
    ] {
        assert_eq!(
            send(&app, upgrade(signature)).await.0,
            StatusCode::FORBIDDEN
        );
    }
    for url in [
        "wss://agent.example.com/twilio/media",
        "wss://agent.example.com:443/twilio/media",
        "wss://agent.example.com/twilio/media/",
    ] {
        let (status, _) = send(&app, upgrade(Some(sign_url(TOKEN, url)))).await;
        assert_ne!(status, StatusCode::FORBIDDEN, "{url}");
    }
}

/// With Redis down the call is still connected (and published): the ingress must never be
/// the reason a call fails.
#[tokio::test]
async fn redis_failure_admits_the_call() {
    let (app, backend) = setup();
    backend.fail_redis(true);
    let call = ringing(30, ACME);
    let (status, body) = send(&app, signed(PUBLIC, "/twilio/voice", &call.params)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(twiml::parse(&body).unwrap().connect_stream().is_ok());
    assert_eq!(backend.kinds(), [Kind::Webhook]);
}
