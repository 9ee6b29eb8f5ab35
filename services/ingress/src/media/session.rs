//! The socket loop: one Media Streams connection, written over a generic `Sink` of
//! [`Outgoing`] messages and a `Stream` of [`Incoming`] frames so tests drive it through
//! channels.
//!
//! Consumes Twilio's messages (`connected`, `start`, `media`, `dtmf`, `mark`, `stop`; every
//! bad one — malformed, oversized, unknown, binary, before `start`, a second `start`, wrong
//! stream — is rejected on its own, counted and logged, and the call goes on; a `start` the
//! gate refuses closes the socket with 1008), the call's NATS events, the pacing clock, the
//! drain (the live call is moved to another replica), the NATS link coming back (missed bot
//! audio is read back) and the drain deadline. Produces the outbound messages (sent as soon as due) and, through
//! [`Call`], the call's events. State: this task's memory; it ends with the socket.

use futures::{Sink, SinkExt as _, Stream, StreamExt as _};
use sb_runtime::metrics::Metric;
use sb_schemas::Envelope;
use sb_twilio::media::{InboundMessage, decode_payload, parse_inbound};
use tokio::time::Instant;

use super::call::{Call, EndCause, FromNats};
use super::{CLOSE_POLICY_VIOLATION, CLOSE_TOO_BIG, Incoming, Outgoing, fast};

/// WebSocket close code of a socket closed for being idle (RFC 6455: normal closure).
const CLOSE_NORMAL: u16 = 1000;
use crate::{Backend, IngressState};

/// The idle timeout before a `start` named the tenant (the tenants' default too).
const DEFAULT_IDLE_SECS: u32 = sb_runtime::tenants::DEFAULT_MEDIA_IDLE_SECS;

/// Rejections logged per socket before only every 100th is (they are all counted).
const LOGGED_REJECTIONS: u64 = 10;

/// What the loop does next.
enum Step {
    Go,
    End(EndCause),
}

/// Counts open sockets for as long as it lives.
struct Active;

impl Active {
    fn new() -> Self {
        metrics::gauge!(Metric::IngressActiveCalls.name()).increment(1.0);
        Self
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        metrics::gauge!(Metric::IngressActiveCalls.name()).decrement(1.0);
    }
}

struct Socket<B: Backend> {
    state: IngressState<B>,
    call: Option<Call<B>>,
    rejected: u64,
}

