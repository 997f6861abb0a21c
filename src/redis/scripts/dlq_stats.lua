-- The figures of `dlq stats`, read at one instant: the DLQ's length, its counts hash, and
-- its oldest and newest entry ids. Five commands whatever the DLQ's length.
-- KEYS[1] DLQ stream   KEYS[2] counts hash
-- Returns {length, {field, value, ...}, oldest id or false, newest id or false}.
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
return {
  redis.call('XLEN', KEYS[1]),
  redis.call('HGETALL', KEYS[2]),
  first[1] and first[1][1] or false,
  last[1] and last[1][1] or false,
}
