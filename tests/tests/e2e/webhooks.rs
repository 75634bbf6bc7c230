//! Webhooks out, end to end against a real HTTP receiver (`tests/support/webhook_receiver.py`,
//! which checks every signature with Python's own `hmac`): what arrives and for whom, the
//! payload against what GraphQL returns, retries with the same event id, giving up with one
//! alert, a worker killed mid-delivery, a slow endpoint beside a fast one, and the production
//! URL rules at save time and at send time.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

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

/// What each endpoint receives: everything its vendor's events it subscribed to, signed,
/// with the object as GraphQL shows it and never the key; `license.*` gets only license
/// events; another vendor's events never arrive; an event past a meter's limit arrives once;
/// INTEGRATION reads the log but cannot manage endpoints; redelivery repeats the same event.
async fn deliveries_reach_their_subscribers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    let slug = vendor_slug(&server, &token).await;
    let all = hook(&server, &token, &receiver, "all", &["*"], json!({})).await;
    let licenses_only = hook(&server, &token, &receiver, "licenses", &["license.*"], json!({})).await;
    let (_, other_token) = server.create_vendor("Other", "other-vendor", "owner@other.test");
    let other = hook(&server, &other_token, &receiver, "other", &["*"], json!({})).await;

    let (_, license, key) = license_with_policy(&server, &token, "meters: [{code: \"api\", limit: 3}]").await;
    let activation = activate(&server, &key, "fp-hooks", components("hooks")).await;
    let device_token = activation["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{activation}"))
        .to_owned();
    let device_id = activation["data"]["activateDevice"]["device"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let device_query = "query($id: ID!) { device(id: $id) { id fingerprint components status offline holdsSeat name hostname platform activatedAt lastSeenAt heartbeatDeadlineAt licenseVersion checkedOutUntil releasedAt license { id } } }";
    let device = server.ok(&token, device_query, json!({ "id": device_id })).await["device"].clone();
    for (n, quantity) in [(1, 2), (2, 1)] {
        let recorded = server
            .ok(
                &device_token,
                RECORD,
                json!({ "in": { "meter": "api", "quantity": quantity, "idempotencyKey": format!("k{n}") } }),
            )
            .await;
        assert_eq!(
            recorded["recordUsage"]["used"],
            if n == 1 { 2 } else { 3 },
            "{recorded}"
        );
    }
    // Past the limit: refused, and the meter does not "reach" its limit a second time.
    let over = server
        .gql(
            Some(&device_token),
            RECORD,
            json!({ "in": { "meter": "api", "quantity": 1, "idempotencyKey": "k3" } }),
        )
        .await;
    assert!(over["errors"].is_array(), "{over}");
    let suspend = "mutation($id: ID!) { suspendLicense(id: $id, reason: \"unpaid\") { id } }";
    server.ok(&token, suspend, json!({ "id": license })).await;
    let license_query = "query($id: ID) { license(id: $id) { id key status statusReason issuedAt expiresAt maxActivations activeDevices entitlements version metadata billingSubscriptionId updatedAt product { id } policy { id } customer { id } } }";
    let graphql_license = server.ok(&token, license_query, json!({ "id": license })).await["license"].clone();

    let wanted = [
        "license.created",
        "device.activated",
        "usage.limit_reached",
        "license.suspended",
    ];
    let received = eventually(WAIT, "every event of vendor A at hook all", || async {
        let got = receiver.received("all").await;
        let types = types(&got);
        wanted.iter().all(|w| types.iter().any(|t| t == w)).then_some(got)
    })
    .await;
    let mut by_type = std::collections::HashMap::new();
    for entry in &received {
        let body = body_of(entry, &slug);
        assert!(
            !entry["body"].as_str().unwrap().contains(&key),
            "the key is never sent: {entry}"
        );
        by_type.insert(body["type"].as_str().unwrap().to_owned(), body);
    }
    let limit_events = deliveries(&server, &token, &all)
        .await
        .iter()
        .filter(|d| d["eventType"] == "usage.limit_reached")
        .count();
    assert_eq!(limit_events, 1, "the meter reached its limit once");

    let suspended = &by_type["license.suspended"]["data"]["object"];
    for field in [
        "id",
        "status",
        "statusReason",
        "issuedAt",
        "expiresAt",
        "maxActivations",
        "activeDevices",
        "entitlements",
        "version",
        "metadata",
        "billingSubscriptionId",
        "updatedAt",
    ] {
        assert_same(suspended, &graphql_license, field);
    }
    assert_eq!(suspended["status"], "SUSPENDED");
    assert_eq!(suspended["productId"], graphql_license["product"]["id"]);
    assert_eq!(suspended["policyId"], graphql_license["policy"]["id"]);
    assert_eq!(suspended["customerId"], graphql_license["customer"]["id"]);
    assert_eq!(suspended["keyLast4"].as_str().unwrap(), &key[key.len() - 4..]);
    assert!(suspended.get("key").is_none(), "{suspended}");

    let activated = &by_type["device.activated"]["data"]["object"];
    for field in [
        "id",
        "fingerprint",
        "components",
        "status",
        "offline",
        "holdsSeat",
        "name",
        "hostname",
        "platform",
        "activatedAt",
        "lastSeenAt",
        "heartbeatDeadlineAt",
        "licenseVersion",
        "checkedOutUntil",
        "releasedAt",
    ] {
        assert_same(activated, &device, field);
    }
    assert_eq!(activated["licenseId"], json!(license));

    let at_limit = &by_type["usage.limit_reached"]["data"]["object"];
    assert_eq!(
        (
            &at_limit["licenseId"],
            &at_limit["meter"],
            &at_limit["used"],
            &at_limit["limit"],
            &at_limit["remaining"]
        ),
        (&json!(license), &json!("api"), &json!(3), &json!(3), &json!(0)),
        "{at_limit}"
    );

    // license.* only: license events, both of them.
    let license_types = eventually(WAIT, "both license events at hook licenses", || async {
        let types = types(&receiver.received("licenses").await);
        ["license.created", "license.suspended"]
            .iter()
            .all(|w| types.iter().any(|t| t == w))
            .then_some(types)
    })
    .await;
    assert!(
        license_types.iter().all(|t| t.starts_with("license.")),
        "{license_types:?}"
    );
    let license_log = deliveries(&server, &token, &licenses_only).await;
    assert!(
        license_log
            .iter()
            .all(|d| d["eventType"].as_str().unwrap().starts_with("license."))
    );

    // The other vendor: vendor A's events were fanned out (they arrived), none for B.
    assert!(deliveries(&server, &other_token, &other).await.is_empty());
    assert!(receiver.received("other").await.is_empty());
    let (_, other_policy) = product_and_policy(&server, &other_token, "maxActivations: 1").await;
    server.ok(&other_token, ISSUE, json!({ "p": other_policy })).await;
    let other_received = arrivals(&receiver, "other", 1).await;
    assert_eq!(types(&other_received), vec!["license.created".to_owned()]);
    body_of(&other_received[0], "other-vendor");
    let other_event = other_received[0]["event_id"].clone();
    for name in ["all", "licenses"] {
        let log = receiver.received(name).await;
        assert!(
            log.iter().all(|e| e["event_id"] != other_event),
            "{name} got vendor B's event"
        );
    }
    // Another vendor's delivery log and endpoints are not found from A.
    let foreign = server
        .gql(
            Some(&token),
            "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { id } }",
            json!({ "id": other }),
        )
        .await;
    assert_eq!(error_code(&foreign), Some("NOT_FOUND"), "{foreign}");
    assert!(deliveries(&server, &token, &other).await.is_empty());

    // INTEGRATION reads the log, but cannot see or manage endpoints.
    let integration = api_token(&server, &token, "INTEGRATION").await;
    assert!(!deliveries(&server, &integration, &all).await.is_empty());
    let create = server
        .gql(
            Some(&integration),
            CREATE,
            json!({ "in": { "url": receiver.url("x"), "events": ["*"] } }),
        )
        .await;
    assert_eq!(error_code(&create), Some("FORBIDDEN"), "{create}");
    let list = server
        .gql(Some(&integration), "{ webhookEndpoints { id } }", json!({}))
        .await;
    assert_eq!(error_code(&list), Some("FORBIDDEN"), "{list}");

    // Redelivery: the same event id again, a second attempt.
    let created = deliveries(&server, &token, &all)
        .await
        .into_iter()
        .find(|d| d["eventType"] == "license.created")
        .unwrap();
    assert_eq!(created["status"], "DELIVERED");
    let redeliver = "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { status } }";
    let again = server.ok(&token, redeliver, json!({ "id": created["id"] })).await;
    assert_eq!(again["redeliverWebhook"]["status"], "PENDING");
    eventually(WAIT, "the redelivery", || async {
        let same: Vec<Value> = receiver
            .received("all")
            .await
            .into_iter()
            .filter(|e| e["event_id"] == created["eventId"])
            .collect();
        (same.len() == 2).then_some(())
    })
    .await;
    let redelivered = eventually(WAIT, "the redelivery recorded", || async {
        deliveries(&server, &token, &all)
            .await
            .into_iter()
            .find(|d| d["id"] == created["id"] && d["status"] == "DELIVERED" && d["attempts"] == 2)
    })
    .await;
    assert_eq!(redelivered["eventId"], created["eventId"]);

    // A bad subscription is refused and creates nothing.
    let bad = server
        .gql(
            Some(&token),
            CREATE,
            json!({ "in": { "url": receiver.url("x"), "events": ["license.exploded"] } }),
        )
        .await;
    assert_eq!(error_code(&bad), Some("INVALID_INPUT"), "{bad}");
    let endpoints = server.ok(&token, "{ webhookEndpoints { id } }", json!({})).await;
    assert_eq!(
        endpoints["webhookEndpoints"].as_array().unwrap().len(),
        2,
        "{endpoints}"
    );

    // Disabled: no delivery for what happens meanwhile. Deleted: its log stays readable,
    // redelivery is refused.
    let disable = "mutation($id: ID!) { updateWebhookEndpoint(id: $id, enabled: false) { enabled } }";
    let disabled = server.ok(&token, disable, json!({ "id": licenses_only })).await;
    assert_eq!(disabled["updateWebhookEndpoint"]["enabled"], false);
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;
    let meanwhile = server.ok(&token, ISSUE, json!({ "p": policy })).await["issueLicense"]["id"].clone();
    let meanwhile_event = eventually(WAIT, "the license issued meanwhile at hook all", || async {
        receiver.received("all").await.into_iter().find_map(|e| {
            let body: Value = serde_json::from_str(e["body"].as_str()?).ok()?;
            (body["data"]["object"]["id"] == meanwhile).then(|| e["event_id"].clone())
        })
    })
    .await;
    let while_disabled = deliveries(&server, &token, &licenses_only).await;
    assert!(
        while_disabled.iter().all(|d| d["eventId"] != meanwhile_event),
        "{while_disabled:?}"
    );
    let delete = "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { id } }";
    server.ok(&token, delete, json!({ "id": licenses_only })).await;
    let kept = deliveries(&server, &token, &licenses_only).await;
    assert_eq!(kept.len(), while_disabled.len(), "the log stays: {kept:?}");
    let refused = server
        .gql(Some(&token), redeliver, json!({ "id": kept[0]["id"] }))
        .await;
    assert_eq!(error_code(&refused), Some("NOT_FOUND"), "{refused}");
    let endpoints = server.ok(&token, "{ webhookEndpoints { id } }", json!({})).await;
    assert_eq!(endpoints["webhookEndpoints"], json!([{ "id": all }]));
}
on_both_databases!(
    deliveries_reach_their_subscribers_test,
    deliveries_reach_their_subscribers
);

