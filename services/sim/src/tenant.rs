//! The tenant-server stand-in: what a Switchboard customer runs behind its tools and its
//! call webhooks, answering from a script (PROTOCOLS §10).
//!
//! Consumes `POST /tools/{name}` and `POST /webhooks/{name}` with Switchboard's signed JSON
//! body; checks the
//! `X-Switchboard-Signature` itself (HMAC-SHA256 over `{t}.{body}`, written here apart from
//! Switchboard's signer so the two check each other) and the body's shape, records every
//! request, and answers per tool from the script: after `delay_ms`, the first `fail`
//! requests 500, the next `invalid` ones a 200 that is not JSON, then the tool's JSON
//! answer (`{"ok":true}` unless scripted; `{n}` in it becomes the request's number).
//! `GET /sim/received` lists what was received, with when it arrived and was answered.
//! State: the record and per-tool request counts of one server; nothing persists.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::SimServer;
use crate::support::announce_and_serve;

/// How one tool answers.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolScript {
    /// The JSON answered once the failures are used up.
    pub answer: Value,
    pub delay: Duration,
    /// The first this-many requests are answered 500.
    pub fail: u32,
    /// The next this-many are answered 200 with a body that is not JSON.
    pub invalid: u32,
}

impl Default for ToolScript {
    fn default() -> Self {
        Self {
            answer: json!({ "ok": true }),
            delay: Duration::ZERO,
            fail: 0,
            invalid: 0,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub addr: Option<SocketAddr>,
    /// The HMAC secret Switchboard signs with; `None`: signatures are recorded unchecked.
    pub secret: Option<String>,
    /// Per tool name; a tool not listed answers `{"ok":true}` at once.
    pub tools: BTreeMap<String, ToolScript>,
    /// Per webhook endpoint name (`/webhooks/{name}`): failures and delays.
    pub hooks: BTreeMap<String, ToolScript>,
}

/// One request as received.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Received {
    pub path: String,
    /// `valid`, `invalid` or `unchecked` (no secret configured).
    pub signature: &'static str,
    /// `X-Switchboard-Event` (webhooks).
    pub event: Option<String>,
    pub idempotency_key: Option<String>,
    /// The body, parsed (`null` if it was not JSON).
    pub body: Value,
    /// The status answered.
    pub status: u16,
    /// When the request arrived and when its answer was ready (µs since the epoch; 0
    /// while it is being delayed).
    pub at_us: u64,
    pub answered_us: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

struct Shared {
    config: Config,
    received: Mutex<Vec<Received>>,
    counts: Mutex<HashMap<String, u32>>,
}

/// How old a signature may be.
const TOLERANCE_SECS: u64 = 300;

/// `valid` when `header` is `t=…,v1=…` over `body` with `secret`, within the tolerance.
fn check_signature(secret: &str, header: Option<&str>, body: &[u8]) -> &'static str {
    let Some(header) = header else {
        return "invalid";
    };
    let fields: HashMap<&str, &str> = header
        .split(',')
        .filter_map(|part| part.trim().split_once('='))
        .collect();
    let (Some(t), Some(v1)) = (fields.get("t"), fields.get("v1")) else {
        return "invalid";
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let fresh = t
        .parse::<u64>()
        .is_ok_and(|t| now.abs_diff(t) <= TOLERANCE_SECS);
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return "invalid";
    };
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let matches = hex::decode(v1).is_ok_and(|digest| mac.verify_slice(&digest).is_ok());
    if fresh && matches { "valid" } else { "invalid" }
}

/// The body Switchboard sends: to a tool, `id`, `tool` (the path's name), `arguments` (an
/// object) and `call` (an object with `tenant` and `call_sid`); to a webhook (`key`
/// `hook:…`), `id`, `type`, `tenant` and a `data` object.
fn well_formed(body: &Value, key: &str) -> bool {
    if key.starts_with("hook:") {
        let text = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
        };
        return text("id")
            && text("type")
            && text("tenant")
            && body.get("data").is_some_and(Value::is_object);
    }
    let name = key;
    body.get("id")
        .and_then(Value::as_str)
        .is_some_and(|id| !id.is_empty())
        && body.get("tool").and_then(Value::as_str) == Some(name)
        && body.get("arguments").is_some_and(Value::is_object)
        && body
            .pointer("/call/tenant")
            .and_then(Value::as_str)
            .is_some()
        && body
            .pointer("/call/call_sid")
            .and_then(Value::as_str)
            .is_some()
}

