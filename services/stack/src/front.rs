//! The load balancer in front of the stack's ingress replicas, on loopback.
//!
//! Consumes HTTP/1.1 from clients (Twilio's webhooks and Media Streams sockets: the
//! scripted callers and the Twilio stand-in) and the list of ingress replicas; forwards
//! each request on a fresh connection to a ready replica, picked at random among those
//! whose `GET /ready` answered 200 within the last [`READY_TTL`] (as a cloud load balancer
//! or a Kubernetes Service routes: to ready pods only, and not in a fixed rotation, which
//! would put every call's socket on one replica and its webhook on the other). A
//! WebSocket upgrade is tunnelled to its replica for the socket's life, so a replica that
//! dies takes its sockets with it; a client's keep-alive connection ends at the front and
//! outlives any replica. State: the replica list, the readiness cache and the accept task
//! (aborted on drop).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::{process::http_status, servers::eventually};

/// How long a readiness answer is trusted.
pub const READY_TTL: Duration = Duration::from_millis(100);
/// How long a request waits for some replica to be ready before it is answered 502 (a
/// replacement takes about a second to become ready).
const NO_REPLICA_WAIT: Duration = Duration::from_secs(3);

type Body = BoxBody<Bytes, hyper::Error>;

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
    /// dropped, so the next request checks the new list.
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
        let _ = client.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(shared.forward(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(client), service)
                .with_upgrades()
                .await;
        });
    }
}

fn bad_gateway(why: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(why)).map_err(|e| match e {}).boxed());
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

impl Shared {
    /// Sends `request` to a ready replica on a new connection; an upgrade (the media
    /// WebSocket) is then joined to the client's connection byte for byte.
    async fn forward(&self, mut request: Request<Incoming>) -> Response<Body> {
        let Some(upstream) = self.connect().await else {
            return bad_gateway("no ingress replica is ready".into());
        };
        let _ = upstream.set_nodelay(true);
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
                Ok(pair) => pair,
                Err(error) => return bad_gateway(error.to_string()),
            };
        tokio::spawn(connection.with_upgrades());
        let client_side = hyper::upgrade::on(&mut request);
        let mut response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(error) => return bad_gateway(error.to_string()),
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let replica_side = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                if let (Ok(client), Ok(replica)) = tokio::join!(client_side, replica_side) {
                    let (mut client, mut replica) = (TokioIo::new(client), TokioIo::new(replica));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut replica).await;
                }
            });
        }
        response.map(BodyExt::boxed)
    }

    /// A connection to a ready replica (trying the others if it refuses); `None` when
    /// none is ready within [`NO_REPLICA_WAIT`].
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
    use axum::{Router, extract::ws::WebSocketUpgrade, routing::get};
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    /// A stand-in replica: `/ready` answers `status`, `/name` its name, `/echo` is a
    /// WebSocket that sends back what it gets, prefixed with the name.
    async fn replica(name: &'static str, status: u16) -> SocketAddr {
        let status = StatusCode::from_u16(status).unwrap();
        let app = Router::new()
            .route("/ready", get(move || async move { status }))
            .route("/name", get(move || async move { name }))
            .route(
                "/echo",
                get(move |ws: WebSocketUpgrade| async move {
                    ws.on_upgrade(move |mut socket| async move {
                        while let Some(Ok(axum::extract::ws::Message::Text(text))) =
                            socket.recv().await
                        {
                            let echo = format!("{name}:{}", text.as_str());
                            let _ = socket.send(echo.into()).await;
                        }
                    })
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    async fn front(replicas: Vec<SocketAddr>) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Front::start(listener, replicas).unwrap()
    }

    /// Requests (on one keep-alive connection) spread over the ready replicas and never
    /// reach one whose `/ready` fails; a new replica list is used at once.
    #[tokio::test]
    async fn routes_requests_to_ready_replicas_only() {
        let (a, b, draining) = (
            replica("a", 200).await,
            replica("b", 200).await,
            replica("draining", 503).await,
        );
        let front = front(vec![a, draining, b]).await;
        let http = reqwest::Client::new();
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..64 {
            let name = http
                .get(format!("{}/name", front.url()))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            *seen.entry(name).or_insert(0) += 1;
        }
        // Both get some (each misses all 64 with probability 2^-64), the draining one none.
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["a", "b"], "{seen:?}");

        front.set_replicas(vec![b]).await;
        let name = http.get(format!("{}/name", front.url())).send().await;
        assert_eq!(name.unwrap().text().await.unwrap(), "b");
    }

    /// A WebSocket through the front stays on its replica and carries messages both ways.
    #[tokio::test]
    async fn tunnels_a_websocket_to_one_replica() {
        let front = front(vec![replica("a", 200).await]).await;
        let url = format!("ws://{}/echo", front.addr);
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        for text in ["one", "two"] {
            socket.send(Message::text(text)).await.unwrap();
            let echo = socket.next().await.unwrap().unwrap();
            assert_eq!(echo.into_text().unwrap().as_str(), format!("a:{text}"));
        }
    }

    /// With no replica ready, a request is answered 502 (after a bounded wait).
    #[tokio::test]
    async fn answers_bad_gateway_without_a_ready_replica() {
        let front = front(vec![replica("draining", 503).await]).await;
        let response = reqwest::get(format!("{}/name", front.url())).await.unwrap();
        assert_eq!(response.status(), 502);
    }
}
