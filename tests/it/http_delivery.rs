//! The per-event http route on its hyper client: the request is what the route sent before
//! (body byte for byte, content type, accept, user agent), and credentials in the route's URL
//! go out as `Authorization: Basic` (percent-decoded), never in the URL or the logs.

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
