//! Handing a live call from one ingress replica to another (live call migration on drain).
//!
//! `handoff:{call_sid}` is a hash the draining socket writes before it asks Twilio to
//! connect the call's stream anew: `token` (random; the new socket brings it back in the
//! stream's parameters) and a provisional `seq`; once its stream stopped, `stopped`, the
//! final `seq` (the next caller-audio frame, from which the new socket numbers on) and
//! where its playback stood (`turn`, `sentence`, `chunk`, `offset`, `stale_below`,
//! `since_us`). The new socket takes the handoff with its
//! token, which also moves the live-socket claim to it (the old socket still holds it until
//! its stream stops).
//!
//! A stream that dropped without its call ending (its ingress replica was killed) is
//! connected anew the same way, from Twilio's `<Connect action>` request: the hash is
//! written `lost` (no old socket will report where it stopped; the new one reads that from
//! the log) by [`Redis::handoff_reconnect`], which also refuses a call that ended, a call
//! no socket was serving and a call that dropped [`MAX_RECONNECTS`] times within
//! [`HANDOFF_TTL`]. Consumes call sids and tokens; produces [`Handoff`]s and
//! [`Reconnect`]s. State: the hash, with a TTL of [`HANDOFF_TTL`].

use std::collections::HashMap;
use std::time::Duration;

use redis::Script;
use sb_schemas::CallSid;

use super::live_socket::LIVE_SOCKET_TTL;
use super::{Redis, RedisError, failed};

/// How long a handoff waits for its new socket.
pub const HANDOFF_TTL: Duration = Duration::from_secs(120);

/// How many times a call's dropped stream is connected anew within [`HANDOFF_TTL`].
pub const MAX_RECONNECTS: u32 = 3;

/// A handoff: the token, the next caller-audio frame, and (once the old stream stopped)
/// where its playback stood.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handoff {
    pub token: String,
    /// The next caller-audio frame: provisional when the handoff begins, final once the
    /// old stream stopped.
    pub seq: u64,
    /// The old stream stopped: the fields below are final.
    pub stopped: bool,
    /// The turn being played and the next (sentence, chunk, byte offset) not yet heard.
    pub turn: u32,
    pub sentence: u32,
    pub chunk: u32,
    pub offset: u32,
    /// Turns below this were interrupted.
    pub stale_below: u64,
    /// Producer time (µs) of the turn's first chunk: where its audio is read back from.
    pub since_us: u64,
    /// The old socket is gone (its replica died): the fields above are unknown, and the
    /// new socket reads the frame number and the playback position from the log.
    pub lost: bool,
}

/// What Twilio is told when a call's stream ended without the call ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconnect {
    /// Connect the stream anew with this handoff token.
    Token(String),
    /// The call ended (its `end` was claimed): hang up.
    Ended,
    /// No socket was serving the call (it was refused, or its claim expired): hang up.
    NotLive,
    /// The stream dropped [`MAX_RECONNECTS`] times already: hang up.
    TooMany,
}

impl Handoff {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("token", self.token.clone()),
            ("seq", self.seq.to_string()),
            ("stopped", u8::from(self.stopped).to_string()),
            ("turn", self.turn.to_string()),
            ("sentence", self.sentence.to_string()),
            ("chunk", self.chunk.to_string()),
            ("offset", self.offset.to_string()),
            ("stale_below", self.stale_below.to_string()),
            ("since_us", self.since_us.to_string()),
            ("lost", u8::from(self.lost).to_string()),
        ]
    }

    fn from_fields(fields: &HashMap<String, String>) -> Option<Self> {
        let number = |name: &str| fields.get(name).and_then(|v| v.parse::<u64>().ok());
        let small = |name: &str| number(name).and_then(|v| u32::try_from(v).ok());
        Some(Self {
            token: fields.get("token")?.clone(),
            seq: number("seq")?,
            stopped: number("stopped") == Some(1),
            turn: small("turn")?,
            sentence: small("sentence")?,
            chunk: small("chunk")?,
            offset: small("offset")?,
            stale_below: number("stale_below")?,
            since_us: number("since_us")?,
            lost: number("lost") == Some(1),
        })
    }
}

/// Takes KEYS[1] (the handoff) with token ARGV[1]: moves KEYS[2] (the live claim) to
/// ARGV[2]; returns the hash, or nothing for a wrong or missing token.
const TAKE: &str = r"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return {} end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
return redis.call('HGETALL', KEYS[1])
";

