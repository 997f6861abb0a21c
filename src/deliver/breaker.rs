//! One circuit breaker per handler, built on `failsafe`'s state machine.
//!
//! failsafe lets every call through while half-open and has no state getter, so this wrapper
//! admits a single probe at a time and records the state through failsafe's `Instrument`
//! callbacks. Only retryable failures (5xx, timeouts, refused connections) count; a permanent
//! failure means the dependency answered, so it counts as a success for the breaker.
//!
//! Two rules open it, so that it trips on a sick endpoint and not on a few bad events:
//! - `failure_threshold` consecutive failures of events' *first* handler runs (a real outage:
//!   every new event fails). A failed retry neither adds to nor resets that count, so a few
//!   poison events retried together cannot open it; any success resets it.
//! - the failure rate over `window` (failsafe's moving average) reaches `failure_rate` with
//!   at least `min_calls` calls in the window (a sick endpoint failing many calls, retries
//!   included).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use failsafe::backoff::{Constant, constant};
use failsafe::failure_policy::{FailurePolicy, SuccessRateOverTimeWindow};
use failsafe::{Instrument, StateMachine};

use crate::config::BreakerConfig;
use crate::model::time::now_ms;

/// Breaker state, as exported by `event_worker_breaker_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed = 0,
    /// One probe may pass.
    HalfOpen = 1,
    /// Calls are refused.
    Open = 2,
}

/// What the breaker says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Call,
    /// Go ahead as the half-open probe.
    Probe,
    /// Refused; try again after this long.
    Rejected(Duration),
}

/// Called on every state change (metrics, logs, coordination notices).
pub type StateListener = Arc<dyn Fn(&str, BreakerState) + Send + Sync>;

struct Recorder {
    name: String,
    state: Arc<AtomicU8>,
    opened_at_ms: Arc<AtomicU64>,
    listener: StateListener,
}

impl Recorder {
    fn set(&self, s: BreakerState) {
        if self.state.swap(s as u8, Ordering::SeqCst) != s as u8 {
            (self.listener)(&self.name, s);
        }
    }
}

impl Instrument for Recorder {
    fn on_call_rejected(&self) {}
    fn on_open(&self) {
        self.opened_at_ms.store(now_ms(), Ordering::SeqCst);
        self.set(BreakerState::Open);
    }
    fn on_half_open(&self) {
        self.set(BreakerState::HalfOpen);
    }
    fn on_closed(&self) {
        self.set(BreakerState::Closed);
    }
}

/// The opening policy failsafe consults on each failure: the failure-rate rule, or the
/// first-run streak the [`Breaker`] counted (passed in through `trip`).
struct Policy {
    rate: SuccessRateOverTimeWindow<Constant>,
    trip: Arc<AtomicBool>,
    open_for: Duration,
}

impl FailurePolicy for Policy {
    fn record_success(&mut self) {
        self.rate.record_success();
    }
    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        let by_rate = self.rate.mark_dead_on_failure();
        if self.trip.swap(false, Ordering::SeqCst) {
            Some(self.open_for)
        } else {
            by_rate
        }
    }
    fn revived(&mut self) {
        self.rate.revived();
    }
}

/// A circuit breaker for one handler.
pub struct Breaker {
    name: String,
    machine: StateMachine<Policy, Recorder>,
    state: Arc<AtomicU8>,
    opened_at_ms: Arc<AtomicU64>,
    probe_in_flight: AtomicBool,
    open_for: Duration,
    threshold: u32,
    /// Consecutive failed first runs; the lock also keeps `trip` paired with its `on_error`.
    streak: Mutex<u32>,
    trip: Arc<AtomicBool>,
}

impl Breaker {
    /// A closed breaker named `name` (the handler's bounded name).
    pub fn new(name: &str, config: &BreakerConfig, listener: StateListener) -> Self {
        let state = Arc::new(AtomicU8::new(BreakerState::Closed as u8));
        let opened_at_ms = Arc::new(AtomicU64::new(0));
        let recorder = Recorder {
            name: name.to_string(),
            state: state.clone(),
            opened_at_ms: opened_at_ms.clone(),
            listener,
        };
        let trip = Arc::new(AtomicBool::new(false));
        let policy = Policy {
            rate: failsafe::failure_policy::success_rate_over_time_window(
                (1.0 - config.failure_rate).clamp(0.0, 1.0),
                config.min_calls,
                config.window,
                constant(config.open_for),
            ),
            trip: trip.clone(),
            open_for: config.open_for,
        };
        Breaker {
            name: name.to_string(),
            machine: StateMachine::new(policy, recorder),
            state,
            opened_at_ms,
            probe_in_flight: AtomicBool::new(false),
            open_for: config.open_for,
            threshold: config.failure_threshold,
            streak: Mutex::new(0),
            trip,
        }
    }

    /// The handler name this breaker guards.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current state (moves Open to HalfOpen once `open_for` has passed).
    pub fn state(&self) -> BreakerState {
        let _ = self.machine.is_call_permitted();
        self.load()
    }

