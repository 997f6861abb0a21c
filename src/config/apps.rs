//! `[apps]`: how the tokens mobile and web apps present are verified (JWTs issued by the
//! app's backend, granting push channels and publish types), and which browser origins may
//! call push and publish (README "App tokens").
//!
//! The section is on when it names a key: `jwt_secret_env` (HS256, the secret read from that
//! environment variable, at least [`MIN_SECRET_LEN`] bytes) or `jwt_public_key_file` (a public
//! key PEM: RSA for RS256, Ed25519 for EdDSA). The key is parsed here, at start, so a bad key
//! stops the daemon with its key named; the secret itself is never shown.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::parse::{Checker, DurationRule, IntRule};

/// `[apps]` as the file holds it.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawApps {
    pub jwt_secret_env: Option<String>,
    pub jwt_public_key_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Option<String>,
    pub cookie_name: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    pub rate_limit: Option<i64>,
}

/// `[apps]`: the verified form. [`AppsConfig::key`] is `None` when the section is off.
#[derive(Debug, Clone)]
pub struct AppsConfig {
    /// The key app tokens are verified with; `None`: app tokens are off.
    pub key: Option<AppKey>,
    /// `iss` every token must carry, when set.
    pub issuer: Option<String>,
    /// `aud` every token must carry, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 30 s).
    pub leeway: Duration,
    /// The cookie a browser may carry the token in, besides `Authorization: Bearer`.
    pub cookie_name: Option<String>,
    /// Browser origins allowed to call push and publish (`scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    /// `allowed_origins = ["*"]`: every origin (refused with a cookie).
    pub any_origin: bool,
    /// Requests per second (publish, batch, device ack) of one token subject (`sub`),
    /// apart from the operator's `api.rate_limit` (default 20; 0 = off).
    pub rate_limit: u32,
}

impl Default for AppsConfig {
    fn default() -> Self {
        AppsConfig {
            key: None,
            issuer: None,
            audience: None,
            leeway: LEEWAY.default,
            cookie_name: None,
            allowed_origins: Vec::new(),
            any_origin: false,
            rate_limit: RATE_LIMIT.default as u32,
        }
    }
}

/// A verification key and its algorithm. `Debug` names the algorithm and where the key
/// came from, never the key.
#[derive(Clone)]
pub struct AppKey {
    /// The one algorithm tokens must be signed with (HS256, RS256 or EdDSA).
    pub algorithm: Algorithm,
    /// The key.
    pub key: DecodingKey,
    /// Where it came from: `$VAR` or the file's path.
    pub source: String,
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppKey({:?} from {})", self.algorithm, self.source)
    }
}

/// Shortest HS256 secret accepted, in bytes (RFC 7518 3.2: at least the hash's 256 bits).
pub const MIN_SECRET_LEN: usize = 32;

/// `apps.rate_limit`: requests per second of one app token subject (`sub`).
const RATE_LIMIT: IntRule = IntRule::new(20, 0, 1_000_000);

/// `apps.leeway`.
const LEEWAY: DurationRule = DurationRule::new(Duration::from_secs(30), Duration::ZERO);

