//! A lease: one key that one holder at a time owns for a while (`SET NX PX`), renews while it
//! works, and gives back when it stops. The push projector uses it so that one instance of an
//! env projects at a time (see `worker::projector`).

use std::time::Duration;

use fred::types::Value;
use fred::types::scripts::Script;

use crate::redis::error::StoreError;
use crate::redis::store::Store;

/// Extends the lease when it is still the caller's: 1 when extended, 0 when not held.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// Deletes the lease when it is still the caller's: 1 when deleted, 0 when not held.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       return redis.call('DEL', KEYS[1]) else return 0 end";

impl Store {
    /// Takes the lease `key` for `holder` for `ttl` when nobody holds it; whether it is held
    /// by `holder` now (also true when `holder` already held it: the TTL is then renewed).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ms = ttl.as_millis() as i64;
        let args: Vec<Value> = vec![
            key.into(),
            holder.into(),
            "PX".into(),
            ms.into(),
            "NX".into(),
        ];
        match self.call("SET", args).await? {
            Value::Null => self.renew_lease(key, holder, ttl).await,
            _ => Ok(true),
        }
    }

    /// Extends the lease `key` by `ttl` when `holder` holds it; whether it does.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn renew_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ms = ttl.as_millis() as i64;
        let held: i64 = Script::from_lua(RENEW)
            .evalsha_with_reload(&self.cmd, vec![key], vec![Value::from(holder), ms.into()])
            .await
            .map_err(|e| self.error("renew lease", e))?;
        Ok(held == 1)
    }

    /// Gives the lease `key` back when `holder` holds it (a clean stop: the next holder need
    /// not wait for the TTL).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let _: i64 = Script::from_lua(RELEASE)
            .evalsha_with_reload(&self.cmd, vec![key], vec![holder])
            .await
            .map_err(|e| self.error("release lease", e))?;
        Ok(())
    }
}
