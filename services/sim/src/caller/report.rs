//! What the scripted caller measured on one call, and how it prints.
//!
//! Consumes the line loop's observations; produces [`CallReport`] (serialisable to JSON,
//! printable as text, exportable as a stereo WAV of the call as heard). All times are
//! milliseconds since the caller sent `start`. State: plain data, owned by the caller.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// How the call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The scenario finished (or said `hangup`): the caller sent `stop`.
    Caller,
    /// The ingress closed the WebSocket first.
    Ingress,
    /// Hung up from outside (the REST stand-in got `Status=completed`).
    Api,
    /// The call ran longer than the configured maximum.
    Timeout,
}

/// One turn: a caller utterance and the bot's reaction. Turn 0 is the greeting: it
/// "ends" when `start` is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TurnReport {
    pub index: usize,
    /// What the caller said (`None` for the greeting turn).
    pub caller_text: Option<String>,
    /// Start of the caller's speech. A frame is sent once its 20 ms have been spoken (as
    /// Twilio sends them), so this is 20 ms before the utterance's first frame was sent.
    pub speech_start_ms: Option<u64>,
    /// End of the caller's speech: when its last frame was sent.
    pub speech_end_ms: u64,
    /// First bot `media` received after `speech_end_ms` (and before the next utterance).
    pub first_bot_audio_ms: Option<u64>,
    /// Voice-to-voice latency: `first_bot_audio_ms - speech_end_ms`.
    pub voice_to_voice_ms: Option<u64>,
    /// Set when the caller started speaking while bot audio was playing.
    pub barge_in: Option<BargeIn>,
}

/// A barge-in: the caller spoke over the bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BargeIn {
    /// Caller speech onset while bot audio was queued for playback.
    pub onset_ms: u64,
    /// The first `clear` received after the onset.
    pub clear_ms: Option<u64>,
    /// `clear_ms - onset_ms`; `None` means the bot never cleared (it talked over the caller).
    pub latency_ms: Option<u64>,
}

/// A mark the caller echoed back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MarkEcho {
    pub name: String,
    pub echoed_ms: u64,
    /// Echoed because of a `clear`, not because playback reached it.
    pub cleared: bool,
}

/// A bad message from the ingress, with the Twilio error it would cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtocolError {
    /// 31950 (binary / malformed frame) or 31951 (invalid message).
    pub code: u32,
    pub at_ms: u64,
    pub detail: String,
}

/// Everything the caller measured on one call.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub call_sid: String,
    pub stream_sid: String,
    /// `<Parameter>`s of the TwiML, sent back in `start.customParameters`.
    pub custom_parameters: BTreeMap<String, String>,
    pub ended_by: EndedBy,
    /// From `start` to the end of the stream.
    pub duration_ms: u64,
    /// Wall clock (µs since the Unix epoch) when `start` was sent: the zero of every
    /// `*_ms` field, to line the caller's times up with the events' `at`.
    pub started_at_us: u64,
    pub turns: Vec<TurnReport>,
    /// `media` messages the caller sent (one per 20 ms).
    pub frames_sent: u64,
    /// `dtmf` messages the caller sent.
    pub dtmf_sent: u64,
    /// Bot `media` messages received, and their audio bytes.
    pub bot_media_received: u64,
    pub bot_bytes_received: u64,
    /// Bot audio bytes played to the caller, and discarded by `clear`.
    pub bot_bytes_played: u64,
    pub bot_bytes_cleared: u64,
    /// Bot `media` messages that arrived more than 40 ms after the playback queue ran dry
    /// in the middle of a sentence (no `mark` or `clear` since the previous `media`):
    /// each is an audible gap, the bot fell behind real time.
    pub late_frames: u64,
    /// Total audible gap of those late frames.
    pub underrun_ms: u64,
    /// Times an update moved the call to a new stream (a live call migration).
    pub redirects: u32,
    /// Times the stream dropped and its `<Connect action>` connected a new one (the
    /// ingress serving it died).
    pub reconnects: u32,
    /// The longest of those gaps: the longest silence the caller heard in the middle of a
    /// sentence (a crash, a migration or a lost chunk shows here).
    pub longest_gap_ms: u64,
    /// Messages received after the caller sent `stop` (the stream is over; Twilio
    /// would ignore them).
    pub out_of_order: u64,
    pub marks: Vec<MarkEcho>,
    /// When each `clear` arrived.
    pub clears_ms: Vec<u64>,
    pub protocol_errors: Vec<ProtocolError>,
    /// Steps that timed out, and other things worth knowing.
    pub notes: Vec<String>,
    /// HTTP status of the `completed` status callback (`None`: it could not be sent).
    pub status_callback: Option<u16>,
    /// Caller audio as sent, µ-law, one 160-byte frame per 20 ms from `start`.
    #[serde(skip)]
    pub caller_audio: Vec<u8>,
    /// Bot audio as heard (cleared audio excluded), µ-law, aligned with `caller_audio`.
    #[serde(skip)]
    pub bot_audio: Vec<u8>,
}

