//! The HTTP layer to the licensing server's GraphQL API (`POST <server>/graphql`): one typed
//! operation per request (the documents in `protocol/graphql/`, sent by id), its `data` read into the operation's
//! response type, or its first error returned as [`ClientError::Server`].

use std::time::Duration;

use graphql_client::GraphQLQuery;
use serde_json::Value;

use crate::ClientError;

/// A connection to one server.
pub struct Server {
    url: String,
    http: reqwest::blocking::Client,
}

impl Server {
    /// A client for the server at `base` (`http://127.0.0.1:8080`, with or without `/graphql`).
    ///
    /// # Errors
    /// [`ClientError::Network`] when no HTTP client can be built.
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/');
        let url = if base.ends_with("/graphql") {
            base.to_owned()
        } else {
            format!("{base}/graphql")
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("licensing-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Network(e.to_string()))?;
        Ok(Self { url, http })
    }

    /// Runs one operation `Q` with its `variables`; returns its `data`, or the first error's
    /// code and message.
    ///
    /// # Errors
    /// [`ClientError::Network`] when the server cannot be reached or answers something that
    /// is not GraphQL, or not the shape of `Q`'s answer; [`ClientError::Server`] for a GraphQL
    /// error.
    pub fn run<Q: GraphQLQuery>(
        &self,
        token: Option<&str>,
        variables: Q::Variables,
    ) -> Result<Q::ResponseData, ClientError> {
        let body = Q::build_query(variables);
        let full = serde_json::to_value(&body).map_err(|e| ClientError::Network(e.to_string()))?;
        // A trusted document goes by id; a server that does not know the id (an older one)
        // refuses it before running anything, and then gets the text.
        let (status, mut answer) = match protocol::trusted_documents::find_by_text(body.query) {
            Some(document) => {
                let by_id = serde_json::json!({
                    "documentId": document.id(),
                    "operationName": body.operation_name,
                    "variables": full["variables"],
                });
                match self.post(token, &by_id)? {
                    (_, answer) if is_unknown_document(&answer) => self.post(token, &full)?,
                    answered => answered,
                }
            }
            None => self.post(token, &full)?,
        };
        if let Some(error) = answer["errors"].as_array().and_then(|errors| errors.first()) {
            return Err(ClientError::Server {
                code: error["extensions"]["code"].as_str().unwrap_or("INTERNAL").to_owned(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        let data = answer.get_mut("data").map_or(Value::Null, Value::take);
        serde_json::from_value(data).map_err(|e| {
            ClientError::Network(format!(
                "HTTP {status}: the answer to {} is not what schema.graphql says: {e}",
                body.operation_name
            ))
        })
    }

    /// Posts one body; the HTTP status and the JSON answer.
    fn post(&self, token: Option<&str>, body: &Value) -> Result<(reqwest::StatusCode, Value), ClientError> {
        let mut request = self.http.post(&self.url).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().map_err(|e| ClientError::Network(e.to_string()))?;
        let status = response.status();
        let answer = response
            .json()
            .map_err(|e| ClientError::Network(format!("HTTP {status}: {e}")))?;
        Ok((status, answer))
    }
}

/// Whether the server refused a request by `documentId` before running anything: a server
/// that does not know the id says so with `INVALID_INPUT` and no path, and so does one that
/// predates trusted documents (it finds no query text). Nothing ran, so the text can follow.
fn is_unknown_document(answer: &Value) -> bool {
    answer["data"].is_null()
        && answer["errors"].as_array().is_some_and(|errors| {
            errors
                .iter()
                .any(|e| e["extensions"]["code"] == "INVALID_INPUT" && e.get("path").is_none())
        })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]
mod tests {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use serde_json::json;

    use super::*;
    use crate::operations::{CheckOutDevice, Heartbeat, check_out_device, heartbeat};

    /// A server on a loopback port that answers one request with each of `bodies` (JSON) in
    /// turn, and hands back the request bodies it received.
    fn answer_each(bodies: Vec<&'static str>) -> (Server, JoinHandle<Vec<Value>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Server::new(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let handle = std::thread::spawn(move || {
            let mut received = Vec::new();
            for body in bodies {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut request = vec![0; length];
                reader.read_exact(&mut request).unwrap();
                write!(
                    reader.into_inner(),
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                received.push(serde_json::from_slice(&request).unwrap());
            }
            received
        });
        (server, handle)
    }

    /// [`answer_each`] with one answer.
    fn answer_once(body: &'static str) -> (Server, JoinHandle<Vec<Value>>) {
        answer_each(vec![body])
    }

    #[test]
    fn sends_the_document_its_variables_and_the_token() {
        let (server, request) = answer_once(r#"{"data": {"checkOutDevice": "FILE"}}"#);
        let data = server
            .run::<CheckOutDevice>(Some("ldt_x"), check_out_device::Variables { ttl: 3600 })
            .unwrap();
        assert_eq!(data.check_out_device, "FILE");
        let request = &request.join().unwrap()[0];
        assert_eq!(request["variables"], json!({ "ttl": 3600 }));
        assert_eq!(request["operationName"], "CheckOutDevice");
        // A trusted document: by id, without its text.
        let text = include_str!("../../protocol/graphql/check_out_device.graphql");
        assert_eq!(request["documentId"], protocol::trusted_documents::document_id(text));
        assert!(request.get("query").is_none(), "{request}");
    }

    #[test]
    fn a_server_that_does_not_know_the_document_id_gets_the_text() {
        let (server, requests) = answer_each(vec![
            r#"{"data": null, "errors": [{"message": "unknown documentId: send the query text", "extensions": {"code": "INVALID_INPUT"}}]}"#,
            r#"{"data": {"heartbeat": {"updateAvailable": false, "licenseVersion": 1}}}"#,
        ]);
        let beat = server
            .run::<Heartbeat>(Some("ldt_x"), heartbeat::Variables)
            .unwrap()
            .heartbeat;
        assert_eq!(beat.license_version, 1);
        let requests = requests.join().unwrap();
        assert!(requests[0]["documentId"].as_str().unwrap().starts_with("sha256:"));
        let query: Vec<&str> = requests[1]["query"].as_str().unwrap().split_whitespace().collect();
        assert_eq!(
            query.join(" "),
            "mutation Heartbeat { heartbeat { updateAvailable nextHeartbeatDueAt licenseVersion } }"
        );
        assert!(requests[1].get("documentId").is_none());
    }

    #[test]
    fn a_graphql_error_is_its_code_and_message() {
        let (server, _) = answer_once(
            r#"{"data": null, "errors": [{"message": "no seat", "extensions": {"code": "ACTIVATION_LIMIT_REACHED"}}]}"#,
        );
        let error = server.run::<Heartbeat>(None, heartbeat::Variables).unwrap_err();
        assert!(
            matches!(&error, ClientError::Server { code, message } if code == "ACTIVATION_LIMIT_REACHED" && message == "no seat"),
            "{error:?}"
        );
        let (server, _) = answer_once(r#"{"errors": [{"message": "boom"}]}"#);
        let error = server.run::<Heartbeat>(None, heartbeat::Variables).unwrap_err();
        assert!(
            matches!(&error, ClientError::Server { code, message } if code == "INTERNAL" && message == "boom"),
            "{error:?}"
        );
    }

    #[test]
    fn an_answer_of_another_shape_is_an_error_not_a_null() {
        let (server, _) = answer_once(r#"{"data": {"heartbeat": {"updateAvailable": true, "licenseVersion": 2}}}"#);
        let beat = server.run::<Heartbeat>(None, heartbeat::Variables).unwrap().heartbeat;
        assert!(beat.update_available && beat.next_heartbeat_due_at.is_none() && beat.license_version == 2);
        let (server, _) = answer_once(r#"{"data": {"heartbeat": {"updated": true, "licenseVersion": 2}}}"#);
        let error = server.run::<Heartbeat>(None, heartbeat::Variables).unwrap_err();
        assert!(
            matches!(&error, ClientError::Network(message) if message.contains("Heartbeat") && message.contains("updateAvailable")),
            "{error:?}"
        );
        let (server, _) = answer_once(r#"{"data": null}"#);
        let error = server.run::<Heartbeat>(None, heartbeat::Variables).unwrap_err();
        assert!(matches!(error, ClientError::Network(_)), "{error:?}");
    }

    #[test]
    fn an_unreachable_server_is_a_network_error() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = Server::new(&format!("http://127.0.0.1:{port}/")).unwrap();
        let error = server.run::<Heartbeat>(None, heartbeat::Variables).unwrap_err();
        assert!(matches!(error, ClientError::Network(_)), "{error:?}");
    }
}
