//! The caller's end of the Media Streams socket: Twilio's side of one stream.
//!
//! Consumes the WebSocket (as a `Sink` + `Stream`, so tests drive it through channels),
//! commands from the script (speak, press keys, hang up) and a 20 ms clock. Produces
//! `connected`, `start`, one paced `media` per 20 ms (speech or µ-law silence), `dtmf`,
//! `mark` echoes and `stop`; publishes a [`LineStatus`] for the script to wait on; returns
//! the [`CallReport`]. State: this task's memory only (the playback queue, counters, the
//! recorded audio).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{Sink, SinkExt as _, Stream, StreamExt as _};
use sb_audio::FRAME_BYTES;
use sb_audio::mulaw::SILENCE;
use sb_twilio::media::{
    self, Dtmf, InboundMedia, InboundMessage, Mark, MediaFormat, StartMeta, StopMeta,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::control::Switch;
use super::playback::Playback;
use super::report::{BargeIn, CallReport, EndedBy, MarkEcho, TurnReport};

/// A bot `media` arriving this long after playback ran dry mid-sentence is late.
const LATE_AFTER_MS: u64 = 40;
/// After `stop`, how long to keep reading (and counting) until the ingress closes.
const DRAIN: Duration = Duration::from_millis(500);

/// What the script asks the line to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Speak µ-law `audio` (whole 160-byte frames); `done` fires after its last frame.
    Speak {
        text: String,
        audio: Vec<u8>,
        done: oneshot::Sender<()>,
    },
    /// Press one key.
    Dtmf { digit: char },
    /// Add a note to the report.
    Note(String),
    /// End the call: send `stop` and close.
    Hangup,
}

/// What the script can wait on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LineStatus {
    /// Bot audio is queued for playback.
    pub(crate) bot_playing: bool,
    pub(crate) bot_media_received: u64,
    pub(crate) bot_bytes_played: u64,
}

/// The stream's identity and limits.
#[derive(Debug, Clone)]
pub(crate) struct LineSetup {
    pub(crate) account_sid: String,
    pub(crate) call_sid: String,
    pub(crate) stream_sid: String,
    pub(crate) custom_parameters: BTreeMap<String, String>,
    pub(crate) max_call: Duration,
    /// Cancelled when the call is hung up from outside (REST `Status=completed`).
    pub(crate) hangup: CancellationToken,
}

struct Speech {
    text: String,
    audio: Vec<u8>,
    sent: usize,
    done: Option<oneshot::Sender<()>>,
}

/// The sink is gone: the ingress closed the socket.
struct Closed;

struct Line<Si> {
    setup: LineSetup,
    sink: Si,
    start: Instant,
    sequence: u64,
    chunk: u64,
    speech: VecDeque<Speech>,
    speaking: bool,
    playback: Playback,
    /// When playback last ran dry, if it has not been refilled since.
    starved_since: Option<Instant>,
    /// A `mark` or `clear` came since the last `media`: a gap here is a sentence boundary.
    boundary: bool,
    report: CallReport,
}

/// What Twilio does when a stream ends without the call ending: requests the
/// `<Connect action>` and runs its answer (a new stream, or the end of the call). `None`:
/// no action, or it could not be run.
pub(crate) type OnStreamEnd<Si, St> =
    Box<dyn FnMut() -> BoxFuture<'static, Option<Switch<Si, St>>> + Send>;

