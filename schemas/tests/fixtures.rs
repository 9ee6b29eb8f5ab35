//! Golden fixtures: the consumer-driven contract of the event encoding.
//!
//! For every body kind, `fixtures/{kind}.msgpack` holds the exact bytes this version
//! writes and `fixtures/{kind}.json` a readable rendering. The test fails when an existing
//! fixture's encoding changes (a breaking change: bump `SCHEMA_VERSION` and keep a reader
//! for the old version), and when a fixture no longer decodes to the same event. New
//! fixtures are written only with `SB_BLESS=1`.

#![allow(clippy::unwrap_used)] // test code

use std::{collections::BTreeMap, path::PathBuf};

use bytes::Bytes;
use sb_schemas::*;
use uuid::Uuid;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// One fixed, fully populated event of every kind.
fn samples() -> Vec<Envelope> {
    let tenant = TenantId::parse("acme").unwrap();
    let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
    let mulaw = |n: u8| {
        Mulaw(Bytes::from(
            (0..n).map(|i| i.wrapping_mul(37)).collect::<Vec<u8>>(),
        ))
    };
    let bodies = vec![
        Body::Webhook(Webhook {
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            from: "+14155551234".into(),
            to: "+15005550006".into(),
            direction: "inbound".into(),
            call_status: "ringing".into(),
            attempt: None,
        }),
        Body::Start(Start {
            stream_sid: "MZ0123456789abcdef0123456789abcdef".into(),
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            from: "+14155551234".into(),
            to: "+15005550006".into(),
            custom_parameters: BTreeMap::from([("tenant".into(), "acme".into())]),
        }),
        Body::Audio(Audio {
            seq: 42,
            timestamp_ms: 840,
            payload: mulaw(16),
        }),
        Body::Dtmf(Dtmf { digit: "7".into() }),
        Body::Speech(Speech {
            epoch: 1,
            offset_ms: 1520,
        }),
        Body::Partial(Partial {
            epoch: 1,
            text: "what are your".into(),
        }),
        Body::Transcript(Transcript {
            epoch: 1,
            text: "What are your opening hours?".into(),
            confidence: 0.875,
            audio_seq: 180,
            speech_ended_at: 1_763_856_000_123_456,
        }),
        Body::Token(Token {
            index: 3,
            text: " open".into(),
        }),
        Body::Sentence(Sentence {
            index: 0,
            text: "We're open nine to five.".into(),
            last: false,
            fallback: false,
        }),
        Body::TtsChunk(TtsChunk {
            sentence: 0,
            chunk: 2,
            last: true,
            turn_last: false,
            payload: mulaw(8),
        }),
        Body::BargeIn(BargeIn {
            token: 2,
            trigger: BargeInTrigger::Words,
            sentences_heard: 1,
            cut: None,
        }),
        Body::Played(Played {
            sentence: 0,
            mark: "t1-s0".into(),
        }),
        Body::End(End {
            reason: EndReason::Completed,
        }),
        Body::Dial(Dial {
            attempt: "0123456789abcdef0123456789abcdef".into(),
            campaign: "spring".into(),
            contact: "15005550123".into(),
            to: "+15005550123".into(),
            from: "+15005550006".into(),
            attempt_number: 1,
        }),
        Body::AnsweredBy(AnsweredBy {
            attempt: "0123456789abcdef0123456789abcdef".into(),
            answered_by: "machine_end_beep".into(),
            machine: true,
            voicemail: "Hi Ann, please call us back.".into(),
        }),
        Body::DialResult(DialResult {
            attempt: "0123456789abcdef0123456789abcdef".into(),
            campaign: "spring".into(),
            contact: "15005550123".into(),
            outcome: "busy".into(),
            attempts: 1,
            decision: "retry".into(),
            retry_at_ms: 1_763_857_800_000,
        }),
        Body::ToolCall(ToolCall {
            id: "call_4Fz0k2".into(),
            name: "book_table".into(),
            arguments: r#"{"day":"friday","people":2}"#.into(),
            round: 0,
        }),
        Body::ToolResult(ToolResult {
            id: "call_4Fz0k2".into(),
            name: "book_table".into(),
            outcome: ToolOutcome::Ok,
            status: 200,
            result: r#"{"slot":"Friday at 7 pm"}"#.into(),
            attempts: 1,
            elapsed_ms: 84,
        }),
        Body::Erased(Erased {
            by: "dpo@acme.example".into(),
            removed: BTreeMap::from([
                ("AUDIO".into(), 1500),
                ("CALLS".into(), 42),
                ("DLQ".into(), 1),
                ("STT_ASSIGN".into(), 0),
            ]),
        }),
        Body::Resumed(Resumed {
            sentence: 1,
            offset_ms: 740,
            paused_ms: 1820,
        }),
        Body::Keypad(Keypad {
            digits: "4417".into(),
            ended_by: KeypadEnd::Terminator,
        }),
        Body::Silence(Silence {
            count: 1,
            after_ms: 8000,
        }),
        Body::MaxDuration(MaxDuration { limit_secs: 600 }),
        Body::Preflight(Preflight {
            epoch: 1,
            text: "What are your opening hours".into(),
        }),
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| Envelope {
            v: SCHEMA_VERSION,
            id: Uuid::from_u128(0x0193_2a6e_3c00_7000_8000_0000_0000_0000 + i as u128),
            tenant: tenant.clone(),
            call_sid: sid.clone(),
            turn: 1,
            at: 1_763_856_000_000_000 + i as u64,
            body,
        })
        .collect()
}

#[test]
fn every_kind_has_a_sample() {
    let kinds: Vec<Kind> = samples().iter().map(Envelope::kind).collect();
    assert_eq!(kinds, Kind::ALL);
}

#[test]
fn fixtures_match_the_encoding() {
    let bless = std::env::var("SB_BLESS").is_ok_and(|v| v == "1");
    let mut missing = Vec::new();
    for event in samples() {
        let name = event.kind().as_str();
        let bytes = encode(&event);
        let json = serde_json::to_string_pretty(&event).unwrap() + "\n";
        let (bin_path, json_path) = (
            fixture_dir().join(format!("{name}.msgpack")),
            fixture_dir().join(format!("{name}.json")),
        );
        match std::fs::read(&bin_path) {
            Ok(golden) => {
                assert_eq!(
                    golden, bytes,
                    "the encoding of `{name}` changed: that breaks existing readers. Bump \
                     SCHEMA_VERSION, keep a reader for the old version, then re-bless"
                );
                assert_eq!(
                    decode(&golden).unwrap(),
                    event,
                    "fixtures/{name}.msgpack decodes differently"
                );
                let golden_json = std::fs::read_to_string(&json_path).unwrap();
                assert_eq!(golden_json, json, "fixtures/{name}.json is stale");
            }
            Err(_) if bless => {
                std::fs::create_dir_all(fixture_dir()).unwrap();
                std::fs::write(&bin_path, &bytes).unwrap();
                std::fs::write(&json_path, &json).unwrap();
            }
            Err(_) => missing.push(name),
        }
    }
    assert!(
        missing.is_empty(),
        "no fixture for {missing:?}: run with SB_BLESS=1 and commit them"
    );
}

/// The JSON rendering reads back to the same event (audio as base64).
#[test]
fn json_rendering_round_trips() {
    for event in samples() {
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), event);
    }
}
