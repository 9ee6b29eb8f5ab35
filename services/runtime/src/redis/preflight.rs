//! Preflight answers: `preflight:{call_sid}:{turn}`, the answer the agent started on a
//! stable interim transcript, held aside until the final transcript confirms it.
//!
//! Consumes the agent's three steps of a preflight turn: the preflight starts
//! ([`Redis::preflight_begin`]), its answer ends ([`Redis::preflight_finish`]) and the
//! transcript of the same turn arrives ([`Redis::preflight_confirm`]), in either order of
//! the last two. Produces the conversation: whichever of the last two comes second pushes
//! the user turn (the transcript's words) and the assistant turn (the answer, one line per
//! sentence) into `session:{call_sid}`, once, in the same script; an unconfirmed preflight
//! never reaches the session, so a discarded one leaves no trace in the history the model
//! reads. A transcript that finds no record claims the turn (`owner = transcript`), so a
//! preflight delivered after it does not answer the turn a second time.
//! State: one hash per preflight turn (`owner`, `user`, `final`, `done`, `answer`,
//! `interrupted`, `confirmed`, `user_pushed`, `pushed`), expiring [`PREFLIGHT_TTL`] after its last write.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use sb_schemas::CallSid;

use super::session::{MAX_TURNS, Turn};
use super::{Redis, RedisError, failed};

/// How long a record outlives its last write: the final transcript follows its preflight
/// within a second or two; a discarded one is simply left to expire.
pub const PREFLIGHT_TTL: Duration = Duration::from_secs(120);

/// What starting a preflight answer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreflightStart {
    /// Nobody answers this turn yet: the preflight does.
    Go,
    /// The transcript came first and answers the turn itself.
    Claimed,
    /// The preflight was answered before (a redelivery): its answer, one line per
    /// sentence, to say again under the same ids (a lost publish is stored then).
    Done(String),
}

/// What the transcript of a turn found of its preflight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// No preflight answers this turn (the transcript has claimed it): answer it.
    Absent,
    /// Confirmed while the preflight is still answering: the user turn is in the session
    /// now (the next turn's request reads it, as an ordinary answer's), the answer goes in
    /// when it ends.
    Pending,
    /// The preflight had finished: both turns are in the session now (or already were).
    Settled,
}

/// Appends to the session's turns (KEYS[2]) the user turn (the transcript's words) and
/// then the assistant turn (the answer, one line per sentence) of the record (KEYS[1]),
/// each once; ARGV[1] the turn, ARGV[2] turns kept, ARGV[3] the session's TTL.
const PUSH: &str = r"
local function append(entry)
  local list = {}
  local raw = redis.call('HGET', KEYS[2], 'turns')
  if raw and raw ~= '{}' then list = cjson.decode(raw) end
  table.insert(list, entry)
  while #list > tonumber(ARGV[2]) do table.remove(list, 1) end
  redis.call('HSET', KEYS[2], 'turns', cjson.encode(list))
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
local function push_user()
  if redis.call('HGET', KEYS[1], 'user_pushed') == '1' then return end
  append({role = 'user', text = redis.call('HGET', KEYS[1], 'final') or '',
    turn = tonumber(ARGV[1]), interrupted = false})
  redis.call('HSET', KEYS[1], 'user_pushed', '1')
end
local function push()
  if redis.call('HGET', KEYS[1], 'pushed') == '1' then return end
  push_user()
  local r = redis.call('HMGET', KEYS[1], 'answer', 'interrupted')
  append({role = 'assistant', text = r[1] or '', turn = tonumber(ARGV[1]),
    interrupted = (r[2] == '1')})
  redis.call('HSET', KEYS[1], 'pushed', '1')
end
";

/// ARGV[4] the user's words, ARGV[5] the record's TTL. {1} go, {0} claimed, {2, answer}
/// done.
const BEGIN: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner == 'transcript' then return {0, ''} end
if redis.call('HGET', KEYS[1], 'done') == '1' then
  return {2, redis.call('HGET', KEYS[1], 'answer') or ''}
