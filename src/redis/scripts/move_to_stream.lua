-- Moves a pending entry to a stream (the DLQ): destination first, source second, atomically,
-- and idempotently: Redis keeps the XADD of a script whose XACK is refused (an ACL change,
-- say), so a refused XACK leaves a guard holding the new entry's id, and the retried move
-- finds it and only acknowledges. The common path adds one GET. The new entry is counted in
-- the destination's counts hash (dlq_counts.lua) right after its XADD, so the guarded retry
-- does not count it again; a refused count (a user without +hincrby) does not stop the move.
-- KEYS[1] destination stream   KEYS[2] source stream   KEYS[3] guard (string, with a TTL)
-- KEYS[4] the destination's counts hash
-- ARGV[1] group   ARGV[2] source entry id   ARGV[3] consumer that must own the entry
-- ARGV[4] '1' to XDEL the source entry too (redeliver stream)   ARGV[5] guard TTL (ms)
-- ARGV[6..] field, value, ...
-- Returns the new entry id, or false when the entry is no longer pending on this consumer
-- (another consumer claimed it, so it is that consumer's to finish), or the XACK's error.
local p = redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return false end
local guarded = redis.call('GET', KEYS[3])
local id = guarded
if not guarded then
  id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 6))
  pcall(function()
    if dlq_counted(redis.call('HGET', KEYS[4], '~built'), id) then
      local agg = {}
      dlq_tally(agg, ARGV, 6, 1)
      dlq_apply(KEYS[4], agg)
    end
  end)
end
local acked = redis.pcall('XACK', KEYS[2], ARGV[1], ARGV[2])
if type(acked) == 'table' and acked.err then
  if not guarded then redis.call('SET', KEYS[3], id, 'PX', ARGV[5]) end
  return acked
end
if ARGV[4] == '1' then redis.call('XDEL', KEYS[2], ARGV[2]) end
if guarded then redis.call('DEL', KEYS[3]) end
return id
