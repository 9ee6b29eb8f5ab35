//! The event contract every Switchboard service speaks.
//!
//! Consumes nothing and produces nothing on its own: it defines the [`Envelope`] and its
//! [`Body`] kinds (ARCHITECTURE §3), the one module that builds and parses every subject
//! ([`subject`]), validated identifiers ([`TenantId`], [`CallSid`]), the MessagePack
//! encoding with its limits ([`encode`], [`decode`]) and the dead-letter record. No I/O and
//! no state; golden fixtures under `schemas/fixtures/` pin the wire format. With the cargo
//! feature `testing`, `testing` builds ids for tests.

mod body;
mod codec;
mod dead_letter;
mod envelope;
mod ids;
pub mod roles;
pub mod subject;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use body::{
    AnsweredBy, Audio, BargeIn, BargeInTrigger, Body, CutSentence, Dial, DialResult, Dtmf, End,
    EndReason, Erased, Keypad, KeypadEnd, Kind, MaxDuration, Mulaw, Partial, Played, Preflight,
    Resumed, Sentence, Silence, Speech, Start, Token, ToolCall, ToolOutcome, ToolResult,
    Transcript, TtsChunk, Webhook,
};
pub use codec::{
    DecodeError, MAX_EVENT_BYTES, decode, decode_dead_letter, encode, encode_dead_letter,
};
pub use dead_letter::DeadLetter;
pub use envelope::{Envelope, SCHEMA_VERSION, now_micros};
pub use ids::{CallSid, IdError, TenantId};
