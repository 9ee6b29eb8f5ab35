//! Restoring a lost session: writes what [`crate::session_log`] rebuilt from the call's
//! events into `session:{call_sid}`, merged with whatever was written since the loss.
//!
//! A session is intact while it has its `tenant` field (the ingress writes it when the
//! socket starts; nothing else does): a Redis restarted empty, a failover or an eviction
//! leaves no `tenant`, even if a stage has since written a field of its own. Counters only
//! go up (`turn`, `bargein`, `stt_epoch` take the larger value), turns are merged by
//! (role, turn), and a field already present is never overwritten. State: the session hash.

use redis::Script;
use sb_schemas::{CallSid, TenantId};

use super::session::{MAX_TURNS, OutboundSession, Parties, Turn, outbound_fields};
use super::{Redis, RedisError, failed};

/// What the log says a call's session holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restore {
    pub tenant: Option<TenantId>,
    pub turn: u32,
    pub bargein: u64,
    pub stt_epoch: u64,
    pub stt_checkpoint: Option<u64>,
    /// Oldest first; the last [`MAX_TURNS`] are kept.
    pub turns: Vec<Turn>,
    pub outbound: Option<OutboundSession>,
    /// From the call's `start`.
    pub parties: Option<Parties>,
}

/// KEYS[1] the session; ARGV: tenant, turn, bargein, stt_epoch, stt_ckpt ('' = none),
/// turns (JSON list), max turns, ttl, then field/value pairs set only if absent.
const RESTORE: &str = r"
local key = KEYS[1]
local function raise(field, value)
  local now = tonumber(redis.call('HGET', key, field) or '0')
  if tonumber(value) > now then redis.call('HSET', key, field, value) end
end
redis.call('HSET', key, 'tenant', ARGV[1])
raise('turn', ARGV[2])
raise('bargein', ARGV[3])
raise('stt_epoch', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSETNX', key, 'stt_ckpt', ARGV[5]) end
local list = {}
local raw = redis.call('HGET', key, 'turns')
if raw and raw ~= '{}' then list = cjson.decode(raw) end
local seen = {}
for _, t in ipairs(list) do seen[t.role .. ':' .. tostring(t.turn)] = true end
for _, t in ipairs(cjson.decode(ARGV[6])) do
  if not seen[t.role .. ':' .. tostring(t.turn)] then table.insert(list, t) end
end
table.sort(list, function(a, b)
  if tonumber(a.turn) ~= tonumber(b.turn) then return tonumber(a.turn) < tonumber(b.turn) end
  return a.role == 'user' and b.role ~= 'user'
end)
while #list > tonumber(ARGV[7]) do table.remove(list, 1) end
if #list > 0 then redis.call('HSET', key, 'turns', cjson.encode(list)) end
for i = 9, #ARGV, 2 do redis.call('HSETNX', key, ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', key, ARGV[8])
return 1
";

impl Redis {
    /// Whether the session is intact (has its `tenant`): false after a loss.
    pub async fn session_intact(&self, sid: &CallSid) -> Result<bool, RedisError> {
        redis::cmd("HEXISTS")
            .arg(self.keys.session(sid))
            .arg("tenant")
            .query_async(&mut self.conn())
            .await
            .map_err(failed("session_intact"))
    }

    /// Writes a rebuilt session, merged with what is there (see the module docs).
    pub async fn session_restore(
        &self,
        sid: &CallSid,
        tenant: &TenantId,
        restore: &Restore,
    ) -> Result<(), RedisError> {
        let turns = serde_json::to_string(&restore.turns).expect("turns serialise");
        let script = Script::new(RESTORE);
        let mut invocation = script.key(self.keys.session(sid));
        invocation
            .arg(tenant.as_str())
            .arg(restore.turn)
            .arg(restore.bargein)
            .arg(restore.stt_epoch)
            .arg(
                restore
                    .stt_checkpoint
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
            )
            .arg(turns)
            .arg(MAX_TURNS)
            .arg(self.session_ttl.as_secs().max(1));
        if let Some(outbound) = &restore.outbound {
            invocation
                .arg("ob")
                .arg("1")
                .arg("ob_amd")
                .arg(if outbound.amd { "1" } else { "0" });
            for (field, value) in outbound_fields(outbound) {
                if let Some(value) = value {
                    invocation.arg(field).arg(value.as_str());
                }
            }
        }
        if let Some(parties) = &restore.parties {
            invocation
                .arg("from")
                .arg(parties.from.as_str())
                .arg("to")
                .arg(parties.to.as_str());
        }
        invocation
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(failed("session_restore"))
    }
}
