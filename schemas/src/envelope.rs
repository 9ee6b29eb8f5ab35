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

/// The UUID v5 namespace of [`Envelope::once`] ids (a random v4, fixed forever).
const ONCE_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b8e_4d3a_4f57_9a0e_5c7b_1d2e_3f40);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Schema version (see [`SCHEMA_VERSION`]).
    pub v: u16,
    /// UUID v7 (v5 for an event a call has once: [`Envelope::once`]); also the
    /// `Nats-Msg-Id`, so a republished event is stored once.
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

    /// An event a call has at most once (its `webhook`, its `end`): the id is a UUID v5 of
    /// the kind and the call sid, the same for every attempt. Publishing it again, as a
    /// Twilio retry does when Redis could not say whether the call was seen, is then stored
    /// once by the stream's duplicate window.
    pub fn once(tenant: TenantId, call_sid: CallSid, turn: u32, body: Body) -> Self {
        let name = format!("{}/{call_sid}", body.kind().as_str());
        Self {
            id: Uuid::new_v5(&ONCE_NAMESPACE, name.as_bytes()),
            ..Self::new(tenant, call_sid, turn, body)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{sid, tenant};
    use crate::{Dtmf, End, EndReason};

    fn end(reason: EndReason) -> Body {
        Body::End(End { reason })
    }

    /// `once` ids depend on the call and the kind only; `new` ids are fresh every time.
    #[test]
    fn once_ids_name_the_call_and_the_kind() {
        let acme = tenant();
        let first = Envelope::once(acme.clone(), sid(1), 0, end(EndReason::Stop));
        let again = Envelope::once(acme.clone(), sid(1), 4, end(EndReason::Completed));
        assert_eq!(first.id, again.id, "a second attempt keeps the id");
        assert_eq!(first.id.get_version_num(), 5);
        assert_ne!(
            first.id,
            Envelope::once(acme.clone(), sid(2), 0, end(EndReason::Stop)).id
        );
        let dtmf = || Body::Dtmf(Dtmf { digit: "1".into() });
        assert_ne!(first.id, Envelope::once(acme.clone(), sid(1), 0, dtmf()).id);
        let fresh = Envelope::new(acme.clone(), sid(1), 0, dtmf());
        assert_ne!(fresh.id, Envelope::new(acme, sid(1), 0, dtmf()).id);
        assert_eq!(fresh.id.get_version_num(), 7);
    }
}
