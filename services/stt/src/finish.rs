//! The end of a call: the last audio in, the last results out.
//!
//! Consumes the call's remaining audio (until none arrived for a short quiet period: the
//! ingress publishes `end` after the last frame, but the two travel on different streams)
//! and the provider's last events after `Finalize` + `CloseStream`; produces the last
//! partials and transcripts through the usual commit path, then releases the call.
//! State: the closing connection.

use std::time::Duration;

use tokio::time::Instant;

use crate::call::{Call, Conn, Exit, Flow};
use crate::commit::CommitError;
use crate::provider::{SpeechToText, SttCommand, SttEvent};

/// Audio is drained until none arrived for this long (a backlog replays much faster)…
const DRAIN_QUIET: Duration = Duration::from_millis(250);
/// …or for at most this long (a taken-over call may have minutes of audio to catch up on).
const DRAIN_MAX: Duration = Duration::from_secs(20);

impl<S: SpeechToText> Call<S> {
    /// Drains, finalizes, closes and commits; the call is then `Finished` (or stale).
    pub(crate) async fn finish(&mut self, mut conn: Conn, why: &'static str) -> Flow {
        tracing::info!(why, "call ending");
        let mut provider_up = match self.drain_audio(&mut conn).await {
            Ok(up) => up,
            Err(exit) => return Flow::Exit(exit),
        };
        if provider_up {
            for command in [SttCommand::Finalize, SttCommand::Close] {
                provider_up &= conn.stream.commands.send(command).await.is_ok();
            }
        }
        if provider_up && let Err(exit) = self.last_results(&mut conn).await {
            return Flow::Exit(exit);
        }
        if let Some(utterance) = conn.assembler.take() {
            match self.commit(&mut conn, utterance).await {
                Ok(()) => {}
                Err(CommitError::Stale) => return Flow::Exit(Exit::Stale),
                Err(CommitError::Failed(kind)) => {
                    tracing::error!(kind, "the call's last utterance could not be published");
                }
            }
        }
        Flow::Exit(Exit::Finished(why))
    }

    /// Feeds the audio still arriving; returns whether the provider stream is still up.
    async fn drain_audio(&mut self, conn: &mut Conn) -> Result<bool, Exit> {
        let stopping = self.ctx.runtime.shutdown.stopping().clone();
        let deadline = Instant::now() + DRAIN_MAX;
        let mut quiet_until = Instant::now() + DRAIN_QUIET;
        loop {
            let flow = tokio::select! {
                biased;
                () = stopping.cancelled() => return Err(Exit::HandOff),
                event = conn.stream.events.recv() => match event {
                    None | Some(SttEvent::Closed(_)) => return Ok(false),
                    event => self.on_event(conn, event).await,
                },
                message = conn.audio.next() => match message {
                    None => return Ok(true),
                    message => {
                        quiet_until = Instant::now() + DRAIN_QUIET;
                        self.on_audio(conn, message).await
                    }
                },
                () = tokio::time::sleep_until(quiet_until.min(deadline)) => return Ok(true),
            };
            match flow {
                Flow::Exit(exit) => return Err(exit),
                Flow::Reconnect(_) => return Ok(false),
                Flow::Continue | Flow::Finish(_) => {}
            }
        }
    }

    /// Handles the provider's events until it closes the stream (or the timeout passes).
    async fn last_results(&mut self, conn: &mut Conn) -> Result<(), Exit> {
        let deadline = Instant::now() + self.ctx.config.finish_timeout();
        loop {
            let event = tokio::select! {
                event = conn.stream.events.recv() => event,
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("the stt provider did not close in time");
                    return Ok(());
                }
            };
            let event = match event {
                None | Some(SttEvent::Closed(_)) => return Ok(()),
                event => event,
            };
            match self.on_event(conn, event).await {
                Flow::Exit(exit) => return Err(exit),
                Flow::Reconnect(_) => return Ok(()),
                Flow::Continue | Flow::Finish(_) => {}
            }
        }
    }
}
