//! The JetStream topology, read from the JSON files under `nats/`.
//!
//! The files are compiled into every binary (so a pod needs nothing else) and are the same
//! files the `nats` CLI loads (`nats stream add --config nats/streams/CALLS.json`). Produces
//! stream and consumer configs and applies them idempotently (create or update). State: none.

use async_nats::jetstream::{self, consumer::pull, stream};

/// `(file name, contents)` of every definition under `nats/`.
const STREAM_FILES: &[(&str, &str)] = &[
    (
        "CALLS.json",
        include_str!("../../../nats/streams/CALLS.json"),
    ),
    (
        "AUDIO.json",
        include_str!("../../../nats/streams/AUDIO.json"),
    ),
    (
        "STT_ASSIGN.json",
        include_str!("../../../nats/streams/STT_ASSIGN.json"),
    ),
    ("DLQ.json", include_str!("../../../nats/streams/DLQ.json")),
    (
        "KV_TENANTS.json",
        include_str!("../../../nats/streams/KV_TENANTS.json"),
    ),
    (
        "KV_CALL_INDEX.json",
        include_str!("../../../nats/streams/KV_CALL_INDEX.json"),
    ),
];

/// Consumer files are named `{STREAM}.{consumer}.json`.
const CONSUMER_FILES: &[(&str, &str)] = &[
    (
        "CALLS.agent.json",
        include_str!("../../../nats/consumers/CALLS.agent.json"),
    ),
    (
        "CALLS.tts.json",
        include_str!("../../../nats/consumers/CALLS.tts.json"),
    ),
    (
        "CALLS.webhooks.json",
        include_str!("../../../nats/consumers/CALLS.webhooks.json"),
    ),
    (
        "STT_ASSIGN.stt.json",
        include_str!("../../../nats/consumers/STT_ASSIGN.stt.json"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("nats/{file}: {source}")]
    Parse {
        file: String,
        source: serde_json::Error,
    },
    #[error("nats/{file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("cannot apply stream {name}: {source}")]
    Stream {
        name: String,
        source: jetstream::context::CreateStreamError,
    },
    #[error("cannot apply consumer {stream}.{name}: {source}")]
    Consumer {
        stream: String,
        name: String,
        source: jetstream::stream::ConsumerError,
    },
    #[error("stream overrides: {0}")]
    Overrides(String),
    #[error("{0} does not exist: the operator creates the topology (`switchboard topology apply`)")]
    Missing(String),
    #[error("cannot read stream {name}: {source}")]
    GetStream {
        name: String,
        source: jetstream::context::GetStreamError,
    },
}

/// One durable consumer and the stream it reads.
#[derive(Debug, Clone)]
pub struct ConsumerDef {
    pub stream: String,
    pub config: pull::Config,
}

impl ConsumerDef {
    pub fn name(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }
}

/// Every stream and durable consumer Switchboard needs.
#[derive(Debug, Clone)]
pub struct Topology {
    pub streams: Vec<stream::Config>,
    pub consumers: Vec<ConsumerDef>,
}

impl Topology {
    /// The definitions compiled from `nats/`.
    pub fn embedded() -> Result<Self, TopologyError> {
        let mut streams = Vec::new();
        for (file, text) in STREAM_FILES {
            let config: stream::Config = parse(file, text)?;
            if format!("{}.json", config.name) != *file {
                return Err(invalid(file, "the file name must be the stream name"));
            }
            streams.push(config);
        }
        let mut consumers = Vec::new();
        for (file, text) in CONSUMER_FILES {
            let config: pull::Config = parse(file, text)?;
            let (stream, name) = file
                .trim_end_matches(".json")
                .split_once('.')
                .ok_or_else(|| invalid(file, "expected {STREAM}.{consumer}.json"))?;
            if config.durable_name.as_deref() != Some(name) {
                return Err(invalid(file, "durable_name must match the file name"));
            }
            if config.max_deliver <= 0 {
                return Err(invalid(
                    file,
                    "max_deliver must be set (the default is unlimited)",
                ));
            }
            if config.ack_wait.is_zero() {
                return Err(invalid(file, "ack_wait must be set"));
            }
            if !streams.iter().any(|s| s.name == stream) {
                return Err(invalid(
                    file,
                    "names a stream that nats/streams/ does not define",
                ));
            }
            consumers.push(ConsumerDef {
                stream: stream.to_owned(),
                config,
            });
        }
        Ok(Self { streams, consumers })
    }

    /// The durable consumer called `name`.
    pub fn consumer(&self, name: &str) -> Option<&ConsumerDef> {
        self.consumers.iter().find(|c| c.name() == name)
    }

    /// Creates or updates every stream (only the fields configured here) and consumer;
    /// what the operator's `switchboard topology apply` and the test harness run.
    pub async fn apply(&self, js: &jetstream::Context) -> Result<(), TopologyError> {
        self.reconcile(js, true).await.map(drop)
    }

    /// Creates or updates every durable consumer.
    pub(crate) async fn apply_consumers(
        &self,
        js: &jetstream::Context,
    ) -> Result<(), TopologyError> {
        for def in &self.consumers {
            let stream = js.get_stream_no_info(&def.stream).await.map_err(|source| {
                TopologyError::GetStream {
                    name: def.stream.clone(),
                    source,
                }
            })?;
            stream
                .create_consumer(def.config.clone())
                .await
                .map_err(|source| TopologyError::Consumer {
                    stream: def.stream.clone(),
                    name: def.name().to_owned(),
                    source,
                })?;
        }
        Ok(())
    }
}

fn parse<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, TopologyError> {
    serde_json::from_str(text).map_err(|source| TopologyError::Parse {
        file: file.to_owned(),
        source,
    })
}

fn invalid(file: &str, reason: &str) -> TopologyError {
    TopologyError::Invalid {
        file: file.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn embedded_definitions_parse_and_validate() {
        let t = Topology::embedded().unwrap();
        let names: Vec<_> = t.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "CALLS",
                "AUDIO",
                "STT_ASSIGN",
                "DLQ",
                "KV_TENANTS",
                "KV_CALL_INDEX"
            ]
        );
        // A KV bucket as async-nats' `get_key_value` expects it: one subject per key,
        // history per key, direct gets, rollups.
        let kv = &t.streams[4];
        assert_eq!(kv.subjects, ["$KV.TENANTS.>"]);
        assert_eq!(kv.max_messages_per_subject, 64);
        assert!(kv.allow_direct && kv.allow_rollup && kv.deny_delete);
        let calls = &t.streams[0];
        assert_eq!(calls.duplicate_window, Duration::from_secs(120));
        assert_eq!(calls.max_age, Duration::from_secs(7 * 86_400));
        assert!(calls.allow_direct);
        assert_eq!(t.streams[2].retention, stream::RetentionPolicy::WorkQueue);
        let agent = t.consumer("agent").unwrap();
        assert_eq!(agent.stream, "CALLS");
        assert_eq!(agent.config.max_deliver, 5);
        // Every input that starts a caller turn is answered by the agent.
        for kind in [
            "transcript",
            "preflight",
            "keypad",
            "silence",
            "max_duration",
        ] {
            let filter = format!("call.*.*.{kind}");
            assert!(agent.config.filter_subjects.contains(&filter), "{filter}");
        }
        assert_eq!(
            t.consumer("stt").unwrap().config.ack_wait,
            Duration::from_secs(10)
        );
    }

    /// Every file under nats/streams and nats/consumers is compiled in (and nothing else).
    #[test]
    fn every_file_under_nats_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../nats");
        for (dir, embedded) in [("streams", STREAM_FILES), ("consumers", CONSUMER_FILES)] {
            let mut on_disk: Vec<String> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            on_disk.sort();
            let mut listed: Vec<String> = embedded.iter().map(|(f, _)| (*f).to_owned()).collect();
            listed.sort();
            assert_eq!(on_disk, listed, "nats/{dir} and topology.rs disagree");
        }
    }

    /// The consumer filters cover the subjects schemas builds for the kinds they name.
    #[test]
    fn consumer_filters_match_schema_subjects() {
        use sb_schemas::{Kind, subject};
        let t = Topology::embedded().unwrap();
        for def in &t.consumers {
            for filter in &def.config.filter_subjects {
                let kind = filter.rsplit('.').next().unwrap();
                let kind = Kind::parse(kind).unwrap_or_else(|| panic!("{filter}: unknown kind"));
                assert_eq!(filter, &subject::kind_filter(kind));
            }
        }
    }
}