end
redis.call('HSET', KEYS[1], 'owner', 'preflight', 'user', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {1, ''}
";

/// ARGV[4] the answer, ARGV[5] interrupted (0/1), ARGV[6] the record's TTL. 1: pushed now.
const FINISH: &str = r"
redis.call('HSET', KEYS[1], 'done', '1', 'answer', ARGV[4], 'interrupted', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if redis.call('HGET', KEYS[1], 'confirmed') ~= '1' then return 0 end
local before = redis.call('HGET', KEYS[1], 'pushed')
push()
if before == '1' then return 0 end
return 1
";

/// ARGV[4] the transcript's text, ARGV[5] the record's TTL. 0 absent, 1 pending, 2 settled.
const CONFIRM: &str = r"
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner ~= 'preflight' then
  redis.call('HSET', KEYS[1], 'owner', 'transcript')
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 0
end
redis.call('HSET', KEYS[1], 'confirmed', '1', 'final', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
if redis.call('HGET', KEYS[1], 'done') ~= '1' then
  push_user()
  return 1
end
push()
return 2
";

static BEGIN_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_push(BEGIN));
static FINISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_push(FINISH));
static CONFIRM_SCRIPT: LazyLock<Script> = LazyLock::new(|| with_push(CONFIRM));

fn with_push(body: &str) -> Script {
    Script::new(&format!("{PUSH}{body}"))
}

impl Redis {
    /// The agent starts answering preflight turn `turn` of `sid` with `user` (the interim
    /// words), unless its transcript claimed the turn first or it was answered before.
    pub async fn preflight_begin(
        &self,
        sid: &CallSid,
        turn: u32,
        user: &str,
    ) -> Result<PreflightStart, RedisError> {
        let (started, answer): (i64, String) = self
            .preflight_script(&BEGIN_SCRIPT, sid, turn)
            .arg(user)
            .arg(PREFLIGHT_TTL.as_secs())
            .invoke_async(&mut self.conn())
            .await
            .map_err(failed("preflight_begin"))?;
        Ok(match started {
            0 => PreflightStart::Claimed,
            2 => PreflightStart::Done(answer),
            _ => PreflightStart::Go,
        })
    }

    /// The preflight answer of `turn` ended (`answer.text`: its sentences, one per line;
    /// `answer.interrupted`: it stopped early). True when its transcript had confirmed it:
    /// the answer went into the session now (after the user turn).
    pub async fn preflight_finish(
        &self,
        sid: &CallSid,
        turn: u32,
        answer: &Turn,
    ) -> Result<bool, RedisError> {
        let pushed: i64 = self
            .preflight_script(&FINISH_SCRIPT, sid, turn)
            .arg(&answer.text)
            .arg(u8::from(answer.interrupted))
            .arg(PREFLIGHT_TTL.as_secs())
            .invoke_async(&mut self.conn())
            .await
            .map_err(failed("preflight_finish"))?;
        Ok(pushed == 1)
    }

    /// The transcript of `turn` (its words `text`) arrived: confirms the turn's preflight
    /// (its user turn goes into the session now), or claims the turn when there is none.
    pub async fn preflight_confirm(
        &self,
        sid: &CallSid,
        turn: u32,
        text: &str,
    ) -> Result<Confirmation, RedisError> {
        let found: i64 = self
            .preflight_script(&CONFIRM_SCRIPT, sid, turn)
            .arg(text)
            .arg(PREFLIGHT_TTL.as_secs())
            .invoke_async(&mut self.conn())
            .await
            .map_err(failed("preflight_confirm"))?;
        Ok(match found {
            1 => Confirmation::Pending,
            2 => Confirmation::Settled,
            _ => Confirmation::Absent,
        })
    }

    /// Whether the transcript of preflight turn `turn` has confirmed it.
    pub async fn preflight_confirmed(&self, sid: &CallSid, turn: u32) -> Result<bool, RedisError> {
        let confirmed: Option<String> = redis::cmd("HGET")
            .arg(self.keys.preflight(sid, turn))
            .arg("confirmed")
            .query_async(&mut self.conn())
            .await
            .map_err(failed("preflight_confirmed"))?;
        Ok(confirmed.as_deref() == Some("1"))
    }

    /// A script over the record and the session, with the arguments `push` reads.
    fn preflight_script<'s>(
        &self,
        script: &'s Script,
        sid: &CallSid,
        turn: u32,
    ) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.preflight(sid, turn))
            .key(self.keys.session(sid))
            .arg(turn)
            .arg(MAX_TURNS)
            .arg(self.session_ttl.as_secs().max(1));
        invocation
    }
}
