-- Moves a pending entry to a stream (the DLQ): destination first, source second, atomically.
-- KEYS[1] destination stream   KEYS[2] source stream
-- ARGV[1] group   ARGV[2] source entry id   ARGV[3] consumer that must own the entry
-- ARGV[4] '1' to XDEL the source entry too (redeliver stream)   ARGV[5..] field, value, ...
-- Returns the new entry id, or false when the entry is no longer pending on this consumer
-- (another consumer claimed it, so it is that consumer's to finish).
local p = redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return false end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 5))
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
if ARGV[4] == '1' then redis.call('XDEL', KEYS[2], ARGV[2]) end
return id
