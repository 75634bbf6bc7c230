//! D1 (heartbeat-timeout sweep) and D3 (renewal scan): the workers' periodic work, run
//! in-process through `domain` on the embedded SQLite database, against raw SQL over the same
//! rows measured in the same run.
//!
//! The catalog (vendor, product, policy, customer, one license, one device) is made through the
//! real API, which is then stopped; the fleet is cloned from those rows in SQL so every column
//! holds what the API writes.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, ensure};
use chrono::Utc;
use domain::Domain;
use domain::settings::Settings;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value as SqlValue};
use serde_json::json;

use crate::harness::{SECRET, graphql, launch_api, median};

/// The statuses the sweep reads (live devices).
const LIVE: &str = "status IN ('ACTIVE', 'CHECKED_OUT')";
/// The renewal notice thresholds (the default `RENEWAL_NOTICE_DAYS`).
const THRESHOLDS: [i64; 3] = [30, 7, 1];

/// A stopped API's database, opened in this process.
pub(crate) struct Fleet {
    _dir: tempfile::TempDir,
    /// The domain over it.
    pub(crate) domain: Domain,
    /// The one license made through the API (a template to clone).
    pub(crate) license_id: String,
    device_id: String,
}

/// Makes the catalog (vendor, product, policy, customer, one license, one device) through the
/// real API, stops it, and opens its database here.
pub(crate) async fn seed_catalog(bin_dir: &Path) -> anyhow::Result<Fleet> {
    let dir = tempfile::tempdir()?;
    let (server, port, token) = launch_api(bin_dir, dir.path(), "off", &[]).await?;
    let gql = |query: &'static str, variables: serde_json::Value| {
        let token = token.clone();
        async move { graphql(port, Some(&token), query, variables).await }
    };
    let product = gql(
        "mutation { createProduct(input: {name: \"Fleet\", code: \"fleet\"}) { id } }",
        json!({}),
    )
    .await?["createProduct"]["id"]
        .clone();
    let policy = gql(
        "mutation($p: ID!) { createPolicy(input: {productId: $p, name: \"F\", maxActivations: 2000000, heartbeatIntervalSeconds: 3600, deadDeviceAction: RELEASE_SEAT}) { id } }",
        json!({ "p": product }),
    )
    .await?["createPolicy"]["id"]
        .clone();
    let customer = gql(
        "mutation { upsertCustomer(input: {externalId: \"fleet\", name: \"Fleet Co\", email: \"buyer@fleet.test\"}) { id } }",
        json!({}),
    )
    .await?["upsertCustomer"]["id"]
        .clone();
    let issued = gql(
        "mutation($p: ID!, $c: ID, $e: DateTime) { issueLicense(input: {policyId: $p, customerId: $c, expiresAt: $e}) { id key } }",
        json!({ "p": policy, "c": customer, "e": (Utc::now() + chrono::Duration::days(400)).to_rfc3339() }),
    )
    .await?;
    let activated = graphql(
        port,
        None,
        "mutation($k: String!) { activateDevice(input: {licenseKey: $k, fingerprint: \"fleet-template\"}) { device { id } } }",
        json!({ "k": issued["issueLicense"]["key"] }),
    )
    .await?;
    drop(server);
    let settings = Settings {
        data_dir: dir.path().to_path_buf(),
        database_url: format!("sqlite://{}/licensing.db?mode=rwc", dir.path().display()),
        secret: secrecy::SecretBox::new(Box::new(SECRET.as_bytes().to_vec())),
        clock_offset_file: None,
        production: false,
        webhook_targets: domain::webhooks::targets::TargetRules::AnyHost,
    };
    let domain = settings.open_domain().await?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    Ok(Fleet {
        _dir: dir,
        domain,
        license_id: text(&issued["issueLicense"]["id"]),
        device_id: text(&activated["activateDevice"]["device"]["id"]),
    })
}

/// Inserts copies of the `table` row `template` for `i` in `range`, with `overrides` (SQL
/// expressions over `i`, with `?` parameters bound from `values` in order) for some columns.
pub(crate) async fn clone_rows(
    db: &DatabaseConnection,
    table: &str,
    template: &str,
    range: std::ops::Range<u64>,
    overrides: &[(&str, &str)],
    values: Vec<SqlValue>,
) -> anyhow::Result<()> {
    let columns: Vec<String> = db
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!("SELECT name FROM pragma_table_info('{table}')"),
        ))
        .await?
        .iter()
        .map(|row| row.try_get::<String>("", "name"))
        .collect::<Result<_, _>>()?;
    let select: Vec<String> = columns
        .iter()
        .map(|c| {
            overrides
                .iter()
                .find(|(name, _)| name == c)
                .map_or_else(|| format!("t.{c}"), |(_, expr)| (*expr).to_owned())
        })
        .collect();
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT {} UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {}) \
         INSERT INTO {table} ({}) SELECT {} FROM n, {table} t WHERE t.id = ?",
        range.start,
        range.end,
        columns.join(", "),
        select.join(", "),
    );
    let mut values = values;
    values.push(template.into());
    db.execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, sql, values))
        .await?;
    Ok(())
}

