-- Schedules a pending entry for a delayed retry: ZADD first, XACK second, atomically.
-- KEYS[1] retry sorted set   KEYS[2] source stream
-- ARGV[1] group   ARGV[2] source entry id   ARGV[3] consumer that must own the entry
-- ARGV[4] '1' to XDEL the source entry too   ARGV[5] due time (ms)   ARGV[6] member (JSON)
-- Returns 1, or 0 when the entry is no longer pending on this consumer.
local p = redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[6])
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
if ARGV[4] == '1' then redis.call('XDEL', KEYS[2], ARGV[2]) end
return 1
