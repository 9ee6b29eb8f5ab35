//! The caller's control line to the Twilio stand-in: what an update (`POST
//! …/Calls/{sid}.json`) runs on the call reaches the media line here.
//!
//! Consumes the stand-in's `/sim/lines/{sid}` WebSocket (TwiML texts); produces
//! [`Switch`]es for the line: a redirect's `<Connect><Stream>` as a new, already connected
//! media socket with its parameters (Twilio stops the old stream and starts the new one),
//! a `<Hangup/>` as the end of the call. State: the control socket, in its task.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::{CallerConfig, CallerError, Socket, connect_media};

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
                Ok(response) => match response.connect_stream() {
                    Ok(stream) => match connect_media(&config, stream).await {
                        Ok(media) => {
                            let (sink, media_stream) = media.split();
                            Switch::Stream {
                                sink,
                                stream: media_stream,
                                parameters: stream.parameters.iter().cloned().collect(),
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "redirected stream did not connect");
                            Switch::Hangup
                        }
                    },
                    // Anything but a stream (`<Hangup/>`, `<Say>…`) ends the media line.
                    Err(_) => Switch::Hangup,
                },
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
