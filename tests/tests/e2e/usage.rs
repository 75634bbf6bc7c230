//! Consumption metering end to end (scenario 5): limits and overage exact under races,
//! idempotent retries, every bad input refused without a change, calendar periods and the
//! usage history, per-license meters in the license file, staff corrections, and usage
//! reports through the real `licensing-client` (counted once, duplicates, a restored ledger
//! flagged, a re-keyed device's new ledger counted in full).

#![expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]

use chrono::{Duration, Utc};
use sea_orm::ConnectionTrait as _;
use sea_orm::sea_query::{Expr, ExprTrait as _, Query};
use serde_json::{Value, json};
use tests::{
    Backend, ClientMachine, TestServer, activate, api_token, components, error_code, license_with_policy,
    on_both_databases, verify_license_file,
};

use crate::client::offline_activation;

const RECORD: &str = "mutation($in: RecordUsageInput!) { recordUsage(input: $in) { meter used limit remaining periodStart periodEnd overageUsed lifetimeUsed } }";
const USAGE: &str = "query($id: ID) { license(id: $id) { usage { meter used limit remaining periodStart periodEnd overageUsed lifetimeUsed } } }";
const ADJUST: &str = "mutation($in: AdjustUsageInput!) { adjustUsage(input: $in) { used lifetimeUsed } }";
const REPORT: &str = "mutation($f: String!) { importUsageReport(file: $f) { acceptedRecords duplicateRecords anomalies { kind explanation } } }";

/// A device token on a fresh license whose policy has `meters`; returns (license id, key, token).
async fn metered_device(server: &TestServer, meters: &str) -> (String, String, String) {
    let (_, license, key) = license_with_policy(server, &server.owner_token, &format!("meters: {meters}")).await;
    let activation = activate(server, &key, "fp-metered", components("metered")).await;
    let token = activation["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{activation}"))
        .to_owned();
    (license, key, token)
}

fn record(meter: &str, quantity: i64, key: &str) -> Value {
    json!({ "in": { "meter": meter, "quantity": quantity, "idempotencyKey": key } })
}

async fn usage_of(server: &TestServer, license: &str) -> Value {
    server.ok(&server.owner_token, USAGE, json!({ "id": license })).await["license"]["usage"][0].clone()
}

/// `usage_records` rows of a license.
async fn stored_records(server: &TestServer, license: &str) -> i64 {
    let query = Query::select()
        .expr(Expr::col("id").count())
        .from("usage_records")
        .and_where(Expr::col("license_id").eq(license))
        .to_owned();
    let db = server.database().await;
    db.query_one(&query)
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap()
}

/// 60 single units race for a limit of 20 + 5 overage: exactly 25 count, the rest are refused
/// whole; a retry answers the first answer and counts once; other input under a used key is a
/// conflict.
async fn limits_hold_under_races(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (license, _, device) = metered_device(
        &server,
        "[{code: \"api\", limit: 20, resetPeriod: DAILY, overageLimit: 5}]",
    )
    .await;
    let calls = (0..60).map(|i| {
        let (server, device) = (&server, &device);
        async move {
            server
                .gql(Some(device), RECORD, record("api", 1, &format!("race-{i}")))
                .await
        }
    });
    let answers = futures::future::join_all(calls).await;
    let counted = answers.iter().filter(|a| a["data"]["recordUsage"].is_object()).count();
    let refused = answers
        .iter()
        .filter(|a| error_code(a) == Some("USAGE_LIMIT_EXCEEDED"))
        .count();
    assert_eq!((counted, refused), (25, 35), "{answers:?}");
    let usage = usage_of(&server, &license).await;
    assert_eq!(usage["used"], 25, "{usage}");
    assert_eq!(usage["remaining"], 0);
    assert_eq!(usage["overageUsed"], 5);
    assert_eq!(usage["lifetimeUsed"], 25);
    assert_eq!(
        stored_records(&server, &license).await,
        25,
        "refused calls store nothing"
    );

    // A retry of a counted call answers exactly what it answered first, and counts nothing.
    let (i, first) = answers
        .iter()
        .enumerate()
        .find(|(_, a)| a["data"]["recordUsage"].is_object())
        .unwrap();
    let again = server.ok(&device, RECORD, record("api", 1, &format!("race-{i}"))).await;
    assert_eq!(again, first["data"]);
    assert_eq!(usage_of(&server, &license).await["used"], 25);
    let conflict = server
        .gql(Some(&device), RECORD, record("api", 2, &format!("race-{i}")))
        .await;
    assert_eq!(error_code(&conflict), Some("IDEMPOTENCY_CONFLICT"), "{conflict}");
    // A refused quantity counts nothing, whatever its size.
    let refused = server.gql(Some(&device), RECORD, record("api", 1, "late")).await;
    assert_eq!(error_code(&refused), Some("USAGE_LIMIT_EXCEEDED"), "{refused}");
    assert_eq!(stored_records(&server, &license).await, 25);
}
on_both_databases!(limit_and_overage_hold_exactly_under_races, limits_hold_under_races);

