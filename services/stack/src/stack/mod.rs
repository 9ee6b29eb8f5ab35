//! The whole system on loopback: nats-server, redis-server, the four vendor stand-ins and
//! every Switchboard service, each a separate process on a free port.
//!
//! Consumes a [`StackConfig`] (stand-in delays, scripts, faults); produces a running
//! [`Stack`] with the addresses a scripted caller needs, per-process resource readings, and
//! the means to crash or add an stt worker. State: the child processes (killed on drop) and
//! their log files under the run directory.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

use crate::{
    nats_server::{NatsCluster, NatsOptions},
    process::{Process, Usage, free_addr},
    servers::{RedisServer, workspace_root},
    service_env::Env,
};

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
    /// Real espeak-ng speech from the TTS stand-in, or a deterministic tone (faster).
    pub tts_speech: bool,
    pub stt_workers: usize,
    /// Extra environment for every service (e.g. `SB_STAGE_CONCURRENCY`); by default the
    /// deployed caller-audio batching ([`DEPLOYED_AUDIO_BATCH_MS`]).
    pub service_env: Vec<(String, String)>,
    /// NATS: TLS or not (auth is always on).
    pub nats: NatsOptions,
    /// NATS nodes: 1, or a cluster (the streams then get this many replicas).
    pub nats_nodes: usize,
    /// Who answers the calls the dialer places (`sim twilio --callees`); `None`: placed
    /// calls are never answered.
    pub callees: Option<PathBuf>,
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
            tts_speech: false,
            stt_workers: 1,
            service_env: vec![(
                "SB_AUDIO_BATCH_MS".into(),
                DEPLOYED_AUDIO_BATCH_MS.to_string(),
            )],
            nats: NatsOptions::default(),
            nats_nodes: 1,
            callees: None,
        }
    }
}

/// Credentials every part of the local stack shares (stand-ins only; not secrets).
pub const AUTH_TOKEN: &str = "local-stack-auth-token";
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
pub const VENDOR_KEY: &str = "local-stack-vendor-key";
/// Signs the local ingress' call credentials (`SB_CALL_CREDENTIAL_SECRET`).
pub const CALL_CREDENTIAL_SECRET: &str = "local-stack-call-credential-secret-0123456789";
/// What the ingress believes its public URL is; the caller signs against it.
pub const PUBLIC_URL: &str = "https://switchboard.local";

/// The running stack.
pub struct Stack {
    pub config: StackConfig,
    pub nats: NatsCluster,
    pub redis: RedisServer,
    pub deepgram: Process,
    pub llm: Process,
    pub tts_sim: Process,
    pub twilio: Process,
    pub ingress: Process,
    pub agent: Process,
    pub tts: Process,
    pub stt: Vec<Process>,
    pub dialer: Process,
    bins: PathBuf,
}

