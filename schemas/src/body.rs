//! The body kinds of an event (ARCHITECTURE §3), one struct each.
//!
//! Encoded as MessagePack maps with named fields, externally tagged by kind
//! (`{"transcript": {...}}`), so readers ignore fields they do not know and reject kinds
//! they do not know with a clear error. New fields must be `#[serde(default)]`.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One event's payload. The kind decides the subject (see [`crate::subject`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// Twilio's incoming-call webhook was accepted.
    Webhook(Webhook),
    /// The media stream started (Twilio `start`); also the STT lease payload.
    Start(Start),
    /// Caller audio (µ-law 8 kHz), on `audio.{tenant}.{sid}.in`.
    Audio(Audio),
    /// The caller pressed a key.
    Dtmf(Dtmf),
    /// The STT provider's VAD heard the caller start speaking.
    Speech(Speech),
    /// An interim transcript.
    Partial(Partial),
    /// A final utterance; starts a new turn.
    Transcript(Transcript),
    /// One LLM token (or token group) of the turn's answer.
    Token(Token),
    /// One complete sentence of the answer, ready to speak.
    Sentence(Sentence),
    /// Bot audio for one sentence chunk, on `audio.{tenant}.{sid}.out`.
    TtsChunk(TtsChunk),
    /// The caller interrupted the bot.
    #[serde(rename = "bargein")]
    BargeIn(BargeIn),
    /// Twilio confirmed a sentence was played to the caller.
    Played(Played),
    /// The call ended.
    End(End),
    /// The dialer placed an outbound call for a campaign contact.
    Dial(Dial),
    /// Twilio's answering-machine detection said who answered an outbound call.
    AnsweredBy(AnsweredBy),
    /// An outbound call's attempt ended: its outcome and what happens to the contact.
    DialResult(DialResult),
    /// The model called one of the tenant's tools; the agent sends it to the tenant.
    ToolCall(ToolCall),
    /// What the tenant's tool answered (or why it did not).
    ToolResult(ToolResult),
    /// The call was erased (`replay delete`): this tombstone is all that is left of it.
    Erased(Erased),
    /// The caller's sound paused the bot, and no words followed: the bot goes on where it
    /// was cut (a false interruption: a cough, an "uh-huh").
    Resumed(Resumed),
    /// A keypad entry of the caller is complete (a terminator, a timeout, enough digits, or
    /// a key bound to an action); starts a new turn.
    Keypad(Keypad),
    /// The caller said nothing for the tenant's silence timeout after the bot finished;
    /// starts a new turn (a prompt, or goodbye).
    Silence(Silence),
    /// The call reached the tenant's maximum duration; starts a new turn (goodbye).
    MaxDuration(MaxDuration),
    /// A stable interim transcript, published before the final one on a turn of its own:
    /// the answer starts on it; the final `transcript` confirms it (same turn) or
    /// supersedes it (a newer turn).
    Preflight(Preflight),
}

/// The kind of a body: the last subject token of control events, a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Webhook,
    Start,
    Audio,
    Dtmf,
    Speech,
    Partial,
    Transcript,
    Token,
    Sentence,
    TtsChunk,
    BargeIn,
    Played,
    End,
    Dial,
    AnsweredBy,
    DialResult,
    ToolCall,
    ToolResult,
    Erased,
    Resumed,
    Keypad,
    Silence,
    MaxDuration,
    Preflight,
}

impl Kind {
    pub const ALL: [Kind; 24] = [
        Kind::Webhook,
        Kind::Start,
        Kind::Audio,
        Kind::Dtmf,
        Kind::Speech,
        Kind::Partial,
        Kind::Transcript,
        Kind::Token,
        Kind::Sentence,
        Kind::TtsChunk,
        Kind::BargeIn,
        Kind::Played,
        Kind::End,
        Kind::Dial,
        Kind::AnsweredBy,
        Kind::DialResult,
        Kind::ToolCall,
        Kind::ToolResult,
        Kind::Erased,
        Kind::Resumed,
        Kind::Keypad,
        Kind::Silence,
        Kind::MaxDuration,
        Kind::Preflight,
    ];

