//! The scripted caller against a tiny fake ingress (`fake_ingress.rs`) that validates
//! every signature, answers TwiML, plays a greeting and an answer, and clears on barge-in.
//! Proves: protocol order and fields, signed requests, what the report measures, and that
//! bad ingress messages and rejections are reported. State: one fake ingress per test.

#![allow(clippy::unwrap_used)] // a test file: helpers panic on failure by design

mod fake_ingress;
mod outbound;

use fake_ingress::{Mode, Seen, fake_ingress};
use sb_sim::caller::{CallReport, CallerConfig, CallerError, EndedBy, Scenario, place_call};
use sb_twilio::InboundMessage;

const TOKEN: &str = "test-auth-token";
const PUBLIC: &str = "https://agent.example.com";

const CONVERSATION: &str = r#"
tones = true
bot_quiet_ms = 300
[[steps]]
wait_for_bot = 3000
[[steps]]
say = "hello there"
[[steps]]
say = "wait stop"
barge_in_after_ms = 100
[[steps]]
pause_ms = 100
[[steps]]
dtmf = "7"
"#;

async fn converse() -> (CallReport, Vec<Seen>) {
    let (server, fake) = fake_ingress(Mode::Converse).await;
    let scenario = Scenario::from_toml(CONVERSATION).unwrap();
    let report = place_call(
        CallerConfig::new(server.http_url(), PUBLIC, TOKEN),
        &scenario,
    )
    .await
    .unwrap();
    fake.wait_for(|seen| seen.iter().any(|s| matches!(s, Seen::Status { .. })))
        .await;
    (report, fake.seen())
}

fn stream_messages(seen: &[Seen]) -> Vec<InboundMessage> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Stream(message) => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Every request carries a valid signature (webhook over the public URL, upgrade over the
/// `wss://` URL, status callback); the stream runs connected → start (sequence 1, exactly
/// the TwiML's parameters — a credential among them — the webhook's CallSid) → media with sequenceNumber, chunk and
/// timestamp counting up (160-byte payloads) → mark echoes and dtmf → stop, and the
/// completed status callback comes last.
#[tokio::test]
async fn call_follows_protocol() {
    let (report, seen) = converse().await;
    let Seen::Webhook { valid: true, call } = &seen[0] else {
        panic!("{:?}", seen[0])
    };
    assert_eq!(
        (call.call_sid.as_str(), call.direction.as_str()),
        (report.call_sid.as_str(), "inbound")
    );
    assert!(sb_twilio::rest::is_sid(&call.call_sid, "CA"));
    assert_eq!(call.from, "+14155551234");
    assert!(
        matches!(seen[1], Seen::Upgrade { valid: true }),
        "{:?}",
        seen[1]
    );
    let Some(Seen::Status {
        valid: true,
        callback,
    }) = seen.last()
    else {
        panic!("{:?}", seen.last())
    };
    assert_eq!(
        (callback.call_sid.as_str(), callback.call_status),
        (call.call_sid.as_str(), sb_twilio::CallStatus::Completed)
    );
    assert!(callback.call_duration_secs.is_some());

    let messages = stream_messages(&seen);
    assert!(matches!(messages[0], InboundMessage::Connected { .. }));
    let InboundMessage::Start {
        sequence_number: 1,
        start,
        stream_sid,
    } = &messages[1]
    else {
        panic!("{:?}", messages[1])
    };
    assert_eq!(
        (start.call_sid.as_str(), start.stream_sid.as_str()),
        (call.call_sid.as_str(), stream_sid.as_str())
    );
    assert!(sb_twilio::rest::is_sid(stream_sid, "MZ"));
    assert_eq!(start.account_sid, call.account_sid);
    assert_eq!(start.tracks, ["inbound"]);
    let echoed: Vec<(&str, &str)> = start
        .custom_parameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        echoed,
        [
            ("callerE164", "+14155551234"),
            ("credential", fake_ingress::CREDENTIAL),
            ("tenant", "acme")
        ]
    );

    let mut sequence = 1;
    let mut chunk = 0;
    let mut names = Vec::new();
    for message in &messages[2..] {
        let (number, sid) = match message {
            InboundMessage::Media {
                sequence_number,
                media,
                stream_sid,
            } => {
                chunk += 1;
                assert_eq!(
                    (media.chunk, media.timestamp, media.track.as_str()),
                    (chunk, (chunk - 1) * 20, "inbound")
                );
                assert_eq!(
                    sb_twilio::media::decode_payload(&media.payload)
                        .unwrap()
                        .len(),
                    160
                );
                (*sequence_number, stream_sid)
            }
            InboundMessage::Mark {
                sequence_number,
                mark,
                stream_sid,
            } => {
                names.push(mark.name.clone());
                (*sequence_number, stream_sid)
            }
            InboundMessage::Dtmf {
                sequence_number,
                dtmf,
                stream_sid,
            } => {
                names.push(format!("dtmf {}", dtmf.digit));
                (*sequence_number, stream_sid)
            }
            InboundMessage::Stop {
                sequence_number,
                stop,
                stream_sid,
            } => {
                assert_eq!(stop.call_sid, call.call_sid);
                names.push("stop".into());
                (*sequence_number, stream_sid)
            }
            other => panic!("unexpected {other:?}"),
        };
        sequence += 1;
        assert_eq!((number, sid), (sequence, stream_sid));
    }
    assert_eq!(names, ["greeting", "answer-1", "dtmf 7", "stop"]);
    assert!(matches!(messages.last(), Some(InboundMessage::Stop { .. })));
    assert_eq!(chunk, report.frames_sent);
}

