//! The anomaly scan against real processes: `licensing-api` (`WORKERS=off`), a
//! `licensing-worker` scanning every second, a real SMTP server, the queue on SQLite (with
//! SQLite) or Redis (with PostgreSQL). The rollups are seeded through the database exactly as
//! the metering write path shapes them; devices, validations and activations go through the
//! API. Also: the device status history the detectors rely on (activation, death in the
//! sweep, revival by a heartbeat, release).

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Datelike as _, DurationRound as _, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _, Order, Query};
use sea_orm::{ConnectionTrait as _, DatabaseConnection, Value as SqlValue};
use serde_json::{Value, json};
use tests::{
    Backend, SmtpSink, TestServer, activate, api_token, components, error_code, eventually, on_both_databases,
    parse_email, two_more_runs, worker_on, worker_queue,
};

const WAIT: Duration = Duration::from_secs(60);
const METER: &str = "api-calls";
const KINDS: [&str; 7] = [
    "USAGE_SPIKE",
    "USAGE_PACE",
    "USAGE_DROP",
    "ACTIVATION_BURST",
    "FINGERPRINT_DRIFT",
    "SHARED_FINGERPRINT",
    "CLOCK_TAMPER",
];

fn hour_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(chrono::Duration::hours(1)).unwrap()
}

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

/// Inserts `rows` of `columns` into `table`.
async fn insert(db: &DatabaseConnection, table: &str, columns: &[&str], rows: Vec<Vec<SqlValue>>) {
    for chunk in rows.chunks(200) {
        let mut statement = Query::insert();
        statement
            .into_table(table.to_owned())
            .columns(columns.iter().map(|c| (*c).to_owned()));
        for row in chunk {
            statement.values_panic(row.iter().cloned().map(Expr::val));
        }
        db.execute(&statement).await.unwrap();
    }
}

/// A license series' rollups as the metering write path leaves them: one `usage_series` row
/// and one `usage_hourly` row per hour with usage (`hours` maps hour → (quantity, skewed)).
async fn seed_series(
    db: &DatabaseConnection,
    vendor: &str,
    license: &str,
    device: &str,
    usage: &BTreeMap<DateTime<Utc>, (i64, i64)>,
    touched_at: DateTime<Utc>,
) {
    let rows = usage
        .iter()
        .map(|(hour, (quantity, skewed))| {
            vec![
                license.into(),
                METER.into(),
                device.into(),
                (*hour).into(),
                vendor.into(),
                (*quantity).into(),
                std::cmp::max(*skewed, 1).into(),
                (*skewed).into(),
                touched_at.into(),
            ]
        })
        .collect();
    let columns = [
        "license_id",
        "meter",
        "device_id",
        "hour",
        "vendor_id",
        "quantity",
        "records",
        "skewed_records",
        "touched_at",
    ];
    insert(db, "usage_hourly", &columns, rows).await;
    let first = *usage.keys().next().unwrap();
    let last = *usage.keys().last().unwrap();
    insert(
        db,
        "usage_series",
        &[
            "license_id",
            "meter",
            "device_id",
            "vendor_id",
            "first_hour",
            "last_hour",
            "touched_at",
        ],
        vec![vec![
            license.into(),
            METER.into(),
            device.into(),
            vendor.into(),
            first.into(),
            last.into(),
            touched_at.into(),
        ]],
    )
    .await;
}

/// Marks every seeded hour as just written again (the same usage seen by a later scan).
async fn touch_usage(db: &DatabaseConnection, license: &str) {
    let now = Utc::now();
    let update = Query::update()
        .table("usage_hourly")
        .value("touched_at", now)
        .and_where(Expr::col("license_id").eq(license))
        .to_owned();
    db.execute(&update).await.unwrap();
}

async fn vendor_of(db: &DatabaseConnection, license: &str) -> String {
    let query = Query::select()
        .column("vendor_id")
        .from("licenses")
        .and_where(Expr::col("id").eq(license))
        .to_owned();
    db.query_one(&query)
        .await
        .unwrap()
        .unwrap()
        .try_get("", "vendor_id")
        .unwrap()
}

