-- Appends one event to one push channel, atomically with its position and notification.
-- KEYS[1] history stream   KEYS[2] ids (sorted set: event id -> append ms, the dedup)
-- KEYS[3] meta (hash: epoch, last, trimmed = newest entry removed by the caps)   (all three share the channel's hash tag)
-- ARGV[1] event id   ARGV[2] message (JSON)   ARGV[3] history_max_len
-- ARGV[4] history_max_age (ms)   ARGV[5] epoch to create if the channel has none
-- ARGV[6] pub/sub channel of notifications   ARGV[7] channel name, JSON-encoded
-- Returns {appended 0|1, epoch, stream id of the entry (or the last one when a duplicate)}.
local epoch = redis.call('HGET', KEYS[3], 'epoch')
if epoch and redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return {0, epoch, redis.call('HGET', KEYS[3], 'last') or '0-0'}
end
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[3], 'epoch', epoch)
end
local max_len = tonumber(ARGV[3])
local age = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Trimming removes the oldest entries; the newest removed one is kept in meta `trimmed`
-- (XINFO's max-deleted-entry-id does not count trimming), so a resume knows whether
-- anything after a position is gone.
local trimmed = nil
local len = redis.call('XLEN', KEYS[1])
if len >= max_len then
  local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - max_len + 1)
  if #gone > 0 then trimmed = gone[#gone][1] end
end
local sid = redis.call('XADD', KEYS[1], 'MAXLEN', max_len, '*', 'id', ARGV[1], 'm', ARGV[2])
local minid = now - age
if minid > 0 then
  local old = redis.call('XREVRANGE', KEYS[1], '(' .. minid, '-', 'COUNT', 1)
  if #old > 0 then
    redis.call('XTRIM', KEYS[1], 'MINID', minid)
    if not trimmed or old[1][1] ~= trimmed then
      local a = {string.match(old[1][1], '^(%d+)-(%d+)$')}
      local b = {string.match(trimmed or '0-0', '^(%d+)-(%d+)$')}
      local am, as, bm, bs = tonumber(a[1]), tonumber(a[2]), tonumber(b[1]), tonumber(b[2])
      if am > bm or (am == bm and as > bs) then trimmed = old[1][1] end
    end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. minid)
end
if trimmed then redis.call('HSET', KEYS[3], 'trimmed', trimmed) end
redis.call('HSET', KEYS[3], 'last', sid)
redis.call('ZADD', KEYS[2], now, ARGV[1])
local n = redis.call('ZCARD', KEYS[2])
if n > max_len then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - max_len - 1)
end
redis.call('PEXPIRE', KEYS[1], age)
redis.call('PEXPIRE', KEYS[2], age)
redis.call('PUBLISH', ARGV[6],
  '{"c":' .. ARGV[7] .. ',"p":"' .. epoch .. '-' .. sid .. '","m":' .. ARGV[2] .. '}')
return {1, epoch, sid}
