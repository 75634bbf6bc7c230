//! Billing sync (PRODUCT.md scenario 8) against a programmable Stripe stand-in
//! (`tests::StripeDouble`): webhooks verified and only ever a reason to re-read, reconciliation
//! repairing what webhooks missed, the drift report, and outages that change nothing.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::{
    Backend, StripeDouble, TestServer, eventually, on_both_databases, stripe_signature, stripe_signature_many,
};

const WEBHOOK_SECRET: &str = "whsec_licensing_test";
const DAY: i64 = 86_400;

/// A server wired to a Stripe stand-in, with a subscription-backed policy.
struct Billing {
    server: TestServer,
    stripe: StripeDouble,
    owner: String,
    policy: String,
    customer: String,
}

impl Billing {
    async fn start(backend: Backend, grace_seconds: i64) -> Self {
        let stripe = StripeDouble::start().await;
        let base = stripe.base_url();
        let server = TestServer::start_with(
            backend,
            &[
                ("STRIPE_API_BASE", base.as_str()),
                ("STRIPE_SECRET_KEY", StripeDouble::SECRET_KEY),
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

    /// Puts an active subscription of `cus_initech` ending its period `days` from now.
    fn subscribe(&self, id: &str, status: &str, days: i64) -> DateTime<Utc> {
        let end = DateTime::from_timestamp(Utc::now().timestamp() + days * DAY, 0).unwrap();
        self.stripe
            .put(StripeDouble::subscription(id, "cus_initech", status, end));
        end
    }

    /// Issues a license for the customer, linked to `subscription`; returns (id, key).
    async fn issue(&self, subscription: Option<&str>) -> (String, String) {
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

    async fn license(&self, id: &str) -> Value {
        self.server
            .ok(
                &self.owner,
                "query($id: ID!) { license(id: $id) { status statusReason expiresAt version billingSubscriptionId billing { externalId status statusRaw currentPeriodEnd cancelAtPeriodEnd } } }",
                json!({ "id": id }),
            )
            .await["license"]
            .clone()
    }

    /// Waits until the license satisfies `check` (the server's log is shown when it does not).
    async fn until(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let license = self.license(id).await;
            if check(&license) {
                return license;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {license}\n{}",
                self.server.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Posts a webhook body with a `Stripe-Signature` header value (none when `None`).
    async fn post_webhook(&self, body: &[u8], signature: Option<String>) -> (StatusCode, Value) {
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
    async fn deliver(&self, event: &Value) -> (StatusCode, Value) {
        let body = serde_json::to_vec(event).unwrap();
        let signature = stripe_signature(WEBHOOK_SECRET, &body, Utc::now().timestamp());
        self.post_webhook(&body, Some(signature)).await
    }

    /// Asks for a reconciliation and waits until its run has finished.
    async fn sync(&self) -> Value {
        let run = self
            .server
            .ok(&self.owner, "mutation { syncBilling { id finishedAt } }", json!({}))
            .await["syncBilling"]
            .clone();
        assert!(
            run["finishedAt"].is_null(),
            "a requested run is finished by a worker: {run}"
        );
        let id = run["id"].as_str().unwrap().to_owned();
        eventually(Duration::from_secs(60), "the requested billing sync", || async {
            let runs = self
                .server
                .ok(
                    &self.owner,
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

    async fn drift(&self, open_only: bool) -> Vec<Value> {
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

    async fn alerts(&self, kind: &str, license: &str) -> usize {
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

    fn re_reads(&self, subscription: &str) -> usize {
        let path = format!("GET /v1/subscriptions/{subscription}");
        self.stripe.requests().iter().filter(|r| **r == path).count()
    }
}

fn expires(license: &Value) -> i64 {
    DateTime::parse_from_rfc3339(license["expiresAt"].as_str().unwrap())
        .unwrap()
        .timestamp()
}

fn of_kind<'a>(drift: &'a [Value], kind: &str) -> Vec<&'a Value> {
    drift.iter().filter(|d| d["kind"] == kind).collect()
}

async fn a_linked_license_follows_its_subscription(backend: Backend) {
    let b = Billing::start(backend, 0).await;
    let end = b.subscribe("sub_follow", "active", 30);
    let (id, key) = b.issue(Some("sub_follow")).await;
    // Linking asks for a re-read at once: the expiry is the period end (grace 0).
    let license = b
        .until(&id, "the expiry from the period end", |l| {
            l["billing"]["status"] == "ACTIVE"
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
    let b = Billing::start(backend, 0).await;
    b.subscribe("sub_lies", "active", 30);
    let (id, _) = b.issue(Some("sub_lies")).await;
    b.until(&id, "the first read", |l| l["billing"]["status"] == "ACTIVE")
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
    let b = Billing::start(backend, 3 * DAY).await;
    let orders: [&[usize]; 4] = [&[0, 1, 2], &[2, 1, 0], &[1, 2, 0, 2, 1], &[2, 2, 0, 0, 1, 1]];
    let mut finals = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        let sub = format!("sub_order_{n}");
        b.subscribe(&sub, "active", 30);
        let (id, _) = b.issue(Some(&sub)).await;
        b.until(&id, "the first read", |l| !l["billing"].is_null()).await;
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

async fn reconciliation_repairs_what_webhooks_missed(backend: Backend) {
    let b = Billing::start(backend, 0).await;
    b.subscribe("sub_lost", "active", 30);
    b.subscribe("sub_staff", "active", 30);
    b.subscribe("sub_revoked", "active", 30);
    let (lost, _) = b.issue(Some("sub_lost")).await;
    let (staff, _) = b.issue(Some("sub_staff")).await;
    let (revoked, _) = b.issue(Some("sub_revoked")).await;
    for id in [&lost, &staff, &revoked] {
        b.until(id, "the first read", |l| l["billing"]["status"] == "ACTIVE")
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
    let b = Billing::start(backend, 0).await;
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
    b.until(&weird, "the first read", |l| l["billing"]["status"] == "ACTIVE")
        .await;
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
    let b = Billing::start(backend, 0).await;
    b.subscribe("sub_outage", "active", 30);
    let (id, _) = b.issue(Some("sub_outage")).await;
    b.until(&id, "the first read", |l| l["billing"]["status"] == "ACTIVE")
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

async fn grace_and_statuses_map_as_documented(backend: Backend) {
    let b = Billing::start(backend, 2 * DAY).await;
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
        let license = b.until(&id, sub, |l| !l["billing"].is_null()).await;
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
    let license = b.until(&id, "cancel at period end", |l| !l["billing"].is_null()).await;
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