/// Runs the stream until the script hangs up, the ingress closes (and the stream's action
/// does not connect a new one), the call is hung up from outside or `max_call` passes.
/// Never fails: what went wrong is in the report.
pub(crate) async fn run_line<Si, St, E>(
    setup: LineSetup,
    (sink, mut stream): (Si, St),
    mut switches: Option<mpsc::UnboundedReceiver<Switch<Si, St>>>,
    mut on_stream_end: Option<OnStreamEnd<Si, St>>,
    mut commands: mpsc::Receiver<Command>,
    status: watch::Sender<LineStatus>,
) -> CallReport
where
    Si: Sink<Message> + Unpin,
    St: Stream<Item = Result<Message, E>> + Unpin,
{
    let hangup = setup.hangup.clone();
    let deadline = tokio::time::sleep(setup.max_call);
    tokio::pin!(deadline);
    let mut line = Line::new(setup, sink);
    let mut ended = match line.open().await {
        Ok(()) => None,
        Err(Closed) => Some(EndedBy::Ingress),
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(u64::from(sb_audio::FRAME_MS)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    while ended.is_none() {
        let step = tokio::select! {
            biased;
            () = hangup.cancelled() => Err(EndedBy::Api),
            () = &mut deadline => Err(EndedBy::Timeout),
            _ = ticker.tick() => line.tick().await.map_err(|Closed| EndedBy::Ingress),
            message = stream.next() => match message {
                Some(Ok(message)) => line.on_message(message).await.map_err(|Closed| EndedBy::Ingress),
                Some(Err(_)) | None => Err(EndedBy::Ingress),
            },
            command = commands.recv() => match command {
                Some(Command::Hangup) | None => Err(EndedBy::Caller),
                Some(command) => line.on_command(command).await.map_err(|Closed| EndedBy::Ingress),
            },
            switch = next_switch(&mut switches) => match switch {
                Some(Switch::Stream { sink, stream: moved, parameters }) => {
                    stream = moved;
                    line.switch(sink, parameters).await.map_err(|Closed| EndedBy::Ingress)
                }
                Some(Switch::Hangup) => Err(EndedBy::Api),
                None => {
                    switches = None;
                    Ok(())
                }
            },
        };
        match (step, on_stream_end.as_mut()) {
            (Err(EndedBy::Ingress), Some(action)) => match action().await {
                Some(Switch::Stream {
                    sink,
                    stream: next,
                    parameters,
                }) => {
                    stream = next;
                    if line.reconnect(sink, parameters).await.is_err() {
                        ended = Some(EndedBy::Ingress);
                    }
                }
                Some(Switch::Hangup) | None => ended = Some(EndedBy::Ingress),
            },
            (Err(by), _) => ended = Some(by),
            (Ok(()), _) => {}
        }
        status.send_if_modified(|current| {
            let next = line.status();
            let changed = *current != next;
            *current = next;
            changed
        });
    }
    let ended = ended.unwrap_or(EndedBy::Caller);
    line.finish(ended, &mut stream).await
}

/// The next update of the call; never, without a control line.
async fn next_switch<Si, St>(
    switches: &mut Option<mpsc::UnboundedReceiver<Switch<Si, St>>>,
) -> Option<Switch<Si, St>> {
    match switches {
        Some(switches) => switches.recv().await,
        None => std::future::pending().await,
    }
}

impl<Si: Sink<Message> + Unpin> Line<Si> {
    fn new(setup: LineSetup, sink: Si) -> Self {
        let report = CallReport::new(
            &setup.call_sid,
            &setup.stream_sid,
            setup.custom_parameters.clone(),
        );
        Self {
            setup,
            sink,
            start: Instant::now(),
            sequence: 0,
            chunk: 0,
            speech: VecDeque::new(),
            speaking: false,
            playback: Playback::default(),
            starved_since: None,
            boundary: true,
            report,
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn status(&self) -> LineStatus {
        LineStatus {
            bot_playing: self.playback.is_playing(),
            bot_media_received: self.report.bot_media_received,
            bot_bytes_played: self.report.bot_bytes_played,
        }
    }

    async fn send(&mut self, message: InboundMessage) -> Result<(), Closed> {
        self.sink
            .send(Message::text(message.to_json()))
            .await
            .map_err(|_| Closed)
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// `connected`, then `start` (sequence 1): time zero of the report.
    async fn open(&mut self) -> Result<(), Closed> {
        self.start_stream().await?;
        self.start = Instant::now();
        self.report.started_at_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Ok(())
    }

    /// The call moves to a new stream, as Twilio runs a redirect: `stop` on the old one,
    /// which closes; what Twilio buffered of it is not played; `connected` and `start`
    /// (a new `streamSid`, the new parameters, numbering from 1) on the new one.
    async fn switch(
        &mut self,
        sink: Si,
        parameters: BTreeMap<String, String>,
    ) -> Result<(), Closed> {
        let sequence_number = self.next_sequence();
        let stop = InboundMessage::Stop {
            sequence_number,
            stop: StopMeta {
                account_sid: self.setup.account_sid.clone(),
                call_sid: self.setup.call_sid.clone(),
            },
            stream_sid: self.setup.stream_sid.clone(),
        };
        let _ = self.send(stop).await;
        let _ = self.sink.close().await;
        self.report.redirects += 1;
        self.continue_on(sink, parameters, "stream moved to").await
    }

    /// The stream dropped and its `<Connect action>` connected a new one: no `stop` (the
    /// old socket is gone); what was buffered of it is lost; a new `streamSid`.
    async fn reconnect(
        &mut self,
        sink: Si,
        parameters: BTreeMap<String, String>,
    ) -> Result<(), Closed> {
        self.report.reconnects += 1;
        self.continue_on(sink, parameters, "stream dropped; reconnected as")
            .await
    }

    /// The call goes on on a new stream: what Twilio buffered of the old one is not played;
    /// `connected` and `start` with a new `streamSid` and `parameters`, numbering from 1.
    async fn continue_on(
        &mut self,
        sink: Si,
        parameters: BTreeMap<String, String>,
        why: &str,
    ) -> Result<(), Closed> {
        self.sink = sink;
        self.playback.clear();
        self.setup.stream_sid = super::new_sid("MZ");
        self.setup.custom_parameters = parameters;
        self.sequence = 0;
        self.chunk = 0;
        let note = format!("{why} {} at {} ms", self.setup.stream_sid, self.now_ms());
        self.report.notes.push(note);
        self.start_stream().await
    }

    async fn start_stream(&mut self) -> Result<(), Closed> {
        self.send(InboundMessage::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into(),
        })
        .await?;
        let start = StartMeta {
            account_sid: self.setup.account_sid.clone(),
            stream_sid: self.setup.stream_sid.clone(),
            call_sid: self.setup.call_sid.clone(),
            tracks: vec!["inbound".into()],
            media_format: MediaFormat::default(),
            custom_parameters: self.setup.custom_parameters.clone(),
        };
        let sequence_number = self.next_sequence();
        let stream_sid = self.setup.stream_sid.clone();
        self.send(InboundMessage::Start {
            sequence_number,
            start,
            stream_sid,
        })
        .await
    }

    /// One 20 ms step: send the caller's next frame, play 20 ms of bot audio.
    async fn tick(&mut self) -> Result<(), Closed> {
        let frame = self.next_caller_frame();
        self.chunk += 1;
        let sequence_number = self.next_sequence();
        let media = InboundMedia {
            track: "inbound".into(),
            chunk: self.chunk,
            timestamp: (self.chunk - 1) * u64::from(sb_audio::FRAME_MS),
            payload: media::encode_payload(&frame),
        };
        let stream_sid = self.setup.stream_sid.clone();
        self.send(InboundMessage::Media {
            sequence_number,
            media,
            stream_sid,
        })
        .await?;
        self.report.frames_sent += 1;
        self.report.caller_audio.extend_from_slice(&frame);

        let played = self.playback.play(FRAME_BYTES);
        if played.audio_bytes < FRAME_BYTES && self.starved_since.is_none() {
            self.starved_since =
                Some(Instant::now() + Duration::from_millis(played.audio_bytes as u64 / 8));
        }
        self.report.bot_bytes_played += played.audio_bytes as u64;
        self.report.bot_audio.extend_from_slice(&played.audio);
        for name in played.marks {
            self.echo_mark(name, false).await?;
        }
        Ok(())
    }

    /// The next 160 bytes of the current utterance, or silence; tracks speech onset/end.
    fn next_caller_frame(&mut self) -> Vec<u8> {
        let Some(mut speech) = self.speech.pop_front() else {
            return vec![SILENCE; FRAME_BYTES];
        };
        let now = self.now_ms();
        if speech.sent == 0 {
            self.on_speech_onset(now, &speech.text);
        }
        let end = (speech.sent + FRAME_BYTES).min(speech.audio.len());
        let mut frame = speech.audio[speech.sent..end].to_vec();
        frame.resize(FRAME_BYTES, SILENCE);
        speech.sent = end;
        if speech.sent >= speech.audio.len() {
            self.speaking = false;
            if let Some(turn) = self.report.turns.last_mut() {
                // Sent now, the frame's 20 ms have just been spoken: speech ends now.
                turn.speech_end_ms = now;
            }
            if let Some(done) = speech.done.take() {
                let _ = done.send(());
            }
        } else {
            self.speech.push_front(speech);
        }
        frame
    }

    /// `now` is when the utterance's first frame is sent; like Twilio, the caller sends a
    /// frame once its 20 ms have been spoken, so the speech began one frame earlier.
    fn on_speech_onset(&mut self, now: u64, text: &str) {
        let now = now.saturating_sub(u64::from(sb_audio::FRAME_MS));
        self.speaking = true;
        let barge_in = self.playback.is_playing().then_some(BargeIn {
            onset_ms: now,
            clear_ms: None,
            latency_ms: None,
        });
        self.report.turns.push(TurnReport {
            index: self.report.turns.len(),
            caller_text: Some(text.to_owned()),
            speech_start_ms: Some(now),
            speech_end_ms: now,
            first_bot_audio_ms: None,
            voice_to_voice_ms: None,
            barge_in,
        });
    }

    async fn echo_mark(&mut self, name: String, cleared: bool) -> Result<(), Closed> {
        let sequence_number = self.next_sequence();
        let stream_sid = self.setup.stream_sid.clone();
        let mark = Mark { name: name.clone() };
        self.send(InboundMessage::Mark {
            sequence_number,
            stream_sid,
            mark,
        })
        .await?;
        let echoed_ms = self.now_ms();
        self.report.marks.push(MarkEcho {
            name,
            echoed_ms,
            cleared,
        });
        Ok(())
    }

    async fn on_command(&mut self, command: Command) -> Result<(), Closed> {
        match command {
            Command::Speak { text, audio, done } => {
                self.speech.push_back(Speech {
                    text,
                    audio,
                    sent: 0,
                    done: Some(done),
                });
            }
            Command::Dtmf { digit } => {
                let sequence_number = self.next_sequence();
                let stream_sid = self.setup.stream_sid.clone();
                let dtmf = Dtmf {
                    track: "inbound_track".into(),
                    digit: digit.to_string(),
                };
                self.send(InboundMessage::Dtmf {
                    stream_sid,
                    sequence_number,
                    dtmf,
                })
                .await?;
                self.report.dtmf_sent += 1;
            }
            Command::Note(note) => self.report.notes.push(note),
            Command::Hangup => {}
        }
        Ok(())
    }

    /// Sends `stop` (unless the ingress already closed), reads what still arrives until the
    /// ingress closes (counted as out of order), closes, and hands back the report.
    async fn finish<St, E>(mut self, ended: EndedBy, stream: &mut St) -> CallReport
    where
        St: Stream<Item = Result<Message, E>> + Unpin,
    {
        self.report.ended_by = ended;
        self.report.duration_ms = self.now_ms();
        if ended != EndedBy::Ingress {
            let sequence_number = self.next_sequence();
            let stop = StopMeta {
                account_sid: self.setup.account_sid.clone(),
                call_sid: self.setup.call_sid.clone(),
            };
            let stream_sid = self.setup.stream_sid.clone();
            if self
                .send(InboundMessage::Stop {
                    sequence_number,
                    stop,
                    stream_sid,
                })
                .await
                .is_ok()
            {
                let _ = self.sink.close().await;
                let drain = tokio::time::sleep(DRAIN);
                tokio::pin!(drain);
                loop {
                    tokio::select! {
                        () = &mut drain => break,
                        message = stream.next() => match message {
                            Some(Ok(Message::Text(_) | Message::Binary(_))) => self.report.out_of_order += 1,
                            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                            Some(Ok(_)) => {}
                        },
                    }
                }
            }
        }
        let _ = self.sink.close().await;
        self.report
    }
}

mod receive;
#[cfg(test)]
mod switch_tests;
#[cfg(test)]
mod tests;
