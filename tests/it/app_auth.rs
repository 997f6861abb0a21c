//! App tokens on `POST /api/events/publish` (issue 12 point 6) against the real daemon:
//! the operator token keeps its meaning, an app token publishes the types it is granted
//! and nothing else, every refusal has its exact answer, the cookie needs an allowed Origin
//! (CSRF), tokens never reach the logs; and a real browser (headless Chromium) publishes
//! from an allowed origin and is blocked by CORS from another one.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::util::api::{Api, Resp};
use crate::util::browser::{Browser, PageServer};
use crate::util::*;

/// The HS256 secret of these tests (a test value, 42 bytes).
const SECRET: &str = "it-test-hs256-secret-not-real-0123456789ab";
const OPERATOR: &str = "op3rator-t0ken-c4nary-77aa01";
const BOOKING: &str = "booking.created";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An HS256 token of `claims` signed with `secret`.
fn token_with(secret: &str, claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

/// A token for user 42 that may publish `booking.*`.
fn app_token() -> String {
    let claims =
        json!({"sub": "42", "exp": now() + 600, "channels": ["user:42"], "publish": ["booking.*"]});
    token_with(SECRET, &claims)
}

/// A daemon with `[apps]` (HS256, cookie `ew_token`, `origin` allowed), the operator token,
/// `booking.*` and `payment.*` routed to `sink`, logging at trace.
fn start(redis: &RedisServer, sink: &HttpSink, env: &str, origin: &str) -> WorkerProcess {
    let mut cfg = WorkerConfig::new(env, &redis.url())
        .route(Route::http(&["booking.*", "payment.*"], &sink.url()))
        .api_token(OPERATOR);
    cfg.extra = format!(
        "[apps]\njwt_secret_env = \"APP_JWT_SECRET\"\ncookie_name = \"ew_token\"\n\
         allowed_origins = [{origin:?}]\n"
    );
    cfg.env_vars.push(("APP_JWT_SECRET".into(), SECRET.into()));
    cfg.env_vars.push(("EVENTS_LOG".into(), "trace".into()));
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(20));
    w
}

/// Request headers as (name, value).
type Headers<'a> = Vec<(&'a str, &'a str)>;

fn publish(api: &Api, headers: &[(&str, &str)], ty: &str, id: &str) -> Resp {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    let body = json!({"type": ty, "data": {"id": id}, "id": id}).to_string();
    api.send("POST", "/api/events/publish", &h, Some(body.into_bytes()))
}

