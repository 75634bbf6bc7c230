//! Devices online, end to end against the real binary: activation under the seat cap (also
//! when 150 devices race for 100 seats), validation codes, heartbeats and the update flag,
//! license files verified by an independent Ed25519 implementation, check-out and release.

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

const VALIDATE: &str = "mutation($in: ValidateLicenseInput!) { validateLicense(input: $in) { valid code detail license { id status } device { id status } } }";
const HEARTBEAT: &str =
    "mutation { heartbeat { nextHeartbeatDueAt licenseVersion updateAvailable device { id status lastSeenAt } } }";
const DAY: i64 = 86_400;

async fn validate(server: &TestServer, input: Value) -> Value {
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

/// Device tokens: revoked at once by release and deactivation; never a key to staff data.
async fn device_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) =
        license_with_policy(&server, &token, "maxActivations: 2, heartbeatIntervalSeconds: 600").await;
    let a = activate(&server, &key, "a", json!([])).await["data"]["activateDevice"].clone();
    let b = activate(&server, &key, "b", json!([])).await["data"]["activateDevice"].clone();
    let (a_token, b_token) = (
        a["deviceToken"].as_str().unwrap().to_owned(),
        b["deviceToken"].as_str().unwrap().to_owned(),
    );
    server.ok(&a_token, HEARTBEAT, json!({})).await;

    // A device token reads nothing of the vendor's and changes nothing but its own device.
    for query in [
        "{ licenses { totalCount } }",
        "{ viewer { role } }",
        "{ devices { totalCount } }",
        "{ alerts { totalCount } }",
    ] {
        assert_eq!(
            error_code(&server.gql(Some(&a_token), query, json!({})).await),
            Some("FORBIDDEN"),
            "{query}"
        );
    }
    let res = server
        .gql(
            Some(&a_token),
            "mutation($id: ID!) { releaseDevice(id: $id) { id } }",
            json!({ "id": b["device"]["id"] }),
        )
        .await;
    assert_eq!(error_code(&res), Some("FORBIDDEN"));
    let res = server
        .gql(
            Some(&a_token),
            "mutation($id: ID!) { suspendLicense(id: $id) { id } }",
            json!({ "id": license }),
        )
        .await;
    assert_eq!(error_code(&res), Some("FORBIDDEN"));
    // Staff tokens are not device tokens.
    assert_eq!(
        error_code(&server.gql(Some(&token), HEARTBEAT, json!({})).await),
        Some("FORBIDDEN")
    );
    // A forged or altered device token is refused.
    let last = if a_token.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &a_token[..a_token.len() - 1]);
    assert_eq!(
        error_code(&server.gql(Some(&forged), HEARTBEAT, json!({})).await),
        Some("UNAUTHENTICATED")
    );

    // Release by staff: the token dies at once, the seat is free.
    assert_eq!(active_devices(&server, &license).await, 2);
    let released = server
        .ok(
            &token,
            "mutation($id: ID!) { releaseDevice(id: $id) { status holdsSeat } }",
            json!({ "id": a["device"]["id"] }),
        )
        .await;
    assert_eq!(
        released["releaseDevice"],
        json!({ "status": "RELEASED", "holdsSeat": false })
    );
    assert_eq!(
        error_code(&server.gql(Some(&a_token), HEARTBEAT, json!({})).await),
        Some("UNAUTHENTICATED")
    );
    assert_eq!(active_devices(&server, &license).await, 1);
    // Deactivation by the device itself: the same.
    let gone = server
        .ok(&b_token, "mutation { deactivateDevice { status } }", json!({}))
        .await;
    assert_eq!(gone["deactivateDevice"]["status"], "RELEASED");
    assert_eq!(
        error_code(
            &server
                .gql(Some(&b_token), "mutation { fetchLicenseFile }", json!({}))
                .await
        ),
        Some("UNAUTHENTICATED")
    );
    assert_eq!(active_devices(&server, &license).await, 0);
    // Reactivating gives a new token; the old one stays dead.
    let again = activate(&server, &key, "a", json!([])).await["data"]["activateDevice"].clone();
    assert_eq!(again["device"]["id"], a["device"]["id"]);
    assert_ne!(again["deviceToken"], a["deviceToken"]);
    server
        .ok(again["deviceToken"].as_str().unwrap(), HEARTBEAT, json!({}))
        .await;
    assert_eq!(
        error_code(&server.gql(Some(&a_token), HEARTBEAT, json!({})).await),
        Some("UNAUTHENTICATED")
    );

    // Another vendor's device token touches nothing of this vendor.
    let (_, b_vendor_token) = server.create_vendor("Other", "other", "o@other.test");
    let (_, _, other_key) = license_with_policy(&server, &b_vendor_token, "maxActivations: 1").await;
    let other = activate(&server, &other_key, "z", json!([])).await["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = server
        .gql(
            Some(&other),
            "mutation($id: ID!) { releaseDevice(id: $id) { id } }",
            json!({ "id": again["device"]["id"] }),
        )
        .await;
    assert_eq!(error_code(&res), Some("FORBIDDEN"));
    assert_eq!(active_devices(&server, &license).await, 1);
}
on_both_databases!(device_tokens_are_revoked_at_once, device_tokens);

