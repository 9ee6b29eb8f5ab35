//! Real redis-server child processes on loopback (nats-server: [`crate::nats_server`]),
//! and what starting any server needs.
//!
//! A Redis gets a unix socket in a temp dir and a random password (`requirepass`; the URL
//! carries it, so only [`RedisServer::url`] can log in), and is killed on `Drop`;
//! [`eventually`] is the one poll that waits for servers (and for every condition a ring-3
//! test waits on). Used by the ring-3 tests, the demo and the load benchmark alike. State:
//! the child processes, their temp dirs and passwords.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub use crate::nats_server::{NatsCluster, NatsOptions, NatsServer};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Finds a server binary: `$ENV_VAR`, then `.venv/bin/NAME` (where the bootstrap puts
/// nats-server), then `PATH`.
pub fn find_binary(name: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var(env_var) {
        return Ok(PathBuf::from(path));
    }
    let venv = workspace_root().join(".venv/bin").join(name);
    if venv.exists() {
        return Ok(venv);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.exists())
        .with_context(|| format!("{name} not found: run .ci/bootstrap (or set {env_var})"))
}

/// 128 random bits in hex: a test server's password.
pub fn random_password() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Polls `check` every 10 ms until it returns `Some`, failing after `timeout`: waiting on
/// a condition, never on time (the servers here, and every ring-3 test).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A redis-server on a unix socket in a temp dir, persistence off unless
/// [`RedisSettings::aof`]; killed on drop. Tests can [`RedisServer::stop`] it and
/// [`RedisServer::restart`] it (or [`RedisServer::restart_empty`]) on the same socket.
pub struct RedisServer {
    child: Child,
    /// The URL with the password (`redis+unix://…?pass=…`): log in with this.
    pub url: String,
    pub socket: PathBuf,
    password: String,
    settings: RedisSettings,
    _dir: tempfile::TempDir,
}

/// Memory limit and eviction policy of a Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub maxmemory: String,
    pub policy: &'static str,
    /// Append-only file, fsynced every second (deploy/base/k8s/redis.yaml): a restart
    /// reloads what was written.
    pub aof: bool,
}

impl RedisSettings {
    /// Sessions, idempotency keys, rate limits, the queue: never evicted by a cache burst
    /// (volatile-lru only ever evicts keys with a TTL, and they all have one).
    pub fn state() -> Self {
        Self {
            maxmemory: "256mb".into(),
            policy: "volatile-lru",
            aof: false,
        }
    }

    /// The TTS cache: any key may go, least recently used first.
    pub fn cache(maxmemory: &str) -> Self {
        Self {
            maxmemory: maxmemory.into(),
            policy: "allkeys-lru",
            aof: false,
        }
    }

    /// The same with the append-only file on, as the deployed state instance.
    pub fn with_aof(mut self) -> Self {
        self.aof = true;
        self
    }
}

impl RedisServer {
    /// The server's process id (for resource accounting).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The sessions-and-queue instance.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(RedisSettings::state()).await
    }

    pub async fn start_with(settings: RedisSettings) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("redis.sock");
        let password = random_password();
        let child = Self::spawn(&socket, dir.path(), &password, &settings)?;
        let url = format!("redis+unix://{}?pass={password}", socket.display());
        let server = Self {
            child,
            url,
            socket,
            password,
            settings,
            _dir: dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Kills the server, as a crash would; its socket path stays for [`Self::restart`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server if it runs and starts it again on the same socket with the same
    /// password; returns once it answers `PING` (with AOF on, once it has reloaded the file;
    /// with persistence off it comes back empty).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn_again().await
    }

    /// Stops the server and starts it empty: its append-only file and snapshot are deleted
    /// first (a lost volume). Same socket and password, so clients reconnect.
    pub async fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.stop();
        let dir = self._dir.path();
        for data in ["appendonlydir", "appendonly.aof", "dump.rdb"] {
            let path = dir.join(data);
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else if path.exists() {
                std::fs::remove_file(&path)?;
            }
        }
        self.spawn_again().await
    }

    async fn spawn_again(&mut self) -> anyhow::Result<()> {
        self.child = Self::spawn(
            &self.socket,
            self._dir.path(),
            &self.password,
            &self.settings,
        )?;
        self.wait_ready().await
    }

    /// The password (for tests that look for it where it must not be).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The URL without the password (to show that Redis refuses it).
    pub fn url_without_password(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    fn spawn(
        socket: &Path,
        dir: &Path,
        password: &str,
        settings: &RedisSettings,
    ) -> anyhow::Result<Child> {
        let bin = find_binary("redis-server", "REDIS_SERVER_BIN")?;
        // The password goes in a config file, not on the command line (`ps` shows that).
        let config = dir.join("redis.conf");
        std::fs::write(&config, format!("requirepass {password}\n"))?;
        let aof: &[&str] = if settings.aof {
            &["--appendonly", "yes", "--appendfsync", "everysec"]
        } else {
            &["--appendonly", "no"]
        };
        Command::new(&bin)
            .arg(&config)
            .args(["--port", "0", "--save", ""])
            .args(aof)
            .arg("--unixsocket")
            .arg(socket)
            .arg("--dir")
            .arg(dir)
            .args(["--maxmemory", &settings.maxmemory])
            .args(["--maxmemory-policy", settings.policy])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url.as_str())?;
        eventually(
            "redis-server to answer PING",
            Duration::from_secs(10),
            || {
                let client = client.clone();
                async move {
                    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut connection)
                        .await
                        .ok()
                        .map(drop)
                }
            },
        )
        .await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/{pid}/stat`.
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // clock ticks are 1/100 s on Linux (CLK_TCK).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
