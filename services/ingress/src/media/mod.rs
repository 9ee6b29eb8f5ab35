//! The Media Streams WebSocket (`GET /twilio/media`): the upgrade and its socket task.
//!
//! Consumes the signed upgrade request (signature over the `wss://` public URL; 403 before
//! upgrading on a mismatch) and then the socket's frames. The signature is the same for
//! every call, so it only says the socket comes from Twilio; which call it may serve, for
//! which tenant, is decided at `start` by [`gate`]. Produces the socket task, tracked in the
//! runtime's `Shutdown` tracker (axum's graceful shutdown does not wait for upgraded
//! sockets), which runs [`serve`] over a `Sink` of [`Outgoing`] messages and a `Stream` of
//! [`Incoming`] frames so tests drive it through channels. State: per socket, in
//! [`session`], [`call`] and [`gate`].

mod batch;
mod call;
mod fast;
mod gate;
mod handoff;
mod prompts;
mod relink;
mod session;
mod turn_taking;

use axum::extract::State;
pub use axum::extract::ws::Utf8Bytes;
use axum::extract::ws::{
    CloseFrame, Message, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt as _, StreamExt as _, future};
use sb_runtime::metrics::Metric;

pub(crate) use batch::AckQueue;
pub use session::serve;

use crate::{Backend, IngressState, webhook};

/// Frames beyond this multiple of the per-message cap close the socket (transport limit);
/// between the two, a message is rejected on its own and the call goes on.
const HARD_LIMIT_FACTOR: usize = 64;
/// Socket read buffer. tungstenite zero-fills the whole buffer before every read, so its
/// 128 KiB default cost ~10 µs per Twilio frame (~350 bytes); 2 KiB holds a few frames.
const READ_BUFFER_BYTES: usize = 2 * 1024;

/// One frame from Twilio, as the socket task sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame: one JSON message (`String`s convert with `.into()`).
    Text(Utf8Bytes),
    /// A binary frame (Twilio never sends one): its length.
    Binary(usize),
    /// The peer closed the socket.
    Closed,
    /// A frame over the hard limit: the socket is closed with 1009.
    TooBig,
    /// The transport failed (reset, protocol error).
    Failed(String),
}

/// WebSocket close code of a socket refused at `start` (RFC 6455: policy violation).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// WebSocket close code of a socket that sent a frame over the hard limit (RFC 6455:
/// message too big).
pub const CLOSE_TOO_BIG: u16 = 1009;

/// What the socket task sends Twilio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text frame: one JSON message.
    Text(String),
    /// A close frame, the last thing sent (a refused `start`).
    Close { code: u16, reason: &'static str },
}

/// `GET /twilio/media`: validates the signature, then upgrades.
pub(crate) async fn upgrade<B: Backend>(
    State(state): State<IngressState<B>>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if webhook::verify(&state.settings, "media", &uri, &headers, None).is_err() {
        metrics::counter!(Metric::IngressWebhooks.name(), "route" => "media", "outcome" => "bad_signature")
            .increment(1);
        return (StatusCode::FORBIDDEN, "invalid X-Twilio-Signature\n").into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            metrics::counter!(Metric::IngressWebhooks.name(), "route" => "media", "outcome" => "bad_request")
                .increment(1);
            return rejection.into_response();
        }
    };
    metrics::counter!(Metric::IngressWebhooks.name(), "route" => "media", "outcome" => "accepted")
        .increment(1);
    // Taken before answering, so the drain cannot miss a socket that is about to start.
    let tracked = state.shutdown.tracker().token();
    let hard_limit = state
        .settings
        .ws_max_message_bytes
        .saturating_mul(HARD_LIMIT_FACTOR);
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| async move {
            let _tracked = tracked;
            let (sink, stream) = socket.split();
            let sink = sink.with(|out: Outgoing| {
                future::ready(Ok::<_, axum::Error>(match out {
                    Outgoing::Text(text) => Message::Text(text.into()),
                    Outgoing::Close { code, reason } => Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    })),
                }))
            });
            let stream = stream.filter_map(|message| future::ready(incoming(message)));
            serve(state, sink, stream).await;
        })
}

/// Maps a WebSocket message; pings and pongs are answered by the transport.
fn incoming(message: Result<Message, axum::Error>) -> Option<Incoming> {
    match message {
        Ok(Message::Text(text)) => Some(Incoming::Text(text)),
        Ok(Message::Binary(bytes)) => Some(Incoming::Binary(bytes.len())),
        Ok(Message::Close(_)) => Some(Incoming::Closed),
        Ok(Message::Ping(_) | Message::Pong(_)) => None,
        Err(error) => {
            let text = error.to_string();
            // tungstenite's `CapacityError::MessageTooLong` ("Message too long: …"): the
            // frame over `max_message_size` / `max_frame_size`.
            if text.contains("too long") {
                Some(Incoming::TooBig)
            } else {
                Some(Incoming::Failed(text))
            }
        }
    }
}
