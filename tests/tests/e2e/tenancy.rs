//! Vendor isolation, walked over the whole schema: vendor B's token used on vendor A's ids
//! answers NOT_FOUND (or an empty result), never shows A's data, and changes nothing of A's.
//! The test fails when a new query or mutation is added without a case here.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tests::{Backend, TestServer, error_code, on_both_databases, seed};

/// How B's call on A's ids must end.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An error with code NOT_FOUND.
    NotFound,
    /// Success, but only with B's own data.
    OwnDataOnly,
    /// An error with code FORBIDDEN (device-only calls made with a staff token).
    Forbidden,
    /// An error with code INVALID_FILE (a file naming another vendor's device).
    InvalidFile,
}

/// Everything of vendor A that B must neither see nor change.
const SNAPSHOT: &str = r#"{
  viewer { vendor { id name alertEmails } }
  signingKeys { kid active }
  products(first: 10) { totalCount nodes { id name code } }
  policies(first: 10) { totalCount nodes { id name maxActivations } }
  customers(first: 10) { totalCount nodes { id externalId name email } }
  licenses(first: 10) { totalCount nodes { id key status version expiresAt maxActivations entitlements metadata } }
  apiTokens(first: 10) { totalCount nodes { id name revokedAt } }
  staffUsers(first: 10) { totalCount nodes { id email passwordSet } }
  devices(first: 10) { totalCount nodes { id status holdsSeat } }
  alerts(first: 10) { totalCount nodes { id acknowledgedAt } }
  anomalies(first: 10) { totalCount nodes { id status lastSeenAt note } }
  licenses2: licenses(first: 10) { nodes { usage { meter used lifetimeUsed } } }
  auditEvents(first: 1) { totalCount }
  webhookEndpoints { id url events enabled description }
  webhookDeliveries(first: 10) { totalCount nodes { id eventId endpointId } }
}"#;

