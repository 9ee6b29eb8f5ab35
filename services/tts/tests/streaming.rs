//! The streaming engines (OpenAI `/v1/audio/speech`, Deepgram `/v1/speak`) over real HTTP
//! against the TTS stand-in's faces, which check each vendor's auth, body and format as
//! the vendor does; and the stage speaking for a tenant that chose one (`tts_provider`):
//! audio streamed, then served from the cache, stopped by a barge-in.

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use sb_runtime::Secret;
use sb_runtime::tenants::testing::TenantToml;
use sb_runtime::testing::{MemoryCache, MemorySessions, drive};
use sb_schemas::{Body, CallSid, Envelope, Sentence, TenantId};
use sb_sim::tts;
use sb_tts::Tts;
use sb_tts::azure::Timeouts;
use sb_tts::provider::{Espeak, TextToSpeech};
use sb_tts::streaming::{DeepgramSpeech, OpenAiSpeech};
use serde_json::Value;

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    first_byte: Duration::from_secs(2),
    idle: Duration::from_secs(1),
};

const TEXT: &str = "Your visit is booked for Friday at three in the afternoon.";

async fn stand_in() -> sb_sim::SimServer {
    tts::spawn(tts::Config {
        api_key: Some("key".into()),
        deterministic: true,
        chunk_bytes: 999,
        ..tts::Config::default()
    })
    .await
    .unwrap()
}

fn openai(server: &sb_sim::SimServer, key: &str) -> OpenAiSpeech {
    let url = format!("{}/v1/audio/speech", server.http_url());
    OpenAiSpeech::new(url, Secret::new(key), "gpt-4o-mini-tts".into(), TIMEOUTS).unwrap()
}

fn deepgram(server: &sb_sim::SimServer, key: &str) -> DeepgramSpeech {
    let url = format!("{}/v1/speak", server.http_url());
    DeepgramSpeech::new(url, Secret::new(key), TIMEOUTS).unwrap()
}

async fn stats(server: &sb_sim::SimServer) -> Value {
    reqwest::get(format!("{}/sim/stats", server.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn speak(engine: &dyn TextToSpeech, voice: &str) -> (usize, Vec<u8>) {
    let mut stream = engine.synthesize(TEXT, voice).await.unwrap();
    let (mut pieces, mut audio) = (0, Vec::new());
    while let Some(piece) = stream.next().await {
        pieces += 1;
        audio.extend_from_slice(&piece.unwrap());
    }
    (pieces, audio)
}

/// Both engines stream 8 kHz µ-law in several pieces: OpenAI's 24 kHz PCM (in 999-byte
/// pieces, so samples split between pieces) is resampled to the same length Deepgram
/// sends at 8 kHz directly; a wrong key is the vendor's 401.
#[tokio::test]
async fn both_engines_stream_8khz_mulaw() {
    let server = stand_in().await;
    let (openai_pieces, from_pcm) = speak(&openai(&server, "key"), "alloy").await;
    let (deepgram_pieces, direct) = speak(&deepgram(&server, "key"), "aura-2-thalia-en").await;
    assert!(openai_pieces > 2 && deepgram_pieces > 2);
    assert!(
        direct.len() > 8_000,
        "{} bytes: over a second",
        direct.len()
    );
    assert!(
        from_pcm.len().abs_diff(direct.len()) <= 1,
        "{} vs {} samples: 24 kHz became 8 kHz",
        from_pcm.len(),
        direct.len()
    );
    let stats = stats(&server).await;
    assert_eq!(
        (stats["openai"].as_u64(), stats["deepgram"].as_u64()),
        (Some(1), Some(1))
    );
    for engine in [
        Box::new(openai(&server, "wrong")) as Box<dyn TextToSpeech>,
        Box::new(deepgram(&server, "wrong")),
    ] {
        let error = engine.synthesize(TEXT, "alloy").await.err().unwrap();
        assert_eq!(error.kind(), "status_4xx", "{}: {error}", engine.name());
    }
}

fn sid() -> CallSid {
    CallSid::parse("CA00000000000000000000000000000003").unwrap()
}

fn sentence(index: u32) -> Envelope {
    let body = Body::Sentence(Sentence {
        index,
        text: TEXT.into(),
        last: true,
        fallback: false,
    });
    Envelope::new(TenantId::parse("globex").unwrap(), sid(), 1, body)
}

/// A tenant with `tts_provider = "openai"` is spoken by OpenAI's engine (not the primary):
/// the first time streamed, the second time from the cache (no second request), and a
/// barge-in before the sentence stops it. A tenant naming an engine the process does not
/// have stops the start-up with a clear error.
#[tokio::test]
async fn a_tenant_with_a_streaming_engine_is_spoken_cached_and_interrupted() {
    let server = stand_in().await;
    let tenants = TenantToml::new()
        .tier("t", 4, 60)
        .tenant("globex", "+15005550007", "t")
        .set("tts_provider", "openai")
        .set("voice", "alloy")
        .parse()
        .unwrap();
    let tenants = sb_runtime::LiveTenants::fixed(tenants);
    let sessions = Arc::new(MemorySessions::default());
    sessions.start(&sid(), &TenantId::parse("globex").unwrap());
    sessions.next_turn(&sid());
    let tts = Tts::with_providers(
        sessions.clone(),
        Arc::new(MemoryCache::default()),
        tenants.clone(),
        Arc::new(Espeak),
        None,
        4_000,
    );
    assert!(
        tts.check_tenants()
            .unwrap_err()
            .contains("SB_OPENAI_TTS_KEY"),
        "without the engine"
    );
    let tts = tts.with_engines(vec![Arc::new(openai(&server, "key"))]);
    tts.check_tenants().unwrap();

    let first = drive(&tts, sentence(0)).await;
    first.result.as_ref().unwrap();
    assert!(first.outputs.len() > 1, "streamed in chunks");
    assert_eq!(stats(&server).await["openai"], 1);
    let again = drive(&tts, sentence(1)).await;
    again.result.as_ref().unwrap();
    assert_eq!(stats(&server).await["openai"], 1, "served from the cache");
    let audio = |d: &sb_runtime::testing::Driven| -> Vec<u8> {
        d.outputs
            .iter()
            .flat_map(|e| match &e.body {
                Body::TtsChunk(c) => c.payload.0.to_vec(),
                _ => Vec::new(),
            })
            .collect()
    };
    assert_eq!(audio(&first), audio(&again), "the same audio");

    sessions.interrupt(&sid(), 1);
    let stopped = drive(&tts, sentence(2)).await;
    stopped.result.as_ref().unwrap();
    assert!(stopped.outputs.is_empty(), "{:?}", stopped.outputs.len());
}