    fn load(&self) -> BreakerState {
        match self.state.load(Ordering::SeqCst) {
            0 => BreakerState::Closed,
            1 => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        }
    }

    /// Whether the streams this handler serves should be read now: closed, or half-open
    /// with no probe running.
    pub fn accepts_reads(&self) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => !self.probe_in_flight.load(Ordering::SeqCst),
            BreakerState::Open => false,
        }
    }

    fn remaining_open(&self) -> Duration {
        let opened = self.opened_at_ms.load(Ordering::SeqCst);
        let elapsed = Duration::from_millis(now_ms().saturating_sub(opened));
        self.open_for
            .saturating_sub(elapsed)
            .max(Duration::from_millis(50))
    }

    /// Asks to make one call.
    pub fn admit(&self) -> Admission {
        if !self.machine.is_call_permitted() {
            return Admission::Rejected(self.remaining_open());
        }
        match self.load() {
            BreakerState::HalfOpen => {
                if self
                    .probe_in_flight
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    Admission::Probe
                } else {
                    Admission::Rejected(self.open_for.max(Duration::from_millis(50)))
                }
            }
            _ => Admission::Call,
        }
    }

    /// Records the result of an admitted call: `failed` for retryable failures only;
    /// `first_run` when it was the event's first handler run (not a retry).
    pub fn record(&self, admission: Admission, failed: bool, first_run: bool) {
        let mut streak = self.streak.lock().unwrap_or_else(|e| e.into_inner());
        if failed {
            if first_run {
                *streak += 1;
                if *streak >= self.threshold {
                    *streak = 0;
                    self.trip.store(true, Ordering::SeqCst);
                }
            }
            self.machine.on_error();
            // Already open: failsafe did not consult the policy; the streak starts over.
            self.trip.store(false, Ordering::SeqCst);
        } else {
            *streak = 0;
            self.machine.on_success();
        }
        drop(streak);
        if admission == Admission::Probe {
            self.probe_in_flight.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn breaker(threshold: u32, open_for_ms: u64) -> (Breaker, Arc<Mutex<Vec<BreakerState>>>) {
        breaker_with(threshold, open_for_ms, 20)
    }

    fn breaker_with(
        threshold: u32,
        open_for_ms: u64,
        min_calls: u32,
    ) -> (Breaker, Arc<Mutex<Vec<BreakerState>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let cfg = BreakerConfig {
            failure_threshold: threshold,
            open_for: Duration::from_millis(open_for_ms),
            failure_rate: 0.5,
            window: Duration::from_secs(1),
            min_calls,
        };
        let b = Breaker::new("h", &cfg, Arc::new(move |_, st| s.lock().unwrap().push(st)));
        (b, seen)
    }

    #[test]
    fn opens_after_threshold_and_rejects() {
        let (b, seen) = breaker(3, 60_000);
        for _ in 0..3 {
            assert_eq!(b.admit(), Admission::Call);
            b.record(Admission::Call, true, true);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.accepts_reads());
        assert!(matches!(b.admit(), Admission::Rejected(d) if d > Duration::from_secs(50)));
        assert_eq!(*seen.lock().unwrap(), vec![BreakerState::Open]);
    }

    #[test]
    fn successes_reset_the_count() {
        let (b, _) = breaker(2, 60_000);
        b.record(Admission::Call, true, true);
        b.record(Admission::Call, false, true);
        b.record(Admission::Call, true, true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn failed_retries_neither_add_to_nor_reset_the_streak() {
        let (b, _) = breaker(3, 60_000);
        b.record(Admission::Call, true, true);
        b.record(Admission::Call, true, true);
        for _ in 0..10 {
            b.record(Admission::Call, true, false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record(Admission::Call, true, true);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_failure_rate_over_the_window_opens_it() {
        // Retries only (no first-run streak): 1 success then failures past the window.
        let (b, seen) = breaker_with(1_000, 60_000, 3);
        b.record(Admission::Call, false, true);
        std::thread::sleep(Duration::from_millis(1_050));
        for _ in 0..3 {
            b.record(Admission::Call, true, false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(*seen.lock().unwrap(), vec![BreakerState::Open]);
    }

    #[test]
    fn a_failure_rate_below_min_calls_does_not_open_it() {
        let (b, _) = breaker_with(1_000, 60_000, 50);
        b.record(Admission::Call, false, true);
        std::thread::sleep(Duration::from_millis(1_050));
        for _ in 0..10 {
            b.record(Admission::Call, true, false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_admits_one_probe_then_closes_or_reopens() {
        let (b, seen) = breaker(1, 30);
        b.record(b.admit(), true, true);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admission::Probe);
        assert!(matches!(b.admit(), Admission::Rejected(_)));
        b.record(Admission::Probe, true, false);
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admission::Probe);
        b.record(Admission::Probe, false, false);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(), Admission::Call);
        let states = seen.lock().unwrap().clone();
        assert_eq!(
            states,
            vec![
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Closed
            ]
        );
    }
}
