//! A tenant's own tools over HTTP (ARCHITECTURE §2b, PROTOCOLS §10).
//!
//! Consumes one model tool call of a tenant tool, with the call's context; produces the
//! tenant endpoint's answer as a [`ToolAnswer`]: a signed `POST` (JSON body: the tool call
//! event's id, the tool, its arguments, the call), one retry when the first attempt timed
//! out, failed to connect, answered non-2xx or answered something that is not JSON, and a
//! count in `switchboard_tool_calls_total{outcome}`. A tool that does not wait is sent in
//! the background and answered `sent` at once. State: the HTTP connection pool and each
//! tenant's signing secret, read from the environment at start-up (never logged).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sb_runtime::metrics::Metric;
use sb_runtime::tenants::TenantTool;
use sb_runtime::{Secret, Tenant, Tenants, signature};
use sb_schemas::{TenantId, ToolOutcome};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

/// The most of a tenant's answer that is read (and given to the model).
pub const MAX_RESULT_BYTES: usize = 16 * 1024;

/// The pause before the one retry.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What the tenant's endpoint is told about the call (the `call` object of the request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ToolContext {
    pub tenant: String,
    pub call_sid: String,
    pub turn: u32,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    pub from: Option<String>,
    pub to: Option<String>,
    pub campaign: Option<String>,
    pub contact: Option<String>,
    /// The campaign contact's variables (empty for an inbound call).
    pub variables: serde_json::Map<String, Value>,
}

/// One request to a tenant's tool endpoint, as sent (PROTOCOLS §10.1).
#[derive(Debug, Serialize)]
struct ToolRequest<'a> {
    /// The `tool_call` event's id: the same on a retry and on a redelivered turn, so the
    /// tenant can drop a duplicate.
    id: &'a str,
    tool: &'a str,
    arguments: &'a Value,
    call: &'a ToolContext,
}

/// How one tool call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolAnswer {
    pub outcome: ToolOutcome,
    /// The last attempt's HTTP status (0: none answered).
    pub status: u16,
    /// The tenant's JSON, compact (`Ok` only).
    pub result: String,
    pub attempts: u32,
    pub elapsed: Duration,
}

impl ToolAnswer {
    pub(crate) fn refused() -> Self {
        Self {
            outcome: ToolOutcome::Refused,
            status: 0,
            result: String::new(),
            attempts: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// What the model is told: the tenant's JSON, or that a non-waiting tool was sent.
    pub fn for_model(&self) -> String {
        match self.outcome {
            ToolOutcome::Ok => self.result.clone(),
            ToolOutcome::Sent => r#"{"status":"sent"}"#.to_owned(),
            other => format!(r#"{{"error":"{}"}}"#, other.as_str()),
        }
    }
}

/// Why the agent cannot start with these tenants' tools.
#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error("{0}")]
    NoSecret(String),
    #[error("cannot build the http client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The client for every tenant's tools.
#[derive(Clone)]
pub struct TenantTools {
    client: reqwest::Client,
    secrets: HashMap<TenantId, Secret>,
}

impl TenantTools {
    /// Reads each tenant's signing secret through `env` (the process environment in
    /// production); a tenant with tools and no secret is an error naming the variable.
    pub fn new(
        tenants: &Tenants,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ToolsError> {
        let secrets = signature::tenant_secrets(tenants, |t| !t.tools.is_empty(), env)
            .map_err(ToolsError::NoSecret)?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("switchboard-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, secrets })
    }

    /// The tenant tool named `name`, if the tenant has one.
    pub fn find<'t>(tenant: &'t Tenant, name: &str) -> Option<&'t TenantTool> {
        tenant.tools.iter().find(|t| t.name == name)
    }

    /// Calls `tool` with the model's `arguments` (JSON text): waits for its answer, or,
    /// for a tool that does not wait, sends it in the background and answers `Sent`.
    pub async fn call(
        &self,
        tenant: &Tenant,
        tool: &TenantTool,
        id: &str,
        arguments: &str,
        context: &ToolContext,
    ) -> ToolAnswer {
        let arguments = match serde_json::from_str::<Value>(arguments) {
            Ok(value @ Value::Object(_)) => value,
            // Some models send "" for a call without arguments.
            _ if arguments.trim().is_empty() => Value::Object(Default::default()),
            _ => {
                tracing::warn!(tool = %tool.name, "the model's arguments are not a JSON object");
                count(ToolOutcome::Refused, Duration::ZERO);
                return ToolAnswer::refused();
            }
        };
        let Some(secret) = signature::secret_for(&self.secrets, tenant) else {
            tracing::warn!(tool = %tool.name, "no signing secret for the tenant's tools");
            count(ToolOutcome::Refused, Duration::ZERO);
            return ToolAnswer::refused();
        };
        let body = serde_json::to_vec(&ToolRequest {
            id,
            tool: &tool.name,
            arguments: &arguments,
            call: context,
        })
        .expect("a tool request serialises");
        let send = Sending {
            client: self.client.clone(),
            url: tool.url.clone(),
            timeout: Duration::from_millis(tool.timeout_ms),
            secret: secret.clone(),
            id: id.to_owned(),
            body: Bytes::from(body),
        };
        if tool.wait {
            return send.run().await;
        }
        let name = tool.name.clone();
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let answer = send.run().await;
                tracing::info!(tool = %name, outcome = answer.outcome.as_str(), "tool sent");
            },
            span,
        ));
        ToolAnswer {
            outcome: ToolOutcome::Sent,
            status: 0,
            result: String::new(),
            attempts: 1,
            elapsed: Duration::ZERO,
        }
    }
}

