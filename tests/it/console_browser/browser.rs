//! A headless Chromium driven over WebDriver for the console's browser test: `chromedriver`
//! started as a child process on a free loopback port, waited for by polling its `/status`,
//! and a [`fantoccini`] session on it with a profile of its own.
//!
//! Consumes the `chromium` and `chromedriver` binaries on `PATH` (Debian's `chromium` and
//! `chromium-driver`, installed by `.ci/bootstrap`): a machine without them fails the test
//! with that message rather than skipping it. State: the driver process (killed on drop),
//! its log and the browser profile in a temp dir.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use sb_stack::process::free_addr;
use sb_tests::eventually;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// Tries at a free port (another process may take it between the check and the bind).
const START_ATTEMPTS: usize = 3;
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// `bin` on `PATH`, or an error that says how to install it.
pub(crate) fn required(bin: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(bin))
        .find(|path| path.is_file())
        .with_context(|| {
            format!(
                "`{bin}` is not on PATH: the console's browser test needs Debian's chromium and \
                 chromium-driver; run .ci/bootstrap to install them (the test does not skip)"
            )
        })
}

/// A running chromedriver.
pub(crate) struct Driver {
    child: Child,
    pub(crate) url: String,
    chromium: PathBuf,
    dir: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver and waits until its `/status` says it is ready.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let chromium = required("chromium")?;
        let driver = required("chromedriver")?;
        let dir = tempfile::tempdir()?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_addr()?.port();
            let mut child = Command::new(&driver)
                .arg(format!("--port={port}"))
                .arg(format!(
                    "--log-path={}",
                    dir.path().join("chromedriver.log").display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start {}", driver.display()))?;
            let url = format!("http://127.0.0.1:{port}");
            match ready(&mut child, &url).await {
                Ok(()) => {
                    return Ok(Self {
                        child,
                        url,
                        chromium,
                        dir,
                    });
                }
                Err(e) => {
                    let _ = child.kill().await;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("chromedriver did not start")))
            .with_context(|| log_tail(dir.path()))
    }

    /// A new headless Chromium session with a profile of its own.
    pub(crate) async fn session(&self) -> anyhow::Result<Client> {
        let profile = self
            .dir
            .path()
            .join(format!("profile-{}", uuid::Uuid::new_v4()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--mute-audio", "--window-size=1280,2000", "--no-first-run",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal");
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .with_context(|| format!("no browser session: {}", log_tail(self.dir.path())))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Waits for chromedriver's `/status` to say `ready`, or for it to exit.
async fn ready(child: &mut Child, url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let status = format!("{url}/status");
    eventually("chromedriver ready", START_TIMEOUT, || {
        let exited = child.try_wait().ok().flatten();
        let http = http.clone();
        let status = status.clone();
        async move {
            if let Some(code) = exited {
                return Some(Err(anyhow::anyhow!("chromedriver exited: {code}")));
            }
            let body: Value = http.get(&status).send().await.ok()?.json().await.ok()?;
            (body["value"]["ready"] == true).then_some(Ok(()))
        }
    })
    .await?
}

/// The end of chromedriver's log, for a failure message.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    if tail.is_empty() {
        "chromedriver wrote no log".into()
    } else {
        format!("chromedriver log:\n{}", tail.join("\n"))
    }
}
