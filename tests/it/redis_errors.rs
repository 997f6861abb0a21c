//! Redis errors in plain words (issue 10, point 3): every message names `host:port` (never
//! the password), the cause and the next step; `run` keeps retrying a refused password and
//! heals when it is fixed; the Redis client's own WARN lines stay out of the default log.

use crate::util::worker::{Output, cli};
use crate::util::*;
use std::time::{Duration, Instant};

const TY: &str = "plain.words";
const RIGHT_PW: &str = "right-pw-7c1e94";
const WRONG_PW: &str = "wrong-pw-52ab0d";
const TOKEN: &str = "plain-words-token-0123456789";

/// A config for one-shot commands against `url`.
fn cfg(url: &str) -> WorkerConfig {
    WorkerConfig::new("plain", url).route(Route::blackhole(&[TY]))
}

/// The last stderr line of a command that must fail (exit 1).
fn failure(out: &Output) -> String {
    assert_eq!(out.code, Some(1), "exit code; stderr:\n{}", out.stderr);
    out.stderr.lines().last().unwrap_or_default().to_string()
}

#[test]
fn redis_errors_name_the_server_the_cause_and_the_next_step() {
    let refused_port = free_port();
    let refused = format!("redis://127.0.0.1:{refused_port}");
    let want = format!(
        "event-worker: cannot connect to Redis at 127.0.0.1:{refused_port}: connection refused \
         (is Redis running? is the port right?)"
    );
    for args in [
        &["check"][..],
        &["dlq", "list"],
        &["history"],
        &["publish", TY, "{}"],
    ] {
        assert_eq!(failure(&cli(&cfg(&refused), args)), want, "{args:?}");
    }
    assert_eq!(
        failure(&cli(&cfg("redis://redis-host.invalid:6379"), &["check"])),
        "event-worker: cannot resolve host redis-host.invalid (Redis at redis-host.invalid:6379): \
         check the host name in redis_url / REDIS_URL"
    );
    let redis = RedisServer::start_with_password(RIGHT_PW);
    let port = redis.port;
    // rediss:// to a plaintext server: named as such, well before the 5 s connect timeout.
    let out = cli(
        &cfg(&format!("rediss://:{RIGHT_PW}@127.0.0.1:{port}")),
        &["check"],
    );
    assert_eq!(
        failure(&out),
        format!(
            "event-worker: the server at 127.0.0.1:{port} did not answer the TLS handshake: it \
             speaks plain Redis; use redis:// for a plaintext server (rediss:// is for TLS)"
        )
    );
    assert!(
        out.elapsed < Duration::from_secs(3),
        "took {:?}",
        out.elapsed
    );
    let out = cli(
        &cfg(&format!("redis://:{WRONG_PW}@127.0.0.1:{port}")),
        &["check"],
    );
    assert_eq!(
        failure(&out),
        format!(
            "event-worker: authentication failed (WRONGPASS) at Redis 127.0.0.1:{port}: check the \
             password (and user) in redis_url / REDIS_URL or redis_password_file"
        )
    );
    assert!(!format!("{}{}", out.stdout, out.stderr).contains(WRONG_PW));
    // An ACL user without XADD: NOPERM names the command.
    redis.cmd(&[
        "ACL",
        "SETUSER",
        "noxadd",
        "on",
        ">noxadd-pw-1",
        "~*",
        "&*",
        "+@all",
        "-xadd",
    ]);
    let out = cli(
        &cfg(&format!("redis://noxadd:noxadd-pw-1@127.0.0.1:{port}")),
        &["publish", TY, "{}"],
    );
    assert_eq!(
        failure(&out),
        format!(
            "event-worker: the Redis ACL user lacks permission to run XADD (NOPERM) at \
             127.0.0.1:{port}: grant it, e.g. ACL SETUSER <user> +xadd (README \"Least-privilege \
             Redis user\")"
        )
    );
}

#[test]
fn run_with_a_wrong_password_keeps_retrying_and_heals_when_it_is_fixed() {
    let mut s = Scenario::new("plainauth")
        .types(&[TY])
        .redis(RedisServer::start_with_password(RIGHT_PW))
        .url(|r, _| format!("redis://:{WRONG_PW}@127.0.0.1:{}", r.port))
        .token(TOKEN)
        .no_wait()
        .start();
    let port = s.redis.port;
    let want = format!(
        "authentication failed (WRONGPASS) at Redis 127.0.0.1:{port}: check the password (and \
         user) in redis_url / REDIS_URL or redis_password_file; retrying with backoff (up to every 5 s)"
    );
    wait_until("the plain auth error", Duration::from_secs(5), || {
        s.workers[0].output().contains(&want)
    });
    // Keeps retrying (not exiting), and says it once, not on every attempt.
    std::thread::sleep(Duration::from_secs(3));
    s.w().assert_running();
    let logs = s.w().output();
    assert_eq!(logs.matches("authentication failed").count(), 1, "{logs}");
    assert!(logs.contains(" ERROR "), "not logged at ERROR:\n{logs}");
    assert!(
        !logs.contains(WRONG_PW),
        "the password is in the logs:\n{logs}"
    );
    // The API's 503 says the same.
    let r = s.api(Some(TOKEN)).get("/api/events/dlq/stats");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.json()["error"].as_str().unwrap_or_default(),
        format!(
            "not connected to Redis yet: authentication failed (WRONGPASS) at Redis \
             127.0.0.1:{port}: check the password (and user) in redis_url / REDIS_URL or \
             redis_password_file"
        )
    );
    // The password is fixed in Redis (the old one stays valid for the harness).
    s.redis
        .cmd(&["ACL", "SETUSER", "default", &format!(">{WRONG_PW}")]);
    let fixed = Instant::now();
    s.w().wait_ready(Duration::from_secs(10));
    let healed = fixed.elapsed();
    s.publish("after-fix-1");
    s.conserve(Duration::from_secs(10));
    assert!(
        s.w().output().contains("connected to Redis"),
        "no recovery line:\n{}",
        s.w().output()
    );
    eprintln!("[plain auth] ready {healed:?} after the password was fixed");
}

#[test]
fn default_log_level_says_why_redis_is_down_without_client_warnings() {
    let mut s = Scenario::new("plainlog").types(&[TY]).start();
    let port = s.redis.port;
    s.redis.stop();
    let want = format!(
        "Redis stopped answering: cannot connect to Redis at 127.0.0.1:{port}: connection \
         refused (is Redis running? is the port right?)"
    );
    wait_until("the plain down message", Duration::from_secs(10), || {
        s.workers[0].output().contains(&want)
    });
    std::thread::sleep(Duration::from_secs(2));
    s.redis.start_again();
    wait_until("Redis answers again", Duration::from_secs(15), || {
        s.workers[0].output().contains("Redis answers again")
    });
    let logs = s.w().output();
    assert!(
        !logs.contains("Broadcasting error"),
        "fred's own WARN lines at the default level:\n{logs}"
    );
    assert_eq!(logs.matches("Redis stopped answering").count(), 1, "{logs}");
    s.w().assert_running();
}
