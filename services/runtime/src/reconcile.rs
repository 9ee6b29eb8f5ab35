//! Bringing a live JetStream in line with the topology, without undoing what we do not
//! manage: the operator's `switchboard topology apply|check`, and the start-up check of a
//! service.
//!
//! Consumes the [`Topology`] from `nats/`, an environment's [`Overrides`] (replicas,
//! storage, max age, max bytes; `deploy/overlays/*/streams.toml`) and a JetStream context;
//! produces the list of [`Change`]s it found (and, when applying, made). Only the fields
//! Switchboard configures are compared or written: an operator's placement, metadata or
//! any other field survives an apply, and nothing is changed silently (every change is
//! returned, and printed by the CLI). A service never writes: it checks that the streams
//! and the consumer its role needs exist. State: none.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, stream};
use sb_schemas::roles::Role;
use serde::Deserialize;
use serde_json::Value;

use crate::topology::{Topology, TopologyError};

/// The stream fields Switchboard configures (JSON names, as `nats/streams/*.json`).
const MANAGED: &[&str] = &[
    "subjects",
    "retention",
    "storage",
    "num_replicas",
    "max_age",
    "max_bytes",
    "max_msgs",
    "max_msg_size",
    "discard",
    "duplicate_window",
    "allow_direct",
    "allow_msg_ttl",
];

/// One environment's stream settings over `nats/streams/` (all fields optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// For every stream.
    #[serde(default)]
    pub all: StreamSettings,
    /// Per stream name, over `all`.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamSettings>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    pub replicas: Option<usize>,
    pub storage: Option<Storage>,
    pub max_age_secs: Option<u64>,
    pub max_bytes: Option<i64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    File,
    Memory,
}

impl Overrides {
    pub fn parse(text: &str) -> Result<Self, TopologyError> {
        toml::from_str(text).map_err(|e| TopologyError::Overrides(e.to_string()))
    }
}

impl StreamSettings {
    fn apply(&self, config: &mut stream::Config) {
        if let Some(replicas) = self.replicas {
            config.num_replicas = replicas;
        }
        if let Some(storage) = self.storage {
            config.storage = match storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            };
        }
        if let Some(secs) = self.max_age_secs {
            config.max_age = std::time::Duration::from_secs(secs);
        }
        if let Some(bytes) = self.max_bytes {
            config.max_bytes = bytes;
        }
    }
}

/// What reconciling found (and, when applying, did) for one stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Created {
        stream: String,
    },
    /// `field` is `live` on the server and `configured` here. Applied unless `kept`.
    Differs {
        stream: String,
        field: String,
        live: Value,
        configured: Value,
    },
    /// A difference JetStream cannot apply in place (storage): reported, left alone.
    Kept {
        stream: String,
        field: String,
        live: Value,
        configured: Value,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Created { stream } => write!(f, "{stream}"),
            Change::Differs {
                stream,
                field,
                live,
                configured,
            } => {
                write!(f, "{stream}.{field}: {live} -> {configured}")
            }
            Change::Kept {
                stream,
                field,
                live,
                configured,
            } => write!(
                f,
                "{stream}.{field}: {live}, configured {configured}: cannot change in place (migrate by hand)"
            ),
        }
    }
}

impl Topology {
    /// The topology with an environment's overrides applied. Names a stream that does not
    /// exist: an error (a typo would otherwise be ignored).
    pub fn with_overrides(mut self, overrides: &Overrides) -> Result<Self, TopologyError> {
        for name in overrides.streams.keys() {
            if !self.streams.iter().any(|s| &s.name == name) {
                return Err(TopologyError::Overrides(format!("unknown stream {name}")));
            }
        }
        for config in &mut self.streams {
            overrides.all.apply(config);
            if let Some(settings) = overrides.streams.get(&config.name) {
                settings.apply(config);
            }
        }
        Ok(self)
    }

    /// Compares every stream with the live one; with `write`, creates what is missing,
    /// updates the configured fields that differ (keeping every other live field), and
    /// creates or updates the durable consumers. Returns what differed.
    pub async fn reconcile(
        &self,
        js: &jetstream::Context,
        write: bool,
    ) -> Result<Vec<Change>, TopologyError> {
        let mut changes = Vec::new();
        for config in &self.streams {
            let name = config.name.clone();
            let live = match js.get_stream(&name).await {
                Ok(mut s) => s.info().await.ok().map(|i| i.config.clone()),
                Err(e) if not_found(&e) => None,
                Err(source) => return Err(TopologyError::GetStream { name, source }),
            };
            let Some(live) = live else {
                changes.push(Change::Created {
                    stream: name.clone(),
                });
                if write {
                    js.create_stream(config.clone())
                        .await
                        .map_err(|source| TopologyError::Stream { name, source })?;
                }
                continue;
            };
            let (found, merged) = diff(&live, config)?;
            let update = found.iter().any(|c| matches!(c, Change::Differs { .. }));
            changes.extend(found);
            if write && update {
                js.update_stream(merged)
                    .await
                    .map_err(|source| TopologyError::Stream { name, source })?;
            }
        }
        if write {
            self.apply_consumers(js).await?;
        }
        Ok(changes)
    }

