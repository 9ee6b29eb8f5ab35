//! A tenant's own tools (ARCHITECTURE §2b): functions the model may call, each served by
//! an HTTP endpoint of the tenant's.
//!
//! Consumes the `[[tenant.tools]]` tables, `builtin_tools` and `signing_secret_env` of
//! `tenants.toml`; produces validated [`TenantTool`]s and [`BuiltinTools`]. Errors name the
//! tenant and the field (`tools[1].url`). The signing secret itself is never in the file:
//! the file names the environment variable that holds it, and the agent reads it at
//! start-up. State: none.

use serde::Deserialize;
use serde_json::Value;

/// What the file says about one tool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTool {
    name: String,
    description: String,
    url: String,
    /// JSON Schema of the arguments, as a TOML table.
    #[serde(default = "empty_object_schema")]
    parameters: toml::Value,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
    #[serde(default)]
    filler: Option<String>,
    #[serde(default = "yes")]
    wait: bool,
}

fn empty_object_schema() -> toml::Value {
    let mut table = toml::Table::new();
    table.insert("type".into(), "object".into());
    table.insert("properties".into(), toml::Table::new().into());
    table.into()
}

fn default_timeout() -> u64 {
    DEFAULT_TOOL_TIMEOUT_MS
}

fn yes() -> bool {
    true
}

/// How long a tool call waits for its endpoint, unless the tool says otherwise.
pub const DEFAULT_TOOL_TIMEOUT_MS: u64 = 5_000;

/// The names of the tools Switchboard itself serves.
pub const BUILTIN_TOOLS: [&str; 2] = ["end_call", "transfer_call"];

/// One validated tool of a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantTool {
    /// `^[A-Za-z0-9_-]{1,64}$`, as OpenAI requires; unique within the tenant.
    pub name: String,
    pub description: String,
    /// `https://…`, or `http://` to a loopback host (local development and tests).
    pub url: url::Url,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: Value,
    pub timeout_ms: u64,
    /// Said while the call waits for the endpoint ("One moment while I check that.").
    pub filler: Option<String>,
    /// `false`: the request is sent and the model is told so at once (e.g. "email the
    /// offers"); the answer is not waited for.
    pub wait: bool,
}

/// Which of Switchboard's own tools a tenant offers (both unless the file lists fewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinTools {
    pub end_call: bool,
    pub transfer_call: bool,
}

impl Default for BuiltinTools {
    fn default() -> Self {
        Self {
            end_call: true,
            transfer_call: true,
        }
    }
}

/// Validates `builtin_tools` (`None`: both on).
pub(super) fn builtins(
    raw: Option<&[String]>,
    field: &dyn Fn(&str, String) -> String,
) -> Result<BuiltinTools, String> {
    let Some(names) = raw else {
        return Ok(BuiltinTools::default());
    };
    let mut on = BuiltinTools {
        end_call: false,
        transfer_call: false,
    };
    for (i, name) in names.iter().enumerate() {
        match name.as_str() {
            "end_call" => on.end_call = true,
            "transfer_call" => on.transfer_call = true,
            other => {
                return Err(field(
                    &format!("builtin_tools[{i}]"),
                    format!("{other:?} is not a built-in tool (known: end_call, transfer_call)"),
                ));
            }
        }
    }
    Ok(on)
}

/// What the file says about the tenant's call webhooks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    url: String,
    #[serde(default)]
    events: Option<Vec<String>>,
}

/// The events a tenant's webhook endpoint can receive.
pub const WEBHOOK_EVENTS: [&str; 3] = ["call.started", "call.ended", "contact.completed"];

/// Where a tenant's call webhooks go, and which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantWebhooks {
    /// `https://…`, or `http://` to a loopback host.
    pub url: url::Url,
    /// A subset of [`WEBHOOK_EVENTS`] (all unless the file lists fewer).
    pub events: Vec<String>,
}

