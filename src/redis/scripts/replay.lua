-- Replays one DLQ entry: re-adds the event to the failed group's redeliver stream, then
-- deletes the DLQ entry and uncounts it, atomically. A DLQ entry that is gone (replayed or
-- purged already) is not re-added, so a double replay never double-enqueues. Redis keeps
-- the XADD of a script whose XDEL is refused (an ACL change), so a refused XDEL leaves a
-- guard holding the new entry's id, and the retried replay finds it and only deletes.
-- KEYS[1] DLQ stream   KEYS[2] redeliver stream   KEYS[3] guard (string, with a TTL)
-- KEYS[4] counts hash   ARGV[1] DLQ entry id   ARGV[2] guard TTL (ms)   ARGV[3..] field, value, ...
-- Returns the new entry id, false when the DLQ entry no longer exists, or the XDEL's error.
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return false end
local guarded = redis.call('GET', KEYS[3])
local id = guarded or redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
local deleted = redis.pcall('XDEL', KEYS[1], ARGV[1])
if type(deleted) == 'table' and deleted.err then
  if not guarded then redis.call('SET', KEYS[3], id, 'PX', ARGV[2]) end
  return deleted
end
if guarded then redis.call('DEL', KEYS[3]) end
if dlq_counted(redis.call('HGET', KEYS[4], '~built'), ARGV[1]) then
  local agg = {}
  dlq_tally(agg, found[1][2], 1, -1)
  dlq_apply(KEYS[4], agg)
end
return id
