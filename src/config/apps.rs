//! `[apps]`: how the tokens mobile and web apps present are verified (JWTs issued by the
//! app's backend, granting push channels and publish types), and which browser origins may
//! call push and publish.

use serde::Deserialize;

use super::parse::Checker;

/// `[apps]` as the file holds it.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawApps {}

/// `[apps]`: the verified form.
#[derive(Debug, Clone, Default)]
pub struct AppsConfig {}

/// Validates `[apps]`, naming each bad key (`apps.jwt_secret_env: ...`).
pub(super) fn apps(
    _c: &mut Checker,
    _raw: &RawApps,
    _lookup: &dyn Fn(&str) -> Option<String>,
) -> AppsConfig {
    AppsConfig {}
}