#[test]
fn app_tokens_publish_their_types_only_and_never_reach_the_logs() {
    let (env, origin) = ("apps1", "http://127.0.0.1:3000");
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    let mut w = start(&redis, &sink, env, origin);
    let api = Api::new(&w.config.api_addr(), None);
    let token = app_token();
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let r = publish(&api, &auth, BOOKING, "app-1");
    assert_eq!(r.status, 202, "{}", r.body);
    let op = format!("Bearer {OPERATOR}");
    let r = publish(&api, &[("authorization", &op)], "payment.refunded", "op-1");
    assert_eq!(
        r.status, 202,
        "the operator token publishes any type: {}",
        r.body
    );
    let r = publish(&api, &auth, "payment.refunded", "app-2");
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            json!({"error": "the app token does not grant publishing type `payment.refunded`"})
        )
    );
    // The batch form (an app's offline queue): each event's type is checked against the
    // grant; an event outside it is `forbidden` and the others are still published.
    let batch = json!({"events": [
        {"type": BOOKING, "data": {}, "id": "app-b1"},
        {"type": "payment.refunded", "data": {}, "id": "app-b2"},
    ]});
    let r = api.send(
        "POST",
        "/api/events/publish/batch",
        &[("content-type", "application/json"), auth[0]],
        Some(batch.to_string().into_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.json()["results"].clone();
    assert_eq!(results[0]["status"], "published", "{results}");
    assert_eq!(
        (&results[1]["status"], &results[1]["error"]),
        (
            &json!("forbidden"),
            &json!("the app token does not grant publishing type `payment.refunded`")
        ),
        "{results}"
    );
    let expired = token_with(
        SECRET,
        &json!({"sub": "42", "exp": now() - 120, "publish": ["*"]}),
    );
    let forged = token_with(
        "another-secret-of-forty-two-bytes-01234567",
        &json!({"sub": "42", "exp": now() + 600, "publish": ["*"]}),
    );
    let cookie = format!("ew_token={token}");
    let (expired_h, forged_h) = (format!("Bearer {expired}"), format!("Bearer {forged}"));
    let refusals: Vec<(Headers, u16, &str)> = vec![
        (
            vec![],
            401,
            "missing app token: send it as `Authorization: Bearer <token>` or in the cookie `ew_token`",
        ),
        (
            vec![("authorization", &expired_h)],
            401,
            "the app token has expired; get a new one from the app's backend",
        ),
        (
            vec![("authorization", &forged_h)],
            401,
            "the app token is not valid: its signature does not match [apps]'s key",
        ),
        (
            vec![("cookie", &cookie)],
            403,
            "the app token came from the cookie `ew_token`, so this request needs an Origin header listed in apps.allowed_origins (CSRF defence); a client outside a browser sends the token as `Authorization: Bearer <token>` instead",
        ),
        (
            vec![("cookie", &cookie), ("origin", "http://127.0.0.1:3001")],
            403,
            "origin `http://127.0.0.1:3001` is not in apps.allowed_origins",
        ),
    ];
    for (headers, status, message) in refusals {
        let r = publish(&api, &headers, BOOKING, "refused");
        assert_eq!(
            (r.status, r.json()),
            (status, json!({"error": message})),
            "{headers:?}"
        );
        if status == 401 {
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|c| c.starts_with("Bearer realm=\"event-worker\""))
            );
        }
    }
    let r = publish(
        &api,
        &[("cookie", &cookie), ("origin", origin)],
        BOOKING,
        "app-3",
    );
    assert_eq!(
        r.status, 202,
        "the cookie with an allowed Origin: {}",
        r.body
    );
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    wait_until(
        "the three published events handled",
        Duration::from_secs(15),
        || {
            ["app-1", "op-1", "app-3"]
                .iter()
                .all(|id| !sink.requests_for(id).is_empty())
        },
    );
    assert!(sink.requests_for("refused").is_empty() && sink.requests_for("app-2").is_empty());
    w.sigterm();
    let _ = w.wait_exit(Duration::from_secs(10));
    let mut logs = w.output();
    for args in [&["check"][..], &["--json", "check"]] {
        let out = crate::util::worker::cli(&w.config, args);
        logs += &out.stdout;
        logs += &out.stderr;
    }
    for (what, s) in [
        ("the app token", token.as_str()),
        ("the expired token", &expired),
        ("the forged token", &forged),
        ("the HS256 secret", SECRET),
        ("the operator token", OPERATOR),
    ] {
        assert!(
            !logs.contains(s),
            "the logs (EVENTS_LOG=trace) or `check` ({} bytes) contain {what}",
            logs.len()
        );
    }
}

/// The page's script: POST one event to `url` with `init`'s headers and credentials; the
/// answer's status and body, or the error the browser gave (CORS).
fn publish_js(url: &str, headers: &Value, credentials: &str, id: &str) -> String {
    let body = json!({"type": BOOKING, "data": {"id": id}, "id": id}).to_string();
    format!(
        "fetch({url:?}, {{method: 'POST', credentials: {credentials:?}, headers: {headers}, body: {body:?}}})\
         .then(async r => ({{status: r.status, body: await r.text()}}), e => ({{error: String(e)}}))"
    )
}

#[test]
fn a_browser_publishes_from_an_allowed_origin_and_is_blocked_from_another() {
    let env = "apps2";
    let allowed = PageServer::start("<!doctype html><title>allowed</title>");
    let other = PageServer::start("<!doctype html><title>other</title>");
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    let w = start(&redis, &sink, env, &allowed.origin());
    let url = format!("http://{}/api/events/publish", w.config.api_addr());
    let headers = json!({"authorization": format!("Bearer {}", app_token()), "content-type": "application/json"});
    let t = Duration::from_secs(5);
    let mut browser = Browser::launch();

    let page = browser.open(&allowed.url("/"));
    let r = browser
        .eval(&page, &publish_js(&url, &headers, "omit", "b-1"), t)
        .unwrap();
    assert_eq!(r["status"], json!(202), "{r}");
    assert_eq!(
        serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap()["id"],
        json!("b-1")
    );
    // The cookie, sent by the browser itself (credentials: include), from the allowed origin.
    browser
        .eval(
            &page,
            &format!("document.cookie = 'ew_token={}; path=/'", app_token()),
            t,
        )
        .unwrap();
    let json_only = json!({"content-type": "application/json"});
    let r = browser
        .eval(&page, &publish_js(&url, &json_only, "include", "b-2"), t)
        .unwrap();
    assert_eq!(r["status"], json!(202), "{r}");
    browser.close(page);

    let page = browser.open(&other.url("/"));
    let r = browser
        .eval(&page, &publish_js(&url, &headers, "omit", "b-3"), t)
        .unwrap();
    assert_eq!(
        r,
        json!({"error": "TypeError: Failed to fetch"}),
        "CORS blocks another origin"
    );
    let r = browser
        .eval(&page, &publish_js(&url, &json_only, "include", "b-4"), t)
        .unwrap();
    assert_eq!(
        r,
        json!({"error": "TypeError: Failed to fetch"}),
        "and its cookie"
    );
    browser.close(page);

    wait_until("b-1 and b-2 handled", Duration::from_secs(10), || {
        !sink.requests_for("b-1").is_empty() && !sink.requests_for("b-2").is_empty()
    });
    let ids: Vec<String> = redis
        .xrange(&stream_key(env, BOOKING))
        .iter()
        .filter_map(|e| e.get("id").map(str::to_string))
        .collect();
    assert_eq!(
        ids,
        ["b-1", "b-2"],
        "nothing published from the other origin"
    );
    assert_eq!(
        (
            sink.requests_for("b-1").len(),
            sink.requests_for("b-2").len()
        ),
        (1, 1)
    );
}

