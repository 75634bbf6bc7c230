//! Failures: retries with backoff and the same event id, giving up after three days with one
//! alert, and SIGKILL of the API and of a worker mid-delivery.

use super::*;

/// A receiver that fails its first three attempts gets the event on the fourth, with the same
/// id, after retries spaced about 5, 10 and 20 seconds (plus up to 20% jitter); no alert.
async fn failed_attempts_are_retried_with_backoff(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    let endpoint = hook(
        &server,
        &token,
        &receiver,
        "flaky",
        &["license.created"],
        json!({ "fail_first": 3 }),
    )
    .await;
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;
    server.ok(&token, ISSUE, json!({ "p": policy })).await;

    for (attempt, (low, high)) in [(1, (5, 6)), (2, (10, 12)), (3, (20, 24))] {
        // Recorded, and not yet claimed again (a claim counts the next attempt at once).
        let said = format!("HTTP 500: receiver says no (attempt {attempt})");
        let failed = only_delivery(&server, &endpoint, &format!("attempt {attempt} recorded"), |d| {
            d["attempts"] == attempt && d["lastError"] == said.as_str()
        })
        .await;
        assert_eq!(failed["status"], "PENDING", "{failed}");
        assert_eq!(failed["responseStatus"], 500, "{failed}");
        let next = time(&failed["nextAttemptAt"]);
        let wait = (next - time(&failed["updatedAt"])).num_milliseconds();
        assert!(
            (low * 1000..=high * 1000).contains(&wait),
            "retry {attempt} after {wait} ms, not {low}-{high} s: {failed}"
        );
        jump_clock_past(&server, next.with_timezone(&Utc));
    }
    let delivered = only_delivery(&server, &endpoint, "the fourth attempt delivered", |d| {
        d["status"] == "DELIVERED"
    })
    .await;
    assert_eq!(delivered["attempts"], 4);
    assert_eq!(delivered["responseStatus"], 200);
    assert!(delivered["lastError"].is_null(), "{delivered}");
    let received = receiver.received("flaky").await;
    assert_eq!(received.len(), 4, "{received:?}");
    assert!(
        received
            .iter()
            .all(|e| e["event_id"] == delivered["eventId"] && e["verified"] == true)
    );
    let alerts = server
        .ok(&token, "{ alerts(first: 100) { nodes { kind } } }", json!({}))
        .await;
    assert!(
        !alerts["alerts"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "WEBHOOK_FAILED"),
        "{alerts}"
    );
}
on_both_databases!(
    failed_attempts_are_retried_with_backoff_test,
    failed_attempts_are_retried_with_backoff
);

/// A receiver down for the whole three-day window: each delivery ends FAILED with the refused
/// connection as its error, and staff get one WEBHOOK_FAILED alert for the endpoint, not one
/// per delivery.
async fn a_receiver_down_for_three_days_fails_with_one_alert(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let nobody = format!("http://127.0.0.1:{}/hooks/down", free_port());
    let created = server
        .ok(
            &token,
            CREATE,
            json!({ "in": { "url": nobody, "events": ["license.created"] } }),
        )
        .await;
    let endpoint = created["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;
    for _ in 0..2 {
        server.ok(&token, ISSUE, json!({ "p": policy })).await;
    }
    let tried = eventually(WAIT, "both deliveries tried", || async {
        let log = deliveries(&server, &token, &endpoint).await;
        (log.len() == 2
            && log
                .iter()
                .all(|d| d["attempts"].as_i64() >= Some(1) && d["lastError"].is_string()))
        .then_some(log)
    })
    .await;
    for delivery in &tried {
        assert_eq!(delivery["status"], "PENDING", "{delivery}");
        assert!(delivery["responseStatus"].is_null(), "{delivery}");
        let error = delivery["lastError"].as_str().unwrap();
        assert!(
            error.to_lowercase().contains("connect"),
            "the refused connection is named: {error}"
        );
    }
    server.set_clock_offset(3 * 86_400 + 120);
    let failed = eventually(WAIT, "both deliveries FAILED", || async {
        let log = deliveries(&server, &token, &endpoint).await;
        log.iter().all(|d| d["status"] == "FAILED").then_some(log)
    })
    .await;
    assert!(
        failed
            .iter()
            .all(|d| d["nextAttemptAt"].is_null() && d["deliveredAt"].is_null())
    );
    let alerts = server
        .ok(
            &token,
            "{ alerts(first: 100, unacknowledgedOnly: true) { nodes { kind message } } }",
            json!({}),
        )
        .await;
    let webhook_alerts: Vec<&Value> = alerts["alerts"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "WEBHOOK_FAILED")
        .collect();
    assert_eq!(webhook_alerts.len(), 1, "one alert per endpoint: {alerts}");
    assert!(
        webhook_alerts[0]["message"].as_str().unwrap().contains(&nobody),
        "{alerts}"
    );
}
on_both_databases!(
    a_receiver_down_for_three_days_fails_with_one_alert_test,
    a_receiver_down_for_three_days_fails_with_one_alert
);

/// Nothing is lost to SIGKILL: an event written just before the API is killed is delivered by
/// a worker started later; a worker killed while its POST is open leaves the delivery to the
/// next one once the lease lapses: the same event id, exactly one duplicate.
async fn sigkill_loses_nothing_and_duplicates_at_most_once(backend: Backend) {
    let (_redis, queue) = worker_queue(backend);
    let mut env = vec![("WORKERS", "off")];
    env.extend(queue.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut server = TestServer::start_with(backend, &env).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    let endpoint = hook(&server, &token, &receiver, "killed", &["license.created"], json!({})).await;
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;

    // The API dies right after answering; nothing is sent yet (no worker).
    server.ok(&token, ISSUE, json!({ "p": policy })).await;
    server.kill_and_restart().await;
    let worker = worker_on(&server, &queue, &[]);
    let first = arrivals(&receiver, "killed", 1).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["verified"], true);
    // Recorded before this worker goes (killed between the answer and the record, it would be
    // sent again: at least once).
    eventually(WAIT, "the first event recorded delivered", || async {
        deliveries(&server, &token, &endpoint)
            .await
            .into_iter()
            .find(|d| d["eventId"] == first[0]["event_id"] && d["status"] == "DELIVERED")
    })
    .await;
    drop(worker);

    // The worker dies with the POST open.
    receiver.configure("killed", json!({ "delay": 8 })).await;
    server.ok(&token, ISSUE, json!({ "p": policy })).await;
    let mut worker = worker_on(&server, &queue, &[]);
    let open = eventually(WAIT, "the second event's POST open", || async {
        let log = receiver.received("killed").await;
        (log.len() == 2 && log[1]["answered"].is_null()).then(|| log[1].clone())
    })
    .await;
    worker.kill();
    receiver.configure("killed", json!({ "delay": 0 })).await;
    server.set_clock_offset(35);
    let _worker = worker_on(&server, &queue, &[]);
    let delivered = eventually(WAIT, "the second event delivered after the lease", || async {
        deliveries(&server, &token, &endpoint)
            .await
            .into_iter()
            .find(|d| d["eventId"] == open["event_id"] && d["status"] == "DELIVERED")
    })
    .await;
    assert_eq!(delivered["attempts"], 2, "{delivered}");
    let received = receiver.received("killed").await;
    let copies = received.iter().filter(|e| e["event_id"] == open["event_id"]).count();
    assert_eq!(copies, 2, "one duplicate, no more: {received:?}");
    assert_eq!(received.len(), 3, "{received:?}");
}
on_both_databases!(
    sigkill_loses_nothing_test,
    sigkill_loses_nothing_and_duplicates_at_most_once
);
