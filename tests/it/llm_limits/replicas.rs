//! Agent replicas as real processes for the LLM limits tests: one [`TestEnv`], the LLM
//! stand-in in this process, a tenants file whose tenant (`acme`) has a tier of [`TIER`]
//! concurrent LLM requests and a model of its own ([`MODEL`]), and `agent` binaries
//! started on it, each with its own Redis connection, as in production. Builds turns
//! (session + `transcript`) and reads what the stand-in and the replicas report. State:
//! the servers, the stand-in and the processes of one test, stopped on drop.

use std::path::PathBuf;
use std::time::Duration;

use sb_runtime::Publisher;
use sb_runtime::redis::{Keys, Redis, session::Role};
use sb_runtime::tenants::testing::TenantToml;
use sb_schemas::CallSid;
use sb_sim::{SimServer, llm};
use sb_stack::process::{Process, free_addr};
use sb_tests::{TestEnv, eventually};
use serde_json::Value;

use crate::support::{tenant, transcript};

/// Concurrent LLM requests the tenant's tier allows.
pub(super) const TIER: u64 = 2;
/// The tenant's model: how the stand-in tells its requests from any other's.
pub(super) const MODEL: &str = "acme-model";
pub(super) const WAIT: Duration = Duration::from_secs(30);

/// One member of a slot set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Holder {
    pub(super) id: String,
    /// The lease's expiry, ms on Redis' clock.
    pub(super) expiry_ms: u64,
    /// Whether the lease is still in force.
    pub(super) live: bool,
}

pub(super) struct Replicas {
    pub(super) env: TestEnv,
    pub(super) redis: Redis,
    pub(super) llm: SimServer,
    publisher: Publisher,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Replicas {
    /// The servers, the stand-in (`llm`) and the tenants file; no replica yet.
    pub(super) async fn start(llm: llm::Config) -> Self {
        let bin = agent_binary().expect("the agent binary builds");
        let env = TestEnv::start().await.unwrap();
        let llm = llm::spawn(llm).await.unwrap();
        let dir = tempfile::Builder::new()
            .prefix("sb-llm-limits-")
            .tempdir()
            .unwrap();
        let tenants = TenantToml::new()
            .tier("pair", TIER as u32, 100)
            .tenant(tenant().as_str(), "+15005550006", "pair")
            .set("llm_model", MODEL)
            .set("fallback_phrase", "Sorry, one moment.");
        std::fs::write(dir.path().join("tenants.toml"), tenants.to_string()).unwrap();
        Self {
            redis: env.redis().await.unwrap(),
            publisher: Publisher::new(env.js.clone()),
            env,
            llm,
            bin,
            dir,
        }
    }

    /// One more `agent` process, ready, with these settings on top of the common ones:
    /// four deliveries at a time and a queue deadline long enough for every turn.
    pub(super) async fn agent(&self, name: &str, extra: &[(&str, &str)]) -> Process {
        let http = free_addr().unwrap();
        let tenants = self.dir.path().join("tenants.toml");
        let mut vars: Vec<(String, String)> = [
            ("SB_REDIS_URL", self.env.redis.url.clone()),
            ("SB_TENANTS_FILE", tenants.display().to_string()),
            ("SB_HTTP_ADDR", http.to_string()),
            ("SB_LOG_FORMAT", "json".into()),
            ("SB_DRAIN_DEADLINE_SECS", "2".into()),
            ("SB_LLM_BASE_URL", format!("{}/v1", self.llm.http_url())),
            ("SB_LLM_API_KEY", "llm-key".into()),
            ("SB_STAGE_CONCURRENCY", "4".into()),
            ("SB_LLM_QUEUE_DEADLINE_MS", "30000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        vars.extend(self.env.nats.service_env(sb_schemas::roles::Role::Agent));
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Process::service(name, &self.bin, &vars, http, self.dir.path())
            .await
            .unwrap()
    }

    /// Starts `call`'s session and its first caller turn, and publishes its transcript.
    pub(super) async fn turn(&self, call: &CallSid, text: &str) {
        self.redis
            .session_start(
                call,
                &tenant(),
                &sb_runtime::redis::session::Parties::default(),
                0,
            )
            .await
            .unwrap();
        let turn = self
            .redis
            .session_next_turn(call, 0)
            .await
            .unwrap()
            .unwrap();
        self.publisher
            .publish(&transcript(call, turn, text))
            .await
            .unwrap();
    }

    /// The answer stored for the call's first turn, once there is one.
    pub(super) async fn answer(&self, call: &CallSid) -> Option<String> {
        let session = self.redis.session_load(call).await.unwrap()?;
        let turn = session
            .turns
            .into_iter()
            .find(|t| t.role == Role::Assistant)?;
        Some(turn.text)
    }

    /// The stand-in's `/sim/stats`.
    pub(super) async fn stats(&self) -> Value {
        reqwest::get(format!("{}/sim/stats", self.llm.http_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The tenant's slot set (`llm:slots:acme`), expired members included (they stay
    /// until the next acquire).
    pub(super) async fn holders(&self) -> Vec<Holder> {
        let key = Keys::new("").llm_slots(&tenant());
        let mut raw = self.env.redis_raw().await.unwrap();
        let (members, (secs, micros)): (Vec<(String, u64)>, (u64, u64)) = redis::pipe()
            .cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .cmd("TIME")
            .query_async(&mut raw)
            .await
            .unwrap();
        let now_ms = secs * 1_000 + micros / 1_000;
        members
            .into_iter()
            .map(|(id, expiry_ms)| Holder {
                id,
                expiry_ms,
                live: expiry_ms > now_ms,
            })
            .collect()
    }

    /// Waits until the stand-in has seen `n` chat requests.
    pub(super) async fn requests(&self, n: u64) {
        eventually("the stand-in's requests", WAIT, || async {
            (self.stats().await["requests"].as_u64()? >= n).then_some(())
        })
        .await
        .unwrap();
    }
}

/// Transcripts a replica received (`switchboard_stage_received_total`), from its `/metrics`.
pub(super) async fn transcripts_received(replica: &Process) -> u64 {
    let text = reqwest::get(format!("{}/metrics", replica.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("switchboard_stage_received_total{"))
        .filter(|l| l.contains("kind=\"transcript\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Builds the service binaries (a no-op when fresh) and returns the agent's path.
fn agent_binary() -> anyhow::Result<PathBuf> {
    sb_stack::stack::ensure_built(false)?;
    Ok(sb_stack::stack::binaries_dir()?.join("agent"))
}
