//! App token verification: HS256, RS256 and EdDSA (keys made at test time), every refusal
//! with its exact message, the cookie's CSRF check, origins, and the CORS of publish through
//! the router.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::test_keys::{ed_key, rsa_key};
use super::*;
use crate::config::Config;

/// An HS256 secret of 40 bytes (a test value).
pub(crate) const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";
const OPERATOR: &str = "0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A token of `claims` signed with `key` and `alg`.
fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        claims,
    )
}

/// Claims for user 42: channel `user:42` and `type:*`, publishing `booking.*`.
fn claims() -> Value {
    json!({"sub": "42", "exp": now() + 600, "channels": ["user:42", "type:*"], "publish": ["booking.*"]})
}

/// `[apps]` of `section`, with `APP_JWT_SECRET` = [`SECRET`].
fn apps_config(section: &str) -> Config {
    let toml = format!("env = \"t\"\nredis_url = \"redis://127.0.0.1:1\"\n[apps]\n{section}");
    Config::from_toml_and_env(&toml, |n| {
        (n == "APP_JWT_SECRET").then(|| SECRET.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn verifier(section: &str) -> AppVerifier {
    AppVerifier::from_config(&apps_config(section).apps).expect("[apps] is on")
}

const HS_APPS: &str = "jwt_secret_env = \"APP_JWT_SECRET\"\ncookie_name = \"ew_token\"\n\
                       allowed_origins = [\"http://127.0.0.1:3000\"]\n";

fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(k.clone(), HeaderValue::from_str(v).unwrap());
    }
    h
}

fn bearer(token: &str) -> HeaderMap {
    headers(&[(header::AUTHORIZATION, &format!("Bearer {token}"))])
}

#[test]
fn hs256_token_grants_its_channels_and_types() {
    let v = verifier(HS_APPS);
    let exp = now() + 600;
    let mut c = claims();
    c["exp"] = json!(exp);
    let g = v.verify(&bearer(&hs(&c))).unwrap();
    assert_eq!(g.subject(), "42");
    assert_eq!(g.expires_at(), UNIX_EPOCH + Duration::from_secs(exp));
    assert!(!g.came_from_cookie());
    assert!(g.may_subscribe("user:42") && g.may_subscribe("type:booking.created"));
    assert!(g.may_subscribe("type:*"), "a pattern inside the grant");
    assert!(!g.may_subscribe("user:43") && !g.may_subscribe("user:*"));
    assert!(g.may_publish("booking.created") && !g.may_publish("payment.refunded"));
    assert_eq!(
        g.check_publish("payment.refunded").unwrap_err().to_string(),
        "the app token does not grant publishing type `payment.refunded`"
    );
    assert_eq!(
        g.check_subscribe("user:43").unwrap_err().to_string(),
        "the app token does not grant channel `user:43`"
    );
}

#[test]
fn rs256_and_eddsa_tokens_verify_with_a_public_key_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, (signing, public), alg) in [
        ("rsa", rsa_key(), Algorithm::RS256),
        ("ed", ed_key(), Algorithm::EdDSA),
    ] {
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, &public).unwrap();
        let v = verifier(&format!(
            "jwt_public_key_file = {:?}\n",
            path.display().to_string()
        ));
        assert_eq!(v.algorithm, alg);
        let g = v.verify(&bearer(&sign(alg, &signing, &claims()))).unwrap();
        assert_eq!(g.subject(), "42", "{name}");
        // Another key of the same kind: bad signature.
        let (other, _) = if alg == Algorithm::RS256 {
            rsa_key()
        } else {
            ed_key()
        };
        assert_eq!(
            v.verify(&bearer(&sign(alg, &other, &claims())))
                .unwrap_err(),
            AppAuthError::Invalid("its signature does not match [apps]'s key".into()),
            "{name}"
        );
        // Algorithm confusion: HS256 "signed" with the public key as the secret.
        let forged = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(public.as_bytes()).unwrap(),
            &claims(),
        );
        assert_eq!(
            v.verify(&bearer(&forged)).unwrap_err().to_string(),
            format!(
                "the app token is not valid: it is signed with HS256, but apps accept only \
                 {alg:?} (the algorithm of [apps]'s key)"
            ),
        );
    }
}