/// One tool request with its retry.
struct Sending {
    client: reqwest::Client,
    url: url::Url,
    timeout: Duration,
    secret: Secret,
    id: String,
    body: Bytes,
}

impl Sending {
    async fn run(self) -> ToolAnswer {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (outcome, status, result) = self.attempt().await;
            if outcome == ToolOutcome::Ok || attempts == 2 {
                let elapsed = started.elapsed();
                count(outcome, elapsed);
                if outcome != ToolOutcome::Ok {
                    tracing::warn!(outcome = outcome.as_str(), status, "tool failed twice");
                }
                return ToolAnswer {
                    outcome,
                    status,
                    result,
                    attempts,
                    elapsed,
                };
            }
            tracing::info!(
                outcome = outcome.as_str(),
                status,
                "tool failed; retrying once"
            );
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn attempt(&self) -> (ToolOutcome, u16, String) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signed = signature::sign(self.secret.expose().as_bytes(), now, &self.body);
        let request = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, signed)
            .header("idempotency-key", &self.id)
            .body(self.body.clone());
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return (ToolOutcome::Timeout, 0, String::new()),
            Err(_) => return (ToolOutcome::Unreachable, 0, String::new()),
        };
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return (ToolOutcome::Status, status, String::new());
        }
        let body = match read_capped(response).await {
            Ok(body) => body,
            Err(outcome) => return (outcome, status, String::new()),
        };
        match serde_json::from_slice::<Value>(&body) {
            Ok(value) => (ToolOutcome::Ok, status, value.to_string()),
            Err(_) => (ToolOutcome::Invalid, status, String::new()),
        }
    }
}

/// The body, up to [`MAX_RESULT_BYTES`] (more is `Invalid`; a stall is `Timeout`).
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, ToolOutcome> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESULT_BYTES {
                    return Err(ToolOutcome::Invalid);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err(ToolOutcome::Timeout),
            Err(_) => return Err(ToolOutcome::Unreachable),
        }
    }
}

fn count(outcome: ToolOutcome, elapsed: Duration) {
    metrics::counter!(Metric::ToolCalls.name(), "outcome" => outcome.as_str()).increment(1);
    if outcome != ToolOutcome::Refused {
        metrics::histogram!(Metric::ToolSeconds.name()).record(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_hears_the_result_or_the_failure() {
        let answer = |outcome, result: &str| ToolAnswer {
            outcome,
            status: 200,
            result: result.into(),
            attempts: 1,
            elapsed: Duration::ZERO,
        };
        assert_eq!(
            answer(ToolOutcome::Ok, r#"{"slot":"7 pm"}"#).for_model(),
            r#"{"slot":"7 pm"}"#
        );
        assert_eq!(
            answer(ToolOutcome::Sent, "").for_model(),
            r#"{"status":"sent"}"#
        );
        assert_eq!(
            answer(ToolOutcome::Timeout, "").for_model(),
            r#"{"error":"timeout"}"#
        );
    }
}
