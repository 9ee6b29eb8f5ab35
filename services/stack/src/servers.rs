//! Real nats-server and redis-server child processes on loopback.
//!
//! Each server gets a free port (NATS, via `-p -1` and its ports file) or a unix socket
//! (Redis) and a temp dir, and is killed on `Drop`; [`eventually`] is the one poll that
//! waits for them (and for every condition a ring-3 test waits on). Used by the ring-3
//! tests, the demo and the load benchmark alike. State: the child processes and their temp
//! dirs.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

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

/// A nats-server with JetStream on a free loopback port; killed on drop.
pub struct NatsServer {
    child: Child,
    pub url: String,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// The server's process id (for CPU accounting in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let bin = find_binary("nats-server", "NATS_SERVER_BIN")?;
        let mut command = Command::new(&bin);
        command
            .args(["-a", "127.0.0.1", "-p", "-1", "-js"])
            .arg("-sd")
            .arg(dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // The server shares this box's cores with every process of the stack and the load
        // generator. With one Go P (as a 1-CPU pod would get) its idle threads stop spinning
        // for work: at 500 calls it used ~15 % less CPU (BENCHMARKS.md). `GOMAXPROCS` in
        // the environment wins.
        if std::env::var_os("GOMAXPROCS").is_none() {
            command.env("GOMAXPROCS", "1");
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let ports_file = dir.path().join(format!("nats-server_{}.ports", child.id()));
        let mut server = Self {
            child,
            url: String::new(),
            port: 0,
            _dir: dir,
        };
        // The file can exist before nats-server has finished writing it: wait until it parses.
        let read_url = || -> Option<String> {
            let ports: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&ports_file).ok()?).ok()?;
            Some(ports["nats"][0].as_str()?.to_owned())
        };
        let url = eventually("nats-server's ports file", Duration::from_secs(10), || {
            let url = read_url();
            async move { url }
        })
        .await?;
        server.url = url.clone();
        server.port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("bad port")?;
        Ok(server)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A redis-server on a unix socket in a temp dir, persistence off; killed on drop. Tests
/// can [`RedisServer::stop`] it and [`RedisServer::restart`] it on the same socket.
pub struct RedisServer {
    child: Child,
    pub url: String,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// The server's process id (for resource accounting).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("redis.sock");
        let child = Self::spawn(&socket, dir.path())?;
        let url = format!("redis+unix://{}", socket.display());
        let server = Self {
            child,
            url,
            socket,
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

    /// Stops the server if it runs and starts a new, empty one (persistence is off) on the
    /// same socket; returns once it answers `PING`.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.child = Self::spawn(&self.socket, self._dir.path())?;
        self.wait_ready().await
    }

    fn spawn(socket: &Path, dir: &Path) -> anyhow::Result<Child> {
        let bin = find_binary("redis-server", "REDIS_SERVER_BIN")?;
        Command::new(&bin)
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(socket)
            .arg("--dir")
            .arg(dir)
            .args(["--maxmemory", "256mb", "--maxmemory-policy", "volatile-lru"])
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
