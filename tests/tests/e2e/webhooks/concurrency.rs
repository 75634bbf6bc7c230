//! Endpoints sharing the sender: a slow one beside a fast one, and twenty busy ones.

use super::*;

/// 200 events queued for an endpoint that takes 2 s per answer do not delay an event for
/// another endpoint; the slow one never has more than four requests open at once.
async fn a_slow_endpoint_does_not_delay_a_fast_one(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    hook(
        &server,
        &token,
        &receiver,
        "slow",
        &["license.created"],
        json!({ "delay": 2 }),
    )
    .await;
    hook(&server, &token, &receiver, "fast", &["device.activated"], json!({})).await;
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;
    let mut key = String::new();
    for _ in 0..200 {
        key = server.ok(&token, ISSUE, json!({ "p": policy })).await["issueLicense"]["key"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    arrivals(&receiver, "slow", 4).await;
    activate(&server, &key, "fp-fast", components("fast")).await;
    arrivals(&receiver, "fast", 1).await;
    let slow = receiver.received("slow").await;
    assert!(
        slow.len() <= 100,
        "the fast endpoint waited for {} slow deliveries",
        slow.len()
    );
    let mut open_at_once = 0;
    for entry in &slow {
        let arrived = entry["arrived"].as_f64().unwrap();
        let open = slow
            .iter()
            .filter(|other| {
                other["arrived"].as_f64().unwrap() <= arrived
                    && other["finished"].as_f64().is_none_or(|finished| finished > arrived)
            })
            .count();
        open_at_once = open_at_once.max(open);
    }
    assert!(
        (1..=4).contains(&open_at_once),
        "{open_at_once} requests open at once to the slow endpoint"
    );
}
on_both_databases!(
    a_slow_endpoint_does_not_delay_a_fast_one_test,
    a_slow_endpoint_does_not_delay_a_fast_one
);

/// Twenty slow endpoints (the most a vendor may have) with a backlog each: the sender has 64
/// slots, so sixteen endpoints fill them at first; as slots free up the endpoints served least
/// recently go first, so the last four get their first delivery after one answer time, not
/// only once the first sixteen have drained.
async fn busy_endpoints_share_the_sender(backend: Backend) {
    let (_redis, queue) = worker_queue(backend);
    let mut env = vec![("WORKERS", "off")];
    env.extend(queue.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let server = TestServer::start_with(backend, &env).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    let delay = 3.0;
    let names: Vec<String> = (0..20).map(|n| format!("busy{n:02}")).collect();
    for name in &names {
        hook(
            &server,
            &token,
            &receiver,
            name,
            &["license.created"],
            json!({ "delay": delay }),
        )
        .await;
    }
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;
    for _ in 0..8 {
        server.ok(&token, ISSUE, json!({ "p": policy })).await;
    }
    // One worker finds the whole backlog at once: sixteen endpoints take all 64 slots.
    let _worker = worker_on(&server, &queue, &[]);
    let mut first_arrivals = Vec::new();
    for name in &names {
        let first = arrivals(&receiver, name, 1).await;
        first_arrivals.push(first[0]["arrived"].as_f64().unwrap());
    }
    let earliest = first_arrivals.iter().copied().fold(f64::INFINITY, f64::min);
    let latest = first_arrivals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Served in order, the last four would wait two answer times (8 events, 4 at a time).
    assert!(
        latest - earliest < delay * 1.5,
        "an endpoint waited {:.1} s for its first delivery while others were served: {:?}",
        latest - earliest,
        first_arrivals
            .iter()
            .map(|t| format!("{:.1}", t - earliest))
            .collect::<Vec<_>>()
    );
}
on_both_databases!(busy_endpoints_share_the_sender_test, busy_endpoints_share_the_sender);
