//! What each request carries into the resolvers: the caller (or why there is none), the
//! client address, the request id and the per-request DataLoaders.

use async_graphql::Context;
use domain::{Actor, Domain};

use crate::graphql::error::{ApiError, ApiResult, ErrorCode};
use crate::graphql::loaders::Loaders;

/// The outcome of reading the `Authorization` header.
#[derive(Clone)]
pub enum Caller {
    /// No header.
    Anonymous,
    /// A header that did not authenticate; the message says why.
    Invalid(String),
    /// An authenticated staff user or API token, with its loaders.
    Actor(Box<Actor>, Loaders),
}

/// The client's address, for rate limits.
#[derive(Clone, Debug)]
pub struct ClientIp(pub String);

/// The request id, for logs and the audit log.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Typed access to request data from a resolver.
pub trait ContextExt {
    /// The domain handle.
    fn domain(&self) -> &Domain;
    /// The authenticated caller, or `UNAUTHENTICATED`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without valid credentials.
    fn actor(&self) -> ApiResult<&Actor>;
    /// The caller's DataLoaders.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without valid credentials.
    fn loaders(&self) -> ApiResult<&Loaders>;
    /// The request id.
    fn request_id(&self) -> Option<String>;
}

impl ContextExt for Context<'_> {
    fn domain(&self) -> &Domain {
        self.data_unchecked::<Domain>()
    }

    fn actor(&self) -> ApiResult<&Actor> {
        match self.data_opt::<Caller>() {
            Some(Caller::Actor(actor, _)) => Ok(actor),
            Some(Caller::Invalid(message)) => Err(ApiError::new(ErrorCode::Unauthenticated, message.clone())),
            Some(Caller::Anonymous) | None => Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "send Authorization: Bearer <token>",
            )),
        }
    }

    fn loaders(&self) -> ApiResult<&Loaders> {
        match self.data_opt::<Caller>() {
            Some(Caller::Actor(_, loaders)) => Ok(loaders),
            _ => self
                .actor()
                .and(Err(ApiError::new(ErrorCode::Unauthenticated, "not authenticated"))),
        }
    }

    fn request_id(&self) -> Option<String> {
        self.data_opt::<RequestId>().map(|r| r.0.clone())
    }
}