    /// The wire name (serde tag and subject token).
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Start => "start",
            Kind::Audio => "audio",
            Kind::Dtmf => "dtmf",
            Kind::Speech => "speech",
            Kind::Partial => "partial",
            Kind::Transcript => "transcript",
            Kind::Token => "token",
            Kind::Sentence => "sentence",
            Kind::TtsChunk => "tts_chunk",
            Kind::BargeIn => "bargein",
            Kind::Played => "played",
            Kind::End => "end",
            Kind::Dial => "dial",
            Kind::AnsweredBy => "answered_by",
            Kind::DialResult => "dial_result",
            Kind::ToolCall => "tool_call",
            Kind::ToolResult => "tool_result",
            Kind::Erased => "erased",
            Kind::Resumed => "resumed",
            Kind::Keypad => "keypad",
            Kind::Silence => "silence",
            Kind::MaxDuration => "max_duration",
            Kind::Preflight => "preflight",
        }
    }

    /// Position in [`Kind::ALL`] (for per-kind tables such as cached metric handles).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Parses a wire name.
    pub fn parse(raw: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// Audio kinds travel on the `AUDIO` stream, every other kind on `CALLS`.
    pub const fn is_audio(self) -> bool {
        matches!(self, Kind::Audio | Kind::TtsChunk)
    }
}

impl Body {
    pub const fn kind(&self) -> Kind {
        match self {
            Body::Webhook(_) => Kind::Webhook,
            Body::Start(_) => Kind::Start,
            Body::Audio(_) => Kind::Audio,
            Body::Dtmf(_) => Kind::Dtmf,
            Body::Speech(_) => Kind::Speech,
            Body::Partial(_) => Kind::Partial,
            Body::Transcript(_) => Kind::Transcript,
            Body::Token(_) => Kind::Token,
            Body::Sentence(_) => Kind::Sentence,
            Body::TtsChunk(_) => Kind::TtsChunk,
            Body::BargeIn(_) => Kind::BargeIn,
            Body::Played(_) => Kind::Played,
            Body::End(_) => Kind::End,
            Body::Dial(_) => Kind::Dial,
            Body::AnsweredBy(_) => Kind::AnsweredBy,
            Body::DialResult(_) => Kind::DialResult,
            Body::ToolCall(_) => Kind::ToolCall,
            Body::ToolResult(_) => Kind::ToolResult,
            Body::Erased(_) => Kind::Erased,
            Body::Resumed(_) => Kind::Resumed,
            Body::Keypad(_) => Kind::Keypad,
            Body::Silence(_) => Kind::Silence,
            Body::MaxDuration(_) => Kind::MaxDuration,
            Body::Preflight(_) => Kind::Preflight,
        }
    }
}

/// Raw µ-law bytes: binary in MessagePack, base64 in human-readable renderings (JSON).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Mulaw(pub Bytes);

impl std::fmt::Debug for Mulaw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mulaw({} bytes)", self.0.len())
    }
}

