//! D2: the anomaly scan over five weeks of usage, in-process through `domain` on the embedded
//! SQLite database (WAL, as the product runs it), against a raw `GROUP BY` over the same
//! `usage_records` (totals per license, meter and hour) measured in the same run.
//!
//! The fleet: licenses cloned in SQL from one made through the real API, one device series
//! each, a steady stream of records every hour for five weeks (six records per series and
//! hour), and the rollups (`usage_hourly`, `usage_series`) built from those records with the
//! sums and counts the metering write path keeps. Then:
//! - the full scan: `scan_anomalies` with its watermark and cached baselines removed;
//! - the incremental scan: the next hours of usage for every series (1% more records) and
//!   their rollups, then `scan_anomalies` from where the full scan left off.

use std::path::Path;

use anyhow::{Context as _, ensure};
use chrono::{DateTime, Duration, DurationRound as _, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::harness::median;
use crate::sweeps::{clone_rows, seed_catalog, timed};

/// The meter every series counts.
const METER: &str = "api-calls";
/// Records per series and hour.
const PER_HOUR: u64 = 6;
/// Hours of history: five weeks.
const HISTORY_HOURS: u64 = 5 * 168;
/// Hours added for the incremental scan: 1% of the history.
const NEW_HOURS: u64 = HISTORY_HOURS.div_ceil(100);

/// What D2 measured (medians, seconds).
pub struct Scan {
    /// Usage records the full scan covers.
    pub records: u64,
    /// License series.
    pub series: u64,
    /// The full scan.
    pub full: f64,
    /// The raw GROUP BY.
    pub anchor: f64,
    /// The incremental scan after 1% more records.
    pub incremental: f64,
}

fn statement(sql: String, values: Vec<sea_orm::Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

/// Writes one hour of usage for every series: its records, then its `usage_hourly` rows
/// summed from them (the rollup rows the write path keeps: quantity, record count, when the
/// last record landed).
async fn seed_hour(
    db: &DatabaseConnection,
    vendor_id: &str,
    series: u64,
    index: u64,
    hour: DateTime<Utc>,
    landed: DateTime<Utc>,
) -> anyhow::Result<()> {
    let records = series * PER_HOUR;
    db.execute_raw(statement(
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {records}) \
             INSERT INTO usage_records (id, vendor_id, license_id, device_id, meter, quantity, idempotency_key, source, recorded_at, received_at) \
             SELECT printf('r-%04d-%08d', {index}, i), ?, printf('lic-%06d', i / {PER_HOUR}), printf('dev-%06d', i / {PER_HOUR}), \
                    '{METER}', 1 + (i * 7 + {index} * 13) % 5, printf('k-%04d-%08d', {index}, i), 'ONLINE', ?, ? FROM n"
        ),
        vec![vendor_id.into(), (hour + Duration::minutes(30)).into(), landed.into()],
    ))
    .await?;
    db.execute_raw(statement(
        "INSERT INTO usage_hourly (license_id, meter, device_id, hour, vendor_id, quantity, records, skewed_records, touched_at) \
         SELECT license_id, meter, device_id, ?, vendor_id, SUM(quantity), COUNT(*), 0, ? FROM usage_records \
         WHERE id >= ? AND id < ? GROUP BY license_id, meter, device_id, vendor_id"
            .to_owned(),
        vec![
            hour.into(),
            landed.into(),
            format!("r-{index:04}-").into(),
            format!("r-{index:04}.").into(),
        ],
    ))
    .await?;
    Ok(())
}

