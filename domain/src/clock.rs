//! Where "now" comes from: the system clock in production, a settable clock in tests.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, SubsecRound as _, Utc};

/// A source of the current time.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock that only moves when told to (unit tests).
    Manual(Arc<Mutex<DateTime<Utc>>>),
    /// The system clock plus a number of seconds read from a file at every call, so
    /// end-to-end tests can move a running server's time (`LICENSING_CLOCK_OFFSET_FILE`;
    /// never set it in production).
    OffsetFile(std::path::PathBuf),
}

impl Clock {
    /// A manual clock starting at `start`.
    #[must_use]
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self::Manual(Arc::new(Mutex::new(start)))
    }

    /// The current time, to the microsecond (what both databases store, so a time read back
    /// equals the time written).
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        let now = match self {
            Self::System => Utc::now(),
            Self::Manual(at) => *at.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            Self::OffsetFile(path) => {
                let offset = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .unwrap_or(0);
                Utc::now() + Duration::seconds(offset)
            }
        };
        now.trunc_subsecs(6)
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Self::Manual(at) = self {
            let mut at = at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *at += by;
        }
    }
}
