-- Shared head of the DLQ scripts: the counts hash (`<dlq>:counts:{<dlq>}`) holds
-- `type:<t>`, `reason:<r>` and `group:<g>` counts of the DLQ's entries and `~built`: the
-- entry id up to which the counting of an existing DLQ got (see dlq_count_step.lua), or
-- `all` once every entry is counted. An entry counts (and is uncounted when removed) only
-- if its id is at or below `~built`, so an entry is never counted twice while the counts
-- are being built.
local function dlq_fields(flat, from)
  local t, r, g
  for i = from, #flat - 1, 2 do
    local k = flat[i]
    if k == 'type' then t = t or flat[i + 1]
    elseif k == 'dlq_reason' then r = r or flat[i + 1]
    elseif k == 'dlq_group' then g = g or flat[i + 1] end
  end
  return t or '', r or '', g or ''
end
local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms) or 0, tonumber(seq) or 0
end
-- Whether the entry `id` is covered by counts built up to `built`.
local function dlq_counted(built, id)
  if built == 'all' then return true end
  if not built then return false end
  local am, as = id_parts(id)
  local bm, bs = id_parts(built)
  return am < bm or (am == bm and as <= bs)
end
local function dlq_tally(agg, flat, from, n)
  local t, r, g = dlq_fields(flat, from)
  for _, f in ipairs({'type:' .. t, 'reason:' .. r, 'group:' .. g}) do
    agg[f] = (agg[f] or 0) + n
  end
end
local function dlq_apply(counts, agg)
  for f, n in pairs(agg) do
    if n ~= 0 and redis.call('HINCRBY', counts, f, n) <= 0 then redis.call('HDEL', counts, f) end
  end
end
