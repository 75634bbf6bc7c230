//! What each request carries into the resolvers: the caller (or why there is none), the
//! client address, the request id and the per-request DataLoaders.

use std::sync::Arc;

use async_graphql::Context;
use domain::{Actor, Domain};

use crate::graphql::error::{ApiError, ApiResult, ErrorCode};
use crate::graphql::loaders::Loaders;

/// An authenticated caller with the DataLoaders that read on its behalf (built on first use:
/// the device calls never need them).
#[derive(Clone)]
pub struct Scope {
    /// The caller.
    pub actor: Arc<Actor>,
    domain: Domain,
    loaders: Arc<std::sync::OnceLock<Loaders>>,
}

impl Scope {
    /// A scope for `actor`.
    #[must_use]
    pub fn new(domain: &Domain, actor: Actor) -> Self {
        Self {
            actor: Arc::new(actor),
            domain: domain.clone(),
            loaders: Arc::default(),
        }
    }

    /// The caller's DataLoaders.
    pub fn loaders(&self) -> &Loaders {
        self.loaders.get_or_init(|| Loaders::new(&self.domain, &self.actor))
    }
}

/// The outcome of reading the `Authorization` header.
#[derive(Clone)]
pub enum Caller {
    /// No header.
    Anonymous,
    /// A header that did not authenticate; the message says why.
    Invalid(String),
    /// The credentials could not be checked (the database failed): `INTERNAL` with the
    /// request id, never `UNAUTHENTICATED`.
    Unavailable,
    /// An authenticated staff user, API token or device.
    Authenticated(Scope),
}

impl Caller {
    /// The authenticated caller's scope, or why there is none.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without valid credentials; `INTERNAL` when they could not be checked.
    pub fn scope(&self) -> ApiResult<&Scope> {
        match self {
            Self::Authenticated(scope) => Ok(scope),
            Self::Invalid(message) => Err(ApiError::new(ErrorCode::Unauthenticated, message.clone())),
            Self::Unavailable => Err(ApiError::new(ErrorCode::Internal, UNAVAILABLE)),
            Self::Anonymous => Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "send Authorization: Bearer <token>",
            )),
        }
    }
}

/// What a caller whose credentials could not be checked hears.
pub const UNAVAILABLE: &str = "authentication is unavailable right now; try again (quote the requestId)";

/// The client's address, for rate limits.
#[derive(Clone, Debug)]
pub struct ClientIp(pub String);

/// The request id, for logs and the audit log.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The bearer token a websocket connection authenticated with, checked again before each
/// event it receives (a token revoked or expired mid-connection stops its subscriptions).
#[derive(Clone)]
pub struct SocketToken(pub String);

/// Typed access to request data from a resolver.
pub trait ContextExt {
    /// The domain handle.
    fn domain(&self) -> &Domain;
    /// The authenticated caller's scope, or `UNAUTHENTICATED`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without valid credentials.
    fn scope(&self) -> ApiResult<&Scope>;
    /// The authenticated caller, or `UNAUTHENTICATED`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without valid credentials.
    fn actor(&self) -> ApiResult<&Actor> {
        self.scope().map(|s| s.actor.as_ref())
    }
    /// The caller's DataLoaders.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without valid credentials.
    fn loaders(&self) -> ApiResult<&Loaders> {
        self.scope().map(Scope::loaders)
    }
    /// The request id.
    fn request_id(&self) -> Option<String>;
}

impl ContextExt for Context<'_> {
    fn domain(&self) -> &Domain {
        self.data_unchecked::<Domain>()
    }

    fn scope(&self) -> ApiResult<&Scope> {
        self.data_opt::<Caller>().unwrap_or(&Caller::Anonymous).scope()
    }

    fn request_id(&self) -> Option<String> {
        self.data_opt::<RequestId>().map(|r| r.0.clone())
    }
}

/// The scope an object was read under: its own (results of `activateDevice` and
/// `validateLicense`, answered to a caller with no token) or the request's.
///
/// # Errors
/// `UNAUTHENTICATED` when neither exists.
pub fn scope_of<'a>(ctx: &'a Context<'_>, own: &'a Option<Scope>) -> ApiResult<&'a Scope> {
    match own {
        Some(scope) => Ok(scope),
        None => ctx.scope(),
    }
}
