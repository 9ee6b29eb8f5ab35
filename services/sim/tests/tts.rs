//! The TTS stand-in over real HTTP (reqwest): Azure's header checks and status codes, audio
//! that follows the text and the requested format (raw and RIFF µ-law, 24 kHz PCM), the
//! Deepgram and OpenAI faces, injected faults, and the request counter. State: one
//! stand-in per test on a free port.

use sb_audio::{synth, wav};
use sb_sim::SimServer;
use sb_sim::tts::{self, Config, Faults};
use serde_json::{Value, json};

const KEY: &str = "azure-test-key";
const MULAW: &str = "raw-8khz-8bit-mono-mulaw";

async fn start(config: Config) -> SimServer {
    tts::spawn(Config {
        api_key: Some(KEY.into()),
        deterministic: true,
        ..config
    })
    .await
    .expect("stand-in binds")
}

fn ssml(text: &str) -> String {
    format!(
        r#"<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US"><voice name="en-US-JennyNeural">{text}</voice></speak>"#
    )
}

/// POSTs to Azure's path with the four headers, any of which `skip` leaves out or `replace`
/// overrides.
async fn azure(server: &SimServer, body: String, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut all: Vec<(&str, &str)> = vec![
        ("Ocp-Apim-Subscription-Key", KEY),
        ("Content-Type", "application/ssml+xml"),
        ("X-Microsoft-OutputFormat", MULAW),
        ("User-Agent", "switchboard-tests"),
    ];
    for (name, value) in headers {
        all.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if !value.is_empty() {
            all.push((name, value));
        }
    }
    let client = reqwest::Client::builder()
        .user_agent("")
        .build()
        .expect("client");
    let mut request = client
        .post(format!("{}/cognitiveservices/v1", server.http_url()))
        .body(body);
    for (name, value) in all {
        request = request.header(name, value);
    }
    request.send().await.expect("request sent")
}

/// A valid request streams raw µ-law (chunked, no Content-Length) whose length is exactly
/// the deterministic speech for the text, and more text gives more audio.
#[tokio::test]
async fn azure_audio_follows_text() {
    let server = start(Config::default()).await;
    let short_text = "Thanks for calling.";
    let long_text = "Thanks for calling. How can I help you today? We are open every day.";
    let response = azure(&server, ssml(short_text), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert_eq!(response.headers()["content-type"], "audio/basic");
    assert!(response.headers().contains_key("x-requestid"));
    let short = response.bytes().await.expect("body");
    assert_eq!(short.len(), synth::speechlike(short_text).len());
    let long = azure(&server, ssml(long_text), &[])
        .await
        .bytes()
        .await
        .expect("body");
    assert!(
        long.len() > 2 * short.len(),
        "{} vs {}",
        long.len(),
        short.len()
    );
}

/// `riff-8khz-8bit-mono-mulaw` is a RIFF/WAVE file, format 7, 8 kHz mono, that parses back.
#[tokio::test]
async fn azure_riff_mulaw() {
    let server = start(Config::default()).await;
    let body = azure(
        &server,
        ssml("Hello."),
        &[("X-Microsoft-OutputFormat", "riff-8khz-8bit-mono-mulaw")],
    )
    .await
    .bytes()
    .await
    .expect("body");
    assert_eq!(&body[..4], b"RIFF");
    assert_eq!(&body[8..12], b"WAVE");
    assert_eq!(&body[20..22], &7u16.to_le_bytes());
    let (rate, channels, samples) = wav::parse(&body).expect("valid wav");
    assert_eq!(
        (rate, channels, samples.len()),
        (8_000, 1, synth::speechlike("Hello.").len())
    );
}

/// Each missing or wrong header gets Azure's status: key 401 (either auth header works),
/// Content-Type 415, output format 400, User-Agent 400; malformed SSML 400.
#[tokio::test]
async fn azure_header_statuses() {
    let server = start(Config::default()).await;
    let bearer = format!("Bearer {KEY}");
    type Case<'a> = (Vec<(&'a str, &'a str)>, String, u16);
    let cases: Vec<Case<'_>> = vec![
        (
            vec![("Ocp-Apim-Subscription-Key", "wrong")],
            ssml("hi"),
            401,
        ),
        (vec![("Ocp-Apim-Subscription-Key", "")], ssml("hi"), 401),
        (
            vec![
                ("Ocp-Apim-Subscription-Key", ""),
                ("Authorization", &bearer),
            ],
            ssml("hi"),
            200,
        ),
        (vec![("Content-Type", "text/plain")], ssml("hi"), 415),
        (vec![("Content-Type", "")], ssml("hi"), 415),
        (vec![("X-Microsoft-OutputFormat", "")], ssml("hi"), 400),
        (
            vec![(
                "X-Microsoft-OutputFormat",
                "audio-16khz-32kbitrate-mono-mp3",
            )],
            ssml("hi"),
            400,
        ),
        (vec![("User-Agent", "")], ssml("hi"), 400),
        (vec![], "<speak><voice name='x'>unclosed".to_owned(), 400),
        (vec![], "<speak>no voice</speak>".to_owned(), 400),
    ];
    for (headers, body, status) in cases {
        let response = azure(&server, body.clone(), &headers).await;
        assert_eq!(response.status().as_u16(), status, "{headers:?} {body}");
    }
}

