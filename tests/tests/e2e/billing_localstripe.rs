//! Billing sync against a real fake Stripe, localstripe: its signed webhooks reach
//! `/webhooks/stripe`, the worker re-reads from its API, and reconciliation agrees with it.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use tests::{
    Backend, LocalStripe, STRIPE_TEST_KEY, WEBHOOK_SECRET, billing_server, license_until, on_both_databases,
    sync_billing, synced, unix,
};

async fn a_localstripe_subscription_drives_its_license(backend: Backend) {
    let stripe = LocalStripe::start();
    let base = stripe.base_url();
    // localstripe's own log is printed when the test fails (its Drop).
    let server = billing_server(backend, &base, STRIPE_TEST_KEY).await;
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
    let linked = license_until(&server, &license_id, "the webhook link", synced).await;
    assert_eq!(linked["billingSubscriptionId"], sub_id.as_str());
    assert_eq!(
        (linked["status"].as_str(), linked["billing"]["status"].as_str()),
        (Some("ACTIVE"), Some("ACTIVE"))
    );
    assert_eq!(unix(&linked["expiresAt"]), month_end);

    // Month to year: localstripe sends no subscription event for it (only an invoice one, which
    // triggers a re-read too); the expiry follows, and reconciliation agrees.
    let switched = stripe.switch_plan(&sub_id, "cloud-yearly").await;
    let year_end = switched["current_period_end"].as_i64().unwrap();
    assert!(year_end > month_end + 300 * 86_400, "{switched}");
    let run = sync_billing(&server, &owner).await;
    assert!(run["error"].is_null(), "{run}");
    assert_eq!(run["subscriptionsSeen"], 1, "{run}");
    license_until(&server, &license_id, "the yearly period", |l| {
        unix(&l["expiresAt"]) == year_end
    })
    .await;
    // DELETE cancels: the customer.subscription.deleted webhook suspends it.
    stripe.cancel_subscription(&sub_id).await;
    let canceled = license_until(&server, &license_id, "the cancellation", |l| l["status"] == "SUSPENDED").await;
    assert_eq!(canceled["statusReason"], "billing:canceled");
    assert_eq!(canceled["billing"]["status"], "CANCELED");
}
on_both_databases!(
    a_localstripe_subscription_drives_its_license,
    a_localstripe_subscription_drives_its_license
);
