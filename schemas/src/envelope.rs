//! The envelope every event travels in.
//!
//! Produces nothing itself; services wrap a [`Body`] with the call's identity, the turn and
//! a producer timestamp. State: none.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Body, CallSid, TenantId};

/// The schema version written by this build. A reader accepts this version and older.
pub const SCHEMA_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Schema version (see [`SCHEMA_VERSION`]).
    pub v: u16,
    /// UUID v7; also the `Nats-Msg-Id`, so a republished event is stored once.
    pub id: Uuid,
    pub tenant: TenantId,
    pub call_sid: CallSid,
    /// Turn number: 0 is the greeting; stt starts a new turn per final utterance.
    pub turn: u32,
    /// Microseconds since the Unix epoch, producer clock.
    pub at: u64,
    pub body: Body,
}

impl Envelope {
    /// A new event with a fresh UUID v7 and the current time.
    pub fn new(tenant: TenantId, call_sid: CallSid, turn: u32, body: Body) -> Self {
        Self {
            v: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            tenant,
            call_sid,
            turn,
            at: now_micros(),
            body,
        }
    }

    /// A follow-up event of the same call and turn.
    pub fn follow(&self, body: Body) -> Self {
        Self::new(self.tenant.clone(), self.call_sid.clone(), self.turn, body)
    }

    pub fn kind(&self) -> crate::Kind {
        self.body.kind()
    }
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
