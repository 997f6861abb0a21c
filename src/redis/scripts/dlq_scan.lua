-- One bounded step of a filtered DLQ scan: reads up to ARGV[4] entries between ARGV[2] and
-- ARGV[3] (XREVRANGE end start when ARGV[1] is 'rev', XRANGE start end otherwise) and
-- returns those whose type, reason and group match, so only matches cross the network; it
-- stops after ARGV[8] matches. With ARGV[9] = 'count' it returns how many matched instead.
-- KEYS[1] DLQ stream   ARGV[1] 'rev' or 'fwd'   ARGV[2] start   ARGV[3] end
-- ARGV[4] entries read at most   ARGV[5..7] '=<type>', '=<reason>', '=<group>' or '' (any)
-- ARGV[8] most matches   ARGV[9] 'entries' or 'count'
-- Returns {matching entries (or their count), id of the last entry read, or false when the
-- range ended}.
local n, most = tonumber(ARGV[4]), tonumber(ARGV[8])
local es
if ARGV[1] == 'rev' then
  es = redis.call('XREVRANGE', KEYS[1], ARGV[3], ARGV[2], 'COUNT', n)
else
  es = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[3], 'COUNT', n)
end
local want = {ARGV[5], ARGV[6], ARGV[7]}
local out, matched = {}, 0
for i, e in ipairs(es) do
  local t, r, g = dlq_fields(e[2], 1)
  local have = {t, r, g}
  local ok = true
  for k = 1, 3 do
    if want[k] ~= '' and want[k] ~= '=' .. have[k] then ok = false end
  end
  if ok then
    matched = matched + 1
    if ARGV[9] ~= 'count' then out[matched] = e end
    if matched >= most then
      local last = false
      if i < #es or #es >= n then last = e[1] end
      if ARGV[9] == 'count' then return {matched, last} end
      return {out, last}
    end
  end
end
local last = false
if #es >= n then last = es[#es][1] end
if ARGV[9] == 'count' then return {matched, last} end
return {out, last}
