//! The OpenAI/Groq chat-completions stand-in over real HTTP (reqwest): SSE framing as Groq
//! sends it, whole completions, tool calls, auth and validation envelopes, rate-limit
//! headers ([`replies`]), and every injected fault ([`faults`]). This file holds the shared
//! client helpers. State: one stand-in per test on a free port.

use std::time::Duration;

use futures::StreamExt as _;
use sb_sim::SimServer;
use sb_sim::llm::{self, Config};
use serde_json::{Value, json};

mod faults;
mod replies;

pub(crate) const KEY: &str = "gsk-test";
pub(crate) const WAIT: Duration = Duration::from_secs(5);

pub(crate) async fn start(config: Config) -> SimServer {
    llm::spawn(Config {
        api_key: Some(KEY.into()),
        ..config
    })
    .await
    .expect("stand-in binds")
}

pub(crate) fn request(stream: bool) -> Value {
    json!({
        "model": "llama-3.1-8b-instant",
        "messages": [
            { "role": "system", "content": "You are a concise phone agent." },
            { "role": "user", "content": "What are your opening hours?" },
        ],
        "stream": stream,
        "stream_options": { "include_usage": true },
    })
}

pub(crate) async fn post(
    server: &SimServer,
    path: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", server.http_url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// Reads an SSE body to its end: the `data:` payloads in order (`[DONE]` kept as a string),
/// and whether the body ended in an error (a dropped connection).
pub(crate) async fn read_events(response: reqwest::Response) -> (Vec<String>, bool) {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut failed = false;
    while let Some(piece) = tokio::time::timeout(WAIT, body.next())
        .await
        .expect("body progresses")
    {
        match piece {
            Ok(bytes) => buffer.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let events = buffer
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .expect("every event is a data line")
                .to_owned()
        })
        .collect();
    (events, failed)
}

pub(crate) fn json_events(events: &[String]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).expect("chunk JSON"))
        .collect()
}

pub(crate) fn content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}