impl CallReport {
    /// An empty report for a stream that is about to start: only the greeting turn.
    pub(crate) fn new(
        call_sid: &str,
        stream_sid: &str,
        custom_parameters: BTreeMap<String, String>,
    ) -> Self {
        let greeting = TurnReport {
            index: 0,
            caller_text: None,
            speech_start_ms: None,
            speech_end_ms: 0,
            first_bot_audio_ms: None,
            voice_to_voice_ms: None,
            barge_in: None,
        };
        Self {
            call_sid: call_sid.to_owned(),
            stream_sid: stream_sid.to_owned(),
            custom_parameters,
            ended_by: EndedBy::Caller,
            duration_ms: 0,
            started_at_us: 0,
            turns: vec![greeting],
            frames_sent: 0,
            dtmf_sent: 0,
            bot_media_received: 0,
            bot_bytes_received: 0,
            bot_bytes_played: 0,
            bot_bytes_cleared: 0,
            late_frames: 0,
            underrun_ms: 0,
            longest_gap_ms: 0,
            redirects: 0,
            reconnects: 0,
            out_of_order: 0,
            marks: Vec::new(),
            clears_ms: Vec::new(),
            protocol_errors: Vec::new(),
            notes: Vec::new(),
            status_callback: None,
            caller_audio: Vec::new(),
            bot_audio: Vec::new(),
        }
    }

    /// A stereo 16-bit WAV of the call as heard: caller left, bot right.
    pub fn to_wav(&self) -> Vec<u8> {
        let left = sb_audio::mulaw::decode_slice(&self.caller_audio);
        let right = sb_audio::mulaw::decode_slice(&self.bot_audio);
        sb_audio::wav::stereo(&left, &right, sb_audio::SAMPLE_RATE)
    }

    /// The report as pretty JSON (audio excluded).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report is plain data")
    }
}

fn ms(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"))
}

impl fmt::Display for CallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "call {} stream {}", self.call_sid, self.stream_sid)?;
        writeln!(
            f,
            "  ended by {:?} after {} ms",
            self.ended_by, self.duration_ms
        )?;
        if !self.custom_parameters.is_empty() {
            let params: Vec<String> = self
                .custom_parameters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(f, "  parameters: {}", params.join(", "))?;
        }
        for turn in &self.turns {
            let said = turn
                .caller_text
                .as_ref()
                .map_or_else(|| "(greeting)".to_owned(), |text| format!("{text:?}"));
            write!(
                f,
                "  turn {}: {said} voice-to-voice {}",
                turn.index,
                ms(turn.voice_to_voice_ms)
            )?;
            if let Some(barge) = &turn.barge_in {
                write!(
                    f,
                    ", barge-in at {} ms -> clear {}",
                    barge.onset_ms,
                    ms(barge.latency_ms)
                )?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "  sent {} media + {} dtmf; bot media {} ({} B), played {} B, cleared {} B",
            self.frames_sent,
            self.dtmf_sent,
            self.bot_media_received,
            self.bot_bytes_received,
            self.bot_bytes_played,
            self.bot_bytes_cleared
        )?;
        writeln!(
            f,
            "  late frames {} (gaps {} ms, longest {} ms), out of order {}, clears {}, marks echoed {} ({} by clear)",
            self.late_frames,
            self.underrun_ms,
            self.longest_gap_ms,
            self.out_of_order,
            self.clears_ms.len(),
            self.marks.len(),
            self.marks.iter().filter(|m| m.cleared).count()
        )?;
        for error in &self.protocol_errors {
            writeln!(
                f,
                "  protocol error {} at {} ms: {}",
                error.code, error.at_ms, error.detail
            )?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        write!(
            f,
            "  status callback: {}",
            self.status_callback
                .map_or("not sent".to_owned(), |s| s.to_string())
        )
    }
}
