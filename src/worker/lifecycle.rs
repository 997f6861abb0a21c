//! One lifecycle for every task of a worker: a root cancellation token with one child per
//! [`Stage`], one task tracker per stage, and one stop sequence ([`Lifecycle::stop`]).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

/// The stages of a worker's tasks, in stop order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The reader and the reclaimer (they start event tasks).
    Read,
    /// Event tasks: an event from its read until its outcome is settled. They are not
    /// cancelled, only awaited (bounded by `shutdown_timeout`); they see the `Read` token.
    Events,
    /// Background roles: forwarder, heartbeat, discovery, retention, pings.
    Roles,
    /// The acker (batched XACKs of successes).
    Acker,
    /// The history writer and the coordination notices publisher.
    Writers,
    /// The HTTP listener.
    Http,
}

const STAGES: [Stage; 6] = [
    Stage::Read,
    Stage::Events,
    Stage::Roles,
    Stage::Acker,
    Stage::Writers,
    Stage::Http,
];

/// How long the roles, the acker and the writers get to finish after their stop.
const STAGE_GRACE: Duration = Duration::from_secs(5);

/// The tasks of one worker run.
///
/// Every task is spawned on the tracker of its [`Stage`] and sees that stage's token (a
/// child of the root). [`Lifecycle::stop`] is the only stop sequence, in this order:
///
/// 1. stop reading (cancel [`Stage::Read`], await the reader and reclaimer);
/// 2. finish in-flight events, within `shutdown_timeout` (else warn: they stay pending and
///    will be reclaimed);
/// 3. stop the background roles (forwarder, heartbeat, discovery, retention, pings; ≤ 5 s);
/// 4. flush the acker (≤ 5 s), so the successes of step 2 get their XACK;
/// 5. send the STOPPED notice;
/// 6. stop the history writer and the notices publisher, which drain their queues (≤ 5 s);
/// 7. delete the heartbeat key;
/// 8. quit Redis;
/// 9. stop HTTP (open requests get `SHUTDOWN_GRACE`).
///
/// Why one tracker per stage under one owner, not a single tracker: the stop order waits for
/// one stage before stopping the next (events before the acker, the acker before the
/// STOPPED notice), and a single `TaskTracker` can only wait for all of its tasks at once.
///
/// (The acker used to be left running on a normal stop; it now stops after the events, so
/// their successes are still acknowledged, and before the STOPPED notice.)
///
/// Steps 5 and 7 need a worker that started consuming, step 8 a connection; the others
/// find empty stages when start-up stopped early. Dropping a `Lifecycle` (the run future
/// was dropped) cancels the root, so no task outlives it.
pub struct Lifecycle {
    root: CancellationToken,
    tokens: [CancellationToken; 6],
    trackers: [TaskTracker; 6],
    _guard: DropGuard,
}

/// What the stop sequence needs of a worker that got that far.
pub struct Reached<'a> {
    /// The connection, once connected.
    pub store: Option<&'a crate::redis::store::Store>,
    /// Set once the worker consumes.
    pub consuming: Option<Consuming<'a>>,
}

