//! The public error codes (CONTRACT.md) and the mapping from domain errors to them. The
//! message is safe to show a person; an internal cause is logged once, inside the request's
//! span (which carries the request id), and never returned.

use async_graphql::ErrorExtensions as _;

/// Every code a client can see in `errors[].extensions.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No or bad credentials.
    Unauthenticated,
    /// The role does not allow it.
    Forbidden,
    /// No such thing for this vendor.
    NotFound,
    /// Bad input; the message says which.
    InvalidInput,
    /// Every seat of the license is taken.
    ActivationLimitReached,
    /// The license expired.
    LicenseExpired,
    /// The license is suspended.
    LicenseSuspended,
    /// The license is revoked.
    LicenseRevoked,
    /// The device's fingerprint does not match.
    FingerprintMismatch,
    /// A meter's limit would be exceeded.
    UsageLimitExceeded,
    /// An idempotency key was reused with other input.
    IdempotencyConflict,
    /// A file failed to parse or verify.
    InvalidFile,
    /// Too many requests.
    RateLimited,
    /// Over the depth, complexity or directive limits.
    QueryTooComplex,
    /// Anything else; comes with a request id.
    Internal,
}

impl ErrorCode {
    /// A request-level error (no path) with this code, for refusals made before or instead of
    /// running the schema.
    #[must_use]
    pub fn server_error(self, message: impl Into<String>) -> async_graphql::ServerError {
        let mut err = async_graphql::ServerError::new(message, None);
        err.extensions
            .get_or_insert_with(Default::default)
            .set("code", self.as_str());
        err
    }

    /// The code as written on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::InvalidInput => "INVALID_INPUT",
            Self::ActivationLimitReached => "ACTIVATION_LIMIT_REACHED",
            Self::LicenseExpired => "LICENSE_EXPIRED",
            Self::LicenseSuspended => "LICENSE_SUSPENDED",
            Self::LicenseRevoked => "LICENSE_REVOKED",
            Self::FingerprintMismatch => "FINGERPRINT_MISMATCH",
            Self::UsageLimitExceeded => "USAGE_LIMIT_EXCEEDED",
            Self::IdempotencyConflict => "IDEMPOTENCY_CONFLICT",
            Self::InvalidFile => "INVALID_FILE",
            Self::RateLimited => "RATE_LIMITED",
            Self::QueryTooComplex => "QUERY_TOO_COMPLEX",
            Self::Internal => "INTERNAL",
        }
    }

    /// Every code, for the allow-list check on outgoing errors.
    pub const ALL: [Self; 15] = [
        Self::Unauthenticated,
        Self::Forbidden,
        Self::NotFound,
        Self::InvalidInput,
        Self::ActivationLimitReached,
        Self::LicenseExpired,
        Self::LicenseSuspended,
        Self::LicenseRevoked,
        Self::FingerprintMismatch,
        Self::UsageLimitExceeded,
        Self::IdempotencyConflict,
        Self::InvalidFile,
        Self::RateLimited,
        Self::QueryTooComplex,
        Self::Internal,
    ];
}

/// An error on its way to the client: a code and a message a person can read.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The public code.
    pub code: ErrorCode,
    /// The public message.
    pub message: String,
    /// Seconds to wait, for `RATE_LIMITED`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a code and message.
    #[must_use]
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `RATE_LIMITED`, retry after `seconds`.
    #[must_use]
    pub fn rate_limited(what: &str, seconds: u64) -> Self {
        Self {
            code: ErrorCode::RateLimited,
            message: format!("too many {what}; retry in {seconds} s"),
            retry_after: Some(seconds),
        }
    }
}

impl From<domain::Error> for ApiError {
    fn from(err: domain::Error) -> Self {
        use domain::Error as E;
        let code = match &err {
            E::Unauthenticated(_) => ErrorCode::Unauthenticated,
            E::Forbidden(_) => ErrorCode::Forbidden,
            E::NotFound(_) => ErrorCode::NotFound,
            E::InvalidInput(_) => ErrorCode::InvalidInput,
            E::IdempotencyConflict => ErrorCode::IdempotencyConflict,
            E::LicenseExpired(_) => ErrorCode::LicenseExpired,
            E::LicenseSuspended(_) => ErrorCode::LicenseSuspended,
            E::LicenseRevoked(_) => ErrorCode::LicenseRevoked,
            E::ActivationLimitReached(_) => ErrorCode::ActivationLimitReached,
            E::DeviceDead(_) => ErrorCode::Forbidden,
            E::UsageLimitExceeded(_) => ErrorCode::UsageLimitExceeded,
            E::InvalidFile(_) => ErrorCode::InvalidFile,
            E::RateLimited(seconds) => {
                return Self {
                    code: ErrorCode::RateLimited,
                    message: err.to_string(),
                    retry_after: Some(*seconds),
                };
            }
            E::Db(_) | E::Internal(_) => {
                tracing::error!(error = %err, "request failed");
                return Self::new(ErrorCode::Internal, "internal error");
            }
        };
        Self::new(code, err.to_string())
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(err: ApiError) -> Self {
        async_graphql::Error::new(err.message).extend_with(|_, ext| {
            ext.set("code", err.code.as_str());
            if let Some(seconds) = err.retry_after {
                ext.set("retryAfter", seconds);
            }
        })
    }
}

/// Result of a resolver.
pub type ApiResult<T> = Result<T, ApiError>;
