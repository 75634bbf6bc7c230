//! The billing-sync harness: a licensing server wired to a billing API (localstripe or the
//! stand-in), its start-up reconciliation finished before a test begins; asking for a
//! reconciliation and waiting for its run; reading a license's billing state and waiting for
//! it; and [`BillingFixture`], a server on a [`StripeDouble`] with a subscription-backed policy.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{Backend, StripeDouble, TestServer, eventually, stripe_signature};

/// The webhook signing secret the billing test servers are started with.
pub const WEBHOOK_SECRET: &str = "whsec_licensing_test";
/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// Starts a server whose workers read the billing API at `api_base` with `secret_key` and
/// whose webhook endpoint verifies [`WEBHOOK_SECRET`]; returns once the reconciliation every
/// worker runs at start has finished (so it cannot race the test's own setup).
pub async fn billing_server(backend: Backend, api_base: &str, secret_key: &str) -> TestServer {
    billing_server_with(backend, api_base, secret_key, &[]).await
}

/// [`billing_server`] with more environment variables (`ANOMALY_SCAN_SECS`, say).
pub async fn billing_server_with(
    backend: Backend,
    api_base: &str,
    secret_key: &str,
    extra: &[(&str, &str)],
) -> TestServer {
    let mut env = vec![
        ("STRIPE_API_BASE", api_base),
        ("STRIPE_SECRET_KEY", secret_key),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("BILLING_SYNC_SECS", "86400"),
    ];
    env.extend_from_slice(extra);
    let server = TestServer::start_with(backend, &env).await;
    let db = server.database().await;
    eventually(Duration::from_secs(30), "the start-up billing pass", || async {
        (crate::worker_runs(&db, "billing_sync").await.1 >= 1).then_some(())
    })
    .await;
    server
}

/// Asks for a reconciliation with `token` and waits until its run has finished; returns the run.
pub async fn sync_billing(server: &TestServer, token: &str) -> Value {
    let run = server
        .ok(token, "mutation { syncBilling { id finishedAt } }", json!({}))
        .await["syncBilling"]
        .clone();
    assert!(
        run["finishedAt"].is_null(),
        "a requested run is finished by a worker: {run}"
    );
    let id = run["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(60), "the requested billing sync", || async {
        let runs = server
            .ok(
                token,
                "{ billingSyncRuns(first: 20) { nodes { id startedAt finishedAt subscriptionsSeen driftOpened driftResolved error } } }",
                json!({}),
            )
            .await;
        runs["billingSyncRuns"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id.as_str() && !r["finishedAt"].is_null())
            .cloned()
    })
    .await
}

/// A license's status, expiry, version and billing, read by the owner.
pub async fn license_state(server: &TestServer, id: &str) -> Value {
    server
        .ok(
            &server.owner_token,
            "query($id: ID!) { license(id: $id) { status statusReason expiresAt version billingSubscriptionId billing { externalId status statusRaw currentPeriodEnd cancelAtPeriodEnd } } }",
            json!({ "id": id }),
        )
        .await["license"]
        .clone()
}

