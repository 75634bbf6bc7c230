//! The offline portal and refresh files: an activation request written with the `protocol`
//! crate (as the client will) becomes a license file bound to that device; the seat rules hold;
//! bad files change nothing.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use protocol::fingerprint::{components, fingerprint};
use serde_json::json;
use tests::{
    Backend, TestServer, activate, activation_request, active_devices, error_code, license_with_policy,
    on_both_databases, verify_license_file,
};

const PORTAL: &str = "mutation($r: String!) { generateOfflineLicense(request: $r) { licenseFile device { id status offline holdsSeat fingerprint } } }";

fn request(key: &str, machine: u8) -> String {
    let comps = components([
        ("mac", format!("mac-{machine}").as_str()),
        ("disk", "disk-1"),
        ("hostid", "h"),
    ])
    .unwrap();
    activation_request(key, machine, &fingerprint(&comps), comps)
}

/// PRODUCT.md scenario 2, server side: request file in, bound license file out, seat cap held.
async fn offline_portal(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "maxActivations: 2, deploymentMode: OFFLINE, minComponentMatches: 2",
    )
    .await;

    let first = request(&key, 1);
    let res = server.ok(&token, PORTAL, json!({ "r": first })).await["generateOfflineLicense"].clone();
    assert_eq!(res["device"]["status"], "ACTIVE");
    assert_eq!(res["device"]["offline"], true);
    let payload = verify_license_file(&server, res["licenseFile"].as_str().unwrap()).await;
    assert_eq!(payload.device.id, res["device"]["id"].as_str().unwrap());
    assert_eq!(
        payload.device.fingerprint,
        res["device"]["fingerprint"].as_str().unwrap()
    );
    assert_eq!(payload.min_component_matches, Some(2));
    assert_eq!(payload.device.components.get("hostid").map(String::as_str), Some("h"));
    // The same request again: the same device, no second seat.
    let again = server.ok(&token, PORTAL, json!({ "r": first })).await;
    assert_eq!(again["generateOfflineLicense"]["device"]["id"], res["device"]["id"]);
    assert_eq!(active_devices(&server, &license).await, 1);
    server.ok(&token, PORTAL, json!({ "r": request(&key, 2) })).await;
    let third = server.gql(Some(&token), PORTAL, json!({ "r": request(&key, 3) })).await;
    assert_eq!(error_code(&third), Some("ACTIVATION_LIMIT_REACHED"), "{third}");
    assert_eq!(active_devices(&server, &license).await, 2);
    // An OFFLINE license does not activate over the network.
    assert_eq!(
        error_code(&activate(&server, &key, "online", json!([])).await),
        Some("INVALID_INPUT")
    );

    // Refresh: the vendor extends the license and exports the device's file.
    server
        .ok(
            &token,
            "mutation($id: ID!) { updateLicense(input: {id: $id, expiresAt: \"2032-02-02T00:00:00Z\"}) { version } }",
            json!({ "id": license }),
        )
        .await;
    let refreshed = server
        .ok(
            &token,
            "mutation($d: ID!) { exportLicenseFile(deviceId: $d) }",
            json!({ "d": res["device"]["id"] }),
        )
        .await["exportLicenseFile"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload = verify_license_file(&server, &refreshed).await;
    assert_eq!(payload.version, 2);
    assert_eq!(
        payload.expires_at.map(|t| t.to_rfc3339()),
        Some("2032-02-02T00:00:00+00:00".to_owned())
    );
}
on_both_databases!(offline_portal_binds_files_to_requests, offline_portal);