/// The report measures the greeting and answer latency, the barge-in's time to `clear`,
/// which marks were echoed by playback and which by `clear`, and holds the call's audio as
/// heard (aligned, cleared audio excluded) for a stereo WAV.
#[tokio::test]
async fn report_measures_the_call() {
    let (report, _) = converse().await;
    assert_eq!(report.turns.len(), 3, "{report}");
    assert!(
        report.turns[0].voice_to_voice_ms.is_some_and(|ms| ms < 500),
        "{report}"
    );
    let answer = report.turns[1].voice_to_voice_ms.expect("answer latency");
    assert!((150..1500).contains(&answer), "{report}");
    let barge = report.turns[2].barge_in.clone().expect("barge-in");
    assert!(barge.latency_ms.is_some_and(|ms| ms < 500), "{report}");
    let marks: Vec<(&str, bool)> = report
        .marks
        .iter()
        .map(|m| (m.name.as_str(), m.cleared))
        .collect();
    assert_eq!(marks, [("greeting", false), ("answer-1", true)]);
    assert_eq!(report.clears_ms.len(), 1);
    assert!(report.protocol_errors.is_empty(), "{report}");
    assert_eq!(
        (report.late_frames, report.out_of_order, report.dtmf_sent),
        (0, 0, 1)
    );
    assert_eq!(report.ended_by, EndedBy::Caller);
    assert_eq!(report.status_callback, Some(204));
    assert_eq!(report.bot_bytes_received, 70 * 160);
    assert!(report.bot_bytes_cleared > 0);
    assert_eq!(
        report.bot_bytes_played + report.bot_bytes_cleared,
        report.bot_bytes_received
    );
    assert_eq!(report.caller_audio.len() as u64, report.frames_sent * 160);
    assert_eq!(report.bot_audio.len(), report.caller_audio.len());
    let (rate, channels, samples) = sb_audio::wav::parse(&report.to_wav()).unwrap();
    assert_eq!(
        (rate, channels, samples.len()),
        (8000, 2, report.caller_audio.len() * 2)
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(
        json["turns"][2]["barge_in"]["latency_ms"],
        barge.latency_ms.unwrap()
    );
}

/// Bad frames from the ingress (binary, an extra field, a wrong streamSid) are recorded as
/// 31950/31951 while the call goes on; the ingress closing the socket ends the call.
#[tokio::test]
async fn bad_ingress_messages_are_reported() {
    let (server, fake) = fake_ingress(Mode::BadMessages).await;
    let scenario = Scenario::from_toml("tones = true\n[[steps]]\npause_ms = 5000").unwrap();
    let report = place_call(
        CallerConfig::new(server.http_url(), PUBLIC, TOKEN),
        &scenario,
    )
    .await
    .unwrap();
    let codes: Vec<u32> = report.protocol_errors.iter().map(|e| e.code).collect();
    assert_eq!(codes, [31950, 31951, 31951], "{report}");
    assert_eq!(report.ended_by, EndedBy::Ingress);
    assert_eq!(report.marks.len(), 1);
    fake.wait_for(|seen| {
        seen.iter()
            .any(|s| matches!(s, Seen::Status { valid: true, .. }))
    })
    .await;
}

/// A `<Say>…<Hangup/>` answer is a rejection naming what was said; the completed status
/// callback is still sent. A caller signing with the wrong token is refused by the
/// validator and reports the 403.
#[tokio::test]
async fn rejections_are_errors() {
    let (server, fake) = fake_ingress(Mode::Reject).await;
    let scenario = Scenario::from_toml("tones = true").unwrap();
    let error = place_call(
        CallerConfig::new(server.http_url(), PUBLIC, TOKEN),
        &scenario,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, CallerError::Rejected { said } if said == "We are closed."),
        "{error}"
    );
    fake.wait_for(|seen| {
        seen.iter()
            .any(|s| matches!(s, Seen::Status { valid: true, .. }))
    })
    .await;

    let error = place_call(
        CallerConfig::new(server.http_url(), PUBLIC, "other-token"),
        &scenario,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, CallerError::Webhook { status: 403, .. }),
        "{error}"
    );
    assert!(matches!(
        fake.seen()
            .iter()
            .rev()
            .find(|s| matches!(s, Seen::Webhook { .. })),
        Some(Seen::Webhook { valid: false, .. })
    ));
}
