//! The campaign queue's vocabulary, pure: validated ids, the ready score, the contact
//! record's encoding, call outcomes and the retry policy.
//!
//! Consumes raw ids, priorities and outcomes; produces the exact strings and numbers the
//! scripts of [`super::scripts`] store (ARCHITECTURE §6, "The campaign queue"). No state:
//! everything here is a function of its arguments, tested in-file (ring 1).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why an id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueIdError {
    #[error("invalid campaign id {0:?}: expected 1-32 characters of [a-z0-9_-]")]
    Campaign(String),
    #[error("invalid contact id {0:?}: expected 1-64 characters of [A-Za-z0-9_.-]")]
    Contact(String),
    #[error("invalid account sid {0:?}: expected \"AC\" followed by 32 hex digits")]
    Account(String),
}

fn clip(raw: &str) -> String {
    raw.chars().take(80).collect()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $variant:ident, $ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, QueueIdError> {
                let ok: fn(&str) -> bool = $ok;
                if ok(raw) {
                    Ok(Self(raw.to_owned()))
                } else {
                    Err(QueueIdError::$variant(clip(raw)))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A campaign id, unique within its tenant: `[a-z0-9_-]{1,32}` (a key part; never `|`,
    /// `:` or `*`, which the scripts use as separators and the tenant-total field).
    CampaignId,
    Campaign,
    |raw| {
        (1..=32).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    }
);

id_type!(
    /// A contact id, unique within its campaign (the campaign API's row id):
    /// `[A-Za-z0-9_.-]{1,64}`.
    ContactId,
    Contact,
    |raw| {
        (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    }
);

id_type!(
    /// A Twilio account sid (`AC` + 32 hex digits): whose calls-per-second limit applies.
    AccountSid,
    Account,
    |raw| raw.len() == 34 && raw.starts_with("AC") && raw.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
);

/// Bits of the ready score below the priority band: the per-campaign sequence number.
pub const SEQ_BITS: u32 = 36;
const SEQ_SPAN: u64 = 1 << SEQ_BITS;

/// The ready ZSET's score: `(65535 − priority) · 2^36 + seq`. `ZPOPMIN` then takes the
/// highest priority first and, within one, the lowest sequence (FIFO). The largest score
/// is below 2^52, so a double holds every one exactly. `seq` wraps past 2^36 (68 billion
/// enqueues in one campaign), which no campaign reaches.
pub fn ready_score(priority: u16, seq: u64) -> u64 {
    u64::from(u16::MAX - priority) * SEQ_SPAN + (seq % SEQ_SPAN)
}

/// The inverse of [`ready_score`]: `(priority, seq)`.
pub fn decode_score(score: u64) -> (u16, u64) {
    let band = u16::try_from(score / SEQ_SPAN).unwrap_or(u16::MAX);
    (u16::MAX - band, score % SEQ_SPAN)
}

/// What a dialer hands the queue: who to call and what the agent should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewContact {
    pub id: ContactId,
    pub priority: u16,
    /// Not before this time (ms since the epoch, the caller's clock); 0 or a past time: now.
    pub not_before_ms: u64,
    pub payload: ContactPayload,
}

/// The part of a contact only the dialer reads, stored as JSON with one-letter keys
/// (the record is most of the queue's memory per contact).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContactPayload {
    #[serde(rename = "p")]
    pub phone: String,
    #[serde(rename = "v", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

/// Where a contact is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactState {
    /// In the ready or the delayed ZSET.
    Queued,
    /// Popped; in the lease ZSET, holding a slot.
    Leased,
    /// A dial attempt is open (the call may be ringing or live); holding a slot.
    Calling,
    /// Finished: the call happened (answered, or a voicemail was left).
    Done,
    /// Finished: attempts exhausted or the outcome does not retry; `reason` says why.
    Failed,
    /// Finished: its campaign was cancelled (or it was, mid-call).
    Canceled,
}

impl ContactState {
    pub const ALL: [ContactState; 6] = [
        Self::Queued,
        Self::Leased,
        Self::Calling,
        Self::Done,
        Self::Failed,
        Self::Canceled,
    ];

    /// The one-letter code the scripts store.
    pub const fn code(self) -> &'static str {
        match self {
            Self::Queued => "q",
            Self::Leased => "l",
            Self::Calling => "c",
            Self::Done => "d",
            Self::Failed => "f",
            Self::Canceled => "x",
        }
    }

    /// The name the API shows.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Leased => "leased",
            Self::Calling => "calling",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// From a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// From an API name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A contact record as stored: `state|attempts|priority|seq|token|reason|payload` (the
/// scripts read and write the same shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRecord {
    pub state: ContactState,
    pub attempts: u32,
    pub priority: u16,
    pub seq: u64,
    /// Raised by every pop: a stale holder's `complete` or `release` is refused.
    pub token: u64,
    /// The last attempt's outcome (empty before the first).
    pub reason: String,
    pub payload: String,
}

impl ContactRecord {
    /// Parses a stored record; `None` when it has another shape.
    pub fn decode(raw: &str) -> Option<Self> {
        let mut parts = raw.splitn(7, '|');
        let mut next = || parts.next();
        let state = ContactState::from_code(next()?)?;
        let attempts = next()?.parse().ok()?;
        let priority = next()?.parse().ok()?;
        let seq = next()?.parse().ok()?;
        let token = next()?.parse().ok()?;
        let reason = next()?.to_owned();
        let payload = next()?.to_owned();
        Some(Self {
            state,
            attempts,
            priority,
            seq,
            token,
            reason,
            payload,
        })
    }
}

/// How a call attempt ended: Twilio's final call statuses, a voicemail left on an
/// answering machine, and a Twilio REST refusal of the call (`error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Answered by a person and ran to its end.
    Completed,
    /// Answered by a machine; the campaign's voicemail message was left.
    Voicemail,
    Busy,
    NoAnswer,
    /// The carrier refused the call.
    Failed,
    Canceled,
    /// Twilio refused to create the call (a 4xx other than 429: a bad number, a
    /// permission); the error code is logged and counted.
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Completed,
        Outcome::Voicemail,
        Outcome::Busy,
        Outcome::NoAnswer,
        Outcome::Failed,
        Outcome::Canceled,
        Outcome::Error,
    ];

    /// The stored reason (Twilio's status name where there is one).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Voicemail => "voicemail",
            Outcome::Busy => "busy",
            Outcome::NoAnswer => "no-answer",
            Outcome::Failed => "failed",
            Outcome::Canceled => "canceled",
            Outcome::Error => "error",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == raw)
    }

    /// The call reached someone (or their voicemail): the contact is done unless the
    /// policy retries it.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Completed | Outcome::Voicemail)
    }
}

