//! The anomaly scan ([`Domain::scan_anomalies`]): once per worker tick across the fleet, it
//! reads what changed since the last scan (the watermark in `scan_watermarks`, row
//! `anomaly_scan`) from the rollups the write paths keep, runs the detectors over those
//! numbers, and flags what they find through `anomalies::flag` (one OPEN anomaly per kind and
//! series: a rescan only moves `last_seen_at`). It never reads `usage_records`.
//!
//! What drives each detector:
//! - USAGE_SPIKE and USAGE_PACE: the license series (license, meter) with an hour touched
//!   since the watermark (`usage_hourly.touched_at`); spikes judge the touched hours and days
//!   against the series' cached baseline (`usage_baselines`, recomputed once a day), so an
//!   incremental scan costs in proportion to the hours that changed, not to the history;
//! - USAGE_DROP: device series whose device was seen since the watermark;
//! - ACTIVATION_BURST and SHARED_FINGERPRINT: ACTIVE status changes since the watermark;
//! - FINGERPRINT_DRIFT: fingerprint observations seen since the watermark;
//! - CLOCK_TAMPER: touched device hours holding records dated ahead of the server clock.
//!
//! The statistics are in `stats.rs`, the baseline in `baseline.rs`, the detectors (pure
//! functions with their unit tests) in `detectors.rs`; this file reads and flags.

mod baseline;
mod detectors;
mod devices;
mod stats;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use entity::enums::ResetPeriod;
use entity::{license, meter_total, policy, scan_watermark, usage_baseline, usage_hourly, usage_series};
use sea_orm::sea_query::{Expr, Func, OnConflict};
use sea_orm::{
    ActiveEnum as _, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QuerySelect,
};

use self::baseline::{Baseline, SEASONAL_WEEKS, day_start, hour_start};
use self::detectors::{Finding, Names, Pace, Window};
use crate::anomalies::{self, NewAnomaly};
use crate::db::begin_write;
use crate::usage::{find_meter, period_end, period_start};
use crate::{Domain, Error, Result};

/// The scan's row in `scan_watermarks`.
const WATERMARK: &str = "anomaly_scan";
/// How far before its start a scan sets the watermark: a write that took its `touched_at`
/// before the scan began but committed after the scan read is read by the next scan.
const OVERLAP_SECONDS: i64 = 120;
/// Series, devices or licenses read per batch (well under SQLite's bound-parameter limit).
const CHUNK: usize = 500;

/// What one scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// License series whose touched hours were judged.
    pub series: usize,
    /// Baselines recomputed.
    pub baselines: usize,
    /// Device series checked for a drop.
    pub device_series: usize,
    /// Anomalies opened.
    pub opened: usize,
    /// Open anomalies seen again (their `last_seen_at` moved).
    pub repeated: usize,
}

/// A finding and who it concerns.
struct Flag {
    vendor_id: String,
    license_id: Option<String>,
    device_id: Option<String>,
    meter: Option<String>,
    finding: Finding,
}

/// A license series with hours touched since the watermark.
struct Touched {
    vendor_id: String,
    license_id: String,
    meter: String,
    /// The earliest touched hour.
    earliest: DateTime<Utc>,
}

/// A license with its policy, by id.
type Licenses = BTreeMap<String, (license::Model, policy::Model)>;

fn label(license: &license::Model) -> String {
    format!("..{}", license.key_last4)
}

