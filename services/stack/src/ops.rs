//! The operator's commands: `switchboard topology apply|check` and `switchboard nats-auth`.
//!
//! Consumes NATS login settings (as `ops`) and an environment's stream overrides
//! (`deploy/overlays/*/streams.toml`); produces the streams and consumers of `nats/` on
//! the server (apply) or the list of differences (check), one line each, and the
//! nats-server users block. Services never create or change streams: this is the one
//! writer, so an operator's change is reported, not silently undone. State: none.

use std::path::PathBuf;

use anyhow::Context as _;
use sb_runtime::{
    Secret, Topology,
    nats::{self, NatsLogin},
    reconcile::{Change, Overrides},
};

/// How the operator reaches NATS.
#[derive(Debug, clap::Args)]
pub struct OpsLogin {
    /// NATS URL(s), comma-separated.
    #[arg(long, env = "SB_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The operator's user.
    #[arg(long, env = "SB_NATS_OPS_USER", default_value = "ops")]
    pub nats_user: String,
    /// Its password (nats-server has it as SB_NATS_PASSWORD_OPS).
    #[arg(long, env = "SB_NATS_PASSWORD_OPS", hide_env_values = true)]
    pub nats_password: Option<Secret>,
    /// CA certificate (PEM) when NATS serves TLS.
    #[arg(long, env = "SB_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
}

impl OpsLogin {
    fn login(&self) -> NatsLogin {
        let mut login = NatsLogin::anonymous(&self.nats_url, "switchboard-ops")
            .with_tls_ca(self.nats_tls_ca.clone());
        if let Some(password) = &self.nats_password {
            login.user = Some((self.nats_user.clone(), password.clone()));
        }
        login
    }
}

/// Applies (`write`) or checks the topology with `overrides`; prints one line per
/// difference. Returns how many differences there were (check: non-zero is drift).
pub async fn topology(
    login: &OpsLogin,
    overrides: Option<PathBuf>,
    write: bool,
) -> anyhow::Result<usize> {
    let mut topology = Topology::embedded()?;
    if let Some(path) = overrides {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        topology = topology
            .with_overrides(&Overrides::parse(&text)?)
            .with_context(|| path.display().to_string())?;
    }
    let client = nats::connect(&login.login()).await?;
    let js = async_nats::jetstream::new(client);
    let changes = topology.reconcile(&js, write).await?;
    for change in &changes {
        let verb = match (change, write) {
            (Change::Kept { .. }, _) => "kept",
            (Change::Created { .. }, true) => "created",
            (Change::Created { .. }, false) => "missing",
            (Change::Differs { .. }, true) => "applied",
            (Change::Differs { .. }, false) => "differs",
        };
        println!("{verb}: {change}");
    }
    let streams: Vec<&str> = topology.streams.iter().map(|s| s.name.as_str()).collect();
    println!(
        "topology: {} streams ({}), {} consumers; {} difference(s){}",
        streams.len(),
        streams.join(", "),
        topology.consumers.len(),
        changes.len(),
        if write { ", applied" } else { "" }
    );
    Ok(changes.len())
}
