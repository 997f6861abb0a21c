-- Appends an event to its type stream once per event id: the id guard (a sorted set
-- event id -> entry time in ms, hash-tagged with the stream key, so one Cluster slot) is
-- checked, added to and trimmed in the same script as the XADD, so concurrent or late
-- repeats of one id append one entry. A repeat writes nothing.
-- KEYS[1] type stream   KEYS[2] id guard (sorted set)
-- ARGV[1] event id   ARGV[2] window (ms)   ARGV[3] most ids kept   ARGV[4..] field, value, ...
-- Returns {1, new entry id}, or {0, original entry id} for a repeat within the window
-- ({0, false} when the stream no longer holds the original entry).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
local seen = redis.call('ZSCORE', KEYS[2], ARGV[1])
if seen and tonumber(seen) > now - window then
  -- The score is the original entry's time: look for it among that millisecond's entries.
  local ms = string.format('%.0f', tonumber(seen))
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], ms, ms, 'COUNT', 1000)) do
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 'id' then
        if f[i + 1] == ARGV[1] then return {0, e[1]} end
        break
      end
    end
  end
  return {0, false}
end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], string.match(id, '^%d+'), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now - window))
local n = redis.call('ZCARD', KEYS[2])
local max = tonumber(ARGV[3])
if n > max then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - max - 1) end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {1, id}
