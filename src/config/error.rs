//! Configuration errors: [`ConfigError`] (every problem at once, each naming its key) and
//! the typed errors of the parsing helpers it is assembled from.

use std::path::PathBuf;

/// A configuration problem, or several; the message names each key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

/// Why a duration such as `250ms` did not parse; the message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No number in front of the unit.
    #[error("`{0}` is not a duration (use e.g. 250ms, 30s, 5m, 2h, 7d)")]
    NotANumber(String),
    /// A number without a unit.
    #[error("`{0}` has no unit (use ms, s, m, h or d)")]
    NoUnit(String),
    /// A number with a unit that is none of the known ones.
    #[error("`{0}` has an unknown unit `{1}` (use ms, s, m, h or d)")]
    UnknownUnit(String, String),
    /// More than ten years, or not finite.
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// Why `redis_password_file` gave no password.
#[derive(Debug, thiserror::Error)]
pub(super) enum PasswordFileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its first line is empty.
    #[error("{} is empty", .0.display())]
    Empty(PathBuf),
}
