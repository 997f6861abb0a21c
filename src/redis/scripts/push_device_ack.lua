-- Records a device's acknowledged positions (KEYS[1]: its hash, one Cluster slot) unless the
-- hash would then hold more than ARGV[1] channels, and refreshes its expiry (ARGV[2] ms).
-- ARGV[3..]: channel, position pairs. Returns 1 when kept, 0 when nothing was written.
local key, max, ttl = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local new = 0
for i = 3, #ARGV, 2 do
  if redis.call('HEXISTS', key, ARGV[i]) == 0 then new = new + 1 end
end
if redis.call('HLEN', key) + new > max then
  return 0
end
redis.call('HSET', key, unpack(ARGV, 3))
redis.call('PEXPIRE', key, ttl)
return 1
