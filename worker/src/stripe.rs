//! The Stripe client: `GET /v1/subscriptions/{id}` and the `GET /v1/subscriptions` list
//! (`status=all`, 100 a page, `starting_after` the last id), under `STRIPE_API_BASE` with
//! `Authorization: Bearer STRIPE_SECRET_KEY`. A connection failure, 429 or 5xx is retried
//! twice (after 1 s and 2 s, or the `Retry-After` Stripe asks for, at most 10 s); after that
//! it is a [`StripeError`] for the caller to record. Nothing here interprets a subscription:
//! the domain parses and applies it.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Tries per request.
const ATTEMPTS: u32 = 3;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Subscriptions per list page (Stripe's maximum).
const PAGE_SIZE: u32 = 100;

/// Why Stripe could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// No connection, or no answer in time.
    #[error("the billing API is unreachable: {0}")]
    Unreachable(String),
    /// An answer other than 200 (or 404 for a subscription).
    #[error("the billing API answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Stripe's error message, if any.
        message: String,
    },
    /// A 200 that is not the JSON expected.
    #[error("the billing API sent something unexpected: {0}")]
    Unexpected(String),
}

/// One page of the subscription list.
#[derive(Debug)]
pub struct SubscriptionPage {
    /// The subscriptions, as Stripe's JSON.
    pub data: Vec<Value>,
    /// Whether more follow (ask again after the last id).
    pub has_more: bool,
}

/// Where Stripe is and the key to use.
#[derive(Debug, Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: SecretString,
}

impl StripeClient {
    /// A client for `base` (e.g. `https://api.stripe.com`) with the secret key.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS set-up).
    pub fn new(base: &str, key: SecretString) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("licensing/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// One subscription; `None` when Stripe has no such subscription (404).
    ///
    /// # Errors
    /// [`StripeError`] after the retries.
    pub async fn subscription(&self, id: &str) -> Result<Option<Value>, StripeError> {
        self.get(&format!("/v1/subscriptions/{id}"), &[]).await
    }

    /// A page of every subscription, whatever its status, after `starting_after`.
    ///
    /// # Errors
    /// [`StripeError`] after the retries.
    pub async fn subscriptions(&self, starting_after: Option<&str>) -> Result<SubscriptionPage, StripeError> {
        let limit = PAGE_SIZE.to_string();
        let mut query = vec![("status", "all"), ("limit", limit.as_str())];
        if let Some(after) = starting_after {
            query.push(("starting_after", after));
        }
        let list = self
            .get("/v1/subscriptions", &query)
            .await?
            .ok_or_else(|| StripeError::Unexpected("the subscription list answered 404".into()))?;
        let data = list
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| StripeError::Unexpected("the list has no data".into()))?;
        let has_more = list.get("has_more").and_then(Value::as_bool).unwrap_or(false);
        Ok(SubscriptionPage { data, has_more })
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Option<Value>, StripeError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait = Duration::from_secs(1 << (attempt - 1));
            let sent = self
                .http
                .get(&url)
                .query(query)
                .bearer_auth(self.key.expose_secret())
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(e) if attempt < ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "billing API unreachable; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(StripeError::Unreachable(e.without_url().to_string())),
            };
            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if retryable && attempt < ATTEMPTS {
                let asked = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                tokio::time::sleep(asked.unwrap_or(wait).min(MAX_RETRY_AFTER)).await;
                continue;
            }
            let body: Value = response
                .json()
                .await
                .map_err(|e| StripeError::Unexpected(e.without_url().to_string()))?;
            if !status.is_success() {
                let message = body
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
                    .chars()
                    .take(300)
                    .collect();
                return Err(StripeError::Status {
                    status: status.as_u16(),
                    message,
                });
            }
            return Ok(Some(body));
        }
    }
}
