-- Schedules a pending entry for a delayed retry: ZADD first, XACK second, atomically, and
-- idempotently: Redis keeps the ZADD of a script whose XACK is refused (an ACL change, say),
-- and the member may be forwarded and delivered before the move is retried, so a refused
-- XACK leaves a guard and the retried move finds it and only acknowledges.
-- The due time is Redis's clock (TIME) plus the delay, so every worker schedules on one
-- clock whatever its own says. A user refused TIME (an ACL written before TIME was needed)
-- schedules on the worker's clock (ARGV[8]) instead, and the reply says so (2), so the
-- worker warns and nothing is dead-lettered for want of a permission.
-- KEYS[1] retry sorted set   KEYS[2] source stream   KEYS[3] guard (string, with a TTL)
-- ARGV[1] group   ARGV[2] source entry id   ARGV[3] consumer that must own the entry
-- ARGV[4] '1' to XDEL the source entry too   ARGV[5] delay (ms)   ARGV[6] member (JSON)
-- ARGV[7] guard TTL (ms)   ARGV[8] the worker's clock (ms), used only when TIME is refused
-- Returns 1 (2: moved on the worker's clock), 0 when the entry is no longer pending on this consumer, or the XACK's error.
local p = redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
local guarded = redis.call('GET', KEYS[3])
local done = 1
if not guarded then
  local t = redis.pcall('TIME')
  local now
  if t.err then
    now = tonumber(ARGV[8])
    done = 2
  else
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[6])
end
local acked = redis.pcall('XACK', KEYS[2], ARGV[1], ARGV[2])
if type(acked) == 'table' and acked.err then
  if not guarded then redis.call('SET', KEYS[3], '1', 'PX', ARGV[7]) end
  return acked
end
if ARGV[4] == '1' then redis.call('XDEL', KEYS[2], ARGV[2]) end
if guarded then redis.call('DEL', KEYS[3]) end
return done
