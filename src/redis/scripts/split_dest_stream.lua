-- Redis Cluster, first half of a move across slots (README "Redis Cluster"): appends the
-- entry to the destination stream (the DLQ) and counts it, unless the guard says an earlier
-- attempt already did; then leaves the guard (with a TTL) holding the new entry's id until
-- the source half succeeds and deletes it. One slot: the destination's.
-- KEYS[1] destination stream   KEYS[2] guard (string, with a TTL)   KEYS[3] counts hash
-- ARGV[1] guard TTL (ms)   ARGV[2..] field, value, ...
-- Returns the entry id (the earlier one when guarded).
local guarded = redis.call('GET', KEYS[2])
if guarded then return guarded end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
pcall(function()
  if dlq_counted(redis.call('HGET', KEYS[3], '~built'), id) then
    local agg = {}
    dlq_tally(agg, ARGV, 2, 1)
    dlq_apply(KEYS[3], agg)
  end
end)
redis.call('SET', KEYS[2], id, 'PX', ARGV[1])
return id
