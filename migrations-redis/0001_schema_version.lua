-- 0001: records the key-schema version of this environment.
-- Body of a migration script: runs once per env inside scripts/apply_migration.lua, with
-- PREFIX = "events:<env>:" and MIGRATIONS = the migrations hash. Must be idempotent.
redis.call('HSET', MIGRATIONS, 'schema_version', '1')
