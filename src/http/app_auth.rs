//! App tokens (README "App tokens"): the JWTs an app's backend issues to its mobile and web
//! clients, verified with `[apps]`'s key ([`AppVerifier`]), and what they grant
//! ([`AppGrant`]): the push channels a client may subscribe to and the event types it may
//! publish. Also the browser side: the allowed origins (CORS, the WebSocket Origin check)
//! and the CSRF defence where a cookie carries the token.
//!
//! A token comes from `Authorization: Bearer <token>` or, when `apps.cookie_name` is set,
//! from that cookie (the header wins when both are sent). Its claims: `sub` and `exp`
//! (required), `channels` and `publish` (lists of exact names or `*` globs, default empty),
//! and `iss`/`aud`/`nbf` when the token or `[apps]` has them. Exactly one algorithm is
//! accepted, the one of the configured key (HS256, RS256 or EdDSA), so a token signed with
//! another (`none`, or HS256 with the public key as secret) is refused.
//!
//! CSRF: a request authenticated by the cookie whose method is not GET/HEAD/OPTIONS must
//! carry an `Origin` header listed in `apps.allowed_origins`. Browsers send `Origin` on every
//! such request (same-origin ones included) and a cross-site page cannot forge it, so a form
//! or script on another site cannot use the cookie; a client without a browser sends the
//! token in the header instead. Tokens never appear in errors or logs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};

use crate::config::AppsConfig;
use crate::http::api::ApiError;
use crate::model::envelope::truncate;
use crate::model::keys::glob_matches;

pub(crate) mod publish;
#[cfg(test)]
pub(crate) mod test_keys;
#[cfg(test)]
mod tests;

pub use publish::PublishAuth;

mod limit;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// How long browsers may cache a preflight answer.
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Verifies app tokens and origins; built once from `[apps]`.
pub struct AppVerifier {
    algorithm: Algorithm,
    key: DecodingKey,
    validation: Validation,
    cookie_name: Option<String>,
    origins: Vec<String>,
    any_origin: bool,
    limiter: limit::SubjectLimiter,
}

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppGrant {
    subject: String,
    expires: u64,
    channels: Vec<String>,
    publish: Vec<String>,
    from_cookie: bool,
}

/// The claims read from a token.
#[derive(Deserialize)]
/// `sub` and `exp` are required by the validation, which names a missing one.
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// Why a request was refused; [`AppAuthError::status`] is 401 or 403, the message never
/// contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppAuthError {
    /// No token in the header nor the cookie.
    #[error("missing app token: send it as `Authorization: Bearer <token>`{}", cookie_hint(.0))]
    Missing(Option<String>),
    /// `exp` (plus `apps.leeway`) has passed.
    #[error("the app token has expired; get a new one from the app's backend")]
    Expired,
    /// Not a token `[apps]` accepts; the reason says why.
    #[error("the app token is not valid: {0}")]
    Invalid(String),
    /// The cookie authenticated an unsafe request without an allowed `Origin`.
    #[error(
        "the app token came from the cookie `{0}`, so this request needs an Origin header \
         listed in apps.allowed_origins (CSRF defence); a client outside a browser sends the \
         token as `Authorization: Bearer <token>` instead"
    )]
    CookieWithoutOrigin(String),
    /// An `Origin` not in `apps.allowed_origins`.
    #[error("origin `{0}` is not in apps.allowed_origins")]
    OriginNotAllowed(String),
    /// The token's `channels` do not cover the channel.
    #[error("the app token does not grant channel `{0}`")]
    ChannelNotGranted(String),
    /// The token's `publish` does not cover the type.
    #[error("the app token does not grant publishing type `{0}`")]
    TypeNotGranted(String),
    /// The subject sent more than `apps.rate_limit` requests in a second.
    #[error("too many requests for this app user (apps.rate_limit per second); retry in a second")]
    RateLimited,
}

fn cookie_hint(cookie: &Option<String>) -> String {
    cookie
        .as_ref()
        .map(|c| format!(" or in the cookie `{c}`"))
        .unwrap_or_default()
}

impl AppAuthError {
    /// 401 for a missing, expired or invalid token; 429 past `apps.rate_limit`; 403
    /// otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Missing(_) | Self::Expired | Self::Invalid(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750) of this refusal, if it has one.
    pub fn challenge(&self) -> Option<HeaderValue> {
        let v = match self {
            Self::Missing(_) => r#"Bearer realm="event-worker""#,
            Self::Expired | Self::Invalid(_) => {
                r#"Bearer realm="event-worker", error="invalid_token""#
            }
            Self::ChannelNotGranted(_) | Self::TypeNotGranted(_) => {
                r#"Bearer realm="event-worker", error="insufficient_scope""#
            }
            Self::CookieWithoutOrigin(_) | Self::OriginNotAllowed(_) | Self::RateLimited => {
                return None;
            }
        };
        Some(HeaderValue::from_static(v))
    }
}

