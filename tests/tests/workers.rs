//! The job workers against real processes: `licensing-api` (with `WORKERS=off`), one or two
//! `licensing-worker`s, a real SMTP server, and the queue on SQLite (with SQLite) or Redis
//! (with PostgreSQL): silent devices, renewal notices, refresh files, SMTP outages and
//! rejections, and a worker killed mid-send.

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use std::time::Duration;

use serde_json::{Value, json};
use tests::{
    AlertSubscriber, Backend, SmtpSink, TestServer, activate, activation_request, components, eventually,
    on_both_databases, parse_email, two_more_runs, verify_license_file, worker_on, worker_queue,
};

const WAIT: Duration = Duration::from_secs(30);
const DAY: i64 = 86_400;

async fn emails(server: &TestServer) -> Vec<Value> {
    server
        .ok(
            &server.owner_token,
            "{ emails(first: 100) { nodes { id kind to subject status attempts lastError messageId attachments } } }",
            json!({}),
        )
        .await["emails"]["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

async fn alerts(server: &TestServer, kind: &str) -> Vec<Value> {
    let all = server
        .ok(
            &server.owner_token,
            "{ alerts(first: 100) { nodes { kind message deviceId } } }",
            json!({}),
        )
        .await;
    all["alerts"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == kind)
        .cloned()
        .collect()
}

/// Who receives the vendor's alert digests.
async fn set_alert_emails(server: &TestServer, emails: Value) {
    server
        .ok(
            &server.owner_token,
            "mutation($e: [String!]) { updateVendorSettings(input: {alertEmails: $e}) { id } }",
            json!({ "e": emails }),
        )
        .await;
}

async fn customer(server: &TestServer, external_id: &str, email: &str) -> String {
    server
        .ok(
            &server.owner_token,
            "mutation($e: String!, $m: String) { upsertCustomer(input: {externalId: $e, name: \"Plant Co\", email: $m}) { id } }",
            json!({ "e": external_id, "m": email }),
        )
        .await["upsertCustomer"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A policy of `fields` and a license of it for `customer`, expiring at `expires_at`;
/// returns (license id, key).
async fn license_for(
    server: &TestServer,
    fields: &str,
    customer: &str,
    expires_at: Option<String>,
) -> (String, String) {
    let (policy, _, _) = tests::license_with_policy(server, &server.owner_token, fields).await;
    let issued = server
        .ok(
            &server.owner_token,
            "mutation($p: ID!, $c: ID, $e: DateTime) { issueLicense(input: {policyId: $p, customerId: $c, expiresAt: $e}) { id key } }",
            json!({ "p": policy, "c": customer, "e": expires_at }),
        )
        .await;
    (
        issued["issueLicense"]["id"].as_str().unwrap().to_owned(),
        issued["issueLicense"]["key"].as_str().unwrap().to_owned(),
    )
}

fn in_days(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339()
}

/// Scenario 9: devices that stop heartbeating are DEAD within a sweep after their deadline,
/// their seats freed; staff get one DEVICE_DEAD alert per device and one digest email, also
/// with two workers running; a dashboard subscribed to `alerts` hears each death once (from
/// the workers through Redis next to PostgreSQL, from the table next to SQLite), another
/// vendor's dashboard hears nothing.
async fn silent_devices(backend: Backend) {
    let (_redis, queue) = worker_queue(backend);
    let mut env = vec![("WORKERS", "off")];
    env.extend(queue.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let server = TestServer::start_with(backend, &env).await;
    let token = server.owner_token.clone();
    let sink = SmtpSink::start();
    let selection = "subscription { alerts { kind message device { id status } license { id } } }";
    let mut dashboard = AlertSubscriber::connect(&server, Some(&token), selection)
        .await
        .unwrap_or_else(|e| panic!("the owner may subscribe: {e}"));
    let (_, other_token) = server.create_vendor("Other", "other", "owner@other.test");
    let mut other_dashboard = AlertSubscriber::connect(&server, Some(&other_token), selection)
        .await
        .unwrap();
    set_alert_emails(&server, json!(["cs@vendor.test"])).await;
    let (_, license, key) = tests::license_with_policy(
        &server,
        &token,
        "maxActivations: 10, floating: true, heartbeatIntervalSeconds: 60",
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let fingerprint = format!("silent-{n}");
        let res = activate(&server, &key, &fingerprint, components(&fingerprint)).await;
        ids.push(
            res["data"]["activateDevice"]["device"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let smtp = sink.url();
    let env = [("SMTP_URL", smtp.as_str()), ("HEARTBEAT_SWEEP_SECS", "1")];
    let _first = worker_on(&server, &queue, &env);
    let _second = worker_on(&server, &queue, &env);
    two_more_runs(&server, "heartbeat_sweep").await;
    assert_eq!(
        tests::active_devices(&server, &license).await,
        3,
        "alive until the deadline"
    );

    // Past the deadline (two intervals after the last heartbeat).
    server.set_clock_offset(150);
    eventually(WAIT, "the sweep to free every seat", || async {
        (tests::active_devices(&server, &license).await == 0).then_some(())
    })
    .await;
    let devices = server
        .ok(
            &token,
            "{ devices(first: 10) { nodes { id status holdsSeat } } }",
            json!({}),
        )
        .await;
    for d in devices["devices"]["nodes"].as_array().unwrap() {
        assert_eq!(d["status"], "DEAD", "{d}");
        assert_eq!(d["holdsSeat"], false);
    }
    let mail = sink.wait_for(1, WAIT).await;
    // More sweeps, with both workers, and relay passes after them: nothing more.
    two_more_runs(&server, "heartbeat_sweep").await;
    two_more_runs(&server, "outbox_relay").await;
    assert_eq!(
        emails(&server).await.len(),
        1,
        "one digest, not one email per device or per worker"
    );
    assert_eq!(sink.messages().len(), 1);
    let dead = alerts(&server, "DEVICE_DEAD").await;
    assert_eq!(dead.len(), 3, "one alert per death: {dead:?}");
    let (subject, body, _, _) = parse_email(&mail[0]);
    assert!(subject.contains("3 devices stopped heartbeating"), "{subject}");
    for id in &ids {
        assert!(body.contains(id.as_str()), "the digest names device {id}: {body}");
    }
    let sent = emails(&server).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["status"], "SENT");
    assert_eq!(sent[0]["to"], "cs@vendor.test");

    let mut heard = Vec::new();
    while let Some(alert) = dashboard.next_alert(Duration::from_secs(3)).await {
        heard.push(alert);
    }
    assert_eq!(heard.len(), 3, "each death once, whichever worker saw it: {heard:?}");
    for alert in &heard {
        assert_eq!(alert["kind"], "DEVICE_DEAD", "{alert}");
        assert_eq!(alert["license"]["id"], license.as_str());
        assert_eq!(alert["device"]["status"], "DEAD");
        assert!(ids.iter().any(|id| alert["device"]["id"] == id.as_str()), "{alert}");
    }
    assert_eq!(other_dashboard.next_alert(Duration::from_millis(500)).await, None);
}
on_both_databases!(silent_devices_die_once_with_one_digest_email, silent_devices);

/// Renewal notices arrive once per license and threshold (only the nearest one), across
/// restarts and with two workers.
async fn renewal_notices(backend: Backend) {
    let server = TestServer::start_with(backend, &[("WORKERS", "off")]).await;
    let sink = SmtpSink::start();
    let (_redis, queue) = worker_queue(backend);
    let buyer = customer(&server, "erp-1", "buyer@customer.test").await;
    let soon = in_days(5);
    let soon_day = soon[..10].to_owned();
    license_for(&server, "maxActivations: 1", &buyer, Some(soon)).await;
    license_for(&server, "maxActivations: 1", &buyer, Some(in_days(20))).await;
    license_for(&server, "maxActivations: 1", &buyer, Some(in_days(90))).await;
    let smtp = sink.url();
    let env = [("SMTP_URL", smtp.as_str()), ("RENEWAL_SCAN_SECS", "1")];
    let mut first = worker_on(&server, &queue, &env);
    let _second = worker_on(&server, &queue, &env);

    let mail = sink.wait_for(2, WAIT).await;
    two_more_runs(&server, "renewal_scan").await;
    assert_eq!(emails(&server).await.len(), 2, "one notice per license in range");
    assert_eq!(sink.messages().len(), 2);
    let bodies: Vec<String> = mail.iter().map(|m| parse_email(m).1).collect();
    assert!(bodies.iter().any(|b| b.contains("in 7 days or less")), "{bodies:?}");
    assert!(bodies.iter().any(|b| b.contains("in 30 days or less")), "{bodies:?}");
    for (subject, body) in mail.iter().map(|m| {
        let (s, b, _, _) = parse_email(m);
        (s, b)
    }) {
        assert!(subject.starts_with("Your P license expires on"), "{subject}");
        assert!(body.contains("renew it before then"), "{body}");
    }

    // A restart changes nothing.
    first.kill();
    let _third = worker_on(&server, &queue, &env);
    two_more_runs(&server, "renewal_scan").await;
    assert_eq!(emails(&server).await.len(), 2);
    assert_eq!(sink.messages().len(), 2);

    // Four days on, the first license is inside the 1-day threshold: one more notice.
    server.set_clock_offset(4 * DAY);
    sink.wait_for(3, WAIT).await;
    two_more_runs(&server, "renewal_scan").await;
    two_more_runs(&server, "outbox_relay").await;
    assert_eq!(sink.messages().len(), 3);
    let last = parse_email(&sink.messages()[2]).1;
    assert!(last.contains("in 1 day or less"), "{last}");
    let all = emails(&server).await;
    assert!(
        all.iter()
            .all(|e| e["status"] == "SENT" && e["kind"] == "renewal_notice"),
        "{all:?}"
    );
    assert_eq!(all.len(), 3);
    assert_eq!(
        all.iter()
            .filter(|e| e["subject"].as_str().unwrap().contains(&soon_day))
            .count(),
        2,
        "the license expiring soon got its 7-day and its 1-day notice"
    );
}
on_both_databases!(renewal_notices_once_per_threshold, renewal_notices);

/// Renewing a license with an offline device emails the customer one message whose
/// attachment is a license file that verifies and carries the new expiry.
async fn refresh_files(backend: Backend) {
    let server = TestServer::start_with(backend, &[("WORKERS", "off")]).await;
    let token = server.owner_token.clone();
    let sink = SmtpSink::start();
    let (_redis, queue) = worker_queue(backend);
    let buyer = customer(&server, "erp-2", "plant@customer.test").await;
    let (license, key) = license_for(
        &server,
        "durationSeconds: 2592000, maxActivations: 2, deploymentMode: OFFLINE",
        &buyer,
        Some(in_days(60)),
    )
    .await;
    let comps = protocol::fingerprint::components([("mac", "aa"), ("disk", "d1")]).unwrap();
    let fp = protocol::fingerprint::fingerprint(&comps);
    let device = server
        .ok(
            &token,
            "mutation($r: String!) { generateOfflineLicense(request: $r) { device { id } } }",
            json!({ "r": activation_request(&key, 3, &fp, comps) }),
        )
        .await["generateOfflineLicense"]["device"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let smtp = sink.url();
    let _worker = worker_on(&server, &queue, &[("SMTP_URL", smtp.as_str())]);

    let renewed = server
        .ok(
            &token,
            "mutation($id: ID!) { renewLicense(id: $id) { expiresAt version } }",
            json!({ "id": license }),
        )
        .await["renewLicense"]
        .clone();
    let mail = sink.wait_for(1, WAIT).await;
    // Relay passes after the send hand the row over no more.
    two_more_runs(&server, "outbox_relay").await;
    let all = emails(&server).await;
    assert_eq!(all.len(), 1, "one email for the change: {all:?}");
    assert_eq!((&all[0]["status"], &all[0]["attempts"]), (&json!("SENT"), &json!(1)));
    assert_eq!(sink.messages().len(), 1);
    let (subject, body, attachments, _) = parse_email(&mail[0]);
    assert!(subject.contains("Updated license files"), "{subject}");
    assert!(body.contains("licensing-client install"), "{body}");
    assert_eq!(attachments.len(), 1, "one file per offline device");
    assert!(attachments[0].0.ends_with(".lic"), "{:?}", attachments[0].0);
    let payload = verify_license_file(&server, &attachments[0].1).await;
    assert_eq!(payload.device.id, device);
    assert_eq!(payload.version, renewed["version"].as_i64().unwrap());
    assert_eq!(
        payload.expires_at.unwrap(),
        renewed["expiresAt"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    );
}
on_both_databases!(renewal_emails_refresh_files_that_verify, refresh_files);

/// SMTP down for a while loses nothing: every email arrives after it returns. A 550 ends
/// the email DEAD with one EMAIL_FAILED alert.
async fn smtp_faults(backend: Backend) {
    let server = TestServer::start_with(backend, &[("WORKERS", "off")]).await;
    let mut sink = SmtpSink::start();
    sink.stop();
    let (_redis, queue) = worker_queue(backend);
    set_alert_emails(&server, json!([])).await;
    let buyer = customer(&server, "erp-3", "buyer@customer.test").await;
    license_for(&server, "maxActivations: 1", &buyer, Some(in_days(5))).await;
    license_for(&server, "maxActivations: 1", &buyer, Some(in_days(25))).await;
    let smtp = sink.url();
    let _worker = worker_on(
        &server,
        &queue,
        &[("SMTP_URL", smtp.as_str()), ("RENEWAL_SCAN_SECS", "1")],
    );

    let failing = eventually(WAIT, "delivery attempts against the stopped server", || async {
        let all = emails(&server).await;
        // An attempt counts from its lease; its error is known once it has failed.
        (all.len() == 2
            && all
                .iter()
                .all(|e| e["attempts"].as_i64() >= Some(1) && e["lastError"].is_string()))
        .then_some(all)
    })
    .await;
    for e in &failing {
        assert_eq!(e["status"], "PENDING", "{e}");
    }
    sink.resume();
    // Past the retry backoff.
    server.set_clock_offset(600);
    sink.wait_for(2, WAIT).await;
    let sent = eventually(WAIT, "both emails SENT", || async {
        let all = emails(&server).await;
        all.iter().all(|e| e["status"] == "SENT").then_some(all)
    })
    .await;
    assert_eq!(sent.len(), 2);

    // A permanent rejection.
    let rejected = customer(&server, "erp-4", "reject@customer.test").await;
    license_for(&server, "maxActivations: 1", &rejected, Some(in_days(3))).await;
    let dead = eventually(WAIT, "the rejected email to end DEAD", || async {
        emails(&server)
            .await
            .into_iter()
            .find(|e| e["to"] == "reject@customer.test" && e["status"] == "DEAD")
    })
    .await;
    assert_eq!(dead["attempts"], 1, "a 5xx is not retried: {dead}");
    assert!(dead["lastError"].as_str().unwrap().contains("550"), "{dead}");
    // Relay passes after the rejection hand the DEAD row over no more.
    two_more_runs(&server, "outbox_relay").await;
    let failed = alerts(&server, "EMAIL_FAILED").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0]["message"].as_str().unwrap().contains("reject@customer.test"));
    assert_eq!(sink.messages().len(), 2, "nothing went to the rejected address");
}
on_both_databases!(smtp_outage_loses_nothing_and_rejections_die_once, smtp_faults);

/// A worker killed with SIGKILL in the middle of sending: after a restart the email ends
/// SENT, delivered at most twice, always with the same Message-ID; SIGTERM stops a worker
/// cleanly.
async fn killed_mid_send(backend: Backend) {
    let server = TestServer::start_with(backend, &[("WORKERS", "off")]).await;
    let sink = SmtpSink::start_with_delay(3);
    let (_redis, queue) = worker_queue(backend);
    set_alert_emails(&server, json!([])).await;
    let buyer = customer(&server, "erp-5", "buyer@customer.test").await;
    license_for(&server, "maxActivations: 1", &buyer, Some(in_days(5))).await;
    let smtp = sink.url();
    let env = [("SMTP_URL", smtp.as_str()), ("RENEWAL_SCAN_SECS", "1")];
    let mut first = worker_on(&server, &queue, &env);
    eventually(WAIT, "the worker to be sending", || async {
        sink.receiving().then_some(())
    })
    .await;
    first.kill();

    let mut second = worker_on(&server, &queue, &env);
    // Past the delivery lease of the killed worker.
    server.set_clock_offset(120);
    let email = eventually(WAIT, "the email to end SENT", || async {
        let all = emails(&server).await;
        (all.len() == 1 && all[0]["status"] == "SENT").then(|| all[0].clone())
    })
    .await;
    // Relay passes after the send hand the row over no more.
    two_more_runs(&server, "outbox_relay").await;
    let delivered = sink.messages();
    assert!(
        (1..=2).contains(&delivered.len()),
        "at most one duplicate: {} deliveries",
        delivered.len()
    );
    for raw in &delivered {
        let (_, _, _, message_id) = parse_email(raw);
        assert_eq!(
            format!("<{message_id}>"),
            email["messageId"].as_str().unwrap(),
            "every delivery carries the row's Message-ID"
        );
    }
    assert!(
        second.terminate(),
        "SIGTERM stops the worker cleanly:\n{}",
        second.log()
    );
}
on_both_databases!(worker_killed_mid_send_redelivers_the_same_message, killed_mid_send);

/// SIGTERM in the middle of a send: the worker finishes it before exiting, so the email is
/// SENT, delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_send_in_flight_finish() {
    let server = TestServer::start_with(Backend::Sqlite, &[("WORKERS", "off")]).await;
    let sink = SmtpSink::start_with_delay(3);
    set_alert_emails(&server, json!([])).await;
    let buyer = customer(&server, "erp-7", "buyer@customer.test").await;
    license_for(&server, "maxActivations: 1", &buyer, Some(in_days(5))).await;
    let smtp = sink.url();
    let mut worker = worker_on(&server, &[], &[("SMTP_URL", smtp.as_str()), ("RENEWAL_SCAN_SECS", "1")]);
    eventually(WAIT, "the worker to be sending", || async {
        sink.receiving().then_some(())
    })
    .await;
    assert!(
        worker.terminate(),
        "SIGTERM stops the worker cleanly:\n{}",
        worker.log()
    );
    assert_eq!(sink.messages().len(), 1, "the send in flight was finished");
    let all = emails(&server).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["status"], "SENT", "{all:?}");
    assert_eq!(all[0]["attempts"], 1);
}

/// The api process runs the same workers itself by default (WORKERS=embedded), with mail as
/// `.eml` files when no SMTP server is configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_workers_write_eml_files() {
    let server = TestServer::start_with(Backend::Sqlite, &[("RENEWAL_SCAN_SECS", "1")]).await;
    let buyer = customer(&server, "erp-6", "buyer@customer.test").await;
    license_for(&server, "maxActivations: 1", &buyer, Some(in_days(2))).await;
    let outbox = server.data_dir.path().join("outbox");
    let file = eventually(WAIT, "an .eml file", || async {
        std::fs::read_dir(&outbox)
            .ok()?
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .map(|e| e.path())
    })
    .await;
    let (subject, body, _, _) = parse_email(&std::fs::read(file).unwrap());
    assert!(subject.contains("expires on"), "{subject}");
    assert!(body.contains("in 7 days or less"), "{body}");
}

/// The `alerts` subscription is for staff: no token, a token that does not authenticate and a
/// device token are refused with clear codes; a token revoked while subscribed ends the stream
/// at its next alert; the socket runs subscriptions only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_subscription_is_for_staff_only() {
    const ALERTS: &str = "subscription { alerts { kind message } }";
    let server = TestServer::start(Backend::Sqlite).await;
    let owner = server.owner_token.clone();
    let (_, _, key) = tests::license_with_policy(&server, &owner, "maxActivations: 2").await;
    let device_token =
        activate(&server, &key, "ws-device", components("ws-device")).await["data"]["activateDevice"]["deviceToken"]
            .as_str()
            .unwrap()
            .to_owned();
    let anonymous = AlertSubscriber::connect(&server, None, ALERTS).await.err().unwrap();
    assert!(
        anonymous.contains("closed") && anonymous.contains("connection_init"),
        "{anonymous}"
    );
    let forged = AlertSubscriber::connect(&server, Some("not-a-token"), ALERTS)
        .await
        .err()
        .unwrap();
    assert!(
        forged.contains("closed") && forged.contains("token is invalid"),
        "the server closes the socket saying why: {forged}"
    );
    let device = AlertSubscriber::connect(&server, Some(&device_token), ALERTS)
        .await
        .err()
        .unwrap();
    assert!(device.contains("FORBIDDEN"), "{device}");
    let query = AlertSubscriber::connect(&server, Some(&owner), "{ viewer { vendor { id } } }")
        .await
        .err()
        .unwrap();
    assert!(
        query.contains("INVALID_INPUT") && query.contains("POST /graphql"),
        "{query}"
    );

    // Two READ_ONLY dashboards; one's token is revoked while it listens.
    let kept = tests::api_token(&server, &owner, "READ_ONLY").await;
    let revoked = server
        .ok(
            &owner,
            "mutation { createApiToken(input: {name: \"wall screen\", role: READ_ONLY}) { token apiToken { id } } }",
            json!({}),
        )
        .await;
    let mut kept_dashboard = AlertSubscriber::connect(&server, Some(&kept), ALERTS).await.unwrap();
    let mut revoked_dashboard = AlertSubscriber::connect(&server, revoked["createApiToken"]["token"].as_str(), ALERTS)
        .await
        .unwrap();
    server
        .ok(
            &owner,
            "mutation($id: ID!) { revokeApiToken(id: $id) { id } }",
            json!({ "id": revoked["createApiToken"]["apiToken"]["id"] }),
        )
        .await;
    // The second machine takes the last seat: ACTIVATION_LIMIT_REACHED.
    activate(&server, &key, "ws-device-2", components("ws-device-2")).await;
    let alert = kept_dashboard.next_alert(WAIT).await.unwrap();
    assert_eq!(alert["kind"], "ACTIVATION_LIMIT_REACHED", "{alert}");
    let ended = revoked_dashboard.next_message(WAIT).await.unwrap();
    assert_eq!(
        ended["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{ended}"
    );
}
