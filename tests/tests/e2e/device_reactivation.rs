//! Re-activating a live fingerprint, end to end against the real binary:
//!
//! - it revokes the old device token at once, and a second one within 24 hours opens a
//!   DEVICE_REACTIVATION anomaly with its ANOMALY alert;
//! - `requireDeviceKeyProof`: a re-activation without a valid proof of the old key is refused
//!   and changes nothing; a signature over a `deviceKeyChallenge` nonce lets it through;
//!   released by staff, the device activates afresh;
//! - an activate/deactivate loop over new fingerprints keeps the license's device rows at the
//!   cap, pruning the oldest unreferenced released rows only; one that leaves usage behind on
//!   every device is refused a new device past twice the cap;
//! - a live device without a key cannot be taken over under `requireDeviceKeyProof`.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{Value, json};
use tests::{Backend, TestServer, error_code, on_both_databases};

use crate::device_scope::activate_with;
const HEARTBEAT: &str = "mutation { heartbeat { device { id } } }";

async fn reactivation_anomalies(server: &TestServer, device: &str) -> Value {
    server
        .ok(
            &server.owner_token,
            "query($d: ID) { anomalies(filter: {kinds: [DEVICE_REACTIVATION], deviceId: $d}) { totalCount nodes { device { id } explanation evidence } } }",
            json!({ "d": device }),
        )
        .await["anomalies"]
        .clone()
}

async fn reactivation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, license, key) = tests::license_with_policy(&server, &server.owner_token, "maxActivations: 2").await;
    let first =
        activate_with(&server, json!({ "licenseKey": key, "fingerprint": "m" })).await["data"]["activateDevice"]
            .clone();
    let old = first["deviceToken"].as_str().unwrap().to_owned();
    let device = first["device"]["id"].as_str().unwrap().to_owned();
    server.ok(&old, HEARTBEAT, json!({})).await;

    // The same fingerprint again (a reinstall, or a takeover): the old token is dead at once.
    let second =
        activate_with(&server, json!({ "licenseKey": key, "fingerprint": "m" })).await["data"]["activateDevice"]
            .clone();
    assert_eq!(second["device"]["id"], device.as_str(), "same fingerprint, same device");
    let new = second["deviceToken"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(
        error_code(&server.gql(Some(&old), HEARTBEAT, json!({})).await),
        Some("UNAUTHENTICATED")
    );
    server.ok(&new, HEARTBEAT, json!({})).await;
    assert_eq!(tests::active_devices(&server, &license).await, 1, "no second seat");
    assert_eq!(
        reactivation_anomalies(&server, &device).await["totalCount"],
        0,
        "one re-activation is normal"
    );

    // A second one within 24 hours is flagged for staff, with an ANOMALY alert.
    server.set_clock_offset(3600);
    let third =
        activate_with(&server, json!({ "licenseKey": key, "fingerprint": "m" })).await["data"]["activateDevice"]
            .clone();
    assert_eq!(
        error_code(&server.gql(Some(&new), HEARTBEAT, json!({})).await),
        Some("UNAUTHENTICATED")
    );
    server
        .ok(third["deviceToken"].as_str().unwrap(), HEARTBEAT, json!({}))
        .await;
    let anomalies = reactivation_anomalies(&server, &device).await;
    assert_eq!(anomalies["totalCount"], 1, "{anomalies}");
    assert_eq!(anomalies["nodes"][0]["device"]["id"], device.as_str());
    assert_eq!(anomalies["nodes"][0]["evidence"]["fingerprint"], "m");
    let alerts = server
        .ok(
            &server.owner_token,
            "{ alerts(first: 100) { nodes { kind deviceId } } }",
            json!({}),
        )
        .await;
    let anomaly_alerts = alerts["alerts"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "ANOMALY" && a["deviceId"] == device.as_str())
        .count();
    assert_eq!(anomaly_alerts, 1, "{alerts}");

    // A day later, a re-activation is normal again (the open anomaly is not repeated).
    server.set_clock_offset(3600 + 2 * 86_400);
    let later = activate_with(&server, json!({ "licenseKey": key, "fingerprint": "m" })).await;
    assert!(later.get("errors").is_none(), "{later}");
    let anomalies = reactivation_anomalies(&server, &device).await;
    assert_eq!(anomalies["totalCount"], 1, "{anomalies}");
}
on_both_databases!(reactivation_revokes_the_old_token_and_repeats_are_flagged, reactivation);

fn device_key(seed: u8) -> (SigningKey, String) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let public = STANDARD.encode(key.verifying_key().as_bytes());
    (key, public)
}