async fn tool(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let script = shared.config.tools.get(&name).cloned().unwrap_or_default();
    let path = format!("/tools/{name}");
    scripted(&shared, path, name, &script, &headers, &body).await
}

/// `POST /webhooks/{name}`: a tenant's call webhooks (the name tells tenants apart),
/// answered from the `hooks` script (failures and delays; a 2xx answers `{}`).
async fn webhook(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let script = ToolScript {
        answer: json!({}),
        ..shared.config.hooks.get(&name).cloned().unwrap_or_default()
    };
    // Failures count per endpoint and event type: `--hook-fail acme=2` fails the first two
    // deliveries of each event.
    let event = headers
        .get("x-switchboard-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    let key = format!("hook:{name}:{event}");
    scripted(
        &shared,
        format!("/webhooks/{name}"),
        key,
        &script,
        &headers,
        &body,
    )
    .await
}

/// Checks, counts, records and answers one request by `script`.
async fn scripted(
    shared: &Shared,
    path: String,
    key: String,
    script: &ToolScript,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let at_us = now_us();
    let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let signature = match &shared.config.secret {
        Some(secret) => check_signature(secret, header("x-switchboard-signature"), body),
        None => "unchecked",
    };
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let (status, reply) = if signature == "invalid" {
        (
            StatusCode::UNAUTHORIZED,
            json!({ "error": "bad signature" }).to_string(),
        )
    } else if !well_formed(&parsed, &key) {
        (
            StatusCode::BAD_REQUEST,
            json!({ "error": "malformed request" }).to_string(),
        )
    } else {
        let n = {
            let mut counts = shared.counts.lock().expect("counts lock");
            let n = counts.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        if n <= script.fail {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "scripted failure" }).to_string(),
            )
        } else if n <= script.fail + script.invalid {
            (StatusCode::OK, "<html>not json</html>".to_owned())
        } else {
            // `{n}` in an answer becomes the request's number (answers that differ).
            let answer = script.answer.to_string().replace("{n}", &n.to_string());
            (StatusCode::OK, answer)
        }
    };
    // Recorded on arrival (a test may act while the answer is delayed), completed after.
    let index = {
        let mut received = shared.received.lock().expect("record lock");
        received.push(Received {
            path,
            signature,
            event: header("x-switchboard-event").map(str::to_owned),
            idempotency_key: header("idempotency-key").map(str::to_owned),
            body: parsed,
            status: status.as_u16(),
            at_us,
            answered_us: 0,
        });
        received.len() - 1
    };
    tokio::time::sleep(script.delay).await;
    if let Some(entry) = shared.received.lock().expect("record lock").get_mut(index) {
        entry.answered_us = now_us();
    }
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        reply,
    )
        .into_response()
}

async fn received(State(shared): State<Arc<Shared>>) -> axum::Json<Vec<Received>> {
    axum::Json(shared.received.lock().expect("record lock").clone())
}

