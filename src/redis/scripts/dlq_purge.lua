-- Deletes DLQ entries by id and uncounts each one deleted (an id already gone is skipped).
-- KEYS[1] DLQ stream   KEYS[2] counts hash   ARGV[1..] DLQ entry ids
-- Returns how many entries were deleted.
local built = redis.call('HGET', KEYS[2], '~built')
local agg, deleted = {}, 0
for _, id in ipairs(ARGV) do
  local found = redis.call('XRANGE', KEYS[1], id, id)
  if #found == 1 then
    redis.call('XDEL', KEYS[1], id)
    deleted = deleted + 1
    if dlq_counted(built, id) then dlq_tally(agg, found[1][2], 1, -1) end
  end
end
dlq_apply(KEYS[2], agg)
return deleted
