//! `apps.rate_limit`: a token bucket per app token subject (`sub`), so one app user's client
//! cannot use up what the others (or the operator's `api.rate_limit`) may send.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::http::state::Bucket;

/// Most subjects tracked at once; past it, the buckets that are full again (their subject
/// idle for a second or more, so forgetting them changes nothing) are dropped.
const MAX_SUBJECTS: usize = 100_000;

/// Token buckets of `rate` per second (burst `rate`) keyed by subject.
pub struct SubjectLimiter {
    rate: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl SubjectLimiter {
    /// Buckets of `rate` per second; 0 never limits.
    pub fn new(rate: u32) -> Self {
        SubjectLimiter {
            rate: f64::from(rate),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `subject`'s bucket; false when it is empty.
    pub fn try_take(&self, subject: &str) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        let (now, rate) = (Instant::now(), self.rate);
        if buckets.len() >= MAX_SUBJECTS && !buckets.contains_key(subject) {
            buckets.retain(|_, b| b.tokens(rate, now) < rate);
        }
        buckets
            .entry(subject.to_string())
            .or_insert_with(|| Bucket::full(rate))
            .take(rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_subject_has_its_own_bucket() {
        let l = SubjectLimiter::new(3);
        assert_eq!((0..5).filter(|_| l.try_take("a")).count(), 3);
        assert!(l.try_take("b"), "another subject is not limited by a's use");
        assert!(!l.try_take("a"));
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert!(l.try_take("a"), "refilled at 3/s");
    }

    #[test]
    fn zero_never_limits() {
        let l = SubjectLimiter::new(0);
        assert!((0..1000).all(|_| l.try_take("a")));
    }
}
