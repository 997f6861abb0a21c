-- Replays one DLQ entry: re-adds the event to the failed group's redeliver stream, then
-- deletes the DLQ entry, atomically. A DLQ entry that is gone (replayed or purged already)
-- is not re-added, so a double replay never double-enqueues.
-- KEYS[1] DLQ stream   KEYS[2] redeliver stream   ARGV[1] DLQ entry id   ARGV[2..] field, value, ...
-- Returns the new entry id, or false when the DLQ entry no longer exists.
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
