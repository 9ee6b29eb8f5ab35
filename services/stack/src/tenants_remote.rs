//! The console's admin API as `switchboard tenants get|put` calls it.
//!
//! Consumes the console's URL and operator token ([`ConsoleArgs`]) and TOML text; produces
//! the live file or one tenant's table as TOML with its revision, and stored revisions or
//! the console's refusal (its message names the tenant and field). State: none.

use anyhow::{Context as _, bail};
use reqwest::StatusCode;
use serde_json::Value;

use crate::tenants_cli::ConsoleArgs;

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?)
}

fn url(console: &ConsoleArgs, path: &str) -> String {
    format!("{}{path}", console.console_url.trim_end_matches('/'))
}

/// The refusal's message from the API's error body, or the status.
async fn refusal(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match body["error"]["message"].as_str() {
        Some(message) => format!("refused ({status}): {message}"),
        None => format!("refused ({status})"),
    }
}

/// The revision and the live file, or one tenant's table, as TOML.
pub(crate) async fn get(
    console: &ConsoleArgs,
    tenant: Option<&str>,
) -> anyhow::Result<(u64, String)> {
    let path = match tenant {
        Some(id) => format!("/v1/admin/tenants/{id}"),
        None => "/v1/admin/config".to_owned(),
    };
    let response = client()?
        .get(url(console, &path))
        .bearer_auth(&console.operator_token)
        .send()
        .await
        .with_context(|| format!("cannot reach the console at {}", console.console_url))?;
    if !response.status().is_success() {
        bail!("{}", refusal(response).await);
    }
    match tenant {
        None => {
            let revision = response
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim_matches('"').parse().ok())
                .unwrap_or(0);
            Ok((revision, response.text().await?))
        }
        Some(_) => {
            let doc: Value = response.json().await?;
            let revision = doc["revision"].as_u64().unwrap_or(0);
            let table = toml::Value::try_from(doc["tenant"].clone())
                .context("the tenant's table is not TOML")?;
            Ok((revision, toml::to_string(&table)?))
        }
    }
}

/// Stores `text` (a whole file, or with `tenant` that tenant's table); `Ok(Err(message))`
/// when the console refused it.
pub(crate) async fn put(
    console: &ConsoleArgs,
    tenant: Option<&str>,
    text: &str,
    if_match: Option<u64>,
) -> anyhow::Result<Result<u64, String>> {
    let request = match tenant {
        Some(id) => {
            let table: toml::Table =
                toml::from_str(text).context("the tenant's table is not TOML")?;
            client()?
                .put(url(console, &format!("/v1/admin/tenants/{id}")))
                .json(&table)
        }
        None => client()?
            .put(url(console, "/v1/admin/config"))
            .header(reqwest::header::CONTENT_TYPE, "application/toml")
            .body(text.to_owned()),
    };
    let request = match if_match {
        Some(revision) => request.header(reqwest::header::IF_MATCH, format!("\"{revision}\"")),
        None => request,
    };
    let response = request
        .bearer_auth(&console.operator_token)
        .send()
        .await
        .with_context(|| format!("cannot reach the console at {}", console.console_url))?;
    if response.status() != StatusCode::OK {
        return Ok(Err(refusal(response).await));
    }
    let applied: Value = response.json().await?;
    Ok(Ok(applied["revision"].as_u64().unwrap_or(0)))
}
