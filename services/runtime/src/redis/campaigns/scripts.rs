//! The campaign queue's Lua scripts: every move of a contact is one script, so it is
//! atomic and two dialers never take the same contact.
//!
//! Consumes, in every script but `CPS`, the global keys as KEYS (tenants ring, due index,
//! leases, depth, open attempts; the attempt's own hash for the attempt scripts) and the
//! per-tenant and per-campaign key templates
//! from [`super::super::Keys`] as ARGV[1..10] (`{t}` and `{c}` are filled in here, since
//! which campaign a pop serves is decided inside the script; the state instance is one
//! Redis, not a cluster). Time is always the caller's `now` (ms), never Redis' `TIME`, so
//! tests inject it. Produces the replies `super` decodes. State: the keys of ARCHITECTURE
//! §6, "The campaign queue".

use std::sync::LazyLock;

use redis::Script;

/// Helpers shared by the queue scripts. KEYS: 1 tenants ring, 2 due index, 3 leases,
/// 4 depth, 5 open attempts, 6 the attempt's hash (attempt scripts only). Templates
/// (ARGV[1..10]): 1 ready, 2 delayed, 3 contacts, 4 seq, 5 campaigns, 6 active, 7 caps,
/// 8 hold, 9 counts, 10 calls; a script's own arguments are `arg(1)`, `arg(2)`, …
/// Records are `state|attempts|priority|seq|token|reason|payload` (`model::ContactRecord`);
/// scores are `model::ready_score`, transcribed. Every state change goes through `put`,
/// which keeps the per-state counts.
const PRELUDE: &str = r"
local TENANTS, DUE, LEASES, DEPTH, ATTEMPTS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local function arg(i) return ARGV[10 + i] end
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
  return {st = st, was = st, a = tonumber(a), pr = tonumber(pr), sq = tonumber(sq),
          tk = tonumber(tk), rs = rs, body = body}
end
local function put(t, c, id, r)
  if r.was ~= r.st then
    local ck = key(9, t, c)
    if r.was then redis.call('HINCRBY', ck, r.was, -1) end
    redis.call('HINCRBY', ck, r.st, 1)
    r.was = r.st
  end
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
-- Why pops skip a campaign: 'p' paused, 'x' cancelled, or a time outside calling hours.
local function hold(t, c) return redis.call('HGET', key(8, t), c) end
local function held(t, c, now)
  local h = hold(t, c)
  if not h then return false end
  if h == 'p' or h == 'x' then return true end
  return tonumber(h) > now
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
-- A contact that holds a slot goes back to the queue unattempted (its old place, or
-- not before nb when given), or ends cancelled if its campaign was.
local function unattempted(t, c, id, r, now, nb)
  unslot(t, c)
  if hold(t, c) == 'x' then
    r.st, r.rs = 'x', 'canceled'
    put(t, c, id, r)
    return
  end
  r.st = 'q'
  put(t, c, id, r)
  if schedule(t, c, id, r, nb or 0, now) then mark_ready(t, c) end
  depth(t, 1)
end
-- A leased contact back to the queue, unattempted.
local function requeue(t, c, id, now)
  redis.call('ZREM', LEASES, t .. '|' .. c .. '|' .. id)
  local r = get(t, c, id)
  if (not r) or r.st ~= 'l' then return false end
  unattempted(t, c, id, r, now)
  return true
end
-- The end of an attempt (a call was placed): frees the slot, counts it, and finishes the
-- contact or queues it again. Returns {1|2|3, attempts, not-before}.
local function finish(t, c, id, r, now, reason, limit, spacing, success)
  unslot(t, c)
  r.a, r.rs = r.a + 1, reason
  local cancelled = hold(t, c) == 'x'
  if r.a < limit and not cancelled then
    local nb = now + spacing
    r.st, r.sq = 'q', redis.call('INCR', key(4, t, c))
    put(t, c, id, r)
    if schedule(t, c, id, r, nb, now) then mark_ready(t, c) end
    depth(t, 1)
    return {2, r.a, nb}
  end
  if success then r.st = 'd' elseif cancelled then r.st = 'x' else r.st = 'f' end
  put(t, c, id, r)
  if r.st == 'd' then return {1, r.a, 0} end
  return {3, r.a, 0}
