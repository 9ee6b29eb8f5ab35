//! A tiny fake of Switchboard's ingress for the caller tests: checks every signature with
//! sb-twilio's validator, answers TwiML, and on the media socket plays a greeting and an
//! answer (media + marks), clears when the caller barges in, and records what it saw.
//! State: what it saw, in a shared list with a change counter to wait on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sb_sim::SimServer;
use sb_twilio::twiml::{ConnectStream, say_and_hang_up};
use sb_twilio::{
    InboundMessage, IncomingCall, OutboundMessage, RequestValidator, StatusCallback, parse_inbound,
};
use tokio::sync::watch;

use crate::{PUBLIC, TOKEN};

/// An opaque parameter in the shape of Switchboard's call credential: echoed untouched.
pub(crate) const CREDENTIAL: &str = "v1.1700000300.q-Z_09aZ-Xy_8bCdEfGhIjKlMnOpQrStUvWxYz0123456";

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    Converse,
    BadMessages,
    Reject,
}

/// What the fake ingress saw, in order.
#[derive(Debug, Clone)]
pub(crate) enum Seen {
    Webhook {
        valid: bool,
        call: IncomingCall,
    },
    Upgrade {
        valid: bool,
    },
    Stream(InboundMessage),
    Status {
        valid: bool,
        callback: StatusCallback,
    },
}

#[derive(Clone)]
pub(crate) struct Fake {
    mode: Mode,
    validator: RequestValidator,
    seen: Arc<Mutex<Vec<Seen>>>,
    changed: watch::Sender<usize>,
}

impl Fake {
    fn push(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (bounded) until `condition` holds over what was seen.
    pub(crate) async fn wait_for(&self, condition: impl Fn(&[Seen]) -> bool) {
        let mut changed = self.changed.subscribe();
        let wait = async {
            while !condition(&self.seen()) {
                changed.changed().await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("condition never held");
    }
}

fn signature(headers: &HeaderMap) -> String {
    headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn voice(State(fake): State<Fake>, headers: HeaderMap, body: Bytes) -> Response {
    let call = IncomingCall::from_form(&body).unwrap();
    let valid = fake
        .validator
        .validate(
            &format!("{PUBLIC}/twilio/voice"),
            &call.params,
            &signature(&headers),
        )
        .is_ok();
    let from = call.from.clone();
    fake.push(Seen::Webhook { valid, call });
    if !valid {
        return (axum::http::StatusCode::FORBIDDEN, "bad signature").into_response();
    }
    let twiml = match fake.mode {
        Mode::Reject => say_and_hang_up("We are closed."),
        _ => ConnectStream::new("wss://agent.example.com/twilio/media")
            .parameter("tenant", "acme")
            .parameter("callerE164", from)
            .parameter("credential", CREDENTIAL)
            .to_twiml()
            .unwrap(),
    };
    ([("content-type", "text/xml")], twiml).into_response()
}

async fn status(State(fake): State<Fake>, headers: HeaderMap, body: Bytes) -> Response {
    let callback = StatusCallback::from_form(&body).unwrap();
    let valid = fake
        .validator
        .validate(
            &format!("{PUBLIC}/twilio/status"),
            &callback.params,
            &signature(&headers),
        )
        .is_ok();
    fake.push(Seen::Status { valid, callback });
    axum::http::StatusCode::NO_CONTENT.into_response()
}

async fn media(
    State(fake): State<Fake>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let valid = fake
        .validator
        .validate_websocket(&format!("{PUBLIC}/twilio/media"), &signature(&headers))
        .is_ok();
    fake.push(Seen::Upgrade { valid });
    upgrade.on_upgrade(move |socket| bot(fake, socket))
}

fn is_speech(payload: &str) -> bool {
    let audio = sb_twilio::media::decode_payload(payload).unwrap();
    audio.iter().any(|b| *b != 0xFF && *b != 0x7F)
}

async fn send(socket: &mut WebSocket, message: OutboundMessage) {
    socket
        .send(Message::Text(message.to_json().into()))
        .await
        .unwrap();
}

/// Plays `ms` of bot audio as 20 ms messages, then a mark.
async fn play(socket: &mut WebSocket, stream_sid: &str, ms: usize, mark: &str) {
    for _ in 0..ms / 20 {
        send(socket, OutboundMessage::media(stream_sid, &[0x10; 160])).await;
    }
    send(socket, OutboundMessage::mark(stream_sid, mark)).await;
}

/// The bot: greeting on `start`; an answer 200 ms after the caller stops speaking; `clear`
/// when the caller speaks over the answer. In BadMessages mode: bad frames, then hang up.
async fn bot(fake: Fake, mut socket: WebSocket) {
    let mut stream_sid = String::new();
    let (mut speaking, mut quiet_frames, mut answered, mut cleared) = (false, 0, false, false);
    while let Some(Ok(message)) = socket.recv().await {
        let Message::Text(text) = message else {
            continue;
        };
        let message = parse_inbound(text.as_str()).unwrap();
        fake.push(Seen::Stream(message.clone()));
        match message {
            InboundMessage::Start {
                stream_sid: sid, ..
            } if fake.mode == Mode::BadMessages => {
                socket
                    .send(Message::Binary(vec![1, 2, 3].into()))
                    .await
                    .unwrap();
                let extra = format!(
                    r#"{{"event":"media","streamSid":"{sid}","media":{{"payload":"","track":"outbound"}}}}"#
                );
                socket.send(Message::Text(extra.into())).await.unwrap();
                send(
                    &mut socket,
                    OutboundMessage::clear("MZ00000000000000000000000000000000"),
                )
                .await;
                send(&mut socket, OutboundMessage::mark(&sid, "sync")).await;
            }
            InboundMessage::Mark { mark, .. } if mark.name == "sync" => return,
            InboundMessage::Start {
                stream_sid: sid, ..
            } => {
                stream_sid = sid;
                play(&mut socket, &stream_sid, 400, "greeting").await;
            }
            InboundMessage::Media { media, .. } => {
                let speech = is_speech(&media.payload);
                if speech && answered && !cleared {
                    cleared = true;
                    send(&mut socket, OutboundMessage::clear(&stream_sid)).await;
                }
                quiet_frames = if speech { 0 } else { quiet_frames + 1 };
                speaking = speech || (speaking && quiet_frames < 10);
                if !speaking && quiet_frames == 10 && !answered && fake.seen().iter().any(spoke) {
                    answered = true;
                    play(&mut socket, &stream_sid, 1000, "answer-1").await;
                }
            }
            _ => {}
        }
    }
}

fn spoke(seen: &Seen) -> bool {
    matches!(seen, Seen::Stream(InboundMessage::Media { media, .. }) if is_speech(&media.payload))
}

pub(crate) async fn fake_ingress(mode: Mode) -> (SimServer, Fake) {
    let fake = Fake {
        mode,
        validator: RequestValidator::new(TOKEN),
        seen: Arc::default(),
        changed: watch::Sender::new(0),
    };
    let app = Router::new()
        .route("/twilio/voice", post(voice))
        .route("/twilio/status", post(status))
        .route("/twilio/media", get(media))
        .with_state(fake.clone());
    (
        SimServer::spawn("127.0.0.1:0".parse().unwrap(), app)
            .await
            .unwrap(),
        fake,
    )
}
