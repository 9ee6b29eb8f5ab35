//! Sessions: `session:{call_sid}`, a hash holding what a call needs across stateless workers.
//!
//! Fields: `tenant`, `turns` (JSON, the last 8 turns), `turn` (the call's latest turn
//! number), `bargein` (the barge-in token: one past the last interrupted turn), `stt_epoch`
//! and `stt_ckpt` (the STT owner's fencing epoch and audio checkpoint), `action` (the
//! agent's pending hang-up or transfer), `cfg` (the revision of the live tenants file the
//! call started with, [`crate::tenants::LiveTenants::for_call`]). The TTL (30 min by default) is refreshed on every
//! turn and shortened when the call ends. A session without its `tenant` was lost (a Redis
//! restarted empty, a failover, an eviction): it reads as `None`, never an error, and the
//! turn counter and barge-in token refuse to move on it, so the caller rebuilds it from the
//! call's events first ([`crate::session_log`], ARCHITECTURE §6).

use std::{collections::HashMap, time::Duration};

use redis::Script;
use sb_schemas::{CallSid, TenantId};
use serde::{Deserialize, Serialize};

use super::{Redis, RedisError, failed};
use crate::progress::Progress;

/// How many turns a session keeps.
pub const MAX_TURNS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub text: String,
    pub turn: u32,
    /// An assistant turn the caller interrupted; `text` is what was played.
    #[serde(default)]
    pub interrupted: bool,
}

/// A keypad entry as the caller's words: the user turn the agent stores and the model reads
/// for it, and what a session rebuilt from the log restores (one text for both).
pub fn keys_pressed(digits: &str) -> String {
    format!("The caller pressed the keys: {}", digits.trim())
}

/// A call's session as read from Redis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Session {
    pub tenant: Option<TenantId>,
    pub turns: Vec<Turn>,
    pub turn: u32,
    pub bargein: u64,
    pub stt_epoch: u64,
    pub stt_checkpoint: Option<u64>,
    /// Set for an outbound campaign call (by the ingress, from its dial attempt).
    pub outbound: Option<OutboundSession>,
    /// Who the call is between (from Twilio's `start`; `None` before it).
    pub parties: Option<Parties>,
}

/// The call's numbers, as Twilio's `start` gave them (session fields `from`, `to`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parties {
    pub from: String,
    pub to: String,
}

/// What an outbound campaign call changes for the agent: the campaign's greeting and
/// prompt with the contact's variables filled in, and whether machine detection runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundSession {
    /// Replaces the tenant's greeting.
    pub greeting: Option<String>,
    /// Replaces the tenant's system prompt.
    pub prompt: Option<String>,
    /// Machine detection runs: greet on `answered_by`, not on `start`.
    pub amd: bool,
    /// The campaign and contact the call is for (what a tenant's tools are told).
    pub campaign: Option<String>,
    pub contact: Option<String>,
    /// The contact's variables as a JSON object (text).
    pub vars: Option<String>,
}

