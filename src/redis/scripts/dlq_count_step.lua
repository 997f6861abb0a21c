-- One bounded step of counting an existing DLQ: counts the next ARGV[1] entries after
-- `~built` and moves `~built` to the last of them (to `all` at the end of the stream), in
-- one script, so a step never counts an entry twice and any number of instances may run
-- steps; entries added meanwhile are counted by the step that reaches them (their add did
-- not count them: their id was above `~built`).
-- KEYS[1] DLQ stream   KEYS[2] counts hash   ARGV[1] entries per step
-- Returns {cursor or 'all', entries counted by this step}.
local built = redis.call('HGET', KEYS[2], '~built')
if built == 'all' then return {'all', 0} end
local start = built and ('(' .. built) or '-'
local es = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', ARGV[1])
local agg = {}
for _, e in ipairs(es) do dlq_tally(agg, e[2], 1, 1) end
dlq_apply(KEYS[2], agg)
local cursor = 'all'
if #es >= tonumber(ARGV[1]) then cursor = es[#es][1] end
redis.call('HSET', KEYS[2], '~built', cursor)
return {cursor, #es}
