//! Real nats-server processes on loopback, with the production users and permissions.
//!
//! A [`NatsServer`] runs with the generated `accounts` block (`sb_runtime::nats_auth`), a
//! fresh random password per user (given to nats-server through its environment, as a
//! Kubernetes Secret would), optionally TLS with a throw-away CA ([`NatsOptions::tls`]),
//! and optionally as one node of a cluster ([`NatsCluster`]). Everyone logs in: the
//! services as their role ([`NatsServer::service_env`]), the harness as `ops`
//! ([`NatsServer::login`]). The config file and certificates come from `nats_config`.
//! Killed on drop. State: the child process, its temp dir (store, config, certificates)
//! and the passwords.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use sb_runtime::{Secret, nats::NatsLogin};
use sb_schemas::roles::Role;

use crate::nats_config::{Node, server_config, write_certificates};
use crate::servers::{eventually, find_binary, random_password};

/// What kind of server to start.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Serve clients over TLS only (certificates from a CA made for this server).
    pub tls: bool,
    /// Users and permissions (on everywhere except in the benchmark's "off" runs).
    pub auth: bool,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            tls: false,
            auth: true,
        }
    }
}

/// The users' passwords and the CA clients trust, shared by a cluster's nodes.
#[derive(Debug)]
pub struct Credentials {
    /// Empty when auth is off.
    pub(crate) passwords: BTreeMap<&'static str, Secret>,
    /// The CA certificate (PEM file) when TLS is on.
    pub tls_ca: Option<PathBuf>,
    pub(crate) tls_files: Option<(PathBuf, PathBuf)>,
    _dir: tempfile::TempDir,
}

impl Credentials {
    pub(crate) fn new(options: &NatsOptions) -> anyhow::Result<Self> {
        let (tls, dir) = (options.tls, tempfile::tempdir()?);
        let passwords = Role::ALL
            .into_iter()
            .filter(|_| options.auth)
            .map(|r| (r.user(), Secret::new(random_password())))
            .collect();
        let (tls_ca, tls_files) = if tls {
            let (ca, cert, key) = write_certificates(dir.path())?;
            (Some(ca), Some((cert, key)))
        } else {
            (None, None)
        };
        Ok(Self {
            passwords,
            tls_ca,
            tls_files,
            _dir: dir,
        })
    }

    /// `role`'s password; `None` when auth is off.
    pub fn password(&self, role: Role) -> Option<Secret> {
        self.passwords.get(role.user()).cloned()
    }

    /// nats-server's environment: every user's password.
    fn server_env(&self) -> Vec<(String, String)> {
        Role::ALL
            .into_iter()
            .filter_map(|r| Some((r.password_env(), self.password(r)?.expose().to_owned())))
            .collect()
    }
}

/// A nats-server with JetStream and auth on a free loopback port; killed on drop.
pub struct NatsServer {
    child: Child,
    /// This node's client URL; for a cluster node, see [`NatsCluster::url`].
    pub url: String,
    pub port: u16,
    /// The node's `server_name` in a cluster (`n1`, …); empty for a lone server.
    pub name: String,
    pub credentials: Arc<Credentials>,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// One server, auth on, no TLS.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(NatsOptions::default()).await
    }

    pub async fn start_with(options: NatsOptions) -> anyhow::Result<Self> {
        let credentials = Arc::new(Credentials::new(&options)?);
        Self::spawn_node(credentials, None).await
    }

    /// The server's process id (for CPU accounting in benchmarks).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How `role` logs in to this server.
    pub fn login(&self, role: Role) -> NatsLogin {
        login(&self.url, &self.credentials, role)
    }

    /// A client logged in as `ops` (the operator: applies the topology, inspects streams).
    pub async fn ops(&self) -> anyhow::Result<async_nats::Client> {
        Ok(sb_runtime::nats::connect(&self.login(Role::Ops)).await?)
    }

    /// The `SB_NATS_*` environment of a service of `role`.
    pub fn service_env(&self, role: Role) -> Vec<(String, String)> {
        service_env(&self.url, &self.credentials, role)
    }

    /// Creates the streams and consumers of `nats/` as the operator (services only check
    /// for them); returns a JetStream context logged in as `ops`.
    pub async fn apply_topology(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        apply_topology(self.ops().await?, 1).await
    }

    /// What the server logged so far (errors, permission violations, cluster events).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Kills the node (SIGKILL, no goodbye to its cluster).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the node (SIGKILL) and starts it again with the same configuration, store
    /// and client port, so clients reconnect to the same URL; returns once JetStream
    /// answers (its streams recovered from the store).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let dir = self._dir.path();
        self.child = spawn(
            &dir.join("nats.conf"),
            dir,
            &self.credentials,
            Some(self.port),
        )?;
        let tls = self.credentials.tls_ca.is_some();
        let url = read_client_url(dir, self.child.id(), tls).await?;
        anyhow::ensure!(url == self.url, "restarted on {url}, not {}", self.url);
        let js = async_nats::jetstream::new(self.ops().await?);
        eventually(
            "the restarted nats-server's JetStream",
            Duration::from_secs(30),
            || {
                let js = js.clone();
                async move { js.query_account().await.ok().map(drop) }
            },
        )
        .await
    }

    async fn spawn_node(
        credentials: Arc<Credentials>,
        cluster: Option<&Node>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, server_config(&credentials, cluster, dir.path()))?;
        let child = spawn(&config, dir.path(), &credentials, None)?;
        let url = read_client_url(dir.path(), child.id(), credentials.tls_ca.is_some()).await?;
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("bad port")?;
        Ok(Self {
            child,
            url,
            port,
            name: cluster.map(|n| n.name.clone()).unwrap_or_default(),
            credentials,
            _dir: dir,
        })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of nats-servers on loopback (same users and passwords on each
/// node); of size 1, a plain server.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub async fn start(size: usize, options: NatsOptions) -> anyhow::Result<Self> {
        let credentials = Arc::new(Credentials::new(&options)?);
        if size <= 1 {
            let node = NatsServer::spawn_node(credentials, None).await?;
            return Ok(Self { nodes: vec![node] });
        }
        let routes: Vec<SocketAddr> = (0..size)
            .map(|_| crate::process::free_addr())
            .collect::<anyhow::Result<_>>()?;
        let nodes = futures::future::try_join_all((0..size).map(|i| {
            let node = Node {
                name: format!("n{}", i + 1),
                route: routes[i],
                routes: routes.clone(),
            };
            let credentials = credentials.clone();
            async move { NatsServer::spawn_node(credentials, Some(&node)).await }
        }))
        .await?;
        let cluster = Self { nodes };
        let ops = cluster.nodes[0].ops().await?;
        let js = async_nats::jetstream::new(ops);
        eventually(
            "the cluster's JetStream meta leader",
            Duration::from_secs(30),
            || {
                let js = js.clone();
                async move { js.query_account().await.ok().map(drop) }
            },
        )
        .await?;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated (what `SB_NATS_URL` takes).
    pub fn url(&self) -> String {
        let urls: Vec<&str> = self.nodes.iter().map(|n| n.url.as_str()).collect();
        urls.join(",")
    }

    pub fn login(&self, role: Role) -> NatsLogin {
        login(&self.url(), &self.nodes[0].credentials, role)
    }

    pub fn service_env(&self, role: Role) -> Vec<(String, String)> {
        service_env(&self.url(), &self.nodes[0].credentials, role)
    }

    /// A client logged in as `ops`.
    pub async fn ops(&self) -> anyhow::Result<async_nats::Client> {
        Ok(sb_runtime::nats::connect(&self.login(Role::Ops)).await?)
    }

    /// [`NatsServer::apply_topology`], with one replica per node.
    pub async fn apply_topology(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        apply_topology(self.ops().await?, self.nodes.len()).await
    }

    /// The process ids of the live nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(NatsServer::pid).collect()
    }
}