/// D2: `series` license series over five weeks (`series × 840 × 6` records).
pub async fn d2(bin_dir: &Path, series: u64, reps: usize) -> anyhow::Result<Scan> {
    let fleet = seed_catalog(bin_dir).await?;
    let domain = &fleet.domain;
    let db = &domain.writer;
    clone_rows(
        db,
        "licenses",
        &fleet.license_id,
        0..series,
        &[("id", "printf('lic-%06d', i)"), ("key_lookup", "printf('lic-%06d', i)")],
        Vec::new(),
    )
    .await?;
    let vendor_id: String = db
        .query_one_raw(statement(
            "SELECT vendor_id FROM licenses WHERE id = ?".to_owned(),
            vec![fleet.license_id.as_str().into()],
        ))
        .await?
        .context("the template license")?
        .try_get("", "vendor_id")?;
    let now = Utc::now();
    let this_hour = now.duration_trunc(Duration::hours(1))?;
    // History ends where the new hours begin: the new hours end with the current one.
    let first_hour = this_hour - Duration::hours(i64::try_from(HISTORY_HOURS + NEW_HOURS - 1)?);
    let hour_of = |index: u64| first_hour + Duration::hours(i64::try_from(index).unwrap_or(0));
    for index in 0..HISTORY_HOURS {
        let hour = hour_of(index);
        seed_hour(db, &vendor_id, series, index, hour, hour + Duration::minutes(59)).await?;
    }
    db.execute_unprepared(
        "INSERT INTO usage_series (license_id, meter, device_id, vendor_id, first_hour, last_hour, touched_at) \
         SELECT license_id, meter, device_id, vendor_id, MIN(hour), MAX(hour), MAX(touched_at) FROM usage_hourly \
         GROUP BY license_id, meter, device_id, vendor_id;
         ANALYZE;",
    )
    .await?;
    let records = series * PER_HOUR * HISTORY_HOURS;
    let anchor_sql = statement(
        "SELECT license_id, meter, substr(recorded_at, 1, 13) AS hour, SUM(quantity), COUNT(*) \
         FROM usage_records GROUP BY license_id, meter, hour"
            .to_owned(),
        Vec::new(),
    );
    let forget = "DELETE FROM scan_watermarks; DELETE FROM usage_baselines; DELETE FROM anomalies; DELETE FROM alerts;";
    let (mut full, mut anchor) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (rows, seconds) = timed(async { Ok(domain.db.query_all_raw(anchor_sql.clone()).await?) }).await?;
        ensure!(
            rows.len() as u64 == series * HISTORY_HOURS,
            "the raw GROUP BY found {} groups",
            rows.len()
        );
        anchor.push(seconds);
        db.execute_unprepared(forget).await?;
        let (report, seconds) = timed(async { Ok(domain.scan_anomalies().await?) }).await?;
        ensure!(
            report.series as u64 == series && report.baselines as u64 == series,
            "the full scan judged {} series and computed {} baselines, not {series}",
            report.series,
            report.baselines
        );
        ensure!(report.opened == 0, "a steady fleet flagged {} anomalies", report.opened);
        full.push(seconds);
    }
    let after_full: String = db
        .query_one_raw(statement(
            "SELECT through FROM scan_watermarks WHERE scan = 'anomaly_scan'".to_owned(),
            Vec::new(),
        ))
        .await?
        .context("the full scan's watermark")?
        .try_get("", "through")?;

    // The next hours of every series, landing now.
    let landed = Utc::now();
    for index in HISTORY_HOURS..HISTORY_HOURS + NEW_HOURS {
        seed_hour(db, &vendor_id, series, index, hour_of(index), landed).await?;
    }
    db.execute_raw(statement(
        "UPDATE usage_series SET last_hour = ?, touched_at = ?".to_owned(),
        vec![this_hour.into(), landed.into()],
    ))
    .await?;
    let mut incremental = Vec::new();
    for _ in 0..reps {
        db.execute_raw(statement(
            "UPDATE scan_watermarks SET through = ? WHERE scan = 'anomaly_scan'".to_owned(),
            vec![after_full.as_str().into()],
        ))
        .await?;
        let (report, seconds) = timed(async { Ok(domain.scan_anomalies().await?) }).await?;
        ensure!(
            report.series as u64 == series && report.baselines == 0,
            "the incremental scan judged {} series and recomputed {} baselines",
            report.series,
            report.baselines
        );
        incremental.push(seconds);
    }
    Ok(Scan {
        records,
        series,
        full: median(full),
        anchor: median(anchor),
        incremental: median(incremental),
    })
}

/// Runs D2 and prints its lines.
pub async fn run(bin_dir: &Path, quick: bool) -> anyhow::Result<()> {
    // 200 series: ~1M records (quick); 2,000 series: ~10M records.
    let series = if quick { 200 } else { 2_000 };
    let scan = d2(bin_dir, series, 3).await.context("D2")?;
    let ratio = scan.full / scan.anchor;
    println!(
        "D2 anomaly scan, {} usage records in {} series over 5 weeks: {:.1} ms / raw GROUP BY {:.1} ms = {ratio:.2}x (bar <= 1.3x) {}",
        scan.records,
        scan.series,
        scan.full * 1000.0,
        scan.anchor * 1000.0,
        if ratio <= 1.3 { "PASS" } else { "FAIL" },
    );
    let share = scan.incremental / scan.full;
    println!(
        "D2 incremental scan after 1% more records: {:.1} ms / full scan {:.1} ms = {share:.3} (bar <= 0.10) {}",
        scan.incremental * 1000.0,
        scan.full * 1000.0,
        if share <= 0.10 { "PASS" } else { "FAIL" },
    );
    Ok(())
}
