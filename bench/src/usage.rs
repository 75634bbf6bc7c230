//! B1 (`recordUsage`, one event per request, through the real API) and B2 (importing a
//! 10,000-record usage report), against raw SQLite inserts measured in the same run:
//!
//! - B1's anchor is single-row INSERT autocommit into the product's `usage_records` table
//!   (every column and index) on the API's database file, opened with the product's settings
//!   (WAL, `synchronous=NORMAL`), one row per statement, from this process. Ours: `recordUsage` with a fresh idempotency key per
//!   request; each answer is checked and is durable (committed) before it is sent.
//! - B2's anchor is the same 10,000 rows as one batched INSERT transaction. Ours: the domain's
//!   `import_usage_report` in this process on the API's database (the API's 64 KiB body cap
//!   keeps reports this large off GraphQL): parse, verify the device's signature, check the
//!   chain, count every record once and move the acknowledged position.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use domain::settings::Settings;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, TransactionTrait};
use serde_json::{Value, json};

use crate::harness::{Load, SECRET, bearer, cpu_seconds, drive, graphql, graphql_body, launch_api, median, report};

const RECORD: &str =
    "mutation($k: String!) { recordUsage(input: {meter: \"api\", quantity: 1, idempotencyKey: $k}) { used } }";
/// Records in a B2 report.
const REPORT_RECORDS: u64 = 10_000;

/// The API (embedded workers off) with a metered license and one device activated online with
/// the bench's device key.
struct Metered {
    server: crate::harness::Server,
    port: u16,
    device_token: String,
    license_file: String,
    dir: tempfile::TempDir,
}

async fn seed(bin_dir: &Path, device_key: &ed25519_dalek::SigningKey) -> anyhow::Result<Metered> {
    let dir = tempfile::tempdir()?;
    let (server, port, token) = launch_api(bin_dir, dir.path(), "off", &[]).await?;
    let gql = |query: &'static str, variables: Value| {
        let token = token.clone();
        async move { graphql(port, Some(&token), query, variables).await }
    };
    let product = gql(
        "mutation { createProduct(input: {name: \"Metered\", code: \"metered\"}) { id } }",
        json!({}),
    )
    .await?["createProduct"]["id"]
        .clone();
    let policy = gql(
        "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"M\", deploymentMode: HYBRID, meters: [{code: \"api\"}]}) { id } }",
        json!({ "p": product }),
    )
    .await?["createPolicy"]["id"]
        .clone();
    let key = gql(
        "mutation($p: ID!) { issueLicense(input: {policyId: $p}) { key } }",
        json!({ "p": policy }),
    )
    .await?["issueLicense"]["key"]
        .clone();
    let activation = graphql(
        port,
        None,
        "mutation($k: String!, $pk: String!) { activateDevice(input: {licenseKey: $k, fingerprint: \"bench-meter\", devicePublicKey: $pk}) { deviceToken licenseFile } }",
        json!({ "k": key, "pk": protocol::offline::encode_public_key(&device_key.verifying_key()) }),
    )
    .await?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok(Metered {
        server,
        port,
        device_token: text(&activation["activateDevice"]["deviceToken"]),
        license_file: text(&activation["activateDevice"]["licenseFile"]),
        dir,
    })
}

/// The anchors write the product's own `usage_records` table (every column and index), on the
/// API's database file opened with the product's settings, under the seeded license.
struct Anchor {
    db: DatabaseConnection,
    vendor_id: String,
    license_id: String,
}

async fn anchor_database(dir: &Path) -> anyhow::Result<Anchor> {
    let db = Database::connect(format!("sqlite://{}/licensing.db?mode=rwc", dir.display())).await?;
    for pragma in [
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=NORMAL",
        "PRAGMA busy_timeout=5000",
    ] {
        db.execute_unprepared(pragma).await?;
    }
    let (vendor_id, license_id): (String, String) = db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT vendor_id, id FROM licenses LIMIT 1",
        ))
        .await?
        .context("no license")?
        .try_get_many_by_index()?;
    Ok(Anchor {
        db,
        vendor_id,
        license_id,
    })
}

/// One `usage_records` row as an online record carries it.
fn row_values(anchor: &Anchor, n: u64) -> Vec<sea_orm::Value> {
    let now = chrono::Utc::now().to_rfc3339();
    vec![
        format!("anchor-{n:029}").into(),
        anchor.vendor_id.clone().into(),
        anchor.license_id.clone().into(),
        None::<String>.into(),
        "api".into(),
        1i64.into(),
        format!("anchor:{n}").into(),
        "ONLINE".into(),
        None::<i64>.into(),
        None::<String>.into(),
        now.clone().into(),
        now.into(),
        format!("{n:064}").into(),
        r#"{"meter":"api","used":1}"#.into(),
    ]
}

const INSERT: &str = "INSERT INTO usage_records (id, vendor_id, license_id, device_id, meter, quantity, idempotency_key, \
                      source, ledger_seq, ledger_hash, recorded_at, received_at, request_hash, answer) VALUES ";
const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Single-row INSERT autocommit for `duration`: rows per second.
async fn single_inserts(anchor: &Anchor, first: u64, duration: Duration) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let mut n = first;
    while started.elapsed() < duration {
        anchor
            .db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                format!("{INSERT}{ROW}"),
                row_values(anchor, n),
            ))
            .await?;
        n += 1;
    }
    Ok(((n - first) as f64 / started.elapsed().as_secs_f64(), n))
}