/// Each change to a license or a device is one event of the type that names it, in the order
/// the changes happened.
async fn every_license_and_device_change_is_an_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    hook(
        &server,
        &token,
        &receiver,
        "changes",
        &["license.*", "device.*"],
        json!({}),
    )
    .await;
    let (_, license, key) = license_with_policy(&server, &token, "maxActivations: 3").await;
    let first = activate(&server, &key, "fp-one", components("one")).await;
    let second = activate(&server, &key, "fp-two", components("two")).await;
    let first_token = first["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let second_id = second["data"]["activateDevice"]["device"]["id"].clone();
    server
        .ok(&first_token, "mutation { deactivateDevice { id } }", json!({}))
        .await;
    let release = "mutation($id: ID!) { releaseDevice(id: $id) { id } }";
    server.ok(&token, release, json!({ "id": second_id })).await;
    let update = "mutation($id: ID!) { updateLicense(input: {id: $id, maxActivations: 5}) { id } }";
    server.ok(&token, update, json!({ "id": license })).await;
    for change in [
        "mutation($id: ID!) { suspendLicense(id: $id) { id } }",
        "mutation($id: ID!) { reinstateLicense(id: $id) { id } }",
        "mutation($id: ID!) { revokeLicense(id: $id, reason: \"refund\") { id } }",
    ] {
        server.ok(&token, change, json!({ "id": license })).await;
    }
    let expected = [
        "license.created",
        "device.activated",
        "device.activated",
        "device.deactivated",
        "device.released",
        "license.updated",
        "license.suspended",
        "license.reinstated",
        "license.revoked",
    ];
    let received = arrivals(&receiver, "changes", expected.len()).await;
    let slug = vendor_slug(&server, &token).await;
    let mut bodies: Vec<Value> = received.iter().map(|e| body_of(e, &slug)).collect();
    bodies.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types, expected, "{bodies:?}");
    let object = |n: usize| &bodies[n]["data"]["object"];
    assert_eq!(object(3)["id"], first["data"]["activateDevice"]["device"]["id"]);
    assert_eq!(
        (&object(4)["id"], &object(4)["status"]),
        (&second_id, &json!("RELEASED"))
    );
    assert_eq!(object(5)["maxActivations"], 5);
    assert_eq!(
        (&object(8)["status"], &object(8)["statusReason"]),
        (&json!("REVOKED"), &json!("refund"))
    );
}
on_both_databases!(
    every_license_and_device_change_is_an_event_test,
    every_license_and_device_change_is_an_event
);

