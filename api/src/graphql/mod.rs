//! The GraphQL schema: one module per resource (its types, queries and mutations), merged into
//! the root objects here, with the limits from SECURITY.md and the error masking applied to
//! every response.

pub mod access;
pub mod alerts;
pub mod anomalies;
pub mod audit;
pub mod billing;
pub mod catalog;
pub mod connection;
pub mod context;
pub mod customers;
pub mod device_keys;
pub mod devices;
pub mod document;
pub mod emails;
pub mod enums;
pub mod error;
pub mod licenses;
pub mod loaders;
pub mod trusted;
pub mod usage;
pub mod vendor;
pub mod webhooks;

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{MergedObject, MergedSubscription, Schema, ServerError};
use domain::Domain;

use crate::graphql::error::ErrorCode;

/// Deepest selection allowed.
pub const MAX_DEPTH: usize = 10;
/// Most expensive query allowed (a connection costs `first` times its selection).
pub const MAX_COMPLEXITY: usize = 1000;
/// Most directives allowed on one field.
pub const MAX_DIRECTIVES: usize = 10;
/// Deepest selection allowed in a document that only introspects (development only): the
/// introspection query GraphiQL sends nests `ofType` deeper than [`MAX_DEPTH`]. A document
/// that touches any data field gets [`MAX_DEPTH`], whatever its operations or fragments are
/// named.
pub const MAX_INTROSPECTION_DEPTH: usize = 15;

/// Every query field.
#[derive(MergedObject, Default)]
pub struct Query(
    vendor::VendorQuery,
    access::AccessQuery,
    catalog::CatalogQuery,
    customers::CustomerQuery,
    licenses::LicenseQuery,
    devices::DeviceQuery,
    alerts::AlertQuery,
    anomalies::AnomalyQuery,
    billing::BillingQuery,
    emails::EmailQuery,
    audit::AuditQuery,
    webhooks::WebhookQuery,
);

/// Every mutation field.
#[derive(MergedObject, Default)]
pub struct Mutation(
    access::AccessMutation,
    vendor::VendorMutation,
    catalog::CatalogMutation,
    customers::CustomerMutation,
    licenses::LicenseMutation,
    devices::DeviceMutation,
    device_keys::DeviceKeyMutation,
    usage::UsageMutation,
    alerts::AlertMutation,
    anomalies::AnomalyMutation,
    billing::BillingMutation,
    webhooks::WebhookMutation,
);

/// Every subscription field.
#[derive(MergedSubscription, Default)]
pub struct Subscription(alerts::AlertSubscription);

/// The schema type.
pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// What a connection field costs: `first` (default 25, at most 100) times its selection.
#[must_use]
pub fn page_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let first = first.unwrap_or(25).clamp(1, 100);
    usize::try_from(first).unwrap_or(100) * child_complexity
}

/// Documents remembered as valid (the least recently used leave first).
const MAX_CACHED_DOCUMENTS: u64 = 1024;
/// Longest query text remembered (the hot documents are short; this bounds the cache's memory).
const MAX_CACHED_QUERY_BYTES: usize = 4096;

/// The schemas a request can run on, and the documents already known to be valid.
#[derive(Clone)]
pub struct Schemas {
    /// Every request that reads or writes data.
    pub main: AppSchema,
    /// The same schema validating only depth, complexity and fragment cycles: for a query text
    /// that already passed full validation once (clients send the same few documents over and
    /// over, so parsing and validating them again is wasted work).
    fast: AppSchema,
    /// Introspection-only documents in development ([`MAX_INTROSPECTION_DEPTH`]); `None` in
    /// production, where introspection is off.
    pub introspection: Option<AppSchema>,
    /// Parsed documents by query text that passed full validation.
    /// (Least recently used documents leave first; the cache is shared by clones.)
    validated: moka::sync::Cache<String, ExecutableDocument>,
    /// The trusted documents, parsed.
    pub trusted: std::sync::Arc<trusted::TrustedDocuments>,
    /// The device-facing rate limiters (the direct path of the trusted documents uses the
    /// resolvers' own).
    pub device_limiters: std::sync::Arc<devices::DeviceLimiters>,
}

/// How a request was prepared: the schema to run it on, and the parsed document to remember
/// if it turns out valid.
pub struct Prepared<'a> {
    /// The schema to execute on.
    pub schema: &'a AppSchema,
    /// Set when the document was not known yet.
    pub to_remember: Option<(String, ExecutableDocument)>,
}

