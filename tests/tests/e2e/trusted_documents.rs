//! Trusted documents: `validateLicense` and `heartbeat` sent by `documentId` are answered by
//! the direct path, and every answer is the executor's, byte for byte — over every
//! `ValidationCode`, every heartbeat outcome and the errors on the way (the executor runs the
//! same text with one trailing space, which is not a trusted document). Requests the direct
//! path does not know exactly go to the executor; an unknown id is refused and changes nothing.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use protocol::trusted_documents::{HEARTBEAT, TrustedDocument, VALIDATE_LICENSE};
use serde_json::{Value, json};
use tests::{Backend, TestServer, activate, components, error_code, license_with_policy, on_both_databases};

const DIRECT: &str = "licensing_graphql_trusted_documents_total{path=\"direct\"}";
const EXECUTOR: &str = "licensing_graphql_trusted_documents_total{path=\"executor\"}";
const DAY: i64 = 86_400;

/// What two answers must agree on: everything, except the values that name "now" (the next
/// heartbeat is due an interval after each call; a rate limit's wait counts down; each request
/// has its own id), which are
/// replaced by their kind.
fn comparable(body: &str) -> String {
    let mut out = body.to_owned();
    for (key, end) in [
        ("\"nextHeartbeatDueAt\":\"", '"'),
        ("\"retryAfter\":", '}'),
        ("\"requestId\":\"", '"'),
    ] {
        if let Some(start) = out.find(key).map(|at| at + key.len())
            && let Some(len) = out[start..].find(end)
        {
            out.replace_range(start..start + len, "<now>");
        }
    }
    out
}

/// Sends `document` by id and by text (one trailing space: not trusted, so the executor runs
/// it) and asserts both answers are the same; returns the answer.
async fn both_paths(server: &TestServer, token: Option<&str>, document: TrustedDocument, variables: Value) -> Value {
    let by_id = json!({
        "documentId": document.id(),
        "operationName": document.operation_name,
        "variables": variables,
    });
    let by_text = json!({
        "query": format!("{} ", document.text),
        "operationName": document.operation_name,
        "variables": variables,
    });
    let direct = server.post_raw(token, &by_id).await;
    let executor = server.post_raw(token, &by_text).await;
    assert_eq!(
        comparable(&direct),
        comparable(&executor),
        "direct vs executor for {variables}"
    );
    serde_json::from_str(&direct).unwrap()
}

fn code(answer: &Value) -> &str {
    answer["data"]["validateLicense"]["code"].as_str().unwrap_or_default()
}

