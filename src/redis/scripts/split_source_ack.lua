-- Redis Cluster, second half of a move across slots: acknowledges the source entry (and
-- XDELs it for the redeliver stream) only if it is still pending on this consumer. One
-- slot: the source stream's.
-- KEYS[1] source stream   ARGV[1] group   ARGV[2] entry id   ARGV[3] consumer
-- ARGV[4] '1' to XDEL too
-- Returns 1, or 0 when the entry is no longer pending on this consumer.
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end
return 1
