//! Twilio's side of the trust tests, by hand: the signed webhook (its TwiML parameters),
//! Media Streams sockets with the captured upgrade signature and any `start` a test writes,
//! the close code the ingress answers with; plus what the tests inspect: subjects published
//! (core subscriptions), messages stored per call, the refusal counter on `/metrics`, and a
//! stt worker on the Deepgram stand-in. State: per test, in these values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use sb_schemas::{CallSid, TenantId, subject};
use sb_sim::caller::new_sid;
use sb_sim::{SimServer, deepgram};
use sb_tests::TestEnv;
use sb_twilio::media::{InboundMessage, MediaFormat, StartMeta, StopMeta};
use sb_twilio::{IncomingCall, credential, twiml};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest as _};

use crate::ingress::{TOKEN, post_signed};
use crate::support;

pub(crate) const WAIT: Duration = Duration::from_secs(15);
pub(crate) const STREAM_URL: &str = "wss://agent.example.com/twilio/media";
pub(crate) const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub(crate) const ACME: &str = "+15005550006";
pub(crate) const CALLER: &str = "+14155551234";

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// Posts the signed incoming-call webhook for `sid` to acme's number; the TwiML's
/// `<Parameter>`s, which Twilio echoes in `start.customParameters`.
pub(crate) async fn admit(addr: SocketAddr, sid: &CallSid) -> BTreeMap<String, String> {
    let call = IncomingCall::ringing(ACCOUNT, sid.as_str(), CALLER, ACME, "inbound");
    let (status, body) = post_signed(addr, "/twilio/voice", &call.params).await;
    assert_eq!(status, 200, "{body}");
    let response = twiml::parse(&body).unwrap();
    let stream = response.connect_stream().unwrap();
    assert_eq!(stream.url, STREAM_URL);
    stream.parameters.iter().cloned().collect()
}

/// Opens a media socket as Twilio does: the upgrade signed over the stream URL, which is
/// the same for every call (so any socket Twilio ever opened shows it).
pub(crate) async fn open(addr: SocketAddr) -> Ws {
    let mut request = format!("ws://{addr}/twilio/media")
        .into_client_request()
        .unwrap();
    let signature = sb_twilio::signature::sign_url(TOKEN, STREAM_URL);
    request
        .headers_mut()
        .insert("X-Twilio-Signature", signature.parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

async fn send(ws: &mut Ws, message: InboundMessage) {
    ws.send(Message::text(message.to_json())).await.unwrap();
}

/// `connected`, then `start` for `sid` with `parameters` as `customParameters`; the
/// stream sid.
pub(crate) async fn start_stream(
    ws: &mut Ws,
    sid: &CallSid,
    parameters: BTreeMap<String, String>,
) -> String {
    let stream_sid = new_sid("MZ");
    send(
        ws,
        InboundMessage::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into(),
        },
    )
    .await;
    let start = StartMeta {
        account_sid: ACCOUNT.into(),
        stream_sid: stream_sid.clone(),
        call_sid: sid.as_str().into(),
        tracks: vec!["inbound".into()],
        media_format: MediaFormat::default(),
        custom_parameters: parameters,
    };
    send(
        ws,
        InboundMessage::Start {
            sequence_number: 1,
            start,
            stream_sid: stream_sid.clone(),
        },
    )
    .await;
    stream_sid
}

/// `stop` for `sid` on its stream.
pub(crate) async fn stop_stream(ws: &mut Ws, sid: &CallSid, stream_sid: &str) {
    let stop = StopMeta {
        account_sid: ACCOUNT.into(),
        call_sid: sid.as_str().into(),
    };
    send(
        ws,
        InboundMessage::Stop {
            sequence_number: 2,
            stop,
            stream_sid: stream_sid.into(),
        },
    )
    .await;
}

/// The close code the ingress ended `ws` with (`None`: closed without a close frame).
pub(crate) async fn close_code(ws: &mut Ws) -> Option<u16> {
    let closed = async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    };
    tokio::time::timeout(WAIT, closed)
        .await
        .expect("the ingress closed the socket")
}

/// `parameters` with `tenant` (and, given, `credential`) replaced or removed.
pub(crate) fn forged(
    parameters: &BTreeMap<String, String>,
    tenant: &str,
    credential: Option<&str>,
) -> BTreeMap<String, String> {
    let mut out = parameters.clone();
    out.insert("tenant".into(), tenant.into());
    match credential {
        Some(value) => out.insert(credential::PARAMETER.into(), value.into()),
        None => out.remove(credential::PARAMETER),
    };
    out
}

/// `switchboard_ingress_sockets_refused_total{reason}` as the ingress' `/metrics` shows it.
pub(crate) async fn refused(addr: SocketAddr, reason: &str) -> u64 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = "GET /metrics HTTP/1.1\r\nHost: ingress\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let needle = format!("switchboard_ingress_sockets_refused_total{{reason=\"{reason}\"}} ");
    response
        .lines()
        .find_map(|line| line.strip_prefix(&needle)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Subjects published on (core subscription, so work-queue leases are seen even once
/// acked), recorded from before the call.
#[derive(Clone, Default)]
pub(crate) struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    pub(crate) async fn watch(env: &TestEnv, filters: &[String]) -> Self {
        let seen = Self::default();
        for filter in filters {
            let mut subscription = env.client.subscribe(filter.clone()).await.unwrap();
            let sink = seen.0.clone();
            tokio::spawn(async move {
                while let Some(message) = subscription.next().await {
                    sink.lock().unwrap().push(message.subject.to_string());
                }
            });
        }
        env.client.flush().await.unwrap();
        seen
    }

    pub(crate) fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Messages stored for `sid` in CALLS, AUDIO and STT_ASSIGN, by subject.
pub(crate) async fn stored_for(env: &TestEnv, sid: &CallSid) -> BTreeMap<String, usize> {
    let mut all = BTreeMap::new();
    for (stream, filter) in [
        ("CALLS", subject::call_events_filter(sid)),
        ("AUDIO", subject::call_audio_filter(sid)),
        ("STT_ASSIGN", format!("assign.stt.*.{sid}")),
    ] {
        all.extend(support::subject_counts(&env.js, stream, &filter).await);
    }
    all
}

/// A stt worker in this process, so leases are taken and acked.
pub(crate) struct Stt {
    /// The Deepgram stand-in it opens a stream on per call it leases.
    deepgram: Arc<deepgram::Shared>,
    _sim: SimServer,
    pub(crate) runtime: sb_runtime::Runtime,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Stt {
    /// Provider streams open now: one per call leased.
    pub(crate) fn streams(&self) -> i64 {
        self.deepgram.stats().active.load(Ordering::Relaxed)
    }
}

pub(crate) async fn stt_worker(env: &TestEnv) -> Stt {
    let shared = deepgram::Shared::new(deepgram::Config::default());
    let sim = SimServer::spawn(
        "127.0.0.1:0".parse().unwrap(),
        deepgram::router(shared.clone()),
    )
    .await
    .unwrap();
    let config = sb_stt::SttConfig::for_tests(&sim.ws_url(), Some("test-key"));
    let client = sb_stt::Deepgram::new(&config.deepgram).unwrap();
    let runtime = env.runtime("stt").await.unwrap();
    let task = tokio::spawn({
        let runtime = runtime.clone();
        async move { sb_stt::run(runtime, client, config).await.unwrap() }
    });
    Stt {
        deepgram: shared,
        _sim: sim,
        runtime,
        task,
    }
}