end
-- The open attempt in KEYS[6]: {t, c, id, record} if its contact is still calling under it.
local function open_attempt()
  local v = redis.call('HMGET', KEYS[6], 'tenant', 'campaign', 'contact', 'token')
  if not v[1] then return nil end
  local r = get(v[1], v[2], v[3])
  if (not r) or r.st ~= 'c' or r.tk ~= tonumber(v[4]) then return nil end
  return v[1], v[2], v[3], r
end
local function close_attempt(id, outcome)
  redis.call('ZREM', ATTEMPTS, id)
  redis.call('HSET', KEYS[6], 'outcome', outcome)
  redis.call('EXPIRE', KEYS[6], 86400)
end
";

/// arg 1..3: tenant, campaign, now; then (id, priority, not-before ms, payload) per
/// contact. An id the campaign already has is skipped. Returns how many were added.
const ENQUEUE: &str = r"
local t, c, now = arg(1), arg(2), tonumber(arg(3))
local ck, sk = key(3, t, c), key(4, t, c)
local added, ready = 0, false
for i = 14, #ARGV, 4 do
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

/// arg 1..4: now, lease ms, scan width, global cap (leases and open attempts over every
/// tenant; 0: none). Promotes due delayed contacts, then (under the global cap) walks the
/// tenants ring and the chosen tenant's campaigns ring from the front, moving each one it
/// looks at to the back, skipping capped and held ones, and leases the first contact it
/// finds. Returns {tenant, campaign, id, token, attempts, deadline, payload} or nil.
const POP: &str = r"
local now, lease, scan, cap = tonumber(arg(1)), tonumber(arg(2)), tonumber(arg(3)), tonumber(arg(4))
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
if cap > 0 and redis.call('ZCARD', LEASES) + redis.call('ZCARD', ATTEMPTS) >= cap then
  return false
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
      if not capped(t, c) and not held(t, c, now) then
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

/// arg 1..6: tenant, campaign, id, token, now, not-before ms (0: its old place). Returns
/// 1 if the lease was the caller's.
const RELEASE: &str = r"
local t, c, id = arg(1), arg(2), arg(3)
local r = get(t, c, id)
if (not r) or r.st ~= 'l' or r.tk ~= tonumber(arg(4)) then return 0 end
redis.call('ZREM', LEASES, t .. '|' .. c .. '|' .. id)
local nb = tonumber(arg(6))
if nb > 0 then r.sq = redis.call('INCR', key(4, t, c)) end
unattempted(t, c, id, r, tonumber(arg(5)), nb)
return 1
";

/// arg 1..6: tenant, campaign, id, token, now, lease ms. Returns 1 if the lease was
/// the caller's (its deadline is now + lease), else 0.
const RENEW: &str = r"
local r = get(arg(1), arg(2), arg(3))
if (not r) or r.st ~= 'l' or r.tk ~= tonumber(arg(4)) then return 0 end
redis.call('ZADD', LEASES, 'XX', tonumber(arg(5)) + tonumber(arg(6)),
  arg(1) .. '|' .. arg(2) .. '|' .. arg(3))
return 1
";

/// arg 1..9: tenant, campaign, id, token, now, reason, retry limit, spacing ms, 1 if the
/// outcome is a success. Returns {0} (not the caller's lease), {1, attempts, 0} (done),
/// {2, attempts, not-before} (retry) or {3, attempts, 0} (failed or cancelled).
const COMPLETE: &str = r"
local t, c, id = arg(1), arg(2), arg(3)
local r = get(t, c, id)
if (not r) or r.st ~= 'l' or r.tk ~= tonumber(arg(4)) then return {0} end
redis.call('ZREM', LEASES, t .. '|' .. c .. '|' .. id)
return finish(t, c, id, r, tonumber(arg(5)), arg(6), tonumber(arg(7)), tonumber(arg(8)),
  arg(9) == '1')
