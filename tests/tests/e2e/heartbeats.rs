//! Heartbeats written together, against the real binary: each answer is the caller's own row,
//! a device that no longer matches the common case takes the full path, and an answered
//! heartbeat is durable (SIGKILL right after the answers loses none, so a crash cannot bring
//! a DEAD verdict forward).

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde_json::{Value, json};
use tests::{Backend, TestServer, activate, license_with_policy, on_both_databases};

use crate::devices::{HEARTBEAT, validate};

const INTERVAL: i64 = 600;

fn at(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

/// `n` devices on one license with a 10-minute heartbeat: (fingerprint, device id, token).
async fn fleet(server: &TestServer, n: usize) -> (String, String, Vec<(String, String, String)>) {
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        server,
        &token,
        &format!("maxActivations: {n}, heartbeatIntervalSeconds: {INTERVAL}"),
    )
    .await;
    let mut devices = Vec::new();
    for i in 0..n {
        let fingerprint = format!("fp-beat-{i}");
        let activated = activate(server, &key, &fingerprint, json!([])).await["data"]["activateDevice"].clone();
        devices.push((
            fingerprint,
            activated["device"]["id"].as_str().unwrap().to_owned(),
            activated["deviceToken"].as_str().unwrap().to_owned(),
        ));
    }
    (license, key, devices)
}

/// Heartbeats from every device at once.
async fn beat_all(server: &TestServer, devices: &[(String, String, String)]) -> Vec<Value> {
    join_all(
        devices
            .iter()
            .map(|(_, _, token)| async move { server.ok(token, HEARTBEAT, json!({})).await["heartbeat"].clone() }),
    )
    .await
}

/// Thirty devices at once, one of them checked out: every answer is the caller's own device
/// with its own times, and the checked-out one keeps its check-out.
async fn concurrent_heartbeats_each_get_their_own_answer(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (_, _, devices) = fleet(&server, 30).await;
    let checked_out = &devices[7];
    server
        .ok(
            &checked_out.2,
            "mutation { checkOutDevice(ttlSeconds: 86400) }",
            json!({}),
        )
        .await;
    for _ in 0..3 {
        let started = Utc::now();
        let answers = beat_all(&server, &devices).await;
        for ((_, id, _), answer) in devices.iter().zip(&answers) {
            assert_eq!(answer["device"]["id"], json!(id), "{answer}");
            let due = at(&answer["nextHeartbeatDueAt"]);
            if id == &checked_out.1 {
                assert_eq!(answer["device"]["status"], "CHECKED_OUT", "{answer}");
                assert!(due > started + chrono::Duration::hours(24), "{answer}");
                continue;
            }
            assert_eq!(answer["device"]["status"], "ACTIVE", "{answer}");
            let seen = at(&answer["device"]["lastSeenAt"]);
            assert!(seen >= started - chrono::Duration::seconds(1), "{answer}");
            let off = due - (seen + chrono::Duration::seconds(INTERVAL));
            assert!(off.num_milliseconds().abs() <= 1, "{answer}");
        }
    }
}

/// Twenty devices heartbeat ten minutes after activating, and the server is SIGKILLed right
/// after the answers. After the restart, at a time past the deadlines the activations set
/// but before the ones the heartbeats set, every device is alive, seen when its answer said.
async fn answered_heartbeats_survive_sigkill(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let (license, key, devices) = fleet(&server, 20).await;
    server.set_clock_offset(INTERVAL);
    let answers = beat_all(&server, &devices).await;
    server.kill_and_restart().await;
    // The activations' deadline (activation + 2 intervals) has passed; the heartbeats' has not.
    server.set_clock_offset(INTERVAL * 2 + INTERVAL / 2);
    for ((fingerprint, _, _), answer) in devices.iter().zip(&answers) {
        let res = validate(&server, json!({ "licenseKey": key, "fingerprint": fingerprint })).await;
        assert_eq!(res["code"], "VALID", "{res} after {answer}");
    }
    let listed = server
        .ok(
            &server.owner_token,
            "query($id: ID!) { devices(filter: { licenseId: $id }, first: 50) { nodes { id status lastSeenAt } } }",
            json!({ "id": license }),
        )
        .await;
    let nodes = listed["devices"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), devices.len());
    for ((_, id, _), answer) in devices.iter().zip(&answers) {
        let node = nodes.iter().find(|n| n["id"] == json!(id)).unwrap();
        assert_eq!(node["status"], "ACTIVE", "{node}");
        assert_eq!(at(&node["lastSeenAt"]), at(&answer["device"]["lastSeenAt"]), "{node}");
    }
}

on_both_databases!(
    concurrent_heartbeats_each_get_their_own_answer,
    concurrent_heartbeats_each_get_their_own_answer
);
on_both_databases!(answered_heartbeats_survive_sigkill, answered_heartbeats_survive_sigkill);
