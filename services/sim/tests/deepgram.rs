//! The Deepgram live-STT stand-in over a real WebSocket (tokio-tungstenite): the handshake's
//! auth and query checks, the speech → results flow driven by generated µ-law audio, the
//! control messages, and the idle timeout. State: one stand-in per test on a free port.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use sb_audio::{mulaw, synth};
use sb_sim::SimServer;
use sb_sim::deepgram::{self, Config};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const KEY: &str = "dg-test-key";
const LIVE: &str = "model=nova-3&encoding=mulaw&sample_rate=8000&channels=1&interim_results=true\
                    &endpointing=300&vad_events=true&utterance_end_ms=1000&smart_format=true&punctuate=true";
/// Generous bound on any single wait; a healthy run takes milliseconds.
const WAIT: Duration = Duration::from_secs(5);

async fn start(config: Config) -> SimServer {
    deepgram::spawn(Config {
        api_key: Some(KEY.into()),
        ..config
    })
    .await
    .expect("stand-in binds")
}

async fn connect(
    server: &SimServer,
    query: &str,
    auth: &str,
) -> Result<(Socket, http::HeaderMap), WsError> {
    let mut request = format!("{}/v1/listen?{query}", server.ws_url()).into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", auth.parse().expect("header value"));
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    Ok((socket, response.headers().clone()))
}

async fn open(server: &SimServer, query: &str) -> Socket {
    connect(server, query, &format!("Token {KEY}"))
        .await
        .expect("handshake accepted")
        .0
}

/// Sends PCM as µ-law in 20 ms binary frames.
async fn send_audio(socket: &mut Socket, pcm: &[i16]) {
    for frame in mulaw::encode_slice(pcm).chunks(160) {
        socket
            .send(Message::Binary(frame.to_vec().into()))
            .await
            .expect("send audio");
    }
}

async fn send_text(socket: &mut Socket, text: &str) {
    socket
        .send(Message::Text(text.into()))
        .await
        .expect("send text");
}

/// The next frame (text parsed as JSON), failing the test after `WAIT`.
async fn next(socket: &mut Socket) -> Message {
    tokio::time::timeout(WAIT, socket.next())
        .await
        .expect("a frame in time")
        .expect("stream open")
        .expect("frame ok")
}

async fn next_json(socket: &mut Socket) -> Value {
    match next(socket).await {
        Message::Text(text) => serde_json::from_str(text.as_str()).expect("JSON text frame"),
        other => panic!("expected a JSON text frame, got {other:?}"),
    }
}

fn kind(message: &Value) -> String {
    match message["type"].as_str() {
        Some("Results") if message["speech_final"] == true => "final+speech_final".into(),
        Some("Results") if message["is_final"] == true => "final".into(),
        Some("Results") => "interim".into(),
        other => other.unwrap_or("?").into(),
    }
}

fn transcript(message: &Value) -> &str {
    message["channel"]["alternatives"][0]["transcript"]
        .as_str()
        .unwrap_or("?")
}