/// Every bad input gets its code and changes nothing.
async fn bad_inputs(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (license, key, device) = metered_device(&server, "[{code: \"api\", limit: 100}]").await;
    let now = Utc::now();
    let at = |t: chrono::DateTime<Utc>| t.to_rfc3339();
    let input = |meter: &str, quantity: i64, key: &str, recorded_at: Option<String>| json!({ "in": { "meter": meter, "quantity": quantity, "idempotencyKey": key, "recordedAt": recorded_at } });
    let cases = [
        ("unknown meter", input("prints", 1, "k1", None), "INVALID_INPUT"),
        ("zero", input("api", 0, "k2", None), "INVALID_INPUT"),
        ("negative", input("api", -5, "k3", None), "INVALID_INPUT"),
        ("over 10^9", input("api", 1_000_000_001, "k4", None), "INVALID_INPUT"),
        (
            "too old",
            input("api", 1, "k5", Some(at(now - Duration::days(36)))),
            "INVALID_INPUT",
        ),
        (
            "in the future",
            input("api", 1, "k6", Some(at(now + Duration::minutes(10)))),
            "INVALID_INPUT",
        ),
        (
            "a 5,000-character key",
            input("api", 1, &"k".repeat(5000), None),
            "INVALID_INPUT",
        ),
        ("an empty key", input("api", 1, "", None), "INVALID_INPUT"),
    ];
    for (what, variables, code) in cases {
        let res = server.gql(Some(&device), RECORD, variables).await;
        assert_eq!(error_code(&res), Some(code), "{what}: {res}");
    }
    let anonymous = server.gql(None, RECORD, record("api", 1, "k7")).await;
    assert_eq!(error_code(&anonymous), Some("UNAUTHENTICATED"), "{anonymous}");
    let staff = server
        .gql(Some(&server.owner_token), RECORD, record("api", 1, "k8"))
        .await;
    assert_eq!(error_code(&staff), Some("FORBIDDEN"), "{staff}");
    let license_key_as_token = server.gql(Some(&key), RECORD, record("api", 1, "k9")).await;
    assert!(error_code(&license_key_as_token).is_some(), "{license_key_as_token}");
    assert_eq!(usage_of(&server, &license).await["used"], 0);
    assert_eq!(stored_records(&server, &license).await, 0);

    // A license not in force refuses usage with its own code.
    server
        .ok(
            &server.owner_token,
            "mutation($id: ID!) { suspendLicense(id: $id) { status } }",
            json!({ "id": license }),
        )
        .await;
    let suspended = server.gql(Some(&device), RECORD, record("api", 1, "k10")).await;
    assert_eq!(error_code(&suspended), Some("LICENSE_SUSPENDED"), "{suspended}");
    assert_eq!(stored_records(&server, &license).await, 0);
}
on_both_databases!(bad_usage_input_changes_nothing, bad_inputs);

