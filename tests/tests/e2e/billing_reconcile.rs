//! Billing reconciliation (PRODUCT.md scenario 8) against the programmable Stripe stand-in:
//! repairing what webhooks missed, the drift report, and billing outages that change nothing.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{Backend, BillingFixture, StripeDouble, expires, of_kind, on_both_databases, synced};

async fn reconciliation_repairs_what_webhooks_missed(backend: Backend) {
    let b = BillingFixture::start(backend, 0).await;
    b.subscribe("sub_lost", "active", 30);
    b.subscribe("sub_staff", "active", 30);
    b.subscribe("sub_revoked", "active", 30);
    let (lost, _) = b.issue(Some("sub_lost")).await;
    let (staff, _) = b.issue(Some("sub_staff")).await;
    let (revoked, _) = b.issue(Some("sub_revoked")).await;
    for id in [&lost, &staff, &revoked] {
        b.until(id, "the first read", |l| {
            synced(l) && l["billing"]["status"] == "ACTIVE"
        })
        .await;
    }
    b.server
        .ok(
            &b.owner,
            "mutation($id: ID!) { suspendLicense(id: $id, reason: \"chargeback review\") { status } }",
            json!({ "id": staff }),
        )
        .await;
    b.server
        .ok(
            &b.owner,
            "mutation($id: ID!) { revokeLicense(id: $id, reason: \"refunded\") { status } }",
            json!({ "id": revoked }),
        )
        .await;

    // Canceled while no webhook got through; another switched to a yearly plan.
    b.stripe.set("sub_lost", |s| s["status"] = json!("canceled"));
    let year_end = b.subscribe("sub_staff", "active", 365);
    b.subscribe("sub_revoked", "active", 365);
    let run = b.sync().await;
    assert!(run["error"].is_null(), "{run}");
    assert_eq!(run["subscriptionsSeen"], 3, "{run}");

    let license = b.license(&lost).await;
    assert_eq!(
        (license["status"].as_str(), license["statusReason"].as_str()),
        (Some("SUSPENDED"), Some("billing:canceled"))
    );
    let license = b.license(&staff).await;
    assert_eq!(license["status"], "SUSPENDED", "a staff suspension survives");
    assert_eq!(license["statusReason"], "chargeback review");
    assert_eq!(
        expires(&license),
        year_end.timestamp(),
        "the yearly period moves the expiry"
    );
    let license = b.license(&revoked).await;
    assert_eq!(license["status"], "REVOKED", "billing never touches a revoked license");

    let drift = b.drift(false).await;
    let ended = of_kind(&drift, "LICENSE_ACTIVE_SUBSCRIPTION_ENDED");
    assert_eq!(ended.len(), 1, "{drift:?}");
    assert_eq!(
        (ended[0]["autoFixed"].as_bool(), ended[0]["license"]["id"].as_str()),
        (Some(true), Some(lost.as_str()))
    );
    assert!(!ended[0]["resolvedAt"].is_null());
    let expiry = of_kind(&drift, "EXPIRY_MISMATCH");
    assert_eq!(
        expiry.len(),
        1,
        "only the staff-suspended license's expiry was moved: {drift:?}"
    );
    let paid = of_kind(&drift, "SUSPENDED_WHILE_PAID");
    assert_eq!(paid.len(), 1, "{drift:?}");
    assert_eq!(
        (paid[0]["autoFixed"].as_bool(), paid[0]["resolvedAt"].is_null()),
        (Some(false), true)
    );
    assert!(paid[0]["explanation"].as_str().unwrap().contains("chargeback review"));

    // Nothing new: a second run changes nothing and keeps the open row.
    let version = b.license(&staff).await["version"].clone();
    let run = b.sync().await;
    assert_eq!(
        (run["driftOpened"].as_i64(), run["driftResolved"].as_i64()),
        (Some(0), Some(0)),
        "{run}"
    );
    assert_eq!(b.license(&staff).await["version"], version);
    assert_eq!(b.drift(true).await.len(), 1);
}
on_both_databases!(
    reconciliation_repairs_what_webhooks_missed,
    reconciliation_repairs_what_webhooks_missed
);