/// `REPORT_RECORDS` rows in one transaction of multi-row INSERTs: seconds.
async fn batched_insert(anchor: &Anchor, first: u64) -> anyhow::Result<f64> {
    let started = Instant::now();
    let tx = anchor.db.begin().await?;
    let mut n = first;
    while n < first + REPORT_RECORDS {
        let chunk = Ord::min(500, first + REPORT_RECORDS - n);
        let rows = vec![ROW; usize::try_from(chunk)?].join(", ");
        let values = (n..n + chunk).flat_map(|i| row_values(anchor, i)).collect::<Vec<_>>();
        tx.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!("{INSERT}{rows}"),
            values,
        ))
        .await?;
        n += chunk;
    }
    tx.commit().await?;
    Ok(started.elapsed().as_secs_f64())
}

/// A usage report continuing `records` by `REPORT_RECORDS` more.
fn next_report(
    device_key: &ed25519_dalek::SigningKey,
    payload: &protocol::license_file::LicensePayload,
    records: &mut Vec<protocol::ledger::LedgerRecord>,
) -> anyhow::Result<String> {
    let start = records.len();
    for _ in 0..REPORT_RECORDS {
        let next = protocol::ledger::append(
            &payload.device.id,
            device_key,
            records.last(),
            "api",
            1,
            chrono::Utc::now(),
        );
        records.push(next);
    }
    let report = protocol::offline::UsageReport {
        format: protocol::offline::FORMAT,
        license_id: payload.license_id.clone(),
        device_id: payload.device.id.clone(),
        created_at: chrono::Utc::now(),
        records: records[start..].to_vec(),
    };
    Ok(protocol::offline::write(&report, device_key)?)
}

/// Runs B1 and B2 and prints their lines.
pub async fn run(
    bin_dir: &Path,
    quick: bool,
    connections: usize,
    duration: Duration,
    reps: usize,
) -> anyhow::Result<()> {
    let device_key = protocol::signing::signing_key_from_seed(&[42; 32]);
    let metered = seed(bin_dir, &device_key).await.context("seeding B1/B2")?;
    let anchor = anchor_database(metered.dir.path()).await?;

    // B1.
    let token = bearer(&metered.device_token)?;
    let b1 = Load {
        port: metered.port,
        path: "/graphql",
        request: Arc::new(move |n| {
            (
                graphql_body(RECORD, &json!({ "k": format!("bench-{n}") })),
                Some(token.clone()),
            )
        }),
        check: |v| v["data"]["recordUsage"]["used"].as_i64().is_some_and(|u| u > 0),
    };
    drive(&b1, connections, Duration::from_millis(500)).await?;
    let (mut ours, mut raw, mut busy) = (Vec::new(), Vec::new(), Vec::new());
    let mut next_row = 0;
    for _ in 0..reps {
        let (rate, end) = single_inserts(&anchor, next_row, duration).await?;
        next_row = end;
        raw.push(rate);
        let cpu = cpu_seconds(&[metered.server.pid()]);
        let started = Instant::now();
        let (rate, failed) = drive(&b1, connections, duration).await?;
        if failed > 0 {
            bail!("B1: {failed} recordUsage answers failed their check");
        }
        busy.push((cpu_seconds(&[metered.server.pid()]) - cpu) / started.elapsed().as_secs_f64() * 100.0);
        ours.push(rate);
    }
    report(
        "B1",
        median(ours),
        median(raw),
        0.25,
        &format!(
            " [recordUsage/s vs single-row INSERT autocommit/s; server core busy >= {:.0}%]",
            busy.iter().copied().fold(f64::INFINITY, f64::min)
        ),
    );

    // B2, in this process on the API's database.
    let payload: protocol::license_file::LicensePayload =
        protocol::envelope::open(protocol::license_file::LABEL, &metered.license_file)?.payload()?;
    drop(metered.server);
    let settings = Settings {
        data_dir: metered.dir.path().to_path_buf(),
        database_url: format!("sqlite://{}/licensing.db?mode=rwc", metered.dir.path().display()),
        secret: secrecy::SecretBox::new(Box::new(SECRET.as_bytes().to_vec())),
        clock_offset_file: None,
        production: false,
        webhook_targets: domain::webhooks::targets::TargetRules::AnyHost,
    };
    let domain = settings.open_domain().await?;
    let vendor: (String,) = domain
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT id FROM vendors LIMIT 1",
        ))
        .await?
        .context("no vendor")?
        .try_get_many_by_index()?;
    let actor = domain::Actor::system(&vendor.0);
    let mut records = Vec::new();
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let b2_reps = if quick { 3 } else { 5 };
    for rep in 0..b2_reps {
        let text = next_report(&device_key, &payload, &mut records)?;
        raw.push(batched_insert(&anchor, 1_000_000_000 + rep * REPORT_RECORDS).await?);
        let started = Instant::now();
        let receipt = domain.import_usage_report(&actor, &text).await?;
        ours.push(started.elapsed().as_secs_f64());
        if receipt.accepted_records != usize::try_from(REPORT_RECORDS)? || !receipt.anomalies.is_empty() {
            bail!("B2: the report was not counted in full: {receipt:?}");
        }
    }
    let (ours, raw) = (median(ours), median(raw));
    let per_second = |seconds: f64| REPORT_RECORDS as f64 / seconds;
    report(
        "B2",
        per_second(ours),
        per_second(raw),
        0.30,
        &format!(
            " [records/s: import of a {REPORT_RECORDS}-record report {:.0} ms vs one batched INSERT transaction {:.0} ms]",
            ours * 1000.0,
            raw * 1000.0
        ),
    );
    Ok(())
}