async fn challenge(server: &TestServer, key: &str, fingerprint: &str) -> String {
    let res = server
        .gql(
            None,
            "mutation($k: String!, $f: String!) { deviceKeyChallenge(licenseKey: $k, fingerprint: $f) { nonce expiresAt } }",
            json!({ "k": key, "f": fingerprint }),
        )
        .await;
    assert!(res.get("errors").is_none(), "{res}");
    res["data"]["deviceKeyChallenge"]["nonce"].as_str().unwrap().to_owned()
}

fn proof(signer: &SigningKey, nonce: &str, new_public: &str) -> Value {
    let message = format!("licensing-device-key-proof\n{nonce}\n{new_public}");
    json!({ "nonce": nonce, "signature": STANDARD.encode(signer.sign(message.as_bytes()).to_bytes()) })
}

async fn key_proof(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (policy, license, key) = tests::license_with_policy(
        &server,
        &server.owner_token,
        "maxActivations: 2, requireDeviceKeyProof: true",
    )
    .await;
    let shown = server
        .ok(
            &server.owner_token,
            "query($id: ID!) { policy(id: $id) { requireDeviceKeyProof } }",
            json!({ "id": policy }),
        )
        .await;
    assert_eq!(shown["policy"]["requireDeviceKeyProof"], true);
    let (old_key, old_public) = device_key(1);
    let (new_key, new_public) = device_key(2);
    let first = activate_with(
        &server,
        json!({ "licenseKey": key, "fingerprint": "k", "devicePublicKey": old_public }),
    )
    .await;
    let token = first["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let device = first["data"]["activateDevice"]["device"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let audit = server.audit_count(&server.owner_token).await;

    // Another key without a proof, with a proof by the wrong key, with a foreign nonce, with
    // a proof made for another public key: refused, nothing changed.
    let nonce = challenge(&server, &key, "k").await;
    let other_nonce = challenge(&server, &key, "other-fp").await;
    let unknown_nonce = challenge(&server, "NOPE-NOPE-NOPE-NOPE", "k").await;
    for (why, input) in [
        (
            "no proof",
            json!({ "licenseKey": key, "fingerprint": "k", "devicePublicKey": new_public }),
        ),
        (
            "same public key, no proof",
            json!({ "licenseKey": key, "fingerprint": "k", "devicePublicKey": old_public }),
        ),
        (
            "signed by the new key",
            json!({ "licenseKey": key, "fingerprint": "k", "devicePublicKey": new_public, "keyProof": proof(&new_key, &nonce, &new_public) }),
        ),
        (
            "nonce of another fingerprint",
            json!({ "licenseKey": key, "fingerprint": "k", "devicePublicKey": new_public, "keyProof": proof(&old_key, &other_nonce, &new_public) }),
        ),
        (
            "nonce of an unknown key",
            json!({ "licenseKey": key, "fingerprint": "k", "devicePublicKey": new_public, "keyProof": proof(&old_key, &unknown_nonce, &new_public) }),
        ),
        (
            "proof for another public key",
            json!({ "licenseKey": key, "fingerprint": "k", "devicePublicKey": new_public, "keyProof": proof(&old_key, &nonce, &old_public) }),
        ),
        (
            "garbage",
            json!({ "licenseKey": key, "fingerprint": "k", "devicePublicKey": new_public, "keyProof": { "nonce": "1.2.3", "signature": "!!" } }),
        ),
    ] {
        let res = activate_with(&server, input).await;
        assert_eq!(error_code(&res), Some("FORBIDDEN"), "{why}: {res}");
        let message = res["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("release") && message.contains("keyProof"),
            "{why}: {message}"
        );
        server.ok(&token, HEARTBEAT, json!({})).await;
    }
    assert_eq!(
        server.audit_count(&server.owner_token).await,
        audit,
        "refusals changed nothing"
    );
    assert_eq!(tests::active_devices(&server, &license).await, 1);

    // A valid proof by the old key: the new key takes over, the old token is dead.
    let accepted = activate_with(
        &server,
        json!({ "licenseKey": key, "fingerprint": "k", "devicePublicKey": new_public, "keyProof": proof(&old_key, &nonce, &new_public) }),
    )
    .await;
    assert!(accepted.get("errors").is_none(), "{accepted}");
    assert_eq!(accepted["data"]["activateDevice"]["device"]["id"], device.as_str());
    let new_token = accepted["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        error_code(&server.gql(Some(&token), HEARTBEAT, json!({})).await),
        Some("UNAUTHENTICATED")
    );
    server.ok(&new_token, HEARTBEAT, json!({})).await;
    // The nonce served once: the same proof again (even by the right key now) is refused.
    let replay = activate_with(
        &server,
        json!({ "licenseKey": key, "fingerprint": "k", "devicePublicKey": new_public, "keyProof": proof(&new_key, &nonce, &new_public) }),
    )
    .await;
    assert_eq!(error_code(&replay), Some("FORBIDDEN"), "{replay}");

    // Released by staff, the device activates afresh with any key, no proof needed.
    server
        .ok(
            &server.owner_token,
            "mutation($id: ID!) { releaseDevice(id: $id) { status } }",
            json!({ "id": device }),
        )
        .await;
    let (_, third_public) = device_key(3);
    let fresh = activate_with(
        &server,
        json!({ "licenseKey": key, "fingerprint": "k", "devicePublicKey": third_public }),
    )
    .await;
    assert!(fresh.get("errors").is_none(), "{fresh}");
    assert_eq!(
        error_code(&server.gql(Some(&new_token), HEARTBEAT, json!({})).await),
        Some("UNAUTHENTICATED")
    );

    // A live device activated without a key has none to prove: a takeover binding a key of its
    // own is refused too, and changes nothing.
    let keyless = activate_with(&server, json!({ "licenseKey": key, "fingerprint": "keyless" })).await;
    let keyless_token = keyless["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = server.audit_count(&server.owner_token).await;
    let (_, thief_public) = device_key(4);
    let takeover = activate_with(
        &server,
        json!({ "licenseKey": key, "fingerprint": "keyless", "devicePublicKey": thief_public }),
    )
    .await;
    assert_eq!(error_code(&takeover), Some("FORBIDDEN"), "{takeover}");
    assert_eq!(server.audit_count(&server.owner_token).await, before);
    server.ok(&keyless_token, HEARTBEAT, json!({})).await;
}
on_both_databases!(
    require_device_key_proof_refuses_a_takeover_and_accepts_a_proof,
    key_proof
);

async fn device_rows(server: &TestServer, license: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = server
            .ok(
                &server.owner_token,
                "query($l: ID, $a: String) { devices(first: 100, after: $a, filter: {licenseId: $l}) { nodes { id fingerprint status } pageInfo { hasNextPage endCursor } } }",
                json!({ "l": license, "a": after }),
            )
            .await;
        all.extend(page["devices"]["nodes"].as_array().unwrap().iter().cloned());
        if page["devices"]["pageInfo"]["hasNextPage"] != true {
            return all;
        }
        after = page["devices"]["pageInfo"]["endCursor"].clone();
    }
}

async fn row_cap(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, license, key) = tests::license_with_policy(
        &server,
        &server.owner_token,
        "maxActivations: 1, meters: [{code: \"scans\"}]",
    )
    .await;
    let cycles = 105;
    let mut ids = Vec::new();
    for i in 0..cycles {
        let act = activate_with(
            &server,
            json!({ "licenseKey": key, "fingerprint": format!("loop-{i}") }),
        )
        .await;
        assert!(act.get("errors").is_none(), "cycle {i}: {act}");
        let token = act["data"]["activateDevice"]["deviceToken"]
            .as_str()
            .unwrap()
            .to_owned();
        ids.push(
            act["data"]["activateDevice"]["device"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        if i == 0 {
            // The first device leaves usage behind: its row is evidence and is kept.
            server
                .ok(&token, "mutation { recordUsage(input: {meter: \"scans\", quantity: 1, idempotencyKey: \"u-1\"}) { used } }", json!({}))
                .await;
        }
        server
            .ok(&token, "mutation { deactivateDevice { status } }", json!({}))
            .await;
    }
    let rows = device_rows(&server, &license).await;
    let kept = 101;
    assert_eq!(rows.len(), kept, "100 released rows plus the referenced one");
    let present: BTreeSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(present.contains(ids[0].as_str()), "the row with usage is kept");
    for pruned in &ids[1..cycles - 100] {
        assert!(
            !present.contains(pruned.as_str()),
            "oldest unreferenced released rows go first"
        );
    }
    assert!(present.contains(ids[cycles - 1].as_str()));
    // What pointed at pruned rows still reads: the audit log, the license's usage.
    let audit = server
        .ok(
            &server.owner_token,
            "query($t: ID) { auditEvents(targetId: $t) { totalCount } }",
            json!({ "t": ids[1] }),
        )
        .await;
    assert!(audit["auditEvents"]["totalCount"].as_i64().unwrap() >= 2, "{audit}");
    let usage = server
        .ok(
            &server.owner_token,
            "query($id: ID) { license(id: $id) { activeDevices usage { used } } }",
            json!({ "id": license }),
        )
        .await;
    assert_eq!(usage["license"]["usage"][0]["used"], 1);
    assert_eq!(usage["license"]["activeDevices"], 0);
    // Still one seat, still activatable.
    let again = activate_with(&server, json!({ "licenseKey": key, "fingerprint": "loop-1" })).await;
    assert!(again.get("errors").is_none(), "{again}");
    assert_eq!(device_rows(&server, &license).await.len(), kept, "a new row prunes one");
}
on_both_databases!(an_activate_deactivate_loop_stays_at_the_row_cap, row_cap);

/// A loop that leaves usage behind on every device (so no released row may be pruned) ends at
/// twice the cap: the next new device is refused until staff look; known devices still work.
async fn evidence_cap(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, license, key) = tests::license_with_policy(
        &server,
        &server.owner_token,
        "maxActivations: 1, meters: [{code: \"scans\"}]",
    )
    .await;
    // Twice `domain::devices::MIN_RELEASED_KEPT` (a one-seat license keeps 100 released rows).
    let hard_cap: usize = 200;
    let mut refused = None;
    for i in 0..=hard_cap + 1 {
        let act = activate_with(&server, json!({ "licenseKey": key, "fingerprint": format!("e-{i}") })).await;
        if act.get("errors").is_some() {
            refused = Some((i, act));
            break;
        }
        let token = act["data"]["activateDevice"]["deviceToken"]
            .as_str()
            .unwrap()
            .to_owned();
        server
            .ok(&token, "mutation($k: String!) { recordUsage(input: {meter: \"scans\", quantity: 1, idempotencyKey: $k}) { used } }", json!({ "k": format!("u-{i}") }))
            .await;
        server
            .ok(&token, "mutation { deactivateDevice { status } }", json!({}))
            .await;
    }
    let Some((at, refusal)) = refused else {
        panic!("the device rows of one license grew past {hard_cap} released rows");
    };
    assert_eq!(error_code(&refusal), Some("ACTIVATION_LIMIT_REACHED"), "{refusal}");
    assert_eq!(at, hard_cap + 1, "refused once more than twice the cap are kept");
    let rows = device_rows(&server, &license).await;
    assert_eq!(rows.len(), hard_cap + 1, "the refused activation added no row");
}
on_both_databases!(evidence_cannot_grow_the_device_rows_without_bound, evidence_cap);

const REPORT: &str =
    "mutation($f: String!) { importUsageReport(file: $f) { acceptedRecords duplicateRecords anomalies { kind } } }";

async fn used(server: &TestServer, license: &str) -> i64 {
    server
        .ok(
            &server.owner_token,
            "query($id: ID) { license(id: $id) { usage { used } } }",
            json!({ "id": license }),
        )
        .await["license"]["usage"][0]["used"]
        .as_i64()
        .unwrap()
}

/// A re-activation with another device key starts a new usage ledger: the new key's record 1
/// is neither a continuation nor a fork of the old chain, and the old key signs nothing more.
async fn new_key_new_ledger(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner_token.clone();
    let (_, license, key) =
        tests::license_with_policy(&server, &owner, "maxActivations: 2, meters: [{code: \"scans\"}]").await;
    let activate_file = |public: String| {
        let server = &server;
        let key = key.clone();
        async move {
            let res = server
                .gql(
                    None,
                    "mutation($in: ActivateDeviceInput!) { activateDevice(input: $in) { licenseFile } }",
                    json!({ "in": { "licenseKey": key, "fingerprint": "r", "devicePublicKey": public } }),
                )
                .await;
            res["data"]["activateDevice"]["licenseFile"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let first = activate_file(device_key(21).1).await;
    let receipt = server
        .ok(
            &owner,
            REPORT,
            json!({ "f": tests::usage_report_file(21, &first, &[("scans", 2)]) }),
        )
        .await;
    assert_eq!(receipt["importUsageReport"]["acceptedRecords"], 1, "{receipt}");
    let acked = tests::verify_license_file(&server, &activate_file(device_key(21).1).await).await;
    assert_eq!(
        acked.usage_ack.map(|a| a.seq),
        Some(1),
        "the same key goes on with its ledger"
    );

    let second = activate_file(device_key(22).1).await;
    let payload = tests::verify_license_file(&server, &second).await;
    assert!(
        payload.usage_ack.is_none(),
        "a new key, a new ledger: nothing acknowledged"
    );
    let receipt = server
        .ok(
            &owner,
            REPORT,
            json!({ "f": tests::usage_report_file(22, &second, &[("scans", 3)]) }),
        )
        .await;
    assert_eq!(
        receipt["importUsageReport"],
        json!({ "acceptedRecords": 1, "duplicateRecords": 0, "anomalies": [] }),
        "record 1 of the new key is new usage, not a fork"
    );
    assert_eq!(used(&server, &license).await, 5);
    let stale = server
        .gql(
            Some(&owner),
            REPORT,
            json!({ "f": tests::usage_report_file(21, &first, &[("scans", 7)]) }),
        )
        .await;
    assert!(
        stale.get("errors").is_some(),
        "the old key no longer signs for the device: {stale}"
    );
    assert_eq!(used(&server, &license).await, 5, "nothing of it counted");
}
on_both_databases!(a_new_device_key_starts_a_new_ledger, new_key_new_ledger);