pub fn router(config: Config) -> Router {
    let shared = Arc::new(Shared {
        config,
        received: Mutex::new(Vec::new()),
        counts: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/tools/{name}", post(tool))
        .route("/webhooks/{name}", post(webhook))
        .route("/sim/received", get(received))
        .with_state(shared)
}

/// Starts the stand-in in the background.
pub async fn spawn(config: Config) -> std::io::Result<SimServer> {
    let addr = config
        .addr
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    SimServer::spawn(addr, router(config)).await
}

/// What `GET /sim/received` of the stand-in at `url` lists.
pub async fn fetch_received(url: &str) -> anyhow::Result<Vec<Value>> {
    let list = reqwest::get(format!("{url}/sim/received"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(list)
}

/// `sim tenant`: a tenant's tool server, answering from a script.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port, printed on the first line).
    #[arg(long, env = "SIM_TENANT_ADDR", default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// The HMAC secret requests must be signed with; unchecked when unset.
    #[arg(long, env = "SIM_TENANT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// `NAME=JSON`: what tool NAME answers (default `{"ok":true}`).
    #[arg(long = "answer", value_name = "NAME=JSON")]
    pub answers: Vec<String>,
    /// `NAME=MS`: tool NAME answers after this long.
    #[arg(long = "delay-ms", value_name = "NAME=MS")]
    pub delays: Vec<String>,
    /// `NAME=N`: the first N requests of tool NAME are answered 500.
    #[arg(long = "fail", value_name = "NAME=N")]
    pub fails: Vec<String>,
    /// `NAME=N`: the next N requests of tool NAME are answered 200 with a body not JSON.
    #[arg(long = "invalid", value_name = "NAME=N")]
    pub invalids: Vec<String>,
    /// `NAME=N`: the first N webhooks of each event type to `/webhooks/NAME` are answered 500.
    #[arg(long = "hook-fail", value_name = "NAME=N")]
    pub hook_fails: Vec<String>,
    /// `NAME=MS`: webhooks to `/webhooks/NAME` are answered after this long.
    #[arg(long = "hook-delay-ms", value_name = "NAME=MS")]
    pub hook_delays: Vec<String>,
}

impl Args {
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut tools: BTreeMap<String, ToolScript> = BTreeMap::new();
        let split = |spec: &str| -> anyhow::Result<(String, String)> {
            let (name, value) = spec
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("{spec:?} is not NAME=VALUE"))?;
            Ok((name.to_owned(), value.to_owned()))
        };
        for spec in &self.answers {
            let (name, json) = split(spec)?;
            tools.entry(name).or_default().answer = serde_json::from_str(&json)?;
        }
        for spec in &self.delays {
            let (name, ms) = split(spec)?;
            tools.entry(name).or_default().delay = Duration::from_millis(ms.parse()?);
        }
        for spec in &self.fails {
            let (name, n) = split(spec)?;
            tools.entry(name).or_default().fail = n.parse()?;
        }
        for spec in &self.invalids {
            let (name, n) = split(spec)?;
            tools.entry(name).or_default().invalid = n.parse()?;
        }
        let mut hooks: BTreeMap<String, ToolScript> = BTreeMap::new();
        for spec in &self.hook_fails {
            let (name, n) = split(spec)?;
            hooks.entry(name).or_default().fail = n.parse()?;
        }
        for spec in &self.hook_delays {
            let (name, ms) = split(spec)?;
            hooks.entry(name).or_default().delay = Duration::from_millis(ms.parse()?);
        }
        Ok(Config {
            addr: Some(self.addr),
            secret: self.secret,
            tools,
            hooks,
        })
    }
}

/// Runs the stand-in until Ctrl-C or SIGTERM; the first stdout line is `listening on …`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let server = spawn(args.into_config()?).await?;
    announce_and_serve(server).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python's `hmac` computed the vector of PROTOCOLS §10: the stand-in's own check
    /// agrees with it, and refuses a changed body or a stale time.
    #[test]
    fn signatures() {
        let header =
            "t=1764806400,v1=65a8a4115cda0d1fceef9dfbb65319161a7fc0687d08d8e6dc9a082cf36582a9";
        let body = br#"{"id":"evt_1"}"#;
        // The vector is old: only the age check fails it, so sign a fresh one too.
        assert_eq!(check_signature("whsec_test", Some(header), body), "invalid");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_test").unwrap();
        mac.update(format!("{now}.").as_bytes());
        mac.update(body);
        let fresh = format!("t={now},v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(check_signature("whsec_test", Some(&fresh), body), "valid");
        assert_eq!(
            check_signature("whsec_test", Some(&fresh), b"{}"),
            "invalid"
        );
        assert_eq!(check_signature("other", Some(&fresh), body), "invalid");
        assert_eq!(check_signature("whsec_test", None, body), "invalid");
    }
}