async fn validate_on_both_paths(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "maxActivations: 3, minComponentMatches: 3, entitlements: [\"pro\"], heartbeatIntervalSeconds: 600, floating: true",
    )
    .await;
    assert!(
        activate(&server, &key, "fp-a", components("a"))
            .await
            .get("errors")
            .is_none()
    );
    let mut one_swapped = components("a");
    one_swapped[2]["value"] = json!("disk-replaced");
    let mut two_swapped = one_swapped.clone();
    two_swapped[0]["value"] = json!("mac-replaced");
    let mut direct = 0.0;
    for (input, expected) in [
        (json!({ "licenseKey": key }), "VALID"),
        (
            json!({ "licenseKey": key, "fingerprint": "fp-a", "entitlements": ["pro"] }),
            "VALID",
        ),
        (
            json!({ "licenseKey": key, "fingerprint": "fp-a", "components": components("a"), "entitlements": null }),
            "VALID",
        ),
        (
            json!({ "licenseKey": "AAAAA-AAAAA-AAAAA-AAAAA-AAAAA", "fingerprint": "fp-a" }),
            "NOT_FOUND",
        ),
        (json!({ "licenseKey": "not a key" }), "NOT_FOUND"),
        (
            json!({ "licenseKey": key, "fingerprint": "fp-a", "entitlements": ["pro", "sso"] }),
            "ENTITLEMENT_MISSING",
        ),
        (
            json!({ "licenseKey": key, "fingerprint": "never-seen" }),
            "NOT_ACTIVATED",
        ),
        (
            json!({ "licenseKey": key, "fingerprint": "fp-a-new", "components": one_swapped }),
            "VALID",
        ),
        (
            json!({ "licenseKey": key, "fingerprint": "fp-a-newer", "components": two_swapped }),
            "FINGERPRINT_MISMATCH",
        ),
    ] {
        let answer = both_paths(&server, None, VALIDATE_LICENSE, json!({ "input": input })).await;
        assert_eq!(code(&answer), expected, "{input}: {answer}");
        direct += 1.0;
    }

    // Past the heartbeat deadline: dead at validation (the first call marks it).
    server.set_clock_offset(1300);
    let dead = both_paths(
        &server,
        None,
        VALIDATE_LICENSE,
        json!({ "input": { "licenseKey": key, "fingerprint": "fp-a" } }),
    )
    .await;
    assert_eq!(code(&dead), "HEARTBEAT_DEAD", "{dead}");
    server.set_clock_offset(0);
    direct += 1.0;

    server
        .ok(
            &token,
            "mutation($l: ID!) { suspendLicense(id: $l) { id } }",
            json!({ "l": license }),
        )
        .await;
    let suspended = both_paths(
        &server,
        None,
        VALIDATE_LICENSE,
        json!({ "input": { "licenseKey": key } }),
    )
    .await;
    assert_eq!(code(&suspended), "SUSPENDED");
    let (_, revoked, revoked_key) = license_with_policy(&server, &token, "maxActivations: 1").await;
    server
        .ok(
            &token,
            "mutation($l: ID!) { revokeLicense(id: $l) { id } }",
            json!({ "l": revoked }),
        )
        .await;
    let answer = both_paths(
        &server,
        None,
        VALIDATE_LICENSE,
        json!({ "input": { "licenseKey": revoked_key } }),
    )
    .await;
    assert_eq!(code(&answer), "REVOKED");
    let (_, expiring, expiring_key) = license_with_policy(&server, &token, "maxActivations: 1").await;
    server
        .ok(
            &token,
            "mutation($id: ID!) { updateLicense(input: {id: $id, expiresAt: \"2031-06-30T00:00:00Z\"}) { version } }",
            json!({ "id": expiring }),
        )
        .await;
    server.set_clock_offset(6 * 365 * DAY);
    let answer = both_paths(
        &server,
        None,
        VALIDATE_LICENSE,
        json!({ "input": { "licenseKey": expiring_key } }),
    )
    .await;
    assert_eq!(code(&answer), "EXPIRED");
    server.set_clock_offset(0);
    direct += 3.0;
    assert_eq!(
        server.metric(DIRECT).await,
        direct,
        "every call above took the direct path"
    );

    // Variables GraphQL coerces (one component for a list of them), a missing field, another
    // operation name: the executor answers, so both paths agree again.
    let executor = server.metric(EXECUTOR).await;
    let odd = [
        json!({ "input": { "licenseKey": key, "fingerprint": "fp-a", "components": { "name": "mac", "value": "x" } } }),
        json!({ "input": { "licenseKey": key, "extra": 1 } }),
        json!({}),
    ];
    for variables in &odd {
        both_paths(&server, None, VALIDATE_LICENSE, variables.clone()).await;
    }
    // A required field missing: INVALID_INPUT from both (the trusted document is not
    // re-validated, so the message is the resolver's rather than the validator's).
    let by_id: Value = serde_json::from_str(
        &server
            .post_raw(
                None,
                &json!({ "documentId": VALIDATE_LICENSE.id(), "variables": { "input": { "fingerprint": "fp-a" } } }),
            )
            .await,
    )
    .unwrap();
    assert_eq!(error_code(&by_id), Some("INVALID_INPUT"), "{by_id}");
    assert!(
        by_id["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ValidateLicenseInput"),
        "{by_id}"
    );
    let by_text = server
        .gql(
            None,
            VALIDATE_LICENSE.text,
            json!({ "input": { "fingerprint": "fp-a" } }),
        )
        .await;
    assert_eq!(error_code(&by_text), Some("INVALID_INPUT"), "{by_text}");
    assert_eq!(server.metric(DIRECT).await, direct, "none of them took the direct path");
    assert_eq!(server.metric(EXECUTOR).await, executor + 4.0);
    let renamed = server
        .post_raw(
            None,
            &json!({ "documentId": VALIDATE_LICENSE.id(), "operationName": "Other", "variables": { "input": { "licenseKey": key } } }),
        )
        .await;
    assert!(
        renamed.contains("INVALID_INPUT") && renamed.contains("Other"),
        "{renamed}"
    );

    // An unknown id, or an id with another text: refused before anything runs.
    for body in [
        json!({ "documentId": "sha256:0000", "variables": { "input": { "licenseKey": key } } }),
        json!({ "documentId": VALIDATE_LICENSE.id(), "query": "mutation { heartbeat { licenseVersion } }" }),
    ] {
        let refused: Value = serde_json::from_str(&server.post_raw(None, &body).await).unwrap();
        assert_eq!(error_code(&refused), Some("INVALID_INPUT"), "{refused}");
        assert!(
            refused["data"].is_null() && refused["errors"][0].get("path").is_none(),
            "{refused}"
        );
    }
}
on_both_databases!(
    validate_license_direct_path_matches_the_executor,
    validate_on_both_paths
);