/// Deepgram's `/v1/speak` face: Token auth, raw µ-law at 8 kHz with container=none, a WAV
/// by default, 400 with `dg-error` for an encoding it does not produce.
#[tokio::test]
async fn deepgram_speak_face() {
    let server = start(Config::default()).await;
    let client = reqwest::Client::new();
    let url = |query: &str| format!("{}/v1/speak?{query}", server.http_url());
    let text = "Your table is booked.";
    let raw = client
        .post(url(
            "model=aura-2-thalia-en&encoding=mulaw&sample_rate=8000&container=none",
        ))
        .header("Authorization", format!("Token {KEY}"))
        .json(&json!({ "text": text }))
        .send()
        .await
        .expect("sent");
    assert_eq!(raw.status(), 200);
    assert_eq!(
        raw.bytes().await.expect("body").len(),
        synth::speechlike(text).len()
    );
    let wav_body = client
        .post(url("encoding=mulaw"))
        .header("Authorization", format!("Token {KEY}"))
        .json(&json!({ "text": text }))
        .send()
        .await
        .expect("sent");
    assert_eq!(&wav_body.bytes().await.expect("body")[..4], b"RIFF");
    let refused = client
        .post(url("encoding=mulaw"))
        .header("Authorization", "Token nope")
        .json(&json!({ "text": text }))
        .send()
        .await
        .expect("sent");
    assert_eq!(refused.status(), 401);
    let mp3 = client
        .post(url("encoding=mp3"))
        .header("Authorization", format!("Token {KEY}"))
        .json(&json!({ "text": text }))
        .send()
        .await
        .expect("sent");
    assert_eq!(mp3.status(), 400);
    assert!(mp3.headers().contains_key("dg-error"));
    let body: Value = mp3.json().await.expect("json");
    assert!(body["err_msg"].as_str().is_some());
}

/// OpenAI's `/v1/audio/speech` face: `pcm` is headerless 24 kHz s16le (3 × the 8 kHz
/// samples, 2 bytes each); mp3 and a missing voice are 400s in the OpenAI envelope.
#[tokio::test]
async fn openai_speech_face() {
    let server = start(Config::default()).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/audio/speech", server.http_url());
    let text = "Thanks for calling.";
    let body = json!({ "model": "gpt-4o-mini-tts", "input": text, "voice": "alloy", "response_format": "pcm" });
    let pcm = client
        .post(&url)
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(pcm.status(), 200);
    assert_eq!(
        pcm.bytes().await.expect("body").len(),
        synth::speechlike(text).len() * 3 * 2
    );
    for bad in [
        json!({ "model": "tts-1", "input": text, "voice": "alloy" }),
        json!({ "model": "tts-1", "input": text, "response_format": "pcm" }),
    ] {
        let response = client
            .post(&url)
            .bearer_auth(KEY)
            .json(&bad)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 400, "{bad}");
        let envelope: Value = response.json().await.expect("json");
        assert_eq!(envelope["error"]["type"], "invalid_request_error");
    }
}

/// Injected faults answer valid requests with 429 (+ retry-after) at share 1.0, and the
/// request counter at /sim/stats sees every request, so a test can prove a cache hit
/// never reached the provider.
#[tokio::test]
async fn faults_and_counter() {
    let faults = Faults {
        rate_limit_share: 1.0,
        retry_after_secs: 4,
        ..Faults::default()
    };
    let server = start(Config {
        faults,
        ..Config::default()
    })
    .await;
    let response = azure(&server, ssml("hi"), &[]).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "4");

    let server = start(Config::default()).await;
    let stats_url = format!("{}/sim/stats", server.http_url());
    let stats: Value = reqwest::get(&stats_url)
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["requests"], 0);
    azure(&server, ssml("one"), &[])
        .await
        .bytes()
        .await
        .expect("body");
    azure(&server, ssml("two"), &[("User-Agent", "")])
        .await
        .bytes()
        .await
        .expect("body");
    let stats: Value = reqwest::get(&stats_url)
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            stats["requests"].as_u64(),
            stats["azure"].as_u64(),
            stats["errors"].as_u64()
        ),
        (Some(2), Some(2), Some(1))
    );
}

/// With espeak-ng installed and determinism off, the audio is real speech: longer than the
/// silence around it and different from the speech-like signal.
#[tokio::test]
async fn espeak_speech_when_available() {
    if !synth::espeak_available() {
        return;
    }
    let server = tts::spawn(Config {
        deterministic: false,
        ..Config::default()
    })
    .await
    .expect("binds");
    let text = "Thanks for calling.";
    let body = azure(&server, ssml(text), &[("Ocp-Apim-Subscription-Key", "any")])
        .await
        .bytes()
        .await
        .expect("body");
    assert!(body.len() > 4_000, "{}", body.len());
    assert_ne!(body.len(), synth::speechlike(text).len());
}
