//! The bot's side of the socket as the caller receives it: outbound `media` into the
//! playback queue, `mark`s queued or echoed, `clear`, and bad frames recorded with the
//! Twilio error they would cause (31950 binary, 31951 invalid).
//!
//! Consumes WebSocket messages from the ingress; produces mark echoes and report entries
//! (first bot audio per turn, late frames, barge-in latency). State: the [`Line`]'s.

use futures::Sink;
use sb_twilio::{OutboundMessage, media, parse_outbound};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{Closed, LATE_AFTER_MS, Line};
use crate::caller::report::ProtocolError;

impl<Si: Sink<Message> + Unpin> Line<Si> {
    fn protocol_error(&mut self, code: u32, detail: String) {
        let at_ms = self.now_ms();
        tracing::warn!(code, detail = %detail, "ingress sent a bad media-stream message");
        self.report.protocol_errors.push(ProtocolError {
            code,
            at_ms,
            detail,
        });
    }

    pub(super) async fn on_message(&mut self, message: Message) -> Result<(), Closed> {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(bytes) => {
                self.protocol_error(31950, format!("binary frame of {} bytes", bytes.len()));
                return Ok(());
            }
            Message::Close(_) => return Err(Closed),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(()),
        };
        let message = match parse_outbound(text.as_str()) {
            Ok(message) => message,
            Err(error) => {
                self.protocol_error(31951, error.to_string());
                return Ok(());
            }
        };
        if message.stream_sid() != self.setup.stream_sid {
            self.protocol_error(31951, format!("wrong streamSid {:?}", message.stream_sid()));
            return Ok(());
        }
        match message {
            OutboundMessage::Media { media, .. } => match media::decode_payload(&media.payload) {
                Ok(audio) => self.on_media(&audio),
                Err(error) => self.protocol_error(31951, error.to_string()),
            },
            OutboundMessage::Mark { mark, .. } => {
                self.boundary = true;
                if let Some(name) = self.playback.push_mark(mark.name) {
                    self.echo_mark(name, false).await?;
                }
            }
            OutboundMessage::Clear { .. } => self.on_clear().await?,
        }
        Ok(())
    }

    fn on_media(&mut self, audio: &[u8]) {
        let now = self.now_ms();
        self.report.bot_media_received += 1;
        self.report.bot_bytes_received += audio.len() as u64;
        if !self.speaking
            && let Some(turn) = self.report.turns.last_mut()
            && turn.first_bot_audio_ms.is_none()
        {
            turn.first_bot_audio_ms = Some(now);
            turn.voice_to_voice_ms = Some(now.saturating_sub(turn.speech_end_ms));
        }
        if let Some(since) = self.starved_since.take()
            && !self.boundary
        {
            let gap = Instant::now().saturating_duration_since(since).as_millis() as u64;
            if gap > LATE_AFTER_MS {
                self.report.late_frames += 1;
                self.report.underrun_ms += gap;
                self.report.longest_gap_ms = self.report.longest_gap_ms.max(gap);
            }
        }
        self.boundary = false;
        self.playback.push_audio(audio);
    }

    async fn on_clear(&mut self) -> Result<(), Closed> {
        let now = self.now_ms();
        self.report.clears_ms.push(now);
        let (marks, dropped) = self.playback.clear();
        self.report.bot_bytes_cleared += dropped as u64;
        self.boundary = true;
        if let Some(barge) = self
            .report
            .turns
            .last_mut()
            .and_then(|t| t.barge_in.as_mut())
            && barge.clear_ms.is_none()
        {
            barge.clear_ms = Some(now);
            barge.latency_ms = Some(now.saturating_sub(barge.onset_ms));
        }
        for name in marks {
            self.echo_mark(name, true).await?;
        }
        Ok(())
    }
}
