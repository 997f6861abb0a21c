//! `[apps]` validation: every refusal names its key, never the secret.

use crate::config::Config;

const BASE: &str = "env = \"t\"\nredis_url = \"redis://127.0.0.1:1\"\n";
const GOOD: &str = "a-test-secret-that-is-long-enough-0123456789";

fn load(section: &str, secret: Option<&str>) -> Result<Config, String> {
    let text = format!("{BASE}[apps]\n{section}");
    Config::from_toml_and_env(&text, |n| {
        (n == "APP_JWT_SECRET")
            .then(|| secret.map(str::to_string))
            .flatten()
    })
    .map_err(|e| e.to_string())
}

#[test]
fn off_by_default_and_on_with_a_secret() {
    let c = Config::from_toml_and_env(BASE, |_| None).unwrap();
    assert!(c.apps.key.is_none());
    let c = load(
        "jwt_secret_env = \"APP_JWT_SECRET\"\nallowed_origins = [\"https://app.example.com\", \"http://127.0.0.1:8080\"]\nleeway = \"5s\"\n",
        Some(GOOD),
    )
    .unwrap();
    let key = c.apps.key.as_ref().unwrap();
    assert_eq!(format!("{key:?}"), "AppKey(HS256 from $APP_JWT_SECRET)");
    assert!(!format!("{:?}", c.apps).contains(GOOD));
    assert_eq!(
        c.apps.allowed_origins,
        ["https://app.example.com", "http://127.0.0.1:8080"]
    );
    assert_eq!(c.apps.leeway, std::time::Duration::from_secs(5));
}

#[test]
fn a_short_or_missing_secret_is_refused_without_showing_it() {
    let short = "short-secret-17by";
    let e = load("jwt_secret_env = \"APP_JWT_SECRET\"\n", Some(short)).unwrap_err();
    assert!(
        e.contains("apps.jwt_secret_env: the secret in APP_JWT_SECRET is 17 bytes; HS256 needs at least 32 (e.g. `openssl rand -base64 48`)"),
        "{e}"
    );
    assert!(!e.contains(short), "{e}");
    let e = load("jwt_secret_env = \"APP_JWT_SECRET\"\n", None).unwrap_err();
    assert!(
        e.contains("apps.jwt_secret_env: the variable APP_JWT_SECRET is not set or empty; set it to the HS256 secret the app's backend signs tokens with"),
        "{e}"
    );
}

#[test]
fn bad_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private.pem");
    std::fs::write(
        &private,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let file =
        |p: &std::path::Path| format!("jwt_public_key_file = {:?}\n", p.display().to_string());
    let e = load(&file(&private), None).unwrap_err();
    assert!(
        e.contains(&format!(
            "apps.jwt_public_key_file: {} holds a private key; give the public key",
            private.display()
        )),
        "{e}"
    );
    let e = load(&file(&garbage), None).unwrap_err();
    assert!(e.contains(&format!("apps.jwt_public_key_file: {} is not an RSA (RS256) or Ed25519 (EdDSA) public key in PEM form", garbage.display())), "{e}");
    let e = load(&file(&dir.path().join("absent.pem")), None).unwrap_err();
    assert!(e.contains("apps.jwt_public_key_file: cannot read "), "{e}");
    let e = load(
        &format!("jwt_secret_env = \"APP_JWT_SECRET\"\n{}", file(&garbage)),
        Some(GOOD),
    )
    .unwrap_err();
    assert!(e.contains("apps.jwt_secret_env: set either jwt_secret_env (HS256) or jwt_public_key_file (RS256/EdDSA), not both"), "{e}");
    let e = load("cookie_name = \"t\"\n", None).unwrap_err();
    assert!(
        e.contains("apps: app tokens need a key: set apps.jwt_secret_env"),
        "{e}"
    );
}

#[test]
fn origins_and_cookies_are_checked() {
    let s = "jwt_secret_env = \"APP_JWT_SECRET\"\n";
    let e = load(
        &format!("{s}allowed_origins = [\"https://app.example.com/\", \"app.example.com\"]\n"),
        Some(GOOD),
    )
    .unwrap_err();
    assert!(e.contains("apps.allowed_origins: `https://app.example.com/` is not an origin as browsers send it (http(s)://host[:port], lowercase, no path or trailing slash), e.g. https://app.example.com"), "{e}");
    assert!(e.contains("`app.example.com` is not an origin"), "{e}");
    let e = load(
        &format!("{s}allowed_origins = [\"*\"]\ncookie_name = \"ew_token\"\n"),
        Some(GOOD),
    )
    .unwrap_err();
    assert!(e.contains("apps.allowed_origins: `*` cannot be used with apps.cookie_name (any site could then make a browser send the cookie); list the exact origins"), "{e}");
    let e = load(&format!("{s}cookie_name = \"a b\"\n"), Some(GOOD)).unwrap_err();
    assert!(
        e.contains("apps.cookie_name: `a b` must be 1 or more of A-Z a-z 0-9 _ -"),
        "{e}"
    );
    let c = load(&format!("{s}allowed_origins = [\"*\"]\n"), Some(GOOD)).unwrap();
    assert!(c.apps.any_origin);
}

#[test]
fn variables_set_the_section() {
    let text = BASE.to_string();
    let c = Config::from_toml_and_env(&text, |n| match n {
        "EVENTS_APPS_JWT_SECRET_ENV" => Some("APP_JWT_SECRET".into()),
        "APP_JWT_SECRET" => Some(GOOD.into()),
        "EVENTS_APPS_ALLOWED_ORIGINS" => Some("http://127.0.0.1:1, http://127.0.0.1:2".into()),
        "EVENTS_APPS_COOKIE_NAME" => Some("ew_token".into()),
        _ => None,
    })
    .unwrap();
    assert!(c.apps.key.is_some());
    assert_eq!(
        c.apps.allowed_origins,
        ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    );
    assert_eq!(c.apps.cookie_name.as_deref(), Some("ew_token"));
}
