-- Redis Cluster, last step of forwarding: removes each forwarded member still at the score
-- it was taken at (a member added again at another score is a new retry and stays), and
-- drops its claim. A refused ZREM leaves the forwarded guard holding the score, so the next
-- take only removes it. One slot: the retry set's.
-- KEYS[1] retry sorted set   KEYS[2] forwarded-guard prefix   KEYS[3] claim prefix
-- ARGV[1] guard TTL (ms)   ARGV[2..] member, score, ...
-- Returns how many were removed, or the ZREM's error.
local removed = 0
for i = 2, #ARGV - 1, 2 do
  local m, score = ARGV[i], ARGV[i + 1]
  local sha = redis.sha1hex(m)
  if redis.call('ZSCORE', KEYS[1], m) == score then
    local r = redis.pcall('ZREM', KEYS[1], m)
    if type(r) == 'table' and r.err then
      redis.call('SET', KEYS[2] .. sha, score, 'PX', ARGV[1])
      return r
    end
    removed = removed + 1
  end
  redis.call('DEL', KEYS[3] .. sha)
end
return removed
