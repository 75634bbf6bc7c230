//! The GraphQL schema: one module per resource (its types, queries and mutations), merged into
//! the root objects here, with the limits from SECURITY.md and the error masking applied to
//! every response.

pub mod access;
pub mod audit;
pub mod catalog;
pub mod connection;
pub mod context;
pub mod customers;
pub mod enums;
pub mod error;
pub mod licenses;
pub mod loaders;
pub mod vendor;

use async_graphql::{EmptySubscription, MergedObject, Schema, ServerError};
use domain::Domain;

use crate::graphql::error::ErrorCode;
use crate::limits::RateLimiter;

/// Deepest selection allowed.
pub const MAX_DEPTH: usize = 10;
/// Most expensive query allowed (a connection costs `first` times its selection).
pub const MAX_COMPLEXITY: usize = 1000;
/// Most directives allowed in one document.
pub const MAX_DIRECTIVES: usize = 10;

/// Every query field.
#[derive(MergedObject, Default)]
pub struct Query(
    vendor::VendorQuery,
    access::AccessQuery,
    catalog::CatalogQuery,
    customers::CustomerQuery,
    licenses::LicenseQuery,
    audit::AuditQuery,
);

/// Every mutation field.
#[derive(MergedObject, Default)]
pub struct Mutation(
    access::AccessMutation,
    vendor::VendorMutation,
    catalog::CatalogMutation,
    customers::CustomerMutation,
    licenses::LicenseMutation,
);

/// The schema type.
pub type AppSchema = Schema<Query, Mutation, EmptySubscription>;

/// What a connection field costs: `first` (default 25, at most 100) times its selection.
#[must_use]
pub fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let first = first.unwrap_or(25).clamp(1, 100);
    usize::try_from(first).unwrap_or(100) * child_complexity
}

/// Builds the schema. In production introspection and "did you mean" suggestions are off.
#[must_use]
pub fn build_schema(domain: Domain, production: bool) -> AppSchema {
    let mut builder = Schema::build(Query::default(), Mutation::default(), EmptySubscription)
        .data(domain)
        .data(access::LoginLimiter(RateLimiter::new(5, std::time::Duration::from_secs(60))))
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_directives(MAX_DIRECTIVES);
    if production {
        builder = builder.disable_introspection().disable_suggestions();
    }
    builder.finish()
}

/// The SDL of the schema, as written to `schema.graphql`.
#[must_use]
pub fn sdl() -> String {
    Schema::build(Query::default(), Mutation::default(), EmptySubscription).finish().sdl()
}

/// Gives every error an allow-listed code: limit violations become QUERY_TOO_COMPLEX, parse
/// and validation errors INVALID_INPUT, and anything else INTERNAL with the request id (its
/// message replaced, its text logged once).
pub fn mask_errors(errors: &mut [ServerError], request_id: &str) {
    for error in errors {
        let code = error.extensions.as_ref().and_then(|ext| ext.get("code")).and_then(|v| match v {
            async_graphql::Value::String(s) => Some(s.clone()),
            _ => None,
        });
        if code.as_deref().is_some_and(|c| ErrorCode::ALL.iter().any(|k| k.as_str() == c)) {
            if code.as_deref() == Some(ErrorCode::Internal.as_str()) {
                error.extensions.get_or_insert_with(Default::default).set("requestId", request_id);
            }
            continue;
        }
        let message = error.message.as_str();
        let limit = message.contains("too complex")
            || message.contains("nested too deep")
            || message.starts_with("The number of directives")
            || message.starts_with("The recursion depth");
        let (code, keep_message) = if limit {
            (ErrorCode::QueryTooComplex, true)
        } else if error.path.is_empty() || message.starts_with("Failed to parse") || message.starts_with("Invalid value") {
            (ErrorCode::InvalidInput, true)
        } else {
            tracing::error!(request_id, error = %message, "unexpected resolver error");
            (ErrorCode::Internal, false)
        };
        if !keep_message {
            error.message = "internal error".into();
        }
        let ext = error.extensions.get_or_insert_with(Default::default);
        ext.set("code", code.as_str());
        if code == ErrorCode::Internal {
            ext.set("requestId", request_id);
        }
    }
}
