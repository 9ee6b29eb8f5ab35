//! The load balancer in front of the stack's ingress replicas: a loopback TCP proxy.
//!
//! Consumes client connections (Twilio's webhooks and Media Streams sockets, from the
//! scripted callers and the Twilio stand-in) and the list of ingress replicas; forwards each
//! new connection whole to a ready replica, picked at random among those whose
//! `GET /ready` answered 200 within the last [`READY_TTL`] (as a Kubernetes Service with
//! kube-proxy routes: at random, to ready pods only; a fixed rotation would put every
//! call's media socket on one replica, its webhook on the other). A connection stays on its replica until either side closes it: a replica
//! that dies takes its connections with it. State: the replica list, the readiness cache
//! and the accept task (aborted on drop).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::net::{TcpListener, TcpStream};

use crate::{process::http_status, servers::eventually};

/// How long a readiness answer is trusted.
pub const READY_TTL: Duration = Duration::from_millis(100);
/// How long a new connection waits for some replica to be ready before it is dropped.
const NO_REPLICA_WAIT: Duration = Duration::from_secs(10);

/// A running front; stops accepting when dropped.
pub struct Front {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    replicas: Mutex<Vec<SocketAddr>>,
    /// The ready replicas and when they were checked.
    ready: tokio::sync::Mutex<(Option<Instant>, Vec<SocketAddr>)>,
}

impl Front {
    /// Serves on `listener` (bound early, so its address can be handed out first).
    pub fn start(listener: TcpListener, replicas: Vec<SocketAddr>) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            replicas: Mutex::new(replicas),
            ready: tokio::sync::Mutex::new((None, Vec::new())),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the replica list (a replica started or gone); the readiness cache is
    /// dropped, so the next connection checks the new list.
    pub async fn set_replicas(&self, replicas: Vec<SocketAddr>) {
        *self.shared.replicas.lock().expect("never poisoned") = replicas;
        self.shared.ready.lock().await.0 = None;
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Some(mut upstream) = shared.connect().await {
                let mut client = client;
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
}

impl Shared {
    /// A connection to a ready replica (trying the others if it refuses); `None`
    /// when none is ready within [`NO_REPLICA_WAIT`].
    async fn connect(&self) -> Option<TcpStream> {
        eventually("a ready ingress replica", NO_REPLICA_WAIT, || async {
            let ready = self.ready().await;
            let start = rand::random::<u32>() as usize;
            for i in 0..ready.len() {
                let replica = ready[(start + i) % ready.len()];
                if let Ok(stream) = TcpStream::connect(replica).await {
                    return Some(stream);
                }
            }
            // Nothing answered: check again instead of trusting the cache.
            self.ready.lock().await.0 = None;
            None
        })
        .await
        .ok()
    }

    /// The replicas whose `/ready` answered 200, at most [`READY_TTL`] old.
    async fn ready(&self) -> Vec<SocketAddr> {
        let mut cache = self.ready.lock().await;
        if cache.0.is_some_and(|at| at.elapsed() < READY_TTL) {
            return cache.1.clone();
        }
        let replicas = self.replicas.lock().expect("never poisoned").clone();
        let checks = replicas
            .iter()
            .map(|&r| async move { (http_status(r, "/ready").await == Some(200)).then_some(r) });
        let ready: Vec<SocketAddr> = futures::future::join_all(checks)
            .await
            .into_iter()
            .flatten()
            .collect();
        *cache = (Some(Instant::now()), ready.clone());
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A stand-in replica: `/ready` answers `status`; any other connection gets `name`.
    async fn replica(name: &'static str, status: u16) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 256];
                    let n = socket.read(&mut request).await.unwrap_or(0);
                    let answer = if request[..n].starts_with(b"GET /ready") {
                        format!("HTTP/1.0 {status} x\r\n\r\n")
                    } else {
                        name.to_owned()
                    };
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        addr
    }

    async fn through(front: &Front) -> String {
        let mut socket = TcpStream::connect(front.addr).await.unwrap();
        socket.write_all(b"hello").await.unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.unwrap();
        answer
    }

    /// Connections spread over the ready replicas and never reach one whose `/ready`
    /// fails; a new replica list is used at once.
    #[tokio::test]
    async fn routes_to_ready_replicas_only() {
        let (a, b, draining) = (
            replica("a", 200).await,
            replica("b", 200).await,
            replica("draining", 503).await,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let front = Front::start(listener, vec![a, draining, b]).unwrap();
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..64 {
            *seen.entry(through(&front).await).or_insert(0) += 1;
        }
        // Both get some (each misses all 64 with probability 2^-64), the draining one none.
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["a", "b"], "{seen:?}");

        front.set_replicas(vec![b]).await;
        assert_eq!(through(&front).await, "b");
    }
}