    /// What a service does at start-up: the streams and durable consumer of `role` exist.
    pub async fn check_for(
        &self,
        js: &jetstream::Context,
        role: Role,
    ) -> Result<(), TopologyError> {
        for name in role.streams() {
            match js.get_stream(*name).await {
                Ok(_) => {}
                Err(e) if not_found(&e) => {
                    return Err(TopologyError::Missing(format!("stream {name}")));
                }
                Err(source) => {
                    return Err(TopologyError::GetStream {
                        name: (*name).to_owned(),
                        source,
                    });
                }
            }
        }
        if let Some((stream, consumer)) = role.durable() {
            let consumer_info = js
                .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(
                    consumer, stream,
                )
                .await;
            if consumer_info.is_err() {
                return Err(TopologyError::Missing(format!(
                    "consumer {stream}.{consumer}"
                )));
            }
        }
        Ok(())
    }
}

fn not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// The managed fields where `live` and `configured` differ, and the config to write: the
/// live one with the configured values of those fields.
fn diff(
    live: &stream::Config,
    configured: &stream::Config,
) -> Result<(Vec<Change>, stream::Config), TopologyError> {
    let to_json = |c: &stream::Config| serde_json::to_value(c).unwrap_or(Value::Null);
    let (live_json, wanted) = (to_json(live), to_json(configured));
    let mut merged = live_json.clone();
    let mut changes = Vec::new();
    for field in MANAGED {
        let (was, want) = (
            live_json.get(*field).cloned().unwrap_or(Value::Null),
            wanted.get(*field).cloned().unwrap_or(Value::Null),
        );
        // Not in the configured JSON (a default async-nats leaves out): not ours to set.
        if was == want || want.is_null() {
            continue;
        }
        let (stream, field) = (configured.name.clone(), (*field).to_owned());
        if field == "storage" {
            changes.push(Change::Kept {
                stream,
                field,
                live: was,
                configured: want,
            });
            continue;
        }
        merged[&field] = want.clone();
        changes.push(Change::Differs {
            stream,
            field,
            live: was,
            configured: want,
        });
    }
    let merged = serde_json::from_value(merged)
        .map_err(|e| TopologyError::Overrides(format!("cannot merge {}: {e}", configured.name)))?;
    Ok((changes, merged))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_over_the_files() {
        let overrides = Overrides::parse(
            "[all]\nreplicas = 3\n[streams.AUDIO]\nmax_age_secs = 86400\nstorage = \"file\"\n",
        )
        .unwrap();
        let t = Topology::embedded()
            .unwrap()
            .with_overrides(&overrides)
            .unwrap();
        assert!(t.streams.iter().all(|s| s.num_replicas == 3));
        let audio = t.streams.iter().find(|s| s.name == "AUDIO").unwrap();
        assert_eq!(audio.max_age, std::time::Duration::from_secs(86_400));
        let bad = Overrides::parse("[streams.NOPE]\nreplicas = 3\n").unwrap();
        assert!(Topology::embedded().unwrap().with_overrides(&bad).is_err());
        assert!(
            Overrides::parse("[all]\nreplica = 3\n").is_err(),
            "a typo is an error"
        );
    }

    /// Only configured fields count: an operator's metadata is neither drift nor overwritten.
    #[test]
    fn diff_touches_only_managed_fields() {
        let t = Topology::embedded().unwrap();
        let configured = t.streams[0].clone();
        let mut live = configured.clone();
        live.metadata.insert("owner".into(), "ops".into());
        live.num_replicas = 3;
        let (changes, merged) = diff(&live, &configured).unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(
            changes[0]
                .to_string()
                .contains("CALLS.num_replicas: 3 -> 1"),
            "{}",
            changes[0]
        );
        assert_eq!(merged.num_replicas, 1);
        assert_eq!(
            merged.metadata.get("owner").map(String::as_str),
            Some("ops")
        );
        live.storage = stream::StorageType::Memory;
        let (changes, _) = diff(&live, &configured).unwrap();
        assert!(
            changes
                .iter()
                .any(|c| matches!(c, Change::Kept { field, .. } if field == "storage"))
        );
        assert!(diff(&configured, &configured).unwrap().0.is_empty());
    }
}
