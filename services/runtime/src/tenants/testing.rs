//! Tenant files for tests: [`TenantToml`] writes `tenants.toml` from a few calls, so no
//! test spells the format out (a change to the format is made here once).
//!
//! Consumes the tiers and tenants a test describes; produces the file's text and, through
//! [`Tenants::parse`], the validated tenants. Built only with the cargo feature `testing`
//! (and for this crate's own tests); the test suites turn it on through their
//! dev-dependencies. State: the builder's tables.

use std::fmt;

use toml::{Table, Value};

use super::Tenants;

/// A `tenants.toml` being written: its tiers and its tenants, in the order added.
#[derive(Debug, Clone, Default)]
pub struct TenantToml {
    tiers: Table,
    tenants: Vec<Table>,
}

impl TenantToml {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds tier `name`: LLM concurrency and webhooks admitted per window (the window is
    /// left to its default; [`Self::tier_set`] sets `rate_window_secs`).
    pub fn tier(mut self, name: &str, llm_concurrency: u32, webhook_rate_limit: u32) -> Self {
        let mut tier = Table::new();
        tier.insert("llm_concurrency".into(), llm_concurrency.into());
        tier.insert("webhook_rate_limit".into(), webhook_rate_limit.into());
        self.tiers.insert(name.into(), tier.into());
        self
    }

    /// Adds tenant `id`, owning `number`, on `tier`, with one-letter placeholders for the
    /// texts (prompt, greeting, fallback phrase, voice, model); [`Self::set`] changes any.
    pub fn tenant(mut self, id: &str, number: &str, tier: &str) -> Self {
        let mut tenant = Table::new();
        for (field, value) in [
            ("id", id),
            ("system_prompt", "p"),
            ("greeting", "g"),
            ("fallback_phrase", "f"),
            ("voice", "v"),
            ("llm_model", "m"),
            ("tier", tier),
        ] {
            tenant.insert(field.into(), value.into());
        }
        tenant.insert("numbers".into(), vec![number].into());
        self.tenants.push(tenant);
        self
    }

    /// Sets `field` of the tenant added last (does nothing before the first tenant).
    pub fn set(mut self, field: &str, value: impl Into<Value>) -> Self {
        if let Some(tenant) = self.tenants.last_mut() {
            tenant.insert(field.into(), value.into());
        }
        self
    }

    /// Sets `field` of tenant `id`: a variant of a file, e.g. with one field broken.
    pub fn tenant_set(mut self, id: &str, field: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        for tenant in &mut self.tenants {
            if tenant.get("id").and_then(Value::as_str) == Some(id) {
                tenant.insert(field.into(), value.clone());
            }
        }
        self
    }

    /// Sets `field` of tier `name` (e.g. `rate_window_secs`).
    pub fn tier_set(mut self, name: &str, field: &str, value: impl Into<Value>) -> Self {
        if let Some(Value::Table(tier)) = self.tiers.get_mut(name) {
            tier.insert(field.into(), value.into());
        }
        self
    }

    /// The tenant added last: the VAD's `speech` event interrupts the bot.
    pub fn barge_in_speech(self) -> Self {
        let mut policy = Table::new();
        policy.insert("mode".into(), "speech".into());
        self.set("barge_in", policy)
    }

    /// The tenant added last: `min_words` words of a partial interrupt the bot, except
    /// the `backchannel` words.
    pub fn barge_in_words(self, min_words: u32, backchannel: &[&str]) -> Self {
        let mut policy = Table::new();
        policy.insert("mode".into(), "words".into());
        policy.insert("min_words".into(), min_words.into());
        policy.insert("backchannel".into(), backchannel.to_vec().into());
        self.set("barge_in", policy)
    }

    /// The tenant added last gets a tool served at `url`, with a `{ day: string }`
    /// argument schema and the default timeout; [`Self::tool_set`] changes any field. The
    /// first tool also names the secret's variable `SB_TENANT_SECRET_{ID}`.
    pub fn tool(mut self, name: &str, url: &str) -> Self {
        let mut tool = Table::new();
        tool.insert("name".into(), name.into());
        tool.insert("description".into(), format!("The {name} tool.").into());
        tool.insert("url".into(), url.into());
        let parameters: Table = toml::from_str(
            "type = \"object\"\nrequired = [\"day\"]\n[properties.day]\ntype = \"string\"\n",
        )
        .expect("the schema is TOML");
        tool.insert("parameters".into(), parameters.into());
        if let Some(tenant) = self.tenants.last_mut() {
            let id = tenant.get("id").and_then(Value::as_str).unwrap_or("x");
            let env = secret_env(id);
            tenant.entry("signing_secret_env").or_insert(env.into());
            let tools = tenant.entry("tools").or_insert(Value::Array(Vec::new()));
            if let Value::Array(tools) = tools {
                tools.push(tool.into());
            }
        }
        self
    }

    /// Sets `field` of the last tool of the tenant added last.
    pub fn tool_set(mut self, field: &str, value: impl Into<Value>) -> Self {
        let tool = self
            .tenants
            .last_mut()
            .and_then(|t| t.get_mut("tools"))
            .and_then(Value::as_array_mut)
            .and_then(|tools| tools.last_mut())
            .and_then(Value::as_table_mut);
        if let Some(tool) = tool {
            tool.insert(field.into(), value.into());
        }
        self
    }

    /// The file parsed and validated, as a service would load it.
    pub fn parse(&self) -> Result<Tenants, String> {
        Tenants::parse(&self.to_string())
    }
}

/// The variable [`TenantToml::tool`] names for a tenant's signing secret.
pub fn secret_env(tenant: &str) -> String {
    format!(
        "SB_TENANT_SECRET_{}",
        tenant.to_uppercase().replace('-', "_")
    )
}

/// The file's text.
impl fmt::Display for TenantToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut file = Table::new();
        file.insert("tiers".into(), self.tiers.clone().into());
        let tenants = self.tenants.iter().cloned().map(Value::Table).collect();
        file.insert("tenant".into(), Value::Array(tenants));
        f.write_str(&toml::to_string(&file).map_err(|_| fmt::Error)?)
    }
}
