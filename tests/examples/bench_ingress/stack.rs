//! The servers and the in-process ingress of one run, and CPU accounting per process part.

use std::net::SocketAddr;
use std::time::Duration;

use sb_ingress::IngressConfig;
use sb_runtime::{Runtime, RuntimeConfig};
use sb_schemas::roles::Role;
use sb_tests::{NatsServer, RedisServer, cpu_time};

use crate::{
    Args, INGRESS_THREADS, PUBLIC, RunResult, TOKEN, media, micros, tenants_toml, webhooks,
};

/// CPU time used so far by the ingress' threads, the load generator (every other thread
/// of this process), nats-server and redis-server.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cpu {
    ingress: Duration,
    load: Duration,
    nats: Duration,
    redis: Duration,
}

impl Cpu {
    pub(crate) fn now(stack: &Stack) -> Self {
        let mut cpu = Cpu {
            nats: cpu_time(&stack.nats_pid),
            redis: cpu_time(&stack.redis_pid),
            ..Cpu::default()
        };
        for task in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let tid = task.file_name().to_string_lossy().into_owned();
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let time = cpu_time(&format!("self/task/{tid}"));
            if comm.trim() == INGRESS_THREADS {
                cpu.ingress += time;
            } else {
                cpu.load += time;
            }
        }
        cpu
    }

    /// µs per item of each part since `before`: (ingress, load generator, nats, redis).
    pub(crate) fn per_item(self, before: Cpu, items: usize) -> [f64; 4] {
        let per =
            |now: Duration, then: Duration| micros(now.saturating_sub(then)) / items.max(1) as f64;
        [
            per(self.ingress, before.ingress),
            per(self.load, before.load),
            per(self.nats, before.nats),
            per(self.redis, before.redis),
        ]
    }
}

/// The pid of the redis-server listening on `socket`.
fn redis_pid(socket: &std::path::Path) -> String {
    let needle = socket.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .find(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .map(|cmd| String::from_utf8_lossy(&cmd).contains(&needle))
                .unwrap_or(false)
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Servers and the in-process ingress of one run.
pub(crate) struct Stack {
    pub(crate) nats: NatsServer,
    pub(crate) _redis: RedisServer,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) ingress_rt: tokio::runtime::Runtime,
    pub(crate) ingress: sb_ingress::Ingress,
    pub(crate) runtime: Runtime,
    pub(crate) addr: SocketAddr,
    pub(crate) nats_pid: String,
    pub(crate) redis_pid: String,
}

async fn stack(args: &Args) -> anyhow::Result<Stack> {
    let (nats, redis) = tokio::try_join!(NatsServer::start(), RedisServer::start())?;
    let dir = tempfile::tempdir()?;
    let tenants = dir.path().join("tenants.toml");
    std::fs::write(&tenants, tenants_toml().to_string())?;
    nats.apply_topology().await?;
    let mut config = RuntimeConfig::for_tests(&nats.url, &redis.url, "");
    config.nats = sb_runtime::NatsConfig::from_login(&nats.login(Role::Ingress));
    config.tenants_file = tenants;
    let ingress_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.ingress_threads)
        .thread_name(INGRESS_THREADS)
        .enable_all()
        .build()?;
    let mut ingress_config = IngressConfig::for_tests(TOKEN, PUBLIC);
    ingress_config.audio_ack_every = args.audio_ack_every;
    let (runtime, ingress) = ingress_rt
        .spawn(async move {
            let runtime = Runtime::start("ingress", config).await?;
            let ingress = sb_ingress::start(&runtime, &ingress_config).await?;
            anyhow::Ok((runtime, ingress))
        })
        .await??;
    Ok(Stack {
        nats_pid: nats.pid().to_string(),
        redis_pid: redis_pid(&redis.socket),
        nats,
        _redis: redis,
        _dir: dir,
        addr: ingress.addr,
        ingress_rt,
        ingress,
        runtime,
    })
}

pub(crate) async fn run_once(args: &Args, run: u128) -> anyhow::Result<RunResult> {
    let stack = stack(args).await?;
    let mut result = RunResult::default();
    if args.only != "media" {
        webhooks::breakdown(&stack, run, &mut result).await?;
        webhooks::closed_loop(&stack, args, run, &mut result).await?;
        for (phase, rate) in args.rates.iter().enumerate() {
            let open = webhooks::open_loop(&stack, args, *rate, (run, 10 + phase as u128)).await?;
            result.open.push(open);
        }
    }
    if args.only != "webhooks" {
        media::media(&stack, args, run, &mut result).await?;
    }
    let Stack {
        ingress_rt,
        ingress,
        ..
    } = stack;
    ingress_rt.spawn(ingress.shutdown()).await?;
    ingress_rt.shutdown_background();
    Ok(result)
}