/// A receiver that fails its first three attempts gets the event on the fourth, with the same
/// id, after retries spaced about 5, 10 and 20 seconds (plus up to 20% jitter); no alert.
async fn failed_attempts_are_retried_with_backoff(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    let endpoint = hook(
        &server,
        &token,
        &receiver,
        "flaky",
        &["license.created"],
        json!({ "fail_first": 3 }),
    )
    .await;
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;
    server.ok(&token, ISSUE, json!({ "p": policy })).await;

    for (attempt, (low, high)) in [(1, (5, 6)), (2, (10, 12)), (3, (20, 24))] {
        // Recorded, and not yet claimed again (a claim counts the next attempt at once).
        let said = format!("HTTP 500: receiver says no (attempt {attempt})");
        let failed = only_delivery(&server, &endpoint, &format!("attempt {attempt} recorded"), |d| {
            d["attempts"] == attempt && d["lastError"] == said.as_str()
        })
        .await;
        assert_eq!(failed["status"], "PENDING", "{failed}");
        assert_eq!(failed["responseStatus"], 500, "{failed}");
        let next = time(&failed["nextAttemptAt"]);
        let wait = (next - time(&failed["updatedAt"])).num_milliseconds();
        assert!(
            (low * 1000..=high * 1000).contains(&wait),
            "retry {attempt} after {wait} ms, not {low}-{high} s: {failed}"
        );
        jump_clock_past(&server, next.with_timezone(&Utc));
    }
    let delivered = only_delivery(&server, &endpoint, "the fourth attempt delivered", |d| {
        d["status"] == "DELIVERED"
    })
    .await;
    assert_eq!(delivered["attempts"], 4);
    assert_eq!(delivered["responseStatus"], 200);
    assert!(delivered["lastError"].is_null(), "{delivered}");
    let received = receiver.received("flaky").await;
    assert_eq!(received.len(), 4, "{received:?}");
    assert!(
        received
            .iter()
            .all(|e| e["event_id"] == delivered["eventId"] && e["verified"] == true)
    );
    let alerts = server
        .ok(&token, "{ alerts(first: 100) { nodes { kind } } }", json!({}))
        .await;
    assert!(
        !alerts["alerts"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "WEBHOOK_FAILED"),
        "{alerts}"
    );
}
on_both_databases!(
    failed_attempts_are_retried_with_backoff_test,
    failed_attempts_are_retried_with_backoff
);