impl Serialize for Mulaw {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Mulaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(serde::de::Error::custom)?;
            Ok(Mulaw(raw.into()))
        } else {
            Ok(Mulaw(Bytes::deserialize(d)?))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub account_sid: String,
    pub from: String,
    pub to: String,
    pub direction: String,
    pub call_status: String,
    /// The dial attempt of an outbound campaign call (its tenant came from the attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// Twilio's `MZ…` stream sid; outbound media must carry it.
    pub stream_sid: String,
    pub account_sid: String,
    pub from: String,
    pub to: String,
    /// `<Parameter>`s from the TwiML, as Twilio echoes them in `start.customParameters`.
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audio {
    /// Index of the first 20 ms frame in this batch, counted from 0 per call.
    pub seq: u64,
    /// Twilio's media timestamp (ms since stream start) of the first frame.
    pub timestamp_ms: u64,
    pub payload: Mulaw,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dtmf {
    pub digit: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speech {
    /// The STT lease's delivery count: a stale owner's events carry a lower epoch.
    pub epoch: u64,
    /// Where on the call's audio timeline speech began.
    pub offset_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    pub epoch: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub epoch: u64,
    pub text: String,
    pub confidence: f32,
    /// The last caller frame (`Audio::seq` space) this utterance covers: the STT checkpoint.
    pub audio_seq: u64,
    /// Wall clock (µs) when the caller stopped speaking, best estimate: the start of the
    /// voice-to-voice latency.
    #[serde(default)]
    pub speech_ended_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub index: u32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sentence {
    pub index: u32,
    pub text: String,
    /// The turn's last sentence.
    pub last: bool,
    /// The tenant's fallback phrase, spoken because the LLM failed or was too slow.
    #[serde(default)]
    pub fallback: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TtsChunk {
    pub sentence: u32,
    pub chunk: u32,
    /// The sentence's last chunk (may be empty).
    pub last: bool,
    /// The last chunk of the turn's last sentence.
    pub turn_last: bool,
    pub payload: Mulaw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BargeInTrigger {
    Speech,
    Words,
    Dtmf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BargeIn {
    /// The call's barge-in token after the bump; work tagged with a lower token is stale.
    pub token: u64,
    pub trigger: BargeInTrigger,
    /// Sentences of the interrupted turn the caller heard in full.
    pub sentences_heard: u32,
    /// How much of the next sentence (index `sentences_heard`) the caller heard before the
    /// cut; `None` when the cut fell between sentences or its length was unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<CutSentence>,
}

/// The sentence a barge-in cut: the audio heard of it, and its whole length (both ms of
/// bot audio), so the words heard can be told apart from the words not heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutSentence {
    pub heard_ms: u32,
    pub sentence_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Played {
    pub sentence: u32,
    pub mark: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The media stream stopped (caller hung up or the call was ended).
    Stop,
    Completed,
    Busy,
    Failed,
    NoAnswer,
    Canceled,
    /// Switchboard hung up (the `end_call` tool).
    Hangup,
    /// The call was transferred away.
    Transferred,
    /// The media socket closed or broke without Twilio's `stop` (a reset, a lost peer).
    Closed,
    /// The ingress was draining and its deadline passed with the call still on it.
    Drained,
    /// No message on the media socket for the tenant's idle timeout (Twilio sends media
    /// every 20 ms while a call lives).
    IdleTimeout,
    /// The ingress closed the socket for a protocol violation (a frame over the hard limit: 1009).
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct End {
    pub reason: EndReason,
}

/// An outbound campaign call was created at Twilio (the call sid is the envelope's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dial {
    /// The dial attempt (32 hex digits): the key of its record and of its callbacks.
    pub attempt: String,
    pub campaign: String,
    pub contact: String,
    pub to: String,
    pub from: String,
    /// Which attempt for this contact this is, from 1.
    pub attempt_number: u32,
}

/// Who answered an outbound call, from Twilio's asynchronous answering-machine detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnsweredBy {
    pub attempt: String,
    /// Twilio's `AnsweredBy`: `human`, `machine_end_beep`, `machine_end_silence`,
    /// `machine_end_other`, `machine_start`, `fax` or `unknown`.
    pub answered_by: String,
    /// The agent leaves the campaign's voicemail message and hangs up.
    pub machine: bool,
    /// The rendered voicemail message (empty unless `machine`).
    #[serde(default)]
    pub voicemail: String,
}

/// The end of an outbound call's attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialResult {
    pub attempt: String,
    pub campaign: String,
    pub contact: String,
    /// `completed`, `voicemail`, `busy`, `no-answer`, `failed`, `canceled` or `error`.
    pub outcome: String,
    /// Attempts made for the contact, this one included.
    pub attempts: u32,
    /// What happens next: `done`, `retry` or `failed`.
    pub decision: String,
    /// For `retry`: not before this time (ms since the epoch).
    #[serde(default)]
    pub retry_at_ms: u64,
}

/// One tool call of the model, as the agent sends it to the tenant's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The model's id for the call (`call_…`), echoed in the result.
    pub id: String,
    /// The tenant's tool name.
    pub name: String,
    /// The arguments as the model wrote them (JSON text; not necessarily valid).
    pub arguments: String,
    /// Which model request of the turn asked for it, from 0 (a tool's answer can ask for
    /// another tool).
    pub round: u32,
}

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolOutcome {
    /// A 2xx with a JSON body: `result` holds it.
    Ok,
    /// Sent without waiting (the tool's `wait = false`): the model was told it was sent.
    Sent,
    /// No answer within the tool's timeout.
    Timeout,
    /// The endpoint answered a non-2xx status.
    Status,
    /// A 2xx whose body is not JSON (or is too large).
    Invalid,
    /// The endpoint could not be reached (connect, TLS, reset).
    Unreachable,
    /// The model's arguments were not a JSON object, or named no tool of the tenant.
    Refused,
}

impl ToolOutcome {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ToolOutcome::Ok => "ok",
            ToolOutcome::Sent => "sent",
            ToolOutcome::Timeout => "timeout",
            ToolOutcome::Status => "status",
            ToolOutcome::Invalid => "invalid",
            ToolOutcome::Unreachable => "unreachable",
            ToolOutcome::Refused => "refused",
        }
    }
}

/// The result of one [`ToolCall`] (same `id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolResult {
    pub id: String,
    pub name: String,
    pub outcome: ToolOutcome,
    /// The HTTP status of the last attempt (0 when none answered).
    pub status: u16,
    /// The tenant's JSON answer as text (`ok` only; empty otherwise).
    pub result: String,
    /// Requests sent (a failed first one is retried once).
    pub attempts: u32,
    /// From the first request sent to the last answer or give-up.
    pub elapsed_ms: u64,
}

/// The tombstone of an erased call (right to erasure), published by `replay delete` on
/// `call.{tenant}.{sid}.erased` once every other stored message of the call is removed.
/// The envelope's `at` says when. No durable consumer's filter includes it: no stage acts
/// on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erased {
    /// Who asked for the erasure (`--by`; the operator's OS user by default).
    pub by: String,
    /// Messages removed, per stream: `CALLS` (control events, an earlier tombstone too),
    /// `AUDIO`, `DLQ` (dead letters whose original subject was the call's), `STT_ASSIGN`
    /// (its lease). A map, so a store added later is one more entry, not a new field.
    pub removed: BTreeMap<String, u64>,
}