/// Bad requests: tampered, not a request, for an ONLINE policy, for another vendor's key, or
/// from a caller without the right; each gets its code and changes nothing.
async fn bad_requests(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, _, key) = license_with_policy(&server, &token, "maxActivations: 2, deploymentMode: HYBRID").await;
    let (_, _, online_key) = license_with_policy(&server, &token, "maxActivations: 2").await;
    let good = request(&key, 1);

    let body: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap();
    let at = raw.len() / 2;
    raw[at] ^= 0x04;
    let tampered = protocol::armour::encode("ACTIVATION REQUEST", &raw);
    let (other_vendor_id, other_token) = server.create_vendor("Other", "other", "o@other.test");
    assert!(!other_vendor_id.is_empty());
    let before = server
        .ok(
            &token,
            "{ auditEvents { totalCount } devices { totalCount } }",
            json!({}),
        )
        .await;
    let cases: Vec<(&str, String, &str)> = vec![
        ("tampered", tampered, "INVALID_FILE"),
        (
            "not base64",
            "-----BEGIN ACTIVATION REQUEST-----\n%%%\n-----END ACTIVATION REQUEST-----".into(),
            "INVALID_FILE",
        ),
        (
            "a license file",
            "-----BEGIN LICENSE FILE-----\ne30=\n-----END LICENSE FILE-----".into(),
            "INVALID_FILE",
        ),
        ("empty", String::new(), "INVALID_FILE"),
        ("online policy", request(&online_key, 2), "INVALID_INPUT"),
        ("unknown key", request("AAAAA-AAAAA-AAAAA-AAAAA-AAAAA", 3), "NOT_FOUND"),
    ];
    for (why, file, code) in cases {
        let res = server.gql(Some(&token), PORTAL, json!({ "r": file })).await;
        assert_eq!(error_code(&res), Some(code), "{why}: {res}");
    }
    // Another vendor uploading our customer's request learns nothing and activates nothing.
    let res = server.gql(Some(&other_token), PORTAL, json!({ "r": good })).await;
    assert_eq!(error_code(&res), Some("NOT_FOUND"), "{res}");
    let read_only = tests::api_token(&server, &token, "READ_ONLY").await;
    assert_eq!(
        error_code(&server.gql(Some(&read_only), PORTAL, json!({ "r": good })).await),
        Some("FORBIDDEN")
    );
    let after = server
        .ok(
            &token,
            "{ auditEvents { totalCount } devices { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        after["devices"]["totalCount"], before["devices"]["totalCount"],
        "no refused request activated anything"
    );
    assert_eq!(
        after["auditEvents"]["totalCount"].as_i64().unwrap(),
        before["auditEvents"]["totalCount"].as_i64().unwrap() + 1,
        "only the READ_ONLY token's creation was audited"
    );
}
on_both_databases!(bad_activation_requests_change_nothing, bad_requests);

const IMPORT: &str = "mutation($f: String!) { importDeactivation(file: $f) { acceptedRecords duplicateRecords anomalies { kind explanation evidence device { id } } device { id status } } }";

/// A deactivation file for the device `license_file` is bound to, carrying `records`.
fn deactivation(seed: u8, license_file: &str, records: Vec<protocol::ledger::LedgerRecord>) -> String {
    let payload: protocol::license_file::LicensePayload =
        protocol::envelope::open(protocol::license_file::LABEL, license_file)
            .unwrap()
            .payload()
            .unwrap();
    let file = protocol::offline::DeactivationFile {
        format: protocol::offline::FORMAT,
        license_id: payload.license_id,
        device_id: payload.device.id,
        fingerprint: payload.device.fingerprint,
        license_file_time: payload.server_time,
        deactivated_at: chrono::Utc::now(),
        records,
    };
    protocol::offline::write(&file, &ed25519_dalek::SigningKey::from_bytes(&[seed; 32])).unwrap()
}

