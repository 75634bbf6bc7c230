//! Test data made through the public API (a seeded catalog, API tokens, licenses under a given
//! policy, activations) and the files a device writes or reads (activation requests,
//! deactivation files, verified license files).

use serde_json::{Value, json};

use crate::TestServer;

/// Ids of a small catalog made through the API: one product, policy, customer and license.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// Product id.
    pub product: String,
    /// Policy id (30-day duration, 5 seats, entitlement `pro`).
    pub policy: String,
    /// Customer id (external id `C-1`).
    pub customer: String,
    /// License id.
    pub license: String,
    /// The license key in full.
    pub key: String,
}

/// Creates a product, a policy, a customer and a license with `token`.
pub async fn seed(server: &TestServer, token: &str) -> Seeded {
    let product = server
        .ok(
            token,
            "mutation { createProduct(input: {name: \"Pro\", code: \"pro\"}) { id } }",
            json!({}),
        )
        .await["createProduct"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let policy = server
        .ok(
            token,
            "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"Annual\", durationSeconds: 2592000, maxActivations: 5, entitlements: [\"pro\"]}) { id } }",
            json!({ "p": product }),
        )
        .await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let customer = server
        .ok(token, "mutation { upsertCustomer(input: {externalId: \"C-1\", name: \"Acme\", email: \"ops@acme.test\"}) { id } }", json!({}))
        .await["upsertCustomer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let issued = server
        .ok(
            token,
            "mutation($p: ID!, $c: ID) { issueLicense(input: {policyId: $p, customerId: $c}) { id key } }",
            json!({ "p": policy, "c": customer }),
        )
        .await;
    Seeded {
        product,
        policy,
        customer,
        license: issued["issueLicense"]["id"].as_str().unwrap().to_owned(),
        key: issued["issueLicense"]["key"].as_str().unwrap().to_owned(),
    }
}

/// Creates an API token of `role` with `token` and returns its secret.
pub async fn api_token(server: &TestServer, token: &str, role: &str) -> String {
    let data = server
        .ok(
            token,
            "mutation($r: Role!) { createApiToken(input: {name: \"test\", role: $r}) { token } }",
            json!({ "r": role }),
        )
        .await;
    data["createApiToken"]["token"].as_str().unwrap().to_owned()
}

/// A fresh product and a policy under it built from `policy_fields` (GraphQL input fields,
/// e.g. `maxActivations: 3, floating: true`); returns (product id, policy id).
pub async fn product_and_policy(server: &TestServer, token: &str, policy_fields: &str) -> (String, String) {
    let code = format!("p{}", uuid::Uuid::now_v7().simple());
    let product = server
        .ok(
            token,
            "mutation($c: String!) { createProduct(input: {name: \"P\", code: $c}) { id } }",
            json!({ "c": code }),
        )
        .await["createProduct"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let query = format!(
        "mutation($p: ID!) {{ createPolicy(input: {{productId: $p, name: \"T\", {policy_fields}}}) {{ id }} }}"
    );
    let policy = server.ok(token, &query, json!({ "p": product })).await["createPolicy"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (product, policy)
}

/// A product and a policy built from `policy_fields` (as [`product_and_policy`]), and a
/// license under it; returns (policy id, license id, key).
pub async fn license_with_policy(server: &TestServer, token: &str, policy_fields: &str) -> (String, String, String) {
    let (_, policy) = product_and_policy(server, token, policy_fields).await;
    let license = server
        .ok(
            token,
            "mutation($p: ID!) { issueLicense(input: {policyId: $p}) { id key } }",
            json!({ "p": policy }),
        )
        .await;
    (
        policy,
        license["issueLicense"]["id"].as_str().unwrap().to_owned(),
        license["issueLicense"]["key"].as_str().unwrap().to_owned(),
    )
}

/// Four fingerprint components named mac, cpu, disk, hostid with values ending in `tag`.
#[must_use]
pub fn components(tag: &str) -> Value {
    json!([
        { "name": "mac", "value": format!("mac-{tag}") },
        { "name": "cpu", "value": format!("cpu-{tag}") },
        { "name": "disk", "value": format!("disk-{tag}") },
        { "name": "hostid", "value": format!("host-{tag}") },
    ])
}

/// The activation mutation, selecting the device, token and file.
pub const ACTIVATE: &str = "mutation($in: ActivateDeviceInput!) { activateDevice(input: $in) { deviceToken licenseFile device { id status } } }";

/// Activates `fingerprint` on `key` (anonymous, as the shipped software does).
pub async fn activate(server: &TestServer, key: &str, fingerprint: &str, components: Value) -> Value {
    server
        .gql(
            None,
            ACTIVATE,
            json!({ "in": { "licenseKey": key, "fingerprint": fingerprint, "components": components } }),
        )
        .await
}

/// Devices holding a seat of `license` (its `activeDevices`).
pub async fn active_devices(server: &TestServer, license: &str) -> i64 {
    let query = "query($id: ID) { license(id: $id) { activeDevices } }";
    server.ok(&server.owner_token, query, json!({ "id": license })).await["license"]["activeDevices"]
        .as_i64()
        .unwrap()
}

/// Verifies a license file with the vendor keys `signingKeys` lists, as any client would.
pub async fn verify_license_file(server: &TestServer, file: &str) -> protocol::license_file::LicensePayload {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let keys = server
        .ok(&server.owner_token, "{ signingKeys { kid publicKeyPem } }", json!({}))
        .await;
    let keys: Vec<(String, ed25519_dalek::VerifyingKey)> = keys["signingKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let pem = k["publicKeyPem"].as_str().unwrap();
            (
                k["kid"].as_str().unwrap().to_owned(),
                ed25519_dalek::VerifyingKey::from_public_key_pem(pem).unwrap(),
            )
        })
        .collect();
    protocol::license_file::verify(file, |kid| keys.iter().find(|(k, _)| k == kid).map(|(_, v)| *v))
        .expect("the file verifies")
}

/// An activation request for `key`, signed by the device key derived from `seed`, as the
/// client writes it.
#[must_use]
pub fn activation_request(
    key: &str,
    seed: u8,
    fingerprint: &str,
    components: protocol::fingerprint::Components,
) -> String {
    let device_key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let request = protocol::offline::ActivationRequest {
        format: protocol::offline::FORMAT,
        license_key: key.to_owned(),
        fingerprint: fingerprint.to_owned(),
        components,
        device_public_key: protocol::offline::encode_public_key(&device_key.verifying_key()),
        hostname: Some(format!("plant-{seed}")),
        platform: Some("linux-x86_64".into()),
        created_at: chrono::Utc::now(),
    };
    protocol::offline::write_request(&request, &device_key).unwrap()
}

/// The device a license file (from the offline portal) is bound to, its key derived from
/// `seed`, and one ledger record per `(meter, quantity)`, as the client writes them.
fn signed_ledger(
    seed: u8,
    license_file: &str,
    usage: &[(&str, i64)],
) -> (
    ed25519_dalek::SigningKey,
    protocol::license_file::LicensePayload,
    Vec<protocol::ledger::LedgerRecord>,
) {
    let device_key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let payload: protocol::license_file::LicensePayload =
        protocol::envelope::open(protocol::license_file::LABEL, license_file)
            .unwrap()
            .payload()
            .unwrap();
    let mut records: Vec<protocol::ledger::LedgerRecord> = Vec::new();
    for (meter, quantity) in usage {
        let record = protocol::ledger::append(
            &payload.device.id,
            &device_key,
            records.last(),
            meter,
            *quantity,
            chrono::Utc::now(),
        );
        records.push(record);
    }
    (device_key, payload, records)
}

/// A deactivation file for the device a license file (from the offline portal) is bound to,
/// signed by the device key derived from `seed` and carrying one ledger record per
/// `(meter, quantity)`, as the client writes it.
#[must_use]
pub fn deactivation_file(seed: u8, license_file: &str, usage: &[(&str, i64)]) -> String {
    let (device_key, payload, records) = signed_ledger(seed, license_file, usage);
    let file = protocol::offline::DeactivationFile {
        format: protocol::offline::FORMAT,
        license_id: payload.license_id,
        device_id: payload.device.id,
        fingerprint: payload.device.fingerprint,
        license_file_time: payload.server_time,
        deactivated_at: chrono::Utc::now(),
        records,
    };
    protocol::offline::write(&file, &device_key).unwrap()
}

/// A usage report for the device a license file is bound to, as [`deactivation_file`] builds
/// its ledger.
#[must_use]
pub fn usage_report_file(seed: u8, license_file: &str, usage: &[(&str, i64)]) -> String {
    let (device_key, payload, records) = signed_ledger(seed, license_file, usage);
    let report = protocol::offline::UsageReport {
        format: protocol::offline::FORMAT,
        license_id: payload.license_id,
        device_id: payload.device.id,
        created_at: chrono::Utc::now(),
        records,
    };
    protocol::offline::write(&report, &device_key).unwrap()
}