impl TenantWebhooks {
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

/// Validates the webhooks table.
pub(super) fn webhooks(
    raw: Option<RawWebhooks>,
    field: &dyn Fn(&str, String) -> String,
) -> Result<Option<TenantWebhooks>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let url = endpoint(&raw.url).map_err(|why| field("webhooks.url", why))?;
    let events = match raw.events {
        None => WEBHOOK_EVENTS.map(String::from).to_vec(),
        Some(events) => {
            for (i, event) in events.iter().enumerate() {
                if !WEBHOOK_EVENTS.contains(&event.as_str()) {
                    return Err(field(
                        &format!("webhooks.events[{i}]"),
                        format!("{event:?} is not one of {}", WEBHOOK_EVENTS.join(", ")),
                    ));
                }
            }
            events
        }
    };
    Ok(Some(TenantWebhooks { url, events }))
}

/// Validates the tools and the secret's variable name (required once there are tools or
/// webhooks: `signed` says whether there are webhooks).
pub(super) fn validate(
    raw: Vec<RawTool>,
    secret_env: Option<&str>,
    signed: bool,
    field: &dyn Fn(&str, String) -> String,
) -> Result<Vec<TenantTool>, String> {
    if let Some(name) = secret_env
        && !is_env_name(name)
    {
        return Err(field(
            "signing_secret_env",
            format!("{name:?} is not an environment variable name (A-Z, 0-9, _)"),
        ));
    }
    if (!raw.is_empty() || signed) && secret_env.is_none() {
        return Err(field(
            "signing_secret_env",
            "required with tools or webhooks: the variable holding the HMAC secret requests are signed with"
                .into(),
        ));
    }
    let mut tools: Vec<TenantTool> = Vec::with_capacity(raw.len());
    for (i, tool) in raw.into_iter().enumerate() {
        let at = |name: &str| format!("tools[{i}].{name}");
        if !is_tool_name(&tool.name) {
            return Err(field(
                &at("name"),
                format!("{:?} must be 1-64 of A-Z a-z 0-9 _ -", tool.name),
            ));
        }
        if BUILTIN_TOOLS.contains(&tool.name.as_str()) || tools.iter().any(|t| t.name == tool.name)
        {
            return Err(field(
                &at("name"),
                format!("{:?} is already a tool of this tenant", tool.name),
            ));
        }
        if tool.description.trim().is_empty() {
            return Err(field(&at("description"), "must not be empty".into()));
        }
        let url = endpoint(&tool.url).map_err(|why| field(&at("url"), why))?;
        let parameters = serde_json::to_value(&tool.parameters)
            .map_err(|e| field(&at("parameters"), e.to_string()))?;
        if parameters.get("type").and_then(Value::as_str) != Some("object") {
            return Err(field(
                &at("parameters"),
                "must be a JSON Schema with type = \"object\"".into(),
            ));
        }
        if !(100..=30_000).contains(&tool.timeout_ms) {
            return Err(field(
                &at("timeout_ms"),
                "must be between 100 and 30000".into(),
            ));
        }
        if tool.filler.as_deref().is_some_and(|f| f.trim().is_empty()) {
            return Err(field(&at("filler"), "must not be empty when set".into()));
        }
        tools.push(TenantTool {
            name: tool.name,
            description: tool.description,
            url,
            parameters,
            timeout_ms: tool.timeout_ms,
            filler: tool.filler,
            wait: tool.wait,
        });
    }
    Ok(tools)
}

/// An `https` URL, or `http` to a loopback host.
fn endpoint(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(format!(
            "{raw:?} must be https:// (http:// only to a loopback host)"
        )),
    }
}

fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_https_or_loopback_http() {
        for ok in [
            "https://acme.example/tools/book",
            "http://127.0.0.1:8080/t",
            "http://localhost/t",
            "http://[::1]:9/t",
        ] {
            assert!(endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://acme.example/t",
            "ftp://127.0.0.1/t",
            "not a url",
            "http://10.0.0.1/t",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_follow_openai_and_the_environment() {
        assert!(is_tool_name("book_table-2"));
        assert!(!is_tool_name(""));
        assert!(!is_tool_name("book table"));
        assert!(!is_tool_name(&"x".repeat(65)));
        assert!(is_env_name("SB_TENANT_SECRET_ACME"));
        assert!(!is_env_name("sb_secret"));
        assert!(!is_env_name("1SECRET"));
    }
}