/// A deactivation whose ledger has a hole releases the seat but counts nothing, and flags a
/// LEDGER_GAP anomaly (with an ANOMALY alert); a deactivation file from an earlier activation
/// cannot release a later one; READ_ONLY cannot import.
async fn deactivation_problems(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "maxActivations: 1, deploymentMode: OFFLINE, meters: [{code: \"scans\", resetPeriod: MONTHLY}]",
    )
    .await;
    let req = request(&key, 5);
    let first = server.ok(&token, PORTAL, json!({ "r": req })).await["generateOfflineLicense"].clone();
    let first_file = first["licenseFile"].as_str().unwrap();
    let device_id = first["device"]["id"].as_str().unwrap();
    let device_key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let mut ledger: Vec<protocol::ledger::LedgerRecord> = Vec::new();
    for quantity in [2, 3, 4] {
        let record = protocol::ledger::append(
            device_id,
            &device_key,
            ledger.last(),
            "scans",
            quantity,
            chrono::Utc::now(),
        );
        ledger.push(record);
    }
    let read_only = tests::api_token(&server, &token, "READ_ONLY").await;
    let gap = deactivation(5, first_file, vec![ledger[0].clone(), ledger[2].clone()]);
    assert_eq!(
        error_code(&server.gql(Some(&read_only), IMPORT, json!({ "f": gap })).await),
        Some("FORBIDDEN")
    );
    // Files the device signed but whose ledger or names are wrong change nothing.
    let mut altered = ledger.clone();
    altered[1].quantity = 300;
    let mut wrong_license: protocol::offline::DeactivationFile =
        protocol::offline::peek(&deactivation(5, first_file, Vec::new())).unwrap();
    wrong_license.license_id = format!("{license}-other");
    let wrong_license = protocol::offline::write(&wrong_license, &device_key).unwrap();
    for (why, bad) in [
        ("altered record", deactivation(5, first_file, altered)),
        // The file's signature covers its records (one check per import, not one per record):
        // a file signed by any key but the device's is refused whole.
        (
            "file signed by another key",
            deactivation(6, first_file, ledger.clone()),
        ),
        ("other license", wrong_license),
    ] {
        let res = server.gql(Some(&token), IMPORT, json!({ "f": bad })).await;
        assert_eq!(error_code(&res), Some("INVALID_FILE"), "{why}: {res}");
    }
    assert_eq!(active_devices(&server, &license).await, 1);
    // A stale file written now but imported after a re-activation (below).
    let stale = deactivation(5, first_file, Vec::new());

    let receipt = server.ok(&token, IMPORT, json!({ "f": gap })).await["importDeactivation"].clone();
    assert_eq!(receipt["acceptedRecords"], 0, "{receipt}");
    assert_eq!(receipt["device"]["status"], "RELEASED");
    assert_eq!(receipt["anomalies"][0]["kind"], "LEDGER_GAP", "{receipt}");
    assert_eq!(receipt["anomalies"][0]["device"]["id"], device_id);
    assert_eq!(receipt["anomalies"][0]["evidence"]["uncounted_totals"]["scans"], 6);
    assert!(
        receipt["anomalies"][0]["explanation"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{receipt}"
    );
    let usage = server
        .ok(
            &token,
            "query($id: ID) { license(id: $id) { usage { used periodStart } } }",
            json!({ "id": license }),
        )
        .await;
    assert_eq!(usage["license"]["usage"][0]["used"], 0, "{usage}");
    assert!(
        usage["license"]["usage"][0]["periodStart"].is_string(),
        "a monthly meter names its period"
    );
    let alerts = server
        .ok(&token, "{ alerts { nodes { kind deviceId } } }", json!({}))
        .await;
    assert!(
        alerts["alerts"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "ANOMALY" && a["deviceId"] == device_id),
        "{alerts}"
    );

    // The machine activates again (same request, same device); the stale file cannot
    // release this activation and changes nothing.
    let again = server.ok(&token, PORTAL, json!({ "r": req })).await["generateOfflineLicense"].clone();
    assert_eq!(again["device"]["id"], device_id);
    let res = server.gql(Some(&token), IMPORT, json!({ "f": stale })).await;
    assert_eq!(error_code(&res), Some("INVALID_FILE"), "{res}");
    assert!(
        res["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("earlier activation"),
        "{res}"
    );
    assert_eq!(active_devices(&server, &license).await, 1);
    // A deactivation from the current activation, with the ledger continued, works.
    let current = deactivation(5, again["licenseFile"].as_str().unwrap(), ledger.clone());
    let receipt = server.ok(&token, IMPORT, json!({ "f": current })).await["importDeactivation"].clone();
    assert_eq!(receipt["acceptedRecords"], 3, "{receipt}");
    assert_eq!(active_devices(&server, &license).await, 0);
    let usage = server
        .ok(
            &token,
            "query($id: ID) { license(id: $id) { usage { used } } }",
            json!({ "id": license }),
        )
        .await;
    assert_eq!(usage["license"]["usage"][0]["used"], 9);
}
on_both_databases!(deactivation_ledger_problems_and_stale_files, deactivation_problems);