impl From<AppAuthError> for ApiError {
    fn from(e: AppAuthError) -> Self {
        ApiError(e.status(), e.to_string())
    }
}

impl IntoResponse for AppAuthError {
    /// The API's JSON error (`{"error": "..."}`), with `WWW-Authenticate` where it applies.
    fn into_response(self) -> Response {
        if self == Self::RateLimited {
            return ApiError::from(self).into_response();
        }
        let mut r = (self.status(), Json(json!({"error": self.to_string()}))).into_response();
        if let Some(c) = self.challenge() {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        r
    }
}

impl AppVerifier {
    /// The verifier of `[apps]`; `None` when app tokens are off (no key configured).
    pub fn from_config(c: &AppsConfig) -> Option<AppVerifier> {
        let key = c.key.as_ref()?;
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = c.leeway.as_secs();
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        match &c.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &c.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        Some(AppVerifier {
            algorithm: key.algorithm,
            key: key.key.clone(),
            validation,
            cookie_name: c.cookie_name.clone(),
            origins: c.allowed_origins.clone(),
            any_origin: c.any_origin,
            limiter: limit::SubjectLimiter::new(c.rate_limit),
        })
    }

    /// Verifies the token of a safe request (GET: a stream, a WebSocket upgrade, a position)
    /// from its header or cookie.
    ///
    /// # Errors
    /// [`AppAuthError`]: 401 without a token, with an expired or invalid one.
    pub fn verify(&self, headers: &HeaderMap) -> Result<AppGrant, AppAuthError> {
        let (token, from_cookie) = self
            .token(headers)
            .ok_or_else(|| AppAuthError::Missing(self.cookie_name.clone()))?;
        self.verify_token(token, from_cookie)
    }

    /// Counts one request of `grant`'s subject against `apps.rate_limit`.
    ///
    /// # Errors
    /// [`AppAuthError::RateLimited`] (429) when its bucket is empty.
    pub fn take(&self, grant: &AppGrant) -> Result<(), AppAuthError> {
        if self.limiter.try_take(&grant.subject) {
            Ok(())
        } else {
            Err(AppAuthError::RateLimited)
        }
    }

    /// When a grant stops being accepted: its `exp` plus `apps.leeway` (a push connection
    /// opened with it is closed then, with `token_expired`).
    pub fn valid_until(&self, grant: &AppGrant) -> SystemTime {
        grant.expires_at() + Duration::from_secs(self.validation.leeway)
    }

    /// Verifies the token of a request of `method`; when the token came from the cookie and
    /// the method is unsafe (POST...), the request's `Origin` must be an allowed one (the
    /// CSRF defence of the module doc).
    ///
    /// # Errors
    /// As [`AppVerifier::verify`]; 403 [`AppAuthError::CookieWithoutOrigin`] or
    /// [`AppAuthError::OriginNotAllowed`] for a cookie without an allowed Origin.
    pub fn verify_request(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<AppGrant, AppAuthError> {
        let grant = self.verify(headers)?;
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if grant.from_cookie && !safe {
            let cookie = self.cookie_name.clone().unwrap_or_default();
            match origin(headers) {
                None => return Err(AppAuthError::CookieWithoutOrigin(cookie)),
                Some(o) if !self.origin_allowed(o) => {
                    return Err(AppAuthError::OriginNotAllowed(truncate(o, 200)));
                }
                Some(_) => {}
            }
        }
        Ok(grant)
    }

    /// The Origin check of a WebSocket upgrade: a request without `Origin` (not from a
    /// browser) passes; a browser's must be in `apps.allowed_origins`.
    ///
    /// # Errors
    /// 403 [`AppAuthError::OriginNotAllowed`].
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), AppAuthError> {
        match origin(headers) {
            Some(o) if !self.origin_allowed(o) => {
                Err(AppAuthError::OriginNotAllowed(truncate(o, 200)))
            }
            _ => Ok(()),
        }
    }

    /// Whether `origin` (as the `Origin` header holds it) is allowed.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin || self.origins.iter().any(|o| o == origin)
    }