";

/// arg 1..2: now, limit. Every lease whose deadline is at or before now (up to limit)
/// goes back to the ready ZSET. Returns how many did.
const REAP: &str = r"
local n = 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', arg(1), 'LIMIT', 0, arg(2))) do
  local t, c, id = string.match(m, '^([^|]+)|([^|]+)|(.+)$')
  if t and requeue(t, c, id, tonumber(arg(1))) then n = n + 1 else redis.call('ZREM', LEASES, m) end
end
return n
";

/// KEYS[6]: the attempt's hash. arg 1..6: tenant, campaign, id, token, attempt id, when to
/// reconcile it (ms); then field/value pairs for the attempt's hash. The leased contact
/// becomes `c` (calling), leaves the leases for the open attempts and keeps its slot.
/// Returns 1, or 0 if the lease was not the caller's (nothing written).
const BEGIN: &str = r"
local t, c, id, tk = arg(1), arg(2), arg(3), tonumber(arg(4))
local r = get(t, c, id)
if (not r) or r.st ~= 'l' or r.tk ~= tk then return 0 end
redis.call('ZREM', LEASES, t .. '|' .. c .. '|' .. id)
r.st = 'c'
put(t, c, id, r)
redis.call('ZADD', ATTEMPTS, tonumber(arg(6)), arg(5))
redis.call('HSET', KEYS[6], 'tenant', t, 'campaign', c, 'contact', id, 'token', tk)
for i = 17, #ARGV, 2 do redis.call('HSET', KEYS[6], ARGV[i], ARGV[i + 1]) end
return 1
";

/// KEYS[6]: the attempt's hash. arg 1: the call sid Twilio gave it. Stores it once, and
/// adds it to the contact's call sids. Returns 1 if the attempt is still open.
const CALL_SID: &str = r"
local t, c, id, r = open_attempt()
if redis.call('HSETNX', KEYS[6], 'call_sid', arg(1)) == 1 and t then
  local k = key(10, t, c)
  local cur = redis.call('HGET', k, id)
  if cur then redis.call('HSET', k, id, cur .. ',' .. arg(1)) else redis.call('HSET', k, id, arg(1)) end
end
if t then return 1 end
return 0
";

/// KEYS[6]: the attempt's hash. arg 1..6: attempt id, now, reason, retry limit, spacing ms,
/// 1 if a success. The call ended: as `COMPLETE`, for the attempt's contact. {0} if the
/// attempt is not open (already resolved, or unknown).
const RESOLVE: &str = r"
local t, c, id, r = open_attempt()
if not t then return {0} end
close_attempt(arg(1), arg(3))
return finish(t, c, id, r, tonumber(arg(2)), arg(3), tonumber(arg(4)), tonumber(arg(5)),
  arg(6) == '1')
";

/// KEYS[6]: the attempt's hash. arg 1..3: attempt id, now, not-before ms. No call was
/// placed: the contact goes back unattempted, not before the given time. 1 if it was open.
const ABANDON: &str = r"
local t, c, id, r = open_attempt()
if not t then return 0 end
close_attempt(arg(1), 'abandoned')
r.sq = redis.call('INCR', key(4, t, c))
unattempted(t, c, id, r, tonumber(arg(2)), tonumber(arg(3)))
return 1
";

/// arg 1..3: now, limit, recheck ms. Open attempts due for reconciling; each is pushed to
/// now + recheck so one dialer at a time looks at it. Returns their ids.
const DUE_ATTEMPTS: &str = r"
local ids = redis.call('ZRANGEBYSCORE', ATTEMPTS, '-inf', arg(1), 'LIMIT', 0, arg(2))
for _, a in ipairs(ids) do redis.call('ZADD', ATTEMPTS, tonumber(arg(1)) + tonumber(arg(3)), a) end
return ids
";

