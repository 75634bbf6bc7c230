//! Devices online, end to end against the real binary: activation under the seat cap (also
//! when 150 devices race for 100 seats), validation codes, heartbeats and the update flag,
//! license files verified by an independent Ed25519 implementation. What happens to a device
//! afterwards (its token, death, check-out, release) is in `device_lifecycle.rs`.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure should stop the test loudly"
)]

use futures::future::join_all;
use serde_json::{Value, json};
use tests::{
    Backend, TestServer, activate, active_devices, components, error_code, license_with_policy, on_both_databases,
    verify_license_file,
};

pub(crate) const VALIDATE: &str = "mutation($in: ValidateLicenseInput!) { validateLicense(input: $in) { valid code detail license { id status } device { id status } } }";
pub(crate) const HEARTBEAT: &str =
    "mutation { heartbeat { nextHeartbeatDueAt licenseVersion updateAvailable device { id status lastSeenAt } } }";
pub(crate) const DAY: i64 = 86_400;

pub(crate) async fn validate(server: &TestServer, input: Value) -> Value {
    let res = server.gql(None, VALIDATE, json!({ "in": input })).await;
    assert!(res.get("errors").is_none(), "validateLicense never errors: {res}");
    res["data"]["validateLicense"].clone()
}

async fn limit_alerts(server: &TestServer) -> usize {
    let alerts = server
        .ok(
            &server.owner_token,
            "{ alerts(first: 100) { nodes { kind licenseId } } }",
            json!({}),
        )
        .await;
    alerts["alerts"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "ACTIVATION_LIMIT_REACHED")
        .count()
}

/// PRODUCT.md scenario 1: a 7-day trial for 100 servers.
async fn trial_100_servers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "durationSeconds: 604800, trial: true, maxActivations: 100, heartbeatIntervalSeconds: 3600",
    )
    .await;
    for batch in 0..10 {
        let calls = (0..10).map(|i| {
            let fp = format!("server-{}", batch * 10 + i);
            let comps = components(&fp);
            let server = &server;
            let key = key.clone();
            async move { activate(server, &key, &fp, comps).await }
        });
        for res in join_all(calls).await {
            assert!(res.get("errors").is_none(), "{res}");
            assert_eq!(res["data"]["activateDevice"]["device"]["status"], "ACTIVE");
        }
    }
    let shown = server
        .ok(
            &token,
            "query($id: ID) { license(id: $id) { activeDevices maxActivations devices(first: 1) { totalCount } } }",
            json!({ "id": license }),
        )
        .await;
    assert_eq!(shown["license"]["activeDevices"], 100);
    assert_eq!(shown["license"]["maxActivations"], 100);
    assert_eq!(shown["license"]["devices"]["totalCount"], 100);
    assert_eq!(limit_alerts(&server).await, 1, "filling the last seat raises one alert");

    for attempt in 0..3 {
        let refused = activate(&server, &key, &format!("server-extra-{attempt}"), components("x")).await;
        assert_eq!(error_code(&refused), Some("ACTIVATION_LIMIT_REACHED"), "{refused}");
    }
    assert_eq!(limit_alerts(&server).await, 1, "refusals after it add no alert");
    // An already activated server activating again takes no seat.
    let again = activate(&server, &key, "server-7", components("server-7")).await;
    assert!(again.get("errors").is_none(), "{again}");
    assert_eq!(active_devices(&server, &license).await, 100);

    let ok = validate(&server, json!({ "licenseKey": key, "fingerprint": "server-42" })).await;
    assert_eq!(
        (ok["valid"].as_bool(), ok["code"].as_str()),
        (Some(true), Some("VALID")),
        "{ok}"
    );
    server.set_clock_offset(8 * DAY);
    let expired = validate(&server, json!({ "licenseKey": key, "fingerprint": "server-42" })).await;
    assert_eq!(
        (expired["valid"].as_bool(), expired["code"].as_str()),
        (Some(false), Some("EXPIRED")),
        "{expired}"
    );
    assert!(expired["detail"].as_str().unwrap().contains("expired"));
    let late = activate(&server, &key, "late", components("late")).await;
    assert_eq!(error_code(&late), Some("LICENSE_EXPIRED"));
}
on_both_databases!(scenario_1_trial_for_100_servers, trial_100_servers);

