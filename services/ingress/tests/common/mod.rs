//! Shared pieces of the ingress' router and socket tests: tenants, state, signing.

#![allow(dead_code, unreachable_pub)]

pub mod line;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use sb_ingress::testing::MemoryBackend;
use sb_ingress::{IngressConfig, IngressState, Settings};
use sb_runtime::tenants::testing::TenantToml;
use sb_runtime::{LiveTenants, Shutdown};
pub use sb_schemas::testing::sid;
use tower::ServiceExt as _;

pub const TOKEN: &str = "test-auth-token";
pub const PUBLIC: &str = "https://agent.example.com";
pub const ACME: &str = "+15005550006";
pub const GLOBEX: &str = "+15005550007";
pub const TINY: &str = "+15005550008";
pub const QUIET: &str = "+15005550009";
pub const CALLER: &str = "+14155551234";

/// acme: words barge-in with backchannel; globex: speech barge-in; tiny: 2 calls a day,
/// media sockets idle after 4 s; quiet: a transfer number, silence prompts after 3 s and
/// calls of at most 60 s.
pub fn tenants() -> Arc<LiveTenants> {
    let file = TenantToml::new()
        .tier("big", 4, 1000)
        .tier("tiny", 1, 2)
        .tier_set("tiny", "rate_window_secs", 86_400)
        .tenant("acme", ACME, "big")
        .set("greeting", "Hello from Acme.")
        .set("fallback_phrase", "Sorry?")
        .barge_in_words(2, &["uh-huh", "mm-hmm", "okay", "yeah"])
        .tenant("globex", GLOBEX, "big")
        .set("greeting", "Globex.")
        .set("fallback_phrase", "Sorry?")
        .barge_in_speech()
        .tenant("tiny", TINY, "tiny")
        .set("greeting", "Tiny.")
        .set("fallback_phrase", "Sorry?")
        .set("media_idle_secs", 4)
        .tenant("quiet", QUIET, "big")
        .set("greeting", "Quiet.")
        .set("fallback_phrase", "Sorry?")
        .set("transfer_number", "+15005550010")
        .set("turn_taking", turn_taking());
    LiveTenants::fixed(file.parse().expect("test tenants parse"))
}

/// quiet's turn-taking: prompts after 3 s of silence, calls of at most a minute.
fn turn_taking() -> toml::Table {
    let mut table = toml::Table::new();
    table.insert("silence_secs".into(), 3.into());
    table.insert("silence_prompts".into(), vec!["Still there?"].into());
    table.insert("max_call_secs".into(), 60.into());
    table
}

pub fn config() -> IngressConfig {
    IngressConfig::for_tests(TOKEN, PUBLIC)
}

/// State over a fresh in-memory backend; returns both.
pub fn state_with(config: &IngressConfig) -> (IngressState<MemoryBackend>, MemoryBackend) {
    let backend = MemoryBackend::default();
    let settings = Settings::from_config(config).expect("test config is valid");
    let state = IngressState::new(
        backend.clone(),
        tenants(),
        settings,
        Shutdown::new(std::time::Duration::from_secs(5)),
    );
    (state, backend)
}

pub fn state() -> (IngressState<MemoryBackend>, MemoryBackend) {
    state_with(&config())
}

/// Form pairs from `&str` pairs.
pub fn pairs(raw: &[(&str, &str)]) -> Vec<(String, String)> {
    raw.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A form POST to `path`, with `X-Twilio-Signature: signature` if given.
pub fn request(path: &str, params: &[(String, String)], signature: Option<&str>) -> Request<Body> {
    let mut builder =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(signature) = signature {
        builder = builder.header("X-Twilio-Signature", signature);
    }
    builder
        .body(Body::from(sb_twilio::form::encode_form(params)))
        .expect("a valid request")
}

/// A request signed like Twilio signs it: over `public` + `path`, every parameter.
pub fn signed(public: &str, path: &str, params: &[(String, String)]) -> Request<Body> {
    let signature = sb_twilio::signature::sign(TOKEN, &format!("{public}{path}"), params);
    request(path, params, Some(&signature))
}

/// Sends `request` to `app`; the status and body.
pub async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a small body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// POSTs `params` to `path` on `app`, signed as Twilio signs them; the status and body.
pub async fn post_signed(
    app: &axum::Router,
    path: &str,
    params: &[(String, String)],
) -> (StatusCode, String) {
    send(app, signed(PUBLIC, path, params)).await
}
