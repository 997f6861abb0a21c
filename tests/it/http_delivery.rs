//! The per-event http route on its hyper client: the request is what the route sent before
//! (body byte for byte, content type, accept, user agent), and credentials in the route's URL
//! go out as `Authorization: Basic` (percent-decoded), never in the URL or the logs. An
//! `http://` route keeps its connections (never more than `concurrency`), and a server that
//! closes each connection after its answer still gets every event once.

use crate::util::*;
use std::time::Duration;

const TY: &str = "order.paid";

#[test]
fn http_request_is_byte_exact_and_url_credentials_become_basic_auth() {
    let env = "httpreq";
    let s = Scenario::new(env)
        .types(&[TY])
        .routes(|_, url| {
            let url = url.replace("http://", "http://hook%40user:s3cr%3At@");
            vec![Route::http(&[TY], &url)]
        })
        .start();
    publish(&s.redis, env, TY, "h-1");
    wait_until("h-1 delivered", Duration::from_secs(10), || {
        s.sink.success_counts().get("h-1") == Some(&1)
    });
    let r = &s.sink.requests_for("h-1")[0];
    assert_eq!(
        String::from_utf8_lossy(&r.raw),
        r#"{"specversion":"1.0","id":"h-1","type":"order.paid","source":"event-worker","datacontenttype":"application/json","attempt":0,"data":{"n":"h-1"}}"#
    );
    let header = |k: &str| r.headers.get(k).map(String::as_str);
    assert_eq!(
        (
            r.path.as_str(),
            header("content-type"),
            header("accept"),
            header("user-agent"),
            header("authorization"),
        ),
        (
            "/events",
            Some("application/cloudevents+json"),
            Some("*/*"),
            Some(concat!("event-worker/", env!("CARGO_PKG_VERSION"))),
            // base64("hook@user:s3cr:t")
            Some("Basic aG9va0B1c2VyOnMzY3I6dA=="),
        )
    );
    let logs = s.workers[0].output();
    assert!(
        !logs.contains("s3cr"),
        "the password is in the logs:\n{logs}"
    );
}

/// Each event's requests, counted: every one of `n` ids `<prefix>-<i>` exactly once.
fn assert_each_once(sink: &HttpSink, prefix: &str, n: usize) {
    let counts = sink.request_counts();
    let wrong: Vec<_> = (0..n)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|id| counts.get(id) != Some(&1))
        .collect();
    assert!(
        wrong.is_empty() && counts.len() == n,
        "not each exactly once: {wrong:?}\n{}",
        sink.ledger_dump()
    );
}

/// 300 events, each answered after 2 ms (so runs overlap), over at most `concurrency` (8) TCP
/// connections: the route reuses its connections (a connection per request would be 300).
#[test]
fn http_route_reuses_at_most_concurrency_connections() {
    let env = "httpreuse";
    let s = Scenario::new(env)
        .types(&[TY])
        .sink(Action::delayed(200, Duration::from_millis(2)))
        .config(|c| c.concurrency = 8)
        .start();
    for i in 0..300 {
        publish(&s.redis, env, TY, &format!("r-{i}"));
    }
    wait_until("300 events delivered", Duration::from_secs(20), || {
        s.sink.success_counts().len() == 300
    });
    assert_each_once(&s.sink, "r", 300);
    let connections = s.sink.connections();
    assert!(
        (1..=8).contains(&connections),
        "{connections} connections for concurrency 8"
    );
    assert!(
        s.sink.max_concurrent() > 1,
        "the runs never overlapped: the bound was not exercised"
    );
}

/// A sink that closes every connection after its answer (`Connection: close`): each of 40
/// events is delivered once, each on a new connection, none lost or sent twice.
#[test]
fn http_route_delivers_once_to_a_server_closing_each_connection() {
    let env = "httpclose";
    let s = Scenario::new(env).types(&[TY]).start();
    s.sink.set_close_connections(true);
    for i in 0..40 {
        publish(&s.redis, env, TY, &format!("c-{i}"));
    }
    wait_until("40 events delivered", Duration::from_secs(20), || {
        s.sink.success_counts().len() == 40
    });
    // Nothing is retried late: the ledger stays at one request per event.
    std::thread::sleep(Duration::from_millis(300));
    assert_each_once(&s.sink, "c", 40);
    assert_eq!(s.sink.connections(), 40);
}

/// A target that refuses connections: the event's error names the host and port and the
/// cause (before: `http: connection failed`, with neither).
#[test]
fn http_connection_refused_names_the_address_and_the_cause() {
    let env = "httprefused";
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = Scenario::new(env)
        .types(&[TY])
        .routes(move |_, _| {
            vec![Route::http(
                &[TY],
                &format!("http://127.0.0.1:{port}/hook?token=t0k3n"),
            )]
        })
        .config(|c| c.max_attempts = 1)
        .start();
    publish(&s.redis, env, TY, "x-1");
    wait_until("x-1 dead-lettered", Duration::from_secs(10), || {
        dlq_entries(&s.redis, env).len() == 1
    });
    let dlq = dlq_entries(&s.redis, env);
    assert_eq!(
        (dlq[0].get("dlq_reason"), dlq[0].get("dlq_error")),
        (
            Some("max_attempts_exceeded"),
            Some(
                format!(
                    "http: connection failed (127.0.0.1:{port}: Connection refused (os error 111))"
                )
                .as_str()
            )
        )
    );
    let logs = s.workers[0].output();
    assert!(
        !logs.contains("t0k3n"),
        "the URL's token is in the logs:\n{logs}"
    );
}
