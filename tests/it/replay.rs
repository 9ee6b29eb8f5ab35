//! The replay tool reads one call back from both streams: every event, in order, and only
//! that call's; prints it as JSON lines; and follows a live call as it happens. Export and
//! import: `replay_export.rs`.

pub(crate) mod rig;

use std::{collections::HashSet, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use sb_replay::{CallLog, latency, timeline, wav};
use sb_runtime::Publisher;
use sb_schemas::roles::Role;
use sb_schemas::testing::{sid, tenant};
use sb_schemas::*;
use sb_tests::{TestEnv, eventually};

use rig::{BOT_CHUNK_BYTES, CONTROL_KINDS, Output, json_lines, kinds, record_call, replay};

fn event(call: u128, turn: u32, at: u64, body: Body) -> Envelope {
    let mut e = Envelope::new(tenant(), sid(call), turn, body);
    e.at = at;
    e
}

/// A scripted call (greeting, one question, one answer) is read back whole: the other
/// call's events are not mixed in, the order follows producer time, the waterfall has the
/// answer's latency and the WAV holds both tracks.
#[tokio::test]
async fn a_call_is_read_back_whole_and_in_order() {
    let env = TestEnv::start().await.unwrap();
    let publisher = Publisher::new(env.js.clone());
    let t0 = 1_800_000_000_000_000u64;
    let ms = |n: u64| t0 + n * 1000;
    let sentence = |i: u32, text: &str, last: bool| {
        Body::Sentence(Sentence {
            index: i,
            text: text.into(),
            last,
            fallback: false,
        })
    };
    let chunk = |s: u32, c: u32, last: bool| {
        Body::TtsChunk(TtsChunk {
            sentence: s,
            chunk: c,
            last,
            turn_last: false,
            payload: Mulaw(Bytes::from(vec![0x80u8; 800])),
        })
    };
    let mut events = vec![
        event(
            1,
            0,
            ms(0),
            Body::Start(Start {
                stream_sid: "MZ1".into(),
                account_sid: "AC1".into(),
                from: "+14155551234".into(),
                to: "+15005550006".into(),
                custom_parameters: Default::default(),
            }),
        ),
        event(1, 0, ms(40), sentence(0, "Hi, how can I help?", true)),
        event(1, 0, ms(60), chunk(0, 0, true)),
        event(
            1,
            1,
            ms(2300),
            Body::Transcript(Transcript {
                epoch: 1,
                text: "When are you open?".into(),
                confidence: 0.9,
                audio_seq: 100,
                speech_ended_at: ms(2000),
            }),
        ),
        event(
            1,
            1,
            ms(2500),
            Body::Token(Token {
                index: 0,
                text: "Nine".into(),
            }),
        ),
        event(1, 1, ms(2600), sentence(0, "Nine to five.", true)),
        event(1, 1, ms(2700), chunk(0, 0, true)),
        event(
            1,
            1,
            ms(4000),
            Body::End(End {
                reason: EndReason::Stop,
            }),
        ),
    ];
    for seq in 0..150u64 {
        events.push(event(
            1,
            0,
            ms(seq * 20),
            Body::Audio(Audio {
                seq,
                timestamp_ms: seq * 20,
                payload: Mulaw(Bytes::from(vec![0xFFu8; 160])),
            }),
        ));
    }
    events.push(event(2, 1, ms(10), Body::Dtmf(Dtmf { digit: "9".into() })));
    for e in &events {
        publisher.publish(e).await.unwrap();
    }

    let log = CallLog::load(&env.js, &sid(1)).await.unwrap();
    assert_eq!(
        log.events.len(),
        events.len() - 1,
        "call 2's event is not included"
    );
    assert!(
        log.events
            .windows(2)
            .all(|w| w[0].event.at <= w[1].event.at),
        "ordered by time"
    );
    let text = timeline::render(&log, timeline::Detail::Full);
    assert!(text.contains("“When are you open?”"), "{text}");
    // Caller audio is folded into runs between control events; together they hold all 150 frames.
    let caller_frames: usize = text
        .lines()
        .filter(|l| l.contains(" caller ") && !l.starts_with("audio:"))
        .map(|l| {
            l.split_whitespace()
                .nth(3)
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(caller_frames, 150, "{text}");
    assert!(!text.contains("digit 9"), "{text}");
    assert!(
        text.contains("\"Nine\""),
        "the full timeline shows tokens: {text}"
    );
    let summary = timeline::render(&log, timeline::Detail::Summary);
    assert!(
        !summary.contains("\"Nine\"") && summary.contains("Nine to five."),
        "{summary}"
    );

    let turns = latency::turns(&log);
    assert_eq!(turns.iter().map(|t| t.turn).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(turns[0].total_ms(), Some(60.0));
    assert_eq!(turns[1].total_ms(), Some(700.0));

    let bytes = wav::render(&log);
    let (rate, channels, samples) = sb_audio::wav::parse(&bytes).unwrap();
    assert_eq!((rate, channels), (8000, 2));
    assert!(samples.len() / 2 >= 3 * 8000, "at least the caller's 3 s");

    assert!(
        CallLog::load(&env.js, &sid(3)).await.is_err(),
        "an unknown call is an error"
    );
}

/// `show --json` of a call recorded through the real ingress: one JSON object per line with
/// the documented fields; the control events in the order they happened; every caller
/// frame and both bot chunks as audio lines with their byte length; payloads in base64
/// only with `--full`.
#[tokio::test]
async fn json_lines_hold_every_event_in_order() {
    let env = TestEnv::start().await.unwrap();
    let call = record_call(&env, &rig::new_call(), async {}).await;
    let sid = call.sid.as_str();
    let lines = json_lines(
        &replay(&env, Role::Replay, &["show", sid, "--json"])
            .await
            .unwrap(),
    );

    let control: Vec<&str> = kinds(&lines)
        .into_iter()
        .filter(|k| !["audio", "tts_chunk"].contains(k))
        .collect();
    assert_eq!(control, CONTROL_KINDS);
    for line in &lines {
        for field in [
            "stream", "seq", "id", "tenant", "call_sid", "turn", "at", "kind", "body",
        ] {
            assert!(line.get(field).is_some(), "no {field}: {line}");
        }
        assert_eq!(line["call_sid"], sid);
        assert_eq!(line["tenant"], "acme");
        let audio = ["audio", "tts_chunk"].contains(&line["kind"].as_str().unwrap());
        assert_eq!(
            line["stream"],
            if audio { "AUDIO" } else { "CALLS" },
            "{line}"
        );
        assert!(line["body"].get("payload_base64").is_none(), "{line}");
    }
    let ats: Vec<u64> = lines.iter().map(|l| l["at"].as_u64().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "ordered by time");
    let ids: HashSet<&str> = lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), lines.len(), "each event once");
    let bytes = |kind: &str| -> Vec<u64> {
        lines
            .iter()
            .filter(|l| l["kind"] == kind)
            .map(|l| l["body"]["payload_bytes"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        bytes("audio").iter().sum::<u64>(),
        call.report.frames_sent * 160,
        "every caller frame"
    );
    assert_eq!(bytes("tts_chunk"), [BOT_CHUNK_BYTES as u64; 2]);
    let sentence = lines.iter().find(|l| l["kind"] == "sentence").unwrap();
    assert_eq!(sentence["body"]["text"], "Hello, how can I help?");

    let full = json_lines(
        &replay(&env, Role::Replay, &["show", sid, "--json", "--full"])
            .await
            .unwrap(),
    );
    assert_eq!(kinds(&full), kinds(&lines));
    let chunk = full.iter().find(|l| l["kind"] == "tts_chunk").unwrap();
    let b64 = chunk["body"]["payload_base64"].as_str().unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(payload, vec![0x20; BOT_CHUNK_BYTES]);
}

/// `show --follow` started before a call prints it while it happens and stops by itself at
/// its `end`: the bot only answers (and so the caller only hangs up) once both followers
/// have printed the call's `start`. The text follower prints the control events in order,
/// `end` last; the `--json --audio` follower prints exactly the events `show --json` reads
/// afterwards, audio included.
#[tokio::test]
async fn follow_prints_a_live_call_and_stops_at_its_end() {
    let env = TestEnv::start().await.unwrap();
    let sid = rig::new_call();
    let (text, json) = (Output::default(), Output::default());
    let text_kind = |line: &str| line.split_whitespace().nth(2).map(str::to_owned);
    let gate = {
        let (text, json) = (text.clone(), json.clone());
        async move {
            eventually(
                "both followers print the start",
                Duration::from_secs(10),
                || {
                    let started = text
                        .lines()
                        .iter()
                        .any(|l| text_kind(l).as_deref() == Some("start"))
                        && kinds(&json_lines(&json.text())).contains(&"start");
                    let ended = text.text().contains(" end ");
                    assert!(!ended, "the call cannot have ended before the bot answered");
                    async move { started.then_some(()) }
                },
            )
            .await
            .unwrap();
        }
    };
    let s = sid.as_str();
    let (text_args, json_args) = (
        ["show", s, "--follow"],
        ["show", s, "--follow", "--json", "--audio"],
    );
    let followers = async {
        let both = async {
            tokio::join!(
                rig::replay_into(&env, Role::Replay, &text_args, text.clone()),
                rig::replay_into(&env, Role::Replay, &json_args, json.clone()),
            )
        };
        tokio::time::timeout(Duration::from_secs(30), both).await
    };
    let (_call, followed) = tokio::join!(record_call(&env, &sid, gate), followers);
    let (text_run, json_run) = followed.expect("both followers stop at the call's end");
    text_run.unwrap();
    json_run.unwrap();

    let printed: Vec<String> = text.lines().iter().filter_map(|l| text_kind(l)).collect();
    assert_eq!(printed, CONTROL_KINDS, "{}", text.text());

    let followed = json_lines(&json.text());
    let after = json_lines(
        &replay(&env, Role::Replay, &["show", s, "--json"])
            .await
            .unwrap(),
    );
    let ids = |lines: &[serde_json::Value]| -> HashSet<String> {
        lines
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(followed.len(), after.len(), "each event once");
    assert_eq!(
        ids(&followed),
        ids(&after),
        "the same events, audio included"
    );
    let control: Vec<&str> = kinds(&followed)
        .into_iter()
        .filter(|k| !["audio", "tts_chunk"].contains(k))
        .collect();
    assert_eq!(control, CONTROL_KINDS);
}
