//! How a media socket's call ends, against the real ingress, NATS and Redis (issue 15): a
//! socket that goes silent after `start` is closed after its tenant's idle timeout with
//! `end` reason `IdleTimeout`; one whose TCP connection is cut without `stop` ends with
//! `Closed`, not with a hang-up's `Stop`, unless Twilio connects the call anew through the
//! stream's `<Connect action>` (then the old socket ends without `end`). The sockets are
//! opened by hand (signed, with the webhook's credential), so they can go silent or vanish
//! mid-call.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use sb_ingress::{Ingress, IngressConfig};
use sb_schemas::{Body, CallSid, EndReason};
use sb_sim::caller::new_sid;
use sb_tests::{TestEnv, eventually};
use sb_twilio::media::{InboundMessage, MediaFormat, StartMeta, StopMeta};
use sb_twilio::signature::{sign_url, websocket_url};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

use crate::ingress::{PUBLIC, TOKEN, acme_call, call_events, incoming_call, post_signed};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The ingress with the shipped tenants, but acme's sockets idle out after `idle_secs`.
async fn start(
    env: &TestEnv,
    idle_secs: u32,
    dir: &std::path::Path,
) -> (sb_runtime::Runtime, Ingress) {
    let shipped =
        std::fs::read_to_string(sb_tests::workspace_root().join("deploy/base/tenants.toml"))
            .unwrap();
    let tenants = shipped.replacen(
        "id = \"acme\"\n",
        &format!("id = \"acme\"\nmedia_idle_secs = {idle_secs}\n"),
        1,
    );
    assert_ne!(tenants, shipped, "acme's entry was found");
    let file = dir.join("tenants.toml");
    std::fs::write(&file, tenants).unwrap();
    let mut config = env.runtime_config_as(sb_schemas::roles::Role::Ingress);
    config.tenants_file = file;
    let runtime = sb_runtime::Runtime::start("ingress", config).await.unwrap();
    let ingress = sb_ingress::start(&runtime, &IngressConfig::for_tests(TOKEN, PUBLIC))
        .await
        .unwrap();
    (runtime, ingress)
}

/// A new acme call: its webhook answered, its socket opened with the stream's signature
/// and `start` sent with the webhook's parameters (the credential among them).
async fn started_call(ingress: &Ingress) -> (CallSid, Socket) {
    let sid = CallSid::parse(&new_sid("CA")).unwrap();
    let (status, twiml) = incoming_call(ingress.addr, &sid).await;
    assert_eq!(status, 200, "{twiml}");
    let (socket, _) = open_stream(ingress, &sid, &twiml).await;
    (sid, socket)
}