/// 150 devices race for 100 seats; 50 copies of one device race with themselves.
async fn races(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(&server, &token, "maxActivations: 100").await;
    let calls = (0..150).map(|i| {
        let server = &server;
        let key = key.clone();
        async move { activate(server, &key, &format!("racer-{i}"), json!([])).await }
    });
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.get("errors").is_none()).count();
    let refused = results
        .iter()
        .filter(|r| error_code(r) == Some("ACTIVATION_LIMIT_REACHED"))
        .count();
    assert_eq!(
        (ok, refused),
        (100, 50),
        "exactly 100 win: {:?}",
        results
            .iter()
            .find(|r| r.get("errors").is_some() && error_code(r) != Some("ACTIVATION_LIMIT_REACHED"))
    );
    assert_eq!(active_devices(&server, &license).await, 100);
    let held = server
        .ok(
            &token,
            "query($l: ID) { devices(first: 1, filter: {licenseId: $l, status: ACTIVE}) { totalCount } }",
            json!({ "l": license }),
        )
        .await;
    assert_eq!(held["devices"]["totalCount"], 100, "seats in use == devices counted");
    assert_eq!(limit_alerts(&server).await, 1);

    let (_, single, single_key) = license_with_policy(&server, &token, "maxActivations: 5").await;
    let calls = (0..50).map(|_| {
        let server = &server;
        let key = single_key.clone();
        async move { activate(server, &key, "same-machine", components("same")).await }
    });
    let results = join_all(calls).await;
    let ids: Vec<&Value> = results
        .iter()
        .map(|r| &r["data"]["activateDevice"]["device"]["id"])
        .collect();
    assert!(
        ids.iter().all(|id| id.is_string() && *id == ids[0]),
        "one device: {results:?}"
    );
    assert_eq!(active_devices(&server, &single).await, 1);
}
on_both_databases!(races_for_seats_end_exactly_right, races);

/// Every ValidationCode, with details a person can act on.
async fn validation_codes(backend: Backend) {
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

    let code = |v: &Value| v["code"].as_str().unwrap().to_owned();
    assert_eq!(code(&validate(&server, json!({ "licenseKey": key })).await), "VALID");
    assert_eq!(
        code(
            &validate(
                &server,
                json!({ "licenseKey": key, "fingerprint": "fp-a", "entitlements": ["pro"] })
            )
            .await
        ),
        "VALID"
    );
    for bad in ["AAAAA-AAAAA-AAAAA-AAAAA-AAAAA", "not a key", ""] {
        let v = validate(&server, json!({ "licenseKey": bad, "fingerprint": "fp-a" })).await;
        assert_eq!((code(&v), v["license"].clone()), ("NOT_FOUND".to_owned(), Value::Null));
    }
    let missing = validate(
        &server,
        json!({ "licenseKey": key, "fingerprint": "fp-a", "entitlements": ["pro", "sso"] }),
    )
    .await;
    assert_eq!(code(&missing), "ENTITLEMENT_MISSING");
    assert!(missing["detail"].as_str().unwrap().contains("sso"));
    assert_eq!(
        code(&validate(&server, json!({ "licenseKey": key, "fingerprint": "never-seen" })).await),
        "NOT_ACTIVATED"
    );

    // One component of four swapped: tolerated with minComponentMatches 3; two: not.
    let mut one = components("a");
    one[2]["value"] = json!("disk-replaced");
    let tolerated = validate(
        &server,
        json!({ "licenseKey": key, "fingerprint": "fp-a-new", "components": one }),
    )
    .await;
    assert_eq!(code(&tolerated), "VALID", "{tolerated}");
    assert!(tolerated["detail"].as_str().unwrap().contains("disk"));
    let mut two = one.clone();
    two[0]["value"] = json!("mac-replaced");
    let mismatch = validate(
        &server,
        json!({ "licenseKey": key, "fingerprint": "fp-a-newer", "components": two }),
    )
    .await;
    assert_eq!(code(&mismatch), "FINGERPRINT_MISMATCH", "{mismatch}");
    assert!(mismatch["detail"].as_str().unwrap().contains("mac"), "{mismatch}");

    // Past the heartbeat deadline (2 intervals): dead at validation, before any sweep.
    server.set_clock_offset(1300);
    let dead = validate(&server, json!({ "licenseKey": key, "fingerprint": "fp-a" })).await;
    assert_eq!(code(&dead), "HEARTBEAT_DEAD", "{dead}");
    assert_eq!(dead["device"]["status"], "DEAD");
    assert_eq!(
        active_devices(&server, &license).await,
        0,
        "a floating seat is released"
    );
    server.set_clock_offset(0);

    let suspend = "mutation($id: ID!) { suspendLicense(id: $id, reason: \"unpaid invoice\") { id } }";
    server.ok(&token, suspend, json!({ "id": license })).await;
    let suspended = validate(&server, json!({ "licenseKey": key, "fingerprint": "fp-a" })).await;
    assert_eq!(code(&suspended), "SUSPENDED");
    assert!(suspended["detail"].as_str().unwrap().contains("unpaid invoice"));
    assert_eq!(
        error_code(&activate(&server, &key, "fp-b", json!([])).await),
        Some("LICENSE_SUSPENDED")
    );
    server
        .ok(
            &token,
            "mutation($id: ID!) { revokeLicense(id: $id) { id } }",
            json!({ "id": license }),
        )
        .await;
    assert_eq!(code(&validate(&server, json!({ "licenseKey": key })).await), "REVOKED");
    assert_eq!(
        error_code(&activate(&server, &key, "fp-b", json!([])).await),
        Some("LICENSE_REVOKED")
    );
}
on_both_databases!(validation_answers_every_code, validation_codes);