impl Stack {
    /// Starts everything and waits until every service is ready.
    pub async fn start(config: StackConfig) -> anyhow::Result<Self> {
        let bins = binaries_dir()?;
        std::fs::create_dir_all(&config.run_dir)?;
        let logs = config.run_dir.as_path();
        let tenants = crate::service_env::local_tenants_file(logs)?;
        let (nats, redis) = tokio::try_join!(
            NatsCluster::start(config.nats_nodes, config.nats.clone()),
            RedisServer::start()
        )?;
        nats.apply_topology().await?;
        let sim = bins.join("sim");
        let d = config.delays;
        let key = ["--api-key".to_owned(), VENDOR_KEY.to_owned()];
        let mut deepgram_args = vec![
            "deepgram".into(),
            "--final-delay-ms".into(),
            d.stt_final_ms.to_string(),
        ];
        for line in &config.stt_script {
            deepgram_args.extend(["--script".to_owned(), line.clone()]);
        }
        let mut llm_args = vec![
            "llm".into(),
            "--reply-by-turn".into(),
            "--ttft-ms".into(),
            d.llm_ttft_ms.to_string(),
            "--inter-token-ms".into(),
            d.llm_token_ms.to_string(),
        ];
        for reply in &config.llm_replies {
            llm_args.extend(["--reply".to_owned(), reply.clone()]);
        }
        llm_args.extend(config.llm_args.iter().cloned());
        let mut tts_args = vec![
            "tts".into(),
            "--first-byte-ms".into(),
            d.tts_first_byte_ms.to_string(),
        ];
        if !config.tts_speech {
            tts_args.push("--deterministic".into());
        }
        let mut twilio_args: Vec<String> = [
            "twilio",
            "--account-sid",
            ACCOUNT_SID,
            "--auth-token",
            AUTH_TOKEN,
        ]
        .map(String::from)
        .to_vec();
        // The ingress' address is chosen now: the Twilio stand-in answers placed calls there.
        let ingress_addr = free_addr()?;
        if let Some(callees) = &config.callees {
            twilio_args.extend([
                "--answer-ingress".to_owned(),
                format!("http://{ingress_addr}"),
                "--callees".to_owned(),
                callees.display().to_string(),
            ]);
        }
        let with_key = |mut args: Vec<String>| {
            args.extend(key.iter().cloned());
            args
        };
        let (deepgram_args, llm_args, tts_args) = (
            with_key(deepgram_args),
            with_key(llm_args),
            with_key(tts_args),
        );
        let (deepgram, llm, tts_sim, twilio) = tokio::try_join!(
            Process::stand_in("sim-deepgram", &sim, &deepgram_args, logs),
            Process::stand_in("sim-llm", &sim, &llm_args, logs),
            Process::stand_in("sim-tts", &sim, &tts_args, logs),
            Process::stand_in("sim-twilio", &sim, &twilio_args, logs),
        )?;

        let env = Env {
            nats: &nats,
            redis: &redis,
            deepgram: deepgram.addr,
            llm: llm.addr,
            tts: tts_sim.addr,
            twilio: twilio.addr,
            tenants: &tenants,
            extra: &config.service_env,
        };
        let start_at = |name: &'static str, addr: Option<SocketAddr>| {
            let (bins, env) = (&bins, &env);
            async move {
                let addr = match addr {
                    Some(addr) => addr,
                    None => free_addr()?,
                };
                Process::service(
                    name,
                    &bins.join(name),
                    &env.for_service(name, addr),
                    addr,
                    logs,
                )
                .await
            }
        };
        let (ingress, agent, tts, dialer) = tokio::try_join!(
            start_at("ingress", Some(ingress_addr)),
            start_at("agent", None),
            start_at("tts", None),
            start_at("dialer", None),
        )?;
        let mut stt = Vec::new();
        for _ in 0..config.stt_workers.max(1) {
            stt.push(start_at("stt", None).await?);
        }
        Ok(Self {
            config,
            nats,
            redis,
            deepgram,
            llm,
            tts_sim,
            twilio,
            ingress,
            agent,
            tts,
            stt,
            dialer,
            bins,
        })
    }

    /// Starts one more stt worker (e.g. to replace a crashed one).
    pub async fn add_stt(&mut self) -> anyhow::Result<()> {
        let addr = free_addr()?;
        let env = Env {
            nats: &self.nats,
            redis: &self.redis,
            deepgram: self.deepgram.addr,
            llm: self.llm.addr,
            tts: self.tts_sim.addr,
            twilio: self.twilio.addr,
            tenants: &self.config.run_dir.join("tenants.toml"),
            extra: &self.config.service_env,
        };
        let name = format!("stt-{}", self.stt.len() + 1);
        let process = Process::service(
            &name,
            &self.bins.join("stt"),
            &env.for_service("stt", addr),
            addr,
            &self.config.run_dir,
        )
        .await?;
        self.stt.push(process);
        Ok(())
    }

    /// Crashes (SIGKILL) stt worker `index`: no hand-off, its leases expire.
    pub async fn crash_stt(&mut self, index: usize) -> anyhow::Result<()> {
        if index >= self.stt.len() {
            bail!("no stt worker {index}");
        }
        self.stt.remove(index).kill().await;
        Ok(())
    }

    /// Where the scripted caller sends webhooks and opens the media socket.
    pub fn ingress_url(&self) -> String {
        self.ingress.url()
    }

    /// A JetStream context on the stack's NATS.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let client = self.nats.ops().await?;
        Ok(async_nats::jetstream::new(client))
    }

    /// Where the dialer serves the campaigns API.
    pub fn dialer_url(&self) -> String {
        self.dialer.url()
    }

    /// Every Switchboard process' name and HTTP address (`/health`, `/ready`, `/metrics`).
    pub fn service_addrs(&self) -> Vec<(String, SocketAddr)> {
        let mut all = vec![&self.ingress, &self.agent, &self.tts, &self.dialer];
        all.extend(self.stt.iter());
        all.into_iter().map(|p| (p.name.clone(), p.addr)).collect()
    }

    /// Every Switchboard process (not servers or stand-ins) with its resource usage.
    pub fn service_usage(&self) -> Vec<(String, Usage)> {
        let mut all = vec![&self.ingress, &self.agent, &self.tts, &self.dialer];
        all.extend(self.stt.iter());
        all.into_iter()
            .map(|p| (p.name.clone(), p.usage()))
            .collect()
    }

    /// nats-server and redis-server usage.
    pub fn server_usage(&self) -> Vec<(String, Usage)> {
        let mut all: Vec<(String, Usage)> = self
            .nats
            .pids()
            .into_iter()
            .map(|pid| ("nats-server".to_owned(), crate::process::usage(pid)))
            .collect();
        all.push((
            "redis-server".to_owned(),
            crate::process::usage(self.redis.pid()),
        ));
        all
    }

    /// The stand-ins' usage (they share the machine in a load run).
    pub fn stand_in_usage(&self) -> Vec<(String, Usage)> {
        [&self.deepgram, &self.llm, &self.tts_sim, &self.twilio]
            .into_iter()
            .map(|p| (p.name.clone(), p.usage()))
            .collect()
    }

    /// Stops the services gracefully (SIGTERM), then everything else.
    pub async fn stop(self) {
        let grace = Duration::from_secs(10);
        let mut services = vec![self.ingress, self.agent, self.tts, self.dialer];
        services.extend(self.stt);
        futures::future::join_all(services.into_iter().map(|p| p.stop(grace))).await;
        let stand_ins = [self.deepgram, self.llm, self.tts_sim, self.twilio];
        futures::future::join_all(stand_ins.into_iter().map(|p| p.stop(grace))).await;
    }
}