async fn customer(server: &TestServer, external_id: &str) -> String {
    server
        .ok(
            &server.owner_token,
            "mutation($e: String!) { upsertCustomer(input: {externalId: $e, name: $e}) { id } }",
            json!({ "e": external_id }),
        )
        .await["upsertCustomer"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A license of a new policy of `fields`, for `customer`; returns (id, key).
async fn license(server: &TestServer, fields: &str, customer: Option<&str>) -> (String, String) {
    let (policy, _, _) = tests::license_with_policy(server, &server.owner_token, fields).await;
    let issued = server
        .ok(
            &server.owner_token,
            "mutation($p: ID!, $c: ID) { issueLicense(input: {policyId: $p, customerId: $c}) { id key } }",
            json!({ "p": policy, "c": customer }),
        )
        .await;
    (
        issued["issueLicense"]["id"].as_str().unwrap().to_owned(),
        issued["issueLicense"]["key"].as_str().unwrap().to_owned(),
    )
}

/// Activates `fingerprint` and returns (device id, device token).
async fn device(server: &TestServer, key: &str, fingerprint: &str) -> (String, String) {
    let res = activate(server, key, fingerprint, components(fingerprint)).await;
    let activated = &res["data"]["activateDevice"];
    assert!(activated.is_object(), "{res}");
    (
        activated["device"]["id"].as_str().unwrap().to_owned(),
        activated["deviceToken"].as_str().unwrap().to_owned(),
    )
}

async fn validate(server: &TestServer, key: &str, fingerprint: &str, tag: &str) {
    let mut presented = components(fingerprint);
    presented[0]["value"] = json!(format!("mac-{tag}"));
    let res = server
        .gql(
            None,
            "mutation($in: ValidateLicenseInput!) { validateLicense(input: $in) { code } }",
            json!({ "in": { "licenseKey": key, "fingerprint": fingerprint, "components": presented } }),
        )
        .await;
    assert_eq!(res["data"]["validateLicense"]["code"], "VALID", "{res}");
}

const ANOMALIES: &str = "query($f: AnomalyFilter) { anomalies(first: 20, filter: $f) { nodes { id kind status meter explanation evidence lastSeenAt license { id } device { id } } } }";

async fn anomalies(server: &TestServer, token: &str, filter: Value) -> Vec<Value> {
    server.ok(token, ANOMALIES, json!({ "f": filter })).await["anomalies"]["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

fn of_kind<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|a| a["kind"] == kind).collect()
}

/// The reset period of the three with the largest share of itself still ahead (the pace
/// detector flags only an allowance running out at least 10% of the period before its end).
fn roomiest_period(now: DateTime<Utc>) -> (&'static str, DateTime<Utc>) {
    let day = now.duration_trunc(chrono::Duration::days(1)).unwrap();
    let week = day - chrono::Duration::days(i64::from(now.weekday().num_days_from_monday()));
    let month = day - chrono::Duration::days(i64::from(now.day0()));
    let month_end = month.checked_add_months(chrono::Months::new(1)).unwrap();
    let ahead = |start: DateTime<Utc>, end: DateTime<Utc>| {
        (end - now).num_seconds() as f64 / (end - start).num_seconds() as f64
    };
    [
        ("DAILY", day, ahead(day, day + chrono::Duration::days(1))),
        ("WEEKLY", week, ahead(week, week + chrono::Duration::weeks(1))),
        ("MONTHLY", month, ahead(month, month_end)),
    ]
    .into_iter()
    .max_by(|a, b| a.2.total_cmp(&b.2))
    .map(|(name, start, _)| (name, start))
    .unwrap()
}

/// Every detector flags its situation exactly once; rescans only move `lastSeenAt`; staff get
/// one digest; another vendor sees nothing; acknowledging works by role and lets the same
/// situation open a new anomaly.
async fn every_detector_flags_once(backend: Backend) {
    let (_redis, queue) = worker_queue(backend);
    let mut env = vec![("WORKERS", "off")];
    env.extend(queue.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let server = TestServer::start_with(backend, &env).await;
    let owner = server.owner_token.clone();
    let sink = SmtpSink::start();
    let (_, other_token) = server.create_vendor("Other", "other", "owner@other.test");
    server
        .ok(
            &owner,
            "mutation { updateVendorSettings(input: {alertEmails: [\"cs@vendor.test\"]}) { id } }",
            json!({}),
        )
        .await;
    let db = server.database().await;
    let now = Utc::now();
    let this_hour = hour_start(now);

    // USAGE_SPIKE: five weeks of a steady 100 an hour, then 4,210 in this hour.
    let (spiky, _) = license(&server, "maxActivations: 5", None).await;
    let vendor = vendor_of(&db, &spiky).await;
    let mut usage: BTreeMap<DateTime<Utc>, (i64, i64)> = (1..=5 * 168)
        .map(|h| (this_hour - hours(h), (100 + (h * 7919) % 11 - 5, 0)))
        .collect();
    usage.insert(this_hour, (4210, 0));
    seed_series(&db, &vendor, &spiky, "", &usage, now).await;

    // USAGE_PACE: 600 of 1,000 used this period, 500 of them in this hour.
    let (period, period_start) = roomiest_period(now);
    let (paced, _) = license(
        &server,
        &format!("maxActivations: 5, meters: [{{code: \"{METER}\", limit: 1000, resetPeriod: {period}}}]"),
        None,
    )
    .await;
    seed_series(&db, &vendor, &paced, "", &BTreeMap::from([(this_hour, (500, 0))]), now).await;
    insert(
        &db,
        "meter_totals",
        &["license_id", "meter", "period_start", "used"],
        vec![vec![
            paced.as_str().into(),
            METER.into(),
            period_start.into(),
            600_i64.into(),
        ]],
    )
    .await;

    // USAGE_DROP: a heartbeating device that used the meter in the last complete hour (and
    // the one after it, should the hour turn during the test) in each of the previous three
    // weeks, and not now.
    let (quiet, quiet_key) = license(&server, "maxActivations: 5, heartbeatIntervalSeconds: 3600", None).await;
    let (quiet_device, quiet_token) = device(&server, &quiet_key, "quiet-1").await;
    let mut usage = BTreeMap::new();
    for week in 1..=3 {
        for hour in [this_hour - hours(1), this_hour] {
            usage.insert(hour - chrono::Duration::weeks(week), (40 + week, 0));
        }
    }
    seed_series(&db, &vendor, &quiet, &quiet_device, &usage, now - hours(2)).await;

    // ACTIVATION_BURST: eleven distinct devices became ACTIVE on a one-seat license today.
    let (hopping, _) = license(&server, "maxActivations: 1", None).await;
    let burst: Vec<Vec<SqlValue>> = (0..11)
        .map(|i| {
            vec![
                uuid::Uuid::now_v7().to_string().into(),
                vendor.as_str().into(),
                hopping.as_str().into(),
                format!("hopper-{i}").into(),
                "ACTIVE".into(),
                (now - chrono::Duration::minutes(30 + i)).into(),
            ]
        })
        .collect();
    let status_columns = ["id", "vendor_id", "license_id", "device_id", "status", "at"];
    insert(&db, "device_status_changes", &status_columns, burst).await;

    // FINGERPRINT_DRIFT: a device validating with three other component sets.
    let (drifting, drifting_key) = license(&server, "maxActivations: 5", None).await;
    let (drifting_device, _) = device(&server, &drifting_key, "drift-1").await;
    for tag in ["a", "b", "c"] {
        validate(&server, &drifting_key, "drift-1", tag).await;
    }

    // SHARED_FINGERPRINT: one machine activated on licenses of three customers.
    let mut shared_devices = Vec::new();
    for n in 1..=3 {
        let buyer = customer(&server, &format!("buyer-{n}")).await;
        let (licensed, key) = license(&server, "maxActivations: 5", Some(&buyer)).await;
        shared_devices.push((licensed, device(&server, &key, "shared-machine").await.0));
    }

    // CLOCK_TAMPER: a device series with three records dated ahead of the server clock.
    let (skewed, _) = license(&server, "maxActivations: 5", None).await;
    seed_series(
        &db,
        &vendor,
        &skewed,
        "skewed-device",
        &BTreeMap::from([(this_hour, (3, 3))]),
        now,
    )
    .await;

    let smtp = sink.url();
    let scan_env = [
        ("SMTP_URL", smtp.as_str()),
        ("ANOMALY_SCAN_SECS", "1"),
        ("HEARTBEAT_SWEEP_SECS", "1"),
    ];
    let _worker = worker_on(&server, &queue, &scan_env);
    let flagged = eventually(WAIT, "every detector to flag", || async {
        let all = anomalies(&server, &owner, json!({})).await;
        KINDS.iter().all(|k| !of_kind(&all, k).is_empty()).then_some(all)
    })
    .await;
    two_more_runs(&server, "anomaly_scan").await;
    let all = anomalies(&server, &owner, json!({})).await;
    assert_eq!(all.len(), KINDS.len(), "one anomaly per detector: {all:#?}");
    for kind in KINDS {
        let found = of_kind(&all, kind);
        assert_eq!(found.len(), 1, "{kind}: {found:?}");
        let evidence = &found[0]["evidence"];
        for field in [
            "detector",
            "series",
            "window",
            "observed",
            "baseline",
            "score",
            "threshold",
        ] {
            assert!(
                evidence.get(field).is_some(),
                "{kind} evidence lacks {field}: {evidence}"
            );
        }
    }
    let explanation = |kind: &str| of_kind(&all, kind)[0]["explanation"].as_str().unwrap().to_owned();
    let spike = of_kind(&all, "USAGE_SPIKE")[0];
    assert_eq!(spike["license"]["id"], spiky.as_str());
    assert_eq!(spike["meter"], METER);
    assert!(
        explanation("USAGE_SPIKE").contains("used 4,210 in the hour"),
        "{}",
        explanation("USAGE_SPIKE")
    );
    assert_eq!(spike["evidence"]["observed"], 4210.0);
    let median = spike["evidence"]["baseline"]["median"].as_f64().unwrap();
    assert!((95.0..=105.0).contains(&median), "{spike}");
    let usual = format!("its usual {}", median.round());
    assert!(
        explanation("USAGE_SPIKE").contains(&usual),
        "{}",
        explanation("USAGE_SPIKE")
    );
    assert_eq!(of_kind(&all, "USAGE_PACE")[0]["license"]["id"], paced.as_str());
    assert!(
        explanation("USAGE_PACE").contains("used 600 of its 1,000 limit"),
        "{}",
        explanation("USAGE_PACE")
    );
    assert_eq!(of_kind(&all, "USAGE_DROP")[0]["device"]["id"], quiet_device.as_str());
    assert_eq!(of_kind(&all, "ACTIVATION_BURST")[0]["license"]["id"], hopping.as_str());
    assert!(explanation("ACTIVATION_BURST").contains("activated 11 distinct devices"));
    assert_eq!(
        of_kind(&all, "FINGERPRINT_DRIFT")[0]["device"]["id"],
        drifting_device.as_str()
    );
    assert_eq!(
        of_kind(&all, "FINGERPRINT_DRIFT")[0]["license"]["id"],
        drifting.as_str()
    );
    assert!(explanation("SHARED_FINGERPRINT").contains("3 different customers"));
    assert_eq!(of_kind(&all, "CLOCK_TAMPER")[0]["license"]["id"], skewed.as_str());
    assert!(explanation("CLOCK_TAMPER").contains("sent 3 api-calls records"));

    // One digest email lists them all.
    let mail = sink.wait_for(1, WAIT).await;
    let (subject, body, _, _) = parse_email(&mail[0]);
    assert!(subject.contains("7 anomalies"), "{subject}");
    for kind in KINDS {
        let first_words: String = explanation(kind).chars().take(40).collect();
        assert!(
            body.contains(&first_words),
            "the digest lists {kind} ({first_words}): {body}"
        );
    }

    // The same situations seen again: nothing new, lastSeenAt moves.
    let before: BTreeMap<String, String> = flagged
        .iter()
        .chain(all.iter())
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["lastSeenAt"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for touched in [&spiky, &paced, &skewed, &quiet] {
        touch_usage(&db, touched).await;
    }
    server
        .ok(&quiet_token, "mutation { heartbeat { licenseVersion } }", json!({}))
        .await;
    validate(&server, &drifting_key, "drift-1", "a").await;
    // A seat hopper and the shared machine activate again.
    let again: Vec<Vec<SqlValue>> = [(hopping.clone(), "hopper-0".to_owned()), shared_devices[0].clone()]
        .into_iter()
        .map(|(license, device)| {
            vec![
                uuid::Uuid::now_v7().to_string().into(),
                vendor.as_str().into(),
                license.into(),
                device.into(),
                "ACTIVE".into(),
                Utc::now().into(),
            ]
        })
        .collect();
    insert(&db, "device_status_changes", &status_columns, again).await;
    two_more_runs(&server, "anomaly_scan").await;
    two_more_runs(&server, "heartbeat_sweep").await;
    let later = anomalies(&server, &owner, json!({})).await;
    assert_eq!(later.len(), KINDS.len(), "rescans open nothing new: {later:#?}");
    for a in &later {
        let id = a["id"].as_str().unwrap();
        let seen = a["lastSeenAt"].as_str().unwrap();
        let earlier = &before[id];
        assert!(
            DateTime::parse_from_rfc3339(seen).unwrap() > DateTime::parse_from_rfc3339(earlier).unwrap(),
            "{} was seen again: {earlier} -> {seen}",
            a["kind"]
        );
    }
    assert_eq!(sink.messages().len(), 1, "a repeat alerts nobody");

    // Another vendor sees none of it.
    assert!(anomalies(&server, &other_token, json!({})).await.is_empty());
    let spike_id = spike["id"].as_str().unwrap().to_owned();
    let foreign = server
        .ok(
            &other_token,
            "query($id: ID!) { anomaly(id: $id) { id } }",
            json!({ "id": spike_id }),
        )
        .await;
    assert_eq!(foreign["anomaly"], Value::Null);

    // Acknowledging: OWNER, ADMIN and SUPPORT may; READ_ONLY and INTEGRATION are refused.
    let acknowledge = "mutation($id: ID!, $n: String) { acknowledgeAnomaly(id: $id, note: $n) { status note } }";
    let id_of = |kind: &str| {
        later.iter().find(|a| a["kind"] == kind).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for role in ["READ_ONLY", "INTEGRATION"] {
        let token = api_token(&server, &owner, role).await;
        let res = server
            .gql(
                Some(&token),
                acknowledge,
                json!({ "id": id_of("CLOCK_TAMPER"), "n": "no" }),
            )
            .await;
        assert_eq!(error_code(&res), Some("FORBIDDEN"), "{role}: {res}");
    }
    let foreign = server
        .gql(Some(&other_token), acknowledge, json!({ "id": id_of("CLOCK_TAMPER") }))
        .await;
    assert_eq!(error_code(&foreign), Some("NOT_FOUND"), "{foreign}");
    let admin = api_token(&server, &owner, "ADMIN").await;
    let support = api_token(&server, &owner, "SUPPORT").await;
    for (token, kind) in [
        (&owner, "USAGE_PACE"),
        (&admin, "USAGE_SPIKE"),
        (&support, "CLOCK_TAMPER"),
    ] {
        let done = server
            .ok(token, acknowledge, json!({ "id": id_of(kind), "n": "looked at" }))
            .await;
        assert_eq!(done["acknowledgeAnomaly"]["status"], "ACKNOWLEDGED", "{kind}");
    }

    // The clock keeps disagreeing: a new anomaly opens next to the acknowledged one.
    touch_usage(&db, &skewed).await;
    eventually(WAIT, "a new CLOCK_TAMPER", || async {
        let clock = anomalies(&server, &owner, json!({ "kinds": ["CLOCK_TAMPER"] })).await;
        (clock.len() == 2).then_some(())
    })
    .await;
    let open = anomalies(&server, &owner, json!({ "kinds": ["CLOCK_TAMPER"], "status": "OPEN" })).await;
    assert_eq!(open.len(), 1, "{open:?}");
}
on_both_databases!(
    every_detector_flags_once_and_rescans_repeat_nothing,
    every_detector_flags_once
);

/// The status history of one device, in order.
async fn history(db: &DatabaseConnection, device: &str) -> Vec<String> {
    let query = Query::select()
        .column("status")
        .from("device_status_changes")
        .and_where(Expr::col("device_id").eq(device))
        .order_by("at", Order::Asc)
        .order_by("id", Order::Asc)
        .to_owned();
    db.query_all(&query)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get::<String>("", "status").unwrap())
        .collect()
}

/// A device's status history: ACTIVE on activation, DEAD when the sweep finds it silent,
/// ACTIVE again when a heartbeat revives it (KEEP_SEAT), RELEASED when staff release it; a
/// validation presenting its activated components writes no observation.
async fn status_history(backend: Backend) {
    let (_redis, queue) = worker_queue(backend);
    let mut env = vec![("WORKERS", "off")];
    env.extend(queue.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let server = TestServer::start_with(backend, &env).await;
    let db = server.database().await;
    let (_, key) = license(
        &server,
        "maxActivations: 2, heartbeatIntervalSeconds: 60, deadDeviceAction: KEEP_SEAT",
        None,
    )
    .await;
    let (id, token) = device(&server, &key, "history-1").await;
    assert_eq!(history(&db, &id).await, ["ACTIVE"]);
    let matching = server
        .gql(
            None,
            "mutation($in: ValidateLicenseInput!) { validateLicense(input: $in) { code } }",
            json!({ "in": { "licenseKey": key, "fingerprint": "history-1", "components": components("history-1") } }),
        )
        .await;
    assert_eq!(matching["data"]["validateLicense"]["code"], "VALID", "{matching}");
    let observations = Query::select()
        .expr(Expr::col("device_id").count())
        .from("fingerprint_observations")
        .to_owned();
    let count: i64 = db
        .query_one(&observations)
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    assert_eq!(count, 0, "the activated components are no observation");

    let _worker = worker_on(&server, &queue, &[("HEARTBEAT_SWEEP_SECS", "1")]);
    server.set_clock_offset(150);
    eventually(WAIT, "the sweep to mark the device dead", || async {
        (history(&db, &id).await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(history(&db, &id).await, ["ACTIVE", "DEAD"]);
    let beat = server
        .ok(&token, "mutation { heartbeat { licenseVersion } }", json!({}))
        .await;
    assert!(beat["heartbeat"].is_object(), "{beat}");
    assert_eq!(history(&db, &id).await, ["ACTIVE", "DEAD", "ACTIVE"], "revived");
    server
        .ok(
            &server.owner_token,
            "mutation($id: ID!) { releaseDevice(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(history(&db, &id).await, ["ACTIVE", "DEAD", "ACTIVE", "RELEASED"]);
    two_more_runs(&server, "heartbeat_sweep").await;
    assert_eq!(
        history(&db, &id).await,
        ["ACTIVE", "DEAD", "ACTIVE", "RELEASED"],
        "a released device does not die"
    );
}
on_both_databases!(device_status_history_is_kept, status_history);
