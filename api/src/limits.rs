//! In-process rate limiting: a budget of attempts per key (login attempts per client address,
//! and per address and email; unknown license keys per client address; calls per license key
//! and per device). Good for one API process; a fleet behind a load balancer shares nothing
//! here.
//!
//! Each key's state is one instant (the generic cell rate algorithm, as `governor` uses): a
//! budget of `max` per `window` allows a burst of `max`, then one more attempt every
//! `window / max`. The states live in a fixed-capacity `moka` cache keyed by a 64-bit keyed
//! hash of the key, so a long key costs nothing to keep and a flood of distinct keys evicts
//! old states instead of growing memory (an evicted key starts afresh: eviction only ever makes
//! a limiter more lenient, never refuses anyone).

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Keys one limiter remembers at most (about 100 bytes each).
pub const DEFAULT_CAPACITY: u64 = 100_000;

/// Allows `max` attempts per key in any `window`.
pub struct RateLimiter {
    /// Time one attempt uses of the budget: `window / max`.
    interval: Duration,
    window: Duration,
    hasher: RandomState,
    /// Per key hash: the instant at which its budget is whole again.
    states: moka::sync::Cache<u64, Arc<Mutex<Instant>>>,
}

impl RateLimiter {
    /// A limiter of `max` attempts per `window`, remembering up to [`DEFAULT_CAPACITY`] keys.
    #[must_use]
    pub fn new(max: u32, window: Duration) -> Self {
        Self::with_capacity(max, window, DEFAULT_CAPACITY)
    }

    /// A limiter of `max` attempts per `window`, remembering up to `capacity` keys.
    #[must_use]
    pub fn with_capacity(max: u32, window: Duration, capacity: u64) -> Self {
        Self {
            interval: window / max.max(1),
            window,
            hasher: RandomState::new(),
            // A key idle for a whole window has its whole budget again: nothing to remember.
            states: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(window)
                .build(),
        }
    }

    /// Counts an attempt for `key`; `Err(seconds)` says how long to wait when over the limit
    /// (a refused attempt is not counted).
    ///
    /// # Errors
    /// The whole seconds (at least 1) until one more attempt fits in the budget.
    pub fn check<K: Hash + ?Sized>(&self, key: &K) -> Result<(), u64> {
        let now = Instant::now();
        let state = self
            .states
            .get_with(self.hasher.hash_one(key), || Arc::new(Mutex::new(now)));
        let mut full_at = state.lock().unwrap_or_else(PoisonError::into_inner);
        let next = (*full_at).max(now) + self.interval;
        let ahead = next.duration_since(now);
        if ahead > self.window {
            let wait = ahead - self.window;
            return Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
        }
        *full_at = next;
        Ok(())
    }

    /// How many keys are remembered now (for tests of the bound).
    #[must_use]
    pub fn remembered(&self) -> u64 {
        self.states.run_pending_tasks();
        self.states.entry_count()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_per_key() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err_and(|wait| (1..=30).contains(&wait)));
        assert!(
            limiter.check("a").is_err(),
            "a refused attempt does not count, nor free"
        );
        assert!(limiter.check("b").is_ok());
        assert!(limiter.check(&("a", "b")).is_ok(), "any hashable key");
    }

    #[test]
    fn the_budget_comes_back_over_the_window() {
        let limiter = RateLimiter::new(4, Duration::from_millis(400));
        for _ in 0..4 {
            assert!(limiter.check("a").is_ok());
        }
        assert!(limiter.check("a").is_err());
        std::thread::sleep(Duration::from_millis(120));
        assert!(limiter.check("a").is_ok(), "one attempt per window / max comes back");
        assert!(limiter.check("a").is_err());
    }

    #[test]
    fn retry_after_is_when_one_more_fits() {
        let limiter = RateLimiter::new(5, Duration::from_secs(60));
        for _ in 0..5 {
            assert!(limiter.check("k").is_ok());
        }
        assert_eq!(limiter.check("k"), Err(12), "60 s / 5 = one attempt back every 12 s");
    }

    #[test]
    fn memory_is_bounded_whatever_the_keys() {
        let limiter = RateLimiter::with_capacity(5, Duration::from_secs(60), 1_000);
        let long = "x".repeat(64 * 1024);
        for i in 0..20_000 {
            assert!(limiter.check(&(i, long.as_str())).is_ok());
        }
        assert!(limiter.remembered() <= 1_000, "{}", limiter.remembered());
    }

    #[test]
    fn concurrent_attempts_are_counted_once_each() {
        let limiter = Arc::new(RateLimiter::new(100, Duration::from_secs(60)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || (0..50).filter(|_| limiter.check("shared").is_ok()).count())
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(allowed, 100);
    }
}