/// Where the service binaries are: next to the running executable (`target/<profile>/`),
/// or its parent when running from `deps/` (a test).
pub fn binaries_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .context("executable without a directory")?
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let missing: Vec<&str> = ["ingress", "stt", "agent", "tts", "dialer", "sim"]
        .into_iter()
        .filter(|b| !dir.join(b).exists())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} not built in {}: run `cargo build --bins` (or `just build`) first",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(dir)
}

/// Builds the service and stand-in binaries with cargo (a no-op when they are fresh), for
/// tests that run the stack: the binaries of other packages are not built by `cargo test`.
pub fn ensure_built(release: bool) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--quiet", "--bins"]);
    // Under `cargo test` these describe the test's package; build scripts that watch them
    // (ring's) would see a changed environment and rebuild half the tree here, and again on
    // the next `cargo` run.
    let set_for_tests = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
    ];
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if set_for_tests.iter().any(|p| name.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"].contains(&name.as_str())
        {
            command.env_remove(name);
        }
    }
    for p in [
        "sb-ingress",
        "sb-stt",
        "sb-agent",
        "sb-tts",
        "sb-dialer",
        "sb-sim",
    ] {
        command.args(["-p", p]);
    }
    if release {
        command.arg("--release");
    }
    let status = command.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The stack runs what is deployed: its batching default is deploy/base/k8s/config.yaml's.
    #[test]
    fn audio_batching_matches_the_deployment() {
        let config = include_str!("../../../deploy/base/k8s/config.yaml");
        let deployed = format!("SB_AUDIO_BATCH_MS: \"{}\"", super::DEPLOYED_AUDIO_BATCH_MS);
        assert!(
            config.contains(&deployed),
            "deploy/base/k8s/config.yaml lacks {deployed}"
        );
    }
}
