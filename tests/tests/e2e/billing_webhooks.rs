//! Billing sync (PRODUCT.md scenario 8) through webhooks, against the programmable Stripe
//! stand-in (`tests::StripeDouble`): a linked license follows its subscription, webhooks are
//! verified and only ever a reason to re-read, order and duplicates do not matter, and each
//! status maps as documented.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::json;
use tests::{
    Backend, BillingFixture, DAY, StripeDouble, WEBHOOK_SECRET, eventually, expires, on_both_databases,
    stripe_signature, stripe_signature_many, synced,
};

async fn a_linked_license_follows_its_subscription(backend: Backend) {
    let b = BillingFixture::start(backend, 0).await;
    let end = b.subscribe("sub_follow", "active", 30);
    let (id, key) = b.issue(Some("sub_follow")).await;
    // Linking asks for a re-read at once: the expiry is the period end (grace 0).
    let license = b
        .until(&id, "the expiry from the period end", |l| {
            synced(l) && l["billing"]["status"] == "ACTIVE"
        })
        .await;
    assert_eq!(expires(&license), end.timestamp(), "{license}");
    let period_end = DateTime::parse_from_rfc3339(license["billing"]["currentPeriodEnd"].as_str().unwrap()).unwrap();
    assert_eq!(period_end.timestamp(), end.timestamp());
    let changes_before = b.alerts("SUBSCRIPTION_CHANGED", &id).await;

    // Canceled in Stripe: the webhook's re-read suspends it, with one alert.
    b.stripe.set("sub_follow", |s| s["status"] = json!("canceled"));
    let event = tests::subscription_event(
        "evt_cancel",
        "customer.subscription.deleted",
        &b.stripe.get("sub_follow").unwrap(),
    );
    assert_eq!(b.deliver(&event).await.0, StatusCode::OK);
    let license = b.until(&id, "the cancellation", |l| l["status"] == "SUSPENDED").await;
    assert_eq!(license["statusReason"], "billing:canceled");
    assert_eq!(license["billing"]["status"], "CANCELED");
    // Redelivered, and reconciled: still one alert for the cancellation.
    let (status, body) = b.deliver(&event).await;
    assert_eq!((status, body["duplicate"].as_bool()), (StatusCode::OK, Some(true)));
    b.sync().await;
    assert_eq!(b.alerts("SUBSCRIPTION_CHANGED", &id).await, changes_before + 1);
    let validation = b
        .server
        .gql(
            None,
            "mutation($k: String!) { validateLicense(input: {licenseKey: $k}) { valid code } }",
            json!({ "k": key }),
        )
        .await;
    assert_eq!(
        validation["data"]["validateLicense"]["code"], "SUSPENDED",
        "{validation}"
    );
    let audit = b
        .server
        .ok(
            &b.owner,
            "query($id: ID!) { auditEvents(first: 50, targetId: $id) { nodes { action actorLabel } } }",
            json!({ "id": id }),
        )
        .await;
    let by_billing = audit["auditEvents"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "license.billing_sync")
        .count();
    assert_eq!(by_billing, 2, "the link's expiry and the cancellation: {audit}");

    // Renewed again (a new period): billing lifts its own suspension.
    let end = b.subscribe("sub_follow", "active", 60);
    let event = tests::invoice_event("evt_paid", "invoice.paid", "sub_follow", "cus_initech");
    assert_eq!(b.deliver(&event).await.0, StatusCode::OK);
    let license = b.until(&id, "the reinstatement", |l| l["status"] == "ACTIVE").await;
    assert_eq!(expires(&license), end.timestamp());
    assert!(license["statusReason"].is_null());
}
on_both_databases!(
    a_linked_license_follows_its_subscription,
    a_linked_license_follows_its_subscription
);

