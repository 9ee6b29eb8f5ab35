//! A redirect moves the line to a new stream as Twilio runs one: `stop` on the old stream,
//! then `connected` and `start` on the new one with a new `streamSid` and the redirect's
//! parameters, numbering from 1; the report counts the move. A stream that drops runs its
//! `<Connect action>` instead.

use std::time::Duration;

use futures::StreamExt as _;
use futures::channel::mpsc::{UnboundedReceiver, unbounded};
use sb_twilio::{InboundMessage, parse_inbound};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::*;

const STREAM: &str = "MZ00000000000000000000000000000001";

async fn next(sent: &mut UnboundedReceiver<Message>) -> InboundMessage {
    let Some(Message::Text(text)) = sent.next().await else {
        panic!("the line closed")
    };
    parse_inbound(text.as_str()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_redirect_moves_the_call_to_a_new_stream() {
    let (sink, mut sent) = unbounded();
    let (_bot, stream) = unbounded::<Result<Message, std::io::Error>>();
    let (switch, switches) = mpsc::unbounded_channel();
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
        Some(switches),
        None,
        command_rx,
        status,
    ));
    assert!(matches!(
        next(&mut sent).await,
        InboundMessage::Connected { .. }
    ));
    assert!(matches!(
        next(&mut sent).await,
        InboundMessage::Start { .. }
    ));

    let (new_sink, mut new_sent) = unbounded();
    let (_new_bot, new_stream) = unbounded::<Result<Message, std::io::Error>>();
    let parameters = [("handoff".to_owned(), "t0k3n".to_owned())].into();
    let _ = switch.send(Switch::Stream {
        sink: new_sink,
        stream: new_stream,
        parameters,
    });
    let stop = loop {
        match next(&mut sent).await {
            InboundMessage::Media { .. } => {}
            other => break other,
        }
    };
    assert!(
        matches!(&stop, InboundMessage::Stop { stream_sid, .. } if stream_sid == STREAM),
        "{stop:?}"
    );
    assert!(matches!(
        next(&mut new_sent).await,
        InboundMessage::Connected { .. }
    ));
    let InboundMessage::Start {
        sequence_number,
        start,
        stream_sid,
    } = next(&mut new_sent).await
    else {
        panic!("start expected");
    };
    assert_ne!(stream_sid, STREAM, "a new stream");
    assert_eq!(sequence_number, 1, "numbered from 1 again");
    assert_eq!(
        start.custom_parameters.get("handoff").map(String::as_str),
        Some("t0k3n")
    );
    assert!(
        matches!(next(&mut new_sent).await, InboundMessage::Media { stream_sid: s, .. } if s == stream_sid)
    );

    commands.send(Command::Hangup).await.unwrap();
    let report = task.await.unwrap();
    assert_eq!(report.redirects, 1);
}

/// The ingress' end of the stream vanishes (its replica died): the line runs the stream's
/// action, which connects a new stream: no `stop` on the dead one, `connected` and `start`
/// on the new one with the action's parameters; the report counts the reconnect. When the
/// action answers a hang-up, the call ends as the ingress ended it.
#[tokio::test(start_paused = true)]
async fn a_dropped_stream_runs_its_action() {
    let (sink, mut sent) = unbounded();
    let (bot, stream) = unbounded::<Result<Message, std::io::Error>>();
    let (_commands, command_rx) = mpsc::channel(8);
    let (status, _) = watch::channel(LineStatus::default());
    let setup = LineSetup {
        account_sid: "AC00000000000000000000000000000000".into(),
        call_sid: "CA00000000000000000000000000000002".into(),
        stream_sid: STREAM.into(),
        custom_parameters: [("tenant".to_owned(), "acme".to_owned())].into(),
        max_call: Duration::from_secs(60),
        hangup: CancellationToken::new(),
    };
    let (new_sink, mut new_sent) = unbounded();
    let (new_bot, new_stream) = unbounded::<Result<Message, std::io::Error>>();
    let mut next_streams = vec![(new_sink, new_stream)];
    let on_end: OnStreamEnd<_, _> = Box::new(move || {
        let switch = match next_streams.pop() {
            Some((sink, stream)) => Switch::Stream {
                sink,
                stream,
                parameters: [("handoff".to_owned(), "l0st".to_owned())].into(),
            },
            None => Switch::Hangup,
        };
        Box::pin(async move { Some(switch) })
    });
    let task = tokio::spawn(run_line(
        setup,
        (sink, stream),
        None,
        Some(on_end),
        command_rx,
        status,
    ));
    assert!(matches!(
        next(&mut sent).await,
        InboundMessage::Connected { .. }
    ));
    drop(bot);
    assert!(matches!(
        next(&mut new_sent).await,
        InboundMessage::Connected { .. }
    ));
    let InboundMessage::Start { start, .. } = next(&mut new_sent).await else {
        panic!("start expected");
    };
    assert_eq!(
        start.custom_parameters.get("handoff").map(String::as_str),
        Some("l0st")
    );
    while let Some(message) = sent.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        assert!(
            !matches!(
                parse_inbound(text.as_str()).unwrap(),
                InboundMessage::Stop { .. }
            ),
            "no stop on the dead stream"
        );
    }
    drop(new_bot);
    let report = task.await.unwrap();
    assert_eq!(report.reconnects, 1);
    assert_eq!(report.ended_by, EndedBy::Ingress);
}
