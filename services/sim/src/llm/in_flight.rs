//! Requests the stand-in is generating right now, per model, and the most it ever saw at
//! once: what a test reads from `GET /sim/stats` to prove that a client's concurrency limit
//! held across all its replicas.
//!
//! Consumes the start and end of each generation ([`InFlight::start`] returns a guard);
//! produces the counts as JSON. A request counts from the moment its body was read until
//! its answer is generated: just before the finish chunk of a stream is sent (a client
//! that frees its place on the finish chunk is never counted twice), when a whole
//! completion or an injected error is answered, or when the stream ends early (a cut, or
//! the client went away). State: the counters, behind a mutex.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

/// Now and the maximum, of one model or of all.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Count {
    now: u64,
    max: u64,
}

impl Count {
    fn start(&mut self) {
        self.now += 1;
        self.max = self.max.max(self.now);
    }

    fn end(&mut self) {
        self.now = self.now.saturating_sub(1);
    }

    fn json(self) -> Value {
        json!({ "in_flight": self.now, "max_in_flight": self.max })
    }
}

#[derive(Debug, Default)]
struct Counts {
    all: Count,
    models: BTreeMap<String, Count>,
}

/// The counters of one server.
#[derive(Debug, Default)]
pub struct InFlight {
    counts: Mutex<Counts>,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request for `model` starts generating; it ends when the guard drops.
    pub fn start(self: &Arc<Self>, model: &str) -> Generating {
        let mut counts = self.lock();
        counts.all.start();
        counts.models.entry(model.to_owned()).or_default().start();
        Generating {
            in_flight: Arc::clone(self),
            model: model.to_owned(),
        }
    }

    /// `{"in_flight", "max_in_flight", "models": {model: {"in_flight", "max_in_flight"}}}`.
    pub fn json(&self) -> Value {
        let counts = self.lock();
        let models: serde_json::Map<String, Value> = counts
            .models
            .iter()
            .map(|(model, count)| (model.clone(), count.json()))
            .collect();
        let mut all = counts.all.json();
        all["models"] = Value::Object(models);
        all
    }
}

/// One request being generated; dropping it ends it.
#[derive(Debug)]
pub struct Generating {
    in_flight: Arc<InFlight>,
    model: String,
}

impl Drop for Generating {
    fn drop(&mut self) {
        let mut counts = self.in_flight.lock();
        counts.all.end();
        if let Some(count) = counts.models.get_mut(&self.model) {
            count.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overlapping requests raise the maximum of their model and of all; ended ones only
    /// lower the current count; another model keeps its own.
    #[test]
    fn counts_now_and_the_most_at_once() {
        let in_flight = Arc::new(InFlight::default());
        let a1 = in_flight.start("a");
        let a2 = in_flight.start("a");
        drop(a1);
        let a3 = in_flight.start("a");
        let b = in_flight.start("b");
        drop((a2, a3));
        let stats = in_flight.json();
        assert_eq!(stats["in_flight"], 1);
        assert_eq!(stats["max_in_flight"], 3);
        assert_eq!(
            stats["models"]["a"],
            json!({"in_flight": 0, "max_in_flight": 2})
        );
        assert_eq!(
            stats["models"]["b"],
            json!({"in_flight": 1, "max_in_flight": 1})
        );
        drop(b);
        assert_eq!(in_flight.json()["in_flight"], 0);
    }

    /// Over HTTP: three overlapping streams (two of model `a`) are seen at once, and a
    /// stream stops counting before its finish chunk reaches the client.
    #[tokio::test]
    async fn overlapping_streams_over_http() {
        use futures::StreamExt as _;

        let server = crate::llm::spawn(crate::llm::Config {
            ttft_ms: 300,
            ..crate::llm::Config::default()
        })
        .await
        .unwrap();
        let client = reqwest::Client::new();
        let url = format!("{}/v1/chat/completions", server.http_url());
        let stats_url = format!("{}/sim/stats", server.http_url());
        let stream = |model: &str| {
            let body = json!({
                "model": model,
                "messages": [{ "role": "user", "content": "Hi" }],
                "stream": true,
            });
            let request = client.post(&url).bearer_auth("k").json(&body).send();
            let stats_url = &stats_url;
            async move {
                // Read until the finish chunk, then look at the stats at once.
                let mut body = request.await.unwrap().bytes_stream();
                let mut seen = String::new();
                while !seen.contains("\"finish_reason\":\"stop\"") {
                    let bytes = body.next().await.unwrap().unwrap();
                    seen.push_str(&String::from_utf8_lossy(&bytes));
                }
                reqwest::get(stats_url)
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            }
        };
        let (first, _, _) = tokio::join!(stream("a"), stream("a"), stream("b"));
        assert!(first["in_flight"].as_u64().unwrap() < 3, "{first}");
        assert_eq!(first["max_in_flight"], 3);
        assert_eq!(first["models"]["a"]["max_in_flight"], 2);
        let single = stream("c").await;
        assert_eq!(
            single["models"]["c"],
            json!({"in_flight": 0, "max_in_flight": 1})
        );
    }
}