async fn bad_webhooks_are_refused_and_payloads_are_never_trusted(backend: Backend) {
    let b = BillingFixture::start(backend, 0).await;
    b.subscribe("sub_lies", "active", 30);
    let (id, _) = b.issue(Some("sub_lies")).await;
    b.until(&id, "the first read", |l| {
        synced(l) && l["billing"]["status"] == "ACTIVE"
    })
    .await;
    let version = b.license(&id).await["version"].clone();
    let reads = b.re_reads("sub_lies");

    // Stripe says canceled; the event claims active. Bad signatures first.
    b.stripe.set("sub_lies", |s| s["status"] = json!("canceled"));
    let mut lying = b.stripe.get("sub_lies").unwrap();
    lying["status"] = json!("active");
    let event = tests::subscription_event("evt_lie", "customer.subscription.updated", &lying);
    let body = serde_json::to_vec(&event).unwrap();
    let now = Utc::now().timestamp();
    for (what, signature) in [
        ("unsigned", None),
        ("forged", Some(stripe_signature("whsec_wrong", &body, now))),
        ("stale", Some(stripe_signature(WEBHOOK_SECRET, &body, now - 301))),
        (
            "from the future",
            Some(stripe_signature(WEBHOOK_SECRET, &body, now + 301)),
        ),
        ("malformed", Some("v1=abc".to_owned())),
        ("v0 only", Some(tests::stripe_signature_v0(WEBHOOK_SECRET, &body, now))),
    ] {
        let (status, answer) = b.post_webhook(&body, signature).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {answer}");
    }
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (status, _) = b
        .post_webhook(&tampered, Some(stripe_signature(WEBHOOK_SECRET, &body, now)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a body changed after signing");
    let signed = stripe_signature(WEBHOOK_SECRET, b"not json", now);
    assert_eq!(
        b.post_webhook(b"not json", Some(signed)).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        b.license(&id).await["version"],
        version,
        "refused webhooks change nothing"
    );

    // Signed (two v1 values while a secret rolls): accepted, and the re-read wins over the payload.
    let signature = stripe_signature_many(&["whsec_old", WEBHOOK_SECRET], &body, now);
    let (status, answer) = b.post_webhook(&body, Some(signature)).await;
    assert_eq!((status, answer["duplicate"].as_bool()), (StatusCode::OK, Some(false)));
    let license = b.until(&id, "the re-read", |l| l["status"] == "SUSPENDED").await;
    assert_eq!(license["statusReason"], "billing:canceled");
    assert_eq!(
        b.re_reads("sub_lies"),
        reads + 1,
        "only the verified event was re-read: {:?}",
        b.stripe.requests()
    );
}
on_both_databases!(
    bad_webhooks_are_refused_and_payloads_are_never_trusted,
    bad_webhooks_are_refused_and_payloads_are_never_trusted
);

async fn order_and_duplicates_do_not_matter(backend: Backend) {
    let b = BillingFixture::start(backend, 3 * DAY).await;
    let orders: [&[usize]; 4] = [&[0, 1, 2], &[2, 1, 0], &[1, 2, 0, 2, 1], &[2, 2, 0, 0, 1, 1]];
    let mut finals = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        let sub = format!("sub_order_{n}");
        b.subscribe(&sub, "active", 30);
        let (id, _) = b.issue(Some(&sub)).await;
        b.until(&id, "the first read", synced).await;
        // The subscription's history: created, then past due, then paid again (item periods
        // in one event, the legacy top-level period in another).
        let created = b.stripe.get(&sub).unwrap();
        let mut past_due = created.clone();
        past_due["status"] = json!("past_due");
        let end = b.subscribe(&sub, "active", 45);
        let paid = StripeDouble::legacy_shape(b.stripe.get(&sub).unwrap());
        let events = [
            tests::subscription_event(&format!("evt_{n}_created"), "customer.subscription.created", &created),
            tests::subscription_event(&format!("evt_{n}_past_due"), "customer.subscription.updated", &past_due),
            tests::subscription_event(&format!("evt_{n}_paid"), "customer.subscription.updated", &paid),
        ];
        let reads = b.re_reads(&sub);
        for &i in *order {
            assert_eq!(b.deliver(&events[i]).await.0, StatusCode::OK);
        }
        let distinct = {
            let mut o = order.to_vec();
            o.sort_unstable();
            o.dedup();
            o.len()
        };
        eventually(Duration::from_secs(30), "every distinct event re-read", || async {
            (b.re_reads(&sub) >= reads + distinct).then_some(())
        })
        .await;
        let license = b
            .until(&id, "the final state", |l| {
                l["status"] == "ACTIVE" && expires(l) == end.timestamp() + 3 * DAY
            })
            .await;
        finals.push((
            license["status"].clone(),
            license["statusReason"].clone(),
            expires(&license) - end.timestamp(),
        ));
    }
    assert!(finals.windows(2).all(|w| w[0] == w[1]), "{finals:?}");
}
on_both_databases!(order_and_duplicates_do_not_matter, order_and_duplicates_do_not_matter);

async fn grace_and_statuses_map_as_documented(backend: Backend) {
    let b = BillingFixture::start(backend, 2 * DAY).await;
    let cases = [
        ("sub_trial", "trialing", 14, "ACTIVE", None),
        ("sub_late", "past_due", -1, "ACTIVE", None),
        ("sub_lapsed", "past_due", -3, "SUSPENDED", Some("billing:past_due")),
        (
            "sub_never_paid",
            "incomplete",
            30,
            "SUSPENDED",
            Some("billing:incomplete"),
        ),
        ("sub_unpaid", "unpaid", 10, "ACTIVE", None),
    ];
    for (sub, status, days, expected_status, reason) in cases {
        let end = b.subscribe(sub, status, days);
        let (id, _) = b.issue(Some(sub)).await;
        let license = b.until(&id, sub, synced).await;
        assert_eq!(license["status"], expected_status, "{sub}: {license}");
        assert_eq!(license["statusReason"].as_str(), reason, "{sub}");
        if status != "incomplete" {
            assert_eq!(expires(&license), end.timestamp() + 2 * DAY, "{sub}");
        }
    }
    // cancel_at_period_end keeps it active and says so.
    b.subscribe("sub_ending", "active", 20);
    b.stripe.set("sub_ending", |s| s["cancel_at_period_end"] = json!(true));
    let (id, _) = b.issue(Some("sub_ending")).await;
    let license = b.until(&id, "cancel at period end", synced).await;
    assert_eq!(
        (
            license["status"].as_str(),
            license["billing"]["cancelAtPeriodEnd"].as_bool()
        ),
        (Some("ACTIVE"), Some(true))
    );

    // Roles: only OWNER, ADMIN and INTEGRATION may start a sync; bad input is refused.
    for role in ["READ_ONLY", "SUPPORT"] {
        let token = tests::api_token(&b.server, &b.owner, role).await;
        let res = b
            .server
            .gql(Some(&token), "mutation { syncBilling { id } }", json!({}))
            .await;
        assert_eq!(tests::error_code(&res), Some("FORBIDDEN"), "{role}: {res}");
    }
    let res = b
        .server
        .gql(
            Some(&b.owner),
            "mutation($p: ID!) { issueLicense(input: {policyId: $p, billingSubscriptionId: \"sub 1; drop\"}) { id } }",
            json!({ "p": b.policy }),
        )
        .await;
    assert_eq!(tests::error_code(&res), Some("INVALID_INPUT"), "{res}");
    let res = b
        .server
        .gql(
            Some(&b.owner),
            "mutation($id: ID!) { suspendLicense(id: $id, reason: \"billing:canceled\") { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        tests::error_code(&res),
        Some("INVALID_INPUT"),
        "staff cannot forge a billing suspension: {res}"
    );
}
on_both_databases!(
    grace_and_statuses_map_as_documented,
    grace_and_statuses_map_as_documented
);
