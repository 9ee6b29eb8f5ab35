//! One child process of the stack: a service or a stand-in.
//!
//! Consumes a binary path, arguments and environment; produces a running process whose
//! output goes to a log file, with readiness checks, resource readings from `/proc`, a
//! graceful stop (SIGTERM) and a hard kill. State: the child, killed on drop.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// A free loopback port (bound and released; good enough on a dev machine).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Memory, CPU and open file descriptors of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub rss_kb: u64,
    pub peak_rss_kb: u64,
    pub cpu: Duration,
    /// Entries of `/proc/{pid}/fd` (sockets, files, pipes, epoll and event fds).
    pub fds: u64,
}

pub fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Usage {
        rss_kb: field("VmRSS:"),
        peak_rss_kb: field("VmHWM:"),
        cpu: crate::servers::cpu_time(&pid.to_string()),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
    }
}

/// A running child process.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    /// Where its HTTP server listens (services: health/metrics; stand-ins: the API).
    pub addr: SocketAddr,
}

impl Process {
    /// Starts a service binary with `env` (on top of PATH/HOME/RUST_LOG only) and waits
    /// until `GET /ready` on `addr` answers 200.
    pub async fn service(
        name: &str,
        bin: &Path,
        env: &[(String, String)],
        addr: SocketAddr,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let mut command = base_command(bin);
        command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut process = Self {
            name: name.to_owned(),
            child,
            log,
            addr,
        };
        process.wait_ready(Duration::from_secs(30)).await?;
        Ok(process)
    }

    /// Starts a stand-in (`sim <args>`), reads its `listening on <url>` line, keeps logging.
    pub async fn stand_in(
        name: &str,
        bin: &Path,
        args: &[String],
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let err = std::fs::File::create(&log)?;
        let mut command = base_command(bin);
        command.args(args).stdout(Stdio::piped()).stderr(err);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
            .await
            .with_context(|| format!("{name} did not start (see {})", log.display()))??
            .with_context(|| format!("{name} exited (see {})", log.display()))?;
        let url = first
            .strip_prefix("listening on ")
            .with_context(|| format!("{name} printed {first:?}, not `listening on <url>`"))?;
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("{name} listens on {url}"))?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            addr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn usage(&self) -> Usage {
        usage(self.pid())
    }

    /// Polls `GET /ready` until 200.
    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} during start-up; see {}",
                    self.name,
                    self.log.display()
                );
            }
            if http_status(self.addr, "/ready").await == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {timeout:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM, then wait up to `grace` before killing. `true`: it exited by itself.
    pub async fn stop(mut self, grace: Duration) -> bool {
        let Some(pid) = self.child.id() else {
            return true;
        };
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
            return true;
        }
        let _ = self.child.kill().await;
        false
    }

    /// SIGKILL: a crash, no hand-off.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

fn base_command(bin: &Path) -> Command {
    let mut command = Command::new(bin);
    command.env_clear().kill_on_drop(true).stdin(Stdio::null());
    for key in ["PATH", "HOME", "RUST_LOG", "RUST_BACKTRACE", "TMPDIR"] {
        if let Ok(value) = std::env::var(key) {
            command.env(key, value);
        }
    }
    command
}

/// A bare HTTP/1.0 GET on loopback: the status code, or `None` if nothing answered.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 32];
    let n = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut head))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(&head[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
