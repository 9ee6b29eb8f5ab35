//! Sending one webhook to a tenant (PROTOCOLS §10.3): a signed `POST` with its delivery id,
//! and how many of one tenant's deliveries may be in flight at once.
//!
//! Consumes the tenant, its webhook settings and the body; produces the endpoint's status
//! or why the attempt failed ([`Failure`]), counted in
//! `switchboard_webhook_deliveries_total{event,outcome}`. A tenant that already has its cap
//! of requests in flight (a slow or dead endpoint) gets [`Failure::Busy`] without a request,
//! so its backlog never takes the worker's capacity from other tenants. State: the HTTP
//! pool, each tenant's signing secret (never logged) and its in-flight count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sb_runtime::metrics::Metric;
use sb_runtime::tenants::TenantWebhooks;
use sb_runtime::{Secret, Tenant, signature};
use sb_schemas::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why an attempt did not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("the endpoint answered {0}")]
    Status(u16),
    #[error("no answer in time")]
    Timeout,
    #[error("cannot reach the endpoint: {0}")]
    Unreachable(String),
    #[error("the tenant already has its cap of deliveries in flight")]
    Busy,
    #[error("no signing secret for the tenant")]
    NoSecret,
}

impl Failure {
    /// The metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Status(_) => "status",
            Failure::Timeout => "timeout",
            Failure::Unreachable(_) => "unreachable",
            Failure::Busy => "busy",
            Failure::NoSecret => "no_secret",
        }
    }
}

/// Sends webhooks for every tenant.
pub struct Deliverer {
    http: reqwest::Client,
    secrets: HashMap<TenantId, Secret>,
    timeout: Duration,
    per_tenant: usize,
    in_flight: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
}

impl Deliverer {
    pub fn new(
        secrets: HashMap<TenantId, Secret>,
        timeout: Duration,
        per_tenant: usize,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .user_agent(concat!("switchboard-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the http client: {e}"))?;
        Ok(Self {
            http,
            secrets,
            timeout,
            per_tenant: per_tenant.max(1),
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    fn permit(&self, tenant: &TenantId) -> Option<OwnedSemaphorePermit> {
        let semaphore = self
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone();
        semaphore.try_acquire_owned().ok()
    }

    /// One attempt: `Ok(status)` for a 2xx.
    pub async fn deliver(
        &self,
        tenant: &Tenant,
        hooks: &TenantWebhooks,
        event: &'static str,
        id: &str,
        body: Vec<u8>,
    ) -> Result<u16, Failure> {
        let result = self.attempt(tenant, hooks, event, id, body).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(failure) => failure.kind(),
        };
        metrics::counter!(Metric::WebhookDeliveries.name(), "event" => event, "outcome" => outcome)
            .increment(1);
        result
    }

    async fn attempt(
        &self,
        tenant: &Tenant,
        hooks: &TenantWebhooks,
        event: &'static str,
        id: &str,
        body: Vec<u8>,
    ) -> Result<u16, Failure> {
        let secret =
            sb_runtime::signature::secret_for(&self.secrets, tenant).ok_or(Failure::NoSecret)?;
        let _permit = self.permit(&tenant.id).ok_or(Failure::Busy)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signed = signature::sign(secret.expose().as_bytes(), now, &body);
        let started = Instant::now();
        let sent = self
            .http
            .post(hooks.url.clone())
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, signed)
            .header("x-switchboard-event", event)
            .header("x-switchboard-delivery", id)
            .header("idempotency-key", id)
            .body(body)
            .send()
            .await;
        metrics::histogram!(Metric::WebhookSeconds.name()).record(started.elapsed().as_secs_f64());
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return Err(Failure::Timeout),
            Err(e) => return Err(Failure::Unreachable(e.without_url().to_string())),
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            Ok(status)
        } else {
            Err(Failure::Status(status))
        }
    }
}
