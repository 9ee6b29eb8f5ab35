//! The whole system on loopback: nats-server, redis-server, the four vendor stand-ins and
//! every Switchboard service, each a separate process on a free port, any number of
//! replicas per service (a [`Front`] balances the ingress replicas).
//!
//! Consumes a [`StackConfig`] (stand-in delays, scripts, faults, replicas); produces a
//! running [`Stack`] with the addresses a scripted caller needs, per-process resource
//! readings, and the faults a chaos run injects: a replica killed (SIGKILL) or rolled
//! (SIGTERM, drained, replaced), nats-server restarted on its store, redis-server restarted
//! with its append-only file or empty. State: the child processes (killed on drop) and
//! their log files under the run directory.

mod bins;
mod config;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};

pub use bins::{binaries_dir, ensure_built};
pub use config::{
    ACCOUNT_SID, AUTH_TOKEN, CALL_CREDENTIAL_SECRET, DEPLOYED_AUDIO_BATCH_MS, Delays,
    OPERATOR_TOKEN, PUBLIC_URL, Replicas, Service, StackConfig, VENDOR_KEY,
};

use crate::{
    front::Front,
    nats_server::NatsCluster,
    process::{Process, Usage, free_addr},
    servers::{RedisServer, RedisSettings},
    service_env::Env,
};

/// How long a rolled replica may drain before it is killed: the services' drain deadline
/// (`SB_DRAIN_DEADLINE_SECS`, 5 in the stack) plus start-up slack.
pub const ROLL_GRACE: Duration = Duration::from_secs(15);

/// The running stack.
pub struct Stack {
    pub config: StackConfig,
    pub nats: NatsCluster,
    pub redis: RedisServer,
    pub deepgram: Process,
    pub llm: Process,
    pub tts_sim: Process,
    pub twilio: Process,
    /// The tenant-server stand-in: `acme`'s own tools.
    pub tenant_server: Process,
    /// Each service's live replicas, oldest first.
    services: BTreeMap<Service, Vec<Process>>,
    /// Processes started per service so far: names the next (`stt`, `stt-2`, …) and its log.
    started: BTreeMap<Service, usize>,
    /// With more than one ingress replica, where callers connect.
    front: Option<Front>,
    bins: PathBuf,
    tenants: PathBuf,
}