/// Runs `work` and says how long it took, in seconds.
pub(crate) async fn timed<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<(T, f64)> {
    let started = Instant::now();
    let value = work.await?;
    Ok((value, started.elapsed().as_secs_f64()))
}

/// What D1 measured (medians, seconds).
pub struct Sweep {
    /// `sweep_dead_devices`.
    pub ours: f64,
    /// The anchor: the sweep's writes (DEAD + seat released, the license's seat count, one
    /// alert and one status-history row per death) as raw set-based statements in one
    /// transaction on the same rows.
    pub raw_writes: f64,
    /// For scale: a raw indexed SELECT of the overdue rows (writes nothing).
    pub select: f64,
}

/// D1: the heartbeat sweep over `devices` devices of which 1% are newly overdue, against the
/// same writes as raw set-based SQL on the same rows.
pub async fn d1(bin_dir: &Path, devices: u64, reps: usize) -> anyhow::Result<Sweep> {
    let fleet = seed_catalog(bin_dir).await?;
    let db = &fleet.domain.writer;
    let now = Utc::now();
    let (overdue_at, alive_until) = (now - chrono::Duration::seconds(60), now + chrono::Duration::days(1));
    clone_rows(
        db,
        "devices",
        &fleet.device_id,
        0..devices,
        &[
            ("id", "printf('fleet-%08d', i)"),
            ("fingerprint", "printf('fleet-%08d', i)"),
            ("heartbeat_deadline_at", "CASE WHEN i % 100 = 0 THEN ? ELSE ? END"),
        ],
        vec![overdue_at.into(), alive_until.into()],
    )
    .await?;
    // The template device stays alive; the license's seat count matches its holders.
    db.execute_unprepared(&format!(
        "UPDATE devices SET heartbeat_deadline_at = (SELECT heartbeat_deadline_at FROM devices WHERE id = 'fleet-00000001') WHERE id = '{}';
         UPDATE licenses SET seats_used = (SELECT count(*) FROM devices WHERE holds_seat) WHERE id = '{}';
         ANALYZE;",
        fleet.device_id, fleet.license_id
    ))
    .await?;
    let overdue = devices.div_ceil(100);
    let raw_select = Statement::from_sql_and_values(
        DbBackend::Sqlite,
        format!("SELECT id, license_id, vendor_id FROM devices WHERE {LIVE} AND heartbeat_deadline_at < ?"),
        [now.into()],
    );
    // The same writes in plain set-based SQL: what the sweep's writes cost at the least.
    let raw_writes = [
        Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "INSERT INTO alerts (id, vendor_id, kind, message, license_id, device_id, dedupe_key, created_at) \
                 SELECT 'raw-' || id, vendor_id, 'DEVICE_DEAD', 'stopped heartbeating', license_id, id, 'raw-' || id, ? \
                 FROM devices WHERE {LIVE} AND heartbeat_deadline_at < ?"
            ),
            [now.into(), now.into()],
        ),
        Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "INSERT INTO device_status_changes (id, vendor_id, license_id, device_id, status, at) \
                 SELECT 'raw-' || id, vendor_id, license_id, id, 'DEAD', ? \
                 FROM devices WHERE {LIVE} AND heartbeat_deadline_at < ?"
            ),
            [now.into(), now.into()],
        ),
        Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "UPDATE licenses SET seats_used = seats_used - (SELECT count(*) FROM devices \
                 WHERE devices.license_id = licenses.id AND holds_seat AND {LIVE} AND heartbeat_deadline_at < ?) \
                 WHERE id IN (SELECT license_id FROM devices WHERE {LIVE} AND heartbeat_deadline_at < ?)"
            ),
            [now.into(), now.into()],
        ),
        Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!(
                "UPDATE devices SET status = 'DEAD', holds_seat = 0, updated_at = ? WHERE {LIVE} AND heartbeat_deadline_at < ?"
            ),
            [now.into(), now.into()],
        ),
    ];
    let reset = format!(
        "UPDATE devices SET status = 'ACTIVE', holds_seat = 1 WHERE status = 'DEAD';
         DELETE FROM alerts;
         DELETE FROM device_status_changes;
         UPDATE licenses SET seats_used = (SELECT count(*) FROM devices WHERE holds_seat) WHERE id = '{}';",
        fleet.license_id
    );
    let (mut ours, mut anchor, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let ((), seconds) = timed(async {
            let tx = db.begin().await?;
            for statement in &raw_writes {
                tx.execute_raw(statement.clone()).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await?;
        floor.push(seconds);
        db.execute_unprepared(&reset).await?;
        let (rows, seconds) = timed(async { Ok(fleet.domain.db.query_all_raw(raw_select.clone()).await?) }).await?;
        ensure!(rows.len() as u64 == overdue, "the raw SELECT found {} rows", rows.len());
        anchor.push(seconds);
        let (died, seconds) = timed(async { Ok(fleet.domain.sweep_dead_devices().await?) }).await?;
        ensure!(
            died as u64 == overdue,
            "the sweep marked {died} devices dead, not {overdue}"
        );
        ours.push(seconds);
        // Back to alive for the next repetition.
        db.execute_unprepared(&reset).await?;
    }
    Ok(Sweep {
        ours: median(ours),
        select: median(anchor),
        raw_writes: median(floor),
    })
}

/// What D3 measured, in seconds.
pub struct RenewalScan {
    /// The first scan, promising every due notice.
    pub first: f64,
    /// A second scan right after (everything already promised).
    pub again: f64,
    /// Raw SELECT + UPDATE of the due rows.
    pub anchor: f64,
    /// Notices the first scan promised.
    pub promised: usize,
}

/// D3: the renewal scan over `licenses` licenses with expiries spread over a year, against a
/// raw SELECT + UPDATE of the due rows.
pub async fn d3(bin_dir: &Path, licenses: u64) -> anyhow::Result<RenewalScan> {
    let fleet = seed_catalog(bin_dir).await?;
    let db = &fleet.domain.writer;
    let now = Utc::now();
    // One statement per day of the year, so every expiry is bound as the driver writes it.
    let per_day = licenses.div_ceil(365);
    for day in 0..365 {
        let start = day * per_day;
        let end = (start + per_day).min(licenses);
        if start >= end {
            break;
        }
        let expires_at = now + chrono::Duration::days(i64::try_from(day).unwrap_or(0)) + chrono::Duration::hours(1);
        clone_rows(
            db,
            "licenses",
            &fleet.license_id,
            start..end,
            &[
                ("id", "printf('fleet-%08d', i)"),
                ("key_lookup", "printf('fleet-%08d', i)"),
                ("expires_at", "?"),
            ],
            vec![expires_at.into()],
        )
        .await?;
    }
    db.execute_unprepared("ANALYZE").await?;
    let due = "status = 'ACTIVE' AND expires_at > ? AND expires_at <= ? AND customer_id IS NOT NULL";
    let horizon = now + chrono::Duration::days(30);
    let ((), anchor) = timed(async {
        let tx = db.begin().await?;
        let rows = tx
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                format!("SELECT id, customer_id, expires_at FROM licenses WHERE {due}"),
                [now.into(), horizon.into()],
            ))
            .await?;
        ensure!(!rows.is_empty(), "no license is due");
        tx.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!("UPDATE licenses SET updated_at = ? WHERE {due}"),
            [now.into(), now.into(), horizon.into()],
        ))
        .await?;
        tx.commit().await?;
        Ok(())
    })
    .await?;
    let (promised, first) = timed(async { Ok(fleet.domain.promise_renewal_notices(&THRESHOLDS).await?) }).await?;
    let (again_promised, again) = timed(async { Ok(fleet.domain.promise_renewal_notices(&THRESHOLDS).await?) }).await?;
    ensure!(
        again_promised == 0,
        "the second scan promised {again_promised} notices again"
    );
    let expected = per_day * 30;
    ensure!(
        promised as u64 >= expected.saturating_sub(per_day) && promised as u64 <= expected + per_day,
        "the scan promised {promised} notices, about {expected} were due"
    );
    Ok(RenewalScan {
        first,
        again,
        anchor,
        promised,
    })
}

