//! Who may call the LLM now: the tenant's concurrency (its tier) and the global AIMD limit.
//!
//! Consumes a tenant id and a deadline; produces an [`LlmPermit`] holding both places, or
//! says why none came in time (then the caller hears the fallback phrase). The tenant's
//! semaphore is taken first, so one busy tenant queues behind its own tier and cannot
//! hold every global slot while it waits. Waiting time goes to
//! `switchboard_llm_queue_seconds`. State: one semaphore per tenant (sized from
//! `tier.llm_concurrency` at start-up) and the shared [`Aimd`].

use std::collections::HashMap;
use std::sync::Arc;

use sb_runtime::Tenants;
use sb_runtime::metrics::Metric;
use sb_schemas::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::aimd::{Aimd, AimdBounds, AimdPermit, AimdWait};

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

/// Both places an LLM request needs.
pub struct LlmPermit {
    pub global: AimdPermit,
    _tenant: OwnedSemaphorePermit,
}

/// The per-tenant semaphores and the global AIMD limit.
#[derive(Debug)]
pub struct Limits {
    tenants: HashMap<TenantId, Arc<Semaphore>>,
    aimd: Arc<Aimd>,
}

impl Limits {
    pub fn new(tenants: &Tenants, bounds: AimdBounds) -> Self {
        let tenants = tenants
            .iter()
            .map(|t| {
                let size = usize::try_from(t.tier.llm_concurrency).unwrap_or(1).max(1);
                (t.id.clone(), Arc::new(Semaphore::new(size)))
            })
            .collect();
        Self {
            tenants,
            aimd: Aimd::new(bounds),
        }
    }

    pub fn aimd(&self) -> &Arc<Aimd> {
        &self.aimd
    }

    /// Waits for the tenant's place, then a global one, until `deadline`.
    pub async fn acquire(
        &self,
        tenant: &TenantId,
        deadline: Instant,
    ) -> Result<LlmPermit, LimitError> {
        let started = Instant::now();
        let semaphore = self
            .tenants
            .get(tenant)
            .ok_or(LimitError::UnknownTenant)?
            .clone();
        let result = async {
            let tenant_permit = tokio::time::timeout_at(deadline, semaphore.acquire_owned())
                .await
                .map_err(|_| LimitError::TenantFull)?
                .map_err(|_| LimitError::TenantFull)?;
            let global = self.aimd.acquire(deadline).await?;
            Ok(LlmPermit {
                global,
                _tenant: tenant_permit,
            })
        }
        .await;
        metrics::histogram!(Metric::LlmQueueSeconds.name()).record(started.elapsed().as_secs_f64());
        result
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sb_runtime::tenants::testing::TenantToml;

    use super::*;

    /// Tenants `a` and `b` on a tier of one concurrent LLM request.
    fn tenants() -> Tenants {
        TenantToml::new()
            .tier("small", 1, 10)
            .tenant("a", "+15005550001", "small")
            .tenant("b", "+15005550002", "small")
            .parse()
            .unwrap()
    }

    /// A tenant at its tier's limit waits (and times out) without blocking another tenant;
    /// an unknown tenant gets no permit.
    #[tokio::test(start_paused = true)]
    async fn tenants_are_limited_separately() {
        let tenants = tenants();
        let limits = Limits::new(
            &tenants,
            AimdBounds {
                initial: 10,
                min: 1,
                max: 10,
            },
        );
        let id = |s: &str| TenantId::parse(s).unwrap();
        let soon = || Instant::now() + Duration::from_millis(50);
        let held = limits.acquire(&id("a"), soon()).await.unwrap();
        assert_eq!(
            limits.acquire(&id("a"), soon()).await.err(),
            Some(LimitError::TenantFull)
        );
        let other = limits.acquire(&id("b"), soon()).await.unwrap();
        assert_eq!(limits.aimd().in_flight(), 2);
        drop((held, other));
        assert!(limits.acquire(&id("a"), soon()).await.is_ok());
        assert_eq!(
            limits.acquire(&id("zz"), soon()).await.err(),
            Some(LimitError::UnknownTenant)
        );
    }
}