/// A daily meter: yesterday's record is in lifetime, not in today's period; the history agrees
/// with the records, by hour and by day.
async fn periods_and_history(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (license, _, device) = metered_device(&server, "[{code: \"api\", limit: 1000, resetPeriod: DAILY}]").await;
    let now = Utc::now();
    let yesterday = now - Duration::days(1);
    let dated = |quantity: i64, key: &str, at: chrono::DateTime<Utc>| json!({ "in": { "meter": "api", "quantity": quantity, "idempotencyKey": key, "recordedAt": at.to_rfc3339() } });
    server.ok(&device, RECORD, dated(7, "y", yesterday)).await;
    let today = server.ok(&device, RECORD, dated(5, "t", now)).await["recordUsage"].clone();
    assert_eq!(today["used"], 5, "{today}");
    assert_eq!(today["lifetimeUsed"], 12);
    let start = now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(today["periodStart"].as_str().unwrap()).unwrap(),
        start
    );
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(today["periodEnd"].as_str().unwrap()).unwrap(),
        start + Duration::days(1)
    );
    assert_eq!(usage_of(&server, &license).await, today);

    let history = |bucket: &str| {
        server.ok(
            &server.owner_token,
            "query($id: ID, $f: DateTime, $b: UsageBucket) { license(id: $id) { usageHistory(meter: \"api\", from: $f, bucket: $b) { start quantity } } }",
            json!({ "id": license, "f": (yesterday - Duration::hours(1)).to_rfc3339(), "b": bucket }),
        )
    };
    let days = history("DAY").await["license"]["usageHistory"].clone();
    let days: Vec<i64> = days
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["quantity"].as_i64().unwrap())
        .collect();
    assert_eq!(days.iter().sum::<i64>(), 12, "{days:?}");
    assert_eq!(
        *days.last().unwrap(),
        5,
        "today's bucket holds today's record: {days:?}"
    );
    let hours = history("HOUR").await["license"]["usageHistory"].clone();
    let hours = hours.as_array().unwrap();
    assert!(hours.len() >= 25, "{} hours", hours.len());
    let nonzero: Vec<i64> = hours
        .iter()
        .map(|p| p["quantity"].as_i64().unwrap())
        .filter(|q| *q > 0)
        .collect();
    assert_eq!(nonzero, vec![7, 5]);
    let unknown = server
        .gql(
            Some(&server.owner_token),
            "query($id: ID) { license(id: $id) { usageHistory(meter: \"nope\") { start } } }",
            json!({ "id": license }),
        )
        .await;
    assert_eq!(error_code(&unknown), Some("INVALID_INPUT"), "{unknown}");
}
on_both_databases!(calendar_periods_and_usage_history, periods_and_history);

/// A license's own meters override the policy's, in the limits and in the license file.
async fn license_meters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (policy, _, _) = license_with_policy(&server, &token, "meters: [{code: \"api\", limit: 10}]").await;
    let issued = server
        .ok(
            &token,
            "mutation($p: ID!) { issueLicense(input: {policyId: $p, meters: [{code: \"api\", limit: 3}, {code: \"gpu\", resetPeriod: MONTHLY}]}) { id key } }",
            json!({ "p": policy }),
        )
        .await;
    let (license, key) = (
        issued["issueLicense"]["id"].as_str().unwrap().to_owned(),
        issued["issueLicense"]["key"].as_str().unwrap().to_owned(),
    );
    let activation = activate(&server, &key, "fp-own", components("own")).await;
    let payload = verify_license_file(
        &server,
        activation["data"]["activateDevice"]["licenseFile"].as_str().unwrap(),
    )
    .await;
    let meters: Vec<(String, Option<i64>, String)> = payload
        .meters
        .iter()
        .map(|m| (m.code.clone(), m.limit, m.reset_period.clone()))
        .collect();
    assert_eq!(
        meters,
        vec![
            ("api".into(), Some(3), "NEVER".into()),
            ("gpu".into(), None, "MONTHLY".into())
        ]
    );
    let device = activation["data"]["activateDevice"]["deviceToken"]
        .as_str()
        .unwrap()
        .to_owned();
    server.ok(&device, RECORD, record("api", 3, "a")).await;
    let over = server.gql(Some(&device), RECORD, record("api", 1, "b")).await;
    assert_eq!(error_code(&over), Some("USAGE_LIMIT_EXCEEDED"), "{over}");
    // Back to the policy's meters: the limit is 10 again.
    server
        .ok(
            &token,
            "mutation($id: ID!) { updateLicense(input: {id: $id, meters: []}) { version } }",
            json!({ "id": license }),
        )
        .await;
    let more = server.ok(&device, RECORD, record("api", 1, "b")).await;
    assert_eq!(more["recordUsage"]["limit"], 10, "{more}");
    assert_eq!(more["recordUsage"]["used"], 4);
    let duplicate = server
        .gql(
            Some(&token),
            "mutation($p: ID!) { issueLicense(input: {policyId: $p, meters: [{code: \"x\"}, {code: \"x\"}]}) { id } }",
            json!({ "p": policy }),
        )
        .await;
    assert_eq!(error_code(&duplicate), Some("INVALID_INPUT"), "{duplicate}");
}
on_both_databases!(license_meters_override_the_policy, license_meters);