/// Writes the field/value pairs ARGV[2..] into KEYS[1] if its token is still ARGV[1].
const STOPPED: &str = r"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
";

/// KEYS: the `end` claim, the live claim, the handoff. ARGV: token, the most reconnects,
/// the TTL. The handoff's `reconnects` field counts the drops (a migration's `DEL` resets
/// it; a taken handoff keeps it until it expires).
const RECONNECT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 'ended' end
if redis.call('EXISTS', KEYS[2]) == 0 then return 'not_live' end
local n = tonumber(redis.call('HGET', KEYS[3], 'reconnects') or '0') + 1
if n > tonumber(ARGV[2]) then return 'too_many' end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'token', ARGV[1], 'seq', 0, 'stopped', 1, 'lost', 1,
  'turn', 0, 'sentence', 0, 'chunk', 0, 'offset', 0, 'stale_below', 0, 'since_us', 0,
  'reconnects', n)
redis.call('EXPIRE', KEYS[3], ARGV[3])
return 'token'
";

impl Redis {
    /// A call's stream ended without the call ending: records a `lost` handoff with a new
    /// token, unless the call ended, no socket was serving it, or it dropped too often.
    pub async fn handoff_reconnect(&self, sid: &CallSid) -> Result<Reconnect, RedisError> {
        let token = format!("{:032x}", rand::random::<u128>());
        let decided: String = Script::new(RECONNECT)
            .key(self.keys.idempotency(sid, Some("end")))
            .key(self.keys.live_socket(sid))
            .key(self.keys.handoff(sid))
            .arg(&token)
            .arg(MAX_RECONNECTS)
            .arg(HANDOFF_TTL.as_secs())
            .invoke_async(&mut self.conn())
            .await
            .map_err(failed("handoff_reconnect"))?;
        Ok(match decided.as_str() {
            "token" => Reconnect::Token(token),
            "ended" => Reconnect::Ended,
            "too_many" => Reconnect::TooMany,
            _ => Reconnect::NotLive,
        })
    }

    /// Records a handoff before the call is redirected.
    pub async fn handoff_begin(&self, sid: &CallSid, handoff: &Handoff) -> Result<(), RedisError> {
        let key = self.keys.handoff(sid);
        redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset_multiple(&key, &handoff.fields())
            .ignore()
            .expire(&key, HANDOFF_TTL.as_secs() as i64)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(failed("handoff_begin"))
    }

    /// Drops a handoff whose redirect failed (the call stays where it is).
    pub async fn handoff_cancel(&self, sid: &CallSid) -> Result<(), RedisError> {
        redis::cmd("DEL")
            .arg(self.keys.handoff(sid))
            .query_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(failed("handoff_cancel"))
    }

    /// The old stream stopped: the final frame number and playback position, if the
    /// handoff is still this one (`token`).
    pub async fn handoff_stopped(
        &self,
        sid: &CallSid,
        handoff: &Handoff,
    ) -> Result<(), RedisError> {
        let key = self.keys.handoff(sid);
        let mut fields = handoff.fields();
        fields.retain(|(name, _)| *name != "token");
        Script::new(STOPPED)
            .key(&key)
            .arg(&handoff.token)
            .arg(
                fields
                    .iter()
                    .flat_map(|(name, value)| [name.to_string(), value.clone()])
                    .collect::<Vec<_>>(),
            )
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(failed("handoff_stopped"))
    }

    /// The new socket takes the handoff with `token`, and the live claim for `owner`;
    /// `None` for a wrong or expired token.
    pub async fn handoff_take(
        &self,
        sid: &CallSid,
        token: &str,
        owner: &str,
    ) -> Result<Option<Handoff>, RedisError> {
        let fields: HashMap<String, String> = Script::new(TAKE)
            .key(self.keys.handoff(sid))
            .key(self.keys.live_socket(sid))
            .arg(token)
            .arg(owner)
            .arg(LIVE_SOCKET_TTL.as_secs())
            .invoke_async(&mut self.conn())
            .await
            .map_err(failed("handoff_take"))?;
        Ok(Handoff::from_fields(&fields))
    }

    /// The handoff as stored now (the new socket waits for its `seq`).
    pub async fn handoff_read(&self, sid: &CallSid) -> Result<Option<Handoff>, RedisError> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.handoff(sid))
            .query_async(&mut self.conn())
            .await
            .map_err(failed("handoff_read"))?;
        Ok(Handoff::from_fields(&fields))
    }
}