impl Schemas {
    /// Builds the schemas, with `alert_feed` behind the `alerts` subscription. In production
    /// introspection and "did you mean" suggestions are off.
    #[must_use]
    pub fn new(domain: &Domain, alert_feed: &worker::alert_feed::AlertFeed, production: bool) -> Self {
        let device_limiters = std::sync::Arc::new(devices::DeviceLimiters::default());
        let login_limiter = std::sync::Arc::new(access::LoginLimiter::default());
        let socket_auth = std::sync::Arc::new(alerts::SocketAuthCache::default());
        let build = |depth: usize, mode: async_graphql::ValidationMode| {
            let builder = Schema::build(Query::default(), Mutation::default(), Subscription::default())
                .data(domain.clone())
                .data(alert_feed.clone())
                .data(login_limiter.clone())
                .data(device_limiters.clone())
                .data(socket_auth.clone())
                .validation_mode(mode)
                .limit_depth(depth)
                .limit_complexity(MAX_COMPLEXITY)
                .limit_directives(MAX_DIRECTIVES);
            if production {
                builder.disable_introspection().disable_suggestions().finish()
            } else {
                builder.finish()
            }
        };
        use async_graphql::ValidationMode::{Fast, Strict};
        Self {
            main: build(MAX_DEPTH, Strict),
            fast: build(MAX_DEPTH, Fast),
            introspection: (!production).then(|| build(MAX_INTROSPECTION_DEPTH, Strict)),
            validated: moka::sync::Cache::new(MAX_CACHED_DOCUMENTS),
            trusted: std::sync::Arc::default(),
            device_limiters,
        }
    }

    /// Chooses the schema for `request`: the fast one for a trusted document or a query text
    /// validated before, the introspection one when every root field of the selected operation
    /// (through fragments) is `__schema`, `__type` or `__typename`, else the main one.
    ///
    /// # Errors
    /// `INVALID_INPUT` for a document holding more than one of
    /// [`document::ONE_PER_DOCUMENT`] (nothing of it runs).
    pub fn prepare(&self, request: &mut async_graphql::Request) -> Result<Prepared<'_>, ServerError> {
        let operation_name = request.operation_name.clone();
        let one_per_document = |doc: &ExecutableDocument| {
            if document::costly_fields(doc, operation_name.as_deref()) > 1 {
                return Err(ErrorCode::InvalidInput.server_error(format!(
                    "send at most one of {} per request",
                    document::ONE_PER_DOCUMENT.join(", ")
                )));
            }
            Ok(())
        };
        if let Some(doc) = self.trusted.parsed(&request.query) {
            request.set_parsed_query(doc.clone());
            return Ok(Prepared {
                schema: &self.fast,
                to_remember: None,
            });
        }
        if let Some(doc) = self.validated.get(&request.query) {
            one_per_document(&doc)?;
            request.set_parsed_query(doc);
            return Ok(Prepared {
                schema: &self.fast,
                to_remember: None,
            });
        }
        let query = request.query.clone();
        let Ok(doc) = request.parsed_query() else {
            // A document that does not parse runs on, for the schema's own error.
            return Ok(Prepared {
                schema: &self.main,
                to_remember: None,
            });
        };
        one_per_document(doc)?;
        if let Some(introspection) = &self.introspection
            && document::introspects_only(doc, operation_name.as_deref())
        {
            return Ok(Prepared {
                schema: introspection,
                to_remember: None,
            });
        }
        Ok(Prepared {
            schema: &self.main,
            to_remember: Some((query, doc.clone())),
        })
    }

    /// Remembers a document that ran without parse or validation errors (every error, if
    /// any, came from a resolver and so has a path).
    pub fn remember(&self, prepared: Option<(String, ExecutableDocument)>, response: &async_graphql::Response) {
        let Some((query, doc)) = prepared else { return };
        if query.len() > MAX_CACHED_QUERY_BYTES || response.errors.iter().any(|e| e.path.is_empty()) {
            return;
        }
        self.validated.insert(query, doc);
    }
}

/// The SDL of the schema, as written to `schema.graphql`.
#[must_use]
pub fn sdl() -> String {
    Schema::build(Query::default(), Mutation::default(), Subscription::default())
        .finish()
        .sdl()
}

/// Gives every error an allow-listed code: limit violations become QUERY_TOO_COMPLEX, parse
/// and validation errors INVALID_INPUT, and anything else INTERNAL with the request id (its
/// message replaced, its text logged once).
pub fn mask_errors(errors: &mut [ServerError], request_id: &str) {
    for error in errors {
        let code = error
            .extensions
            .as_ref()
            .and_then(|ext| ext.get("code"))
            .and_then(|v| match v {
                async_graphql::Value::String(s) => Some(s.clone()),
                _ => None,
            });
        if code
            .as_deref()
            .is_some_and(|c| ErrorCode::ALL.iter().any(|k| k.as_str() == c))
        {
            if code.as_deref() == Some(ErrorCode::Internal.as_str()) {
                error
                    .extensions
                    .get_or_insert_with(Default::default)
                    .set("requestId", request_id);
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
        } else if error.path.is_empty()
            || message.starts_with("Failed to parse")
            || message.starts_with("Invalid value")
            // An argument that does not coerce, found while resolving a document that ran
            // without re-validation (a trusted or already validated one) with other variables.
            || message.contains("(occurred while parsing")
        {
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

#[cfg(test)]
mod tests {
    /// `schema.graphql` at the repository root is the exported SDL; regenerate it with
    /// `UPDATE_SCHEMA=1 cargo test -p api schema_graphql`.
    #[test]
    fn schema_graphql_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
        let sdl = super::sdl();
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &sdl).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == sdl,
            "schema.graphql is out of date: run `UPDATE_SCHEMA=1 cargo test --workspace schema_graphql` and commit it"
        );
    }
}
