//! Configuration: the TOML file (README "Configuration"), environment overrides, and
//! validation that reports every problem at once, each naming its key.
//!
//! Precedence, highest first: `EVENTS_<SECTION>_<KEY>` variables, the file, then the
//! fallbacks the design names (`APP_ENV`/`NODE_ENV` for `env`, `REDIS_URL`/`KV_URL` for
//! `redis_url`), then defaults. Routes can only come from the file.
//!
//! Loading runs text -> TOML table -> [`env`] overrides -> [`raw`] structs (serde) ->
//! [`validate`] (with [`connection`] and [`route`], rules from [`defaults`], helpers from
//! [`parse`]) -> the [`types`] the crate reads; [`error`] holds the error types and
//! [`diagnose`] turns TOML and serde errors into messages with the file, line and column.
//!
//! Route signing secrets are not read here: only what builds a route's handler needs them
//! ([`Config::resolve_signing_secrets`], the handler factory), so operator commands run
//! without the webhook secrets.

mod apps;
mod connection;
mod defaults;
mod diagnose;
mod env;
mod error;
mod health;
mod outbox;
mod parse;
mod publish;
mod push;
mod raw;
mod replication;
mod route;
#[cfg(test)]
mod tests;
mod types;
mod validate;

use std::path::Path;

pub use apps::AppsConfig;
pub use error::ConfigError;
pub use health::HealthConfig;
pub use outbox::OutboxConfig;
pub use parse::{format_duration, parse_duration};
pub use publish::PublishConfig;
pub use push::PushConfig;
pub use replication::RedisConfig;
pub use types::{
    BatchConfig, BreakerConfig, Config, HandlerKind, HistoryConfig, ProcessedRecords, RetryConfig,
    RouteConfig,
};

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

    /// Loads the file (if any), applies the process environment and validates; warns
    /// (in [`Config::warnings`]) about each `EVENTS_*` variable that is no known one.
    ///
    /// # Errors
    /// [`ConfigError`] naming every bad key (with the file, line and column when the file
    /// itself does not parse).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                ConfigError(vec![format!(
                    "config file {}: cannot read it: {e}; check the --config path",
                    p.display()
                )])
            })?,
            None => String::new(),
        };
        let source = diagnose::Source {
            file: path,
            text: &text,
        };
        let mut config = Self::from_source(source, |name| std::env::var(name).ok())?;
        let names: Vec<String> = std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        config
            .warnings
            .extend(env::unknown_variables(names.iter().map(String::as_str)));
        Ok(config)
    }

    /// Parses `text` and applies variables from `lookup` (injectable for tests).
    ///
    /// # Errors
    /// [`ConfigError`] naming every bad key.
    pub fn from_toml_and_env(
        text: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::from_source(diagnose::Source { file: None, text }, lookup)
    }

    /// Parses `source`, applies variables from `lookup` and validates.
    fn from_source(
        source: diagnose::Source<'_>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = source
            .text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError(vec![source.syntax_error(&e)]))?;
        let from_env = env::apply_overrides(&mut table, &lookup)?;
        let raw = raw::RawConfig::from_table(table).map_err(|e| {
            let message = source.key_error(&e.path, &e.message);
            ConfigError(env::name_variables(vec![message], &from_env))
        })?;
        validate::validate(raw, &lookup)
            .map_err(|e| ConfigError(env::name_variables(e.0, &from_env)))
    }
}
