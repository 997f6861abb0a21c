//! Redis migrations: the ordered, idempotent Lua files of `migrations-redis/`, applied once
//! per environment and recorded in `events:<env>:migrations`. Each file runs inside one
//! script together with its "already applied?" check and its record, so two instances
//! starting together cannot both apply it.
//!
//! Files are compiled into the binary; a new file must also be listed in [`MIGRATIONS`].

use crate::model::keys::Keys;
use crate::model::time::{now_ms, rfc3339};
use crate::redis::store::{Store, StoreError};

/// Every migration, in the order it applies: `(file name, Lua body)`.
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_schema_version.lua",
    include_str!("../../migrations-redis/0001_schema_version.lua"),
)];

/// What [`apply_all`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Applied by this call.
    pub applied: Vec<String>,
    /// Found applied already.
    pub skipped: Vec<String>,
}

/// Applies the migrations not yet recorded for this env.
///
/// # Errors
/// The first failing migration; the ones after it are not attempted.
pub async fn apply_all(store: &Store, keys: &Keys) -> Result<MigrationReport, StoreError> {
    let mut report = MigrationReport::default();
    let hash = keys.migrations();
    for (name, body) in MIGRATIONS {
        if store
            .apply_migration(&hash, name, body, keys.prefix(), &rfc3339(now_ms()))
            .await?
        {
            report.applied.push(name.to_string());
        } else {
            report.skipped.push(name.to_string());
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_listed_in_order_and_unique() {
        let names: Vec<&str> = MIGRATIONS.iter().map(|(n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn every_file_in_the_folder_is_listed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations-redis");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".lua"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(files, listed);
    }
}
