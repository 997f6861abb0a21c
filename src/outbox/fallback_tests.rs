//! Unit tests of the publish fallback's decisions (the end-to-end cases are in
//! `tests/it/outbox_publish.rs`).

use std::time::Duration;

use super::fallback::{Outbox, Reason, SubmitError};
use super::log::Options;
use crate::model::keys::Keys;
use crate::ops::publish::{NewEvent, PublishError};
use crate::redis::error::RedisErrorKind as K;

#[test]
fn only_unavailability_and_write_refusals_queue() {
    assert_eq!(Reason::of(K::Connection), Some(Reason::Unreachable));
    assert_eq!(Reason::of(K::Timeout), Some(Reason::Timeout));
    assert_eq!(Reason::of(K::Oom), Some(Reason::Oom));
    assert_eq!(Reason::of(K::ReadOnly), Some(Reason::Readonly));
    assert_eq!(Reason::of(K::Misconf), Some(Reason::Misconf));
    for kind in [
        K::NoPerm,
        K::Auth,
        K::Tls,
        K::WrongType,
        K::Config,
        K::Other,
    ] {
        assert_eq!(Reason::of(kind), None, "{kind:?} is a configuration error");
    }
}

fn open(dir: &std::path::Path) -> Outbox {
    Outbox::open(
        dir,
        Options::default(),
        Duration::from_secs(1),
        Keys::new("t"),
    )
    .unwrap()
}

#[tokio::test]
async fn queued_events_get_an_id_and_keep_their_type_behind_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ob");
    let outbox = open(&dir);
    let event = |t: &str| NewEvent {
        event_type: t.into(),
        data: "{}".into(),
        ..Default::default()
    };
    let q = outbox.queue(event("a.b"), Reason::Timeout).await.unwrap();
    assert_eq!((q.id.len(), q.stream.as_str()), (36, "events:t:a.b"));
    assert_eq!(q.dir, dir);
    match outbox.queue(event("Bad Type"), Reason::Timeout).await {
        Err(SubmitError::Publish(PublishError::BadType(t))) => assert_eq!(t, "Bad Type"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        outbox.status().records,
        1,
        "an invalid event is never queued"
    );
    drop(outbox);
    let outbox = open(&dir);
    assert!(
        outbox.holds("a.b"),
        "a reopened outbox still queues a.b behind its events"
    );
    assert!(!outbox.holds("c.d"));
    let (report, reasons) = outbox.health(Duration::from_secs(60));
    assert_eq!(report["depth"], 1);
    assert_eq!(report["fsync"], "always");
    assert!(
        reasons
            .iter()
            .all(|(code, _)| *code != "outbox_not_draining")
    );
    let (_, reasons) = outbox.health(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(5));
    let (_, later) = outbox.health(Duration::ZERO);
    assert!(
        reasons
            .iter()
            .chain(&later)
            .any(|(code, _)| *code == "outbox_not_draining"),
        "{later:?}"
    );
}
