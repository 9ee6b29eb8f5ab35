//! The environment each Switchboard process of the local [`crate::Stack`] gets: where the
//! servers and stand-ins are, the shared local credentials, and each service's own
//! settings.
//!
//! Consumes the stack's addresses; produces `(name, value)` pairs for a child process.
//! State: none.

use std::net::SocketAddr;

use sb_schemas::roles::Role;

use crate::nats_server::NatsCluster;
use crate::servers::{RedisServer, workspace_root};
use crate::stack::{ACCOUNT_SID, AUTH_TOKEN, CALL_CREDENTIAL_SECRET, PUBLIC_URL, VENDOR_KEY};

/// The environment each service gets: the stack's servers and stand-ins.
pub(crate) struct Env<'a> {
    pub(crate) nats: &'a NatsCluster,
    pub(crate) redis: &'a RedisServer,
    pub(crate) deepgram: SocketAddr,
    pub(crate) llm: SocketAddr,
    pub(crate) tts: SocketAddr,
    pub(crate) twilio: SocketAddr,
    pub(crate) extra: &'a [(String, String)],
}

impl Env<'_> {
    pub(crate) fn for_service(&self, service: &str, http: SocketAddr) -> Vec<(String, String)> {
        let tenants = workspace_root().join("deploy/base/tenants.toml");
        let mut env: Vec<(String, String)> = vec![
            ("SB_REDIS_URL".into(), self.redis.url.clone()),
            ("SB_TENANTS_FILE".into(), tenants.display().to_string()),
            ("SB_HTTP_ADDR".into(), http.to_string()),
            ("SB_LOG_FORMAT".into(), "json".into()),
            ("SB_DRAIN_DEADLINE_SECS".into(), "5".into()),
        ];
        let specific: Vec<(&str, String)> = match service {
            "ingress" => vec![
                ("SB_TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
                ("SB_PUBLIC_URL", PUBLIC_URL.into()),
                ("SB_CALL_CREDENTIAL_SECRET", CALL_CREDENTIAL_SECRET.into()),
            ],
            "stt" => vec![
                ("SB_DEEPGRAM_URL", format!("ws://{}", self.deepgram)),
                ("SB_DEEPGRAM_API_KEY", VENDOR_KEY.into()),
            ],
            "agent" => vec![
                ("SB_LLM_BASE_URL", format!("http://{}/v1", self.llm)),
                ("SB_LLM_API_KEY", VENDOR_KEY.into()),
                ("SB_TWILIO_API_URL", format!("http://{}", self.twilio)),
                ("SB_TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
                ("SB_TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
            ],
            "dialer" => vec![
                ("SB_TWILIO_API_URL", format!("http://{}", self.twilio)),
                ("SB_TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
                ("SB_TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
                ("SB_PUBLIC_URL", PUBLIC_URL.into()),
                // Twilio's callbacks reach the dialer itself on loopback.
                ("SB_DIALER_PUBLIC_URL", format!("http://{http}")),
                ("SB_DIALER_CPS", "20".into()),
                ("SB_DIALER_CPS_BURST", "5".into()),
                ("SB_DIALER_RECONCILE_SECS", "30".into()),
                ("SB_DIALER_IDLE_MS", "100".into()),
            ],
            "tts" => vec![
                ("SB_TTS_PROVIDER", "azure".into()),
                (
                    "SB_AZURE_TTS_URL",
                    format!("http://{}/cognitiveservices/v1", self.tts),
                ),
                ("SB_AZURE_TTS_KEY", VENDOR_KEY.into()),
            ],
            _ => vec![],
        };
        env.extend(specific.into_iter().map(|(k, v)| (k.to_owned(), v)));
        if let Some(role) = Role::parse(service) {
            env.extend(self.nats.service_env(role));
        }
        env.extend(self.extra.iter().cloned());
        env
    }
}

