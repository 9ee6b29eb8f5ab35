//! Changing one setting of a tenant on a running stack, as an operator would: through the
//! console's admin API, then waiting until every service serves new calls with it.
//!
//! Consumes the stack (its console and the services' `/metrics`), a tenant id, a dotted
//! field path (`turn_taking.preemptive`) and a JSON value; produces the stored revision once
//! each service's `switchboard_tenant_config_revision` reached it ([`applied`] waits for a
//! revision stored otherwise). The benchmarks use it to
//! compare a setting on and off side by side. State: none.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::stack::{OPERATOR_TOKEN, Stack};

/// How long the services may take to apply a revision.
const APPLY_WITHIN: Duration = Duration::from_secs(20);

/// Sets `field` (dotted: `table.key`) of `tenant` to `value`; returns the new revision once
/// every service applies it.
pub async fn set(stack: &Stack, tenant: &str, field: &str, value: Value) -> anyhow::Result<u64> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("{}/v1/admin/tenants/{tenant}", stack.console_url());
    let doc: Value = client
        .get(&url)
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .context("the console did not answer")?
        .error_for_status()?
        .json()
        .await?;
    let mut table = doc["tenant"].clone();
    let mut at = &mut table;
    let mut parts = field.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            at[part] = value.clone();
        } else {
            if at.get(part).is_none() {
                at[part] = Value::Object(Default::default());
            }
            at = &mut at[part];
        }
    }
    let answer = client
        .put(&url)
        .bearer_auth(OPERATOR_TOKEN)
        .json(&table)
        .send()
        .await?;
    if !answer.status().is_success() {
        bail!(
            "the console refused {tenant}.{field}: {}",
            answer.text().await?
        );
    }
    let revision = answer.json::<Value>().await?["revision"]
        .as_u64()
        .context("no revision in the console's answer")?;
    applied(stack, revision).await?;
    Ok(revision)
}

/// Waits until every service of `stack` serves new calls with tenants revision `revision`
/// (its `switchboard_tenant_config_revision` says so).
pub async fn applied(stack: &Stack, revision: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    for (name, addr) in stack.service_addrs() {
        let deadline = Instant::now() + APPLY_WITHIN;
        loop {
            if served(&client, addr).await >= Some(revision) {
                break;
            }
            if Instant::now() > deadline {
                bail!("{name} did not apply tenants revision {revision} within {APPLY_WITHIN:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The tenants revision a service reports serving.
async fn served(client: &reqwest::Client, addr: std::net::SocketAddr) -> Option<u64> {
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_tenant_config_revision "))?
        .trim()
        .parse()
        .ok()?;
    Some(value as u64)
}