/// Serves one media socket until Twilio stops, the socket closes, the drain deadline passes
/// or its `start` is refused; then publishes the call's end (if it had one) and closes the
/// sink (after a 1008 close frame, if refused).
pub async fn serve<B, Si, St>(state: IngressState<B>, mut sink: Si, mut stream: St)
where
    B: Backend,
    Si: Sink<Outgoing> + Unpin,
    St: Stream<Item = Incoming> + Unpin,
{
    let _active = Active::new();
    let abort = state.shutdown.abort().clone();
    let stopping = state.shutdown.stopping().clone();
    let mut drain_seen = false;
    let mut socket = Socket {
        state,
        call: None,
        rejected: 0,
    };
    // One idle timer per socket, armed at the earliest moment the socket could be idle and
    // re-armed only when it fires early: a frame (50 a second per call) only stores the
    // time, it never touches the timer wheel.
    let mut last_frame = Instant::now();
    let mut timeout = socket.idle_timeout();
    let idle = tokio::time::sleep_until(last_frame + timeout);
    tokio::pin!(idle);
    let cause = loop {
        let wake = socket.call.as_ref().and_then(Call::next_wake);
        let step = tokio::select! {
            biased;
            () = abort.cancelled() => Step::End(EndCause::Drained),
            // Draining: the live call moves to another replica (its stream's `stop` ends
            // this socket); until then, and if Twilio refuses, it plays on here.
            () = stopping.cancelled(), if !drain_seen => {
                drain_seen = true;
                if let Some(call) = socket.call.as_mut() {
                    call.migrate().await;
                }
                Step::Go
            }
            () = sleep_until(wake) => Step::Go,
            from = next_from_nats(&mut socket.call) => match from {
                FromNats::Event(event) => socket.on_event(event, &mut sink).await,
                FromNats::Relinked(link) => {
                    if let Some(call) = socket.call.as_mut() {
                        call.catch_up(link).await;
                    }
                    Step::Go
                }
            },
            frame = stream.next() => {
                last_frame = Instant::now();
                match frame {
                    Some(frame) => socket.on_frame(frame).await,
                    None => Step::End(EndCause::Closed),
                }
            }
            () = &mut idle => {
                let due = last_frame + timeout;
                if Instant::now() >= due {
                    socket.reject("idle_timeout");
                    Step::End(EndCause::IdleTimeout)
                } else {
                    idle.as_mut().reset(due);
                    Step::Go
                }
            }
        };
        // `start` names the tenant, whose timeout may differ from the default.
        let now_timeout = socket.idle_timeout();
        if now_timeout != timeout {
            timeout = now_timeout;
            idle.as_mut().reset(last_frame + timeout);
        }
        let step = match step {
            Step::Go => socket.pump(&mut sink).await,
            end => end,
        };
        if let Step::End(cause) = step {
            break cause;
        }
    };
    if let Some(call) = socket.call.take() {
        // Our redirect ended the stream: a move, not a hang-up.
        let cause = match cause {
            EndCause::Stop | EndCause::Closed if call.is_migrating() => EndCause::Migrated,
            cause => cause,
        };
        call.finish(cause).await;
    }
    let close = match cause {
        EndCause::Refused => Some(Outgoing::Close {
            code: CLOSE_POLICY_VIOLATION,
            reason: "call not admitted on this socket",
        }),
        EndCause::TooBig => Some(Outgoing::Close {
            code: CLOSE_TOO_BIG,
            reason: "frame over the size limit",
        }),
        EndCause::IdleTimeout => Some(Outgoing::Close {
            code: CLOSE_NORMAL,
            reason: "no media for the idle timeout",
        }),
        _ => None,
    };
    if let Some(close) = close {
        let _ = sink.send(close).await;
    }
    let _ = sink.close().await;
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn next_from_nats<B: Backend>(call: &mut Option<Call<B>>) -> FromNats {
    match call {
        Some(call) => call.next_from_nats().await,
        None => std::future::pending().await,
    }
}

impl<B: Backend> Socket<B> {
    /// How long the socket may go without a message: the call's tenant's setting once
    /// `start` named one, the default before.
    fn idle_timeout(&self) -> std::time::Duration {
        self.call.as_ref().map_or(
            std::time::Duration::from_secs(u64::from(DEFAULT_IDLE_SECS)),
            Call::idle_timeout,
        )
    }

    fn reject(&mut self, reason: &'static str) {
        metrics::counter!(Metric::IngressRejectedMessages.name(), "reason" => reason).increment(1);
        self.rejected += 1;
        if self.rejected <= LOGGED_REJECTIONS || self.rejected.is_multiple_of(100) {
            let span = self.call.as_ref().map(|c| c.span.clone());
            let _entered = span.as_ref().map(tracing::Span::enter);
            tracing::warn!(reason, rejected = self.rejected, "media message rejected");
        }
    }

    async fn on_frame(&mut self, frame: Incoming) -> Step {
        match frame {
            Incoming::Text(text) => self.on_text(&text).await,
            Incoming::Binary(_) => {
                self.reject("binary");
                Step::Go
            }
            Incoming::Closed => Step::End(EndCause::Closed),
            Incoming::TooBig => {
                self.reject("over_hard_limit");
                Step::End(EndCause::TooBig)
            }
            Incoming::Failed(error) => {
                tracing::debug!(error = %error, "media socket failed");
                Step::End(EndCause::Closed)
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> Step {
        if text.len() > self.state.settings.ws_max_message_bytes {
            self.reject("too_large");
            return Step::Go;
        }
        // The frame that comes 50 times a second per call takes the zero-copy path.
        if let Some(media) = fast::media(text) {
            return self
                .on_media(media.stream_sid, media.timestamp_ms, media.payload)
                .await;
        }
        let message = match parse_inbound(text) {
            Ok(message) => message,
            Err(error) => {
                self.reject(error.kind());
                return Step::Go;
            }
        };
        let stream_sid = match &message {
            InboundMessage::Connected { .. } => return Step::Go,
            InboundMessage::Start { .. } => None,
            InboundMessage::Media { stream_sid, .. }
            | InboundMessage::Dtmf { stream_sid, .. }
            | InboundMessage::Mark { stream_sid, .. }
            | InboundMessage::Stop { stream_sid, .. } => Some(stream_sid.as_str()),
        };
        if let Some(stream_sid) = stream_sid {
            match &self.call {
                None => {
                    if matches!(message, InboundMessage::Stop { .. }) {
                        return Step::End(EndCause::Stop);
                    }
                    self.reject("before_start");
                    return Step::Go;
                }
                Some(call) if call.stream_sid != stream_sid => {
                    self.reject("wrong_stream");
                    return Step::Go;
                }
                Some(_) => {}
            }
        }
        self.on_message(message).await
    }

    /// A `media` message read by the fast path.
    async fn on_media(&mut self, stream_sid: &str, timestamp_ms: u64, payload: &str) -> Step {
        let Some(call) = self.call.as_mut() else {
            self.reject("before_start");
            return Step::Go;
        };
        if call.stream_sid != stream_sid {
            self.reject("wrong_stream");
            return Step::Go;
        }
        match decode_payload(payload) {
            Ok(payload) => call.on_audio(payload, timestamp_ms).await,
            Err(_) => self.reject("bad_payload"),
        }
        Step::Go
    }

    /// A valid message; every one but `start` belongs to the live call.
    async fn on_message(&mut self, message: InboundMessage) -> Step {
        if let InboundMessage::Start {
            start, stream_sid, ..
        } = message
        {
            if self.call.is_some() {
                self.reject("second_start");
                return Step::Go;
            }
            return match Call::begin(&self.state, start, stream_sid).await {
                Ok(call) => {
                    self.call = Some(call);
                    Step::Go
                }
                // Counted and logged by the gate; closing ends the stream (Twilio hangs up).
                Err(_) => Step::End(EndCause::Refused),
            };
        }
        let Some(call) = self.call.as_mut() else {
            return Step::Go;
        };
        match message {
            InboundMessage::Media { media, .. } => match decode_payload(&media.payload) {
                Ok(payload) => call.on_audio(payload, media.timestamp).await,
                Err(_) => self.reject("bad_payload"),
            },
            InboundMessage::Dtmf { dtmf, .. } => {
                if let Err(reason) = call.on_dtmf(dtmf.digit).await {
                    self.reject(reason);
                }
            }
            InboundMessage::Mark { mark, .. } => {
                if let Err(reason) = call.on_mark(mark.name).await {
                    self.reject(reason);
                }
            }
            InboundMessage::Stop { .. } => return Step::End(EndCause::Stop),
            InboundMessage::Connected { .. } | InboundMessage::Start { .. } => {}
        }
        Step::Go
    }

    /// An event from NATS: bot audio is buffered; speech may barge in (`clear` at once).
    async fn on_event<Si: Sink<Outgoing> + Unpin>(
        &mut self,
        event: Option<Envelope>,
        sink: &mut Si,
    ) -> Step {
        let Some(call) = self.call.as_mut() else {
            return Step::Go;
        };
        let Some(trigger) = call.on_event(event) else {
            return Step::Go;
        };
        if let Some(clear) = call.barge_in(trigger)
            && sink.send(Outgoing::Text(clear)).await.is_err()
        {
            return Step::End(EndCause::Closed);
        }
        Step::Go
    }

    /// Sends every outbound message that is due now.
    async fn pump<Si: Sink<Outgoing> + Unpin>(&mut self, sink: &mut Si) -> Step {
        let Some(call) = self.call.as_mut() else {
            return Step::Go;
        };
        call.repair_gap(Instant::now()).await;
        let now = Instant::now();
        let mut fed = false;
        while let Some(message) = call.poll_output(now) {
            if sink.feed(Outgoing::Text(message)).await.is_err() {
                return Step::End(EndCause::Closed);
            }
            fed = true;
        }
        if fed && sink.flush().await.is_err() {
            return Step::End(EndCause::Closed);
        }
        Step::Go
    }
}
