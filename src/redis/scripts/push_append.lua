-- Appends events to one push channel, in the order given, atomically with their positions and
-- notifications (one call per channel and projector batch).
-- KEYS[1] history stream   KEYS[2] ids (sorted set: event id -> append ms, the dedup)
-- KEYS[3] meta (hash: epoch, last, trimmed = newest entry removed by the caps)   (all three share the channel's hash tag)
-- ARGV[1] history_max_len   ARGV[2] history_max_age (ms)   ARGV[3] epoch to create if the channel has none
-- ARGV[4] pub/sub channel of notifications   ARGV[5] channel name, JSON-encoded
-- ARGV[6], ARGV[7], ...: event id, message (JSON), for each event in order
-- Returns {epoch, appended 0|1, stream id of the entry (or the last one when a duplicate), ...}
-- with one (appended, stream id) pair per event.
local epoch = redis.call('HGET', KEYS[3], 'epoch')
local last = redis.call('HGET', KEYS[3], 'last') or '0-0'
local fresh = not epoch
if fresh and #ARGV >= 7 then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[3], 'epoch', epoch)
end
local max_len = tonumber(ARGV[1])
local age = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {epoch}
-- Trimming removes the oldest entries; the newest removed one is kept in meta `trimmed`
-- (XINFO's max-deleted-entry-id does not count trimming), so a resume knows whether
-- anything after a position is gone.
local trimmed = nil
local appended = 0
for i = 6, #ARGV - 1, 2 do
  local id, message = ARGV[i], ARGV[i + 1]
  if not fresh and redis.call('ZSCORE', KEYS[2], id) then
    out[#out + 1] = 0
    out[#out + 1] = last
  else
    local len = redis.call('XLEN', KEYS[1])
    if len >= max_len then
      local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - max_len + 1)
      if #gone > 0 then trimmed = gone[#gone][1] end
    end
    last = redis.call('XADD', KEYS[1], 'MAXLEN', max_len, '*', 'id', id, 'm', message)
    redis.call('ZADD', KEYS[2], now, id)
    fresh = false
    appended = appended + 1
    redis.call('PUBLISH', ARGV[4],
      '{"c":' .. ARGV[5] .. ',"p":"' .. epoch .. '-' .. last .. '","m":' .. message .. '}')
    out[#out + 1] = 1
    out[#out + 1] = last
  end
end
if appended == 0 then return out end
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
redis.call('HSET', KEYS[3], 'last', last)
local n = redis.call('ZCARD', KEYS[2])
if n > max_len then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - max_len - 1)
end
redis.call('PEXPIRE', KEYS[1], age)
redis.call('PEXPIRE', KEYS[2], age)
return out
