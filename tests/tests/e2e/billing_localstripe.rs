//! Billing sync against a real fake Stripe, localstripe: its signed webhooks reach
//! `/webhooks/stripe`, the worker re-reads from its API, and reconciliation agrees with it.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use std::time::Duration;

use chrono::DateTime;
use serde_json::{Value, json};
use tests::{Backend, LocalStripe, STRIPE_TEST_KEY, TestServer, eventually, on_both_databases};

const WEBHOOK_SECRET: &str = "whsec_localstripe";

async fn license(server: &TestServer, id: &str) -> Value {
    server
        .ok(
            &server.owner_token,
            "query($id: ID!) { license(id: $id) { status statusReason expiresAt billingSubscriptionId billing { status currentPeriodEnd } } }",
            json!({ "id": id }),
        )
        .await["license"]
        .clone()
}

fn timestamp(value: &Value) -> i64 {
    DateTime::parse_from_rfc3339(value.as_str().unwrap())
        .unwrap()
        .timestamp()
}

async fn until(
    server: &TestServer,
    stripe: &LocalStripe,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let license = license(server, id).await;
        if check(&license) {
            return license;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {license}\n{}\n{}",
            server.log(),
            stripe.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn a_localstripe_subscription_drives_its_license(backend: Backend) {
    let stripe = LocalStripe::start();
    let base = stripe.base_url();
    let server = TestServer::start_with(
        backend,
        &[
            ("STRIPE_API_BASE", base.as_str()),
            ("STRIPE_SECRET_KEY", STRIPE_TEST_KEY),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("BILLING_SYNC_SECS", "86400"),
        ],
    )
    .await;
    // The pass every worker makes at start finishes before the test begins.
    let db = server.database().await;
    eventually(Duration::from_secs(30), "the start-up billing pass", || async {
        (tests::worker_runs(&db, "billing_sync").await.1 >= 1).then_some(())
    })
    .await;
    let owner = server.owner_token.clone();
    stripe
        .register_webhook(
            "licensing",
            &format!("{}/webhooks/stripe", server.base_url),
            WEBHOOK_SECRET,
        )
        .await;
    let (_, license_id, _) =
        tests::license_with_policy(&server, &owner, "subscriptionBacked: true, billingGraceSeconds: 0").await;

    // The vendor's checkout puts the license id in the subscription's metadata; the
    // customer.subscription.created webhook links it and sets the expiry.
    stripe.create_plan("cloud-monthly", "month", 900).await;
    stripe.create_plan("cloud-yearly", "year", 9000).await;
    let customer = stripe.create_customer("buyer@example.test").await;
    let sub = stripe
        .create_subscription(&customer, "cloud-monthly", &[("license_id", license_id.as_str())])
        .await;
    let sub_id = sub["id"].as_str().unwrap().to_owned();
    let month_end = sub["current_period_end"].as_i64().unwrap();
    let linked = until(&server, &stripe, &license_id, "the webhook link", |l| {
        !l["billing"].is_null()
    })
    .await;
    assert_eq!(linked["billingSubscriptionId"], sub_id.as_str());
    assert_eq!(
        (linked["status"].as_str(), linked["billing"]["status"].as_str()),
        (Some("ACTIVE"), Some("ACTIVE"))
    );
    assert_eq!(timestamp(&linked["expiresAt"]), month_end);

    // Month to year: localstripe sends no subscription event for it (only an invoice one, which
    // triggers a re-read too); the expiry follows, and reconciliation agrees.
    let switched = stripe.switch_plan(&sub_id, "cloud-yearly").await;
    let year_end = switched["current_period_end"].as_i64().unwrap();
    assert!(year_end > month_end + 300 * 86_400, "{switched}");
    let run = server.ok(&owner, "mutation { syncBilling { id } }", json!({})).await["syncBilling"]["id"].clone();
    let run = eventually(Duration::from_secs(60), "the sync", || async {
        let runs = server
            .ok(
                &owner,
                "{ billingSyncRuns(first: 10) { nodes { id finishedAt error subscriptionsSeen } } }",
                json!({}),
            )
            .await;
        runs["billingSyncRuns"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == run && !r["finishedAt"].is_null())
            .cloned()
    })
    .await;
    assert!(run["error"].is_null(), "{run}");
    assert_eq!(run["subscriptionsSeen"], 1, "{run}");
    until(&server, &stripe, &license_id, "the yearly period", |l| {
        timestamp(&l["expiresAt"]) == year_end
    })
    .await;
    // DELETE cancels: the customer.subscription.deleted webhook suspends it.
    stripe.cancel_subscription(&sub_id).await;
    let canceled = until(&server, &stripe, &license_id, "the cancellation", |l| {
        l["status"] == "SUSPENDED"
    })
    .await;
    assert_eq!(canceled["statusReason"], "billing:canceled");
    assert_eq!(canceled["billing"]["status"], "CANCELED");
}
on_both_databases!(
    a_localstripe_subscription_drives_its_license,
    a_localstripe_subscription_drives_its_license
);