/// Dead devices: floating seats are reclaimed by new devices; node-locked seats are kept and a
/// late heartbeat revives the device.
async fn dead_devices(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, floating, floating_key) = license_with_policy(
        &server,
        &token,
        "maxActivations: 1, floating: true, heartbeatIntervalSeconds: 60",
    )
    .await;
    let (_, locked, locked_key) =
        license_with_policy(&server, &token, "maxActivations: 1, heartbeatIntervalSeconds: 60").await;
    let old = activate(&server, &floating_key, "old", json!([])).await["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = activate(&server, &locked_key, "node", json!([])).await["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        error_code(&activate(&server, &floating_key, "new", json!([])).await),
        Some("ACTIVATION_LIMIT_REACHED")
    );

    server.set_clock_offset(121);
    let new = activate(&server, &floating_key, "new", json!([])).await;
    assert!(
        new.get("errors").is_none(),
        "the dead device's floating seat is reclaimed: {new}"
    );
    assert_eq!(active_devices(&server, &floating).await, 1);
    let res = server.gql(Some(&old), HEARTBEAT, json!({})).await;
    assert_eq!(
        error_code(&res),
        Some("FORBIDDEN"),
        "the dead device must activate again: {res}"
    );

    // Node-locked (KEEP_SEAT): dead, the seat kept, revived by its heartbeat.
    assert_eq!(
        error_code(&activate(&server, &locked_key, "intruder", json!([])).await),
        Some("ACTIVATION_LIMIT_REACHED")
    );
    let devices = server
        .ok(
            &token,
            "query($l: ID) { devices(filter: {licenseId: $l}) { nodes { status holdsSeat } } }",
            json!({ "l": locked }),
        )
        .await;
    assert_eq!(
        devices["devices"]["nodes"],
        json!([{ "status": "DEAD", "holdsSeat": true }])
    );
    let revived = server.ok(&node, HEARTBEAT, json!({})).await;
    assert_eq!(revived["heartbeat"]["device"]["status"], "ACTIVE");
    assert_eq!(active_devices(&server, &locked).await, 1);
}
on_both_databases!(dead_devices_free_floating_seats, dead_devices);