/// The production query over a real socket: SpeechStarted, interims that grow, a
/// speech_final carrying the scripted line, UtteranceEnd; then CloseStream answers with
/// Metadata and a 1000 close. The handshake carries `dg-request-id`, echoed in results.
#[tokio::test]
async fn speech_flow_then_close_stream() {
    let server = start(Config {
        script: vec!["I'd like to book a table for two.".into()],
        // Deepgram's own flow, without the stand-in's whole-line interim at a pause.
        pause_interim_ms: 0,
        ..Config::default()
    })
    .await;
    let (mut socket, headers) = connect(&server, LIVE, &format!("Token {KEY}"))
        .await
        .expect("accepted");
    let request_id = headers
        .get("dg-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("dg-request-id")
        .to_owned();

    let mut audio = synth::silence(300);
    audio.extend(synth::tone(2_200, 300.0, 8_000));
    audio.extend(synth::silence(1_500));
    send_audio(&mut socket, &audio).await;

    let mut seen = Vec::new();
    loop {
        let message = next_json(&mut socket).await;
        seen.push(message.clone());
        if message["type"] == "UtteranceEnd" {
            break;
        }
    }
    let kinds: Vec<String> = seen.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "SpeechStarted",
            "interim",
            "interim",
            "final+speech_final",
            "UtteranceEnd"
        ]
    );
    assert_eq!(seen[0]["timestamp"], 0.3);
    assert!(
        transcript(&seen[2]).starts_with(transcript(&seen[1]))
            && transcript(&seen[1]).len() < transcript(&seen[2]).len()
    );
    assert_eq!(transcript(&seen[3]), "I'd like to book a table for two.");
    assert_eq!(seen[3]["metadata"]["request_id"], request_id.as_str());
    assert_eq!(seen[4]["last_word_end"], 2.5);

    send_text(&mut socket, r#"{"type":"CloseStream"}"#).await;
    let metadata = next_json(&mut socket).await;
    assert_eq!(metadata["type"], "Metadata");
    assert_eq!(metadata["duration"], 4.0);
    match next(&mut socket).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected close 1000, got {other:?}"),
    }
}

/// KeepAlive gets no reply (the next message is Finalize's answer); Finalize answers at
/// once with the buffered utterance marked from_finalize; garbage gets a SchemaError and
/// the stream stays usable.
#[tokio::test]
async fn keep_alive_finalize_and_garbage() {
    let server = start(Config {
        script: vec!["Hello there.".into()],
        ..Config::default()
    })
    .await;
    let mut socket = open(&server, "encoding=mulaw&sample_rate=8000&endpointing=500").await;
    send_audio(&mut socket, &synth::tone(400, 440.0, 8_000)).await;
    send_text(&mut socket, r#"{"type":"KeepAlive"}"#).await;
    send_text(&mut socket, r#"{"type":"Finalize"}"#).await;
    let flushed = next_json(&mut socket).await;
    assert_eq!(
        (kind(&flushed).as_str(), flushed["from_finalize"].as_bool()),
        ("final", Some(true))
    );
    assert_eq!(transcript(&flushed), "hello there");
    send_text(&mut socket, "{not json").await;
    let error = next_json(&mut socket).await;
    assert_eq!(
        (error["type"].as_str(), error["variant"].as_str()),
        (Some("Error"), Some("SchemaError"))
    );
    send_text(&mut socket, r#"{"type":"CloseStream"}"#).await;
    assert_eq!(next_json(&mut socket).await["type"], "Metadata");
}

/// An empty binary frame closes the stream like CloseStream: Metadata, then 1000.
#[tokio::test]
async fn empty_binary_frame_closes() {
    let server = start(Config::default()).await;
    let mut socket = open(&server, LIVE).await;
    send_audio(&mut socket, &synth::silence(200)).await;
    socket
        .send(Message::Binary(Vec::new().into()))
        .await
        .expect("send");
    assert_eq!(next_json(&mut socket).await["type"], "Metadata");
    assert!(
        matches!(next(&mut socket).await, Message::Close(Some(frame)) if frame.code == CloseCode::Normal)
    );
}

/// With no frame for the idle timeout, the server closes 1011 with reason NET-0001.
#[tokio::test]
async fn idle_stream_closes_net_0001() {
    let server = start(Config {
        idle_timeout_ms: 200,
        ..Config::default()
    })
    .await;
    let mut socket = open(&server, LIVE).await;
    match next(&mut socket).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1011);
            assert_eq!(frame.reason.as_str(), "NET-0001");
        }
        other => panic!("expected close 1011, got {other:?}"),
    }
}