/// arg 1..3: tenant, campaign, limit. Up to `limit` queued contacts (ready, then delayed)
/// end `x` (cancelled). Returns how many did; 0 when none is left.
const CANCEL: &str = r"
local t, c, n = arg(1), arg(2), tonumber(arg(3))
local done = 0
for _, zk in ipairs({key(1, t, c), key(2, t, c)}) do
  local ids = redis.call('ZRANGE', zk, 0, n - done - 1)
  for _, id in ipairs(ids) do
    redis.call('ZREM', zk, id)
    local r = get(t, c, id)
    if r and r.st == 'q' then
      r.st, r.rs = 'x', 'canceled'
      put(t, c, id, r)
      done = done + 1
    end
  end
  if done >= n then break end
end
if redis.call('EXISTS', key(1, t, c)) == 0 then redis.call('ZREM', key(5, t), c) end
if redis.call('EXISTS', key(2, t, c)) == 0 then redis.call('ZREM', DUE, t .. '|' .. c) end
if redis.call('EXISTS', key(5, t)) == 0 then redis.call('ZREM', TENANTS, t) end
if done > 0 then depth(t, -done) end
return done
";

/// arg 1..3: tenant, campaign, id. Removes a queued or finished contact. Returns 1
/// (removed), 0 (unknown) or -1 (a call is being placed or is live: nothing changed).
const DELETE: &str = r"
local t, c, id = arg(1), arg(2), arg(3)
local r = get(t, c, id)
if not r then return 0 end
if r.st == 'l' or r.st == 'c' then return -1 end
if r.st == 'q' then
  local a = redis.call('ZREM', key(1, t, c), id)
  local b = redis.call('ZREM', key(2, t, c), id)
  if a + b > 0 then depth(t, -1) end
end
redis.call('HDEL', key(3, t, c), id)
redis.call('HDEL', key(10, t, c), id)
redis.call('HINCRBY', key(9, t, c), r.st, -1)
return 1
";

/// arg 1..4: tenant, campaign, hold, mode. Mode `set` (pause `p`, cancel `x`: cancel
/// wins over everything, pause over hours), `hours` (a time; never replaces `p`/`x`),
/// `resume` (lifts `p` and hours, never `x`). Returns the hold now in place ('' if none).
const HOLD: &str = r"
local t, c, h, mode = arg(1), arg(2), arg(3), arg(4)
local hk = key(8, t)
local cur = redis.call('HGET', hk, c)
if mode == 'resume' then
  if cur and cur ~= 'x' then redis.call('HDEL', hk, c); cur = nil end
elseif mode == 'hours' then
  if cur ~= 'p' and cur ~= 'x' then redis.call('HSET', hk, c, h); cur = h end
elseif cur ~= 'x' and not (h == 'p' and cur == 'p') then
  redis.call('HSET', hk, c, h); cur = h
end
return cur or ''
";

/// arg 1..2: now, the most campaigns looked at. Read-only: the ready contacts of every
/// campaign in the rings that is not held (paused, cancelled, outside its hours) at now:
/// what the dialers could call right now.
const DIALABLE: &str = r"
local now, budget, n = tonumber(arg(1)), tonumber(arg(2)), 0
for _, t in ipairs(redis.call('ZRANGE', TENANTS, 0, -1)) do
  for _, c in ipairs(redis.call('ZRANGE', key(5, t), 0, -1)) do
    budget = budget - 1
    if budget < 0 then return n end
    if not held(t, c, now) then n = n + redis.call('ZCARD', key(1, t, c)) end
  end
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
pub(super) static BEGIN_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(BEGIN));
pub(super) static CALL_SID_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(CALL_SID));
pub(super) static RESOLVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(RESOLVE));
pub(super) static ABANDON_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(ABANDON));
pub(super) static DUE_ATTEMPTS_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| queue_script(DUE_ATTEMPTS));
pub(super) static CANCEL_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(CANCEL));
pub(super) static DELETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(DELETE));
pub(super) static HOLD_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(HOLD));
pub(super) static DIALABLE_SCRIPT: LazyLock<Script> = LazyLock::new(|| queue_script(DIALABLE));
pub(super) static CPS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CPS));
