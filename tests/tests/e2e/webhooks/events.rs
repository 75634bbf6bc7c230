//! Who gets which event, and what it carries: subscriptions, vendors, payloads against
//! GraphQL, every license and device change, deaths and alerts, billing changes.

use super::*;

/// What each endpoint receives: everything its vendor's events it subscribed to, signed,
/// with the object as GraphQL shows it and never the key; `license.*` gets only license
/// events; another vendor's events never arrive; an event past a meter's limit arrives once;
/// INTEGRATION reads the log but cannot manage endpoints; redelivery repeats the same event.
async fn deliveries_reach_their_subscribers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    let slug = vendor_slug(&server, &token).await;
    let all = hook(&server, &token, &receiver, "all", &["*"], json!({})).await;
    let licenses_only = hook(&server, &token, &receiver, "licenses", &["license.*"], json!({})).await;
    let (_, other_token) = server.create_vendor("Other", "other-vendor", "owner@other.test");
    let other = hook(&server, &other_token, &receiver, "other", &["*"], json!({})).await;

    let (_, license, key) = license_with_policy(&server, &token, "meters: [{code: \"api\", limit: 3}]").await;
    let activation = activate(&server, &key, "fp-hooks", components("hooks")).await;
    let device_token = activation["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{activation}"))
        .to_owned();
    let device_id = activation["data"]["activateDevice"]["device"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let device_query = "query($id: ID!) { device(id: $id) { id fingerprint components status offline holdsSeat name hostname platform activatedAt lastSeenAt heartbeatDeadlineAt licenseVersion checkedOutUntil releasedAt license { id } } }";
    let device = server.ok(&token, device_query, json!({ "id": device_id })).await["device"].clone();
    for (n, quantity) in [(1, 2), (2, 1)] {
        let recorded = server
            .ok(
                &device_token,
                RECORD,
                json!({ "in": { "meter": "api", "quantity": quantity, "idempotencyKey": format!("k{n}") } }),
            )
            .await;
        assert_eq!(
            recorded["recordUsage"]["used"],
            if n == 1 { 2 } else { 3 },
            "{recorded}"
        );
    }
    // Past the limit: refused, and the meter does not "reach" its limit a second time.
    let over = server
        .gql(
            Some(&device_token),
            RECORD,
            json!({ "in": { "meter": "api", "quantity": 1, "idempotencyKey": "k3" } }),
        )
        .await;
    assert!(over["errors"].is_array(), "{over}");
    let suspend = "mutation($id: ID!) { suspendLicense(id: $id, reason: \"unpaid\") { id } }";
    server.ok(&token, suspend, json!({ "id": license })).await;
    let license_query = "query($id: ID) { license(id: $id) { id key status statusReason issuedAt expiresAt maxActivations activeDevices entitlements version metadata billingSubscriptionId updatedAt product { id } policy { id } customer { id } } }";
    let graphql_license = server.ok(&token, license_query, json!({ "id": license })).await["license"].clone();

    let wanted = [
        "license.created",
        "device.activated",
        "usage.limit_reached",
        "license.suspended",
    ];
    let received = eventually(WAIT, "every event of vendor A at hook all", || async {
        let got = receiver.received("all").await;
        let types = types(&got);
        wanted.iter().all(|w| types.iter().any(|t| t == w)).then_some(got)
    })
    .await;
    let mut by_type = std::collections::HashMap::new();
    for entry in &received {
        let body = body_of(entry, &slug);
        assert!(
            !entry["body"].as_str().unwrap().contains(&key),
            "the key is never sent: {entry}"
        );
        by_type.insert(body["type"].as_str().unwrap().to_owned(), body);
    }
    let limit_events = deliveries(&server, &token, &all)
        .await
        .iter()
        .filter(|d| d["eventType"] == "usage.limit_reached")
        .count();
    assert_eq!(limit_events, 1, "the meter reached its limit once");

    let suspended = &by_type["license.suspended"]["data"]["object"];
    for field in [
        "id",
        "status",
        "statusReason",
        "issuedAt",
        "expiresAt",
        "maxActivations",
        "activeDevices",
        "entitlements",
        "version",
        "metadata",
        "billingSubscriptionId",
        "updatedAt",
    ] {
        assert_same(suspended, &graphql_license, field);
    }
    assert_eq!(suspended["status"], "SUSPENDED");
    assert_eq!(suspended["productId"], graphql_license["product"]["id"]);
    assert_eq!(suspended["policyId"], graphql_license["policy"]["id"]);
    assert_eq!(suspended["customerId"], graphql_license["customer"]["id"]);
    assert_eq!(suspended["keyLast4"].as_str().unwrap(), &key[key.len() - 4..]);
    assert!(suspended.get("key").is_none(), "{suspended}");

    let activated = &by_type["device.activated"]["data"]["object"];
    for field in [
        "id",
        "fingerprint",
        "components",
        "status",
        "offline",
        "holdsSeat",
        "name",
        "hostname",
        "platform",
        "activatedAt",
        "lastSeenAt",
        "heartbeatDeadlineAt",
        "licenseVersion",
        "checkedOutUntil",
        "releasedAt",
    ] {
        assert_same(activated, &device, field);
    }
    assert_eq!(activated["licenseId"], json!(license));

    let at_limit = &by_type["usage.limit_reached"]["data"]["object"];
    assert_eq!(
        (
            &at_limit["licenseId"],
            &at_limit["meter"],
            &at_limit["used"],
            &at_limit["limit"],
            &at_limit["remaining"]
        ),
        (&json!(license), &json!("api"), &json!(3), &json!(3), &json!(0)),
        "{at_limit}"
    );

    // license.* only: license events, both of them.
    let license_types = eventually(WAIT, "both license events at hook licenses", || async {
        let types = types(&receiver.received("licenses").await);
        ["license.created", "license.suspended"]
            .iter()
            .all(|w| types.iter().any(|t| t == w))
            .then_some(types)
    })
    .await;
    assert!(
        license_types.iter().all(|t| t.starts_with("license.")),
        "{license_types:?}"
    );
    let license_log = deliveries(&server, &token, &licenses_only).await;
    assert!(
        license_log
            .iter()
            .all(|d| d["eventType"].as_str().unwrap().starts_with("license."))
    );

    // The other vendor: vendor A's events were fanned out (they arrived), none for B.
    assert!(deliveries(&server, &other_token, &other).await.is_empty());
    assert!(receiver.received("other").await.is_empty());
    let (_, other_policy) = product_and_policy(&server, &other_token, "maxActivations: 1").await;
    server.ok(&other_token, ISSUE, json!({ "p": other_policy })).await;
    let other_received = arrivals(&receiver, "other", 1).await;
    assert_eq!(types(&other_received), vec!["license.created".to_owned()]);
    body_of(&other_received[0], "other-vendor");
    let other_event = other_received[0]["event_id"].clone();
    for name in ["all", "licenses"] {
        let log = receiver.received(name).await;
        assert!(
            log.iter().all(|e| e["event_id"] != other_event),
            "{name} got vendor B's event"
        );
    }
    // Another vendor's delivery log and endpoints are not found from A.
    let foreign = server
        .gql(
            Some(&token),
            "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { id } }",
            json!({ "id": other }),
        )
        .await;
    assert_eq!(error_code(&foreign), Some("NOT_FOUND"), "{foreign}");
    assert!(deliveries(&server, &token, &other).await.is_empty());

    // INTEGRATION reads the log, but cannot see or manage endpoints.
    let integration = api_token(&server, &token, "INTEGRATION").await;
    assert!(!deliveries(&server, &integration, &all).await.is_empty());
    let create = server
        .gql(
            Some(&integration),
            CREATE,
            json!({ "in": { "url": receiver.url("x"), "events": ["*"] } }),
        )
        .await;
    assert_eq!(error_code(&create), Some("FORBIDDEN"), "{create}");
    let list = server
        .gql(Some(&integration), "{ webhookEndpoints { id } }", json!({}))
        .await;
    assert_eq!(error_code(&list), Some("FORBIDDEN"), "{list}");

    // Redelivery: the same event id again, a second attempt.
    let created = deliveries(&server, &token, &all)
        .await
        .into_iter()
        .find(|d| d["eventType"] == "license.created")
        .unwrap();
    assert_eq!(created["status"], "DELIVERED");
    let redeliver = "mutation($id: ID!) { redeliverWebhook(deliveryId: $id) { status } }";
    let again = server.ok(&token, redeliver, json!({ "id": created["id"] })).await;
    assert_eq!(again["redeliverWebhook"]["status"], "PENDING");
    eventually(WAIT, "the redelivery", || async {
        let same: Vec<Value> = receiver
            .received("all")
            .await
            .into_iter()
            .filter(|e| e["event_id"] == created["eventId"])
            .collect();
        (same.len() == 2).then_some(())
    })
    .await;
    let redelivered = eventually(WAIT, "the redelivery recorded", || async {
        deliveries(&server, &token, &all)
            .await
            .into_iter()
            .find(|d| d["id"] == created["id"] && d["status"] == "DELIVERED" && d["attempts"] == 2)
    })
    .await;
    assert_eq!(redelivered["eventId"], created["eventId"]);

    // A bad subscription is refused and creates nothing.
    let bad = server
        .gql(
            Some(&token),
            CREATE,
            json!({ "in": { "url": receiver.url("x"), "events": ["license.exploded"] } }),
        )
        .await;
    assert_eq!(error_code(&bad), Some("INVALID_INPUT"), "{bad}");
    let endpoints = server.ok(&token, "{ webhookEndpoints { id } }", json!({})).await;
    assert_eq!(
        endpoints["webhookEndpoints"].as_array().unwrap().len(),
        2,
        "{endpoints}"
    );

    // Disabled: no delivery for what happens meanwhile. Deleted: its log stays readable,
    // redelivery is refused.
    let disable = "mutation($id: ID!) { updateWebhookEndpoint(id: $id, enabled: false) { enabled } }";
    let disabled = server.ok(&token, disable, json!({ "id": licenses_only })).await;
    assert_eq!(disabled["updateWebhookEndpoint"]["enabled"], false);
    let (_, policy) = product_and_policy(&server, &token, "maxActivations: 1").await;
    let meanwhile = server.ok(&token, ISSUE, json!({ "p": policy })).await["issueLicense"]["id"].clone();
    let meanwhile_event = eventually(WAIT, "the license issued meanwhile at hook all", || async {
        receiver.received("all").await.into_iter().find_map(|e| {
            let body: Value = serde_json::from_str(e["body"].as_str()?).ok()?;
            (body["data"]["object"]["id"] == meanwhile).then(|| e["event_id"].clone())
        })
    })
    .await;
    let while_disabled = deliveries(&server, &token, &licenses_only).await;
    assert!(
        while_disabled.iter().all(|d| d["eventId"] != meanwhile_event),
        "{while_disabled:?}"
    );
    let delete = "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) { id } }";
    server.ok(&token, delete, json!({ "id": licenses_only })).await;
    let kept = deliveries(&server, &token, &licenses_only).await;
    assert_eq!(kept.len(), while_disabled.len(), "the log stays: {kept:?}");
    let refused = server
        .gql(Some(&token), redeliver, json!({ "id": kept[0]["id"] }))
        .await;
    assert_eq!(error_code(&refused), Some("NOT_FOUND"), "{refused}");
    let endpoints = server.ok(&token, "{ webhookEndpoints { id } }", json!({})).await;
    assert_eq!(endpoints["webhookEndpoints"], json!([{ "id": all }]));
}
on_both_databases!(
    deliveries_reach_their_subscribers_test,
    deliveries_reach_their_subscribers
);