async fn apply_topology(
    ops: async_nats::Client,
    replicas: usize,
) -> anyhow::Result<async_nats::jetstream::Context> {
    let mut topology = sb_runtime::Topology::embedded()?;
    for stream in &mut topology.streams {
        stream.num_replicas = replicas;
    }
    let js = async_nats::jetstream::new(ops);
    topology.apply(&js).await?;
    Ok(js)
}

fn login(url: &str, credentials: &Credentials, role: Role) -> NatsLogin {
    let login = match credentials.password(role) {
        Some(password) => NatsLogin::as_role(url, role, password),
        None => NatsLogin::anonymous(url, role.user()),
    };
    login.with_tls_ca(credentials.tls_ca.clone())
}

pub(crate) fn service_env(
    url: &str,
    credentials: &Credentials,
    role: Role,
) -> Vec<(String, String)> {
    let mut env = vec![("SB_NATS_URL".to_owned(), url.to_owned())];
    if let Some(password) = credentials.password(role) {
        env.push(("SB_NATS_USER".to_owned(), role.user().to_owned()));
        env.push(("SB_NATS_PASSWORD".to_owned(), password.expose().to_owned()));
    }
    if let Some(ca) = &credentials.tls_ca {
        env.push(("SB_NATS_TLS_CA".to_owned(), ca.display().to_string()));
    }
    env
}

/// Starts nats-server on `port`, or on a random one (`-1`).
fn spawn(
    config: &Path,
    dir: &Path,
    credentials: &Credentials,
    port: Option<u16>,
) -> anyhow::Result<Child> {
    let bin = find_binary("nats-server", "NATS_SERVER_BIN")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("nats.log"))?;
    let port = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
    let mut command = Command::new(&bin);
    command
        .arg("-c")
        .arg(config)
        .args(["-a", "127.0.0.1", "-p", &port])
        .arg("--ports_file_dir")
        .arg(dir)
        .envs(credentials.server_env())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // The server shares this box's cores with every process of the stack and the load
    // generator. With one Go P (as a 1-CPU pod would get) its idle threads stop spinning
    // for work: at 500 calls it used ~15 % less CPU (BENCHMARKS.md). `GOMAXPROCS` in
    // the environment wins.
    if std::env::var_os("GOMAXPROCS").is_none() {
        command.env("GOMAXPROCS", "1");
    }
    command
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

/// The client URL from nats-server's ports file (it may exist before it is complete).
async fn read_client_url(dir: &Path, pid: u32, tls: bool) -> anyhow::Result<String> {
    let ports_file = dir.join(format!("nats-server_{pid}.ports"));
    let log = dir.join("nats.log");
    let url = eventually("nats-server's ports file", Duration::from_secs(10), || {
        let read = || -> Option<String> {
            let ports: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&ports_file).ok()?).ok()?;
            Some(ports["nats"][0].as_str()?.to_owned())
        };
        let url = read();
        async move { url }
    })
    .await
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
    // The ports file says tls:// when TLS is on; the client requires TLS either way.
    Ok(if tls {
        url.replacen("tls://", "nats://", 1)
    } else {
        url
    })
}
