-- Appends a batch of history records in one call (one round trip and one command for the
-- client instead of one XADD per record), each capped with MAXLEN ~.
-- KEYS[1] history stream   ARGV[1] max_len
-- ARGV[2..] records, each as: number of field/value items N, then the N items.
local i = 2
local appended = 0
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if n == nil or n < 2 then break end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i + 1, i + n))
  appended = appended + 1
  i = i + n + 1
end
return appended
