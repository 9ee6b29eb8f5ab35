//! The campaign queue's Lua scripts: every move of a contact is one script, so it is
//! atomic and two dialers never take the same contact.
//!
//! Consumes, in every script but `CPS`, the global keys as KEYS (tenants ring, due index,
//! leases, depth) and the per-tenant and per-campaign key templates
//! from [`super::super::Keys`] as ARGV[1..7] (`{t}` and `{c}` are filled in here, since
//! which campaign a pop serves is decided inside the script; the state instance is one
//! Redis, not a cluster). Time is always the caller's `now` (ms), never Redis' `TIME`, so
//! tests inject it. Produces the replies `super` decodes. State: the keys of ARCHITECTURE
//! §6, "The campaign queue".

use std::sync::LazyLock;

use redis::Script;

/// Helpers shared by the queue scripts. Templates: 1 ready, 2 delayed, 3 contacts, 4 seq,
/// 5 campaigns, 6 active, 7 caps. Records are `state|attempts|priority|seq|token|reason|payload`
/// (`model::ContactRecord`); scores are `model::ready_score`, transcribed.
const PRELUDE: &str = r"
local TENANTS, DUE, LEASES, DEPTH = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local function key(i, t, c)
  local s = string.gsub(ARGV[i], '{t}', t)
  if c then s = string.gsub(s, '{c}', c) end
  return s
end
local function score(pr, sq) return (65535 - pr) * 68719476736 + sq end
local function get(t, c, id)
  local v = redis.call('HGET', key(3, t, c), id)
  if not v then return nil end
  local st, a, pr, sq, tk, rs, body =
    string.match(v, '^(%a)|(%d+)|(%d+)|(%d+)|(%d+)|([^|]*)|(.*)$')
  if not st then return nil end
  return {st = st, a = tonumber(a), pr = tonumber(pr), sq = tonumber(sq), tk = tonumber(tk),
          rs = rs, body = body}
end
local function put(t, c, id, r)
  redis.call('HSET', key(3, t, c), id, r.st .. '|' .. string.format('%d|%d|%d|%d|', r.a, r.pr,
    r.sq, r.tk) .. r.rs .. '|' .. r.body)
end
-- Puts member at the back of a ring (one past its highest score); flag NX: only if new.
local function back(ring, member, flag)
  local last = redis.call('ZRANGE', ring, -1, -1, 'WITHSCORES')
  local s = 1
  if last[2] then s = tonumber(last[2]) + 1 end
  redis.call('ZADD', ring, flag, s, member)
end
-- The campaign joins its tenant's ring and the tenant the global ring, at the back; a
-- member already there keeps its place.
local function mark_ready(t, c)
  back(key(5, t), c, 'NX')
  back(TENANTS, t, 'NX')
end
-- Ready now (true) or delayed until nb (false, and the due index learns the earlier time).
local function schedule(t, c, id, r, nb, now)
  if nb <= now then
    redis.call('ZADD', key(1, t, c), score(r.pr, r.sq), id)
    return true
  end
  redis.call('ZADD', key(2, t, c), nb, id)
  local m = t .. '|' .. c
  local cur = redis.call('ZSCORE', DUE, m)
  if (not cur) or nb < tonumber(cur) then redis.call('ZADD', DUE, nb, m) end
  return false
end
local function depth(t, n)
  if tonumber(redis.call('ZINCRBY', DEPTH, n, t)) <= 0 then redis.call('ZREM', DEPTH, t) end
end
local function unslot(t, c)
  local a = key(6, t)
  if redis.call('HINCRBY', a, '*', -1) <= 0 then redis.call('HDEL', a, '*') end
  if redis.call('HINCRBY', a, c, -1) <= 0 then redis.call('HDEL', a, c) end
