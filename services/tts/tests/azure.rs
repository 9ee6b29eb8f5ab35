//! The Azure TTS client over real HTTP against the sim stand-in, which checks the four
//! required headers and the SSML exactly as Azure does: audio streams back in pieces,
//! and 429 / 401 / a slow first byte become the right errors.

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

use std::time::Duration;

use futures::StreamExt as _;
use sb_runtime::Secret;
use sb_sim::tts::{self, Faults};
use sb_tts::azure::{Azure, Timeouts};
use sb_tts::provider::TextToSpeech as _;
use serde_json::Value;

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    first_byte: Duration::from_millis(500),
    idle: Duration::from_secs(1),
};

async fn azure(config: tts::Config, key: &str) -> (sb_sim::SimServer, Azure) {
    let server = tts::spawn(config).await.unwrap();
    let client = Azure::new(
        format!("{}/cognitiveservices/v1", server.http_url()),
        Secret::new(key),
        "switchboard-tests",
        TIMEOUTS,
    )
    .unwrap();
    (server, client)
}

async fn stats(server: &sb_sim::SimServer) -> Value {
    reqwest::get(format!("{}/sim/stats", server.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A valid request (the stand-in refuses missing or wrong headers with 400/401/415)
/// streams µ-law back in several pieces, as long as the text needs.
#[tokio::test]
async fn streams_mulaw_in_pieces() {
    let config = tts::Config {
        api_key: Some("key".into()),
        deterministic: true,
        chunk_bytes: 800,
        ..tts::Config::default()
    };
    let (server, client) = azure(config, "key").await;
    let mut stream = client
        .synthesize(
            "Thanks for calling Acme & co. How can I help?",
            "en-US-JennyNeural",
        )
        .await
        .unwrap();
    let mut pieces = Vec::new();
    while let Some(piece) = stream.next().await {
        pieces.push(piece.unwrap());
    }
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    assert!(pieces.len() > 2, "{} pieces", pieces.len());
    assert!(total > 8_000, "{total} bytes: over a second of audio");
    let stats = stats(&server).await;
    assert_eq!(
        (stats["azure"].as_u64(), stats["errors"].as_u64()),
        (Some(1), Some(0))
    );
}

/// A Hindi voice: the SSML says `xml:lang="hi-IN"`, the Devanagari text arrives intact
/// and is spoken (real espeak-ng speech when installed, else the speech-like signal).
#[tokio::test]
async fn a_hindi_voice_speaks_devanagari() {
    let config = tts::Config {
        api_key: Some("key".into()),
        ..tts::Config::default()
    };
    let (server, client) = azure(config, "key").await;
    let text = "नमस्ते, आप कैसे हैं? मैं आपकी मदद कर सकती हूँ।";
    let mut stream = client.synthesize(text, "hi-IN-SwaraNeural").await.unwrap();
    let mut total = 0;
    while let Some(piece) = stream.next().await {
        total += piece.unwrap().len();
    }
    assert!(total > 8_000, "{total} bytes: over a second of audio");
    let stats = stats(&server).await;
    assert_eq!(stats["azure_voices"]["hi-IN-SwaraNeural"], 1, "{stats}");
    assert_eq!(stats["azure_langs"]["hi-IN"], 1, "{stats}");
    assert_eq!(
        stats["characters"].as_u64(),
        Some(text.chars().count() as u64)
    );
    assert_eq!(stats["errors"], 0);
}

/// (stand-in settings, key, expected error kind).
#[tokio::test]
async fn failures_table() {
    let cases = [
        (
            tts::Config {
                faults: Faults {
                    rate_limit_share: 1.0,
                    retry_after_secs: 2,
                    ..Faults::default()
                },
                ..tts::Config::default()
            },
            "key",
            "rate_limited",
        ),
        (
            tts::Config {
                api_key: Some("right".into()),
                ..tts::Config::default()
            },
            "wrong",
            "status_4xx",
        ),
        (
            tts::Config {
                first_byte_ms: 3_000,
                deterministic: true,
                ..tts::Config::default()
            },
            "key",
            "first_byte_timeout",
        ),
    ];
    for (config, key, kind) in cases {
        let (_server, client) = azure(config, key).await;
        let error = client
            .synthesize("Hello.", "en-US-JennyNeural")
            .await
            .err()
            .unwrap();
        assert_eq!(error.kind(), kind, "{error}");
        if let sb_tts::provider::TtsError::RateLimited { retry_after } = error {
            assert_eq!(retry_after, Some(Duration::from_secs(2)));
        }
    }
}