/// A receiver down for the whole three-day window: each delivery ends FAILED with the refused
/// connection as its error, and staff get one WEBHOOK_FAILED alert for the endpoint, not one
/// per delivery.
async fn a_receiver_down_for_three_days_fails_with_one_alert(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let nobody = format!("http://127.0.0.1:{}/hooks/down", free_port());
    let created = server
        .ok(
            &token,
            CREATE,
            json!({ "in": { "url": nobody, "events": ["license.created"] } }),
        )
        .await;
    let endpoint = created["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;
    for _ in 0..2 {
        server.ok(&token, ISSUE, json!({ "p": policy })).await;
    }
    let tried = eventually(WAIT, "both deliveries tried", || async {
        let log = deliveries(&server, &token, &endpoint).await;
        (log.len() == 2
            && log
                .iter()
                .all(|d| d["attempts"].as_i64() >= Some(1) && d["lastError"].is_string()))
        .then_some(log)
    })
    .await;
    for delivery in &tried {
        assert_eq!(delivery["status"], "PENDING", "{delivery}");
        assert!(delivery["responseStatus"].is_null(), "{delivery}");
        let error = delivery["lastError"].as_str().unwrap();
        assert!(
            error.to_lowercase().contains("connect"),
            "the refused connection is named: {error}"
        );
    }
    server.set_clock_offset(3 * 86_400 + 120);
    let failed = eventually(WAIT, "both deliveries FAILED", || async {
        let log = deliveries(&server, &token, &endpoint).await;
        log.iter().all(|d| d["status"] == "FAILED").then_some(log)
    })
    .await;
    assert!(
        failed
            .iter()
            .all(|d| d["nextAttemptAt"].is_null() && d["deliveredAt"].is_null())
    );
    let alerts = server
        .ok(
            &token,
            "{ alerts(first: 100, unacknowledgedOnly: true) { nodes { kind message } } }",
            json!({}),
        )
        .await;
    let webhook_alerts: Vec<&Value> = alerts["alerts"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "WEBHOOK_FAILED")
        .collect();
    assert_eq!(webhook_alerts.len(), 1, "one alert per endpoint: {alerts}");
    assert!(
        webhook_alerts[0]["message"].as_str().unwrap().contains(&nobody),
        "{alerts}"
    );
}
on_both_databases!(
    a_receiver_down_for_three_days_fails_with_one_alert_test,
    a_receiver_down_for_three_days_fails_with_one_alert
);

/// Nothing is lost to SIGKILL: an event written just before the API is killed is delivered by
/// a worker started later; a worker killed while its POST is open leaves the delivery to the
/// next one once the lease lapses: the same event id, exactly one duplicate.
async fn sigkill_loses_nothing_and_duplicates_at_most_once(backend: Backend) {
    let (_redis, queue) = worker_queue(backend);
    let mut env = vec![("WORKERS", "off")];
    env.extend(queue.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut server = TestServer::start_with(backend, &env).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    let endpoint = hook(&server, &token, &receiver, "killed", &["license.created"], json!({})).await;
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;

    // The API dies right after answering; nothing is sent yet (no worker).
    server.ok(&token, ISSUE, json!({ "p": policy })).await;
    server.kill_and_restart().await;
    let worker = worker_on(&server, &queue, &[]);
    let first = arrivals(&receiver, "killed", 1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["verified"], true);
    drop(worker);

    // The worker dies with the POST open.
    receiver.configure("killed", json!({ "delay": 8 })).await;
    server.ok(&token, ISSUE, json!({ "p": policy })).await;
    let mut worker = worker_on(&server, &queue, &[]);
    let open = eventually(WAIT, "the second event's POST open", || async {
        let log = receiver.received("killed").await;
        (log.len() == 2 && log[1]["answered"].is_null()).then(|| log[1].clone())
    })
    .await;
    worker.kill();
    receiver.configure("killed", json!({ "delay": 0 })).await;
    server.set_clock_offset(35);
    let _worker = worker_on(&server, &queue, &[]);
    let delivered = eventually(WAIT, "the second event delivered after the lease", || async {
        deliveries(&server, &token, &endpoint)
            .await
            .into_iter()
            .find(|d| d["eventId"] == open["event_id"] && d["status"] == "DELIVERED")
    })
    .await;
    assert_eq!(delivered["attempts"], 2, "{delivered}");
    let received = receiver.received("killed").await;
    let copies = received.iter().filter(|e| e["event_id"] == open["event_id"]).count();
    assert_eq!(copies, 2, "one duplicate, no more: {received:?}");
    assert_eq!(received.len(), 3, "{received:?}");
}
on_both_databases!(
    sigkill_loses_nothing_test,
    sigkill_loses_nothing_and_duplicates_at_most_once
);

/// 200 events queued for an endpoint that takes 2 s per answer do not delay an event for
/// another endpoint; the slow one never has more than four requests open at once.
async fn a_slow_endpoint_does_not_delay_a_fast_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    hook(
        &server,
        &token,
        &receiver,
        "slow",
        &["license.created"],
        json!({ "delay": 2 }),
    )
    .await;
    hook(&server, &token, &receiver, "fast", &["device.activated"], json!({})).await;
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;
    let mut key = String::new();
    for _ in 0..200 {
        key = server.ok(&token, ISSUE, json!({ "p": policy })).await["issueLicense"]["key"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    arrivals(&receiver, "slow", 4).await;
    activate(&server, &key, "fp-fast", components("fast")).await;
    arrivals(&receiver, "fast", 1).await;
    let slow = receiver.received("slow").await;
    assert!(
        slow.len() <= 100,
        "the fast endpoint waited for {} slow deliveries",
        slow.len()
    );
    let mut open_at_once = 0;
    for entry in &slow {
        let arrived = entry["arrived"].as_f64().unwrap();
        let open = slow
            .iter()
            .filter(|other| {
                other["arrived"].as_f64().unwrap() <= arrived
                    && other["finished"].as_f64().is_none_or(|finished| finished > arrived)
            })
            .count();
        open_at_once = open_at_once.max(open);
    }
    assert!(
        (1..=4).contains(&open_at_once),
        "{open_at_once} requests open at once to the slow endpoint"
    );
}
on_both_databases!(
    a_slow_endpoint_does_not_delay_a_fast_one_test,
    a_slow_endpoint_does_not_delay_a_fast_one
);

/// Twenty slow endpoints (the most a vendor may have) with a backlog each: the sender has 64
/// slots, so sixteen endpoints fill them at first; as slots free up the endpoints served least
/// recently go first, so the last four get their first delivery after one answer time, not
/// only once the first sixteen have drained.
async fn busy_endpoints_share_the_sender(backend: Backend) {
    let (_redis, queue) = worker_queue(backend);
    let mut env = vec![("WORKERS", "off")];
    env.extend(queue.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let server = TestServer::start_with(backend, &env).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    let delay = 3.0;
    let names: Vec<String> = (0..20).map(|n| format!("busy{n:02}")).collect();
    for name in &names {
        hook(
            &server,
            &token,
            &receiver,
            name,
            &["license.created"],
            json!({ "delay": delay }),
        )
        .await;
    }
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;
    for _ in 0..8 {
        server.ok(&token, ISSUE, json!({ "p": policy })).await;
    }
    // One worker finds the whole backlog at once: sixteen endpoints take all 64 slots.
    let _worker = worker_on(&server, &queue, &[]);
    let mut first_arrivals = Vec::new();
    for name in &names {
        let first = arrivals(&receiver, name, 1).await;
        first_arrivals.push(first[0]["arrived"].as_f64().unwrap());
    }
    let earliest = first_arrivals.iter().copied().fold(f64::INFINITY, f64::min);
    let latest = first_arrivals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Served in order, the last four would wait two answer times (8 events, 4 at a time).
    assert!(
        latest - earliest < delay * 1.5,
        "an endpoint waited {:.1} s for its first delivery while others were served: {:?}",
        latest - earliest,
        first_arrivals
            .iter()
            .map(|t| format!("{:.1}", t - earliest))
            .collect::<Vec<_>>()
    );
}
on_both_databases!(busy_endpoints_share_the_sender_test, busy_endpoints_share_the_sender);

/// A device that stops heartbeating arrives as `device.dead`, and the staff alert it raised as
/// `alert.raised`, both about that device.
async fn a_dead_device_and_its_alert_arrive(backend: Backend) {
    let server = TestServer::start_with(backend, &[("HEARTBEAT_SWEEP_SECS", "1")]).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    hook(
        &server,
        &token,
        &receiver,
        "deaths",
        &["device.dead", "alert.raised"],
        json!({}),
    )
    .await;
    let (_, _, key) = license_with_policy(&server, &token, "maxActivations: 2, heartbeatIntervalSeconds: 60").await;
    let activation = activate(&server, &key, "fp-silent", components("silent")).await;
    let device = activation["data"]["activateDevice"]["device"]["id"].clone();
    assert!(device.is_string(), "{activation}");
    server.set_clock_offset(3600);
    let received = eventually(WAIT, "device.dead and alert.raised", || async {
        let got = receiver.received("deaths").await;
        let types = types(&got);
        (types.iter().any(|t| t == "device.dead") && types.iter().any(|t| t == "alert.raised")).then_some(got)
    })
    .await;
    let slug = vendor_slug(&server, &token).await;
    for entry in &received {
        let body = body_of(entry, &slug);
        let object = &body["data"]["object"];
        match body["type"].as_str().unwrap() {
            "device.dead" => assert_eq!((&object["id"], &object["status"]), (&device, &json!("DEAD")), "{body}"),
            _ => assert_eq!(
                (&object["deviceId"], &object["kind"]),
                (&device, &json!("DEVICE_DEAD")),
                "{body}"
            ),
        }
    }
}
on_both_databases!(
    a_dead_device_and_its_alert_arrive_test,
    a_dead_device_and_its_alert_arrive
);

/// Billing changes reach integrations: each change of a subscription's state is one
/// `subscription.changed` (a repeated webhook or a reconciliation that finds nothing new is
/// none), and what it did to the license arrives as `license.suspended`, `license.reinstated`
/// and, for a paid period that moves the expiry later, `license.renewed`.
async fn billing_changes_arrive_as_events(backend: Backend) {
    let b = BillingFixture::start(backend, 0).await;
    let receiver = WebhookReceiver::start();
    let slug = vendor_slug(&b.server, &b.owner).await;
    let endpoint = hook(
        &b.server,
        &b.owner,
        &receiver,
        "billing",
        &["subscription.changed", "license.*"],
        json!({}),
    )
    .await;
    let first_end = b.subscribe("sub_hook", "active", 30);
    let (license, _) = b.issue(Some("sub_hook")).await;
    b.until(&license, "the link", |l| {
        tests::synced(l) && l["billing"]["status"] == "ACTIVE"
    })
    .await;

    b.stripe.set("sub_hook", |s| s["status"] = json!("canceled"));
    let canceled = tests::subscription_event(
        "evt_hook_cancel",
        "customer.subscription.deleted",
        &b.stripe.get("sub_hook").unwrap(),
    );
    for _ in 0..2 {
        assert!(b.deliver(&canceled).await.0.is_success());
    }
    b.until(&license, "the cancellation", |l| l["status"] == "SUSPENDED")
        .await;
    b.sync().await;

    b.subscribe("sub_hook", "active", 60);
    assert!(
        b.deliver(&tests::invoice_event(
            "evt_hook_paid",
            "invoice.paid",
            "sub_hook",
            "cus_initech"
        ))
        .await
        .0
        .is_success()
    );
    b.until(&license, "the reinstatement", |l| l["status"] == "ACTIVE")
        .await;
    let last_end = b.subscribe("sub_hook", "active", 90);
    assert!(
        b.deliver(&tests::invoice_event(
            "evt_hook_paid2",
            "invoice.paid",
            "sub_hook",
            "cus_initech"
        ))
        .await
        .0
        .is_success()
    );
    b.until(&license, "the renewal", |l| tests::expires(l) == last_end.timestamp())
        .await;

    let received = eventually(WAIT, "license.renewed", || async {
        let got = receiver.received("billing").await;
        types(&got).iter().any(|t| t == "license.renewed").then_some(got)
    })
    .await;
    // Every event up to the renewal has its delivery by now (fan-out goes in event order).
    let log = deliveries(&b.server, &b.owner, &endpoint).await;
    let changes = log.iter().filter(|d| d["eventType"] == "subscription.changed").count();
    assert_eq!(changes, 4, "linked, canceled, active again, a new period: {log:?}");
    let received = if received.len() < log.len() {
        arrivals(&receiver, "billing", log.len()).await
    } else {
        received
    };
    let mut bodies: Vec<Value> = received.iter().map(|e| body_of(e, &slug)).collect();
    bodies.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let subscriptions: Vec<(String, i64)> = bodies
        .iter()
        .filter(|b| b["type"] == "subscription.changed")
        .map(|b| {
            let object = &b["data"]["object"];
            assert_eq!(object["externalId"], "sub_hook", "{b}");
            assert_eq!(object["licenseIds"], json!([license]), "{b}");
            (
                object["status"].as_str().unwrap().to_owned(),
                time(&object["currentPeriodEnd"]).timestamp(),
            )
        })
        .collect();
    let statuses: Vec<&str> = subscriptions.iter().map(|(status, _)| status.as_str()).collect();
    assert_eq!(
        statuses,
        ["ACTIVE", "CANCELED", "ACTIVE", "ACTIVE"],
        "{subscriptions:?}"
    );
    assert_eq!(subscriptions[0].1, first_end.timestamp());
    assert_eq!(subscriptions[3].1, last_end.timestamp());
    let license_events: Vec<&str> = bodies
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .filter(|t| ["license.suspended", "license.reinstated", "license.renewed"].contains(t))
        .collect();
    assert_eq!(
        license_events,
        ["license.suspended", "license.reinstated", "license.renewed"],
        "{bodies:?}"
    );
    let suspended = bodies.iter().find(|b| b["type"] == "license.suspended").unwrap();
    assert_eq!(suspended["data"]["object"]["statusReason"], "billing:canceled");
    assert_eq!(suspended["data"]["object"]["billingSubscriptionId"], "sub_hook");
}
on_both_databases!(billing_changes_arrive_as_events_test, billing_changes_arrive_as_events);

/// In production, endpoints must be `https` to public addresses: loopback, private,
/// link-local (cloud metadata) and `http` URLs are refused and nothing is saved, unless
/// `WEBHOOK_ALLOW_PRIVATE_TARGETS=true`. The sender checks again: a strict worker refuses an
/// endpoint a permissive API saved (`http`, and a name that resolves to loopback) without
/// connecting, and a permissive one delivers it.
async fn production_refuses_private_targets(backend: Backend) {
    let receiver = WebhookReceiver::start();
    let strict = TestServer::start_with(backend, &[("LICENSING_ENV", "production")]).await;
    let port = receiver.port;
    for url in [
        format!("http://127.0.0.1:{port}/hooks/p"),
        format!("https://127.0.0.1:{port}/hooks/p"),
        format!("https://localhost:{port}/hooks/p"),
        "https://169.254.169.254/latest/meta-data/".to_owned(),
        "https://10.1.2.3/hooks".to_owned(),
        "https://[::1]/hooks".to_owned(),
        "ftp://example.com/hooks".to_owned(),
    ] {
        let res = strict
            .gql(
                Some(&strict.owner_token),
                CREATE,
                json!({ "in": { "url": url, "events": ["*"] } }),
            )
            .await;
        assert_eq!(error_code(&res), Some("INVALID_INPUT"), "{url}: {res}");
    }
    let endpoints = strict
        .ok(&strict.owner_token, "{ webhookEndpoints { id } }", json!({}))
        .await;
    assert_eq!(endpoints["webhookEndpoints"], json!([]));
    drop(strict);

    let (_redis, queue) = worker_queue(backend);
    let mut env = vec![
        ("LICENSING_ENV", "production"),
        ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ("WORKERS", "off"),
    ];
    env.extend(queue.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let server = TestServer::start_with(backend, &env).await;
    let token = server.owner_token.clone();
    let plain = hook(&server, &token, &receiver, "plain", &["license.created"], json!({})).await;
    let tls_url = format!("https://localhost:{port}/hooks/tls");
    let created = server
        .ok(
            &token,
            CREATE,
            json!({ "in": { "url": tls_url, "events": ["license.created"] } }),
        )
        .await;
    let by_name = created["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;
    server.ok(&token, ISSUE, json!({ "p": policy })).await;

    let mut strict_worker = worker_on(&server, &queue, &[("LICENSING_ENV", "production")]);
    let refused_plain = only_delivery(&server, &plain, "the strict worker refuses http", |d| {
        d["lastError"].is_string()
    })
    .await;
    assert!(
        refused_plain["lastError"].as_str().unwrap().contains("https"),
        "{refused_plain}"
    );
    let refused_name = only_delivery(&server, &by_name, "the strict worker refuses localhost", |d| {
        d["lastError"].is_string()
    })
    .await;
    assert!(
        refused_name["lastError"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{refused_name}"
    );
    for delivery in [&refused_plain, &refused_name] {
        assert_eq!(delivery["status"], "PENDING", "{delivery}");
        assert!(delivery["responseStatus"].is_null(), "{delivery}");
    }
    strict_worker.kill();
    assert!(
        receiver.received("plain").await.is_empty(),
        "the strict worker sent nothing"
    );
    assert!(
        receiver.received("tls").await.is_empty(),
        "the strict worker connected nowhere"
    );

    let _permissive = worker_on(
        &server,
        &queue,
        &[
            ("LICENSING_ENV", "production"),
            ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ],
    );
    // Past any retry the strict worker scheduled in its few seconds (5, 10, 20 s...).
    server.set_clock_offset(300);
    only_delivery(&server, &plain, "the permissive worker delivers", |d| {
        d["status"] == "DELIVERED"
    })
    .await;
    let received = receiver.received("plain").await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["verified"], true);
}
on_both_databases!(
    production_refuses_private_targets_test,
    production_refuses_private_targets
);