/// Staff corrections: audited, idempotent, never below zero, people only.
async fn adjustments(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (license, _, device) = metered_device(&server, "[{code: \"api\", limit: 100, resetPeriod: MONTHLY}]").await;
    server.ok(&device, RECORD, record("api", 10, "a")).await;
    let support = api_token(&server, &server.owner_token, "SUPPORT").await;
    let adjust = |delta: i64, key: &str, reason: &str| json!({ "in": { "licenseId": license, "meter": "api", "delta": delta, "reason": reason, "idempotencyKey": key } });
    let first = server
        .ok(&support, ADJUST, adjust(-4, "refund-1", "double-counted batch"))
        .await;
    assert_eq!(first["adjustUsage"]["used"], 6, "{first}");
    let again = server
        .ok(&support, ADJUST, adjust(-4, "refund-1", "double-counted batch"))
        .await;
    assert_eq!(again, first);
    let conflict = server
        .gql(Some(&support), ADJUST, adjust(-5, "refund-1", "double-counted batch"))
        .await;
    assert_eq!(error_code(&conflict), Some("IDEMPOTENCY_CONFLICT"), "{conflict}");
    let below_zero = server
        .gql(Some(&support), ADJUST, adjust(-7, "refund-2", "too much"))
        .await;
    assert_eq!(error_code(&below_zero), Some("INVALID_INPUT"), "{below_zero}");
    let no_reason = server.gql(Some(&support), ADJUST, adjust(1, "r3", "")).await;
    assert_eq!(error_code(&no_reason), Some("INVALID_INPUT"), "{no_reason}");
    let zero = server.gql(Some(&support), ADJUST, adjust(0, "r4", "nothing")).await;
    assert_eq!(error_code(&zero), Some("INVALID_INPUT"), "{zero}");
    for role in ["INTEGRATION", "READ_ONLY"] {
        let token = api_token(&server, &server.owner_token, role).await;
        let res = server.gql(Some(&token), ADJUST, adjust(1, "r5", "goodwill")).await;
        assert_eq!(error_code(&res), Some("FORBIDDEN"), "{role}: {res}");
    }
    let (_, other) = server.create_vendor("Other", "other", "owner@other.test");
    let foreign = server.gql(Some(&other), ADJUST, adjust(1, "r6", "goodwill")).await;
    assert_eq!(error_code(&foreign), Some("NOT_FOUND"), "{foreign}");
    assert_eq!(usage_of(&server, &license).await["used"], 6);
    let audit = server
        .ok(
            &server.owner_token,
            "query($t: ID) { auditEvents(targetId: $t) { nodes { action diff } } }",
            json!({ "t": license }),
        )
        .await;
    let adjusted: Vec<&Value> = audit["auditEvents"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "usage.adjust")
        .collect();
    assert_eq!(adjusted.len(), 1, "{audit}");
    assert_eq!(
        adjusted[0]["diff"]["after"]["reason"], "double-counted batch",
        "{audit}"
    );
}
on_both_databases!(staff_adjust_usage, adjustments);

