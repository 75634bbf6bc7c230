//! Where deliveries may go in production, at save time and at send time.

use super::*;

/// In production, endpoints must be `https` to public addresses: loopback, private,
/// link-local (cloud metadata) and `http` URLs are refused and nothing is saved, unless
/// `WEBHOOK_ALLOW_PRIVATE_TARGETS=true`. The sender checks again: a strict worker refuses an
/// endpoint a permissive API saved (`http`, and a name that resolves to loopback) without
/// connecting, and a permissive one delivers it.
async fn production_refuses_private_targets(backend: Backend) {
    let receiver = WebhookReceiver::start();
    let strict = TestServer::start_with(backend, &[("LICENSING_ENV", "production")]).await;
    let port = receiver.port;
    for url in [
        format!("http://127.0.0.1:{port}/hooks/p"),
        format!("https://127.0.0.1:{port}/hooks/p"),
        format!("https://localhost:{port}/hooks/p"),
        "https://169.254.169.254/latest/meta-data/".to_owned(),
        "https://10.1.2.3/hooks".to_owned(),
        "https://[::1]/hooks".to_owned(),
        "ftp://example.com/hooks".to_owned(),
    ] {
        let res = strict
            .gql(
                Some(&strict.owner_token),
                CREATE,
                json!({ "in": { "url": url, "events": ["*"] } }),
            )
            .await;
        assert_eq!(error_code(&res), Some("INVALID_INPUT"), "{url}: {res}");
    }
    let endpoints = strict
        .ok(&strict.owner_token, "{ webhookEndpoints { id } }", json!({}))
        .await;
    assert_eq!(endpoints["webhookEndpoints"], json!([]));
    drop(strict);

    let (_redis, queue) = worker_queue(backend);
    let mut env = vec![
        ("LICENSING_ENV", "production"),
        ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ("WORKERS", "off"),
    ];
    env.extend(queue.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let server = TestServer::start_with(backend, &env).await;
    let token = server.owner_token.clone();
    let plain = hook(&server, &token, &receiver, "plain", &["license.created"], json!({})).await;
    let tls_url = format!("https://localhost:{port}/hooks/tls");
    let created = server
        .ok(
            &token,
            CREATE,
            json!({ "in": { "url": tls_url, "events": ["license.created"] } }),
        )
        .await;
    let by_name = created["createWebhookEndpoint"]["endpoint"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;
    server.ok(&token, ISSUE, json!({ "p": policy })).await;

    let mut strict_worker = worker_on(&server, &queue, &[("LICENSING_ENV", "production")]);
    let refused_plain = only_delivery(&server, &plain, "the strict worker refuses http", |d| {
        d["lastError"].is_string()
    })
    .await;
    assert!(
        refused_plain["lastError"].as_str().unwrap().contains("https"),
        "{refused_plain}"
    );
    let refused_name = only_delivery(&server, &by_name, "the strict worker refuses localhost", |d| {
        d["lastError"].is_string()
    })
    .await;
    assert!(
        refused_name["lastError"]
            .as_str()
            .unwrap()
            .contains("not a public address"),
        "{refused_name}"
    );
    for delivery in [&refused_plain, &refused_name] {
        assert_eq!(delivery["status"], "PENDING", "{delivery}");
        assert!(delivery["responseStatus"].is_null(), "{delivery}");
    }
    strict_worker.kill();
    assert!(
        receiver.received("plain").await.is_empty(),
        "the strict worker sent nothing"
    );
    assert!(
        receiver.received("tls").await.is_empty(),
        "the strict worker connected nowhere"
    );

    let _permissive = worker_on(
        &server,
        &queue,
        &[
            ("LICENSING_ENV", "production"),
            ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ],
    );
    // Past any retry the strict worker scheduled in its few seconds (5, 10, 20 s...).
    server.set_clock_offset(300);
    only_delivery(&server, &plain, "the permissive worker delivers", |d| {
        d["status"] == "DELIVERED"
    })
    .await;
    let received = receiver.received("plain").await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["verified"], true);
}
on_both_databases!(
    production_refuses_private_targets_test,
    production_refuses_private_targets
);