impl Domain {
    /// Runs every detector over what changed since the last scan, across all vendors, and
    /// flags what they find. Safe to run twice at once: a second flag of the same situation
    /// only moves the open anomaly's `last_seen_at`.
    ///
    /// # Errors
    /// Database errors; a stored baseline that does not parse.
    pub async fn scan_anomalies(&self) -> Result<ScanReport> {
        let now = self.clock.now();
        let since = watermark(&self.db).await?;
        let mut report = ScanReport::default();
        let mut flags = Vec::new();
        let mut baselines = Vec::new();
        let touched = touched_series(&self.db, since).await?;
        report.series = touched.len();
        for chunk in touched.chunks(CHUNK) {
            let licenses = load_licenses(&self.db, chunk.iter().map(|t| t.license_id.clone())).await?;
            self.judge_series(chunk, &licenses, now, &mut flags, &mut baselines)
                .await?;
        }
        report.baselines = baselines.len();
        report.device_series = self.drops(since, now, &mut flags).await?;
        self.bursts_and_shared_fingerprints(since, now, &mut flags).await?;
        self.drifts(since, now, &mut flags).await?;
        self.clock_tampers(since, now, &mut flags).await?;

        let tx = begin_write(&self.writer).await?;
        for (license_id, meter, vendor_id, baseline) in baselines {
            save_baseline(&tx, license_id, meter, vendor_id, &baseline, now).await?;
        }
        for flag in flags {
            let kind = flag.finding.kind.to_value();
            let new = NewAnomaly {
                vendor_id: &flag.vendor_id,
                license_id: flag.license_id.as_deref(),
                device_id: flag.device_id.as_deref(),
                meter: flag.meter.as_deref(),
                kind: flag.finding.kind,
                explanation: flag.finding.explanation,
                evidence: flag.finding.evidence.to_json(),
                dedupe_key: format!("{kind}:{}", flag.finding.evidence.series),
            };
            if anomalies::flag(&tx, new, now).await?.opened {
                report.opened += 1;
            } else {
                report.repeated += 1;
            }
        }
        save_watermark(&tx, now - Duration::seconds(OVERLAP_SECONDS)).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// USAGE_SPIKE and USAGE_PACE over a batch of touched license series.
    async fn judge_series(
        &self,
        chunk: &[Touched],
        licenses: &Licenses,
        now: DateTime<Utc>,
        flags: &mut Vec<Flag>,
        baselines: &mut Vec<(String, String, String, Baseline)>,
    ) -> Result<()> {
        let ids: BTreeSet<&str> = chunk.iter().map(|t| t.license_id.as_str()).collect();
        let first_hours: BTreeMap<(String, String), DateTime<Utc>> = usage_series::Entity::find()
            .select_only()
            .column(usage_series::Column::LicenseId)
            .column(usage_series::Column::Meter)
            .column_as(usage_series::Column::FirstHour.min(), "first_hour")
            .filter(usage_series::Column::LicenseId.is_in(ids.iter().copied()))
            .group_by(usage_series::Column::LicenseId)
            .group_by(usage_series::Column::Meter)
            .into_tuple::<(String, String, DateTime<Utc>)>()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|(l, m, first)| ((l, m), first))
            .collect();
        let mut stored: BTreeMap<(String, String), Baseline> = BTreeMap::new();
        for row in usage_baseline::Entity::find()
            .filter(usage_baseline::Column::LicenseId.is_in(ids.iter().copied()))
            .all(&self.db)
            .await?
        {
            let baseline: Baseline = serde_json::from_value(row.baseline).map_err(|e| {
                Error::Internal(format!(
                    "the baseline of {}:{} does not parse: {e}",
                    row.license_id, row.meter
                ))
            })?;
            stored.insert((row.license_id, row.meter), baseline);
        }
        let through = hour_start(now);
        for t in chunk {
            let Some((license, policy)) = licenses.get(&t.license_id) else {
                continue;
            };
            let key = (t.license_id.clone(), t.meter.clone());
            let Some(&first_hour) = first_hours.get(&key) else {
                continue;
            };
            let cached = stored.remove(&key).filter(|b| b.is_fresh(first_hour, now));
            let judged_from = day_start(t.earliest);
            let read_from = match &cached {
                Some(_) => judged_from,
                None => judged_from.min(through - Duration::weeks(SEASONAL_WEEKS)),
            };
            let totals = license_hours(&self.db, &t.license_id, &t.meter, read_from).await?;
            let baseline = match cached {
                Some(b) => b,
                None => {
                    let b = Baseline::compute(first_hour, &totals, through);
                    baselines.push((t.license_id.clone(), t.meter.clone(), t.vendor_id.clone(), b.clone()));
                    b
                }
            };
            let hours: Vec<(DateTime<Utc>, i64)> = totals.range(t.earliest..).map(|(h, q)| (*h, *q)).collect();
            let mut days: BTreeMap<DateTime<Utc>, i64> = BTreeMap::new();
            for (hour, quantity) in totals.range(judged_from..) {
                *days.entry(day_start(*hour)).or_default() += quantity;
            }
            let days: Vec<(DateTime<Utc>, i64)> = days.into_iter().collect();
            let license_label = label(license);
            let names = Names {
                license: &license_label,
                meter: &t.meter,
            };
            let series = format!("{}:{}", t.license_id, t.meter);
            let meter_flag = |finding| Flag {
                vendor_id: t.vendor_id.clone(),
                license_id: Some(t.license_id.clone()),
                device_id: None,
                meter: Some(t.meter.clone()),
                finding,
            };
            if let Some(finding) = detectors::usage_spike(names, &series, &baseline, &hours, &days) {
                flags.push(meter_flag(finding));
            }
            if let Some(pace) = self.pace(license, policy, &t.meter, now).await?
                && let Some(finding) = detectors::usage_pace(names, &series, &pace)
            {
                flags.push(meter_flag(finding));
            }
        }
        Ok(())
    }

