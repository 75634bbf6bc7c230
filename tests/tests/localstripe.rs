//! The localstripe harness itself: subscriptions become active with a period, switch from a
//! monthly to a yearly plan, cancel; the state survives an outage; webhooks arrive signed the way
//! Stripe signs them.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::Sha256;
use tests::LocalStripe;
use tokio::sync::mpsc;

const DAY: i64 = 86_400;

/// A plan pair, a customer with a card and a monthly subscription with `license_id` metadata.
async fn subscribed(stripe: &LocalStripe) -> Value {
    stripe.create_plan("pro-monthly", "month", 1_000).await;
    stripe.create_plan("pro-yearly", "year", 10_000).await;
    let customer = stripe.create_customer("it@acme.test").await;
    stripe
        .create_subscription(
            &customer,
            "pro-monthly",
            &[("license_id", "L-1"), ("vendor", "default")],
        )
        .await
}

fn period(subscription: &Value) -> i64 {
    subscription["current_period_end"].as_i64().unwrap() - subscription["current_period_start"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_activate_switch_plans_and_cancel() {
    let stripe = LocalStripe::start();
    let subscription = subscribed(&stripe).await;
    let id = subscription["id"].as_str().unwrap();
    assert!(id.starts_with("sub_"), "{subscription}");
    assert_eq!(subscription["status"], "active", "{subscription}");
    assert_eq!(subscription["metadata"]["license_id"], "L-1");
    assert_eq!(subscription["items"]["data"][0]["plan"]["id"], "pro-monthly");
    assert!((28 * DAY..=31 * DAY).contains(&period(&subscription)), "{subscription}");
    assert_eq!(stripe.get_subscription(id).await, subscription);

    let switched = stripe.switch_plan(id, "pro-yearly").await;
    assert_eq!(switched["status"], "active", "{switched}");
    assert_eq!(switched["plan"]["id"], "pro-yearly");
    assert!((365 * DAY..=366 * DAY).contains(&period(&switched)), "{switched}");
    assert_eq!(switched["current_period_start"], subscription["current_period_start"]);
    assert_eq!(switched["metadata"], subscription["metadata"]);
    assert_eq!(stripe.get_subscription(id).await["plan"]["id"], "pro-yearly");

    let canceled = stripe.cancel_subscription(id).await;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    assert!(canceled["ended_at"].is_i64(), "{canceled}");
    assert_eq!(stripe.get_subscription(id).await["status"], "canceled");
    // Listing leaves canceled subscriptions out unless asked for all of them.
    assert_eq!(stripe.get("/v1/subscriptions").await["data"], Value::Array(vec![]));
    let all = stripe.get("/v1/subscriptions?status=all&limit=10").await;
    assert_eq!(all["data"][0]["id"], id, "{all}");
    assert_eq!(all["has_more"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_survives_an_outage() {
    let mut stripe = LocalStripe::start();
    let subscription = subscribed(&stripe).await;
    let id = subscription["id"].as_str().unwrap();

    stripe.stop();
    let refused = reqwest::get(format!("{}/v1/subscriptions/{id}", stripe.base_url())).await;
    assert!(refused.is_err(), "nothing answers during the outage");

    stripe.resume();
    assert_eq!(stripe.get_subscription(id).await, subscription);
}

/// One HTTP request received by [`webhook_receiver`].
struct Delivery {
    request_line: String,
    signature: String,
    body: Vec<u8>,
}

/// A tiny HTTP server on a free loopback port answering 200 to everything; its URL and the
/// requests it received.
fn webhook_receiver() -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/stripe/webhook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let (mut length, mut signature) = (0, String::new());
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                } else if name.eq_ignore_ascii_case("stripe-signature") {
                    value.trim().clone_into(&mut signature);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
            let delivery = Delivery {
                request_line: request_line.trim_end().to_owned(),
                signature,
                body,
            };
            if tx.send(delivery).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

/// The next event delivered, checked to be signed with `secret` like Stripe signs:
/// `Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
async fn next_signed_event(deliveries: &mut mpsc::UnboundedReceiver<Delivery>, secret: &str) -> Value {
    let delivery = tokio::time::timeout(Duration::from_secs(20), deliveries.recv())
        .await
        .unwrap_or_else(|_| panic!("no webhook within 20 s"))
        .unwrap();
    assert_eq!(delivery.request_line, "POST /stripe/webhook HTTP/1.1");
    let (t, v1) = delivery.signature.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    assert!(t.parse::<i64>().is_ok(), "{}", delivery.signature);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&delivery.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v1, expected, "the v1 signature");
    let event: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(
        event["created"].as_i64(),
        t.parse().ok(),
        "t is the event's creation time"
    );
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_arrive_signed_and_outlive_an_outage() {
    let mut stripe = LocalStripe::start();
    let (url, mut deliveries) = webhook_receiver();
    let secret = "whsec_test_secret";
    stripe
        .register_webhook_for(
            "licensing",
            &url,
            secret,
            &["customer.subscription.created", "customer.subscription.deleted"],
        )
        .await;

    let subscription = subscribed(&stripe).await;
    let id = subscription["id"].as_str().unwrap();
    let created = next_signed_event(&mut deliveries, secret).await;
    assert_eq!(created["type"], "customer.subscription.created", "{created}");
    assert!(created["id"].as_str().unwrap().starts_with("evt_"), "{created}");
    assert_eq!(created["data"]["object"]["id"], id);
    assert_eq!(created["data"]["object"]["status"], "active");
    assert_eq!(created["data"]["object"]["metadata"]["license_id"], "L-1");

    // The webhook is still registered after an outage.
    stripe.stop();
    stripe.resume();
    stripe.cancel_subscription(id).await;
    let deleted = next_signed_event(&mut deliveries, secret).await;
    assert_eq!(deleted["type"], "customer.subscription.deleted", "{deleted}");
    assert_eq!(deleted["data"]["object"]["id"], id);
    assert_eq!(deleted["data"]["object"]["status"], "canceled");
}
