//! One LLM request's place under the limits ([`LlmPermit`]), and the seam to the limits
//! every replica shares ([`SharedLimits`], implemented by `Redis`).
//!
//! Consumes what the request's outcome was (a success, a 429 with its `retry-after`, or
//! neither when dropped); produces the release of both places (tenant and global), the
//! limit's increase or halving, and, for a shared permit, a lease renewal every third of
//! the lease while the request runs, so a long stream keeps its place and a crashed
//! replica's places come back when their leases run out. State: the claim, the epoch the
//! request started in, and the renewal task of a shared permit (aborted on drop; the
//! release then runs as a task of its own, and if it fails the lease still runs out).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sb_runtime::redis::llm_limits::{AimdBounds, AimdState, Attempt, LlmClaim};
use sb_runtime::redis::{Redis, RedisError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::aimd::LocalLimits;

/// The LLM limits shared by every agent replica. One method is one atomic step (one Lua
/// script in Redis; see `sb_runtime::redis::llm_limits` for the semantics).
pub trait SharedLimits: Send + Sync + 'static {
    /// One try at a tenant place and a global place, both or neither; never waits.
    fn try_acquire<'a>(&'a self, claim: &'a LlmClaim)
    -> BoxFuture<'a, Result<Attempt, RedisError>>;

    /// Extends a granted claim's leases; `false` when one had already run out.
    fn renew<'a>(&'a self, claim: &'a LlmClaim) -> BoxFuture<'a, Result<bool, RedisError>>;

    /// Gives both places back; a success grows the limit by one.
    fn release<'a>(
        &'a self,
        claim: &'a LlmClaim,
        success: bool,
    ) -> BoxFuture<'a, Result<AimdState, RedisError>>;

    /// A 429 of a request that started in `started_epoch`.
    fn rate_limited(
        &self,
        bounds: AimdBounds,
        started_epoch: u64,
        retry_after: Option<Duration>,
    ) -> BoxFuture<'_, Result<AimdState, RedisError>>;
}

impl SharedLimits for Redis {
    fn try_acquire<'a>(
        &'a self,
        claim: &'a LlmClaim,
    ) -> BoxFuture<'a, Result<Attempt, RedisError>> {
        Box::pin(self.llm_acquire(claim))
    }

    fn renew<'a>(&'a self, claim: &'a LlmClaim) -> BoxFuture<'a, Result<bool, RedisError>> {
        Box::pin(self.llm_renew(claim))
    }

    fn release<'a>(
        &'a self,
        claim: &'a LlmClaim,
        success: bool,
    ) -> BoxFuture<'a, Result<AimdState, RedisError>> {
        Box::pin(self.llm_release(claim, success))
    }

    fn rate_limited(
        &self,
        bounds: AimdBounds,
        started_epoch: u64,
        retry_after: Option<Duration>,
    ) -> BoxFuture<'_, Result<AimdState, RedisError>> {
        Box::pin(self.llm_rate_limited(bounds, started_epoch, retry_after))
    }
}

/// Where a permit's places are held.
enum Held {
    /// In this replica's [`LocalLimits`].
    Local,
    /// In the shared limits, kept alive by the renewal task.
    Shared {
        store: Arc<dyn SharedLimits>,
        renewal: JoinHandle<()>,
    },
}

/// Both places an LLM request needs. Report a success with [`LlmPermit::success`] and a
/// 429 with [`LlmPermit::rate_limited`]; dropping it otherwise is neutral (neither).
pub struct LlmPermit {
    claim: LlmClaim,
    epoch: u64,
    /// `None` only once dropped.
    held: Option<Held>,
    local: Arc<LocalLimits>,
    /// Wakes this replica's waiters once the places are back.
    released: Arc<Notify>,
    success: bool,
}

impl LlmPermit {
    /// A permit granted by `local`.
    pub(crate) fn local(
        claim: LlmClaim,
        epoch: u64,
        local: Arc<LocalLimits>,
        released: Arc<Notify>,
    ) -> Self {
        Self {
            claim,
            epoch,
            held: Some(Held::Local),
            local,
            released,
            success: false,
        }
    }

    /// A permit granted by `store`; its leases are renewed from now on.
    pub(crate) fn shared(
        claim: LlmClaim,
        epoch: u64,
        store: Arc<dyn SharedLimits>,
        local: Arc<LocalLimits>,
        released: Arc<Notify>,
    ) -> Self {
        let renewal = tokio::spawn(renew(store.clone(), claim.clone()).in_current_span());
        Self {
            claim,
            epoch,
            held: Some(Held::Shared { store, renewal }),
            local,
            released,
            success: false,
        }
    }

    /// Whether the places are held in the shared limits (not this replica's own).
    pub fn is_shared(&self) -> bool {
        matches!(self.held, Some(Held::Shared { .. }))
    }

    /// The request succeeded: the places go back and the limit grows by one.
    pub fn success(mut self) {
        self.success = true;
    }

    /// The provider answered 429: the limit halves (once per congestion event) and new
    /// requests wait `retry_after`. Keeps the permit (a retry of the same request reuses
    /// it, in the new epoch); it is released on drop.
    pub async fn rate_limited(&mut self, retry_after: Option<Duration>) {
        let state = match &self.held {
            Some(Held::Shared { store, .. }) => {
                let bounds = self.claim.bounds;
                match store.rate_limited(bounds, self.epoch, retry_after).await {
                    Ok(state) => {
                        self.local.observe(state.limit);
                        state
                    }
                    Err(error) => {
                        tracing::warn!(%error, "llm limits: the 429 was not recorded in redis");
                        return;
                    }
                }
            }
            _ => self.local.rate_limited(self.epoch, retry_after),
        };
        self.epoch = state.epoch;
    }
}

impl Drop for LlmPermit {
    fn drop(&mut self) {
        match self.held.take() {
            Some(Held::Local) | None => {
                self.local.release(&self.claim, self.success);
                self.released.notify_waiters();
            }
            Some(Held::Shared { store, renewal }) => {
                renewal.abort();
                let (claim, success) = (self.claim.clone(), self.success);
                let (local, released) = (self.local.clone(), self.released.clone());
                let release = async move {
                    match store.release(&claim, success).await {
                        Ok(state) => local.observe(state.limit),
                        Err(error) => {
                            tracing::warn!(%error, "llm limits: release failed; the lease runs out");
                        }
                    }
                    released.notify_waiters();
                };
                // Outside a runtime (a shutdown) the lease runs out instead.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(release.in_current_span());
                }
            }
        }
    }
}

/// Renews the claim's leases every third of the lease until aborted; stops when a lease
/// was lost (the slot may be another request's now: this one runs on, over the limit).
async fn renew(store: Arc<dyn SharedLimits>, claim: LlmClaim) {
    let every = (claim.lease / 3).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.renew(&claim).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("llm limits: a lease ran out before its renewal");
                return;
            }
            Err(error) => tracing::warn!(%error, "llm limits: lease renewal failed"),
        }
    }
}