/// A wrong key is refused 401 and an undecodable encoding 400, each with `dg-error`; a
/// `Bearer` token and `sim_script` are accepted, the script overriding the server's.
#[tokio::test]
async fn handshake_refusals_and_overrides() {
    let server = start(Config {
        script: vec!["server line".into()],
        ..Config::default()
    })
    .await;
    for (query, auth, status) in [
        (LIVE, "Token wrong", 401),
        (LIVE, "", 401),
        (
            "encoding=opus&sample_rate=48000",
            &*format!("Token {KEY}"),
            400,
        ),
        ("encoding=mulaw", &*format!("Token {KEY}"), 400),
    ] {
        match connect(&server, query, auth).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{query} / {auth}");
                assert!(
                    response.headers().contains_key("dg-error"),
                    "dg-error on {status}"
                );
            }
            other => panic!(
                "{query} / {auth}: expected HTTP {status}, got {:?}",
                other.map(|_| "accepted")
            ),
        }
    }
    let query = "encoding=mulaw&sample_rate=8000&endpointing=200&sim_script=per%20connection";
    let (mut socket, _) = connect(&server, query, &format!("Bearer {KEY}"))
        .await
        .expect("bearer accepted");
    let mut audio = synth::tone(300, 440.0, 8_000);
    audio.extend(synth::silence(300));
    send_audio(&mut socket, &audio).await;
    assert_eq!(transcript(&next_json(&mut socket).await), "per connection");
}

/// `/sim/stats` counts connections and audio bytes.
#[tokio::test]
async fn stats_count_connections() {
    let server = start(Config::default()).await;
    let mut socket = open(&server, LIVE).await;
    send_audio(&mut socket, &synth::silence(100)).await;
    send_text(&mut socket, r#"{"type":"CloseStream"}"#).await;
    assert_eq!(next_json(&mut socket).await["type"], "Metadata");
    let stats: Value = reqwest::get(format!("{}/sim/stats", server.http_url()))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["audio_bytes"], 800);
}

/// A Hindi stream (`language=hi`): interims carry whole Devanagari words of the scripted
/// line, growing; the final carries the line exactly, its `word`s with their vowel signs;
/// `/sim/stats` counts the connection under `hi`. An English-only model refuses Hindi with
/// Deepgram's 400.
#[tokio::test]
async fn hindi_stream_keeps_devanagari() {
    let line = "मुझे कल सुबह दस बजे की बुकिंग चाहिए।";
    let server = start(Config {
        script: vec![line.into()],
        ..Config::default()
    })
    .await;
    let mut socket = open(&server, &format!("{LIVE}&language=hi")).await;
    let mut audio = synth::silence(300);
    audio.extend(synth::tone(2_200, 300.0, 8_000));
    audio.extend(synth::silence(1_500));
    send_audio(&mut socket, &audio).await;
    let mut results = Vec::new();
    loop {
        let message = next_json(&mut socket).await;
        if message["type"] == "UtteranceEnd" {
            break;
        }
        if message["type"] == "Results" {
            results.push(message);
        }
    }
    let (last, interims) = results.split_last().expect("results");
    assert_eq!(kind(last), "final+speech_final");
    assert_eq!(transcript(last), line);
    let words: Vec<&str> = last["channel"]["alternatives"][0]["words"]
        .as_array()
        .expect("words")
        .iter()
        .filter_map(|w| w["word"].as_str())
        .collect();
    assert_eq!(
        words,
        ["मुझे", "कल", "सुबह", "दस", "बजे", "की", "बुकिंग", "चाहिए"]
    );
    assert!(!interims.is_empty());
    for interim in interims {
        let heard = transcript(interim);
        assert!(
            line == heard || (line.starts_with(heard) && line[heard.len()..].starts_with(' ')),
            "{heard:?} is whole words of the line"
        );
    }
    send_text(&mut socket, r#"{"type":"CloseStream"}"#).await;
    assert_eq!(next_json(&mut socket).await["type"], "Metadata");
    let stats: Value = reqwest::get(format!("{}/sim/stats", server.http_url()))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["languages"], serde_json::json!({ "hi": 1 }));

    let phonecall = "model=nova-2-phonecall&language=hi&encoding=mulaw&sample_rate=8000";
    match connect(&server, phonecall, &format!("Token {KEY}")).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 400);
            let reason = response.headers().get("dg-error").expect("dg-error");
            assert_eq!(reason, "No such model/language/tier combination found.");
        }
        other => panic!("expected a 400, got {:?}", other.map(|_| "accepted")),
    }
}
