//! A tiny callback receiver on loopback for the outbound-call tests: every POST (status or
//! AMD callback) is checked with sb-twilio's `RequestValidator` over the URL it was sent
//! to and recorded. State: what it received, behind a mutex, with a change counter to wait
//! on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use sb_sim::SimServer;
use sb_twilio::RequestValidator;
use sb_twilio::form::{first, parse_form};
use tokio::sync::watch;

/// One callback as received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// `/status` or `/amd`.
    pub(crate) path: String,
    pub(crate) params: Vec<(String, String)>,
    /// The signature matched the URL the stand-in was given.
    pub(crate) valid: bool,
}

impl Received {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        first(&self.params, name)
    }
}

#[derive(Clone)]
struct Shared {
    base: Arc<Mutex<String>>,
    validator: RequestValidator,
    seen: Arc<Mutex<Vec<Received>>>,
    changed: watch::Sender<usize>,
}

/// The running receiver.
pub(crate) struct Receiver {
    _server: SimServer,
    shared: Shared,
    pub(crate) url: String,
}

impl Receiver {
    pub(crate) async fn start(auth_token: &str) -> Self {
        let shared = Shared {
            base: Arc::new(Mutex::new(String::new())),
            validator: RequestValidator::new(auth_token),
            seen: Arc::new(Mutex::new(Vec::new())),
            changed: watch::Sender::new(0),
        };
        let app = Router::new()
            .route("/status", post(receive))
            .route("/amd", post(receive))
            .with_state(shared.clone());
        let server = SimServer::spawn(([127, 0, 0, 1], 0).into(), app)
            .await
            .expect("bind receiver");
        let url = server.http_url();
        *shared.base.lock().expect("lock") = url.clone();
        Self {
            _server: server,
            shared,
            url,
        }
    }

    /// Everything received so far, in order.
    pub(crate) fn seen(&self) -> Vec<Received> {
        self.shared.seen.lock().expect("lock").clone()
    }

    /// What was received for one call.
    pub(crate) fn for_call(&self, call_sid: &str) -> Vec<Received> {
        self.seen()
            .into_iter()
            .filter(|r| r.get("CallSid") == Some(call_sid))
            .collect()
    }

    /// Waits (at most 10 s) until `condition` holds over what was received.
    pub(crate) async fn wait_for(&self, condition: impl Fn(&[Received]) -> bool) {
        let mut changed = self.shared.changed.subscribe();
        let wait = async {
            while !condition(&self.seen()) {
                changed.changed().await.expect("receiver alive");
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("condition never held; received {:#?}", self.seen()));
    }
}

async fn receive(
    State(shared): State<Shared>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let params = parse_form(&body).unwrap_or_default();
    let url = format!("{}{}", shared.base.lock().expect("lock"), uri);
    let signature = headers
        .get("X-Twilio-Signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let valid = shared.validator.validate(&url, &params, signature).is_ok();
    shared.seen.lock().expect("lock").push(Received {
        path: uri.path().to_owned(),
        params,
        valid,
    });
    shared.changed.send_modify(|n| *n += 1);
    StatusCode::NO_CONTENT
}
