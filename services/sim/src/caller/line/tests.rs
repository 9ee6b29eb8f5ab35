//! Tests for `line.rs`, driven through channels with tokio's paused clock: the playback
//! model's timing (mark echoed after its audio played, `clear` echoes pending marks at
//! once), protocol order and fields, latency and late-frame measurement, bad messages.
//! State: one line task per test.

use std::time::Duration;

use futures::StreamExt as _;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use sb_twilio::{InboundMessage, OutboundMessage, parse_inbound};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::*;

const STREAM: &str = "MZ00000000000000000000000000000001";

struct Harness {
    /// What the caller sent.
    sent: UnboundedReceiver<Message>,
    /// What the bot sends.
    bot: UnboundedSender<Result<Message, std::io::Error>>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<CallReport>,
}

fn start_line() -> Harness {
    let (sink, sent) = unbounded();
    let (bot, stream) = unbounded();
    let (commands, command_rx) = mpsc::channel(8);
    let (status, _) = watch::channel(LineStatus::default());
    let setup = LineSetup {
        account_sid: "AC00000000000000000000000000000000".into(),
        call_sid: "CA00000000000000000000000000000001".into(),
        stream_sid: STREAM.into(),
        custom_parameters: [("tenant".to_owned(), "acme".to_owned())].into(),
        max_call: Duration::from_secs(60),
        hangup: CancellationToken::new(),
    };
    let task = tokio::spawn(run_line(
        setup,
        (sink, stream),
        None,
        None,
        command_rx,
        status,
    ));
    Harness {
        sent,
        bot,
        commands,
        task,
    }
}

impl Harness {
    async fn next(&mut self) -> InboundMessage {
        let Some(Message::Text(text)) = self.sent.next().await else {
            panic!("caller closed")
        };
        parse_inbound(text.as_str()).unwrap()
    }

    /// The next message that is not `connected`, `start` or `media`.
    async fn next_non_media(&mut self) -> InboundMessage {
        loop {
            let message = self.next().await;
            if !matches!(
                message,
                InboundMessage::Media { .. }
                    | InboundMessage::Connected { .. }
                    | InboundMessage::Start { .. }
            ) {
                return message;
            }
        }
    }

    fn bot(&self, message: OutboundMessage) {
        self.bot
            .unbounded_send(Ok(Message::text(message.to_json())))
            .unwrap();
    }

    async fn hang_up(mut self) -> CallReport {
        self.commands.send(Command::Hangup).await.unwrap();
        assert!(matches!(
            self.next_non_media().await,
            InboundMessage::Stop { .. }
        ));
        drop(self.bot);
        self.task.await.unwrap()
    }
}

/// `connected`, `start` (sequence 1, custom parameters), then media every 20 ms with
/// sequenceNumber/chunk/timestamp counting up; a mark is echoed only once the 100 ms of
/// audio before it has played; `clear` echoes both pending marks at once.
#[tokio::test(start_paused = true)]
async fn marks_follow_playback_and_clear() {
    let mut line = start_line();
    assert!(matches!(
        line.next().await,
        InboundMessage::Connected { .. }
    ));
    let InboundMessage::Start {
        sequence_number: 1,
        start,
        stream_sid,
    } = line.next().await
    else {
        panic!()
    };
    assert_eq!(
        (
            stream_sid.as_str(),
            start.custom_parameters["tenant"].as_str()
        ),
        (STREAM, "acme")
    );
    for n in 1..=3u64 {
        let InboundMessage::Media {
            sequence_number,
            media,
            ..
        } = line.next().await
        else {
            panic!()
        };
        assert_eq!(
            (sequence_number, media.chunk, media.timestamp),
            (n + 1, n, (n - 1) * 20)
        );
        assert_eq!(
            sb_twilio::media::decode_payload(&media.payload).unwrap(),
            vec![0xFF; 160]
        );
    }

    let sent_at = Instant::now();
    line.bot(OutboundMessage::media(STREAM, &[0x10; 800]));
    line.bot(OutboundMessage::mark(STREAM, "m1"));
    let InboundMessage::Mark { mark, .. } = line.next_non_media().await else {
        panic!()
    };
    assert_eq!(mark.name, "m1");
    let waited = sent_at.elapsed();
    assert!(
        waited >= Duration::from_millis(80) && waited <= Duration::from_millis(120),
        "{waited:?}"
    );

    line.bot(OutboundMessage::media(STREAM, &[0x10; 1600]));
    line.bot(OutboundMessage::mark(STREAM, "m2"));
    line.bot(OutboundMessage::mark(STREAM, "m3"));
    let cleared_at = Instant::now();
    line.bot(OutboundMessage::clear(STREAM));
    for name in ["m2", "m3"] {
        let InboundMessage::Mark { mark, .. } = line.next_non_media().await else {
            panic!()
        };
        assert_eq!(mark.name, name);
    }
    assert!(
        cleared_at.elapsed() <= Duration::from_millis(20),
        "echoed at once"
    );

    let report = line.hang_up().await;
    let cleared: Vec<bool> = report.marks.iter().map(|m| m.cleared).collect();
    assert_eq!(cleared, [false, true, true]);
    assert_eq!(report.bot_bytes_played, 800);
    assert!(
        report.bot_bytes_cleared >= 1440,
        "{}",
        report.bot_bytes_cleared
    );
    assert_eq!(report.bot_bytes_played + report.bot_bytes_cleared, 2400);
    assert_eq!(report.caller_audio.len(), report.bot_audio.len());
    assert_eq!(report.ended_by, EndedBy::Caller);
}

