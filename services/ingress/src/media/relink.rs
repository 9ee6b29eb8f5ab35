//! A NATS reconnect under live calls: the bot audio published while this replica's link
//! was down never reached the calls' core subscriptions (at most once), and a whole answer
//! can fall into that hole, with no later chunk to reveal a gap. So once the link is back,
//! every live call reads its bot audio back from `AUDIO` since the link went down.
//!
//! Consumes the process' NATS link ([`sb_runtime::nats::link_watch`]) and the `AUDIO`
//! stream; produces the missed chunks in the call's playback (what it already has is
//! refused as a duplicate) and `switchboard_ingress_gap_repairs_total{outcome="relinked"}`.
//! A preflight turn held meanwhile is settled by the last transcript stored (§2g).
//! State: the call's link receiver.

use std::time::Duration;

use sb_runtime::metrics::Metric;
use sb_runtime::nats::Link;
use sb_schemas::Body;
use tokio::sync::watch;

use super::call::Call;
use crate::Backend;

/// Producer clocks differ a little: the audio is read back from this much before the
/// link went down.
const MARGIN_US: u64 = 2_000_000;
/// How long the read may take.
const BUDGET: Duration = Duration::from_secs(1);

/// Resolves once the process' NATS link is back after going down (never otherwise).
pub(crate) async fn relinked(link: &mut watch::Receiver<Link>) -> Link {
    loop {
        if link.changed().await.is_err() {
            return std::future::pending().await;
        }
        let now = *link.borrow_and_update();
        if !now.down {
            return now;
        }
    }
}

impl<B: Backend> Call<B> {
    /// Reads the call's bot audio back from when the link went down and queues what the
    /// caller has not heard; then settles a held preflight turn.
    pub(crate) async fn catch_up(&mut self, link: Link) {
        self.read_back(link).await;
        self.settle_held().await;
    }

    async fn read_back(&mut self, link: Link) {
        let since = link.down_since_us.saturating_sub(MARGIN_US);
        let backend = &self.state.backend;
        let read = backend.fetch_bot_audio(&self.tenant.id, &self.sid, since);
        let events = tokio::time::timeout(BUDGET, read).await;
        let _entered = self.span.clone().entered();
        let events = match events {
            Ok(Ok(events)) => events,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "bot audio not read back after the NATS reconnect");
                return;
            }
            Err(_) => {
                tracing::warn!("bot audio not read back in time after the NATS reconnect");
                return;
            }
        };
        let mut queued = 0;
        for event in events {
            if let Body::TtsChunk(chunk) = event.body
                && self.take_chunk(event.turn, event.at, chunk).is_ok()
            {
                queued += 1;
            }
        }
        metrics::counter!(Metric::IngressGapRepairs.name(), "outcome" => "relinked").increment(1);
        tracing::info!(
            queued,
            reconnects = link.reconnects,
            "NATS link back: missed bot audio read back"
        );
    }

    /// A preflight turn held while the link was down may have had its transcript then:
    /// the last one stored settles it (its turn: play; a newer one: drop).
    async fn settle_held(&mut self) {
        let Some(held) = self.playback.held_turn() else {
            return;
        };
        let read = self.state.backend.last_heard(&self.tenant.id, &self.sid);
        match tokio::time::timeout(BUDGET, read).await {
            Ok(Ok(last)) => {
                if let Some(turn) = last.transcript.map(|t| t.turn).filter(|t| *t >= held) {
                    self.confirmed(turn);
                }
            }
            Ok(Err(error)) => {
                let _entered = self.span.enter();
                tracing::warn!(error = %error, "held turn's transcript not read back");
            }
            Err(_) => {
                let _entered = self.span.enter();
                tracing::warn!("held turn's transcript not read back in time");
            }
        }
    }
}
