//! Deepgram live-streaming client (`wss://…/v1/listen`, PROTOCOLS §5).
//!
//! Consumes [`SttCommand`]s: audio goes out as binary frames of raw µ-law (never an empty
//! one), `Finalize`/`CloseStream` as text; a `KeepAlive` goes out whenever nothing was sent
//! for the keep-alive interval. Produces [`SttEvent`]s parsed from the server's text frames
//! ([`wire`]), ending with [`SttEvent::Closed`]. Records the provider time-to-first-byte
//! (first audio sent → first result) and counts unusable replies. State: one socket task
//! per stream, owning the WebSocket; it ends when the stream closes or its owner drops it.

pub(crate) mod wire;

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use sb_runtime::{Secret, metrics::Metric};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{
    self, Message,
    client::IntoClientRequest as _,
    http::{HeaderValue, header::AUTHORIZATION},
    protocol::{WebSocketConfig, frame::coding::CloseCode},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::Instrument as _;
use url::Url;

use crate::config::{ConfigError, DeepgramConfig};
use crate::provider::{
    Closed, SpeechToText, StreamOptions, SttCommand, SttError, SttEvent, SttStream,
};

/// The `provider` metric label.
pub const PROVIDER: &str = "deepgram";
/// Longest WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Socket read buffer: Deepgram's results are a few KiB at most.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// Longest wait for the server to close after `CloseStream`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands (≈ 20 ms frames) buffered towards the socket.
const COMMAND_BUFFER: usize = 64;
/// Events buffered towards the worker.
const EVENT_BUFFER: usize = 64;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The Deepgram client: one live stream per [`SpeechToText::open`].
#[derive(Debug, Clone)]
pub struct Deepgram {
    /// `…/v1/listen`, without the query.
    listen: Url,
    api_key: Option<Secret>,
    model: String,
    keepalive: Duration,
}

impl Deepgram {
    /// Validates the settings (see [`DeepgramConfig::validate`]).
    pub fn new(config: &DeepgramConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            listen: config.validate()?,
            api_key: config.api_key.clone().filter(|k| !k.is_empty()),
            model: config.model.clone(),
            keepalive: Duration::from_millis(config.keepalive_ms),
        })
    }

    /// The model a stream uses: the tenant's, else the configured one.
    fn model<'a>(&'a self, options: &'a StreamOptions) -> &'a str {
        options.model.as_deref().unwrap_or(&self.model)
    }

    /// The stream URL with its query (no secret in it): the tenant's model, language and
    /// endpointing.
    pub fn stream_url(&self, options: &StreamOptions) -> Url {
        let mut url = self.listen.clone();
        url.query_pairs_mut()
            .append_pair("model", self.model(options))
            .append_pair("language", &options.language)
            .append_pair("encoding", "mulaw")
            .append_pair("sample_rate", "8000")
            .append_pair("channels", "1")
            .append_pair("interim_results", "true")
            .append_pair("endpointing", &options.endpointing_ms.to_string())
            .append_pair("vad_events", "true")
            .append_pair("utterance_end_ms", "1000")
            .append_pair("smart_format", "true")
            .append_pair("punctuate", "true");
        url
    }

    async fn connect(&self, options: &StreamOptions) -> Result<Socket, SttError> {
        let url = self.stream_url(options);
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| SttError::Connect(e.to_string()))?;
        if let Some(key) = &self.api_key {
            let mut value = HeaderValue::from_str(&format!("Token {}", key.expose()))
                .map_err(|_| SttError::Connect("the API key is not a valid header value".into()))?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        // Small reads (tungstenite zero-fills its whole read buffer, 128 KiB by default,
        // before every read; results are a few KiB) and no Nagle delay on audio writes.
        let ws_config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
        let connect = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
        let (socket, response) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| SttError::Timeout)?
            .map_err(refused)?;
        let request_id = response
            .headers()
            .get("dg-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (model, language) = (self.model(options), options.language.as_str());
        tracing::info!(request_id, model, language, "stt stream open");
        Ok(socket)
    }
}

fn refused(error: tungstenite::Error) -> SttError {
    match error {
        tungstenite::Error::Http(response) => {
            let header = response
                .headers()
                .get("dg-error")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).chars().take(200).collect());
            SttError::Refused {
                status: response.status().as_u16(),
                reason: header.or(body).unwrap_or_default(),
            }
        }
        other => SttError::Connect(other.to_string()),
    }
}

impl SpeechToText for Deepgram {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn open(&self, options: &StreamOptions) -> Result<SttStream, SttError> {
        let socket = self.connect(options).await?;
        let (commands, command_rx) = mpsc::channel(COMMAND_BUFFER);
        let (event_tx, events) = mpsc::channel(EVENT_BUFFER);
        let task = drive(socket, command_rx, event_tx, self.keepalive);
        tokio::spawn(task.instrument(tracing::Span::current()));
        Ok(SttStream { commands, events })
    }
}

/// Why the socket loop stopped.
fn dropped(kind: &'static str, detail: impl ToString) -> Closed {
    Closed::Dropped {
        kind,
        detail: detail.to_string(),
    }
}

