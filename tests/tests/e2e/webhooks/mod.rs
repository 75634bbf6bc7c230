//! Webhooks out, end to end against a real HTTP receiver (`tests/support/webhook_receiver.py`,
//! which checks every signature with Python's own `hmac`): what arrives and for whom, the
//! payload against what GraphQL returns, retries with the same event id, giving up with one
//! alert, a worker killed mid-delivery, a slow endpoint beside a fast one, and the production
//! URL rules at save time and at send time. The helpers every area shares are here; one file
//! per area: who gets which event ([`events`]), retries and faults ([`retries`]), endpoints
//! sharing the sender ([`concurrency`]), where deliveries may go ([`production`]).

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

mod concurrency;
mod events;
mod production;
mod retries;

use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Value, json};
use tests::{
    Backend, BillingFixture, TestServer, WebhookReceiver, activate, api_token, components, error_code, eventually,
    free_port, license_with_policy, on_both_databases, product_and_policy, worker_on, worker_queue,
};

const CREATE: &str = "mutation($in: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $in) { secret endpoint { id url events enabled } } }";
const DELIVERIES: &str = "query($e: ID) { webhookDeliveries(endpointId: $e, first: 50) { nodes { id eventId eventType status attempts responseStatus lastError createdAt deliveredAt nextAttemptAt retryUntil updatedAt } } }";
const ISSUE: &str = "mutation($p: ID!) { issueLicense(input: {policyId: $p}) { id key } }";
const RECORD: &str = "mutation($in: RecordUsageInput!) { recordUsage(input: $in) { used limit } }";
const WAIT: Duration = Duration::from_secs(60);

/// Creates an endpoint for the receiver's hook `name` subscribed to `events`, and tells the
/// receiver its secret and how to answer (`config`); returns the endpoint id.
async fn hook(
    server: &TestServer,
    token: &str,
    receiver: &WebhookReceiver,
    name: &str,
    events: &[&str],
    config: Value,
) -> String {
    let created = server
        .ok(
            token,
            CREATE,
            json!({ "in": { "url": receiver.url(name), "events": events } }),
        )
        .await;
    let secret = created["createWebhookEndpoint"]["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{created}");
    let mut config = config;
    config["secret"] = json!(secret);
    receiver.configure(name, config).await;
    created["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The delivery log of one endpoint, newest first.
async fn deliveries(server: &TestServer, token: &str, endpoint: &str) -> Vec<Value> {
    server.ok(token, DELIVERIES, json!({ "e": endpoint })).await["webhookDeliveries"]["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the receiver's hook `name` has at least `n` deliveries; returns them all.
async fn arrivals(receiver: &WebhookReceiver, name: &str, n: usize) -> Vec<Value> {
    eventually(WAIT, &format!("{n} deliveries to {name}"), || async {
        let got = receiver.received(name).await;
        (got.len() >= n).then_some(got)
    })
    .await
}

/// Waits until an endpoint's only delivery satisfies `check`; returns it.
async fn only_delivery(server: &TestServer, endpoint: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(WAIT, what, || async {
        let log = deliveries(server, &server.owner_token, endpoint).await;
        assert!(log.len() <= 1, "one event, one delivery: {log:?}");
        log.first().filter(|d| check(d)).cloned()
    })
    .await
}

fn time(value: &Value) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("a time: {value}"))).unwrap()
}

/// `field` of `object` is what GraphQL returned: the same value, or the same instant for times
/// (the payload says `Z`, GraphQL `+00:00`).
fn assert_same(object: &Value, graphql: &Value, field: &str) {
    let (ours, theirs) = (&object[field], &graphql[field]);
    let same_instant = match (ours.as_str(), theirs.as_str()) {
        (Some(a), Some(b)) => matches!(
            (DateTime::parse_from_rfc3339(a), DateTime::parse_from_rfc3339(b)),
            (Ok(a), Ok(b)) if a == b
        ),
        _ => false,
    };
    assert!(
        ours == theirs || same_instant,
        "{field}: the payload says {ours}, GraphQL {theirs}"
    );
}

/// The parsed body of a received delivery, after checking it matches its headers and vendor.
fn body_of(entry: &Value, vendor_slug: &str) -> Value {
    assert_eq!(
        entry["verified"], true,
        "the signature verifies with Python's hmac: {entry}"
    );
    let body: Value = serde_json::from_str(entry["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], entry["event_id"], "{entry}");
    assert_eq!(body["type"], entry["event_type"], "{entry}");
    assert_eq!(body["vendor"], vendor_slug, "{entry}");
    assert!(body["id"].as_str().unwrap().starts_with("evt_"), "{body}");
    time(&body["created"]);
    body
}

fn types(received: &[Value]) -> Vec<String> {
    received
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect()
}

async fn vendor_slug(server: &TestServer, token: &str) -> String {
    server.ok(token, "{ viewer { vendor { slug } } }", json!({})).await["viewer"]["vendor"]["slug"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Moves every process's clock so that the server's now is at least `at`.
fn jump_clock_past(server: &TestServer, at: DateTime<Utc>) {
    server.set_clock_offset((at - Utc::now()).num_seconds() + 2);
}
