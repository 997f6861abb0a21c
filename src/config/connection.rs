//! Validation of who this worker is and where it connects: `env` (with its `APP_ENV` /
//! `NODE_ENV` fallbacks), `redis_url` (with `REDIS_URL` / `KV_URL` and the password file),
//! the TLS files, `group` and `consumer`.

use std::path::{Path, PathBuf};

use super::error::PasswordFileError;
use super::parse::Checker;
use super::raw::RawConfig;
use crate::model::keys;
use crate::model::secret::RedisUrl;

/// The validated `env`, or its fallbacks, or `development`.
pub(super) fn env_name(
    c: &mut Checker,
    raw: &RawConfig,
    lookup: &impl Fn(&str) -> Option<String>,
) -> String {
    let env = raw
        .env
        .clone()
        .or_else(|| lookup("APP_ENV"))
        .or_else(|| lookup("NODE_ENV"))
        .unwrap_or_else(|| "development".to_string());
    if !keys::is_valid_env(&env) {
        c.push(format!("env: `{env}` must match [a-z0-9][a-z0-9-]*"));
    }
    env
}

/// The Redis URL (with the password file's password, if any); `None` after an error.
pub(super) fn redis_url(
    c: &mut Checker,
    raw: &RawConfig,
    lookup: &impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Option<RedisUrl> {
    let url_text = raw
        .redis_url
        .clone()
        .or_else(|| lookup("REDIS_URL"))
        .or_else(|| lookup("KV_URL"))
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
    let mut redis_url = match RedisUrl::parse(&url_text) {
        Ok(u) => Some(u),
        Err(e) => {
            c.push(format!("redis_url: {e}"));
            None
        }
    };
    let password_file = raw
        .redis_password_file
        .clone()
        .or_else(|| lookup("REDIS_PASSWORD_FILE").map(PathBuf::from));
    if let (Some(path), Some(url)) = (&password_file, &redis_url) {
        match read_password_file(path, warnings) {
            Ok(pw) => match url.with_password(&pw) {
                Ok(u) => redis_url = Some(u),
                Err(e) => c.push(format!("redis_password_file: {e}")),
            },
            Err(e) => c.push(format!("redis_password_file: {e}")),
        }
    }
    redis_url
}

/// Checks that the TLS files exist and that a certificate comes with its key.
pub(super) fn check_tls_files(c: &mut Checker, raw: &RawConfig) {
    for (key, file) in [
        ("tls_cert_file", &raw.tls_cert_file),
        ("tls_key_file", &raw.tls_key_file),
    ] {
        if let Some(f) = file
            && !f.is_file()
        {
            c.push(format!("{key}: {} is not a readable file", f.display()));
        }
    }
    if raw.tls_cert_file.is_some() != raw.tls_key_file.is_some() {
        c.push("tls_cert_file: tls_cert_file and tls_key_file go together".to_string());
    }
    if let Some(ca) = &raw.tls_ca_file
        && !ca.is_file()
    {
        c.push(format!(
            "tls_ca_file: {} is not a readable file",
            ca.display()
        ));
    }
}

/// The validated `group` (default `default`) and `consumer` (default `hostname-pid`).
pub(super) fn identity(c: &mut Checker, raw: &RawConfig) -> (String, String) {
    let group = raw.group.clone().unwrap_or_else(|| "default".to_string());
    if !keys::is_valid_name(&group) {
        c.push(format!("group: `{group}` must match [A-Za-z0-9_.-]+"));
    }
    let consumer = raw.consumer.clone().unwrap_or_else(default_consumer);
    if !keys::is_valid_name(&consumer) {
        c.push(format!("consumer: `{consumer}` must match [A-Za-z0-9_.-]+"));
    }
    (group, consumer)
}

/// Reads a password file (first line, trimmed); warns when others may read it.
fn read_password_file(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<String, PasswordFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PasswordFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            warnings.push(format!(
                "redis_password_file {} is readable by group or others; chmod 600 it",
                path.display()
            ));
        }
    }
    let pw = text.lines().next().unwrap_or_default().trim().to_string();
    if pw.is_empty() {
        return Err(PasswordFileError::Empty(path.to_path_buf()));
    }
    let _ = &warnings;
    Ok(pw)
}

/// `hostname-pid`, with characters a consumer name may not hold replaced by `-`.
fn default_consumer() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".to_string());
    let clean: String = host
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' || ch == '.' {
                ch
            } else {
                '-'
            }
        })
        .collect();
    format!("{clean}-{}", std::process::id())
}