/// PRODUCT.md scenario 3 online: the vendor extends the license; the next heartbeat says an
/// update is available; the fetched file carries the new expiry.
async fn update_flow(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "durationSeconds: 604800, trial: true, heartbeatIntervalSeconds: 300",
    )
    .await;
    let activation = activate(&server, &key, "laptop", components("l")).await["data"]["activateDevice"].clone();
    let device_token = activation["deviceToken"].as_str().unwrap().to_owned();
    let device_id = activation["device"]["id"].clone();

    let beat = server.ok(&device_token, HEARTBEAT, json!({})).await["heartbeat"].clone();
    assert_eq!(beat["updateAvailable"], false);
    assert!(beat["nextHeartbeatDueAt"].is_string());

    server
        .ok(
            &token,
            "mutation($id: ID!) { updateLicense(input: {id: $id, expiresAt: \"2031-06-30T00:00:00Z\"}) { version } }",
            json!({ "id": license }),
        )
        .await;
    assert_eq!(device_state(&server, &device_id).await["status"], "PENDING_SYNC");
    let beat = server.ok(&device_token, HEARTBEAT, json!({})).await["heartbeat"].clone();
    assert_eq!(
        (beat["updateAvailable"].as_bool(), beat["licenseVersion"].as_i64()),
        (Some(true), Some(2))
    );
    assert_eq!(beat["device"]["status"], "PENDING_SYNC");

    let file = server
        .ok(&device_token, "mutation { fetchLicenseFile }", json!({}))
        .await["fetchLicenseFile"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload = verify_license_file(&server, &file).await;
    assert_eq!(
        payload.expires_at.map(|t| t.to_rfc3339()),
        Some("2031-06-30T00:00:00+00:00".to_owned())
    );
    assert_eq!(payload.version, 2);
    assert_eq!(
        device_state(&server, &device_id).await,
        json!({ "status": "ACTIVE", "licenseVersion": 2 })
    );
    let beat = server.ok(&device_token, HEARTBEAT, json!({})).await["heartbeat"].clone();
    assert_eq!(beat["updateAvailable"], false);
}
on_both_databases!(scenario_3_update_flag_and_refresh, update_flow);

async fn device_state(server: &TestServer, id: &Value) -> Value {
    let query = "query($id: ID!) { device(id: $id) { status licenseVersion } }";
    server.ok(&server.owner_token, query, json!({ "id": id })).await["device"].clone()
}

/// A license file verifies with OpenSSL (an independent Ed25519 implementation) and the PEM
/// from `signingKeys`, and stops verifying when any payload byte changes.
async fn openssl_verifies(backend: Backend) {
    use base64::Engine as _;
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, _, key) = license_with_policy(&server, &token, "maxActivations: 2, entitlements: [\"pro\"]").await;
    let file = activate(&server, &key, "box", components("box")).await["data"]["activateDevice"]["licenseFile"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload = verify_license_file(&server, &file).await;
    assert_eq!(payload.license_key_hint, key[key.len() - 4..]);
    assert!(
        !file.contains(&key) && !serde_json::to_string(&payload).unwrap().contains(&key[..10]),
        "never the whole key"
    );
    assert_eq!(payload.entitlements, vec!["pro".to_owned()]);

    let body: String = file.lines().filter(|l| !l.starts_with("-----")).collect();
    let envelope: Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(body).unwrap()).unwrap();
    assert_eq!(envelope["alg"], "ed25519");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload_bytes = b64.decode(envelope["payload"].as_str().unwrap()).unwrap();
    let sig = b64.decode(envelope["sig"].as_str().unwrap()).unwrap();
    let keys = server
        .ok(&token, "{ signingKeys { kid publicKeyPem } }", json!({}))
        .await;
    let pem = keys["signingKeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == envelope["kid"])
        .unwrap()["publicKeyPem"]
        .clone();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pub.pem"), pem.as_str().unwrap()).unwrap();
    std::fs::write(dir.path().join("sig.bin"), &sig).unwrap();
    let openssl_verify = |bytes: &[u8]| {
        std::fs::write(dir.path().join("payload.bin"), bytes).unwrap();
        std::process::Command::new("openssl")
            .args([
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                "pub.pem",
                "-rawin",
                "-in",
                "payload.bin",
                "-sigfile",
                "sig.bin",
            ])
            .current_dir(dir.path())
            .output()
            .expect("openssl is installed")
            .status
            .success()
    };
    assert!(openssl_verify(&payload_bytes), "OpenSSL verifies the untouched payload");
    for i in [0, payload_bytes.len() / 2, payload_bytes.len() - 1] {
        let mut altered = payload_bytes.clone();
        altered[i] ^= 0x20;
        assert!(!openssl_verify(&altered), "a changed byte {i} fails");
    }
}
on_both_databases!(license_files_verify_with_openssl, openssl_verifies);