/// Each change to a license or a device is one event of the type that names it, in the order
/// the changes happened.
async fn every_license_and_device_change_is_an_event(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    hook(
        &server,
        &token,
        &receiver,
        "changes",
        &["license.*", "device.*"],
        json!({}),
    )
    .await;
    let (_, license, key) = license_with_policy(&server, &token, "maxActivations: 3").await;
    let first = activate(&server, &key, "fp-one", components("one")).await;
    let second = activate(&server, &key, "fp-two", components("two")).await;
    let first_token = first["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let second_id = second["data"]["activateDevice"]["device"]["id"].clone();
    server
        .ok(&first_token, "mutation { deactivateDevice { id } }", json!({}))
        .await;
    let release = "mutation($id: ID!) { releaseDevice(id: $id) { id } }";
    server.ok(&token, release, json!({ "id": second_id })).await;
    let update = "mutation($id: ID!) { updateLicense(input: {id: $id, maxActivations: 5}) { id } }";
    server.ok(&token, update, json!({ "id": license })).await;
    for change in [
        "mutation($id: ID!) { suspendLicense(id: $id) { id } }",
        "mutation($id: ID!) { reinstateLicense(id: $id) { id } }",
        "mutation($id: ID!) { revokeLicense(id: $id, reason: \"refund\") { id } }",
    ] {
        server.ok(&token, change, json!({ "id": license })).await;
    }
    let expected = [
        "license.created",
        "device.activated",
        "device.activated",
        "device.deactivated",
        "device.released",
        "license.updated",
        "license.suspended",
        "license.reinstated",
        "license.revoked",
    ];
    let received = arrivals(&receiver, "changes", expected.len()).await;
    let slug = vendor_slug(&server, &token).await;
    let mut bodies: Vec<Value> = received.iter().map(|e| body_of(e, &slug)).collect();
    bodies.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(types, expected, "{bodies:?}");
    let object = |n: usize| &bodies[n]["data"]["object"];
    assert_eq!(object(3)["id"], first["data"]["activateDevice"]["device"]["id"]);
    assert_eq!(
        (&object(4)["id"], &object(4)["status"]),
        (&second_id, &json!("RELEASED"))
    );
    assert_eq!(object(5)["maxActivations"], 5);
    assert_eq!(
        (&object(8)["status"], &object(8)["statusReason"]),
        (&json!("REVOKED"), &json!("refund"))
    );
}
on_both_databases!(
    every_license_and_device_change_is_an_event_test,
    every_license_and_device_change_is_an_event
);

/// A device that stops heartbeating arrives as `device.dead`, and the staff alert it raised as
/// `alert.raised`, both about that device.
async fn a_dead_device_and_its_alert_arrive(backend: Backend) {
    let server = TestServer::start_with(backend, &[("HEARTBEAT_SWEEP_SECS", "1")]).await;
    let token = server.owner_token.clone();
    let receiver = WebhookReceiver::start();
    hook(
        &server,
        &token,
        &receiver,
        "deaths",
        &["device.dead", "alert.raised"],
        json!({}),
    )
    .await;
    let (_, _, key) = license_with_policy(&server, &token, "maxActivations: 2, heartbeatIntervalSeconds: 60").await;
    let activation = activate(&server, &key, "fp-silent", components("silent")).await;
    let device = activation["data"]["activateDevice"]["device"]["id"].clone();
    assert!(device.is_string(), "{activation}");
    server.set_clock_offset(3600);
    let received = eventually(WAIT, "device.dead and alert.raised", || async {
        let got = receiver.received("deaths").await;
        let types = types(&got);
        (types.iter().any(|t| t == "device.dead") && types.iter().any(|t| t == "alert.raised")).then_some(got)
    })
    .await;
    let slug = vendor_slug(&server, &token).await;
    for entry in &received {
        let body = body_of(entry, &slug);
        let object = &body["data"]["object"];
        match body["type"].as_str().unwrap() {
            "device.dead" => assert_eq!((&object["id"], &object["status"]), (&device, &json!("DEAD")), "{body}"),
            _ => assert_eq!(
                (&object["deviceId"], &object["kind"]),
                (&device, &json!("DEVICE_DEAD")),
                "{body}"
            ),
        }
    }
}
on_both_databases!(
    a_dead_device_and_its_alert_arrive_test,
    a_dead_device_and_its_alert_arrive
);

/// Billing changes reach integrations: each change of a subscription's state is one
/// `subscription.changed` (a repeated webhook or a reconciliation that finds nothing new is
/// none), and what it did to the license arrives as `license.suspended`, `license.reinstated`
/// and, for a paid period that moves the expiry later, `license.renewed`.
async fn billing_changes_arrive_as_events(backend: Backend) {
    let b = BillingFixture::start(backend, 0).await;
    let receiver = WebhookReceiver::start();
    let slug = vendor_slug(&b.server, &b.owner).await;
    let endpoint = hook(
        &b.server,
        &b.owner,
        &receiver,
        "billing",
        &["subscription.changed", "license.*"],
        json!({}),
    )
    .await;
    let first_end = b.subscribe("sub_hook", "active", 30);
    let (license, _) = b.issue(Some("sub_hook")).await;
    b.until(&license, "the link", |l| {
        tests::synced(l) && l["billing"]["status"] == "ACTIVE"
    })
    .await;

    b.stripe.set("sub_hook", |s| s["status"] = json!("canceled"));
    let canceled = tests::subscription_event(
        "evt_hook_cancel",
        "customer.subscription.deleted",
        &b.stripe.get("sub_hook").unwrap(),
    );
    for _ in 0..2 {
        assert!(b.deliver(&canceled).await.0.is_success());
    }
    b.until(&license, "the cancellation", |l| l["status"] == "SUSPENDED")
        .await;
    b.sync().await;

    b.subscribe("sub_hook", "active", 60);
    assert!(
        b.deliver(&tests::invoice_event(
            "evt_hook_paid",
            "invoice.paid",
            "sub_hook",
            "cus_initech"
        ))
        .await
        .0
        .is_success()
    );
    b.until(&license, "the reinstatement", |l| l["status"] == "ACTIVE")
        .await;
    let last_end = b.subscribe("sub_hook", "active", 90);
    assert!(
        b.deliver(&tests::invoice_event(
            "evt_hook_paid2",
            "invoice.paid",
            "sub_hook",
            "cus_initech"
        ))
        .await
        .0
        .is_success()
    );
    b.until(&license, "the renewal", |l| tests::expires(l) == last_end.timestamp())
        .await;

    let received = eventually(WAIT, "license.renewed", || async {
        let got = receiver.received("billing").await;
        types(&got).iter().any(|t| t == "license.renewed").then_some(got)
    })
    .await;
    // Every event up to the renewal has its delivery by now (fan-out goes in event order).
    let log = deliveries(&b.server, &b.owner, &endpoint).await;
    let changes = log.iter().filter(|d| d["eventType"] == "subscription.changed").count();
    assert_eq!(changes, 4, "linked, canceled, active again, a new period: {log:?}");
    let received = if received.len() < log.len() {
        arrivals(&receiver, "billing", log.len()).await
    } else {
        received
    };
    let mut bodies: Vec<Value> = received.iter().map(|e| body_of(e, &slug)).collect();
    bodies.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let subscriptions: Vec<(String, i64)> = bodies
        .iter()
        .filter(|b| b["type"] == "subscription.changed")
        .map(|b| {
            let object = &b["data"]["object"];
            assert_eq!(object["externalId"], "sub_hook", "{b}");
            assert_eq!(object["licenseIds"], json!([license]), "{b}");
            (
                object["status"].as_str().unwrap().to_owned(),
                time(&object["currentPeriodEnd"]).timestamp(),
            )
        })
        .collect();
    let statuses: Vec<&str> = subscriptions.iter().map(|(status, _)| status.as_str()).collect();
    assert_eq!(
        statuses,
        ["ACTIVE", "CANCELED", "ACTIVE", "ACTIVE"],
        "{subscriptions:?}"
    );
    assert_eq!(subscriptions[0].1, first_end.timestamp());
    assert_eq!(subscriptions[3].1, last_end.timestamp());
    let license_events: Vec<&str> = bodies
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .filter(|t| ["license.suspended", "license.reinstated", "license.renewed"].contains(t))
        .collect();
    assert_eq!(
        license_events,
        ["license.suspended", "license.reinstated", "license.renewed"],
        "{bodies:?}"
    );
    let suspended = bodies.iter().find(|b| b["type"] == "license.suspended").unwrap();
    assert_eq!(suspended["data"]["object"]["statusReason"], "billing:canceled");
    assert_eq!(suspended["data"]["object"]["billingSubscriptionId"], "sub_hook");
}
on_both_databases!(billing_changes_arrive_as_events_test, billing_changes_arrive_as_events);
