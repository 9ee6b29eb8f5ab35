//! The `/v1/listen` WebSocket: handshake checks, then one task pair per connection.
//!
//! Consumes the upgrade request (auth header or `Sec-WebSocket-Protocol: token, <key>`,
//! query string) and then WebSocket frames; produces a 401/400 refusal with `dg-error`, or
//! the session's messages. A reader loop feeds frames to the [`Session`] and enforces the
//! idle timeout (close 1011 `NET-0001`); a writer task sends messages in order, holding each
//! final result back by the configured extra latency. State: the session, owned by the
//! reader; counters (connections per language too) in the shared [`Stats`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt as _, StreamExt as _};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use tokio::sync::mpsc;

use super::input::{Script, UndecodableAudio};
use super::params::ListenParams;
use super::protocol::{self, StreamInfo};
use super::session::{Control, Outgoing, Session, Tuning};
use super::{Shared, Stats};
use crate::support::{credential, key_accepted};

/// Close code for server errors, with Deepgram's `NET-0001` (no frames) reason.
const CLOSE_NET_ERROR: u16 = 1011;
/// Close code for undecodable audio (`DATA-0000`).
const CLOSE_DATA_ERROR: u16 = 1008;
/// How long to wait for the client's answer to our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Socket read buffer: audio arrives in pieces of 20–1000 ms (160–8,000 bytes of µ-law).
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// What the writer task does next.
enum Outbound {
    Message(Outgoing),
    Close(u16, &'static str),
}

/// `GET /v1/listen`.
pub(crate) async fn listen(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let request_id = uuid::Uuid::now_v7().to_string();
    let (presented, via_protocol) = presented_key(&headers);
    if !key_accepted(shared.config.api_key.as_ref(), presented) {
        tracing::info!(%request_id, "listen refused: bad credentials");
        let body = json!({ "err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.", "request_id": request_id });
        return refusal(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials.",
            &request_id,
            body,
        );
    }
    let params = match ListenParams::parse(query.as_deref().unwrap_or("")) {
        Ok(params) => params,
        Err(err) => {
            tracing::info!(%request_id, error = %err, "listen refused: bad query");
            let body = json!({ "err_code": "Bad Request", "err_msg": err.to_string(), "request_id": request_id });
            return refusal(StatusCode::BAD_REQUEST, &err.to_string(), &request_id, body);
        }
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let upgrade = if via_protocol {
        upgrade.protocols(["token"])
    } else {
        upgrade
    };
    let info = StreamInfo {
        request_id: request_id.clone(),
        model: params.model.clone(),
        punctuate: params.punctuate,
    };
    let script = if params.script.is_empty() {
        shared.config.script.clone()
    } else {
        params.script.clone()
    };
    let tuning = Tuning {
        vad: shared.config.vad,
        segment_hangover_ms: shared.config.segment_hangover_ms,
        silence_final_ms: shared.config.silence_final_ms,
        pause_interim_ms: shared.config.pause_interim_ms,
    };
    let created = protocol::rfc3339_ms(SystemTime::now());
    let language = params.language.clone();
    let session = Session::new(
        info,
        params,
        tuning,
        Script::new(script, shared.config.fallback_transcript.clone()),
        created,
    );
    // tungstenite zero-fills its whole read buffer (128 KiB by default) before every read.
    let mut response = upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| serve(socket, session, shared, language));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("dg-request-id", value);
    }
    response
}

/// The key from `Authorization: Token|Bearer <key>`, or from `Sec-WebSocket-Protocol:
/// token, <key>` (browsers); the flag says it came from the protocol header.
fn presented_key(headers: &HeaderMap) -> (Option<&str>, bool) {
    if let Some(key) = credential(headers.get(header::AUTHORIZATION), &["Token", "Bearer"]) {
        return (Some(key), false);
    }
    let protocols = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    let mut parts = protocols
        .into_iter()
        .flat_map(|p| p.split(','))
        .map(str::trim);
    match (parts.next(), parts.next()) {
        (Some(scheme), Some(key)) if scheme.eq_ignore_ascii_case("token") => (Some(key), true),
        _ => (None, false),
    }
}

fn refusal(
    status: StatusCode,
    reason: &str,
    request_id: &str,
    body: serde_json::Value,
) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    for (name, value) in [("dg-error", reason), ("dg-request-id", request_id)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

async fn serve(socket: WebSocket, mut session: Session, shared: Arc<Shared>, language: String) {
    let stats: &Stats = &shared.stats;
    stats.connections.fetch_add(1, Ordering::Relaxed);
    stats.languages.add(&language);
    stats.active.fetch_add(1, Ordering::Relaxed);
    let (sink, mut stream) = socket.split();
    let (outbox, inbox) = mpsc::unbounded_channel();
    let final_delay = Duration::from_millis(shared.config.final_delay_ms);
    let writer = tokio::spawn(write_loop(sink, inbox, final_delay));
    let idle = Duration::from_millis(shared.config.idle_timeout_ms);
    let mut deadline = tokio::time::Instant::now() + idle;
    let send = |messages: Vec<Outgoing>| {
        for message in messages {
            let _ = outbox.send(Outbound::Message(message));
        }
    };
    let mut closing = false;
    while !closing {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            () = tokio::time::sleep_until(deadline) => {
                tracing::info!("listen idle timeout");
                let _ = outbox.send(Outbound::Close(CLOSE_NET_ERROR, "NET-0001"));
                break;
            }
        };
        let control = match frame {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(bytes))) => {
                stats
                    .audio_bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                match session.on_audio(&bytes) {
                    Ok(control) => control,
                    Err(UndecodableAudio) => {
                        let _ = outbox.send(Outbound::Close(CLOSE_DATA_ERROR, "DATA-0000"));
                        break;
                    }
                }
            }
            Some(Ok(Message::Text(text))) => session.on_text(text.as_str()),
        };
        deadline = tokio::time::Instant::now() + idle;
        match control {
            Control::Reply(messages) => send(messages),
            Control::Close(messages) => {
                send(messages);
                let _ = outbox.send(Outbound::Close(1000, ""));
                closing = true;
            }
        }
    }
    drop(outbox);
    let _ = writer.await;
    // Let the client answer our close frame (or notice its own) before dropping the socket.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while stream.next().await.is_some() {}
    })
    .await;
    stats.active.fetch_sub(1, Ordering::Relaxed);
}

async fn write_loop(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut inbox: mpsc::UnboundedReceiver<Outbound>,
    final_delay: Duration,
) {
    while let Some(outbound) = inbox.recv().await {
        match outbound {
            Outbound::Message(message) => {
                if message.is_final && !final_delay.is_zero() {
                    tokio::time::sleep(final_delay).await;
                }
                if sink
                    .send(Message::Text(message.json.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Outbound::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                return;
            }
        }
    }
    let _ = sink.close().await;
}