/// The `<Connect><Stream>` of `twiml`, opened as Twilio opens it: signed, `connected`, then
/// `start` with the stream's parameters; the socket and its `streamSid`.
async fn open_stream(ingress: &Ingress, sid: &CallSid, twiml: &str) -> (Socket, String) {
    let stream = sb_twilio::twiml::parse(twiml)
        .unwrap()
        .connect_stream()
        .unwrap()
        .clone();
    let path = stream.url.splitn(4, '/').nth(3).unwrap();
    let mut request = format!("ws://{}/{path}", ingress.addr)
        .into_client_request()
        .unwrap();
    let signature = sign_url(TOKEN, &websocket_url(&stream.url));
    request
        .headers_mut()
        .insert("X-Twilio-Signature", signature.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let connected = InboundMessage::Connected {
        protocol: "Call".into(),
        version: "1.0.0".into(),
    };
    let stream_sid = new_sid("MZ");
    let start = InboundMessage::Start {
        sequence_number: 1,
        stream_sid: stream_sid.clone(),
        start: StartMeta {
            account_sid: sb_sim::caller::DEFAULT_ACCOUNT_SID.into(),
            stream_sid: stream_sid.clone(),
            call_sid: sid.as_str().into(),
            tracks: vec!["inbound".into()],
            media_format: MediaFormat::default(),
            custom_parameters: stream.parameters.into_iter().collect(),
        },
    };
    for message in [connected, start] {
        socket.send(Message::text(message.to_json())).await.unwrap();
    }
    (socket, stream_sid)
}

/// Waits until the call's `start` is stored: its socket passed the gate.
async fn admitted(env: &TestEnv, sid: &CallSid) {
    eventually("the call's start", Duration::from_secs(10), || async {
        call_events(env, sid)
            .await
            .iter()
            .any(|e| matches!(e.body, Body::Start(_)))
            .then_some(())
    })
    .await
    .unwrap();
}

/// The call's `end` reasons as stored, once there is one.
async fn ends(env: &TestEnv, sid: &CallSid) -> Vec<EndReason> {
    eventually("the call's end", Duration::from_secs(20), || async {
        let reasons: Vec<EndReason> = call_events(env, sid)
            .await
            .into_iter()
            .filter_map(|e| match e.body {
                Body::End(end) => Some(end.reason),
                _ => None,
            })
            .collect();
        (!reasons.is_empty()).then_some(reasons)
    })
    .await
    .unwrap()
}

/// Silent after `start`: closed by the ingress with 1000 once the tenant's idle timeout
/// passed, and the call ends as `IdleTimeout`.
#[tokio::test]
async fn a_silent_socket_is_closed_with_idle_timeout() {
    let env = TestEnv::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_runtime, ingress) = start(&env, 2, dir.path()).await;
    let (sid, mut socket) = started_call(&ingress).await;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("the socket was not closed by the ingress: {other:?}"),
        }
    };
    let code = close.map(|f| u16::from(f.code));
    assert_eq!(code, Some(1000));
    assert_eq!(ends(&env, &sid).await, [EndReason::IdleTimeout]);
}

/// A socket whose connection is cut after `start`, without `stop` or a close frame, ends
/// as `Closed`.
#[tokio::test]
async fn a_cut_connection_ends_the_call_as_closed() {
    let env = TestEnv::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_runtime, ingress) = start(&env, 60, dir.path()).await;
    let (sid, socket) = started_call(&ingress).await;
    // Admitted first (its `start` stored), then the TCP connection is dropped.
    admitted(&env, &sid).await;
    drop(socket);
    assert_eq!(ends(&env, &sid).await, [EndReason::Closed]);
}

/// The connection between Twilio and a live ingress is cut (no `stop`): Twilio requests the
/// stream's `<Connect action>` and connects the call anew; the old socket sees the new one
/// take the call and ends without `end`, so the call has one `end`, its real hang-up.
#[tokio::test]
async fn a_stream_cut_under_a_live_ingress_is_connected_anew() {
    let env = TestEnv::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_runtime, ingress) = start(&env, 60, dir.path()).await;
    let (sid, socket) = started_call(&ingress).await;
    admitted(&env, &sid).await;
    drop(socket);

    // What Twilio asks once the stream ended while the call lives.
    let mut params = acme_call(&sid).params;
    for (name, value) in &mut params {
        if name == "CallStatus" {
            *value = "in-progress".into();
        }
    }
    let action = "/twilio/stream-ended?tenant=acme";
    let (status, twiml) = post_signed(ingress.addr, action, &params).await;
    assert_eq!(status, 200, "{twiml}");
    let again = sb_twilio::twiml::parse(&twiml).unwrap();
    let stream = again.connect_stream().expect("the call is connected anew");
    assert!(
        stream.parameters.iter().any(|(name, _)| name == "handoff"),
        "{twiml}"
    );
    let (mut socket, stream_sid) = open_stream(&ingress, &sid, &twiml).await;
    let stop = InboundMessage::Stop {
        sequence_number: 2,
        stream_sid,
        stop: StopMeta {
            account_sid: sb_sim::caller::DEFAULT_ACCOUNT_SID.into(),
            call_sid: sid.as_str().into(),
        },
    };
    socket.send(Message::text(stop.to_json())).await.unwrap();
    assert_eq!(ends(&env, &sid).await, [EndReason::Stop]);
}
