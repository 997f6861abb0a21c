-- Redis Cluster, first step of forwarding due retries to the redeliver stream (another
-- slot): claims up to ARGV[1] due members (a claim key per member, SET NX with a short TTL,
-- so two instances never forward one member at once) and returns them with their scores.
-- A member whose forwarded guard (KEYS[2] .. sha1) holds its score was forwarded before
-- and only removed. A claim left by a crashed instance expires after ARGV[4] ms; the member
-- is then forwarded again (at most one duplicate per crash). One slot: the retry set's.
-- KEYS[1] retry sorted set   KEYS[2] forwarded-guard prefix   KEYS[3] claim prefix
-- ARGV[1] most members   ARGV[2] unused   ARGV[3] the worker's clock (ms)   ARGV[4] claim TTL
-- ARGV[5], ARGV[6] (optional) due time and SHA-1 of the one member to take now
-- Returns {fallback (1: TIME refused), member, score, member, score, ...}.
local t = redis.pcall('TIME')
local now, fallback = tonumber(ARGV[3]), 1
if not t.err then
  now, fallback = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 0
end
local limit = tonumber(ARGV[1])
local due
if ARGV[5] then
  due = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[5], ARGV[5])) do
    if redis.sha1hex(m) == ARGV[6] then
      due = {m, redis.call('ZSCORE', KEYS[1], m)}
      break
    end
  end
else
  due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit * 4)
end
local out, taken = {fallback}, 0
for i = 1, #due, 2 do
  if taken >= limit then break end
  local m, score = due[i], due[i + 1]
  local sha = redis.sha1hex(m)
  local guard = KEYS[2] .. sha
  if redis.call('GET', guard) == score then
    redis.call('ZREM', KEYS[1], m)
    redis.call('DEL', guard)
  elseif redis.call('SET', KEYS[3] .. sha, score, 'NX', 'PX', ARGV[4]) then
    out[#out + 1] = m
    out[#out + 1] = score
    taken = taken + 1
  end
end
return out
