//! Trusted documents ([`protocol::trusted_documents`]): a request may name one by
//! `documentId` (`sha256:<hex>`; Apollo's `extensions.persistedQuery.sha256Hash` is read
//! too) instead of sending its text. Each is parsed once at start-up and runs on the schema
//! without re-validation (the client compiles every one of them against `schema.graphql`).
//! `validateLicense` and `heartbeat` — the calls a whole fleet makes — are answered by a direct
//! path: the same functions their resolvers call, the answer built as the executor builds it
//! (the `trusted_documents` end-to-end test compares both byte for byte), with no executor in
//! between. Anything the direct path does not recognise exactly (another operation name,
//! variables of another shape) goes to the executor, which answers it as usual.

use std::collections::HashMap;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, Selection};
use async_graphql::{Name, PathSegment, Pos, Response, ScalarType as _, ServerError, Value};
use protocol::trusted_documents::{self, TrustedDocument};
use serde::Deserialize;

use crate::graphql::context::Caller;
use crate::graphql::devices::{self, ComponentInput, DeviceLimiters, ValidateLicenseInput};
use crate::graphql::error::{ApiResult, ErrorCode};

/// Which root field a document with a direct path runs, and where it stands in the text (for
/// the `locations` of an error).
#[derive(Clone, Copy, Debug)]
enum Direct {
    ValidateLicense(Pos),
    Heartbeat(Pos),
}

/// One trusted document, parsed.
struct Known {
    document: TrustedDocument,
    parsed: ExecutableDocument,
    direct: Option<Direct>,
}

/// The trusted documents by id and by text.
pub struct TrustedDocuments {
    by_id: HashMap<String, Known>,
    id_by_text: HashMap<&'static str, String>,
}

impl Default for TrustedDocuments {
    fn default() -> Self {
        let mut by_id = HashMap::new();
        let mut id_by_text = HashMap::new();
        for document in trusted_documents::ALL {
            // A constant of the build: the unit test below parses every one.
            let Ok(parsed) = async_graphql::parser::parse_query(document.text) else {
                tracing::error!(operation = document.operation_name, "a trusted document does not parse");
                continue;
            };
            let direct = direct_field(&parsed);
            id_by_text.insert(document.text, document.id());
            by_id.insert(
                document.id(),
                Known {
                    document,
                    parsed,
                    direct,
                },
            );
        }
        Self { by_id, id_by_text }
    }
}

/// The direct path of a document whose one operation selects exactly one root field that has
/// one.
fn direct_field(doc: &ExecutableDocument) -> Option<Direct> {
    // A named operation is one of `Multiple`, even when it is the only one.
    let op = match &doc.operations {
        DocumentOperations::Single(op) => op,
        DocumentOperations::Multiple(ops) if ops.len() == 1 => ops.values().next()?,
        DocumentOperations::Multiple(_) => return None,
    };
    let [selection] = &op.node.selection_set.node.items[..] else {
        return None;
    };
    let Selection::Field(field) = &selection.node else {
        return None;
    };
    if field.node.alias.is_some() {
        return None;
    }
    match field.node.name.node.as_str() {
        "validateLicense" => Some(Direct::ValidateLicense(field.pos)),
        "heartbeat" => Some(Direct::Heartbeat(field.pos)),
        _ => None,
    }
}

/// What a request body names.
pub enum Named<'a> {
    /// No trusted document: the body's own `query`.
    Text,
    /// A trusted document.
    Trusted(TrustedRequest<'a>),
}

/// A request for a trusted document.
pub struct TrustedRequest<'a> {
    known: &'a Known,
}

impl TrustedDocuments {
    /// The trusted document a body names by id, if any.
    ///
    /// # Errors
    /// `INVALID_INPUT` for an id no trusted document has, or a body whose `query` is not the
    /// named document's text.
    pub fn named(&self, body: &serde_json::Value) -> Result<Named<'_>, ServerError> {
        let id = match (
            body.get("documentId"),
            body.pointer("/extensions/persistedQuery/sha256Hash"),
        ) {
            (Some(serde_json::Value::String(id)), _) => id.clone(),
            (None, Some(serde_json::Value::String(hash))) => format!("sha256:{hash}"),
            (None, None) => return Ok(Named::Text),
            _ => return Err(ErrorCode::InvalidInput.server_error("documentId must be a string \"sha256:<hex>\"")),
        };
        let Some(known) = self.by_id.get(&id) else {
            return Err(ErrorCode::InvalidInput
                .server_error("unknown documentId: this server does not know that document; send the query text"));
        };
        match body.get("query") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(query)) if query == known.document.text => {}
            Some(_) => {
                return Err(ErrorCode::InvalidInput
                    .server_error("send either documentId or a query, not both (or the query of that document)"));
            }
        }
        Ok(Named::Trusted(TrustedRequest { known }))
    }

    /// The parsed copy of a trusted document's text, if `query` is one.
    #[must_use]
    pub fn parsed(&self, query: &str) -> Option<&ExecutableDocument> {
        let id = self.id_by_text.get(query)?;
        self.by_id.get(id).map(|known| &known.parsed)
    }
}