/// Voice-to-voice latency runs from the end of the caller's speech to the first bot
/// media; a gap inside a sentence counts as late, a gap after a mark does not; a barge-in
/// over playing audio is timed until `clear`.
#[tokio::test(start_paused = true)]
async fn measures_latency_late_frames_and_barge_in() {
    let mut line = start_line();
    let (done, spoken) = oneshot::channel();
    line.commands
        .send(Command::Speak {
            text: "hi".into(),
            audio: vec![0x20; 320],
            done,
        })
        .await
        .unwrap();
    spoken.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    line.bot(OutboundMessage::media(STREAM, &[0x10; 160]));
    tokio::time::sleep(Duration::from_millis(120)).await;
    line.bot(OutboundMessage::media(STREAM, &[0x10; 160]));
    line.bot(OutboundMessage::mark(STREAM, "sentence-1"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    line.bot(OutboundMessage::media(STREAM, &[0x10; 4000]));
    tokio::time::sleep(Duration::from_millis(40)).await;
    let (done, spoken) = oneshot::channel();
    line.commands
        .send(Command::Speak {
            text: "stop".into(),
            audio: vec![0x20; 160],
            done,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    line.bot(OutboundMessage::clear(STREAM));
    spoken.await.unwrap();
    line.commands
        .send(Command::Dtmf { digit: '5' })
        .await
        .unwrap();
    let dtmf = line.next_non_media().await;
    assert!(
        matches!(dtmf, InboundMessage::Mark { .. }),
        "sentence-1 echo first: {dtmf:?}"
    );
    let InboundMessage::Dtmf { dtmf, .. } = line.next_non_media().await else {
        panic!()
    };
    assert_eq!(
        (dtmf.digit.as_str(), dtmf.track.as_str()),
        ("5", "inbound_track")
    );

    let report = line.hang_up().await;
    let first = &report.turns[1];
    let v2v = first.voice_to_voice_ms.unwrap();
    assert!((260..=320).contains(&v2v), "{v2v}");
    assert_eq!((report.late_frames, report.dtmf_sent), (1, 1));
    assert!(
        (60..=130).contains(&report.underrun_ms),
        "{}",
        report.underrun_ms
    );
    // One late frame: its gap is the longest.
    assert_eq!(report.longest_gap_ms, report.underrun_ms);
    let barge = report.turns[2].barge_in.clone().unwrap();
    let latency = barge.latency_ms.unwrap();
    assert!((100..=190).contains(&latency), "{latency}");
    assert_eq!(
        report.turns[0].first_bot_audio_ms, None,
        "the greeting turn heard nothing"
    );
}

/// Bad messages are recorded with Twilio's error codes and the call goes on; the ingress
/// closing the socket ends the call without a `stop`.
#[tokio::test(start_paused = true)]
async fn records_protocol_errors() {
    let mut line = start_line();
    line.bot
        .unbounded_send(Ok(Message::binary(vec![1, 2, 3])))
        .unwrap();
    for text in [
        r#"{"event":"media","streamSid":"MZ0","media":{"payload":""}}"#.to_owned(),
        format!(
            r#"{{"event":"media","streamSid":"{STREAM}","media":{{"payload":"","track":"outbound"}}}}"#
        ),
        format!(r#"{{"event":"play","streamSid":"{STREAM}"}}"#),
        "{not json".to_owned(),
        format!(r#"{{"event":"media","streamSid":"{STREAM}","media":{{"payload":"%%"}}}}"#),
    ] {
        line.bot.unbounded_send(Ok(Message::text(text))).unwrap();
    }
    line.bot(OutboundMessage::mark(STREAM, "empty"));
    let InboundMessage::Mark { mark, .. } = line.next_non_media().await else {
        panic!()
    };
    assert_eq!(
        mark.name, "empty",
        "a mark with nothing queued comes straight back"
    );
    line.bot.unbounded_send(Ok(Message::Close(None))).unwrap();
    let report = line.task.await.unwrap();
    let codes: Vec<u32> = report.protocol_errors.iter().map(|e| e.code).collect();
    assert_eq!(codes, [31950, 31951, 31951, 31951, 31951, 31951]);
    assert_eq!(report.ended_by, EndedBy::Ingress);
}
