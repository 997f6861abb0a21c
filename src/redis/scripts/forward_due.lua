-- Moves due retries of one group to its redeliver stream; safe to run from many instances
-- at once because each member is added and removed inside this one script. "Due" is read on
-- Redis's clock (TIME), the clock every move_to_retry scheduled on, never a worker's own; a
-- user refused TIME reads the worker's clock (ARGV[3]) instead and the reply says so.
-- Idempotent: Redis keeps the XADD of a script whose ZREM is refused (an ACL change, say),
-- so a refused ZREM leaves a guard (KEYS[3] .. sha1 of the member) holding the member's
-- score, and a later pass that finds the member at that score only removes it. A member
-- added again meanwhile (same bytes, a later score) is a new retry and is forwarded. The
-- common path adds one GET per member.
-- KEYS[1] retry sorted set   KEYS[2] redeliver stream   KEYS[3] guard key prefix (its slot)
-- ARGV[1] most members to move   ARGV[2] guard TTL (ms)   ARGV[3] the worker's clock (ms)
-- ARGV[4], ARGV[5] (optional) the due time (ms) and SHA-1 of the one member to move now
-- A member is a JSON array [field, value, ...]. A member that is not one is forwarded as
-- {retry_member = <text>} so that the consumer dead-letters it as malformed.
-- Returns {members moved, 1 when TIME was refused and the worker's clock used}, or the
-- ZREM's error.
local t = redis.pcall('TIME')
local now, fallback = tonumber(ARGV[3]), 1
if not t.err then
  now, fallback = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 0
end
local due
if ARGV[4] then
  -- One member now, whatever its due time (`retries retry-now`): the member at score
  -- ARGV[4] whose SHA-1 is ARGV[5], if it is still there. The same body below moves it, so
  -- it and a concurrent pass of the scheduler never both forward it: whichever script runs
  -- second no longer finds it in the set.
  due = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[4], ARGV[4])) do
    if redis.sha1hex(m) == ARGV[5] then
      due = {m, redis.call('ZSCORE', KEYS[1], m)}
      break
    end
  end
else
  due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0,
    tonumber(ARGV[1]))
end
for i = 1, #due, 2 do
  local m, score = due[i], due[i + 1]
  local guard = KEYS[3] .. redis.sha1hex(m)
  local seen = redis.call('GET', guard)
  local forwarded = seen == score
  if not forwarded then
    local ok, f = pcall(cjson.decode, m)
    local good = ok and type(f) == 'table' and #f >= 2 and #f % 2 == 0
    if good then
      for _, v in ipairs(f) do
        if type(v) ~= 'string' then good = false break end
      end
    end
    if good then
      redis.call('XADD', KEYS[2], '*', unpack(f))
    else
      redis.call('XADD', KEYS[2], '*', 'retry_member', m)
    end
  end
  local removed = redis.pcall('ZREM', KEYS[1], m)
  if type(removed) == 'table' and removed.err then
    if not forwarded then redis.call('SET', guard, score, 'PX', ARGV[2]) end
    return removed
  end
  if seen then redis.call('DEL', guard) end
end
return {#due / 2, fallback}