/// A false interruption ended: the bot's audio was paused (Twilio `clear`) for the
/// caller's sound, no qualifying words came, and the turn plays on from `sentence` at
/// `offset_ms` (the start of the word the pause cut, where it could be found). The
/// envelope's turn is the resumed turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    pub sentence: u32,
    /// Where in the sentence's audio playback starts again.
    pub offset_ms: u32,
    /// How long the bot was paused.
    pub paused_ms: u32,
}

/// How a keypad entry ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeypadEnd {
    /// The tenant's terminator key (not part of `digits`).
    Terminator,
    /// No key for the tenant's inter-digit timeout.
    Timeout,
    /// The tenant's maximum number of digits.
    MaxDigits,
    /// The first key is bound to an action (`0` → transfer, `*` → repeat).
    Action,
}

/// A complete keypad entry (the single `dtmf` events of its keys come before it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keypad {
    pub digits: String,
    pub ended_by: KeypadEnd,
}

/// The caller was silent for the tenant's timeout after the bot's turn finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// Silences in a row, from 1 (the caller speaking or pressing a key resets it).
    pub count: u32,
    /// The timeout that passed.
    pub after_ms: u32,
}

/// The call is as long as the tenant allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxDuration {
    pub limit_secs: u32,
}

/// A stable interim transcript (ARCHITECTURE §2g): the caller paused and the provider's
/// words so far end well before the audio it heard. The envelope's turn is a new turn,
/// allocated for it; the final `transcript` of the same words comes on the same turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preflight {
    /// The STT lease's delivery count, as in [`Transcript::epoch`].
    pub epoch: u64,
    /// The words so far (final pieces and the interim tail).
    pub text: String,
}