/// The socket task: commands out, events in, keep-alives in between.
async fn drive(
    socket: Socket,
    mut commands: mpsc::Receiver<SttCommand>,
    events: mpsc::Sender<SttEvent>,
    keepalive: Duration,
) {
    let (mut sink, mut incoming) = socket.split();
    let mut last_sent = Instant::now();
    let mut first_audio: Option<Instant> = None;
    let mut ttfb_pending = true;
    let mut closing: Option<Instant> = None;
    let closed = loop {
        tokio::select! {
            command = commands.recv(), if closing.is_none() => {
                let message = match command {
                    Some(SttCommand::Audio(bytes)) if bytes.is_empty() => continue,
                    Some(SttCommand::Audio(bytes)) => {
                        first_audio.get_or_insert_with(Instant::now);
                        Message::Binary(bytes)
                    }
                    Some(SttCommand::Finalize) => Message::text(wire::FINALIZE),
                    Some(SttCommand::Close) => {
                        closing = Some(Instant::now() + CLOSE_TIMEOUT);
                        Message::text(wire::CLOSE_STREAM)
                    }
                    None => {
                        // The owner is gone (hand-off, stale, crash): just hang up.
                        let _ = sink.send(Message::Close(None)).await;
                        return;
                    }
                };
                if let Err(error) = sink.send(message).await {
                    break dropped("send", error);
                }
                last_sent = Instant::now();
            }
            () = tokio::time::sleep_until(last_sent + keepalive), if closing.is_none() => {
                if let Err(error) = sink.send(Message::text(wire::KEEP_ALIVE)).await {
                    break dropped("send", error);
                }
                last_sent = Instant::now();
            }
            () = tokio::time::sleep_until(closing.unwrap_or_else(Instant::now)), if closing.is_some() => {
                break dropped("close_timeout", "no close frame after CloseStream");
            }
            frame = incoming.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let (true, Some(first)) = (ttfb_pending, first_audio) {
                        ttfb_pending = false;
                        metrics::histogram!(Metric::ProviderTtfbSeconds.name(), "provider" => PROVIDER)
                            .record(first.elapsed().as_secs_f64());
                    }
                    match wire::parse(text.as_str()) {
                        Ok(Some(event)) => {
                            if events.send(event).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(error) => {
                            metrics::counter!(Metric::StageSkipped.name(), "stage" => "stt", "reason" => error.kind())
                                .increment(1);
                            tracing::warn!(%error, "unusable stt reply");
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => break close_reason(closing.is_some(), frame),
                Some(Ok(_)) => {}
                Some(Err(error)) => break dropped("read", error),
                None if closing.is_some() => break Closed::Normal,
                None => break dropped("eof", "the connection ended without a close frame"),
            }
        }
    };
    if let Closed::Dropped { kind, detail } = &closed {
        tracing::warn!(kind, detail, "stt stream dropped");
    }
    let _ = events.send(SttEvent::Closed(closed)).await;
}

/// A close frame after our `CloseStream` with code 1000 is the normal end; anything else
/// (e.g. 1011 `NET-0001`, 1008 `DATA-0000`) dropped the stream.
fn close_reason(closing: bool, frame: Option<tungstenite::protocol::CloseFrame>) -> Closed {
    match frame {
        Some(frame) if closing && frame.code == CloseCode::Normal => Closed::Normal,
        None if closing => Closed::Normal,
        Some(frame) => dropped(
            "closed",
            format!("{} {}", u16::from(frame.code), frame.reason.as_str()),
        ),
        None => dropped("closed", "close without a frame"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SttConfig;

    /// The stream URL carries every parameter of PROTOCOLS §5.1 with the tenant's
    /// endpointing and language, and never the key.
    #[test]
    fn stream_url() {
        let config = SttConfig::for_tests("wss://api.deepgram.com", Some("secret-key")).deepgram;
        let client = Deepgram::new(&config).unwrap();
        let url = client.stream_url(&StreamOptions::english(450));
        assert_eq!(
            url.as_str(),
            "wss://api.deepgram.com/v1/listen?model=nova-3&language=en&encoding=mulaw\
             &sample_rate=8000&channels=1&interim_results=true&endpointing=450&vad_events=true\
             &utterance_end_ms=1000&smart_format=true&punctuate=true"
        );
        assert!(!format!("{client:?}").contains("secret-key"));
    }

    /// A tenant's language and model replace the defaults; a region subtag goes as given.
    #[test]
    fn stream_url_per_tenant() {
        let config = SttConfig::for_tests("wss://api.deepgram.com", Some("k")).deepgram;
        let client = Deepgram::new(&config).unwrap();
        let hindi = StreamOptions {
            language: "hi".into(),
            ..StreamOptions::english(300)
        };
        let url = client.stream_url(&hindi);
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            (get("model"), get("language")),
            (Some("nova-3"), Some("hi"))
        );
        let own_model = StreamOptions {
            language: "pt-BR".into(),
            model: Some("nova-2".into()),
            ..StreamOptions::english(300)
        };
        let url = client.stream_url(&own_model);
        assert!(
            url.as_str().contains("model=nova-2&language=pt-BR&"),
            "{url}"
        );
    }

    /// Only a 1000 close after our CloseStream is a normal end.
    #[test]
    fn close_reasons() {
        let frame = |code: u16| {
            Some(tungstenite::protocol::CloseFrame {
                code: CloseCode::from(code),
                reason: "NET-0001".into(),
            })
        };
        assert_eq!(close_reason(true, frame(1000)), Closed::Normal);
        assert_eq!(close_reason(true, None), Closed::Normal);
        assert!(matches!(
            close_reason(true, frame(1011)),
            Closed::Dropped { .. }
        ));
        assert!(matches!(
            close_reason(false, frame(1000)),
            Closed::Dropped { .. }
        ));
        assert!(matches!(close_reason(false, None), Closed::Dropped { .. }));
    }
}
