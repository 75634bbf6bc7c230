//! The domain's error type. The api maps each variant to one public error code.

use sea_orm::DbErr;

/// What went wrong in a use case.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credentials, or credentials that are invalid, expired or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing for this vendor (foreign ids land here too).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The input is malformed or breaks a rule; the message says which.
    #[error("{0}")]
    InvalidInput(String),
    /// An idempotency key was reused with different input.
    #[error("idempotency key was already used with different input")]
    IdempotencyConflict,
    /// The license is expired.
    #[error("{0}")]
    LicenseExpired(String),
    /// The license is suspended.
    #[error("{0}")]
    LicenseSuspended(String),
    /// The license is revoked.
    #[error("{0}")]
    LicenseRevoked(String),
    /// Every seat of the license is taken.
    #[error("{0}")]
    ActivationLimitReached(String),
    /// Recording the quantity would take the period past the meter's limit plus overage.
    #[error("{0}")]
    UsageLimitExceeded(String),
    /// The device missed its heartbeat deadline and lost its activation.
    #[error("{0}")]
    DeviceDead(String),
    /// A file that does not parse or verify, or names something unknown.
    #[error("{0}")]
    InvalidFile(String),
    /// Too many attempts; try again after the given number of seconds.
    #[error("too many attempts; retry in {0} s")]
    RateLimited(u64),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// Something that should not happen (corrupt stored data, crypto failure).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of a use case.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether a database error is a unique-constraint violation (a lost race on an insert).
    #[must_use]
    pub fn is_unique_violation(err: &DbErr) -> bool {
        matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
    }
}