/// Which outcomes are tried again, how often, and how far apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retry_on: Vec<Outcome>,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// From an attempt's end to the next attempt's not-before time.
    pub spacing: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retry_on: vec![Outcome::Busy, Outcome::NoAnswer, Outcome::Failed],
            max_attempts: 3,
            spacing: Duration::from_secs(30 * 60),
        }
    }
}

/// What happens to a contact after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Done,
    /// Queued again, not before `now + spacing`.
    Retry,
    Failed,
}

impl RetryPolicy {
    /// The attempt count below which `outcome` is retried (0: never). The `COMPLETE`
    /// script applies exactly `attempts < limit`, with the attempt just made counted.
    pub fn retry_limit(&self, outcome: Outcome) -> u32 {
        if self.retry_on.contains(&outcome) {
            self.max_attempts
        } else {
            0
        }
    }

    /// The decision after `attempts` attempts (this one included) ended in `outcome`.
    pub fn decide(&self, outcome: Outcome, attempts: u32) -> Decision {
        if attempts < self.retry_limit(outcome) {
            Decision::Retry
        } else if outcome.is_success() {
            Decision::Done
        } else {
            Decision::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores round-trip, and sorting by score is priority (high first) then seq (low first).
    #[test]
    fn scores_round_trip_and_order_priority_then_fifo() {
        let cases = [
            (0, 0),
            (0, SEQ_SPAN - 1),
            (u16::MAX, 0),
            (u16::MAX, SEQ_SPAN - 1),
            (5, 7),
            (9, 1),
        ];
        for (p, s) in cases {
            assert_eq!(decode_score(ready_score(p, s)), (p, s), "{p} {s}");
            assert!(ready_score(p, s) < 1 << 53, "exact as a double");
        }
        let mut items = vec![(1, 3), (5, 2), (1, 1), (9, 10), (5, 1), (0, 0), (9, 2)];
        items.sort_by_key(|&(p, s)| ready_score(p, s));
        assert_eq!(
            items,
            [(9, 2), (9, 10), (5, 1), (5, 2), (1, 1), (1, 3), (0, 0)]
        );
        // As the doubles Redis stores: no two adjacent scores collapse.
        let a = ready_score(0, SEQ_SPAN - 2) as f64;
        let b = ready_score(0, SEQ_SPAN - 1) as f64;
        assert!(a < b);
    }

    /// (outcome, attempts so far) → decision, for the default policy (3 attempts; busy,
    /// no-answer and failed retry).
    #[test]
    fn retry_policy_table() {
        use Decision as D;
        use Outcome as O;
        let p = RetryPolicy::default();
        for (outcome, attempts, want) in [
            (O::Completed, 1, D::Done),
            (O::Completed, 3, D::Done),
            (O::Busy, 1, D::Retry),
            (O::Busy, 2, D::Retry),
            (O::Busy, 3, D::Failed),
            (O::NoAnswer, 2, D::Retry),
            (O::NoAnswer, 4, D::Failed),
            (O::Failed, 1, D::Retry),
            (O::Failed, 3, D::Failed),
            (O::Canceled, 1, D::Failed),
            (O::Voicemail, 1, D::Done),
            (O::Error, 1, D::Failed),
        ] {
            assert_eq!(p.decide(outcome, attempts), want, "{outcome:?} {attempts}");
        }
        let never = RetryPolicy {
            retry_on: vec![],
            ..RetryPolicy::default()
        };
        assert!(Outcome::ALL.iter().all(|&o| never.retry_limit(o) == 0));
    }

    #[test]
    fn records_decode_and_ids_validate() {
        let r = ContactRecord::decode("f|3|5|12|4|busy|{\"p\":\"+1|2\"}").unwrap();
        assert_eq!(r.state, ContactState::Failed);
        assert_eq!((r.attempts, r.priority, r.seq, r.token), (3, 5, 12, 4));
        assert_eq!(
            (r.reason.as_str(), r.payload.as_str()),
            ("busy", "{\"p\":\"+1|2\"}")
        );
        assert!(ContactRecord::decode("z|1|1|1|1||{}").is_none());
        assert_eq!(
            ContactRecord::decode("x|0|1|1|1|canceled|{}").map(|r| r.state),
            Some(ContactState::Canceled)
        );
        assert!(ContactRecord::decode("q|1|1|1").is_none());
        assert!(CampaignId::parse("spring-sale_2").is_ok());
        let long = "a".repeat(33);
        for bad in ["", "A", "a|b", "a:b", "*", long.as_str()] {
            assert!(CampaignId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ContactId::parse("Row-17.b_2").is_ok());
        assert!(ContactId::parse("a|b").is_err());
        assert!(AccountSid::parse(&format!("AC{}", "0f".repeat(16))).is_ok());
        assert!(AccountSid::parse("AC123").is_err());
    }
}