fn import(machine: &ClientMachine, name: &str) -> String {
    let out = machine.file(name);
    machine.ok(&["usage-report", "--out", out.to_str().unwrap()]);
    std::fs::read_to_string(out).unwrap()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Usage reports through the real client: counted once; the same report again is all
/// duplicates; a restored old state that records more is a fork, with nothing counted; a
/// device that activates again with a new key starts a new ledger, counted in full.
async fn usage_reports(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) =
        license_with_policy(&server, &token, "deploymentMode: OFFLINE, meters: [{code: \"scans\"}]").await;
    let machine = ClientMachine::new(&server, &token, "machine-id=m-u,mac=aa:01,cpu=Xeon,disk=disk-u").await;
    let (device_id, file) = offline_activation(&server, &token, &machine, &key).await;
    machine.ok(&["install", &file]);
    machine.ok(&["use", "scans", "5"]);
    machine.ok(&["use", "scans", "7"]);
    let first = import(&machine, "report-1.txt");
    assert!(first.starts_with("-----BEGIN USAGE REPORT-----"), "{first}");
    let receipt = server.ok(&token, REPORT, json!({ "f": first })).await["importUsageReport"].clone();
    assert_eq!(
        receipt,
        json!({ "acceptedRecords": 2, "duplicateRecords": 0, "anomalies": [] })
    );
    let again = server.ok(&token, REPORT, json!({ "f": first })).await["importUsageReport"].clone();
    assert_eq!(
        again,
        json!({ "acceptedRecords": 0, "duplicateRecords": 2, "anomalies": [] })
    );
    assert_eq!(usage_of(&server, &license).await["used"], 12);

    // Bad files change nothing.
    let tampered = first.replacen('A', "B", 1);
    for bad in [tampered.as_str(), "not a report", &first[..first.len() / 2]] {
        let res = server.gql(Some(&token), REPORT, json!({ "f": bad })).await;
        assert_eq!(error_code(&res), Some("INVALID_FILE"), "{res}");
    }

    // The refresh file acknowledges what was counted; a report now carries only what is new.
    let snapshot = machine.file("state-before");
    copy_dir(&machine.state(), &snapshot);
    machine.ok(&["use", "scans", "1"]);
    let refresh = server
        .ok(
            &token,
            "mutation($d: ID!) { exportLicenseFile(deviceId: $d) }",
            json!({ "d": device_id }),
        )
        .await["exportLicenseFile"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(verify_license_file(&server, &refresh).await.usage_ack.unwrap().seq, 2);
    let refresh_path = machine.file("refresh.lic");
    std::fs::write(&refresh_path, &refresh).unwrap();
    machine.ok(&["install", refresh_path.to_str().unwrap()]);
    let second = import(&machine, "report-2.txt");
    let receipt = server.ok(&token, REPORT, json!({ "f": second })).await["importUsageReport"].clone();
    assert_eq!(receipt["acceptedRecords"], 1, "{receipt}");
    assert_eq!(usage_of(&server, &license).await["used"], 13);

    // The old state directory restored: it records something else as record 3.
    std::fs::remove_dir_all(machine.state()).unwrap();
    copy_dir(&snapshot, &machine.state());
    machine.ok(&["use", "scans", "40"]);
    let forked = import(&machine, "report-3.txt");
    let receipt = server.ok(&token, REPORT, json!({ "f": forked })).await["importUsageReport"].clone();
    assert_eq!(receipt["acceptedRecords"], 0, "{receipt}");
    let kind = receipt["anomalies"][0]["kind"].as_str().unwrap();
    assert!(["LEDGER_FORK", "LEDGER_ROLLBACK"].contains(&kind), "{receipt}");
    assert_eq!(
        usage_of(&server, &license).await["used"],
        13,
        "nothing of the fork counted"
    );

    // The same machine installed afresh: a new device key, a new ledger from record 1.
    let fresh = machine.sibling(&machine.components);
    let (again_id, file) = offline_activation(&server, &token, &fresh, &key).await;
    assert_eq!(again_id, device_id, "same fingerprint, same device");
    fresh.ok(&["install", &file]);
    fresh.ok(&["use", "scans", "2"]);
    fresh.ok(&["use", "scans", "3"]);
    let rekeyed = import(&fresh, "report-4.txt");
    let receipt = server.ok(&token, REPORT, json!({ "f": rekeyed })).await["importUsageReport"].clone();
    assert_eq!(
        receipt,
        json!({ "acceptedRecords": 2, "duplicateRecords": 0, "anomalies": [] })
    );
    assert_eq!(usage_of(&server, &license).await["used"], 18);
}
on_both_databases!(usage_reports_through_the_client, usage_reports);

/// A device offline for long reports thousands of records at once: the report (far over the
/// 64 KiB anonymous body cap) is imported whole by staff.
async fn large_report(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) =
        license_with_policy(&server, &token, "deploymentMode: OFFLINE, meters: [{code: \"scans\"}]").await;
    let offline = server
        .ok(
            &token,
            "mutation($r: String!) { generateOfflineLicense(request: $r) { licenseFile } }",
            json!({ "r": tests::activation_request(&key, 21, "far-away", Default::default()) }),
        )
        .await;
    let usage: Vec<(&str, i64)> = (0..3000).map(|_| ("scans", 2)).collect();
    let report = tests::usage_report_file(
        21,
        offline["generateOfflineLicense"]["licenseFile"].as_str().unwrap(),
        &usage,
    );
    assert!(report.len() > 500_000, "{} bytes", report.len());
    let receipt = server.ok(&token, REPORT, json!({ "f": report })).await["importUsageReport"].clone();
    assert_eq!(
        receipt,
        json!({ "acceptedRecords": 3000, "duplicateRecords": 0, "anomalies": [] })
    );
    assert_eq!(usage_of(&server, &license).await["used"], 6000);
}
on_both_databases!(a_large_usage_report_is_imported_whole, large_report);

