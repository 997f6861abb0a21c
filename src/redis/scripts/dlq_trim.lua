-- One bounded chunk of the DLQ retention: reads the oldest entries the policy removes (at
-- most ARGV[3]), uncounts them and trims exactly them (XTRIM MAXLEN = the rest).
-- KEYS[1] DLQ stream   KEYS[2] counts hash
-- ARGV[1] 'maxlen' or 'minid'   ARGV[2] the max length, or the id below which entries go
-- ARGV[3] most entries removed by this call
-- Returns how many entries were removed.
local chunk = tonumber(ARGV[3])
local len = redis.call('XLEN', KEYS[1])
local es
if ARGV[1] == 'maxlen' then
  local excess = len - tonumber(ARGV[2])
  if excess <= 0 then return 0 end
  es = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(excess, chunk))
else
  es = redis.call('XRANGE', KEYS[1], '-', '(' .. ARGV[2], 'COUNT', chunk)
end
if #es == 0 then return 0 end
local built = redis.call('HGET', KEYS[2], '~built')
local agg = {}
for _, e in ipairs(es) do
  if dlq_counted(built, e[1]) then dlq_tally(agg, e[2], 1, -1) end
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', '=', len - #es)
dlq_apply(KEYS[2], agg)
return #es