impl Stack {
    /// Starts everything and waits until every service is ready.
    pub async fn start(config: StackConfig) -> anyhow::Result<Self> {
        let bins = binaries_dir()?;
        std::fs::create_dir_all(&config.run_dir)?;
        let logs = config.run_dir.as_path();
        let tenant_server = start_tenant_server(&config, &bins.join("sim")).await?;
        let tenants = crate::service_env::local_tenants_file(
            logs,
            Some(tenant_server.addr),
            config.preemptive,
        )?;
        let redis_settings = if config.redis_aof {
            RedisSettings::state().with_aof()
        } else {
            RedisSettings::state()
        };
        let (nats, redis) = tokio::try_join!(
            NatsCluster::start(config.nats_nodes, config.nats.clone()),
            RedisServer::start_with(redis_settings)
        )?;
        nats.apply_topology().await?;
        // Where Twilio reaches the ingress is chosen now: the Twilio stand-in answers
        // placed calls there. Several replicas: the front's (bound now, served later).
        let (front_listener, ingress_addr) = if config.replicas.ingress > 1 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            (Some(listener), addr)
        } else {
            (None, free_addr()?)
        };
        let (deepgram, llm, tts_sim, twilio) =
            start_stand_ins(&config, &bins.join("sim"), ingress_addr).await?;
        let mut stack = Self {
            config,
            nats,
            redis,
            deepgram,
            llm,
            tts_sim,
            twilio,
            tenant_server,
            services: BTreeMap::new(),
            started: BTreeMap::new(),
            front: None,
            bins,
            tenants,
        };
        let mut plan = Vec::new();
        for service in Service::ALL {
            for _ in 0..stack.config.replicas.of(service).max(1) {
                let addr = if service == Service::Ingress && front_listener.is_none() {
                    ingress_addr
                } else {
                    free_addr()?
                };
                plan.push((service, stack.next_name(service), addr));
            }
        }
        let processes = futures::future::try_join_all(
            plan.iter()
                .map(|(service, name, addr)| stack.launch(*service, name, *addr)),
        )
        .await?;
        for ((service, _, _), process) in plan.into_iter().zip(processes) {
            stack.services.entry(service).or_default().push(process);
        }
        if let Some(listener) = front_listener {
            stack.front = Some(Front::start(listener, stack.addrs(Service::Ingress))?);
        }
        Ok(stack)
    }

    /// `service`'s live replicas, oldest first.
    pub fn replicas(&self, service: Service) -> &[Process] {
        self.services.get(&service).map_or(&[], Vec::as_slice)
    }

    /// Starts one more replica of `service` and waits until it is ready (and, for the
    /// ingress, routed to).
    pub async fn start_replica(&mut self, service: Service) -> anyhow::Result<()> {
        let name = self.next_name(service);
        let process = self.launch(service, &name, free_addr()?).await?;
        self.services.entry(service).or_default().push(process);
        self.update_front(service).await;
        Ok(())
    }

    /// Crashes (SIGKILL) replica `index` of `service`: no hand-off, no drain. Its leases
    /// expire, its sockets die with it.
    pub async fn kill(&mut self, service: Service, index: usize) -> anyhow::Result<()> {
        let process = self.take(service, index).await?;
        process.kill().await;
        Ok(())
    }

    /// Rolls `service` one replica at a time, oldest first: take it out of the front, SIGTERM,
    /// wait for it to exit (at most `grace`, then SIGKILL), start its replacement and wait
    /// until it is ready, then the next. Returns the replicas that had to be killed.
    pub async fn roll(&mut self, service: Service, grace: Duration) -> anyhow::Result<Vec<String>> {
        let mut killed = Vec::new();
        for _ in 0..self.replicas(service).len() {
            let old = self.take(service, 0).await?;
            let name = old.name.clone();
            if !old.stop(grace).await {
                killed.push(name);
            }
            self.start_replica(service).await?;
        }
        Ok(killed)
    }

    /// SIGTERMs replica `index` of `service` (out of the front first, as a rollout does)
    /// and waits for it to exit, at most `grace` (then SIGKILL): whether it exited by itself.
    pub async fn stop_replica(
        &mut self,
        service: Service,
        index: usize,
        grace: Duration,
    ) -> anyhow::Result<bool> {
        let process = self.take(service, index).await?;
        Ok(process.stop(grace).await)
    }

    /// A scripted caller for this stack: through the front, signed for the public URL,
    /// on the Twilio stand-in's account, its line registered with the stand-in so what a
    /// call update runs on the call (a redirect to another replica, a hang-up) reaches it.
    pub fn caller_config(&self) -> sb_sim::caller::CallerConfig {
        let mut config = sb_sim::caller::CallerConfig::new(
            self.ingress_url(),
            crate::stack::PUBLIC_URL,
            crate::stack::AUTH_TOKEN,
        );
        config.account_sid = crate::stack::ACCOUNT_SID.to_owned();
        config.control_url = Some(self.twilio.url());
        config
    }

    /// Restarts every nats-server node in turn (SIGKILL, same store and port; see
    /// [`crate::nats_server::NatsServer::restart`]).
    pub async fn restart_nats(&mut self) -> anyhow::Result<()> {
        for node in &mut self.nats.nodes {
            node.restart().await?;
        }
        Ok(())
    }

    /// Kills redis-server and starts it again on the same socket with the same password:
    /// with its append-only file (`keep_data`, needs [`StackConfig::redis_aof`]) or empty.
    pub async fn restart_redis(&mut self, keep_data: bool) -> anyhow::Result<()> {
        if keep_data {
            self.redis.restart().await
        } else {
            self.redis.restart_empty().await
        }
    }

    /// Where the scripted caller sends webhooks and opens the media socket: the front, or
    /// the only ingress.
    pub fn ingress_url(&self) -> String {
        match &self.front {
            Some(front) => front.url(),
            None => self.replicas(Service::Ingress)[0].url(),
        }
    }

    /// A JetStream context on the stack's NATS.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let client = self.nats.ops().await?;
        Ok(async_nats::jetstream::new(client))
    }

    /// Where the (first) dialer serves the campaigns API.
    pub fn dialer_url(&self) -> String {
        self.replicas(Service::Dialer)[0].url()
    }

    /// Where the (first) console serves the tenant admin API.
    pub fn console_url(&self) -> String {
        self.replicas(Service::Console)[0].url()
    }

    fn all_services(&self) -> impl Iterator<Item = &Process> {
        self.services.values().flatten()
    }

    /// Every Switchboard process' name and HTTP address (`/health`, `/ready`, `/metrics`).
    pub fn service_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.all_services()
            .map(|p| (p.name.clone(), p.addr))
            .collect()
    }

    /// Every Switchboard process (not servers or stand-ins) with its resource usage.
    pub fn service_usage(&self) -> Vec<(String, Usage)> {
        self.all_services()
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
        [
            &self.deepgram,
            &self.llm,
            &self.tts_sim,
            &self.twilio,
            &self.tenant_server,
        ]
        .into_iter()
        .map(|p| (p.name.clone(), p.usage()))
        .collect()
    }

    /// Stops the services gracefully (SIGTERM), then everything else.
    pub async fn stop(mut self) {
        let grace = Duration::from_secs(10);
        let services = std::mem::take(&mut self.services).into_values().flatten();
        futures::future::join_all(services.map(|p| p.stop(grace))).await;
        let stand_ins = [
            self.deepgram,
            self.llm,
            self.tts_sim,
            self.twilio,
            self.tenant_server,
        ];
        futures::future::join_all(stand_ins.into_iter().map(|p| p.stop(grace))).await;
    }

    /// `stt`, then `stt-2`, `stt-3`, …: every process its own name and log file.
    fn next_name(&mut self, service: Service) -> String {
        let n = self.started.entry(service).or_default();
        *n += 1;
        match *n {
            1 => service.name().to_owned(),
            n => format!("{}-{n}", service.name()),
        }
    }

    /// Starts one process of `service` on `addr`, ready when this returns.
    async fn launch(
        &self,
        service: Service,
        name: &str,
        addr: SocketAddr,
    ) -> anyhow::Result<Process> {
        let env = Env {
            nats: &self.nats,
            redis: &self.redis,
            deepgram: self.deepgram.addr,
            llm: self.llm.addr,
            tts: self.tts_sim.addr,
            twilio: self.twilio.addr,
            tenants: &self.tenants,
            extra: &self.config.service_env,
        };
        Process::service(
            name,
            &self.bins.join(service.name()),
            &env.for_service(service.name(), addr),
            addr,
            &self.config.run_dir,
        )
        .await
    }

    /// Removes replica `index` of `service` from the stack (and from the front's routing).
    async fn take(&mut self, service: Service, index: usize) -> anyhow::Result<Process> {
        let replicas = self.services.entry(service).or_default();
        if index >= replicas.len() {
            bail!("no {} replica {index}", service.name());
        }
        let process = replicas.remove(index);
        self.update_front(service).await;
        Ok(process)
    }

    fn addrs(&self, service: Service) -> Vec<SocketAddr> {
        self.replicas(service).iter().map(|p| p.addr).collect()
    }

    async fn update_front(&self, service: Service) {
        if let (Service::Ingress, Some(front)) = (service, &self.front) {
            front.set_replicas(self.addrs(Service::Ingress)).await;
        }
    }
}

