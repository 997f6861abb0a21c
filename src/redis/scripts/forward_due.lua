-- Moves due retries of one group to its redeliver stream; safe to run from many instances
-- at once because each member is added and removed inside this one script.
-- KEYS[1] retry sorted set   KEYS[2] redeliver stream
-- ARGV[1] now (ms)   ARGV[2] most members to move
-- A member is a JSON array [field, value, ...]. A member that is not one is forwarded as
-- {retry_member = <text>} so that the consumer dead-letters it as malformed.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local ok, f = pcall(cjson.decode, m)
  local good = ok and type(f) == 'table' and #f >= 2 and #f % 2 == 0
  if good then
    for _, v in ipairs(f) do
      if type(v) ~= 'string' then good = false break end
    end
  end
  if good then
    redis.call('XADD', KEYS[2], '*', unpack(f))
  else
    redis.call('XADD', KEYS[2], '*', 'retry_member', m)
  end
  redis.call('ZREM', KEYS[1], m)
end
return #due
