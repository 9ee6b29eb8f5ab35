//! The ring-3 test harness: real `nats-server` and `redis-server` as child processes
//! (from `sb-stack`), and [`TestEnv`], which starts both and applies the JetStream topology
//! from the same `nats/` files production uses. Never a mock. Also [`eventually`], the one
//! way a ring-3 test waits: on a condition, never on time. State: the servers of one test,
//! killed when its [`TestEnv`] drops.

pub use sb_stack::servers::{
    NatsCluster, NatsOptions, NatsServer, RedisServer, RedisSettings, cpu_time, eventually,
    workspace_root,
};

use std::time::Duration;

use async_nats::jetstream;
use sb_runtime::{
    NatsConfig, Runtime, RuntimeConfig, Topology,
    redis::{Keys, Redis},
};
use sb_schemas::roles::Role;

/// Both servers, with the topology applied.
pub struct TestEnv {
    pub nats: NatsServer,
    pub redis: RedisServer,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub topology: Topology,
}

impl TestEnv {
    pub async fn start() -> anyhow::Result<Self> {
        Self::with_topology(Topology::embedded()?).await
    }

    /// Starts the servers and applies `topology` as the operator (tests may add consumers
    /// of their own). `client` and `js` are logged in as `ops`.
    pub async fn with_topology(topology: Topology) -> anyhow::Result<Self> {
        let (nats, redis) = tokio::try_join!(NatsServer::start(), RedisServer::start())?;
        let client = nats.ops().await?;
        let js = jetstream::new(client.clone());
        topology.apply(&js).await?;
        Ok(Self {
            nats,
            redis,
            client,
            js,
            topology,
        })
    }

    /// Runtime settings pointing at these servers and the shipped tenants file, logged in
    /// as `ops`.
    pub fn runtime_config(&self) -> RuntimeConfig {
        self.runtime_config_as(Role::Ops)
    }

    /// [`Self::runtime_config`] logged in as `role`'s NATS user.
    pub fn runtime_config_as(&self, role: Role) -> RuntimeConfig {
        let mut config = RuntimeConfig::for_tests(&self.nats.url, &self.redis.url, "");
        config.nats = NatsConfig::from_login(&self.nats.login(role));
        config.tenants_file = workspace_root().join("deploy/base/tenants.toml");
        config
    }

    /// A full [`Runtime`] against these servers, as a service would start it: logged in
    /// as the service's own NATS user (so a test exercises its permissions), or as `ops`
    /// for a name that is no service.
    pub async fn runtime(&self, service: &'static str) -> anyhow::Result<Runtime> {
        let role = Role::parse(service).unwrap_or(Role::Ops);
        Ok(Runtime::start(service, self.runtime_config_as(role)).await?)
    }

    /// A Redis handle with the default session TTL.
    pub async fn redis(&self) -> anyhow::Result<Redis> {
        Ok(Redis::connect(&self.redis.url, Keys::new(""), Duration::from_secs(1800)).await?)
    }

    /// A raw redis connection, for inspecting keys.
    pub async fn redis_raw(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        Ok(redis::Client::open(self.redis.url.as_str())?
            .get_multiplexed_async_connection()
            .await?)
    }
}

/// Benchmark contacts: `n` contacts with ids `{prefix}{i}`, priority 1, ready now, two short
/// variables each (`name`, `ref`) and distinct numbers.
pub fn bench_contacts(prefix: &str, n: usize) -> Vec<sb_runtime::redis::campaigns::NewContact> {
    use sb_runtime::redis::campaigns::{ContactId, ContactPayload, NewContact};
    (0..n)
        .map(|i| NewContact {
            id: ContactId::parse(&format!("{prefix}{i}")).expect("valid id"),
            priority: 1,
            not_before_ms: 0,
            payload: ContactPayload {
                phone: format!("+1500{:07}", i % 10_000_000),
                vars: [
                    ("name".into(), "Ann".into()),
                    ("ref".into(), format!("R{i}")),
                ]
                .into(),
            },
        })
        .collect()
}

/// Redis' `used_memory` (bytes), for memory-per-key figures.
pub async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .ok_or_else(|| anyhow::anyhow!("no used_memory"))?;
    Ok(line.trim().parse()?)
}