/// Runs D1 and D3 and prints their lines.
pub async fn run(bin_dir: &Path, quick: bool) -> anyhow::Result<()> {
    let devices = if quick { 100_000 } else { 1_000_000 };
    let sweep = d1(bin_dir, devices, 3).await.context("D1")?;
    println!(
        "D1 heartbeat sweep, {devices} devices, 1% newly overdue: {:.1} ms / the same writes as raw set-based SQL {:.1} ms = {:.2}x (bar <= 1.2x) {} [median of 3 interleaved; a raw indexed SELECT of the overdue rows, writing nothing: {:.1} ms]",
        sweep.ours * 1000.0,
        sweep.raw_writes * 1000.0,
        sweep.ours / sweep.raw_writes,
        if sweep.ours <= 1.2 * sweep.raw_writes {
            "PASS"
        } else {
            "FAIL"
        },
        sweep.select * 1000.0,
    );
    let scan = d3(bin_dir, 100_000).await.context("D3")?;
    println!(
        "D3 renewal scan, 100000 licenses: {:.2} s promising {} notices, {:.2} s again / raw SELECT + UPDATE {:.3} s (bar: whole scan <= 5 s) {}",
        scan.first,
        scan.promised,
        scan.again,
        scan.anchor,
        if scan.first.max(scan.again) <= 5.0 {
            "PASS"
        } else {
            "FAIL"
        }
    );
    Ok(())
}