/// The tenant-server stand-in: checks the local signing secret; `book_visit` answers
/// after 600 ms (its filler is heard), then whatever the config's `tenant_args` script.
async fn start_tenant_server(
    config: &StackConfig,
    sim: &std::path::Path,
) -> anyhow::Result<Process> {
    let mut args: Vec<String> = [
        "tenant",
        "--secret",
        crate::service_env::TENANT_SECRET,
        "--answer",
        r#"book_visit={"say":"You're booked for Friday at 3 pm. See you then!","slot":"friday 15:00"}"#,
        "--delay-ms",
        "book_visit=600",
    ]
    .map(String::from)
    .to_vec();
    args.extend(config.tenant_args.iter().cloned());
    Process::stand_in("sim-tenant", sim, &args, &config.run_dir)
        .await
        .context("starting the tenant-server stand-in")
}

/// The four vendor stand-ins; the Twilio one answers placed calls at `ingress` when the
/// config has callees.
async fn start_stand_ins(
    config: &StackConfig,
    sim: &std::path::Path,
    ingress: SocketAddr,
) -> anyhow::Result<(Process, Process, Process, Process)> {
    let logs = config.run_dir.as_path();
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
    if let Some(callees) = &config.callees {
        twilio_args.extend([
            "--answer-ingress".to_owned(),
            format!("http://{ingress}"),
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
    let started = tokio::try_join!(
        Process::stand_in("sim-deepgram", sim, &deepgram_args, logs),
        Process::stand_in("sim-llm", sim, &llm_args, logs),
        Process::stand_in("sim-tts", sim, &tts_args, logs),
        Process::stand_in("sim-twilio", sim, &twilio_args, logs),
    )
    .context("starting the stand-ins")?;
    Ok(started)
}
