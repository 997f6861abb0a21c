-- Applies one migration at most once per env: the check, the body and the record run in
-- one script, so two instances starting together cannot both apply it.
-- KEYS[1] migrations hash   ARGV[1] migration name   ARGV[2] applied-at text
-- ARGV[3] key prefix (events:<env>:) passed to the body as PREFIX
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local PREFIX = ARGV[3]
local MIGRATIONS = KEYS[1]
;(function()
--BODY--
end)()
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
