//! Who may call the LLM now: the tenant's concurrency (its tier) and the global AIMD limit,
//! counted across every agent replica (ARCHITECTURE §7).
//!
//! Consumes a tenant id and a deadline; produces an [`LlmPermit`] holding both places, or
//! says why none came in time (then the caller hears the fallback phrase). Both places are
//! taken in one step or not at all, so a busy tenant waiting for the global limit holds
//! nothing meanwhile. A full limit is tried again after a short pause (5 ms, doubling up
//! to `SB_LLM_LIMITS_POLL_MS`) or at once when a permit of this replica is released;
//! a 429's `retry-after` gate fails a request at once if it would outlast the deadline.
//! Waiting time goes to `switchboard_llm_queue_seconds`.
//!
//! State: in Redis ([`SharedLimits`], leased, see [`crate::permit`]) when the agent runs
//! with Redis; in this process ([`LocalLimits`]) for an agent built without it. **When
//! Redis fails** the replica does not leave the caller waiting: it gives permits from its
//! own [`LocalLimits`] (each replica then enforces the tier on its own, so N replicas
//! allow up to N times the tier), counts each in `switchboard_llm_limits_degraded_total`
//! with the error's kind, logs once when it falls back and once when Redis answers again,
//! and tries Redis again at most once a second meanwhile. Permits given in one mode are
//! released in that mode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sb_runtime::Tenants;
use sb_runtime::metrics::Metric;
use sb_runtime::redis::llm_limits::{Admission, Attempt, LlmClaim, holder_id};
use sb_schemas::TenantId;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use crate::aimd::{AimdBounds, AimdWait, LocalLimits};
pub use crate::permit::{LlmPermit, SharedLimits};

/// The first pause before trying a full limit again; it doubles up to the poll setting.
const FIRST_POLL: Duration = Duration::from_millis(5);
/// While Redis is failing, how often one acquire tries it again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Why no permit came before the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("tenant has no llm concurrency configured")]
    UnknownTenant,
    #[error("the tenant's llm concurrency stayed full until the deadline")]
    TenantFull,
    #[error(transparent)]
    Global(#[from] AimdWait),
}

impl LimitError {
    pub fn kind(self) -> &'static str {
        match self {
            LimitError::UnknownTenant => "unknown_tenant",
            LimitError::TenantFull => "tenant_queue_timeout",
            LimitError::Global(wait) => wait.kind(),
        }
    }
}

/// How the shared limits are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedConfig {
    /// How long a permit's places outlive its last renewal (`SB_LLM_LEASE_TTL_MS`).
    pub lease: Duration,
    /// The longest pause between two tries at a full limit (`SB_LLM_LIMITS_POLL_MS`).
    pub poll: Duration,
}

impl Default for SharedConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(15),
            poll: Duration::from_millis(50),
        }
    }
}

struct Shared {
    store: Arc<dyn SharedLimits>,
    /// Since when, and why, the shared limits are failing.
    down: Mutex<Option<Down>>,
}

#[derive(Clone, Copy)]
struct Down {
    reason: &'static str,
    retry_at: Instant,
}

/// The tenants' tiers and the global AIMD limit, shared or this replica's own.
pub struct Limits {
    tenants: HashMap<TenantId, u32>,
    bounds: AimdBounds,
    config: SharedConfig,
    shared: Option<Shared>,
    local: Arc<LocalLimits>,
    released: Arc<Notify>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("shared", &self.shared.is_some())
            .field("degraded", &self.degraded())
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Limits {
    /// Limits of this process alone (an agent without Redis: ring-2 tests, tools).
    pub fn new(tenants: &Tenants, bounds: AimdBounds) -> Self {
        let tenants = tenants
            .iter()
            .map(|t| (t.id.clone(), t.tier.llm_concurrency.max(1)))
            .collect();
        Self {
            tenants,
            bounds,
            config: SharedConfig::default(),
            shared: None,
            local: Arc::new(LocalLimits::new(bounds)),
            released: Arc::new(Notify::new()),
        }
    }

    /// Limits shared with every replica through `store`, with this process' own as the
    /// fall-back.
    pub fn shared(
        tenants: &Tenants,
        bounds: AimdBounds,
        store: Arc<dyn SharedLimits>,
        config: SharedConfig,
    ) -> Self {
        Self {
            config,
            shared: Some(Shared {
                store,
                down: Mutex::new(None),
            }),
            ..Self::new(tenants, bounds)
        }
    }

    /// The AIMD limit as this replica knows it (the shared one as last reported, or its
    /// own) and its own permits in flight.
    pub fn aimd(&self) -> &LocalLimits {
        &self.local
    }

    /// Why the shared limits are failing, while this replica uses its own.
    pub fn degraded(&self) -> Option<&'static str> {
        let shared = self.shared.as_ref()?;
        lock(&shared.down).map(|down| down.reason)
    }