    /// The CORS layer of the app-facing routes (publish, push): the allowed origins may call
    /// GET and POST with `Authorization`, `Content-Type` and `Last-Event-ID`; credentials
    /// (the cookie) are allowed for the listed origins only, never with `*`. Preflights are
    /// answered by the layer; other origins get no CORS headers, so browsers block them.
    pub fn cors(&self) -> CorsLayer {
        let allow_origin = if self.any_origin {
            AllowOrigin::any()
        } else {
            let origins = self
                .origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok());
            AllowOrigin::list(origins)
        };
        let listed = self.origins.clone();
        let credentials = AllowCredentials::predicate(move |origin, _| {
            origin.to_str().is_ok_and(|o| listed.iter().any(|l| l == o))
        });
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("last-event-id"),
            ])
            .allow_credentials(credentials)
            .max_age(PREFLIGHT_MAX_AGE)
    }

    /// The token and whether it came from the cookie.
    fn token<'h>(&self, headers: &'h HeaderMap) -> Option<(&'h str, bool)> {
        if let Some(t) = bearer(headers) {
            return Some((t, false));
        }
        let name = self.cookie_name.as_deref()?;
        cookie(headers, name).map(|t| (t, true))
    }

    fn verify_token(&self, token: &str, from_cookie: bool) -> Result<AppGrant, AppAuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AppAuthError::Invalid(format!(
                "it is over {} KiB",
                MAX_TOKEN_LEN / 1024
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| not_a_jwt())?;
        if header.alg != self.algorithm {
            return Err(AppAuthError::Invalid(format!(
                "it is signed with {:?}, but apps accept only {:?} (the algorithm of \
                 [apps]'s key)",
                header.alg, self.algorithm
            )));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| self.reason(e.kind()))?;
        let c = data.claims;
        Ok(AppGrant {
            subject: c.sub.unwrap_or_default(),
            expires: c.exp.unwrap_or_default(),
            channels: c.channels,
            publish: c.publish,
            from_cookie,
        })
    }

    /// The refusal of a token the crate refused, in words.
    fn reason(&self, kind: &ErrorKind) -> AppAuthError {
        let why = match kind {
            ErrorKind::ExpiredSignature => return AppAuthError::Expired,
            ErrorKind::InvalidSignature => "its signature does not match [apps]'s key".into(),
            ErrorKind::MissingRequiredClaim(c) => format!("it has no `{c}` claim"),
            ErrorKind::InvalidClaimFormat(c) => format!("its `{c}` claim is malformed"),
            ErrorKind::InvalidIssuer => "its `iss` is not apps.issuer".into(),
            ErrorKind::InvalidAudience => "its `aud` is not apps.audience".into(),
            ErrorKind::ImmatureSignature => "it is not valid yet (`nbf` is ahead)".into(),
            ErrorKind::Json(e) => {
                let text = e.to_string();
                let text = text
                    .rsplit_once(" at line ")
                    .map_or(text.as_str(), |(t, _)| t);
                format!("its claims are malformed ({})", truncate(text, 200))
            }
            ErrorKind::InvalidAlgorithm => format!("it is not signed with {:?}", self.algorithm),
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                return not_a_jwt();
            }
            _ => "it could not be verified".into(),
        };
        AppAuthError::Invalid(why)
    }
}

fn not_a_jwt() -> AppAuthError {
    AppAuthError::Invalid("it is not a JWT (three base64url parts joined by dots)".into())
}

impl AppGrant {
    /// The token's `sub`.
    #[allow(dead_code)] // kept for logs and audits of app requests; not read yet
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When the token expires (its `exp`).
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires)
    }

    /// Whether the token came from the cookie (not the header).
    #[allow(dead_code)] // the CSRF rule is applied when the token is read; kept for audits
    pub fn came_from_cookie(&self) -> bool {
        self.from_cookie
    }

    /// Whether `channel` may be subscribed to: a pattern of `channels` matches it. A
    /// requested pattern (`user:4*`) passes when a granted pattern matches its text, which
    /// means every channel it matches is granted too.
    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.channels.iter().any(|p| glob_matches(p, channel))
    }

    /// Whether events of `event_type` may be published: a pattern of `publish` matches it.
    pub fn may_publish(&self, event_type: &str) -> bool {
        self.publish.iter().any(|p| glob_matches(p, event_type))
    }

    /// [`AppGrant::may_subscribe`] as a 403.
    ///
    /// # Errors
    /// [`AppAuthError::ChannelNotGranted`].
    pub fn check_subscribe(&self, channel: &str) -> Result<(), AppAuthError> {
        if self.may_subscribe(channel) {
            Ok(())
        } else {
            Err(AppAuthError::ChannelNotGranted(truncate(channel, 200)))
        }
    }

    /// [`AppGrant::may_publish`] as a 403.
    ///
    /// # Errors
    /// [`AppAuthError::TypeNotGranted`].
    pub fn check_publish(&self, event_type: &str) -> Result<(), AppAuthError> {
        if self.may_publish(event_type) {
            Ok(())
        } else {
            Err(AppAuthError::TypeNotGranted(truncate(event_type, 200)))
        }
    }
}

/// The token of `Authorization: Bearer <token>`, if there is a non-empty one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    crate::http::api::extract::bearer_token(headers).filter(|t| !t.is_empty())
}

/// The value of the cookie `name` in the `Cookie` headers, if set and not empty.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// The `Origin` header, if any.
fn origin(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("(not text)"))
}
