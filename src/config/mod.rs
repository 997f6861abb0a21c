//! Configuration: the TOML file (README "Configuration"), environment overrides, and
//! validation that reports every problem at once, each naming its key.
//!
//! Precedence, highest first: `EVENTS_<SECTION>_<KEY>` variables, the file, then the
//! fallbacks the design names (`APP_ENV`/`NODE_ENV` for `env`, `REDIS_URL`/`KV_URL` for
//! `redis_url`), then defaults. Routes can only come from the file.
//!
//! Loading runs text -> TOML table -> [`env`] overrides -> [`raw`] structs (serde) ->
//! [`validate`] (with [`connection`] and [`route`], rules from [`defaults`], helpers from
//! [`parse`]) -> the [`types`] the crate reads; [`error`] holds the error types.

mod connection;
mod defaults;
mod env;
mod error;
mod health;
mod parse;
mod raw;
mod route;
#[cfg(test)]
mod tests;
mod types;
mod validate;

use std::path::Path;

pub use error::ConfigError;
pub use health::HealthConfig;
pub use parse::parse_duration;
pub use types::{BreakerConfig, Config, HandlerKind, HistoryConfig, RetryConfig, RouteConfig};

impl Config {
    /// Checks that at least one route exists (the daemon needs one; a library user may add
    /// routes in code instead).
    ///
    /// # Errors
    /// [`ConfigError`] naming `routes`.
    pub fn require_routes(&self) -> Result<(), ConfigError> {
        if self.routes.is_empty() {
            return Err(ConfigError(vec![
                "routes: at least one [[routes]] entry is needed".to_string(),
            ]));
        }
        Ok(())
    }

    /// Loads the file (if any), applies the process environment and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming every bad key.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ConfigError(vec![format!("config file {}: {e}", p.display())]))?,
            None => String::new(),
        };
        Self::from_toml_and_env(&text, |name| std::env::var(name).ok())
    }

    /// Parses `text` and applies variables from `lookup` (injectable for tests).
    ///
    /// # Errors
    /// [`ConfigError`] naming every bad key.
    pub fn from_toml_and_env(
        text: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError(vec![format!("config file: {}", e.message())])
        })?;
        env::apply_overrides(&mut table, &lookup)?;
        let raw = raw::RawConfig::from_table(table)?;
        validate::validate(raw, &lookup)
    }
}
