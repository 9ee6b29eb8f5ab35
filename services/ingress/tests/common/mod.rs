//! Shared pieces of the ingress' router and socket tests: tenants, state, signing.

#![allow(dead_code, unreachable_pub)]

pub mod line;

use std::sync::Arc;

use sb_ingress::testing::MemoryBackend;
use sb_ingress::{IngressConfig, IngressState, Settings};
use sb_runtime::tenants::testing::TenantToml;
use sb_runtime::{Shutdown, Tenants};
pub use sb_schemas::testing::sid;

pub const TOKEN: &str = "test-auth-token";
pub const PUBLIC: &str = "https://agent.example.com";
pub const ACME: &str = "+15005550006";
pub const GLOBEX: &str = "+15005550007";
pub const TINY: &str = "+15005550008";
pub const CALLER: &str = "+14155551234";

/// acme: words barge-in with backchannel; globex: speech barge-in; tiny: 2 calls a day.
pub fn tenants() -> Arc<Tenants> {
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
        .set("fallback_phrase", "Sorry?");
    Arc::new(file.parse().expect("test tenants parse"))
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
