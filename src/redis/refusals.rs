//! Writes Redis refuses ([`Refusals`]): every `StoreError` of a worker's `Store` whose kind
//! is a refusal of the server's state (OOM, READONLY, MISCONF) is recorded here, in the one place errors
//! are made (`Store::error`), whichever role wrote (settle, heartbeat, forwarder, history).
//!
//! The record is the time and cause of the last refusal plus one counter per cause
//! (`event_worker_redis_refused_writes_total{env,cause}`). `/api/events/health` reports
//! `degraded` with reason `redis_refuses_writes` while a refusal is at most
//! [`RECENT`] old; `/readyz` stays ready (the stall is Redis's, not this instance's); the
//! reclaimer claims nothing while this worker's own writes are refused (see `recover::reclaim`).
//!
//! `NOPERM` is not a refusal here: it is an ACL setting named in the error itself, and it also
//! answers reads the least-privilege user may lack (`CONFIG GET` in every health request),
//! which must neither degrade health nor stop claims.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec};

use crate::model::time::now_ms;
use crate::redis::error::RedisErrorKind;

/// How long after the last refused write health stays `degraded`: longer than the heartbeat
/// period (a third of the default 10 s `heartbeat_ttl`; every beat writes), so a lasting
/// refusal does not flicker, and short enough that health is `ok` soon after it ends.
pub const RECENT: Duration = Duration::from_secs(5);

/// Why Redis refused a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// `OOM`: used memory reached `maxmemory` under `noeviction`.
    Oom,
    /// `READONLY`: the server is a read-only replica.
    Readonly,
    /// `MISCONF`: the last RDB save failed and `stop-writes-on-bgsave-error` is on.
    Misconf,
}

/// Every cause, in the order of their counters.
pub const CAUSES: [Cause; 3] = [Cause::Oom, Cause::Readonly, Cause::Misconf];

impl Cause {
    /// The cause of an error of `kind`, if it is a refusal.
    pub fn of(kind: RedisErrorKind) -> Option<Cause> {
        Some(match kind {
            RedisErrorKind::Oom => Cause::Oom,
            RedisErrorKind::ReadOnly => Cause::Readonly,
            RedisErrorKind::Misconf => Cause::Misconf,
            _ => return None,
        })
    }

    /// The `cause` label.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Oom => "oom",
            Cause::Readonly => "readonly",
            Cause::Misconf => "misconf",
        }
    }

    /// The health message: what Redis refuses and the next step.
    pub fn message(self, age: Duration) -> String {
        let (what, next) = match self {
            Cause::Oom => (
                "OOM (used memory reached maxmemory, maxmemory-policy noeviction)",
                "raise maxmemory (CONFIG SET maxmemory) or free memory (trim the DLQ and the \
                 streams); processing waits and resumes by itself",
            ),
            Cause::Readonly => (
                "READONLY (the server is a read-only replica)",
                "point redis_url at the primary",
            ),
            Cause::Misconf => (
                "MISCONF (its last RDB save failed and stop-writes-on-bgsave-error is on)",
                "fix the disk or permissions of Redis's dir (see its log)",
            ),
        };
        format!(
            "Redis refuses writes: {what}, last {} ms ago: {next}",
            age.as_millis()
        )
    }
}

/// The last refused write and the counters by cause.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Epoch ms of the last refusal (0: none yet).
    last_ms: AtomicU64,
    /// Index in [`CAUSES`] of the last refusal's cause.
    last_cause: AtomicU8,
    /// `redis_refused_writes_total{env,cause}` of each cause, once bound.
    counters: OnceLock<Vec<IntCounter>>,
}

impl Refusals {
    /// Counts into `metric` with the label `env` from now on; every cause's series starts at 0.
    pub fn bind(&self, metric: &IntCounterVec, env: &str) {
        let counters = CAUSES
            .iter()
            .map(|c| {
                let counter = metric.with_label_values(&[env, c.label()]);
                counter.inc_by(0);
                counter
            })
            .collect();
        let _ = self.counters.set(counters);
    }

    /// Records an error of `kind` if it is a refusal.
    pub fn record(&self, kind: RedisErrorKind) {
        let Some(cause) = Cause::of(kind) else { return };
        let index = CAUSES.iter().position(|c| *c == cause).unwrap_or(0);
        self.last_cause.store(index as u8, Ordering::Relaxed);
        self.last_ms.store(now_ms(), Ordering::Relaxed);
        if let Some(counter) = self.counters.get().and_then(|c| c.get(index)) {
            counter.inc();
        }
    }

    /// The last refusal's cause and age, if it is at most `within` old.
    pub fn recent(&self, within: Duration) -> Option<(Cause, Duration)> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == 0 {
            return None;
        }
        let age = Duration::from_millis(now_ms().saturating_sub(last));
        let cause = CAUSES[usize::from(self.last_cause.load(Ordering::Relaxed)) % CAUSES.len()];
        (age <= within).then_some((cause, age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_recorded_counted_and_age_out() {
        let r = Refusals::default();
        let metric =
            IntCounterVec::new(prometheus::Opts::new("t", "t"), &["env", "cause"]).unwrap();
        r.bind(&metric, "prod");
        assert_eq!(metric.with_label_values(&["prod", "readonly"]).get(), 0);
        r.record(RedisErrorKind::Timeout);
        r.record(RedisErrorKind::NoPerm);
        assert_eq!(r.recent(RECENT), None);
        r.record(RedisErrorKind::Oom);
        r.record(RedisErrorKind::Oom);
        assert_eq!(metric.with_label_values(&["prod", "oom"]).get(), 2);
        let (cause, age) = r.recent(RECENT).unwrap();
        assert_eq!(cause, Cause::Oom);
        assert!(age < Duration::from_secs(1));
        r.last_ms.store(now_ms() - 6_000, Ordering::Relaxed);
        assert_eq!(r.recent(RECENT), None);
        assert!(
            Cause::Oom
                .message(Duration::from_millis(1200))
                .starts_with("Redis refuses writes: OOM (used memory reached maxmemory, maxmemory-policy noeviction), last 1200 ms ago: raise maxmemory")
        );
    }
}
