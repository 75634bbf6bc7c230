//! Keeping the workers running: when the queue cannot be reached or a worker fails, [`run`]
//! waits and starts them again with exponential backoff (1 s doubling to 60 s, back to 1 s
//! after a minute of healthy running), logging each failure, instead of restarting in a tight
//! loop or exiting. [`WorkerHealth`] says meanwhile whether the workers run, for `/readyz`.
//!
//! [`run`]: crate::run

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The first pause after a failure.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause.
const LONGEST_PAUSE: Duration = Duration::from_secs(60);
/// A run at least this long counts as healthy: the next failure waits [`FIRST_PAUSE`] again.
pub(crate) const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Exponential backoff: 1 s, 2 s, 4 s ... up to 60 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST_PAUSE }
    }
}

impl Backoff {
    /// The pause before the next attempt (and doubles the one after, up to 60 s).
    pub fn pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(LONGEST_PAUSE);
        pause
    }

    /// Starts again from 1 s (after a healthy run).
    pub fn reset(&mut self) {
        self.next = FIRST_PAUSE;
    }
}

/// Whether the job workers of this process are running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Not started yet.
    Starting,
    /// Connected to their queue and running.
    Running,
    /// Stopped by a failure; started again after a pause. The text says what failed.
    Down(String),
}

/// The workers' [`Health`], shared with whoever reports it (the API's `/readyz`).
#[derive(Clone)]
pub struct WorkerHealth(Arc<Mutex<Health>>);

impl Default for WorkerHealth {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Health::Starting)))
    }
}

impl WorkerHealth {
    /// The current health.
    #[must_use]
    pub fn get(&self) -> Health {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn set(&self, health: Health) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = health;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_and_resets() {
        let mut backoff = Backoff::default();
        let pauses: Vec<u64> = (0..9).map(|_| backoff.pause().as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        backoff.reset();
        assert_eq!(backoff.pause(), Duration::from_secs(1));
    }

    #[test]
    fn health_is_shared_by_clones() {
        let health = WorkerHealth::default();
        assert_eq!(health.get(), Health::Starting);
        let clone = health.clone();
        clone.set(Health::Down("the job queue is unreachable".into()));
        assert_eq!(health.get(), Health::Down("the job queue is unreachable".into()));
    }
}