/// `apps.rate_limit`: each app user (token `sub`) has a bucket of its own, apart from the
/// operator's `api.rate_limit`; past it, 429 with `Retry-After: 1` and the JSON message.
#[test]
fn app_users_are_rate_limited_each_in_their_own_bucket() {
    let (env, origin) = ("apps3", "http://127.0.0.1:3000");
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    let mut cfg = WorkerConfig::new(env, &redis.url())
        .route(Route::http(&["booking.*"], &sink.url()))
        .api_token(OPERATOR);
    cfg.api_extra += "rate_limit = 3\n";
    cfg.extra = format!(
        "[apps]\njwt_secret_env = \"APP_JWT_SECRET\"\nallowed_origins = [{origin:?}]\n\
         rate_limit = 5\n"
    );
    cfg.env_vars.push(("APP_JWT_SECRET".into(), SECRET.into()));
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(20));
    let api = Api::new(&w.config.api_addr(), None);
    let user = |sub: &str| {
        let claims = json!({"sub": sub, "exp": now() + 600, "publish": ["booking.*"]});
        format!("Bearer {}", token_with(SECRET, &claims))
    };
    let (u42, u43) = (user("42"), user("43"));
    let started = std::time::Instant::now();
    let statuses: Vec<u16> = (0..8)
        .map(|i| {
            publish(
                &api,
                &[("authorization", &u42)],
                BOOKING,
                &format!("r42-{i}"),
            )
            .status
        })
        .collect();
    // A burst of 5, then 5 a second: 8 requests within 0.2 s get 5 accepted; a loaded
    // machine that took longer earned a token per 0.2 s more (never the operator's 3 nor its
    // 500 default, which would accept all 8 however fast).
    let secs = started.elapsed().as_secs_f64();
    let accepted = statuses.iter().take_while(|s| **s == 202).count();
    let earned = 5 + (secs * 5.0).floor() as usize;
    assert!(
        statuses[..5] == [202; 5]
            && accepted <= earned
            && statuses[accepted..].iter().all(|s| *s == 429),
        "user 42: 5 per second, not the operator's 3 nor its 500 default: {statuses:?} in {secs:.2}s"
    );
    if secs < 0.2 {
        assert_eq!(accepted, 5, "{statuses:?} in {secs:.2}s");
    }
    // The next one is refused with its retry hint. A machine slow enough to have earned
    // tokens since the burst (one per 0.2 s) spends them first, each counted against the time.
    let mut extra = 0;
    let r = loop {
        let r = publish(
            &api,
            &[("authorization", &u42)],
            BOOKING,
            &format!("r42-x{extra}"),
        );
        if r.status != 202 || extra == 5 {
            break r;
        }
        extra += 1;
    };
    let secs = started.elapsed().as_secs_f64();
    assert!(
        accepted + extra <= 5 + (secs * 5.0).floor() as usize,
        "user 42: {accepted} + {extra} accepted in {secs:.2}s at 5 per second"
    );
    assert_eq!(
        (r.status, r.header("retry-after"), r.json()),
        (
            429,
            Some("1"),
            json!({"error": "too many requests for this app user (apps.rate_limit per second); retry in a second"})
        )
    );
    let r = publish(&api, &[("authorization", &u43)], BOOKING, "r43-0");
    assert_eq!(r.status, 202, "user 43 has its own bucket: {}", r.body);
    let op = format!("Bearer {OPERATOR}");
    let ops: Vec<u16> = (0..3)
        .map(|i| publish(&api, &[("authorization", &op)], BOOKING, &format!("op-{i}")).status)
        .collect();
    assert_eq!(
        ops,
        [202, 202, 202],
        "the operator's bucket was not used by the apps"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let r = publish(&api, &[("authorization", &u42)], BOOKING, "r42-later");
    assert_eq!(r.status, 202, "refilled after a second: {}", r.body);
    let published = redis.xlen(&format!("events:{env}:{BOOKING}"));
    assert_eq!(
        published,
        (accepted + extra + 1 + 3 + 1) as i64,
        "refused publishes wrote nothing"
    );
}
