//! The caller's control line to the Twilio stand-in: what an update (`POST
//! …/Calls/{sid}.json`) runs on the call reaches the media line here.
//!
//! Consumes the stand-in's `/sim/lines/{sid}` WebSocket (TwiML texts); produces
//! [`Switch`]es for the line: a redirect's `<Connect><Stream>` as a new, already connected
//! media socket with its parameters (Twilio stops the old stream and starts the new one),
//! a `<Hangup/>` as the end of the call. Also Twilio's `<Connect action>`: when a stream
//! ends without the call ending, what its action answers is run the same way
//! ([`on_stream_end`]). State: the control socket, in its task.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use sb_twilio::twiml::Response;

use super::line::OnStreamEnd;
use super::{CallerConfig, CallerError, Socket, connect_media, post_signed};

/// A media socket's halves.
pub(crate) type Sink = futures::stream::SplitSink<Socket, Message>;
pub(crate) type Stream = futures::stream::SplitStream<Socket>;

/// What an update did to the call.
pub(crate) enum Switch<Si, St> {
    /// Continue on a new stream (connected), with these `<Parameter>`s.
    Stream {
        sink: Si,
        stream: St,
        parameters: BTreeMap<String, String>,
    },
    /// The call was hung up.
    Hangup,
}

/// Registers the call's line with the stand-in at `control_url`; the switches its updates
/// cause arrive on the receiver until the call ends.
pub(crate) async fn open(
    config: &CallerConfig,
    control_url: &str,
    call_sid: &str,
) -> Result<mpsc::UnboundedReceiver<Switch<Sink, Stream>>, CallerError> {
    let base = control_url
        .trim_end_matches('/')
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let url = format!("{base}/sim/lines/{call_sid}");
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| CallerError::WebSocket(format!("control line: {e}")))?;
    let (switches, receiver) = mpsc::unbounded_channel();
    let config = config.clone();
    tokio::spawn(async move {
        loop {
            // The call ended (the line dropped its receiver): unregister.
            let message = tokio::select! {
                () = switches.closed() => break,
                message = socket.next() => message,
            };
            let Some(Ok(Message::Text(text))) = message else {
                match message {
                    Some(Ok(_)) => continue,
                    _ => break,
                }
            };
            let switch = match sb_twilio::twiml::parse(text.as_str()) {
                Ok(response) => run_twiml(&config, &response).await,
                Err(error) => {
                    tracing::warn!(%error, "unreadable TwiML on the control line");
                    continue;
                }
            };
            let hangup = matches!(switch, Switch::Hangup);
            if switches.send(switch).is_err() || hangup {
                break;
            }
        }
        let _ = socket.close(None).await;
    });
    Ok(receiver)
}

/// Runs TwiML on the call as Twilio would: a `<Connect><Stream>` connects a new media
/// socket; anything else (`<Hangup/>`, `<Say>…`), or a stream that does not connect, ends
/// the media line.
pub(crate) async fn run_twiml(config: &CallerConfig, response: &Response) -> Switch<Sink, Stream> {
    let Ok(stream) = response.connect_stream() else {
        return Switch::Hangup;
    };
    match connect_media(config, stream).await {
        Ok(media) => {
            let (sink, media_stream) = media.split();
            Switch::Stream {
                sink,
                stream: media_stream,
                parameters: stream.parameters.iter().cloned().collect(),
            }
        }
        Err(error) => {
            tracing::warn!(%error, "the new stream did not connect");
            Switch::Hangup
        }
    }
}

/// Twilio's `<Connect action>`: once a stream ends without the call ending, the action URL
/// (a path under the public URL; any other host is out of reach) is requested, signed,
/// with the call's parameters and `CallStatus=in-progress`, and its answer is run.
pub(crate) fn on_stream_end(
    config: &CallerConfig,
    http: &reqwest::Client,
    action: Option<&str>,
    call_params: &[(String, String)],
) -> Option<OnStreamEnd<Sink, Stream>> {
    let path = action?.strip_prefix(config.public_url.trim_end_matches('/'))?;
    let path = path.to_owned();
    let params: Vec<(String, String)> = call_params
        .iter()
        .map(|(name, value)| match name.as_str() {
            "CallStatus" => (name.clone(), "in-progress".to_owned()),
            _ => (name.clone(), value.clone()),
        })
        .collect();
    let (config, http) = (config.clone(), http.clone());
    Some(Box::new(move || {
        let (config, http, path, params) =
            (config.clone(), http.clone(), path.clone(), params.clone());
        Box::pin(async move {
            let (status, body) = match post_signed(&http, &config, &path, &params).await {
                Ok(answer) => answer,
                Err(error) => {
                    tracing::warn!(%error, "the stream's action request failed");
                    return None;
                }
            };
            if !(200..300).contains(&status) {
                tracing::warn!(status, "the stream's action answered with an error");
                return None;
            }
            let response = sb_twilio::twiml::parse(&body).ok()?;
            Some(run_twiml(&config, &response).await)
        })
    }))
}
