//! What a [`super::Stack`] is started with: stand-in delays and scripts, replicas per
//! service, server options, and the local credentials every part shares.
//!
//! Consumes nothing; produces plain settings. State: none.

use std::path::PathBuf;

use crate::nats_server::NatsOptions;

/// Fixed stand-in delays (what a real vendor would take), so overhead can be isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delays {
    /// Deepgram: extra delay before each final result (on top of the endpointing silence).
    pub stt_final_ms: u64,
    /// LLM: time to first token and between tokens.
    pub llm_ttft_ms: u64,
    pub llm_token_ms: u64,
    /// TTS: time to the first audio byte.
    pub tts_first_byte_ms: u64,
}

impl Delays {
    pub const ZERO: Delays = Delays {
        stt_final_ms: 0,
        llm_ttft_ms: 0,
        llm_token_ms: 0,
        tts_first_byte_ms: 0,
    };
    /// Realistic hosted-vendor figures (Deepgram ~150 ms, Groq ~200 ms TTFT at ~2 ms/token,
    /// Azure ~150 ms first byte).
    pub const TYPICAL: Delays = Delays {
        stt_final_ms: 150,
        llm_ttft_ms: 200,
        llm_token_ms: 2,
        tts_first_byte_ms: 150,
    };
}

/// A Switchboard service: one binary, any number of replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Ingress,
    Stt,
    Agent,
    Tts,
    Dialer,
    Webhooks,
    /// The operators' console (the tenant admin API).
    Console,
}

impl Service {
    /// In the order the stack starts and rolls them.
    pub const ALL: [Service; 7] = [
        Service::Ingress,
        Service::Stt,
        Service::Agent,
        Service::Tts,
        Service::Dialer,
        Service::Webhooks,
        Service::Console,
    ];

    /// The binary's name (and the NATS role's).
    pub fn name(self) -> &'static str {
        match self {
            Service::Ingress => "ingress",
            Service::Stt => "stt",
            Service::Agent => "agent",
            Service::Tts => "tts",
            Service::Dialer => "dialer",
            Service::Webhooks => "webhooks",
            Service::Console => "console",
        }
    }

    pub fn parse(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// How many processes of each service run. With more than one ingress, a loopback front
/// ([`crate::front`]) spreads connections over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    pub ingress: usize,
    pub stt: usize,
    pub agent: usize,
    pub tts: usize,
    pub dialer: usize,
    pub webhooks: usize,
    pub console: usize,
}

impl Replicas {
    /// `n` of every service.
    pub const fn all(n: usize) -> Self {
        Self {
            ingress: n,
            stt: n,
            agent: n,
            tts: n,
            dialer: n,
            webhooks: n,
            console: n,
        }
    }

    pub fn of(&self, service: Service) -> usize {
        match service {
            Service::Ingress => self.ingress,
            Service::Stt => self.stt,
            Service::Agent => self.agent,
            Service::Tts => self.tts,
            Service::Dialer => self.dialer,
            Service::Webhooks => self.webhooks,
            Service::Console => self.console,
        }
    }
}

impl Default for Replicas {
    fn default() -> Self {
        Self::all(1)
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Logs go here (`<name>.log`).
    pub run_dir: PathBuf,
    pub delays: Delays,
    /// What the Deepgram stand-in "hears", one line per utterance, per connection.
    pub stt_script: Vec<String>,
    /// What the LLM stand-in answers, chosen by how many assistant turns the conversation has.
    pub llm_replies: Vec<String>,
    /// Extra `sim llm` options (fault injection, e.g. `--unavailable-share 1`).
    pub llm_args: Vec<String>,
    /// Extra `sim tenant` options (what `acme`'s tools answer, e.g. `--fail book_visit=2`).
    pub tenant_args: Vec<String>,
    /// Real espeak-ng speech from the TTS stand-in, or a deterministic tone (faster).
    pub tts_speech: bool,
    /// Processes per service (at least one each).
    pub replicas: Replicas,
    /// Extra environment for every service (e.g. `SB_STAGE_CONCURRENCY`); by default the
    /// deployed caller-audio batching ([`DEPLOYED_AUDIO_BATCH_MS`]).
    pub service_env: Vec<(String, String)>,
    /// NATS: TLS or not (auth is always on).
    pub nats: NatsOptions,
    /// NATS nodes: 1, or a cluster (the streams then get this many replicas).
    pub nats_nodes: usize,
    /// Redis with its append-only file on (as deployed), so a restart keeps the state.
    pub redis_aof: bool,
    /// Who answers the calls the dialer places (`sim twilio --callees`); `None`: placed
    /// calls are never answered.
    pub callees: Option<PathBuf>,
    /// Every tenant starts answers on stable interim transcripts (`turn_taking.preemptive`,
    /// on by default); `false` turns it off, to measure what it gains.
    pub preemptive: bool,
}

/// `SB_AUDIO_BATCH_MS` as deploy/base/k8s/config.yaml sets it: the demo, the end-to-end tests
/// and the load benchmark run what is deployed.
pub const DEPLOYED_AUDIO_BATCH_MS: u64 = 200;

impl StackConfig {
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Self {
            run_dir: run_dir.into(),
            delays: Delays::ZERO,
            stt_script: Vec::new(),
            llm_replies: Vec::new(),
            llm_args: Vec::new(),
            tenant_args: Vec::new(),
            tts_speech: false,
            replicas: Replicas::default(),
            service_env: vec![(
                "SB_AUDIO_BATCH_MS".into(),
                DEPLOYED_AUDIO_BATCH_MS.to_string(),
            )],
            nats: NatsOptions::default(),
            nats_nodes: 1,
            redis_aof: false,
            callees: None,
            preemptive: true,
        }
    }
}

/// Credentials every part of the local stack shares (stand-ins only; not secrets).
pub const AUTH_TOKEN: &str = "local-stack-auth-token";
/// The console's operator token (the tenant admin API) in the local stack.
pub const OPERATOR_TOKEN: &str = "local-stack-operator-token";
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
pub const VENDOR_KEY: &str = "local-stack-vendor-key";
/// Signs the local ingress' call credentials (`SB_CALL_CREDENTIAL_SECRET`).
pub const CALL_CREDENTIAL_SECRET: &str = "local-stack-call-credential-secret-0123456789";
/// What the ingress believes its public URL is; the caller signs against it.
pub const PUBLIC_URL: &str = "https://switchboard.local";

#[cfg(test)]
mod tests {
    use super::*;

    /// The stack runs what is deployed: its batching default is deploy/base/k8s/config.yaml's.
    #[test]
    fn audio_batching_matches_the_deployment() {
        let config = include_str!("../../../../deploy/base/k8s/config.yaml");
        let deployed = format!("SB_AUDIO_BATCH_MS: \"{DEPLOYED_AUDIO_BATCH_MS}\"");
        assert!(
            config.contains(&deployed),
            "deploy/base/k8s/config.yaml lacks {deployed}"
        );
    }

    #[test]
    fn services_parse_by_name() {
        for service in Service::ALL {
            assert_eq!(Service::parse(service.name()), Some(service));
        }
        assert_eq!(Service::parse("nats"), None);
    }
}
