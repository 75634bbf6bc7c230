//! In-process rate limiting: a sliding window of attempts per key (login attempts per client
//! address and email; unknown license keys per client address). Good for one API process; a
//! fleet behind a load balancer shares nothing here.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows `max` attempts per key in any `window`.
pub struct RateLimiter {
    max: usize,
    window: Duration,
    attempts: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// A limiter of `max` attempts per `window`.
    #[must_use]
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt for `key`; `Err(seconds)` says how long to wait when over the limit.
    ///
    /// # Errors
    /// The seconds until the oldest attempt leaves the window.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.over_limit(key, true)
    }

    /// Whether `key` is over the limit now, without counting an attempt (for limits on
    /// failures only: look first, [`Self::record`] a failure after).
    ///
    /// # Errors
    /// The seconds until the oldest attempt leaves the window.
    pub fn peek(&self, key: &str) -> Result<(), u64> {
        self.over_limit(key, false)
    }

    /// Counts an attempt for `key` (over the limit or not).
    pub fn record(&self, key: &str) {
        let mut attempts = self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        attempts.entry(key.to_owned()).or_default().push_back(Instant::now());
    }

    fn over_limit(&self, key: &str, count: bool) -> Result<(), u64> {
        let now = Instant::now();
        let mut attempts = self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if attempts.len() > 10_000 {
            attempts.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < self.window));
        }
        let times = attempts.entry(key.to_owned()).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            times.pop_front();
        }
        if times.len() >= self.max {
            let oldest = times.front().copied().unwrap_or(now);
            let wait = self.window.saturating_sub(now.duration_since(oldest));
            return Err(wait.as_secs().max(1));
        }
        if count {
            times.push_back(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_per_key() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err_and(|wait| (1..=60).contains(&wait)));
        assert!(limiter.check("b").is_ok());
    }

    #[test]
    fn peek_does_not_count() {
        let limiter = RateLimiter::new(1, Duration::from_secs(60));
        assert!(limiter.peek("a").is_ok());
        assert!(limiter.peek("a").is_ok());
        limiter.record("a");
        assert!(limiter.peek("a").is_err());
    }
}