#[test]
fn every_refusal_has_its_status_and_message_and_never_the_token() {
    let v = verifier(&format!(
        "{HS_APPS}issuer = \"backend\"\naudience = \"app\"\n"
    ));
    let ok = json!({"sub": "42", "exp": now() + 600, "iss": "backend", "aud": "app"});
    assert!(v.verify(&bearer(&hs(&ok))).is_ok());
    let with = |k: &str, val: Value| {
        let mut c = ok.clone();
        c[k] = val;
        hs(&c)
    };
    let without = |k: &str| {
        let mut c = ok.clone();
        c.as_object_mut().unwrap().remove(k);
        hs(&c)
    };
    let other_secret = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-of-forty-bytes-0123456789").unwrap(),
        &ok,
    );
    let hs512 = sign(
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        &ok,
    );
    let cases: Vec<(HeaderMap, String, StatusCode, &str)> = vec![
        (
            HeaderMap::new(),
            String::new(),
            StatusCode::UNAUTHORIZED,
            "missing app token: send it as `Authorization: Bearer <token>` or in the cookie `ew_token`",
        ),
        (
            bearer(&with("exp", json!(now() - 31 - 60))),
            String::new(),
            StatusCode::UNAUTHORIZED,
            "the app token has expired; get a new one from the app's backend",
        ),
        (
            bearer(&other_secret),
            other_secret.clone(),
            StatusCode::UNAUTHORIZED,
            "the app token is not valid: its signature does not match [apps]'s key",
        ),
        (
            bearer(&hs512),
            hs512.clone(),
            StatusCode::UNAUTHORIZED,
            "the app token is not valid: it is signed with HS512, but apps accept only HS256 (the algorithm of [apps]'s key)",
        ),
        (
            bearer("not-a-token"),
            "not-a-token".into(),
            StatusCode::UNAUTHORIZED,
            "the app token is not valid: it is not a JWT (three base64url parts joined by dots)",
        ),
        (
            bearer(&without("sub")),
            String::new(),
            StatusCode::UNAUTHORIZED,
            "the app token is not valid: it has no `sub` claim",
        ),
        (
            bearer(&without("exp")),
            String::new(),
            StatusCode::UNAUTHORIZED,
            "the app token is not valid: it has no `exp` claim",
        ),
        (
            bearer(&with("iss", json!("elsewhere"))),
            String::new(),
            StatusCode::UNAUTHORIZED,
            "the app token is not valid: its `iss` is not apps.issuer",
        ),
        (
            bearer(&with("aud", json!("other"))),
            String::new(),
            StatusCode::UNAUTHORIZED,
            "the app token is not valid: its `aud` is not apps.audience",
        ),
        (
            bearer(&with("nbf", json!(now() + 3600))),
            String::new(),
            StatusCode::UNAUTHORIZED,
            "the app token is not valid: it is not valid yet (`nbf` is ahead)",
        ),
        (
            bearer(&with("channels", json!("user:42"))),
            String::new(),
            StatusCode::UNAUTHORIZED,
            "the app token is not valid: its claims are malformed (invalid type: string \"user:42\", expected a sequence)",
        ),
    ];
    for (h, token, status, message) in cases {
        let e = v.verify(&h).unwrap_err();
        assert_eq!((e.status(), e.to_string().as_str()), (status, message));
        if !token.is_empty() {
            assert!(!e.to_string().contains(&token));
        }
        let r = e.clone().into_response();
        assert_eq!(r.status(), status);
        let challenge = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
        if matches!(e, AppAuthError::Missing(_)) {
            assert_eq!(challenge, r#"Bearer realm="event-worker""#);
        } else {
            assert_eq!(
                challenge,
                r#"Bearer realm="event-worker", error="invalid_token""#
            );
        }
    }
}

#[test]
fn a_cookie_needs_an_allowed_origin_on_unsafe_requests() {
    let v = verifier(HS_APPS);
    let token = hs(&claims());
    let cookie = format!("theme=dark; ew_token={token}");
    let jar = |origin: Option<&str>| {
        let mut h = headers(&[(header::COOKIE, &cookie)]);
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    };
    let g = v.verify(&jar(None)).unwrap();
    assert!(g.came_from_cookie(), "GET: the cookie authenticates");
    assert_eq!(
        v.verify_request(&Method::POST, &jar(None))
            .unwrap_err()
            .to_string(),
        "the app token came from the cookie `ew_token`, so this request needs an Origin header \
         listed in apps.allowed_origins (CSRF defence); a client outside a browser sends the \
         token as `Authorization: Bearer <token>` instead"
    );
    let e = v
        .verify_request(&Method::POST, &jar(Some("http://evil.test")))
        .unwrap_err();
    assert_eq!(
        (e.status(), e.to_string().as_str()),
        (
            StatusCode::FORBIDDEN,
            "origin `http://evil.test` is not in apps.allowed_origins"
        )
    );
    assert!(
        v.verify_request(&Method::POST, &jar(Some("http://127.0.0.1:3000")))
            .is_ok()
    );
    // The header needs no Origin: no browser sends it by itself.
    assert!(v.verify_request(&Method::POST, &bearer(&token)).is_ok());
    // A verifier without a cookie name ignores cookies.
    let no_cookie = verifier("jwt_secret_env = \"APP_JWT_SECRET\"\n");
    assert_eq!(
        no_cookie.verify(&jar(None)).unwrap_err().to_string(),
        "missing app token: send it as `Authorization: Bearer <token>`"
    );
}