async fn the_drift_report_has_one_row_per_disagreement(backend: Backend) {
    let b = BillingFixture::start(backend, 0).await;
    b.subscribe("sub_orphan", "active", 30);
    b.stripe.put(StripeDouble::subscription(
        "sub_other_customer",
        "cus_someone_else",
        "active",
        Utc::now() + chrono::Duration::days(30),
    ));
    b.subscribe("sub_weird", "active", 30);
    let (mismatched, _) = b.issue(Some("sub_other_customer")).await;
    let (weird, _) = b.issue(Some("sub_weird")).await;
    let (missing, _) = b.issue(Some("sub_nowhere")).await;
    let (unlinked, _) = b.issue(None).await;
    for id in [&weird, &mismatched] {
        b.until(id, "the first read", |l| {
            synced(l) && l["billing"]["status"] == "ACTIVE"
        })
        .await;
    }
    b.stripe.set("sub_weird", |s| s["status"] = json!("on_hold"));
    let weird_before = b.license(&weird).await;

    let first = b.sync().await;
    let open = b.drift(true).await;
    let kinds = |open: &[Value], kind: &str| of_kind(open, kind).len();
    assert_eq!(kinds(&open, "SUBSCRIPTION_WITHOUT_LICENSE"), 1, "{open:?}");
    assert_eq!(kinds(&open, "CUSTOMER_MISMATCH"), 1, "{open:?}");
    assert_eq!(kinds(&open, "UNKNOWN_STATUS"), 1, "{open:?}");
    assert_eq!(
        kinds(&open, "LICENSE_WITHOUT_SUBSCRIPTION"),
        2,
        "a link to nothing and no link at all: {open:?}"
    );
    assert_eq!(first["driftOpened"], 5, "{first}");
    let mismatch = of_kind(&open, "CUSTOMER_MISMATCH")[0];
    assert_eq!(mismatch["license"]["id"], mismatched.as_str());
    assert_eq!(
        (
            mismatch["expected"]["customer"].as_str(),
            mismatch["actual"]["customer"].as_str()
        ),
        (Some("cus_initech"), Some("cus_someone_else"))
    );
    let without: Vec<&str> = of_kind(&open, "LICENSE_WITHOUT_SUBSCRIPTION")
        .iter()
        .map(|d| d["license"]["id"].as_str().unwrap())
        .collect();
    assert!(
        without.contains(&missing.as_str()) && without.contains(&unlinked.as_str()),
        "{without:?}"
    );
    let weird_after = b.license(&weird).await;
    assert_eq!(
        (weird_after["status"].clone(), weird_after["version"].clone()),
        (weird_before["status"].clone(), weird_before["version"].clone()),
        "an unknown status changes nothing"
    );
    assert_eq!(weird_after["billing"]["status"], "UNKNOWN");
    assert_eq!(weird_after["billing"]["statusRaw"], "on_hold");
    assert_eq!(b.alerts("BILLING_DRIFT", "").await, 5);

    // Many runs later: still one row each, seen again.
    b.sync().await;
    let again = b.sync().await;
    assert_eq!(again["driftOpened"], 0, "{again}");
    let open_again = b.drift(true).await;
    assert_eq!(open_again.len(), open.len());
    let orphan = of_kind(&open_again, "SUBSCRIPTION_WITHOUT_LICENSE")[0];
    assert_eq!(orphan["id"], of_kind(&open, "SUBSCRIPTION_WITHOUT_LICENSE")[0]["id"]);
    assert_ne!(orphan["lastSeenAt"], orphan["firstSeenAt"], "{orphan}");

    // Linking a license resolves it at the next run.
    b.server
        .ok(&b.owner, "mutation($id: ID!) { updateLicense(input: {id: $id, billingSubscriptionId: \"sub_orphan\"}) { billingSubscriptionId } }", json!({ "id": unlinked }))
        .await;
    // The link's own re-read sets the expiry first (else the run would also heal the expiry).
    b.until(&unlinked, "the link's re-read", synced).await;
    let run = b.sync().await;
    assert_eq!(run["driftResolved"], 2, "the orphan and the unlinked license: {run}");
    let open = b.drift(true).await;
    assert_eq!(kinds(&open, "SUBSCRIPTION_WITHOUT_LICENSE"), 0, "{open:?}");
    assert_eq!(kinds(&open, "LICENSE_WITHOUT_SUBSCRIPTION"), 1, "{open:?}");

    // Another vendor sees none of it.
    let (_, other) = b.server.create_vendor("Other", "other", "o@other.test");
    let theirs = b
        .server
        .ok(
            &other,
            "{ billingDrift { totalCount } billingSyncRuns { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        (
            theirs["billingDrift"]["totalCount"].as_i64(),
            theirs["billingSyncRuns"]["totalCount"].as_i64()
        ),
        (Some(0), Some(0)),
        "{theirs}"
    );
}
on_both_databases!(
    the_drift_report_has_one_row_per_disagreement,
    the_drift_report_has_one_row_per_disagreement
);

async fn a_billing_outage_changes_no_license(backend: Backend) {
    let b = BillingFixture::start(backend, 0).await;
    b.subscribe("sub_outage", "active", 30);
    let (id, _) = b.issue(Some("sub_outage")).await;
    b.until(&id, "the first read", |l| {
        synced(l) && l["billing"]["status"] == "ACTIVE"
    })
    .await;
    let before = b.license(&id).await;
    // Canceled in Stripe, but Stripe cannot be read: 500s, 429s, then no answer at all.
    b.stripe.set("sub_outage", |s| s["status"] = json!("canceled"));
    for fault in [
        Some(StatusCode::INTERNAL_SERVER_ERROR),
        Some(StatusCode::TOO_MANY_REQUESTS),
    ] {
        b.stripe.fail_with(fault);
        let run = b.sync().await;
        assert!(
            run["error"].as_str().is_some_and(|e| e.contains("billing API")),
            "{run}"
        );
        assert_eq!(run["driftResolved"], 0, "{run}");
    }
    b.stripe.fail_with(None);
    b.stripe.stop().await;
    let run = b.sync().await;
    assert!(
        run["error"].as_str().is_some_and(|e| e.contains("unreachable")),
        "{run}"
    );
    // A webhook during the outage is accepted and its re-read waits for Stripe.
    let event = tests::subscription_event(
        "evt_outage",
        "customer.subscription.deleted",
        &b.stripe.get("sub_outage").unwrap(),
    );
    assert_eq!(b.deliver(&event).await.0, StatusCode::OK);
    assert_eq!(b.license(&id).await, before, "nothing changed during the outage");
    let health = b
        .server
        .http()
        .get(format!("{}/healthz", b.server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // Stripe back: the pending re-read goes through.
    b.stripe.resume().await;
    let license = b
        .until(&id, "the re-read after the outage", |l| l["status"] == "SUSPENDED")
        .await;
    assert_eq!(license["statusReason"], "billing:canceled");
}
on_both_databases!(a_billing_outage_changes_no_license, a_billing_outage_changes_no_license);
