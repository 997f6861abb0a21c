-- The device index (KEYS[1], a sorted set device -> last acknowledgement in ms): records
-- ARGV[2] at ARGV[1], drops devices silent since before ARGV[3], and beyond ARGV[4] devices
-- pops the least recently acknowledging ones (at most 100). Returns the popped devices
-- (member, score pairs), whose position hashes the caller deletes (other slots).
local key = KEYS[1]
redis.call('ZADD', key, ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[3])
local over = redis.call('ZCARD', key) - tonumber(ARGV[4])
if over <= 0 then
  return {}
end
if over > 100 then
  over = 100
end
return redis.call('ZPOPMIN', key, over)