end
-- A leased contact back to its old place in the ready ZSET, unattempted; its slot freed.
local function requeue(t, c, id)
  redis.call('ZREM', LEASES, t .. '|' .. c .. '|' .. id)
  local r = get(t, c, id)
  if (not r) or r.st ~= 'l' then return false end
  unslot(t, c)
  r.st = 'q'
  put(t, c, id, r)
  redis.call('ZADD', key(1, t, c), score(r.pr, r.sq), id)
  mark_ready(t, c)
  depth(t, 1)
  return true
end
";

/// ARGV[8..10]: tenant, campaign, now; then (id, priority, not-before ms, payload) per
/// contact. An id the campaign already has is skipped. Returns how many were added.
const ENQUEUE: &str = r"
local t, c, now = ARGV[8], ARGV[9], tonumber(ARGV[10])
local ck, sk = key(3, t, c), key(4, t, c)
local added, ready = 0, false
for i = 11, #ARGV, 4 do
  local id = ARGV[i]
  if redis.call('HEXISTS', ck, id) == 0 then
    local r = {st = 'q', a = 0, pr = tonumber(ARGV[i + 1]), sq = redis.call('INCR', sk), tk = 0,
               rs = '', body = ARGV[i + 3]}
    put(t, c, id, r)
    if schedule(t, c, id, r, tonumber(ARGV[i + 2]), now) then ready = true end
    added = added + 1
  end
end
if ready then mark_ready(t, c) end
if added > 0 then depth(t, added) end
return added
";

/// ARGV[8..10]: now, lease ms, scan width. Promotes due delayed contacts, then walks the
/// tenants ring and the chosen tenant's campaigns ring from the front, moving each one it
/// looks at to the back, skipping capped ones, and leases the first contact it finds.
/// Returns {tenant, campaign, id, token, attempts, deadline, payload} or nil.
const POP: &str = r"
local now, lease, scan = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
for _, m in ipairs(redis.call('ZRANGEBYSCORE', DUE, '-inf', now, 'LIMIT', 0, scan)) do
  local t, c = string.match(m, '^([^|]+)|(.+)$')
  local dk = key(2, t, c)
  local ids = redis.call('ZRANGEBYSCORE', dk, '-inf', now, 'LIMIT', 0, 256)
  local moved = false
  for _, id in ipairs(ids) do
    redis.call('ZREM', dk, id)
    local r = get(t, c, id)
    if r and r.st == 'q' then
      redis.call('ZADD', key(1, t, c), score(r.pr, r.sq), id)
      moved = true
    end
  end
  if moved then mark_ready(t, c) end
  local nxt = redis.call('ZRANGE', dk, 0, 0, 'WITHSCORES')
  if nxt[1] then redis.call('ZADD', DUE, nxt[2], m) else redis.call('ZREM', DUE, m) end
end
local function capped(t, field)
  local cap = redis.call('HGET', key(7, t), field)
  if not cap then return false end
  return tonumber(redis.call('HGET', key(6, t), field) or '0') >= tonumber(cap)
end
for _, t in ipairs(redis.call('ZRANGE', TENANTS, 0, scan - 1)) do
  back(TENANTS, t, 'XX')
  local ck = key(5, t)
  if not capped(t, '*') then
    for _, c in ipairs(redis.call('ZRANGE', ck, 0, scan - 1)) do
      back(ck, c, 'XX')
      if not capped(t, c) then
        local rk = key(1, t, c)
        local got = redis.call('ZPOPMIN', rk)
        if redis.call('EXISTS', rk) == 0 then redis.call('ZREM', ck, c) end
        local r = got[1] and get(t, c, got[1])
        if r and r.st == 'q' then
          local id = got[1]
          r.st, r.tk = 'l', r.tk + 1
          put(t, c, id, r)
          local deadline = now + lease
          redis.call('ZADD', LEASES, deadline, t .. '|' .. c .. '|' .. id)
          redis.call('HINCRBY', key(6, t), '*', 1)
          redis.call('HINCRBY', key(6, t), c, 1)
          depth(t, -1)
          if redis.call('EXISTS', ck) == 0 then redis.call('ZREM', TENANTS, t) end
          return {t, c, id, r.tk, r.a, deadline, r.body}
        end
      end
    end
  end
  if redis.call('EXISTS', ck) == 0 then redis.call('ZREM', TENANTS, t) end
