-- Dead-letters one member of a retry set (`retries dead-letter`): XADD to the DLQ first,
-- counted in the counts hash right after it (like move_to_stream.lua), then ZREM of the
-- member, atomically. A member that is gone (forwarded, retried now or dead-lettered
-- already) is not added, so a repeated or concurrent request never adds it twice, and
-- the scheduler cannot forward it once it is dead-lettered (one script runs at a time).
-- Redis keeps the XADD of a script whose ZREM is refused (an ACL change, say), so a
-- refused ZREM leaves a guard (KEYS[3] .. sha1 of the member) holding the new entry's id,
-- and the retried request finds it and only removes the member.
-- KEYS[1] retry sorted set   KEYS[2] DLQ stream   KEYS[3] guard key prefix (DLQ's slot)
-- KEYS[4] the DLQ's counts hash
-- ARGV[1] member   ARGV[2] guard TTL (ms)   ARGV[3..] field, value, ... of the DLQ entry
-- Returns the new DLQ entry id, false when the member is no longer in the set, or the
-- ZREM's error.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return false end
local guard = KEYS[3] .. redis.sha1hex(ARGV[1])
local guarded = redis.call('GET', guard)
local id = guarded
if not guarded then
  id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
  pcall(function()
    if dlq_counted(redis.call('HGET', KEYS[4], '~built'), id) then
      local agg = {}
      dlq_tally(agg, ARGV, 3, 1)
      dlq_apply(KEYS[4], agg)
    end
  end)
end
local removed = redis.pcall('ZREM', KEYS[1], ARGV[1])
if type(removed) == 'table' and removed.err then
  if not guarded then redis.call('SET', guard, id, 'PX', ARGV[2]) end
  return removed
end
if guarded then redis.call('DEL', guard) end
return id
