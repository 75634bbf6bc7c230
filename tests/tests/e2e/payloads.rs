//! Snapshots of what the server signs, so a renamed, added or dropped field fails a test
//! instead of a customer's client. Ids, keys, times and signatures are redacted (a redacted
//! time is still checked to be RFC 3339); the same snapshot holds on SQLite and PostgreSQL.
//! A missing or changed snapshot fails under `CI=true` (insta then writes nothing); locally
//! insta writes a `.snap.new` beside it (accept it with `cargo insta review`, or rerun with
//! `INSTA_UPDATE=always`).

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use insta::internals::{Content, ContentPath};
use serde_json::Value;
use tests::{Backend, TestServer, activate, components, license_with_policy, on_both_databases, verify_license_file};

/// Redacts a timestamp after checking that it is one.
fn time(value: Content, path: ContentPath<'_>) -> &'static str {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string: {value:?}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "{path} is not an RFC 3339 time: {text}"
    );
    "[time]"
}

/// The envelope and the payload of the license file an online activation returns, as JSON on
/// the wire.
async fn license_file(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, _, key) = license_with_policy(
        &server,
        &token,
        "durationSeconds: 2592000, maxActivations: 2, heartbeatIntervalSeconds: 3600, minComponentMatches: 3, \
         entitlements: [\"pro\", \"export\"], meters: [{code: \"scans\", limit: 100, resetPeriod: MONTHLY, overageLimit: 10}]",
    )
    .await;
    let activated = activate(&server, &key, "snapshot-box", components("box")).await;
    let file = activated["data"]["activateDevice"]["licenseFile"]
        .as_str()
        .unwrap_or_else(|| panic!("activation failed: {activated}"));
    // Signed by a key `signingKeys` lists; then read as the JSON it is on the wire.
    verify_license_file(&server, file).await;
    let label = protocol::license_file::LABEL;
    let envelope: Value = serde_json::from_slice(&protocol::armour::decode(label, file).unwrap()).unwrap();
    let payload: Value = protocol::envelope::open(label, file).unwrap().payload().unwrap();

    insta::assert_json_snapshot!("license_file_envelope", envelope, {
        ".kid" => "[key id]",
        ".payload" => "[payload]",
        ".sig" => "[signature]",
    });
    insta::assert_json_snapshot!("license_file_payload", payload, {
        ".license_id" => "[id]",
        ".policy" => "[id]",
        ".product" => "[product code]",
        ".device.id" => "[id]",
        ".license_key_hint" => "[key hint]",
        ".issued_at" => insta::dynamic_redaction(time),
        ".expires_at" => insta::dynamic_redaction(time),
        ".refresh_by" => insta::dynamic_redaction(time),
        ".server_time" => insta::dynamic_redaction(time),
    });
}
on_both_databases!(license_file_keeps_its_fields, license_file);