#[test]
fn websocket_origins_are_checked() {
    let v = verifier(HS_APPS);
    assert!(
        v.check_origin(&HeaderMap::new()).is_ok(),
        "no Origin: not a browser"
    );
    assert!(
        v.check_origin(&headers(&[(header::ORIGIN, "http://127.0.0.1:3000")]))
            .is_ok()
    );
    let e = v
        .check_origin(&headers(&[(header::ORIGIN, "http://127.0.0.1:3001")]))
        .unwrap_err();
    assert_eq!(e.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        e.to_string(),
        "origin `http://127.0.0.1:3001` is not in apps.allowed_origins"
    );
    let any = verifier("jwt_secret_env = \"APP_JWT_SECRET\"\nallowed_origins = [\"*\"]\n");
    assert!(
        any.check_origin(&headers(&[(header::ORIGIN, "http://x.test")]))
            .is_ok()
    );
}

/// An API state with the operator token, `[apps]` of `section` and no worker connected.
fn state(section: Option<&str>) -> crate::http::state::ApiState {
    use crate::http::state::{ApiState, RateLimiter};
    ApiState {
        metrics: crate::metrics::Metrics::new(),
        health: Arc::new(crate::worker::health::Health::default()),
        ready_window: Duration::from_secs(5),
        worker: Arc::new(OnceLock::new()),
        token: Some(crate::model::secret::Secret::new(OPERATOR)),
        apps: section.map(|s| Arc::new(verifier(s))),
        push: None,
        offline: None,
        backlog: Arc::new(crate::ops::backlog::BacklogCache::default()),
        limiter: Arc::new(RateLimiter::new(0)),
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
    }
}

async fn send(
    state: crate::http::state::ApiState,
    method: Method,
    extra: &[(header::HeaderName, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().method(method).uri("/api/events/publish");
    for (k, v) in extra {
        req = req.header(k.clone(), *v);
    }
    let body = Body::from(r#"{"type":"booking.created","data":{}}"#);
    let r = crate::http::server::router(state)
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let (parts, body) = r.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn publish_answers_cors_for_allowed_origins_only() {
    let preflight = |origin: &'static str| {
        vec![
            (header::ORIGIN, origin),
            (header::ACCESS_CONTROL_REQUEST_METHOD, "POST"),
            (
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type",
            ),
        ]
    };
    let (status, h, _) = send(
        state(Some(HS_APPS)),
        Method::OPTIONS,
        &preflight("http://127.0.0.1:3000"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://127.0.0.1:3000"
    );
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    let allowed = h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    let (_, h, _) = send(
        state(Some(HS_APPS)),
        Method::OPTIONS,
        &preflight("http://evil.test"),
    )
    .await;
    assert!(
        h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "{h:?}"
    );
    assert!(
        h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(),
        "{h:?}"
    );
    // A refusal is readable by the allowed origin's script: it carries the CORS headers.
    let json_ct = (header::CONTENT_TYPE, "application/json");
    let (status, h, body) = send(
        state(Some(HS_APPS)),
        Method::POST,
        &[(header::ORIGIN, "http://127.0.0.1:3000"), json_ct.clone()],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "http://127.0.0.1:3000"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "missing app token: send it as `Authorization: Bearer <token>` or in the cookie `ew_token`"})
    );
    // A valid app token or the operator token passes auth (503: no Redis in this test).
    let token = format!("Bearer {}", hs(&claims()));
    let op = format!("Bearer {OPERATOR}");
    for auth in [token.as_str(), op.as_str()] {
        let (status, _, body) = send(
            state(Some(HS_APPS)),
            Method::POST,
            &[(header::AUTHORIZATION, auth), json_ct.clone()],
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    // Without [apps]: no CORS at all, OPTIONS is not allowed, app tokens mean nothing.
    let (status, h, _) = send(
        state(None),
        Method::OPTIONS,
        &preflight("http://127.0.0.1:3000"),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    let (status, _, body) = send(
        state(None),
        Method::POST,
        &[(header::AUTHORIZATION, &token), json_ct],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, r#"{"error":"missing or wrong bearer token"}"#);
}