fn device_token(activation: &Value) -> String {
    activation["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn heartbeat_on_both_paths(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, plain, plain_key) = license_with_policy(&server, &token, "maxActivations: 1").await;
    let (_, _, locked_key) =
        license_with_policy(&server, &token, "maxActivations: 2, heartbeatIntervalSeconds: 600").await;
    let (_, _, floating_key) = license_with_policy(
        &server,
        &token,
        "maxActivations: 1, heartbeatIntervalSeconds: 600, floating: true",
    )
    .await;
    let plain_device = device_token(&activate(&server, &plain_key, "p", json!([])).await);
    let locked_device = device_token(&activate(&server, &locked_key, "l", json!([])).await);
    let released_device = device_token(&activate(&server, &locked_key, "r", json!([])).await);
    let floating_device = device_token(&activate(&server, &floating_key, "f", json!([])).await);
    let beat = |answer: &Value| answer["data"]["heartbeat"].clone();

    // No heartbeat interval: nothing in the answer depends on the time.
    let answer = both_paths(&server, Some(&plain_device), HEARTBEAT, json!({})).await;
    assert_eq!(
        beat(&answer),
        json!({ "updateAvailable": false, "nextHeartbeatDueAt": null, "licenseVersion": 1 })
    );
    let answer = both_paths(&server, Some(&locked_device), HEARTBEAT, Value::Null).await;
    assert!(beat(&answer)["nextHeartbeatDueAt"].is_string(), "{answer}");
    // The license changed since the device's file.
    server
        .ok(
            &token,
            "mutation($id: ID!) { updateLicense(input: {id: $id, expiresAt: \"2031-06-30T00:00:00Z\"}) { version } }",
            json!({ "id": plain }),
        )
        .await;
    let answer = both_paths(&server, Some(&plain_device), HEARTBEAT, json!({})).await;
    assert_eq!(beat(&answer)["updateAvailable"], true, "{answer}");

    // No token, a forged one, a released device's.
    server
        .ok(&released_device, "mutation { deactivateDevice { id } }", json!({}))
        .await;
    for token in [None, Some("ldt_forged.1.abc"), Some(released_device.as_str())] {
        let answer = both_paths(&server, token, HEARTBEAT, json!({})).await;
        assert_eq!(error_code(&answer), Some("UNAUTHENTICATED"), "{answer}");
    }

    // Past the deadline: the node-locked device is revived, the floating one lost its seat.
    server.set_clock_offset(1300);
    let answer = both_paths(&server, Some(&locked_device), HEARTBEAT, json!({})).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    let answer = both_paths(&server, Some(&floating_device), HEARTBEAT, json!({})).await;
    assert_eq!(error_code(&answer), Some("FORBIDDEN"), "{answer}");
    server.set_clock_offset(0);

    // A suspended, then revoked, license: the license's code.
    server
        .ok(
            &token,
            "mutation($l: ID!) { suspendLicense(id: $l) { id } }",
            json!({ "l": plain }),
        )
        .await;
    let answer = both_paths(&server, Some(&plain_device), HEARTBEAT, json!({})).await;
    assert_eq!(error_code(&answer), Some("LICENSE_SUSPENDED"), "{answer}");
    server
        .ok(
            &token,
            "mutation($l: ID!) { revokeLicense(id: $l) { id } }",
            json!({ "l": plain }),
        )
        .await;
    let answer = both_paths(&server, Some(&plain_device), HEARTBEAT, json!({})).await;
    assert_eq!(error_code(&answer), Some("LICENSE_REVOKED"), "{answer}");

    // Past the device's heartbeat budget: RATE_LIMITED with retryAfter, from both.
    for _ in 0..60 {
        server
            .post_raw(Some(&locked_device), &json!({ "documentId": HEARTBEAT.id() }))
            .await;
    }
    let answer = both_paths(&server, Some(&locked_device), HEARTBEAT, json!({})).await;
    assert_eq!(error_code(&answer), Some("RATE_LIMITED"), "{answer}");
    assert!(answer["errors"][0]["extensions"]["retryAfter"].is_u64(), "{answer}");
    assert_eq!(
        server.metric(DIRECT).await,
        11.0 + 60.0,
        "every call above took the direct path"
    );
}
on_both_databases!(heartbeat_direct_path_matches_the_executor, heartbeat_on_both_paths);