    /// Waits for the tenant's place and a global one, until `deadline`, with the tenant's
    /// limit as this process started with it.
    pub async fn acquire(
        &self,
        tenant: &TenantId,
        deadline: Instant,
    ) -> Result<LlmPermit, LimitError> {
        let tenant_limit = *self.tenants.get(tenant).ok_or(LimitError::UnknownTenant)?;
        self.acquire_within(tenant, tenant_limit, deadline).await
    }

    /// [`Limits::acquire`] with the tenant's limit given (its tier in the call's revision
    /// of the live tenants file).
    pub async fn acquire_within(
        &self,
        tenant: &TenantId,
        tenant_limit: u32,
        deadline: Instant,
    ) -> Result<LlmPermit, LimitError> {
        let started = Instant::now();
        let tenant_limit = tenant_limit.max(1);
        let claim = LlmClaim {
            tenant: tenant.clone(),
            holder: holder_id(),
            tenant_limit,
            lease: self.config.lease,
            bounds: self.bounds,
        };
        let result = self.wait(claim, deadline).await;
        metrics::histogram!(Metric::LlmQueueSeconds.name()).record(started.elapsed().as_secs_f64());
        result
    }

    async fn wait(&self, claim: LlmClaim, deadline: Instant) -> Result<LlmPermit, LimitError> {
        let mut pause = FIRST_POLL;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let (store, attempt) = self.try_once(&claim).await;
            let full = match attempt.admission {
                Admission::Granted => return Ok(self.permit(store, claim, attempt)),
                Admission::Gated(gate) => {
                    let until = Instant::now() + gate;
                    if until > deadline {
                        return Err(AimdWait::Gated.into());
                    }
                    tokio::time::sleep_until(until).await;
                    continue;
                }
                Admission::TenantFull => LimitError::TenantFull,
                Admission::GlobalFull => LimitError::Global(AimdWait::Full),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(full);
            }
            tokio::select! {
                () = &mut released => {}
                () = tokio::time::sleep_until(deadline.min(now + pause)) => {}
            }
            pause = (pause * 2).min(self.config.poll.max(FIRST_POLL));
        }
    }

    /// One try: the shared limits unless they are failing, else this replica's own.
    async fn try_once(&self, claim: &LlmClaim) -> (Option<&Arc<dyn SharedLimits>>, Attempt) {
        if let Some(shared) = &self.shared {
            let down = *lock(&shared.down);
            if down.is_none_or(|d| Instant::now() >= d.retry_at) {
                match shared.store.try_acquire(claim).await {
                    Ok(attempt) => {
                        if lock(&shared.down).take().is_some() {
                            tracing::info!("llm limits: redis answers again; limits are shared");
                        }
                        self.local.observe(attempt.limit);
                        return (Some(&shared.store), attempt);
                    }
                    Err(error) => {
                        let retry_at = Instant::now() + PROBE_EVERY;
                        let reason = error.kind();
                        let was = lock(&shared.down).replace(Down { reason, retry_at });
                        if was.is_none() {
                            tracing::warn!(%error, "llm limits: redis failed; this replica uses its own limits");
                        }
                    }
                }
            }
        }
        (None, self.local.try_acquire(claim))
    }

    fn permit(
        &self,
        store: Option<&Arc<dyn SharedLimits>>,
        claim: LlmClaim,
        attempt: Attempt,
    ) -> LlmPermit {
        let (local, released) = (self.local.clone(), self.released.clone());
        match store {
            Some(store) => LlmPermit::shared(claim, attempt.epoch, store.clone(), local, released),
            None => {
                if let Some(reason) = self.degraded() {
                    metrics::counter!(Metric::LlmLimitsDegraded.name(), "reason" => reason)
                        .increment(1);
                }
                LlmPermit::local(claim, attempt.epoch, local, released)
            }
        }
    }
}

/// A poisoned lock only means another thread panicked; the state is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
