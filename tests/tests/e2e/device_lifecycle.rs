//! A device after activation, end to end against the real binary: its token revoked at once,
//! death past the heartbeat deadline (floating seats freed), check-out and return, seat
//! release races, and unknown-key guessing next to a good key.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failure should stop the test loudly"
)]

use futures::future::join_all;
use serde_json::json;
use tests::{
    Backend, TestServer, activate, active_devices, components, error_code, license_with_policy, on_both_databases,
    verify_license_file,
};

use crate::devices::{DAY, HEARTBEAT, VALIDATE, validate};

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
/// seat exactly once: seats in use always equal the devices holding one. The sweep is kept out
/// of the way (an hour apart): the race is between the requests, and a sweep tick landing after
/// the clock moves would free a and b before they race.
async fn seat_races(backend: Backend) {
    let server = TestServer::start_with(backend, &[("HEARTBEAT_SWEEP_SECS", "3600")]).await;
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