/// The steps of a stop that only a consuming worker takes.
pub struct Consuming<'a> {
    /// `shutdown_timeout`.
    pub shutdown_timeout: Duration,
    /// Entries still in flight (reported when the timeout is reached).
    pub in_flight: &'a crate::consume::in_flight::InFlight,
    /// Sends the STOPPED notice.
    pub stopped_notice: Box<dyn FnOnce() + Send + 'a>,
    /// The heartbeat key deleted after a clean stop.
    pub heartbeat_key: String,
    /// Tells /readyz the worker no longer consumes.
    pub health: &'a crate::worker::health::Health,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A lifecycle with no task yet.
    pub fn new() -> Self {
        let root = CancellationToken::new();
        Lifecycle {
            tokens: std::array::from_fn(|_| root.child_token()),
            trackers: std::array::from_fn(|_| TaskTracker::new()),
            _guard: root.clone().drop_guard(),
            root,
        }
    }

    fn index(stage: Stage) -> usize {
        STAGES.iter().position(|s| *s == stage).unwrap_or(0)
    }

    /// The token of `stage`'s tasks.
    pub fn token(&self, stage: Stage) -> CancellationToken {
        self.tokens[Self::index(stage)].clone()
    }

    /// The tracker of `stage` (event tasks are spawned on [`Stage::Events`]'s by the reader).
    pub fn tracker(&self, stage: Stage) -> TaskTracker {
        self.trackers[Self::index(stage)].clone()
    }

    /// Runs `task` as part of `stage`.
    pub fn spawn<F>(&self, stage: Stage, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.trackers[Self::index(stage)].spawn(task);
    }

    /// Cancels `stage` and waits for its tasks, at most `grace`; false when they did not
    /// all finish in time.
    async fn end(&self, stage: Stage, grace: Option<Duration>) -> bool {
        let i = Self::index(stage);
        self.tokens[i].cancel();
        let tracker = &self.trackers[i];
        tracker.close();
        match grace {
            Some(grace) => tokio::time::timeout(grace, tracker.wait()).await.is_ok(),
            None => {
                tracker.wait().await;
                true
            }
        }
    }

    /// Stops every task in the documented order (see [`Lifecycle`]).
    pub async fn stop(self, reached: Reached<'_>) {
        let Reached { store, consuming } = reached;
        let consumed = consuming.is_some();
        if let Some(c) = &consuming {
            tracing::info!("stopping: no new reads; finishing in-flight events");
            c.health
                .consuming
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        self.end(Stage::Read, None).await;
        let events_grace = consuming.as_ref().map(|c| c.shutdown_timeout);
        let i = Self::index(Stage::Events);
        self.trackers[i].close();
        let finished = match events_grace {
            Some(t) => tokio::time::timeout(t, self.trackers[i].wait())
                .await
                .is_ok(),
            None => true,
        };
        if let (false, Some(c)) = (finished, &consuming) {
            let left = c.in_flight.len();
            tracing::warn!(
                left,
                "shutdown_timeout reached; unfinished events stay pending and will be reclaimed"
            );
        }
        self.end(Stage::Roles, Some(STAGE_GRACE)).await;
        self.end(Stage::Acker, Some(STAGE_GRACE)).await;
        let heartbeat_key = consuming.map(|c| {
            (c.stopped_notice)();
            c.heartbeat_key
        });
        self.end(Stage::Writers, Some(STAGE_GRACE)).await;
        if let (Some(key), Some(store)) = (heartbeat_key, store)
            && let Err(e) = store.delete(&key).await
        {
            tracing::warn!(error = %e, "could not delete the heartbeat key; it expires by itself");
        }
        if let Some(store) = store {
            store.quit().await;
        }
        self.end(Stage::Http, None).await;
        self.root.cancel();
        if consumed {
            tracing::info!("stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::{Consuming, Lifecycle, Reached, STAGES, Stage};
    use crate::consume::in_flight::InFlight;
    use crate::worker::health::Health;

    #[tokio::test]
    async fn stages_stop_in_the_documented_order_and_events_are_awaited() {
        let life = Lifecycle::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        for stage in STAGES.into_iter().filter(|s| *s != Stage::Events) {
            let (token, log) = (life.token(stage), log.clone());
            life.spawn(stage, async move {
                token.cancelled().await;
                log.lock().unwrap().push(format!("{stage:?}"));
            });
        }
        // An event in flight: it sees the read token and finishes a moment after it.
        let (read, events_log) = (life.token(Stage::Read), log.clone());
        life.tracker(Stage::Events).spawn(async move {
            read.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            events_log.lock().unwrap().push("Events".to_string());
        });
        let (in_flight, health) = (InFlight::default(), Health::default());
        let notice_log = log.clone();
        life.stop(Reached {
            store: None,
            consuming: Some(Consuming {
                shutdown_timeout: Duration::from_secs(5),
                in_flight: &in_flight,
                stopped_notice: Box::new(move || notice_log.lock().unwrap().push("STOPPED".into())),
                heartbeat_key: "hb".into(),
                health: &health,
            }),
        })
        .await;
        let expected = [
            "Read", "Events", "Roles", "Acker", "STOPPED", "Writers", "Http",
        ];
        assert_eq!(*log.lock().unwrap(), expected);
    }

    #[tokio::test]
    async fn dropping_a_lifecycle_cancels_every_stage() {
        let life = Lifecycle::new();
        let tokens: Vec<_> = STAGES.iter().map(|s| life.token(*s)).collect();
        drop(life);
        assert!(tokens.iter().all(|t| t.is_cancelled()));
    }

    struct Count(Arc<Mutex<u32>>);

    impl crate::worker::role::Role for Count {
        fn schedule(&self) -> tokio::time::Interval {
            tokio::time::interval(Duration::from_secs(3600))
        }
        async fn tick(&mut self) {
            *self.0.lock().unwrap() += 1;
        }
    }

    #[tokio::test]
    async fn a_role_ticks_at_once_then_stops_during_its_wait() {
        let n = Arc::new(Mutex::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(crate::worker::role::run(Count(n.clone()), stop.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("stopped during its wait")
            .unwrap();
        assert_eq!(*n.lock().unwrap(), 1);
    }
}