async fn isolation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let a = server.owner_token.clone();
    let s = seed(&server, &a).await;
    let a_token_id = server
        .ok(
            &a,
            "mutation { createApiToken(input: {name: \"erp\", role: INTEGRATION}) { apiToken { id } } }",
            json!({}),
        )
        .await["createApiToken"]["apiToken"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a_user_id = server.ok(&a, "{ staffUsers { nodes { id } } }", json!({})).await["staffUsers"]["nodes"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a_audit_id = server
        .ok(&a, "{ auditEvents(first: 1) { nodes { id } } }", json!({}))
        .await["auditEvents"]["nodes"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A device on a full license (which raises an alert) in vendor A.
    let (_, _, full_key) = tests::license_with_policy(&server, &a, "maxActivations: 1").await;
    let a_device = tests::activate(&server, &full_key, "a-device", json!([])).await["data"]["activateDevice"]["device"]
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a_alert = server.ok(&a, "{ alerts { nodes { id } } }", json!({})).await["alerts"]["nodes"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // An activation request for A's license, as A's customer would send it to A.
    let a_request = tests::activation_request(&full_key, 9, "plant", Default::default());
    // An offline device of A's and the deactivation file it would write.
    let (_, _, hybrid_key) =
        tests::license_with_policy(&server, &a, "deploymentMode: HYBRID, meters: [{code: \"calls\"}]").await;
    let a_offline = server
        .ok(
            &a,
            "mutation($r: String!) { generateOfflineLicense(request: $r) { licenseFile } }",
            json!({ "r": tests::activation_request(&hybrid_key, 10, "lab", Default::default()) }),
        )
        .await;
    let a_deactivation = tests::deactivation_file(
        10,
        a_offline["generateOfflineLicense"]["licenseFile"].as_str().unwrap(),
        &[("calls", 3)],
    );
    let a_report = tests::usage_report_file(
        10,
        a_offline["generateOfflineLicense"]["licenseFile"].as_str().unwrap(),
        &[("calls", 2)],
    );
    // An anomaly of A's: the same ledger record 1 signed with other content (a fork) after
    // the first report was counted.
    let a_first_report = server
        .ok(
            &a,
            "mutation($f: String!) { importUsageReport(file: $f) { acceptedRecords } }",
            json!({ "f": a_report }),
        )
        .await;
    assert_eq!(
        a_first_report["importUsageReport"]["acceptedRecords"], 1,
        "{a_first_report}"
    );
    let a_fork = tests::usage_report_file(
        10,
        a_offline["generateOfflineLicense"]["licenseFile"].as_str().unwrap(),
        &[("calls", 5)],
    );
    let a_anomaly = server
        .ok(
            &a,
            "mutation($f: String!) { importUsageReport(file: $f) { anomalies { id } } }",
            json!({ "f": a_fork }),
        )
        .await["importUsageReport"]["anomalies"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A's webhook endpoint (nobody listens there) and the delivery of A's next event.
    let a_hook_url = format!("http://127.0.0.1:{}/a-hooks", tests::free_port());
    let a_hook = server
        .ok(
            &a,
            "mutation($u: String!) { createWebhookEndpoint(input: {url: $u, events: [\"license.created\"]}) { endpoint { id } } }",
            json!({ "u": a_hook_url }),
        )
        .await["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tests::license_with_policy(&server, &a, "maxActivations: 1").await;
    let (a_delivery, a_event) =
        tests::eventually(std::time::Duration::from_secs(60), "A's webhook delivery", || async {
            let log = server
                .ok(
                    &a,
                    "{ webhookDeliveries(first: 1) { nodes { id eventId } } }",
                    json!({}),
                )
                .await;
            let node = log["webhookDeliveries"]["nodes"][0].clone();
            node["id"]
                .as_str()
                .map(|id| (id.to_owned(), node["eventId"].as_str().unwrap().to_owned()))
        })
        .await;
    let (_, b) = server.create_vendor("Vendor B", "vendor-b", "owner@b.test");
    // B has a catalog of its own, so mutations that need one of B's ids can be tried with A's.
    let b_seed = seed(&server, &b).await;

    let before = server.ok(&a, SNAPSHOT, json!({})).await;
    let a_secrets: Vec<String> = {
        let mut v = vec![
            s.product.clone(),
            s.policy.clone(),
            s.customer.clone(),
            s.license.clone(),
            s.key.clone(),
            a_token_id.clone(),
            a_user_id.clone(),
            a_audit_id.clone(),
            a_device.clone(),
            a_alert.clone(),
            a_anomaly.clone(),
            full_key.clone(),
            a_hook.clone(),
            a_hook_url.clone(),
            a_delivery.clone(),
            a_event.clone(),
        ];
        v.extend(
            before["signingKeys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned()),
        );
        v.push(before["viewer"]["vendor"]["id"].as_str().unwrap().to_owned());
        v
    };

    let l = json!({ "id": s.license });
    let cases: Vec<(&str, &str, Value, Expect)> = vec![
        // Queries.
        (
            "viewer",
            "{ viewer { vendor { id name } } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "signingKeys",
            "{ signingKeys { kid publicKeyPem } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "products",
            "{ products { nodes { id } } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "product",
            "query($id: ID!) { product(id: $id) { id } }",
            json!({ "id": s.product }),
            Expect::OwnDataOnly,
        ),
        (
            "policies",
            "query($p: ID) { policies(productId: $p) { totalCount nodes { id } } }",
            json!({ "p": s.product }),
            Expect::OwnDataOnly,
        ),
        (
            "policy",
            "query($id: ID!) { policy(id: $id) { id } }",
            json!({ "id": s.policy }),
            Expect::OwnDataOnly,
        ),
        (
            "customers",
            "{ customers(search: \"Acme\") { nodes { id } } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "customer",
            "query($id: ID) { customer(id: $id) { id } }",
            json!({ "id": s.customer }),
            Expect::OwnDataOnly,
        ),
        (
            "licenses",
            "query($c: ID, $p: ID, $k: String) { a: licenses(filter: {customerId: $c}) { nodes { id } } b: licenses(filter: {productId: $p}) { nodes { id } } c: licenses(filter: {search: $k}) { nodes { id } } }",
            json!({ "c": s.customer, "p": s.product, "k": s.key }),
            Expect::OwnDataOnly,
        ),
        (
            "license",
            "query($id: ID, $k: String) { a: license(id: $id) { id } b: license(key: $k) { id } }",
            json!({ "id": s.license, "k": s.key }),
            Expect::OwnDataOnly,
        ),
        (
            "auditEvents",
            "query($t: ID, $a: ID) { a: auditEvents(targetId: $t) { nodes { id } } b: auditEvents(actorId: $a) { nodes { id } } }",
            json!({ "t": s.license, "a": a_token_id }),
            Expect::OwnDataOnly,
        ),
        (
            "apiTokens",
            "{ apiTokens { nodes { id } } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "staffUsers",
            "{ staffUsers { nodes { id } } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        // Mutations.
        (
            "updateVendorSettings",
            "mutation { updateVendorSettings(input: {name: \"B renamed\"}) { id } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "rotateSigningKey",
            "mutation { rotateSigningKey { kid } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "createProduct",
            "mutation { createProduct(input: {name: \"Pro\", code: \"pro2\"}) { id } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "createPolicy",
            "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"x\"}) { id } }",
            json!({ "p": s.product }),
            Expect::NotFound,
        ),
        (
            "upsertCustomer",
            "mutation { upsertCustomer(input: {externalId: \"C-1\", name: \"Mine\"}) { id } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "issueLicense",
            "mutation($p: ID!) { issueLicense(input: {policyId: $p}) { id } }",
            json!({ "p": s.policy }),
            Expect::NotFound,
        ),
        (
            "issueLicense/customer",
            "mutation($p: ID!, $c: ID) { issueLicense(input: {policyId: $p, customerId: $c}) { id } }",
            json!({ "p": b_seed.policy, "c": s.customer }),
            Expect::NotFound,
        ),
        (
            "updateLicense",
            "mutation($id: ID!) { updateLicense(input: {id: $id, maxActivations: 99}) { id } }",
            l.clone(),
            Expect::NotFound,
        ),
        (
            "renewLicense",
            "mutation($id: ID!) { renewLicense(id: $id) { id } }",
            l.clone(),
            Expect::NotFound,
        ),
        (
            "suspendLicense",
            "mutation($id: ID!) { suspendLicense(id: $id) { id } }",
            l.clone(),
            Expect::NotFound,
        ),
        (
            "reinstateLicense",
            "mutation($id: ID!) { reinstateLicense(id: $id) { id } }",
            l.clone(),
            Expect::NotFound,
        ),
        (
            "revokeLicense",
            "mutation($id: ID!) { revokeLicense(id: $id) { id } }",
            l.clone(),
            Expect::NotFound,
        ),
        (
            "createApiToken",
            "mutation { createApiToken(input: {name: \"b\", role: READ_ONLY}) { apiToken { id } } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "revokeApiToken",
            "mutation($id: ID!) { revokeApiToken(id: $id) { id } }",
            json!({ "id": a_token_id }),
            Expect::NotFound,
        ),
        (
            "createStaffUser",
            "mutation { createStaffUser(input: {email: \"owner@localhost\", role: READ_ONLY}) { id } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "setStaffPassword",
            "mutation($id: ID!) { setStaffPassword(userId: $id, password: \"a long password\") { id } }",
            json!({ "id": a_user_id }),
            Expect::NotFound,
        ),
        (
            "updateStaffUser",
            "mutation($id: ID!) { updateStaffUser(id: $id, disabled: true) { id } }",
            json!({ "id": a_user_id }),
            Expect::NotFound,
        ),
        ("logout", "mutation { logout }", json!({}), Expect::OwnDataOnly),
        (
            "devices",
            "query($l: ID) { devices(filter: {licenseId: $l}) { totalCount nodes { id } } }",
            json!({ "l": s.license }),
            Expect::OwnDataOnly,
        ),
        (
            "device",
            "query($id: ID!) { device(id: $id) { id } }",
            json!({ "id": a_device }),
            Expect::OwnDataOnly,
        ),
        ("alerts", "{ alerts { nodes { id } } }", json!({}), Expect::OwnDataOnly),
        (
            "anomalies",
            "{ anomalies { totalCount nodes { id explanation } } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "anomaly",
            "query($id: ID!) { anomaly(id: $id) { id explanation } }",
            json!({ "id": a_anomaly }),
            Expect::OwnDataOnly,
        ),
        (
            "billingDrift",
            "{ billingDrift { totalCount nodes { id explanation license { id } } } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "billingSyncRuns",
            "{ billingSyncRuns { totalCount nodes { id subscriptionsSeen } } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "syncBilling",
            "mutation { syncBilling { id finishedAt } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "acknowledgeAnomaly",
            "mutation($id: ID!) { acknowledgeAnomaly(id: $id, note: \"mine\") { id } }",
            json!({ "id": a_anomaly }),
            Expect::NotFound,
        ),
        (
            "adjustUsage",
            "mutation($l: ID!) { adjustUsage(input: {licenseId: $l, meter: \"calls\", delta: 5, reason: \"x\", idempotencyKey: \"k\"}) { used } }",
            json!({ "l": s.license }),
            Expect::NotFound,
        ),
        (
            "importUsageReport",
            "mutation($f: String!) { importUsageReport(file: $f) { acceptedRecords } }",
            json!({ "f": a_report }),
            Expect::InvalidFile,
        ),
        (
            "recordUsage",
            "mutation { recordUsage(input: {meter: \"calls\", quantity: 1, idempotencyKey: \"k\"}) { used } }",
            json!({}),
            Expect::Forbidden,
        ),
        (
            "emails",
            "{ emails { nodes { id to subject } } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "generateOfflineLicense",
            "mutation($r: String!) { generateOfflineLicense(request: $r) { licenseFile } }",
            json!({ "r": a_request }),
            Expect::NotFound,
        ),
        (
            "exportLicenseFile",
            "mutation($d: ID!) { exportLicenseFile(deviceId: $d) }",
            json!({ "d": a_device }),
            Expect::NotFound,
        ),
        (
            "importDeactivation",
            "mutation($f: String!) { importDeactivation(file: $f) { acceptedRecords } }",
            json!({ "f": a_deactivation }),
            Expect::InvalidFile,
        ),
        (
            "releaseDevice",
            "mutation($id: ID!) { releaseDevice(id: $id) { id } }",
            json!({ "id": a_device }),
            Expect::NotFound,
        ),
        (
            "acknowledgeAlert",
            "mutation($id: ID!) { acknowledgeAlert(id: $id) { id } }",
            json!({ "id": a_alert }),
            Expect::NotFound,
        ),
        (
            "webhookEndpoints",
            "{ webhookEndpoints { id url } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "webhookDeliveries",
            "query($e: ID) { webhookDeliveries(endpointId: $e) { totalCount nodes { id eventId } } }",
            json!({ "e": a_hook }),
            Expect::OwnDataOnly,
        ),
        (
            "webhookDeliveries/all",
            "{ webhookDeliveries { totalCount nodes { id eventId } } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "createWebhookEndpoint",
            "mutation { createWebhookEndpoint(input: {url: \"http://127.0.0.1:9/b-hooks\", events: [\"*\"]}) { endpoint { id } } }",
            json!({}),
            Expect::OwnDataOnly,
        ),
        (
            "updateWebhookEndpoint",
            "mutation($id: ID!) { updateWebhookEndpoint(id: $id, enabled: false, url: \"http://127.0.0.1:9/stolen\") { id } }",
            json!({ "id": a_hook }),
            Expect::NotFound,
        ),
        (
            "deleteWebhookEndpoint",
            "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { id } }",
            json!({ "id": a_hook }),
            Expect::NotFound,
        ),
        (
            "redeliverWebhook",
            "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { id } }",
            json!({ "id": a_delivery }),
            Expect::NotFound,
        ),
        (
            "heartbeat",
            "mutation { heartbeat { licenseVersion } }",
            json!({}),
            Expect::Forbidden,
        ),
        (
            "fetchLicenseFile",
            "mutation { fetchLicenseFile }",
            json!({}),
            Expect::Forbidden,
        ),
        (
            "checkOutDevice",
            "mutation { checkOutDevice(ttlSeconds: 3600) }",
            json!({}),
            Expect::Forbidden,
        ),
        (
            "checkInDevice",
            "mutation { checkInDevice { id } }",
            json!({}),
            Expect::Forbidden,
        ),
        (
            "deactivateDevice",
            "mutation { deactivateDevice { id } }",
            json!({}),
            Expect::Forbidden,
        ),
    ];

    for (name, query, vars, expect) in &cases {
        let res = server.gql(Some(&b), query, vars.clone()).await;
        let text = res.to_string();
        for secret in &a_secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{name} leaked vendor A's {secret}: {text}"
            );
        }
        match expect {
            Expect::NotFound => assert_eq!(error_code(&res), Some("NOT_FOUND"), "{name}: {res}"),
            Expect::Forbidden => assert_eq!(error_code(&res), Some("FORBIDDEN"), "{name}: {res}"),
            Expect::InvalidFile => assert_eq!(error_code(&res), Some("INVALID_FILE"), "{name}: {res}"),
            Expect::OwnDataOnly => assert!(
                matches!(error_code(&res), None | Some("INVALID_INPUT")),
                "{name} should answer with B's data only: {res}"
            ),
        }
    }

    let after = server.ok(&a, SNAPSHOT, json!({})).await;
    assert_eq!(before, after, "vendor B changed nothing of vendor A's");

    // Every query and mutation of the schema has a case above.
    let schema = server
        .ok(
            &a,
            "{ __schema { queryType { fields { name } } mutationType { fields { name } } } }",
            json!({}),
        )
        .await;
    let mut fields = BTreeSet::new();
    for root in ["queryType", "mutationType"] {
        for f in schema["__schema"][root]["fields"].as_array().unwrap() {
            fields.insert(f["name"].as_str().unwrap().to_owned());
        }
    }
    let covered: BTreeSet<String> = cases
        .iter()
        .map(|(n, ..)| n.split('/').next().unwrap().to_owned())
        .collect();
    // Authenticated by what they carry (a password, a license key), not by a vendor's token;
    // their own tests cover them.
    let anonymous: BTreeSet<String> = ["login", "activateDevice", "validateLicense", "deviceKeyChallenge"]
        .map(str::to_owned)
        .into();
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !covered.contains(*f) && !anonymous.contains(*f))
        .collect();
    assert!(missing.is_empty(), "fields without a tenancy case: {missing:?}");
}
on_both_databases!(vendor_b_cannot_touch_vendor_a, isolation);