/// Waits up to 30 s until the license satisfies `check` (the server's log is shown when it
/// does not).
pub async fn license_until(server: &TestServer, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let license = license_state(server, id).await;
        if check(&license) {
            return license;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {license}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server wired to a Stripe stand-in, with a subscription-backed policy.
pub struct BillingFixture {
    /// The licensing server.
    pub server: TestServer,
    /// The Stripe stand-in it reads from.
    pub stripe: StripeDouble,
    /// The owner token.
    pub owner: String,
    /// The subscription-backed policy.
    pub policy: String,
    /// A customer with billing id `cus_initech`.
    pub customer: String,
}

impl BillingFixture {
    /// Starts a stand-in and a server reading from it, with a subscription-backed policy of
    /// `grace_seconds` and a customer.
    pub async fn start(backend: Backend, grace_seconds: i64) -> Self {
        let stripe = StripeDouble::start().await;
        let base = stripe.base_url();
        let server = billing_server(backend, &base, StripeDouble::SECRET_KEY).await;
        let owner = server.owner_token.clone();
        let product = server
            .ok(
                &owner,
                "mutation { createProduct(input: {name: \"Cloud\", code: \"cloud\"}) { id } }",
                json!({}),
            )
            .await["createProduct"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let policy = server
            .ok(
                &owner,
                "mutation($p: ID!, $g: Int) { createPolicy(input: {productId: $p, name: \"Monthly\", subscriptionBacked: true, billingGraceSeconds: $g}) { id billingGraceSeconds } }",
                json!({ "p": product, "g": grace_seconds }),
            )
            .await["createPolicy"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let customer = server
            .ok(
                &owner,
                "mutation { upsertCustomer(input: {externalId: \"C-9\", name: \"Initech\", email: \"it@initech.test\", billingCustomerId: \"cus_initech\"}) { id } }",
                json!({}),
            )
            .await["upsertCustomer"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        Self {
            server,
            stripe,
            owner,
            policy,
            customer,
        }
    }

    /// Puts a subscription of `cus_initech` in `status`, its period ending `days` from now.
    pub fn subscribe(&self, id: &str, status: &str, days: i64) -> DateTime<Utc> {
        let end = DateTime::from_timestamp(Utc::now().timestamp() + days * DAY, 0).unwrap();
        self.stripe
            .put(StripeDouble::subscription(id, "cus_initech", status, end));
        end
    }

    /// Issues a license for the customer, linked to `subscription`; returns (id, key).
    pub async fn issue(&self, subscription: Option<&str>) -> (String, String) {
        let data = self
            .server
            .ok(
                &self.owner,
                "mutation($p: ID!, $c: ID, $s: String) { issueLicense(input: {policyId: $p, customerId: $c, billingSubscriptionId: $s}) { id key } }",
                json!({ "p": self.policy, "c": self.customer, "s": subscription }),
            )
            .await;
        (
            data["issueLicense"]["id"].as_str().unwrap().to_owned(),
            data["issueLicense"]["key"].as_str().unwrap().to_owned(),
        )
    }

    /// The license's status, expiry, version and billing.
    pub async fn license(&self, id: &str) -> Value {
        license_state(&self.server, id).await
    }

    /// Waits until the license satisfies `check`.
    pub async fn until(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        license_until(&self.server, id, what, check).await
    }

    /// Posts a webhook body with a `Stripe-Signature` header value (none when `None`).
    pub async fn post_webhook(&self, body: &[u8], signature: Option<String>) -> (StatusCode, Value) {
        let mut req = self
            .server
            .http()
            .post(format!("{}/webhooks/stripe", self.server.base_url))
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            req = req.header("Stripe-Signature", signature);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Sends a correctly signed event.
    pub async fn deliver(&self, event: &Value) -> (StatusCode, Value) {
        let body = serde_json::to_vec(event).unwrap();
        let signature = stripe_signature(WEBHOOK_SECRET, &body, Utc::now().timestamp());
        self.post_webhook(&body, Some(signature)).await
    }

    /// Asks for a reconciliation and waits until its run has finished.
    pub async fn sync(&self) -> Value {
        sync_billing(&self.server, &self.owner).await
    }

    /// The drift report (`openOnly` as given).
    pub async fn drift(&self, open_only: bool) -> Vec<Value> {
        self.server
            .ok(
                &self.owner,
                "query($o: Boolean) { billingDrift(first: 40, openOnly: $o) { nodes { id kind subscriptionId explanation expected actual autoFixed firstSeenAt lastSeenAt resolvedAt license { id } } } }",
                json!({ "o": open_only }),
            )
            .await["billingDrift"]["nodes"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// How many alerts of `kind` there are for `license` (any license when empty).
    pub async fn alerts(&self, kind: &str, license: &str) -> usize {
        let data = self
            .server
            .ok(
                &self.owner,
                "{ alerts(first: 100) { nodes { kind message license { id } } } }",
                json!({}),
            )
            .await;
        data["alerts"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == kind && (license.is_empty() || a["license"]["id"] == license))
            .count()
    }

    /// How often the server re-read `subscription` from the stand-in.
    pub fn re_reads(&self, subscription: &str) -> usize {
        let path = format!("GET /v1/subscriptions/{subscription}");
        self.stripe.requests().iter().filter(|r| **r == path).count()
    }
}

/// Whether a license has taken its subscription's state: its billing copy is there and its
/// expiry is set (every subscription these tests make has a period end, and their policies are
/// perpetual). `billing` alone is not enough: it is read in a query of its own, so on PostgreSQL
/// it can show a commit the license row read just before did not.
#[must_use]
pub fn synced(license: &Value) -> bool {
    !license["billing"].is_null() && license["expiresAt"].is_string()
}

/// A `DateTime` field as Unix seconds.
#[must_use]
pub fn unix(value: &Value) -> i64 {
    DateTime::parse_from_rfc3339(value.as_str().unwrap())
        .unwrap()
        .timestamp()
}

/// A license's `expiresAt` as Unix seconds.
#[must_use]
pub fn expires(license: &Value) -> i64 {
    unix(&license["expiresAt"])
}

/// The drift rows of one kind.
#[must_use]
pub fn of_kind<'a>(drift: &'a [Value], kind: &str) -> Vec<&'a Value> {
    drift.iter().filter(|d| d["kind"] == kind).collect()
}
