//! The Stripe double itself, driven over real HTTP with reqwest: retrieve and 404, list
//! pagination and status filters, auth, injected faults (500, 429, a few 503s), a real outage
//! (stop/resume on the same port), the request log, and the webhook signature and event helpers.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::Sha256;
use tests::{
    StripeDouble, invoice_event, stripe_signature, stripe_signature_hex, stripe_signature_many, stripe_signature_v0,
    subscription_event,
};

fn period_end() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

/// `GET {base}{path}` with the double's key; status and JSON body.
async fn get(http: &reqwest::Client, double: &StripeDouble, path: &str) -> (StatusCode, Value) {
    let response = http
        .get(format!("{}{path}", double.base_url()))
        .bearer_auth(StripeDouble::SECRET_KEY)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

fn ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn retrieves_a_subscription_in_the_new_shape_and_404s_a_missing_one() {
    let double = StripeDouble::start().await;
    let http = reqwest::Client::new();
    let subscription = StripeDouble::subscription("sub_1", "cus_1", "trialing", period_end());
    double.put(subscription.clone());

    let (status, body) = get(&http, &double, "/v1/subscriptions/sub_1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, subscription);
    assert_eq!(body["object"], "subscription");
    assert_eq!(body["customer"], "cus_1");
    assert_eq!(body["status"], "trialing");
    assert_eq!(body["cancel_at_period_end"], false);
    assert_eq!(body["metadata"], serde_json::json!({}));
    let item = &body["items"]["data"][0];
    assert_eq!(body["items"]["object"], "list");
    assert_eq!(item["object"], "subscription_item");
    assert_eq!(item["price"]["id"], "price_double");
    assert_eq!(item["current_period_end"], 1_800_000_000);
    assert_eq!(item["current_period_start"], 1_800_000_000 - 30 * 86_400);
    assert!(
        body.get("current_period_end").is_none(),
        "the new shape has no top-level period"
    );

    let (status, body) = get(&http, &double, "/v1/subscriptions/sub_missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "resource_missing");
    assert_eq!(body["error"]["message"], "No such subscription: 'sub_missing'");

    let (status, body) = get(&http, &double, "/v1/customers/cus_1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn legacy_shape_set_and_remove_change_what_is_served() {
    let double = StripeDouble::start().await;
    let http = reqwest::Client::new();
    let legacy = StripeDouble::legacy_shape(StripeDouble::subscription("sub_old", "cus_1", "active", period_end()));
    assert_eq!(legacy["current_period_end"], 1_800_000_000);
    assert_eq!(legacy["current_period_start"], 1_800_000_000 - 30 * 86_400);
    assert!(legacy["items"]["data"][0].get("current_period_end").is_none());
    double.put(legacy.clone());
    assert_eq!(get(&http, &double, "/v1/subscriptions/sub_old").await.1, legacy);

    double.set("sub_old", |s| {
        s["status"] = "past_due".into();
        s["cancel_at_period_end"] = true.into();
    });
    let (_, body) = get(&http, &double, "/v1/subscriptions/sub_old").await;
    assert_eq!(body["status"], "past_due");
    assert_eq!(body["cancel_at_period_end"], true);
    assert_eq!(double.get("sub_old").unwrap(), body);

    // put replaces in place.
    double.put(StripeDouble::subscription("sub_old", "cus_1", "unpaid", period_end()));
    assert_eq!(
        get(&http, &double, "/v1/subscriptions/sub_old").await.1["status"],
        "unpaid"
    );

    assert!(double.remove("sub_old"));
    assert!(!double.remove("sub_old"));
    assert_eq!(
        get(&http, &double, "/v1/subscriptions/sub_old").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn lists_in_pages_with_has_more_and_starting_after() {
    let double = StripeDouble::start().await;
    let http = reqwest::Client::new();
    let all: Vec<String> = (0..25).map(|i| format!("sub_{i:02}")).collect();
    for id in &all {
        double.put(StripeDouble::subscription(id, "cus_1", "active", period_end()));
    }

    let (status, first) = get(&http, &double, "/v1/subscriptions").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["object"], "list");
    assert_eq!(first["url"], "/v1/subscriptions");
    assert_eq!(ids(&first).len(), 10, "the default limit is 10");
    assert_eq!(first["has_more"], true);

    let mut seen = Vec::new();
    let mut path = "/v1/subscriptions?status=all&limit=10".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = get(&http, &double, &path).await;
        assert_eq!(status, StatusCode::OK);
        pages += 1;
        seen.extend(ids(&page).into_iter().map(str::to_owned));
        if page["has_more"] == false {
            break;
        }
        path = format!(
            "/v1/subscriptions?status=all&limit=10&starting_after={}",
            seen.last().unwrap()
        );
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all, "every subscription once, in insertion order");

    let (_, exact) = get(&http, &double, "/v1/subscriptions?limit=25").await;
    assert_eq!(ids(&exact).len(), 25);
    assert_eq!(exact["has_more"], false);
    let (_, big) = get(&http, &double, "/v1/subscriptions?status=all&limit=100").await;
    assert_eq!(ids(&big).len(), 25);

    let (status, body) = get(&http, &double, "/v1/subscriptions?limit=101").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "limit");
    let (status, body) = get(&http, &double, "/v1/subscriptions?starting_after=sub_nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "resource_missing");
}

#[tokio::test]
async fn the_default_list_leaves_out_canceled_and_status_filters() {
    let double = StripeDouble::start().await;
    let http = reqwest::Client::new();
    for (id, status) in [
        ("sub_a", "active"),
        ("sub_c", "canceled"),
        ("sub_t", "trialing"),
        ("sub_p", "paused"),
        ("sub_i", "incomplete"),
        ("sub_x", "incomplete_expired"),
    ] {
        double.put(StripeDouble::subscription(id, "cus_1", status, period_end()));
    }
    double.put(StripeDouble::subscription(
        "sub_other",
        "cus_2",
        "past_due",
        period_end(),
    ));

    let (_, default) = get(&http, &double, "/v1/subscriptions").await;
    assert_eq!(
        ids(&default),
        ["sub_a", "sub_t", "sub_p", "sub_i", "sub_x", "sub_other"]
    );
    let (_, all) = get(&http, &double, "/v1/subscriptions?status=all").await;
    assert_eq!(
        ids(&all),
        ["sub_a", "sub_c", "sub_t", "sub_p", "sub_i", "sub_x", "sub_other"]
    );
    let (_, trialing) = get(&http, &double, "/v1/subscriptions?status=trialing").await;
    assert_eq!(ids(&trialing), ["sub_t"]);
    let (_, canceled) = get(&http, &double, "/v1/subscriptions?status=canceled").await;
    assert_eq!(ids(&canceled), ["sub_c"]);
    let (_, ended) = get(&http, &double, "/v1/subscriptions?status=ended").await;
    assert_eq!(ids(&ended), ["sub_c", "sub_x"]);
    let (_, customer) = get(&http, &double, "/v1/subscriptions?status=all&customer=cus_2").await;
    assert_eq!(ids(&customer), ["sub_other"]);
    // The cursor works even when the subscription it names is filtered out.
    let (_, after) = get(&http, &double, "/v1/subscriptions?status=active&starting_after=sub_c").await;
    assert_eq!(ids(&after), Vec::<&str>::new());
    assert_eq!(after["has_more"], false);

    let (status, body) = get(&http, &double, "/v1/subscriptions?status=bogus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "status");
}

#[tokio::test]
async fn requires_the_secret_key_and_logs_every_request() {
    let double = StripeDouble::start().await;
    let http = reqwest::Client::new();
    double.put(StripeDouble::subscription("sub_1", "cus_1", "active", period_end()));
    let url = format!("{}/v1/subscriptions/sub_1", double.base_url());

    let missing = http.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let wrong = http.get(&url).bearer_auth("sk_test_wrong").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Invalid API Key provided.");

    let basic = http
        .get(&url)
        .basic_auth(StripeDouble::SECRET_KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(get(&http, &double, "/v1/subscriptions/sub_1").await.0, StatusCode::OK);
    get(
        &http,
        &double,
        "/v1/subscriptions?status=all&limit=100&starting_after=sub_1",
    )
    .await;
    assert_eq!(double.request_count(), 5);
    assert_eq!(
        double.requests(),
        [
            "GET /v1/subscriptions/sub_1",
            "GET /v1/subscriptions/sub_1",
            "GET /v1/subscriptions/sub_1",
            "GET /v1/subscriptions/sub_1",
            "GET /v1/subscriptions?status=all&limit=100&starting_after=sub_1",
        ]
    );
    double.clear_requests();
    assert_eq!(double.request_count(), 0);
}

#[tokio::test]
async fn fails_every_request_as_told_until_cleared() {
    let double = StripeDouble::start().await;
    let http = reqwest::Client::new();
    double.put(StripeDouble::subscription("sub_1", "cus_1", "active", period_end()));

    double.fail_with(Some(StatusCode::INTERNAL_SERVER_ERROR));
    for path in [
        "/v1/subscriptions/sub_1",
        "/v1/subscriptions?status=all",
        "/v1/subscriptions/sub_x",
    ] {
        let (status, body) = get(&http, &double, path).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["type"], "api_error");
    }
    // Even without a key: the outage comes first.
    let unauthenticated = http
        .get(format!("{}/v1/subscriptions/sub_1", double.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::INTERNAL_SERVER_ERROR);

    double.fail_with(Some(StatusCode::TOO_MANY_REQUESTS));
    let limited = http
        .get(format!("{}/v1/subscriptions/sub_1", double.base_url()))
        .bearer_auth(StripeDouble::SECRET_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "1");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit");

    double.fail_with(None);
    assert_eq!(get(&http, &double, "/v1/subscriptions/sub_1").await.0, StatusCode::OK);

    double.fail_next(2, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        get(&http, &double, "/v1/subscriptions/sub_1").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(&http, &double, "/v1/subscriptions/sub_1").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&http, &double, "/v1/subscriptions/sub_1").await.0, StatusCode::OK);
    double.fail_next(0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&http, &double, "/v1/subscriptions/sub_1").await.0, StatusCode::OK);
    assert_eq!(double.request_count(), 10, "faulted requests are logged too");
}

#[tokio::test]
async fn a_slow_stripe_trips_a_client_timeout() {
    let double = StripeDouble::start().await;
    double.put(StripeDouble::subscription("sub_1", "cus_1", "active", period_end()));
    double.set_delay(Some(std::time::Duration::from_millis(800)));
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    let error = impatient
        .get(format!("{}/v1/subscriptions/sub_1", double.base_url()))
        .bearer_auth(StripeDouble::SECRET_KEY)
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error}");
    double.set_delay(None);
    assert_eq!(
        get(&reqwest::Client::new(), &double, "/v1/subscriptions/sub_1").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn stop_refuses_connections_and_resume_serves_again_on_the_same_port() {
    let double = StripeDouble::start().await;
    // One client throughout, like the product's: its pooled keep-alive connection must die too.
    let http = reqwest::Client::new();
    double.put(StripeDouble::subscription("sub_1", "cus_1", "active", period_end()));
    let base = double.base_url();
    assert_eq!(get(&http, &double, "/v1/subscriptions/sub_1").await.0, StatusCode::OK);

    double.stop().await;
    double.stop().await; // idempotent
    let error = http
        .get(format!("{base}/v1/subscriptions/sub_1"))
        .bearer_auth(StripeDouble::SECRET_KEY)
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", double.port())).is_err());

    double.resume().await;
    double.resume().await; // idempotent
    assert_eq!(double.base_url(), base);
    let (status, body) = get(&http, &double, "/v1/subscriptions/sub_1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], "sub_1");
    assert_eq!(double.request_count(), 2, "nothing reached it while stopped");
}

/// What the product must compute for `v1`.
fn recompute(secret: &str, body: &[u8], t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn signatures_are_stripes_hmac_scheme() {
    let body = br#"{"id":"evt_1","object":"event"}"#;
    let t = 1_700_000_000;
    let expected = recompute("whsec_a", body, t);
    assert_eq!(expected.len(), 64);
    assert_eq!(stripe_signature_hex("whsec_a", body, t), expected);
    assert_eq!(stripe_signature("whsec_a", body, t), format!("t={t},v1={expected}"));

    let header = stripe_signature_many(&["whsec_a", "whsec_b"], body, t);
    assert_eq!(
        header,
        format!("t={t},v1={expected},v1={}", recompute("whsec_b", body, t))
    );
    assert_ne!(recompute("whsec_a", body, t), recompute("whsec_b", body, t));
    assert_ne!(recompute("whsec_a", body, t), recompute("whsec_a", body, t + 1));
    assert_ne!(recompute("whsec_a", body, t), recompute("whsec_a", b"{}", t));

    assert_eq!(stripe_signature_v0("whsec_a", body, t), format!("t={t},v0={expected}"));
}

#[test]
fn events_carry_the_subscription_or_invoice() {
    let subscription = StripeDouble::subscription("sub_1", "cus_1", "past_due", Utc::now() + ChronoDuration::days(3));
    let event = subscription_event("evt_1", "customer.subscription.updated", &subscription);
    assert_eq!(event["id"], "evt_1");
    assert_eq!(event["object"], "event");
    assert_eq!(event["type"], "customer.subscription.updated");
    assert_eq!(event["livemode"], false);
    assert_eq!(event["api_version"], tests::STRIPE_API_VERSION);
    assert!(event["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(event["data"]["object"], subscription);

    let paid = invoice_event("evt_2", "invoice.paid", "sub_1", "cus_1");
    let invoice = &paid["data"]["object"];
    assert_eq!(paid["type"], "invoice.paid");
    assert_eq!(invoice["object"], "invoice");
    assert_eq!(invoice["subscription"], "sub_1");
    assert_eq!(invoice["parent"]["subscription_details"]["subscription"], "sub_1");
    assert_eq!(invoice["customer"], "cus_1");
    assert_eq!(invoice["status"], "paid");

    let failed = invoice_event("evt_3", "invoice.payment_failed", "sub_1", "cus_1");
    assert_eq!(failed["data"]["object"]["status"], "open");
}
