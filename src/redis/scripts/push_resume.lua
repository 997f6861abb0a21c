-- Resumes the channels of one connection in one call: per channel, whether the messages
-- after the client's position can all be replayed, and if so those messages.
-- KEYS[2i-1] history stream of channel i   KEYS[2i] its meta hash (epoch, last, trimmed)
-- ARGV[1] replay cap   ARGV[2i] the client's epoch ('' without a position, '0' when its
-- position predates the channel)   ARGV[2i+1] the client's stream id
-- Returns per channel {status, epoch, last id, {id, message, id, message, ...}}; status is
-- ok | trimmed | history_lost | over_cap.
local cap = tonumber(ARGV[1])
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms or 0), tonumber(seq or 0)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local out = {}
for i = 1, #KEYS / 2 do
  local stream, meta = KEYS[2 * i - 1], KEYS[2 * i]
  local pe, ps = ARGV[2 * i], ARGV[2 * i + 1]
  local m = redis.call('HMGET', meta, 'epoch', 'last', 'trimmed')
  local epoch, last, trimmed = m[1] or '', m[2] or '0-0', m[3] or '0-0'
  if epoch == '' then epoch = '0' end
  local status, entries = 'ok', {}
  if pe == '' then
    status = 'ok'
  elseif pe ~= '0' and pe ~= epoch then
    status = 'history_lost'
  else
    if pe == '0' then ps = '0-0' end
    local exists = redis.call('EXISTS', stream) == 1
    if less(last, ps) then
      status = 'history_lost'
    elseif not exists then
      if ps ~= last then status = 'trimmed' end
    elseif less(ps, trimmed) then
      status = 'trimmed'
    else
      local found = redis.call('XRANGE', stream, '(' .. ps, '+', 'COUNT', cap + 1)
      if #found > cap then
        status = 'over_cap'
      else
        for _, e in ipairs(found) do
          local f = e[2]
          for k = 1, #f, 2 do
            if f[k] == 'm' then
              entries[#entries + 1] = e[1]
              entries[#entries + 1] = f[k + 1]
            end
          end
        end
      end
    end
  end
  out[i] = {status, epoch, last, entries}
end
return out
