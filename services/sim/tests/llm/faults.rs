//! Injected faults: 429 shares with Groq's body and headers, 500/503, cut streams, streams
//! ending in `x_groq.error`, and stalls.

use std::time::Duration;

use futures::StreamExt as _;
use sb_sim::llm::{Config, Faults};
use serde_json::Value;

use super::{KEY, content, json_events, post, read_events, request, start};

/// A 50 % rate-limit share answers half of ten requests 429 with Groq's body, retry-after
/// and rate-limit headers; /sim/stats counts every request.
#[tokio::test]
async fn rate_limit_share() {
    let faults = Faults {
        rate_limit_share: 0.5,
        retry_after_secs: 3,
        ..Faults::default()
    };
    let server = start(Config {
        faults,
        ..Config::default()
    })
    .await;
    let mut limited = 0;
    for _ in 0..10 {
        let response = post(&server, "/v1/chat/completions", KEY, &request(false)).await;
        if response.status() == 429 {
            limited += 1;
            assert_eq!(response.headers()["retry-after"], "3");
            assert_eq!(response.headers()["x-ratelimit-remaining-tokens"], "0");
            let body: Value = response.json().await.expect("json");
            assert_eq!(
                (
                    body["error"]["type"].as_str(),
                    body["error"]["code"].as_str()
                ),
                (Some("tokens"), Some("rate_limit_exceeded"))
            );
        }
    }
    assert_eq!(limited, 5);
    let stats: Value = reqwest::get(format!("{}/sim/stats", server.http_url()))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (stats["requests"].as_u64(), stats["rate_limited"].as_u64()),
        (Some(10), Some(5))
    );
}

/// Injected 500/503 answer with those statuses; a cut stream ends in a transport error
/// before any finish chunk or `[DONE]`; an x_groq.error stream ends early with the error.
#[tokio::test]
async fn server_errors_cuts_and_groq_errors() {
    for (faults, status) in [
        (
            Faults {
                internal_error_share: 1.0,
                ..Faults::default()
            },
            500,
        ),
        (
            Faults {
                unavailable_share: 1.0,
                ..Faults::default()
            },
            503,
        ),
    ] {
        let server = start(Config {
            faults,
            ..Config::default()
        })
        .await;
        assert_eq!(
            post(&server, "/v1/chat/completions", KEY, &request(true))
                .await
                .status()
                .as_u16(),
            status
        );
    }

    let reply = "This reply is long enough to be cut somewhere in the middle of it.";
    let cut = Config {
        replies: vec![reply.into()],
        faults: Faults {
            cut_share: 1.0,
            ..Faults::default()
        },
        ..Config::default()
    };
    let server = start(cut).await;
    let (events, failed) =
        read_events(post(&server, "/v1/chat/completions", KEY, &request(true)).await).await;
    assert!(failed, "the connection drops");
    assert!(!events.contains(&"[DONE]".to_owned()));
    let chunks = json_events(&events);
    assert!(
        !chunks.is_empty()
            && chunks
                .iter()
                .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    assert!(content(&chunks).len() < reply.len());

    let groq = Config {
        replies: vec![reply.into()],
        faults: Faults {
            groq_error_share: 1.0,
            ..Faults::default()
        },
        ..Config::default()
    };
    let server = start(groq).await;
    let (events, failed) =
        read_events(post(&server, "/v1/chat/completions", KEY, &request(true)).await).await;
    assert!(!failed);
    let chunks = json_events(&events);
    assert!(
        chunks
            .last()
            .is_some_and(|c| c["x_groq"]["error"].as_str().is_some())
    );
    assert!(content(&chunks).len() < reply.len());
}

/// A stalled stream delivers its first half, then nothing for the stall (60 s here, far
/// beyond the 300 ms this test waits).
#[tokio::test]
async fn stalled_stream_stops_sending() {
    let faults = Faults {
        stall_share: 1.0,
        stall_ms: 60_000,
        ..Faults::default()
    };
    let reply = "one two three four five six seven eight";
    let server = start(Config {
        replies: vec![reply.into()],
        faults,
        ..Config::default()
    })
    .await;
    let response = post(&server, "/v1/chat/completions", KEY, &request(true)).await;
    let mut body = response.bytes_stream();
    let mut received = String::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(300), body.next()).await {
            Ok(Some(Ok(bytes))) => received.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(other) => panic!("stream ended instead of stalling: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(received.contains("\"role\":\"assistant\""));
    assert!(
        received.contains(" three") && !received.contains(" eight") && !received.contains("[DONE]"),
        "{received}"
    );
}
