-- Redis Cluster, first half of a move to the retry set across slots: ZADD at Redis's TIME
-- plus the delay (the worker's clock, ARGV[4], when TIME is refused: reply 2), unless the
-- guard says an earlier attempt already did; leaves the guard until the source half
-- succeeds. One slot: the retry set's.
-- KEYS[1] retry sorted set   KEYS[2] guard (string, with a TTL)
-- ARGV[1] delay (ms)   ARGV[2] member (JSON)   ARGV[3] guard TTL (ms)   ARGV[4] worker clock
-- Returns 1 (2: on the worker's clock), or 3 when guarded (added before).
if redis.call('GET', KEYS[2]) then return 3 end
local t = redis.pcall('TIME')
local now, done = tonumber(ARGV[4]), 2
if not t.err then
  now, done = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 1
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return done