/// The variables of the trusted `validateLicense` document, exactly as GraphQL would accept
/// them and nothing else (anything more, or a value GraphQL would coerce, goes to the executor).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateVariables {
    input: ValidateInputVariable,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ValidateInputVariable {
    license_key: String,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    components: Option<Vec<ComponentVariable>>,
    #[serde(default)]
    entitlements: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentVariable {
    name: String,
    value: String,
}

/// What the direct path needs of the request.
pub struct DirectCall<'a> {
    /// The use cases.
    pub domain: &'a domain::Domain,
    /// The device-facing rate limiters (the resolvers' own).
    pub limiters: &'a DeviceLimiters,
    /// The client's address.
    pub client_ip: &'a str,
    /// The request id.
    pub request_id: &'a str,
}

impl TrustedRequest<'_> {
    /// The document's text.
    #[must_use]
    pub fn text(&self) -> &'static str {
        self.known.document.text
    }

    /// Answers the request by the direct path, or `None` when it has none or the request is
    /// not exactly what the direct path knows (the executor answers it then). `caller` is
    /// asked only by the calls that need one.
    pub async fn answer_directly<F>(
        &self,
        body: &serde_json::Value,
        call: DirectCall<'_>,
        caller: F,
    ) -> Option<Response>
    where
        F: AsyncFnOnce() -> Caller,
    {
        let direct = self.known.direct?;
        match body.get("operationName") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(name)) if name == self.known.document.operation_name => {}
            Some(_) => return None,
        }
        let variables = body.get("variables").filter(|v| !v.is_null());
        match direct {
            Direct::ValidateLicense(pos) => {
                let variables = ValidateVariables::deserialize(variables?).ok()?.input;
                let input = ValidateLicenseInput {
                    license_key: variables.license_key,
                    fingerprint: variables.fingerprint,
                    components: variables.components.map(|components| {
                        components
                            .into_iter()
                            .map(|c| ComponentInput {
                                name: c.name,
                                value: c.value,
                            })
                            .collect()
                    }),
                    entitlements: variables.entitlements,
                };
                let answer = devices::validate(
                    call.domain,
                    call.limiters,
                    call.client_ip,
                    Some(call.request_id.to_owned()),
                    input,
                )
                .await;
                Some(respond(
                    "validateLicense",
                    pos,
                    answer.map(|v| {
                        object([
                            ("valid", Value::Boolean(v.valid)),
                            ("code", async_graphql::resolver_utils::enum_value(v.code)),
                            ("detail", Value::String(v.detail)),
                        ])
                    }),
                ))
            }
            Direct::Heartbeat(pos) => {
                if variables.is_some_and(|v| v.as_object().is_none_or(|o| !o.is_empty())) {
                    return None;
                }
                let caller = caller().await;
                let answer = match caller.scope() {
                    Ok(scope) => devices::heartbeat(call.domain, call.limiters, &scope.actor).await,
                    Err(err) => Err(err),
                };
                Some(respond(
                    "heartbeat",
                    pos,
                    answer.map(|beat| {
                        object([
                            ("updateAvailable", Value::Boolean(beat.update_available)),
                            (
                                "nextHeartbeatDueAt",
                                beat.next_heartbeat_due_at.map_or(Value::Null, |at| at.to_value()),
                            ),
                            ("licenseVersion", Value::from(beat.license_version)),
                        ])
                    }),
                ))
            }
        }
    }
}

/// An object value with its fields in selection order.
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (Name::new(k), v))
            .collect::<IndexMap<_, _>>(),
    )
}

/// The response the executor gives for a non-null root field `field` at `pos`: its value, or
/// `data: null` and the error at that field.
fn respond(field: &str, pos: Pos, answer: ApiResult<Value>) -> Response {
    match answer {
        Ok(value) => Response::new(object([(field, value)])),
        Err(err) => {
            let mut error = async_graphql::Error::from(err).into_server_error(pos);
            error.path = vec![PathSegment::Field(field.to_owned())];
            Response::from_errors(vec![error])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_trusted_document_parses_and_the_hot_ones_have_a_direct_path() {
        let trusted = TrustedDocuments::default();
        assert_eq!(trusted.by_id.len(), trusted_documents::ALL.len());
        for document in trusted_documents::ALL {
            let known = &trusted.by_id[&document.id()];
            let hot = [
                trusted_documents::VALIDATE_LICENSE.text,
                trusted_documents::HEARTBEAT.text,
            ];
            assert_eq!(
                known.direct.is_some(),
                hot.contains(&document.text),
                "{}",
                document.operation_name
            );
            assert!(trusted.parsed(document.text).is_some());
        }
    }

    #[test]
    fn a_body_names_a_document_by_id_or_apollo_hash_and_nothing_else() {
        let trusted = TrustedDocuments::default();
        let id = trusted_documents::HEARTBEAT.id();
        let hash = id.trim_start_matches("sha256:");
        for body in [
            serde_json::json!({ "documentId": id }),
            serde_json::json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } }),
            serde_json::json!({ "documentId": id, "query": trusted_documents::HEARTBEAT.text }),
        ] {
            assert!(matches!(trusted.named(&body), Ok(Named::Trusted(_))), "{body}");
        }
        assert!(matches!(
            trusted.named(&serde_json::json!({ "query": "{ viewer { role } }" })),
            Ok(Named::Text)
        ));
        for body in [
            serde_json::json!({ "documentId": "sha256:00" }),
            serde_json::json!({ "documentId": 7 }),
            serde_json::json!({ "documentId": id, "query": "mutation { heartbeat { licenseVersion } }" }),
        ] {
            let Err(refused) = trusted.named(&body) else {
                panic!("{body} was accepted");
            };
            assert!(refused.message.contains("documentId"), "{}", refused.message);
        }
    }
}