/// The optional text fields of an outbound session, as (session field, value).
pub(crate) fn outbound_fields(outbound: &OutboundSession) -> [(&'static str, &Option<String>); 5] {
    [
        ("ob_greeting", &outbound.greeting),
        ("ob_prompt", &outbound.prompt),
        ("ob_campaign", &outbound.campaign),
        ("ob_contact", &outbound.contact),
        ("ob_vars", &outbound.vars),
    ]
}

impl Session {
    /// The turn counter and barge-in token, for [`Progress::stale`].
    pub fn progress(&self) -> Progress {
        Progress {
            turn: self.turn,
            bargein: self.bargein,
        }
    }
}

/// Appends a turn, keeps the last ARGV[2], refreshes the TTL.
const PUSH_TURN: &str = r"
local list = {}
local raw = redis.call('HGET', KEYS[1], 'turns')
if raw then list = cjson.decode(raw) end
table.insert(list, cjson.decode(ARGV[1]))
while #list > tonumber(ARGV[2]) do table.remove(list, 1) end
redis.call('HSET', KEYS[1], 'turns', cjson.encode(list))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return #list
";

/// Starts the next turn: one past the stored counter and past ARGV[1] (the caller's own
/// last turn, so a counter that lost its last second of writes never repeats a number).
/// Returns -1, changing nothing, when the session was lost.
const NEXT_TURN: &str = r"
if redis.call('HEXISTS', KEYS[1], 'tenant') == 0 then return -1 end
local turn = redis.call('HINCRBY', KEYS[1], 'turn', 1)
if turn <= tonumber(ARGV[1]) then
  turn = tonumber(ARGV[1]) + 1
  redis.call('HSET', KEYS[1], 'turn', turn)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return turn
";

/// Raises the barge-in token to ARGV[1] if it is lower; returns the token, or -1 (changing
/// nothing) when the session was lost.
const INTERRUPT: &str = r"
if redis.call('HEXISTS', KEYS[1], 'tenant') == 0 then return -1 end
local token = tonumber(redis.call('HGET', KEYS[1], 'bargein') or '0')
if tonumber(ARGV[1]) > token then
  token = tonumber(ARGV[1])
  redis.call('HSET', KEYS[1], 'bargein', token)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return token
";

/// Stores the STT checkpoint unless a newer epoch already owns the call (fencing).
const CHECKPOINT: &str = r"
local epoch = tonumber(redis.call('HGET', KEYS[1], 'stt_epoch') or '0')
if tonumber(ARGV[1]) < epoch then return 0 end
redis.call('HSET', KEYS[1], 'stt_epoch', ARGV[1], 'stt_ckpt', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Sets the text of assistant turn ARGV[1] to ARGV[2] and marks it interrupted (the agent,
/// on a barge-in: keep what was played). Returns 1 if the turn was found, 0 if not.
const TRUNCATE_TURN: &str = r"
local raw = redis.call('HGET', KEYS[1], 'turns')
if not raw or raw == '{}' then return 0 end
local list = cjson.decode(raw)
for i = #list, 1, -1 do
  local t = list[i]
  if t.role == 'assistant' and tonumber(t.turn) == tonumber(ARGV[1]) then
    t.text = ARGV[2]
    t.interrupted = true
    redis.call('HSET', KEYS[1], 'turns', cjson.encode(list))
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    return 1
  end
end
return 0
";

impl Redis {
    /// Creates (or touches) the session of a starting call, with its numbers and the
    /// revision of the tenants file it is served with (kept if the session has one).
    pub async fn session_start(
        &self,
        sid: &CallSid,
        tenant: &TenantId,
        parties: &Parties,
        config_revision: u64,
    ) -> Result<(), RedisError> {
        let key = self.keys.session(sid);
        redis::pipe()
            .atomic()
            .hset(&key, "tenant", tenant.as_str())
            .ignore()
            .hset_nx(&key, "cfg", config_revision)
            .ignore()
            .hset(&key, "from", &parties.from)
            .ignore()
            .hset(&key, "to", &parties.to)
            .ignore()
            .expire(&key, self.ttl_secs())
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(failed("session_start"))
    }

    /// The revision of the tenants file the call started with; `None` when the session
    /// has none (lost, or started before live configuration).
    pub async fn session_config_revision(&self, sid: &CallSid) -> Result<Option<u64>, RedisError> {
        redis::cmd("HGET")
            .arg(self.keys.session(sid))
            .arg("cfg")
            .query_async(&mut self.conn())
            .await
            .map_err(failed("session_config_revision"))
    }

    /// Reads the session; `None` when there is none (never started, expired or evicted).
    pub async fn session_load(&self, sid: &CallSid) -> Result<Option<Session>, RedisError> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.session(sid))
            .query_async(&mut self.conn())
            .await
            .map_err(failed("session_load"))?;
        if !fields.contains_key("tenant") {
            return Ok(None);
        }
        let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
        let turns = match fields.get("turns") {
            // cjson encodes an empty table as `{}`.
            Some(raw) if raw != "{}" => {
                serde_json::from_str(raw).map_err(|e| RedisError::Corrupt {
                    what: "session turns",
                    reason: e.to_string(),
                })?
            }
            _ => Vec::new(),
        };
        Ok(Some(Session {
            tenant: fields.get("tenant").and_then(|t| TenantId::parse(t).ok()),
            turns,
            turn: number("turn").unwrap_or(0) as u32,
            bargein: number("bargein").unwrap_or(0),
            stt_epoch: number("stt_epoch").unwrap_or(0),
            stt_checkpoint: number("stt_ckpt"),
            outbound: fields.get("ob").map(|_| OutboundSession {
                greeting: fields.get("ob_greeting").cloned(),
                prompt: fields.get("ob_prompt").cloned(),
                amd: fields.get("ob_amd").is_some_and(|v| v == "1"),
                campaign: fields.get("ob_campaign").cloned(),
                contact: fields.get("ob_contact").cloned(),
                vars: fields.get("ob_vars").cloned(),
            }),
            parties: match (fields.get("from"), fields.get("to")) {
                (Some(from), Some(to)) => Some(Parties {
                    from: from.clone(),
                    to: to.clone(),
                }),
                _ => None,
            },
        }))
    }

    /// Starts an outbound call's session from its dial attempt: the tenant and the
    /// campaign's overrides, before the media stream starts.
    pub async fn session_outbound(
        &self,
        sid: &CallSid,
        tenant: &TenantId,
        outbound: &OutboundSession,
    ) -> Result<(), RedisError> {
        let key = self.keys.session(sid);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&key, "tenant", tenant.as_str())
            .ignore()
            .hset(&key, "ob", "1")
            .ignore()
            .hset(&key, "ob_amd", if outbound.amd { "1" } else { "0" })
            .ignore();
        for (field, value) in outbound_fields(outbound) {
            if let Some(value) = value {
                pipe.hset(&key, field, value).ignore();
            }
        }
        pipe.expire(&key, self.ttl_secs())
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(failed("session_outbound"))
    }

    /// Appends a turn (keeping the last [`MAX_TURNS`]) and refreshes the TTL.
    pub async fn session_push_turn(&self, sid: &CallSid, turn: &Turn) -> Result<(), RedisError> {
        let json = serde_json::to_string(turn).expect("a turn serialises");
        Script::new(PUSH_TURN)
            .key(self.keys.session(sid))
            .arg(json)
            .arg(MAX_TURNS)
            .arg(self.ttl_secs())
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(failed("session_push_turn"))
    }

    /// Starts the call's next turn; returns its number (1, 2, …; 0 is the greeting), above
    /// `after` (the caller's own last turn) whatever the counter says. `None` when the
    /// session was lost: rebuild it from the log, then ask again.
    pub async fn session_next_turn(
        &self,
        sid: &CallSid,
        after: u32,
    ) -> Result<Option<u32>, RedisError> {
        let turn: i64 = Script::new(NEXT_TURN)
            .key(self.keys.session(sid))
            .arg(after)
            .arg(self.ttl_secs())
            .invoke_async(&mut self.conn())
            .await
            .map_err(failed("session_next_turn"))?;
        Ok(u32::try_from(turn).ok())
    }

    /// Records that the caller interrupted `turn`. The barge-in token becomes one past the
    /// highest interrupted turn, so every token, sentence and audio chunk of that turn or an
    /// earlier one is stale (`turn < token`; the greeting is turn 0). A late, older
    /// barge-in never lowers it. Returns the token; `None` when the session was lost.
    pub async fn session_interrupt(
        &self,
        sid: &CallSid,
        turn: u32,
    ) -> Result<Option<u64>, RedisError> {
        let token: i64 = Script::new(INTERRUPT)
            .key(self.keys.session(sid))
            .arg(u64::from(turn) + 1)
            .arg(self.ttl_secs())
            .invoke_async(&mut self.conn())
            .await
            .map_err(failed("session_interrupt"))?;
        Ok(u64::try_from(token).ok())
    }

    /// The call's latest turn number and barge-in token in one round trip: what every
    /// stage's "still wanted?" check reads ([`Progress::stale`] decides).
    pub async fn session_progress(&self, sid: &CallSid) -> Result<Progress, RedisError> {
        let (turn, bargein): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.keys.session(sid))
            .arg("turn")
            .arg("bargein")
            .query_async(&mut self.conn())
            .await
            .map_err(failed("session_progress"))?;
        Ok(Progress {
            turn: turn.unwrap_or(0) as u32,
            bargein: bargein.unwrap_or(0),
        })
    }

    /// Replaces the text of assistant turn `turn` with what the caller heard and marks it
    /// interrupted, atomically. Returns false when the session has no such turn (yet).
    pub async fn session_truncate_turn(
        &self,
        sid: &CallSid,
        turn: u32,
        heard: &str,
    ) -> Result<bool, RedisError> {
        Script::new(TRUNCATE_TURN)
            .key(self.keys.session(sid))
            .arg(turn)
            .arg(heard)
            .arg(self.ttl_secs())
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(|found| found == 1)
            .map_err(failed("session_truncate_turn"))
    }

    /// Stores (or, with `None`, clears) the call's pending action: what the agent does once
    /// a sentence has been played (hang up, transfer). The value is the agent's own encoding.
    pub async fn session_set_action(
        &self,
        sid: &CallSid,
        action: Option<&str>,
    ) -> Result<(), RedisError> {
        let key = self.keys.session(sid);
        let mut pipe = redis::pipe();
        match action {
            // With the TTL, so an action never outlives its session.
            Some(action) => pipe
                .atomic()
                .hset(&key, "action", action)
                .ignore()
                .expire(&key, self.ttl_secs())
                .ignore(),
            None => pipe.hdel(&key, "action").ignore(),
        };
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(failed("session_set_action"))
    }

    /// The call's pending action, if any (see [`Redis::session_set_action`]).
    pub async fn session_action(&self, sid: &CallSid) -> Result<Option<String>, RedisError> {
        redis::cmd("HGET")
            .arg(self.keys.session(sid))
            .arg("action")
            .query_async(&mut self.conn())
            .await
            .map_err(failed("session_action"))
    }

    /// Records the STT checkpoint for `epoch`. Returns false (and stores nothing) when a
    /// newer epoch owns the call: the caller is a stale owner.
    pub async fn session_checkpoint(
        &self,
        sid: &CallSid,
        epoch: u64,
        audio_seq: u64,
    ) -> Result<bool, RedisError> {
        Script::new(CHECKPOINT)
            .key(self.keys.session(sid))
            .arg(epoch)
            .arg(audio_seq)
            .arg(self.ttl_secs())
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(|stored| stored == 1)
            .map_err(failed("session_checkpoint"))
    }

    /// Shortens the TTL of an ended call's session.
    pub async fn session_end(&self, sid: &CallSid, keep: Duration) -> Result<(), RedisError> {
        redis::cmd("EXPIRE")
            .arg(self.keys.session(sid))
            .arg(keep.as_secs().max(1))
            .query_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(failed("session_end"))
    }

    fn ttl_secs(&self) -> i64 {
        self.session_ttl.as_secs().max(1) as i64
    }
}
