//! Ring 2: the Deepgram client against the protocol-faithful stand-in (`sb_sim::deepgram`):
//! the query and auth it sends, the events it reports, KeepAlive, Finalize/CloseStream and
//! how a dropped stream ends.

use std::time::Duration;

use sb_sim::deepgram;
use sb_stt::provider::{Closed, SttResult};
use sb_stt::{Deepgram, SpeechToText, StreamOptions, SttCommand, SttConfig, SttError, SttEvent};

const WAIT: Duration = Duration::from_secs(10);

async fn sim(config: deepgram::Config) -> sb_sim::SimServer {
    deepgram::spawn(config).await.expect("the stand-in starts")
}

fn client(server: &sb_sim::SimServer, key: &str, keepalive_ms: u64) -> Deepgram {
    let mut config = SttConfig::for_tests(&server.ws_url(), Some(key)).deepgram;
    config.keepalive_ms = keepalive_ms;
    Deepgram::new(&config).expect("valid settings")
}

fn options() -> StreamOptions {
    StreamOptions::english(300)
}

/// µ-law frames of silence, speech-like audio of `text`, silence.
fn utterance(text: &str) -> Vec<Vec<u8>> {
    let mut pcm = sb_audio::synth::silence(300);
    pcm.extend(sb_audio::synth::speechlike(text));
    pcm.extend(sb_audio::synth::silence(800));
    sb_audio::mulaw::encode_slice(&pcm)
        .chunks(sb_audio::FRAME_BYTES)
        .map(<[u8]>::to_vec)
        .collect()
}

async fn next(events: &mut tokio::sync::mpsc::Receiver<SttEvent>) -> SttEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the stream reports Closed before it ends")
}

/// Audio in, VAD and results out: SpeechStarted, interims, a speech_final with the words;
/// Finalize + CloseStream then end the stream normally.
#[tokio::test]
async fn streams_audio_and_closes_normally() {
    let server = sim(deepgram::Config {
        api_key: Some("right-key".into()),
        script: vec!["Book a table for two, please.".into()],
        ..Default::default()
    })
    .await;
    let stt = client(&server, "right-key", 4_000);
    let mut stream = stt.open(&options()).await.expect("the stream opens");
    for frame in utterance("Book a table for two, please.") {
        stream
            .commands
            .send(SttCommand::Audio(frame.into()))
            .await
            .unwrap();
    }
    // An empty frame would close a real Deepgram stream: the client never sends one.
    stream
        .commands
        .send(SttCommand::Audio(Default::default()))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let last = loop {
        match next(&mut stream.events).await {
            SttEvent::Result(result) if result.speech_final => break result,
            event => seen.push(event),
        }
    };
    assert_eq!(last.transcript, "Book a table for two, please.");
    assert!(last.is_final && last.last_word_end_ms.is_some_and(|end| end <= last.end_ms));
    assert!(
        matches!(seen.first(), Some(SttEvent::SpeechStarted { at_ms }) if (280..=400).contains(at_ms)),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| matches!(
            e,
            SttEvent::Result(SttResult {
                is_final: false,
                ..
            })
        )),
        "an interim result: {seen:?}"
    );
    stream.commands.send(SttCommand::Finalize).await.unwrap();
    stream.commands.send(SttCommand::Close).await.unwrap();
    let closed = loop {
        if let SttEvent::Closed(closed) = next(&mut stream.events).await {
            break closed;
        }
    };
    assert_eq!(closed, Closed::Normal);
}

/// A Hindi tenant's stream: the client asks for `language=hi` (the stand-in counts it) and
/// every result, interim and final, carries the Devanagari words intact.
#[tokio::test]
async fn a_hindi_stream_carries_devanagari() {
    let line = "आपका दफ़्तर कब खुलता है?";
    let server = sim(deepgram::Config {
        script: vec![line.into()],
        ..Default::default()
    })
    .await;
    let stt = client(&server, "k", 4_000);
    let hindi = StreamOptions {
        language: "hi".into(),
        ..options()
    };
    let mut stream = stt.open(&hindi).await.expect("the stream opens");
    for frame in utterance(line) {
        stream
            .commands
            .send(SttCommand::Audio(frame.into()))
            .await
            .unwrap();
    }
    let mut interims = Vec::new();
    let last = loop {
        match next(&mut stream.events).await {
            SttEvent::Result(result) if result.speech_final => break result,
            SttEvent::Result(result) => interims.push(result.transcript),
            _ => {}
        }
    };
    assert_eq!(last.transcript, line);
    assert!(
        interims.iter().all(|t| line.starts_with(t.as_str())),
        "{interims:?}"
    );
    let stats: serde_json::Value = reqwest::get(format!("{}/sim/stats", server.http_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["languages"]["hi"], 1, "{stats}");
}

/// A wrong key is refused at the handshake, with Deepgram's reason.
#[tokio::test]
async fn a_wrong_key_is_refused() {
    let server = sim(deepgram::Config {
        api_key: Some("right-key".into()),
        ..Default::default()
    })
    .await;
    match client(&server, "wrong-key", 4_000).open(&options()).await {
        Err(SttError::Refused { status, reason }) => {
            assert_eq!(status, 401);
            assert!(reason.contains("Invalid credentials"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// While no audio flows, KeepAlive holds the stream open past the provider's idle
/// timeout; without it (a keep-alive interval longer than that timeout) the provider
/// closes with 1011 and the client reports the stream dropped.
#[tokio::test]
async fn keepalive_holds_an_idle_stream_open() {
    let server = sim(deepgram::Config {
        idle_timeout_ms: 1_500,
        ..Default::default()
    })
    .await;
    let mut kept = client(&server, "k", 1_000).open(&options()).await.unwrap();
    let mut starved = client(&server, "k", 4_000).open(&options()).await.unwrap();
    match next(&mut starved.events).await {
        SttEvent::Closed(Closed::Dropped { kind, detail }) => {
            assert_eq!(kind, "closed");
            assert!(detail.contains("1011"), "{detail}");
        }
        other => panic!("expected a drop, got {other:?}"),
    }
    // The kept stream saw the same idle period (and more) and is still up.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), kept.events.recv())
            .await
            .is_err(),
        "the kept-alive stream reported something"
    );
    kept.commands.send(SttCommand::Close).await.unwrap();
    loop {
        if let SttEvent::Closed(closed) = next(&mut kept.events).await {
            assert_eq!(closed, Closed::Normal);
            break;
        }
    }
}
