//! The trust boundary between a call's webhook and its media socket, through the real
//! ingress on real NATS and Redis: a second socket (Twilio's captured upgrade signature, a
//! live CallSid) cannot take the call over under another tenant, a `start` no webhook
//! admitted opens no STT lease, an expired credential is refused, and a status callback for
//! a call never admitted publishes no `end`. Each test plays Twilio by hand: the signed
//! webhook, then Media Streams sockets whose `start` it writes itself.

mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sb_ingress::IngressConfig;
use sb_runtime::redis::idempotency::AdmissionRecord;
use sb_schemas::{CallSid, subject};
use sb_sim::caller::new_sid;
use sb_tests::{TestEnv, eventually};
use sb_twilio::{CallBinding, CallCredentials, IncomingCall, StatusCallback, credential};

use crate::ingress::{post_signed, start};
use crate::support;
use harness::{
    ACCOUNT, ACME, CALLER, STREAM_URL, Seen, WAIT, acme, admit, close_code, forged, open, refused,
    start_stream, stop_stream, stored_for, stt_worker,
};

/// Takeover refused: with an admitted acme call live on its socket (its lease taken by a
/// stt worker: one Deepgram stream), a second socket with the same captured upgrade
/// signature and CallSid is closed with 1008 — `tenant=globex` without a credential,
/// `tenant=globex` with the live call's own credential, and replaying the live call's
/// parameters exactly — each counted by reason, and opens no Deepgram stream. The call is
/// unaffected: its session stays acme's, nothing is ever published under globex, and when
/// its socket stops exactly one `end` is stored, under acme (its status callback adds
/// none), and the stt worker acks its one lease (STT_ASSIGN empties) and closes its stream.
#[tokio::test]
async fn trust_a_second_socket_cannot_take_over_a_live_call() {
    let env = TestEnv::start().await.unwrap();
    let stt = stt_worker(&env).await;
    let (_runtime, ingress) = start(&env).await;
    let sid = CallSid::parse(&new_sid("CA")).unwrap();
    let seen = Seen::watch(
        &env,
        &[
            subject::call_events_filter(&sid),
            format!("assign.stt.*.{sid}"),
        ],
    )
    .await;

    let parameters = admit(ingress.addr, &sid).await;
    let mut live = open(ingress.addr).await;
    let live_stream = start_stream(&mut live, &sid, parameters.clone()).await;
    eventually("the stt worker took the lease", WAIT, || async {
        (stt.streams() == 1).then_some(())
    })
    .await
    .unwrap();

    let captured = parameters[credential::PARAMETER].clone();
    for (attempt, reason) in [
        (forged(&parameters, "globex", None), "no_credential"),
        (
            forged(&parameters, "globex", Some(&captured)),
            "tenant_mismatch",
        ),
        (parameters.clone(), "already_live"),
    ] {
        let mut second = open(ingress.addr).await;
        start_stream(&mut second, &sid, attempt).await;
        assert_eq!(close_code(&mut second).await, Some(1008), "{reason}");
        assert_eq!(refused(ingress.addr, reason).await, 1, "{reason}");
    }
    assert_eq!(stt.streams(), 1, "no lease for a refused socket");
    let redis = env.redis().await.unwrap();
    let session = redis.session_load(&sid).await.unwrap().unwrap();
    assert_eq!(session.tenant, Some(acme()));

    stop_stream(&mut live, &sid, &live_stream).await;
    assert_eq!(
        close_code(&mut live).await,
        None,
        "a normal end, not a refusal"
    );
    let completed = StatusCallback::completed(
        &IncomingCall::ringing(ACCOUNT, sid.as_str(), CALLER, ACME, "inbound"),
        3,
        2,
        "Tue, 31 Aug 2010 20:36:44 +0000",
    );
    assert_eq!(
        post_signed(ingress.addr, "/twilio/status", &completed.params)
            .await
            .0,
        204
    );
    eventually("the lease acked after the end", WAIT, || async {
        let leases = support::stored(&env.js, "STT_ASSIGN", &format!("assign.stt.*.{sid}")).await;
        let ended = seen.all().iter().any(|s| s.ends_with(".end"));
        (ended && leases == 0 && stt.streams() == 0).then_some(())
    })
    .await
    .unwrap();

    let stored = stored_for(&env, &sid).await;
    assert!(
        stored
            .keys()
            .all(|s| s.starts_with("call.acme.") || s.starts_with("audio.acme.")),
        "{stored:?}"
    );
    assert_eq!(
        stored.get(&format!("call.acme.{sid}.end")),
        Some(&1),
        "{stored:?}"
    );
    let published = seen.all();
    assert!(
        published.iter().all(|s| !s.contains("globex")),
        "{published:?}"
    );
    let leases: Vec<&String> = published
        .iter()
        .filter(|s| s.starts_with("assign."))
        .collect();
    assert_eq!(leases, [&format!("assign.stt.acme.{sid}")]);
    assert_eq!(published.iter().filter(|s| s.ends_with(".end")).count(), 1);
    assert_eq!(
        redis.session_load(&sid).await.unwrap().unwrap().tenant,
        Some(acme())
    );

    ingress.shutdown().await;
    stt.runtime.shutdown.trigger();
    stt.task.await.unwrap();
}