/// PRODUCT.md scenario 7: check a seat out for off-network use, then return it early.
async fn check_out(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "maxActivations: 1, heartbeatIntervalSeconds: 300, licenseFileTtlSeconds: 604800",
    )
    .await;
    let device_token =
        activate(&server, &key, "laptop", components("l")).await["data"]["activateDevice"]["deviceToken"]
            .as_str()
            .unwrap()
            .to_owned();
    let short = server
        .gql(
            Some(&device_token),
            "mutation { checkOutDevice(ttlSeconds: 5) }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&short), Some("INVALID_INPUT"));
    let file = server
        .ok(
            &device_token,
            "mutation { checkOutDevice(ttlSeconds: 259200) }",
            json!({}),
        )
        .await["checkOutDevice"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload = verify_license_file(&server, &file).await;
    let until = payload.checked_out_until.expect("a check-out file says until when");
    assert_eq!(payload.refresh_by, until);
    assert_eq!(payload.grace_seconds, 0);
    assert!((until - payload.server_time).num_seconds() == 259_200);

    // Off the network for two days: no heartbeat needed, the seat held, still valid.
    server.set_clock_offset(2 * DAY);
    let v = validate(&server, json!({ "licenseKey": key, "fingerprint": "laptop" })).await;
    assert_eq!(
        (v["code"].as_str(), v["device"]["status"].as_str()),
        (Some("VALID"), Some("CHECKED_OUT")),
        "{v}"
    );
    assert_eq!(
        error_code(&activate(&server, &key, "other", json!([])).await),
        Some("ACTIVATION_LIMIT_REACHED")
    );
    // Activating again during the check-out keeps it: an hour later it is still checked out.
    // The re-activation revoked the earlier token (issue 16): the device goes on with the new one.
    let again = activate(&server, &key, "laptop", components("l")).await;
    assert!(again.get("errors").is_none(), "{again}");
    let device_token = again["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    server.set_clock_offset(2 * DAY + 3600);
    let v = validate(&server, json!({ "licenseKey": key, "fingerprint": "laptop" })).await;
    assert_eq!(
        (v["code"].as_str(), v["device"]["status"].as_str()),
        (Some("VALID"), Some("CHECKED_OUT")),
        "{v}"
    );
    // Returned early.
    let back = server
        .ok(
            &device_token,
            "mutation { checkInDevice { status checkedOutUntil } }",
            json!({}),
        )
        .await;
    assert_eq!(
        back["checkInDevice"],
        json!({ "status": "ACTIVE", "checkedOutUntil": null })
    );
    assert_eq!(active_devices(&server, &license).await, 1);
}
on_both_databases!(scenario_7_check_out_and_return, check_out);

/// Requests racing to mark the same devices dead, or to release the same device, free each
/// seat exactly once: seats in use always equal the devices holding one.
async fn seat_races(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "maxActivations: 3, floating: true, heartbeatIntervalSeconds: 60",
    )
    .await;
    for fp in ["a", "b"] {
        assert!(activate(&server, &key, fp, json!([])).await.get("errors").is_none());
    }
    server.set_clock_offset(121);
    let c = activate(&server, &key, "c", json!([])).await["data"]["activateDevice"]["device"]["id"].clone();
    assert_eq!(active_devices(&server, &license).await, 3);
    let calls = (0..40).map(|i| {
        let server = &server;
        let key = key.clone();
        async move {
            validate(
                server,
                json!({ "licenseKey": key, "fingerprint": if i % 2 == 0 { "a" } else { "b" } }),
            )
            .await
        }
    });
    for v in join_all(calls).await {
        assert_eq!(v["code"], "HEARTBEAT_DEAD", "{v}");
    }
    assert_eq!(
        active_devices(&server, &license).await,
        1,
        "a and b released once each; c keeps its seat"
    );
    let release = "mutation($id: ID!) { releaseDevice(id: $id) { status } }";
    let calls = (0..10).map(|_| server.gql(Some(&token), release, json!({ "id": c })));
    for res in join_all(calls).await {
        assert_eq!(res["data"]["releaseDevice"]["status"], "RELEASED", "{res}");
    }
    assert_eq!(active_devices(&server, &license).await, 0);
    let holding = server
        .ok(
            &token,
            "query($l: ID) { devices(filter: {licenseId: $l}) { nodes { holdsSeat } } }",
            json!({ "l": license }),
        )
        .await;
    assert!(
        holding["devices"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["holdsSeat"] == false)
    );
}
on_both_databases!(seat_races_release_each_seat_once, seat_races);

/// Guessing keys: past 60 unknown keys a minute, a client address gets RATE_LIMITED for
/// unknown keys on both key-authenticated calls; known keys never count and are never
/// refused, however often they are used.
async fn key_guessing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, _, key) = license_with_policy(&server, &server.owner_token, "maxActivations: 5").await;
    for _ in 0..100 {
        assert_eq!(validate(&server, json!({ "licenseKey": key })).await["code"], "VALID");
    }
    for i in 0..60 {
        let guess = format!("AAAAA-AAAAA-AAAAA-AAAAA-{i:05}");
        let v = if i % 2 == 0 {
            validate(&server, json!({ "licenseKey": guess })).await["code"].clone()
        } else {
            json!(error_code(&activate(&server, &guess, "x", json!([])).await))
        };
        assert_eq!(v, json!("NOT_FOUND"), "guess {i}");
    }
    let guess = json!({ "in": { "licenseKey": "AAAAA-AAAAA-AAAAA-AAAAA-99999" } });
    let res = server.gql(None, VALIDATE, guess).await;
    assert_eq!(error_code(&res), Some("RATE_LIMITED"), "{res}");
    assert!(res["errors"][0]["extensions"]["retryAfter"].as_u64().is_some());
    assert_eq!(
        error_code(&activate(&server, "AAAAA-AAAAA-AAAAA-AAAAA-99998", "y", json!([])).await),
        Some("RATE_LIMITED")
    );
    assert_eq!(validate(&server, json!({ "licenseKey": key })).await["code"], "VALID");
    assert!(activate(&server, &key, "y", json!([])).await.get("errors").is_none());
}
on_both_databases!(key_guessing_is_rate_limited, key_guessing);