end
return false
";

/// ARGV[8..11]: tenant, campaign, id, token. Returns 1 if the lease was the caller's.
const RELEASE: &str = r"
local r = get(ARGV[8], ARGV[9], ARGV[10])
if (not r) or r.st ~= 'l' or r.tk ~= tonumber(ARGV[11]) then return 0 end
requeue(ARGV[8], ARGV[9], ARGV[10])
return 1
";

/// ARGV[8..13]: tenant, campaign, id, token, now, lease ms. Returns 1 if the lease was
/// the caller's (its deadline is now + lease), else 0.
const RENEW: &str = r"
local r = get(ARGV[8], ARGV[9], ARGV[10])
if (not r) or r.st ~= 'l' or r.tk ~= tonumber(ARGV[11]) then return 0 end
redis.call('ZADD', LEASES, 'XX', tonumber(ARGV[12]) + tonumber(ARGV[13]),
  ARGV[8] .. '|' .. ARGV[9] .. '|' .. ARGV[10])
return 1
";

/// ARGV[8..15]: tenant, campaign, id, token, now, reason, retry limit, spacing ms;
/// ARGV[16]: 1 if the outcome is a success. Returns {0} (not the caller's lease),
/// {1, attempts, 0} (done), {2, attempts, not-before} (retry) or {3, attempts, 0} (failed).
const COMPLETE: &str = r"
local t, c, id = ARGV[8], ARGV[9], ARGV[10]
local r = get(t, c, id)
if (not r) or r.st ~= 'l' or r.tk ~= tonumber(ARGV[11]) then return {0} end
local now = tonumber(ARGV[12])
redis.call('ZREM', LEASES, t .. '|' .. c .. '|' .. id)
unslot(t, c)
r.a, r.rs = r.a + 1, ARGV[13]
if r.a < tonumber(ARGV[14]) then
  local nb = now + tonumber(ARGV[15])
  r.st, r.sq = 'q', redis.call('INCR', key(4, t, c))
  put(t, c, id, r)
  if schedule(t, c, id, r, nb, now) then mark_ready(t, c) end
  depth(t, 1)
  return {2, r.a, nb}
end
if ARGV[16] == '1' then r.st = 'd' else r.st = 'f' end
put(t, c, id, r)
if r.st == 'd' then return {1, r.a, 0} end
return {3, r.a, 0}
";

/// ARGV[8..9]: now, limit. Every lease whose deadline is at or before now (up to limit)
/// goes back to the ready ZSET. Returns how many did.
const REAP: &str = r"
local n = 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', ARGV[8], 'LIMIT', 0, ARGV[9])) do
  local t, c, id = string.match(m, '^([^|]+)|([^|]+)|(.+)$')
  if t and requeue(t, c, id) then n = n + 1 else redis.call('ZREM', LEASES, m) end
end
return n
";

/// A token bucket. KEYS[1]: the account's bucket hash (`tokens`, `at`). ARGV: calls per
/// second, burst, now. A clock behind the stored `at` (another replica's) adds nothing.
/// Returns {1, 0} (take the call) or {0, ms until a token}.
const CPS: &str = r"
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(v[1]) or burst, tonumber(v[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
  at = now
end
if tokens >= 1 then
  redis.call('HSET', KEYS[1], 'tokens', tokens - 1, 'at', at)
  return {1, 0}
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', at)
return {0, math.ceil((1 - tokens) * 1000 / rate)}
";

fn queue_script(body: &str) -> Script {
    Script::new(&[PRELUDE, body].concat())
}

pub(super) static ENQUEUE_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(ENQUEUE));
pub(super) static POP_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(POP));
pub(super) static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(RELEASE));
pub(super) static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(RENEW));
pub(super) static COMPLETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(COMPLETE));
pub(super) static REAP_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(REAP));
pub(super) static CPS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CPS));
