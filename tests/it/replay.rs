//! The replay tool reads one call back from both streams: every event, in order, and only
//! that call's.

use bytes::Bytes;
use sb_replay::{CallLog, latency, timeline, wav};
use sb_runtime::Publisher;
use sb_schemas::testing::{sid, tenant};
use sb_schemas::*;
use sb_tests::TestEnv;

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
