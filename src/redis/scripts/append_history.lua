-- Appends a batch of history records in one call (one round trip, and one argument for the
-- client to encode and Redis to parse instead of a dozen per record), then trims the stream
-- once with MAXLEN ~.
-- KEYS[1] history stream   ARGV[1] max_len
-- ARGV[2] the records: a MessagePack array of records, each an array of 8 strings
--         kind, id, type, attempt, at_ms, group, correlationid, detail (optional ones empty),
--         or of 9 for an aggregate of successes (history.processed = "aggregate"): kind,
--         '', '', count, at_ms, group, '', '', events (the JSON list of the successes).
local key = KEYS[1]
local records = cmsgpack.unpack(ARGV[2])
for _, r in ipairs(records) do
  if r[9] then
    redis.call('XADD', key, '*', 'kind', r[1], 'at_ms', r[5], 'group', r[6], 'count', r[4],
      'events', r[9])
  elseif r[6] ~= '' and r[7] == '' and r[8] == '' then
    redis.call('XADD', key, '*', 'kind', r[1], 'id', r[2], 'type', r[3], 'attempt', r[4],
      'at_ms', r[5], 'group', r[6])
  else
    local args = {key, '*', 'kind', r[1], 'id', r[2], 'type', r[3], 'attempt', r[4], 'at_ms', r[5]}
    if r[6] ~= '' then args[#args + 1] = 'group'; args[#args + 1] = r[6] end
    if r[7] ~= '' then args[#args + 1] = 'correlationid'; args[#args + 1] = r[7] end
    if r[8] ~= '' then args[#args + 1] = 'detail'; args[#args + 1] = r[8] end
    redis.call('XADD', unpack(args))
  end
end
redis.call('XTRIM', key, 'MAXLEN', '~', ARGV[1])
return #records