    /// The current period of a metered license with a limit that resets, and its last day's
    /// usage; `None` for unlimited or never-resetting meters.
    async fn pace(
        &self,
        license: &license::Model,
        policy: &policy::Model,
        meter: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Pace>> {
        let Ok(m) = find_meter(policy, license, meter) else {
            return Ok(None);
        };
        let (Some(limit), true) = (m.limit, m.reset_period != ResetPeriod::Never) else {
            return Ok(None);
        };
        let end = period_end(m.reset_period, now);
        let start = period_start(m.reset_period, now);
        let used = meter_total::Entity::find_by_id((license.id.clone(), meter.to_owned(), start))
            .one(&self.db)
            .await?
            .map_or(0, |t| t.used);
        let from = start.max(now - Duration::days(1));
        let recent: Option<i64> = usage_hourly::Entity::find()
            .select_only()
            .column_as(sum_of(usage_hourly::Column::Quantity), "recent")
            .filter(usage_hourly::Column::LicenseId.eq(&license.id))
            .filter(usage_hourly::Column::Meter.eq(meter))
            .filter(usage_hourly::Column::Hour.gte(hour_start(from)))
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?
            .flatten();
        Ok(Some(Pace {
            used,
            limit,
            overage: m.overage_limit,
            recent: recent.unwrap_or(0),
            window: Window {
                from: hour_start(from),
                to: now,
            },
            period: Window { from: start, to: end },
        }))
    }
}

/// `SUM(column)` as a BIGINT (PostgreSQL sums a BIGINT column into a NUMERIC).
fn sum_of(column: usage_hourly::Column) -> Expr {
    sea_orm::sea_query::ExprTrait::cast_as(Expr::expr(Func::sum(Expr::col(column))), "BIGINT")
}

/// Where the last scan left off (the epoch before the first scan: everything is new).
async fn watermark(db: &DatabaseConnection) -> Result<DateTime<Utc>> {
    Ok(scan_watermark::Entity::find_by_id(WATERMARK)
        .one(db)
        .await?
        .map_or(DateTime::UNIX_EPOCH, |w| w.through))
}

async fn save_watermark(db: &impl ConnectionTrait, through: DateTime<Utc>) -> Result<()> {
    scan_watermark::Entity::insert(scan_watermark::ActiveModel {
        scan: Set(WATERMARK.to_owned()),
        through: Set(through),
    })
    .on_conflict(
        OnConflict::column(scan_watermark::Column::Scan)
            .update_column(scan_watermark::Column::Through)
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

async fn save_baseline(
    db: &impl ConnectionTrait,
    license_id: String,
    meter: String,
    vendor_id: String,
    baseline: &Baseline,
    now: DateTime<Utc>,
) -> Result<()> {
    let json =
        serde_json::to_value(baseline).map_err(|e| Error::Internal(format!("a baseline did not serialise: {e}")))?;
    usage_baseline::Entity::insert(usage_baseline::ActiveModel {
        license_id: Set(license_id),
        meter: Set(meter),
        vendor_id: Set(vendor_id),
        baseline: Set(json),
        computed_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([usage_baseline::Column::LicenseId, usage_baseline::Column::Meter])
            .update_columns([usage_baseline::Column::Baseline, usage_baseline::Column::ComputedAt])
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The license series with an hour touched since `since`, each with its earliest touched hour.
async fn touched_series(db: &DatabaseConnection, since: DateTime<Utc>) -> Result<Vec<Touched>> {
    let rows: Vec<(String, String, String, DateTime<Utc>)> = usage_hourly::Entity::find()
        .select_only()
        .column(usage_hourly::Column::VendorId)
        .column(usage_hourly::Column::LicenseId)
        .column(usage_hourly::Column::Meter)
        .column_as(usage_hourly::Column::Hour.min(), "earliest")
        .filter(usage_hourly::Column::TouchedAt.gt(since))
        .group_by(usage_hourly::Column::VendorId)
        .group_by(usage_hourly::Column::LicenseId)
        .group_by(usage_hourly::Column::Meter)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(vendor_id, license_id, meter, earliest)| Touched {
            vendor_id,
            license_id,
            meter,
            earliest,
        })
        .collect())
}

/// A license series' hourly totals (summed over its devices) from `from` on.
async fn license_hours(
    db: &DatabaseConnection,
    license_id: &str,
    meter: &str,
    from: DateTime<Utc>,
) -> Result<BTreeMap<DateTime<Utc>, i64>> {
    let rows: Vec<(DateTime<Utc>, i64)> = usage_hourly::Entity::find()
        .select_only()
        .column(usage_hourly::Column::Hour)
        .column(usage_hourly::Column::Quantity)
        .filter(usage_hourly::Column::LicenseId.eq(license_id))
        .filter(usage_hourly::Column::Meter.eq(meter))
        .filter(usage_hourly::Column::Hour.gte(from))
        .into_tuple()
        .all(db)
        .await?;
    let mut totals = BTreeMap::new();
    for (hour, quantity) in rows {
        *totals.entry(hour).or_insert(0) += quantity;
    }
    Ok(totals)
}

/// The licenses of `ids` with their policies.
async fn load_licenses(db: &DatabaseConnection, ids: impl IntoIterator<Item = String>) -> Result<Licenses> {
    let ids: BTreeSet<String> = ids.into_iter().collect();
    let rows = license::Entity::find()
        .filter(license::Column::Id.is_in(ids))
        .find_also_related(policy::Entity)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(l, p)| p.map(|p| (l.id.clone(), (l, p))))
        .collect())
}