/// Usage recorded while the device was dead (it stopped heartbeating but kept working) is
/// counted and flagged USAGE_WHILE_DEAD, once per dead span; usage after its revival is not.
async fn usage_while_dead(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (license, _, device) = metered_device(&server, "[{code: \"api\"}], heartbeatIntervalSeconds: 60").await;
    let flags = || async {
        server
            .ok(
                &server.owner_token,
                "{ anomalies(filter: {kinds: [USAGE_WHILE_DEAD]}) { nodes { id kind meter explanation evidence lastSeenAt license { id } } } }",
                json!({}),
            )
            .await["anomalies"]["nodes"]
            .as_array()
            .unwrap()
            .clone()
    };
    server.ok(&device, RECORD, record("api", 1, "alive")).await;
    assert!(flags().await.is_empty());

    // 15 minutes without a heartbeat: dead since its deadline; its usage now is flagged.
    server.set_clock_offset(900);
    let counted = server.ok(&device, RECORD, record("api", 4, "silent-1")).await;
    assert_eq!(counted["recordUsage"]["used"], 5, "the usage happened: counted");
    let flagged = flags().await;
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert_eq!(flagged[0]["license"]["id"], license.as_str());
    assert_eq!(flagged[0]["meter"], "api");
    let explanation = flagged[0]["explanation"].as_str().unwrap();
    assert!(
        explanation.contains("while it was dead") && explanation.contains("4 units"),
        "{explanation}"
    );
    assert_eq!(flagged[0]["evidence"]["quantity"], 4);
    // More usage in the same dead span repeats the flag, it does not open another.
    server.set_clock_offset(960);
    server.ok(&device, RECORD, record("api", 2, "silent-2")).await;
    let repeated = flags().await;
    assert_eq!(repeated.len(), 1, "{repeated:?}");
    assert_ne!(repeated[0]["lastSeenAt"], flagged[0]["lastSeenAt"]);
    assert_eq!(repeated[0]["evidence"]["quantity"], 2);

    // A heartbeat revives it: usage from now on is not flagged.
    server
        .ok(&device, "mutation { heartbeat { licenseVersion } }", json!({}))
        .await;
    server.ok(&device, RECORD, record("api", 1, "alive-again")).await;
    assert_eq!(flags().await.len(), 1);
    assert_eq!(usage_of(&server, &license).await["used"], 8);
}
on_both_databases!(usage_while_dead_is_flagged, usage_while_dead);

/// Late records that take a period past its limit are counted (the usage happened) and the
/// period is flagged USAGE_OVER_LIMIT, once.
async fn late_records_over_the_limit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let token = server.owner_token.clone();
    let (_, license, key) = license_with_policy(
        &server,
        &token,
        "deploymentMode: OFFLINE, meters: [{code: \"scans\", limit: 5, resetPeriod: MONTHLY, overageLimit: 1}]",
    )
    .await;
    let offline = server
        .ok(
            &token,
            "mutation($r: String!) { generateOfflineLicense(request: $r) { licenseFile } }",
            json!({ "r": tests::activation_request(&key, 22, "late", Default::default()) }),
        )
        .await;
    let file = offline["generateOfflineLicense"]["licenseFile"].as_str().unwrap();
    let report = tests::usage_report_file(22, file, &[("scans", 4), ("scans", 4)]);
    let receipt = server.ok(&token, REPORT, json!({ "f": report })).await["importUsageReport"].clone();
    assert_eq!(receipt["acceptedRecords"], 2, "{receipt}");
    assert_eq!(receipt["anomalies"][0]["kind"], "USAGE_OVER_LIMIT", "{receipt}");
    let explanation = receipt["anomalies"][0]["explanation"].as_str().unwrap();
    assert!(
        explanation.contains("used 8") && explanation.contains("limit of 5 (+1 overage)"),
        "{explanation}"
    );
    let usage = usage_of(&server, &license).await;
    assert_eq!(
        (usage["used"].as_i64(), usage["overageUsed"].as_i64()),
        (Some(8), Some(3)),
        "{usage}"
    );
    // The same report again: duplicates, and still one anomaly.
    server.ok(&token, REPORT, json!({ "f": report })).await;
    let open = server
        .ok(
            &token,
            "{ anomalies(filter: {kinds: [USAGE_OVER_LIMIT]}) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(open["anomalies"]["totalCount"], 1, "{open}");
}
on_both_databases!(
    late_records_past_the_limit_are_counted_and_flagged,
    late_records_over_the_limit
);
