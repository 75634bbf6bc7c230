//! Calls to the licensing server's GraphQL API (`POST <server>/graphql`): activation,
//! heartbeat, license-file refresh, check-out and check-in, deactivation.

use std::time::Duration;

use serde_json::{Value, json};

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

    /// Runs one operation; returns its `data`, or the first error's code and message.
    ///
    /// # Errors
    /// [`ClientError::Network`] when the server cannot be reached or answers something that
    /// is not GraphQL; [`ClientError::Server`] for a GraphQL error.
    pub fn call(&self, token: Option<&str>, query: &str, variables: Value) -> Result<Value, ClientError> {
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().map_err(|e| ClientError::Network(e.to_string()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .map_err(|e| ClientError::Network(format!("HTTP {status}: {e}")))?;
        if let Some(error) = body["errors"].as_array().and_then(|errors| errors.first()) {
            return Err(ClientError::Server {
                code: error["extensions"]["code"].as_str().unwrap_or("INTERNAL").to_owned(),
                message: error["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(body["data"].clone())
    }
}
