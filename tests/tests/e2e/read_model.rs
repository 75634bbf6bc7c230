//! The hot path's in-memory read model against the real binaries: a change is seen by the next
//! validation or heartbeat in the process that made it, within 2 s in another process (on
//! SQLite within 1 s, whoever wrote), and at once in every process when they share Redis (with
//! the 2 s rule back while Redis is down).

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait as _;
use serde_json::{Value, json};
use tests::{Backend, RedisServer, TestServer, activate, error_code, license_with_policy, on_both_databases};

use crate::devices::{HEARTBEAT, validate};

/// How long another process may keep answering from what it read before a change (2 s, plus
/// the time a debug build takes to answer).
const ELSEWHERE: Duration = Duration::from_millis(2500);

async fn code(server: &TestServer, input: &Value) -> String {
    validate(server, input.clone()).await["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Validates on `server` until it answers `expected`; fails after `within`. Answers how long
/// it took.
async fn seen_within(server: &TestServer, input: &Value, expected: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let now = code(server, input).await;
        if now == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still {now} after {:?}, expected {expected}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Suspension, expiry changes and releases, made in one process and seen in both.
async fn changes_are_seen_here_at_once_and_elsewhere_within_two_seconds(backend: Backend) {
    let a = TestServer::start(backend).await;
    let b = a.another_process(&[("WORKERS", "off")]).await;
    let token = a.owner_token.clone();
    let (_, license, key) = license_with_policy(&a, &token, "maxActivations: 2, heartbeatIntervalSeconds: 600").await;
    let activated = activate(&a, &key, "fp-read-model", json!([])).await["data"]["activateDevice"].clone();
    let device_token = activated["deviceToken"].as_str().unwrap().to_owned();
    let device_id = activated["device"]["id"].as_str().unwrap().to_owned();
    // License changes are watched by key alone (its rate limit is the roomier one), device
    // changes with the fingerprint.
    let input = json!({ "licenseKey": key });
    let on_device = json!({ "licenseKey": key, "fingerprint": "fp-read-model" });
    // Both processes hold the license and the device in memory from here on.
    for server in [&a, &b] {
        assert_eq!(code(server, &input).await, "VALID");
        assert_eq!(code(server, &on_device).await, "VALID");
    }
    b.ok(&device_token, HEARTBEAT, json!({})).await;

    // Suspended in A: A's next calls know, B's within 2 s.
    change(&a, &token, "suspendLicense", &license).await;
    assert_eq!(code(&a, &input).await, "SUSPENDED");
    assert_eq!(
        error_code(&a.gql(Some(&device_token), HEARTBEAT, json!({})).await),
        Some("LICENSE_SUSPENDED")
    );
    assert_eq!(code(&a, &on_device).await, "SUSPENDED");
    let took = seen_within(&b, &input, "SUSPENDED", ELSEWHERE).await;
    eprintln!("suspension seen by the other process after {took:?}");
    assert_eq!(code(&b, &on_device).await, "SUSPENDED");
    assert_eq!(
        error_code(&b.gql(Some(&device_token), HEARTBEAT, json!({})).await),
        Some("LICENSE_SUSPENDED")
    );

    // Reinstated in B: the other way round.
    change(&b, &token, "reinstateLicense", &license).await;
    assert_eq!(code(&b, &input).await, "VALID");
    b.ok(&device_token, HEARTBEAT, json!({})).await;
    seen_within(&a, &input, "VALID", ELSEWHERE).await;

    // An expiry moved into the past, and back.
    let expire = "mutation($id: ID!, $at: DateTime) { updateLicense(input: { id: $id, expiresAt: $at }) { id } }";
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    a.ok(&token, expire, json!({ "id": license, "at": past })).await;
    assert_eq!(code(&a, &input).await, "EXPIRED");
    seen_within(&b, &input, "EXPIRED", ELSEWHERE).await;
    let future = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    a.ok(&token, expire, json!({ "id": license, "at": future })).await;
    assert_eq!(code(&a, &input).await, "VALID");
    seen_within(&b, &input, "VALID", ELSEWHERE).await;

    // Released by staff in B.
    change(&b, &token, "releaseDevice", &device_id).await;
    assert_eq!(code(&b, &on_device).await, "NOT_ACTIVATED");
    let took = seen_within(&a, &on_device, "NOT_ACTIVATED", ELSEWHERE).await;
    eprintln!("release seen by the other process after {took:?}");
    // The released device's token: refused by B at once, by A within 2 s.
    assert_eq!(
        error_code(&b.gql(Some(&device_token), HEARTBEAT, json!({})).await),
        Some("UNAUTHENTICATED")
    );
    tests::eventually(ELSEWHERE, "A refuses the released device's token", || async {
        (error_code(&a.gql(Some(&device_token), HEARTBEAT, json!({})).await) == Some("UNAUTHENTICATED")).then_some(())
    })
    .await;
    // Activated again in A: both know the new device.
    activate(&a, &key, "fp-read-model", json!([])).await;
    assert_eq!(code(&a, &on_device).await, "VALID");
    seen_within(&b, &on_device, "VALID", ELSEWHERE).await;
}

/// Runs a license mutation that takes only the license id (`suspendLicense`, `releaseDevice`...).
async fn change(server: &TestServer, token: &str, mutation: &str, id: &str) {
    server
        .ok(
            token,
            &format!("mutation($id: ID!) {{ {mutation}(id: $id) {{ id }} }}"),
            json!({ "id": id }),
        )
        .await;
}

/// Sets a license's status behind every process's back (no process hears of it).
async fn set_status_in_the_database(server: &TestServer, license: &str, status: &str) {
    server
        .database()
        .await
        .execute_unprepared(&format!(
            "UPDATE licenses SET status = '{status}' WHERE id = '{license}'"
        ))
        .await
        .unwrap();
}

/// Waits until `server` has subscribed to the read model feed `times` times in all.
async fn feed_subscribed(server: &TestServer, times: usize) {
    tests::eventually(Duration::from_secs(20), "the read model feed subscribed", || async {
        (server.log().matches("read model feed subscribed").count() >= times).then_some(())
    })
    .await;
}

/// With Redis every process hears of every change at once, and trusts what it read for
/// longer; with Redis gone it is back to 2 s, and once Redis returns, back to at once.
async fn with_redis_changes_reach_every_process_at_once(backend: Backend) {
    let redis_port = tests::free_port();
    let redis = RedisServer::start_on(redis_port);
    let env = [("REDIS_URL", redis.url.as_str())];
    let a = TestServer::start_with(backend, &env).await;
    let b = a
        .another_process(&[("WORKERS", "off"), ("REDIS_URL", &redis.url)])
        .await;
    feed_subscribed(&a, 1).await;
    feed_subscribed(&b, 1).await;
    let token = a.owner_token.clone();
    let (_, license, key) = license_with_policy(&a, &token, "maxActivations: 2").await;
    activate(&a, &key, "fp-feed", json!([])).await;
    let input = json!({ "licenseKey": key });
    assert_eq!(code(&b, &input).await, "VALID");

    match backend {
        // PostgreSQL: B trusts what it read past 2 s, so a change no process made is not
        // seen...
        Backend::Postgres => {
            set_status_in_the_database(&a, &license, "SUSPENDED").await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert_eq!(
                code(&b, &input).await,
                "VALID",
                "the view is trusted while the feed is live"
            );
            set_status_in_the_database(&a, &license, "ACTIVE").await;
        }
        // SQLite: its data version says another connection committed, whoever that was.
        Backend::Sqlite => {
            set_status_in_the_database(&a, &license, "SUSPENDED").await;
            seen_within(&b, &input, "SUSPENDED", Duration::from_millis(1500)).await;
            set_status_in_the_database(&a, &license, "ACTIVE").await;
            seen_within(&b, &input, "VALID", Duration::from_millis(1500)).await;
        }
    }
    // ...but a change A makes reaches B at once.
    change(&a, &token, "suspendLicense", &license).await;
    let took = seen_within(&b, &input, "SUSPENDED", Duration::from_millis(1000)).await;
    eprintln!("suspension heard through Redis after {took:?}");
    change(&a, &token, "reinstateLicense", &license).await;
    seen_within(&b, &input, "VALID", Duration::from_millis(1000)).await;

    // Redis gone: the feed is down, and the 2 s rule is back.
    drop(redis);
    tests::eventually(Duration::from_secs(20), "B noticed the feed broke", || async {
        b.log().contains("the read model feed on Redis broke").then_some(())
    })
    .await;
    assert_eq!(code(&b, &input).await, "VALID");
    set_status_in_the_database(&a, &license, "SUSPENDED").await;
    seen_within(&b, &input, "SUSPENDED", ELSEWHERE).await;
    set_status_in_the_database(&a, &license, "ACTIVE").await;
    seen_within(&b, &input, "VALID", ELSEWHERE).await;

    // Redis back: at once again.
    let redis = RedisServer::start_on(redis_port);
    feed_subscribed(&a, 2).await;
    feed_subscribed(&b, 2).await;
    assert_eq!(code(&b, &input).await, "VALID");
    change(&a, &token, "revokeLicense", &license).await;
    seen_within(&b, &input, "REVOKED", Duration::from_millis(1000)).await;
    drop(redis);
}

on_both_databases!(
    changes_are_seen_here_at_once_and_elsewhere_within_two_seconds,
    changes_are_seen_here_at_once_and_elsewhere_within_two_seconds
);
on_both_databases!(
    with_redis_changes_reach_every_process_at_once,
    with_redis_changes_reach_every_process_at_once
);