/// Validates `[apps]`, naming each bad key (`apps.jwt_secret_env: ...`).
pub(super) fn apps(
    c: &mut Checker,
    raw: &RawApps,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> AppsConfig {
    let key = match (&raw.jwt_secret_env, &raw.jwt_public_key_file) {
        (Some(_), Some(_)) => {
            c.push(
                "apps.jwt_secret_env: set either jwt_secret_env (HS256) or jwt_public_key_file \
                 (RS256/EdDSA), not both"
                    .to_string(),
            );
            None
        }
        (Some(var), None) => secret_key(c, var, lookup),
        (None, Some(file)) => public_key(c, file),
        (None, None) => {
            if raw.cookie_name.is_some()
                || raw.allowed_origins.is_some()
                || raw.issuer.is_some()
                || raw.audience.is_some()
            {
                c.push(
                    "apps: app tokens need a key: set apps.jwt_secret_env (the name of a \
                     variable holding an HS256 secret) or apps.jwt_public_key_file"
                        .to_string(),
                );
            }
            None
        }
    };
    let cookie_name = raw.cookie_name.clone();
    if let Some(name) = &cookie_name
        && (name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        c.push(format!(
            "apps.cookie_name: `{name}` must be 1 or more of A-Z a-z 0-9 _ -"
        ));
    }
    let (allowed_origins, any_origin) = origins(c, raw.allowed_origins.as_deref().unwrap_or(&[]));
    if any_origin && cookie_name.is_some() {
        c.push(
            "apps.allowed_origins: `*` cannot be used with apps.cookie_name (any site could \
             then make a browser send the cookie); list the exact origins"
                .to_string(),
        );
    }
    for (k, v) in [("issuer", &raw.issuer), ("audience", &raw.audience)] {
        if v.as_deref().is_some_and(str::is_empty) {
            c.push(format!(
                "apps.{k}: must not be empty (leave it out to not check it)"
            ));
        }
    }
    AppsConfig {
        key,
        issuer: raw.issuer.clone(),
        audience: raw.audience.clone(),
        leeway: c.duration("apps.leeway", raw.leeway.as_deref(), LEEWAY),
        cookie_name,
        allowed_origins,
        any_origin,
        rate_limit: c.int("apps.rate_limit", raw.rate_limit, RATE_LIMIT) as u32,
    }
}

/// The HS256 key from the variable `var`; its value is never put in a message.
fn secret_key(
    c: &mut Checker,
    var: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<AppKey> {
    let Some(secret) = lookup(var).filter(|s| !s.is_empty()) else {
        c.push(format!(
            "apps.jwt_secret_env: the variable {var} is not set or empty; set it to the HS256 \
             secret the app's backend signs tokens with"
        ));
        return None;
    };
    if secret.len() < MIN_SECRET_LEN {
        c.push(format!(
            "apps.jwt_secret_env: the secret in {var} is {} bytes; HS256 needs at least \
             {MIN_SECRET_LEN} (e.g. `openssl rand -base64 48`)",
            secret.len()
        ));
        return None;
    }
    let key = DecodingKey::from_secret(secret.as_bytes()).ok()?;
    Some(AppKey {
        algorithm: Algorithm::HS256,
        key,
        source: format!("${var}"),
    })
}

/// The RS256 or EdDSA key of the public key PEM at `file`.
fn public_key(c: &mut Checker, file: &std::path::Path) -> Option<AppKey> {
    let shown = file.display();
    let pem = match std::fs::read(file) {
        Ok(pem) => pem,
        Err(e) => {
            c.push(format!(
                "apps.jwt_public_key_file: cannot read {shown}: {e}"
            ));
            return None;
        }
    };
    if String::from_utf8_lossy(&pem).contains("PRIVATE KEY") {
        c.push(format!(
            "apps.jwt_public_key_file: {shown} holds a private key; give the public key \
             (`openssl pkey -in key.pem -pubout`) and keep the private key with the app's backend"
        ));
        return None;
    }
    let (algorithm, key) = if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
        (Algorithm::EdDSA, k)
    } else if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        (Algorithm::RS256, k)
    } else {
        c.push(format!(
            "apps.jwt_public_key_file: {shown} is not an RSA (RS256) or Ed25519 (EdDSA) public \
             key in PEM form (-----BEGIN PUBLIC KEY-----)"
        ));
        return None;
    };
    Some(AppKey {
        algorithm,
        key,
        source: shown.to_string(),
    })
}

/// The checked origins (`scheme://host[:port]`, as browsers send them) and whether `*` was
/// given.
fn origins(c: &mut Checker, raw: &[String]) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut any = false;
    for o in raw {
        if o == "*" {
            any = true;
            continue;
        }
        let serialized = url::Url::parse(o)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .map(|u| u.origin().ascii_serialization());
        match serialized {
            Some(s) if s == *o => out.push(s),
            _ => c.push(format!(
                "apps.allowed_origins: `{o}` is not an origin as browsers send it \
                 (http(s)://host[:port], lowercase, no path or trailing slash), e.g. \
                 https://app.example.com"
            )),
        }
    }
    if any && !out.is_empty() {
        c.push("apps.allowed_origins: `*` already allows every origin; give `*` alone or only exact origins".to_string());
    }
    (out, any)
}

#[cfg(test)]
#[path = "apps_tests.rs"]
mod tests;