/// A `start` no webhook admitted, with a well-formed credential forged under another
/// secret, is closed with 1008 (`bad_credential`: without an admission record the
/// credential decides, and only the ingress' own secret, which only an admitting webhook
/// uses, makes one that passes) and leaves nothing: no STT lease on `assign.stt.>`, no
/// event, no audio, no session, no live-socket claim.
#[tokio::test]
async fn trust_a_start_without_a_webhook_opens_no_lease() {
    let env = TestEnv::start().await.unwrap();
    let (_runtime, ingress) = start(&env).await;
    let sid = CallSid::parse(&new_sid("CA")).unwrap();
    let binding = CallBinding {
        call_sid: sid.as_str(),
        tenant: "acme",
        stream_url: STREAM_URL,
    };
    let validity = Duration::from_secs(300);
    let forged_secret = CallCredentials::new(b"forged-secret-forged-secret-forged", validity);
    let base: BTreeMap<String, String> = [("tenant", "acme"), ("from", CALLER), ("to", ACME)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for _ in 0..2 {
        let presented = forged_secret.issue(&binding, SystemTime::now());
        let mut socket = open(ingress.addr).await;
        start_stream(&mut socket, &sid, forged(&base, "acme", Some(&presented))).await;
        assert_eq!(close_code(&mut socket).await, Some(1008));
    }
    assert_eq!(refused(ingress.addr, "bad_credential").await, 2);
    // The ingress awaits every store before it answers, and closes a refused socket last.
    assert!(stored_for(&env, &sid).await.is_empty());
    let redis = env.redis().await.unwrap();
    assert_eq!(redis.session_load(&sid).await.unwrap(), None);
    assert_eq!(redis.admission(&sid).await.unwrap(), None);
    let mut raw = env.redis_raw().await.unwrap();
    let claim: Option<String> = redis::cmd("GET")
        .arg(redis.keys().live_socket(&sid))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(claim, None);
    ingress.shutdown().await;
}

/// A credential replayed after its expiry — genuine, for the admitted call, tenant and
/// stream URL — is closed with 1008 (`expired`) and starts nothing; the admission record
/// says acme; the fresh credential of the same webhook then starts the call (the refusal
/// left no claim behind), and its socket holds `live:{sid}` with a TTL.
#[tokio::test]
async fn trust_an_expired_credential_is_refused() {
    let env = TestEnv::start().await.unwrap();
    let (_runtime, ingress) = start(&env).await;
    let sid = CallSid::parse(&new_sid("CA")).unwrap();
    let parameters = admit(ingress.addr, &sid).await;
    let redis = env.redis().await.unwrap();
    assert_eq!(
        redis.admission(&sid).await.unwrap(),
        Some(AdmissionRecord::Admitted(acme()))
    );
    let ours = CallCredentials::new(
        IngressConfig::TEST_CREDENTIAL_SECRET.as_bytes(),
        Duration::from_secs(300),
    );
    let binding = CallBinding {
        call_sid: sid.as_str(),
        tenant: "acme",
        stream_url: STREAM_URL,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = ours.issue_until(&binding, now - 1);
    let mut late = open(ingress.addr).await;
    start_stream(&mut late, &sid, forged(&parameters, "acme", Some(&expired))).await;
    assert_eq!(close_code(&mut late).await, Some(1008));
    assert_eq!(refused(ingress.addr, "expired").await, 1);
    let stored = stored_for(&env, &sid).await;
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        [&format!("call.acme.{sid}.webhook")]
    );
    assert_eq!(redis.session_load(&sid).await.unwrap(), None);

    let mut socket = open(ingress.addr).await;
    let stream_sid = start_stream(&mut socket, &sid, parameters).await;
    let lease = subject::stt_assign(&acme(), &sid);
    eventually("the call's lease", WAIT, || async {
        (support::stored(&env.js, "STT_ASSIGN", &lease).await == 1).then_some(())
    })
    .await
    .unwrap();
    let mut raw = env.redis_raw().await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(redis.keys().live_socket(&sid))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!((1..=30).contains(&ttl), "live-socket claim ttl {ttl}");
    stop_stream(&mut socket, &sid, &stream_sid).await;
    assert_eq!(close_code(&mut socket).await, None);
    ingress.shutdown().await;
}

/// A signed `completed` status callback for a CallSid no webhook admitted is answered 204
/// and publishes nothing (no `end`); the same callback for an admitted call publishes its
/// one `end`.
#[tokio::test]
async fn trust_a_status_callback_for_a_call_never_admitted_publishes_no_end() {
    let env = TestEnv::start().await.unwrap();
    let (_runtime, ingress) = start(&env).await;
    let completed = |sid: &CallSid| {
        let call = IncomingCall::ringing(ACCOUNT, sid.as_str(), CALLER, ACME, "inbound");
        StatusCallback::completed(&call, 3, 2, "Tue, 31 Aug 2010 20:36:44 +0000").params
    };
    let stranger = CallSid::parse(&new_sid("CA")).unwrap();
    let (status, _) = post_signed(ingress.addr, "/twilio/status", &completed(&stranger)).await;
    assert_eq!(status, 204);
    assert!(stored_for(&env, &stranger).await.is_empty());

    let admitted = CallSid::parse(&new_sid("CA")).unwrap();
    admit(ingress.addr, &admitted).await;
    let (status, _) = post_signed(ingress.addr, "/twilio/status", &completed(&admitted)).await;
    assert_eq!(status, 204);
    let end = subject::event(&acme(), &admitted, sb_schemas::Kind::End);
    assert_eq!(support::stored(&env.js, "CALLS", &end).await, 1);
    assert!(stored_for(&env, &stranger).await.is_empty());
    ingress.shutdown().await;
}

/// A frame over the transport's hard limit (64 × `SB_WS_MAX_MESSAGE_BYTES`) on a real
/// socket: the ingress closes it with 1009 (message too big), not silently (1005), and the
/// call it carried ends `Rejected`.
#[tokio::test]
async fn trust_a_frame_over_the_hard_limit_is_closed_with_1009() {
    let env = TestEnv::start().await.unwrap();
    let (_runtime, ingress) = start(&env).await;
    let sid = CallSid::parse(&new_sid("CA")).unwrap();
    let parameters = admit(ingress.addr, &sid).await;
    let mut ws = open(ingress.addr).await;
    start_stream(&mut ws, &sid, parameters).await;
    // The default `SB_WS_MAX_MESSAGE_BYTES` (16 KiB) times 64.
    let limit = 16 * 1024 * 64;
    let huge = "x".repeat(limit + 1);
    // The ingress may close before the whole frame is written; the write's result is moot.
    let _ =
        futures::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text(huge)).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
    let ends = eventually("the call's end", WAIT, || async {
        let events = crate::ingress::call_events(&env, &sid).await;
        events.into_iter().find_map(|e| match e.body {
            sb_schemas::Body::End(end) => Some(end.reason),
            _ => None,
        })
    })
    .await
    .unwrap();
    assert_eq!(ends, sb_schemas::EndReason::Rejected);
}
