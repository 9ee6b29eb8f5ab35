//! `switchboard campaign …`: the operator's client of the campaigns API
//! (docs/campaigns-api.md, "CLI").
//!
//! Consumes a subcommand, the API's URL (`--api` or `SB_CAMPAIGNS_URL`) and a tenant's
//! API key (only from `SB_CAMPAIGNS_API_KEY`, so it never lands in shell history; never
//! printed); produces HTTP requests to the API and readable lines on the given writer. An
//! API error comes back as an error carrying the API's code and message (the process
//! exits non-zero). No state.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// The environment variable holding the API key.
pub const KEY_VARIABLE: &str = "SB_CAMPAIGNS_API_KEY";

/// Manage outbound campaigns through the campaigns API (key in SB_CAMPAIGNS_API_KEY).
#[derive(Debug, clap::Args)]
pub struct CampaignArgs {
    /// The campaigns API's base URL.
    #[arg(
        long,
        env = "SB_CAMPAIGNS_URL",
        default_value = "http://127.0.0.1:8090",
        global = true
    )]
    pub api: String,
    #[command(subcommand)]
    pub action: Action,
}

/// A tenant's campaign.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    #[arg(long)]
    pub tenant: String,
    #[arg(long)]
    pub campaign: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create a campaign from a JSON definition; prints its id.
    Create {
        #[arg(long)]
        tenant: String,
        /// The definition (see docs/campaigns-api.md).
        #[arg(long)]
        file: PathBuf,
    },
    /// Upload contacts: a CSV file (header `phone` + variables) or a `.json` file.
    Upload {
        #[command(flatten)]
        target: Target,
        file: PathBuf,
    },
    /// The campaign, its state and its contacts per state.
    Status(Target),
    /// Stop calling until resumed.
    Pause(Target),
    /// Call again.
    Resume(Target),
    /// Cancel for good (queued contacts end `canceled`).
    Cancel(Target),
    /// List the contacts, every page, optionally of one state.
    Contacts {
        #[command(flatten)]
        target: Target,
        /// queued, leased, calling, done, failed or canceled.
        #[arg(long)]
        state: Option<String>,
    },
}

/// Runs one command with `key`, writing what it did to `out`.
pub async fn run(args: CampaignArgs, key: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let api = Api {
        http: reqwest::Client::new(),
        base: args.api.trim_end_matches('/').to_owned(),
        key: key.to_owned(),
    };
    match args.action {
        Action::Create { tenant, file } => {
            let body =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let c = api
                .send(
                    reqwest::Method::POST,
                    &format!("/v1/tenants/{tenant}/campaigns"),
                    Some(("application/json", body)),
                )
                .await?;
            writeln!(
                out,
                "created campaign {} ({:?}), {}",
                s(&c["id"]),
                s(&c["name"]),
                s(&c["state"])
            )?;
        }
        Action::Upload { target, file } => {
            let body =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let kind = if file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            {
                "application/json"
            } else {
                "text/csv"
            };
            let r = api
                .send(
                    reqwest::Method::POST,
                    &target.path("/contacts"),
                    Some((kind, body)),
                )
                .await?;
            writeln!(
                out,
                "queued {}, duplicates {}, rejected {}",
                r["queued"], r["duplicates"], r["rejected_total"]
            )?;
            for rej in r["rejected"].as_array().into_iter().flatten() {
                writeln!(out, "  line {}: {}", rej["line"], s(&rej["reason"]))?;
            }
        }
        Action::Status(target) => {
            let c = api
                .send(reqwest::Method::GET, &target.path(""), None)
                .await?;
            write_campaign(out, &c)?;
        }
        Action::Pause(target) => {
            let c = api
                .send(reqwest::Method::POST, &target.path("/pause"), None)
                .await?;
            write_campaign(out, &c)?;
        }
        Action::Resume(target) => {
            let c = api
                .send(reqwest::Method::POST, &target.path("/resume"), None)
                .await?;
            write_campaign(out, &c)?;
        }
        Action::Cancel(target) => {
            let r = api
                .send(reqwest::Method::POST, &target.path("/cancel"), None)
                .await?;
            writeln!(
                out,
                "cancelled: {} queued contacts will not be called",
                r["canceled_contacts"]
            )?;
            write_campaign(out, &r["campaign"])?;
        }
        Action::Contacts { target, state } => {
            let mut cursor: Option<String> = None;
            let mut total = 0u64;
            loop {
                let mut query = vec![("limit", "500".to_owned())];
                query.extend(state.clone().map(|s| ("state", s)));
                query.extend(cursor.clone().map(|c| ("cursor", c)));
                let q = serde_urlencoded::to_string(&query)?;
                let page = api
                    .send(
                        reqwest::Method::GET,
                        &format!("{}?{q}", target.path("/contacts")),
                        None,
                    )
                    .await?;
                for c in page["contacts"].as_array().into_iter().flatten() {
                    total += 1;
                    let sids: Vec<&str> = c["call_sids"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    writeln!(
                        out,
                        "{:<16} {:<9} attempts {} last {} calls {}",
                        s(&c["phone"]),
                        s(&c["state"]),
                        c["attempts"],
                        c["last_outcome"].as_str().unwrap_or("-"),
                        if sids.is_empty() {
                            "-".to_owned()
                        } else {
                            sids.join(",")
                        }
                    )?;
                }
                cursor = page["next_cursor"].as_str().map(str::to_owned);
                if cursor.is_none() {
                    break;
                }
            }
            writeln!(out, "{total} contacts")?;
        }
    }
    Ok(())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn write_campaign(out: &mut impl Write, c: &Value) -> anyhow::Result<()> {
    writeln!(
        out,
        "campaign {} ({:?}): {}",
        s(&c["id"]),
        s(&c["name"]),
        s(&c["state"])
    )?;
    let counts = &c["counts"];
    let line: Vec<String> = ["queued", "leased", "calling", "done", "failed", "canceled"]
        .iter()
        .map(|k| format!("{k} {}", counts[*k]))
        .collect();
    writeln!(out, "  {}", line.join(", "))?;
    Ok(())
}

impl Target {
    fn path(&self, rest: &str) -> String {
        format!(
            "/v1/tenants/{}/campaigns/{}{rest}",
            self.tenant, self.campaign
        )
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    /// One request; a non-2xx answer becomes an error with the API's code and message.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some((kind, bytes)) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, kind).body(bytes);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the campaigns API at {}", self.base))?;
        let status = res.status();
        let text = res.text().await.context("reading the API's answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let e = &value["error"];
            match (e["code"].as_str(), e["message"].as_str()) {
                (Some(code), Some(message)) => bail!("{} {code}: {message}", status.as_u16()),
                _ => bail!("the API answered {status}"),
            }
        }
        Ok(value)
    }
}
