//! Counting usage: the statements every way of recording usage shares, always inside the
//! caller's write transaction.
//!
//! - `usage_records`: one row per unit of work, unique per (license, idempotency key); a row
//!   that exists already is a duplicate and counts nothing.
//! - `meter_totals`: one counter per (license, meter, period), moved by one upsert. Online
//!   usage is conditional (`... WHERE used + q <= limit + overage`), so the limit holds exactly
//!   when calls race: SQLite runs write transactions one at a time, PostgreSQL re-checks the
//!   condition on the row it locks.
//! - `usage_hourly` and `usage_series`: the rollups the anomaly scan reads, per (license, meter,
//!   device) and UTC hour.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use entity::enums::UsageSource;
use entity::{meter_total, usage_hourly, usage_record, usage_series};
use sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QuerySelect as _,
};

use super::{MeterUsage, period_start};
use crate::catalog::Meter;
use crate::{Error, Result, new_id};

/// Records dated more than this ahead of the server clock count as skewed (the CLOCK_TAMPER
/// detector reads how many there were).
const SKEW_TOLERANCE_SECONDS: i64 = 60;

/// Rows per multi-row INSERT (15 columns each stays far below both databases' limits on
/// bound parameters).
const INSERT_CHUNK: usize = 500;

/// What a stored record says about a retry with the same key: the first call's answer, or
/// a conflict when the key came with other input.
pub(super) fn replay(stored: &usage_record::Model, request_hash: &str) -> Result<MeterUsage> {
    if stored.request_hash.as_deref() != Some(request_hash) {
        return Err(Error::IdempotencyConflict);
    }
    let answer = stored
        .answer
        .clone()
        .ok_or_else(|| Error::Internal("a usage record kept no answer".into()))?;
    serde_json::from_value(answer).map_err(|e| Error::Internal(e.to_string()))
}

/// The record a license holds under an idempotency key.
pub(super) async fn stored_record(
    db: &impl ConnectionTrait,
    license_id: &str,
    key: &str,
) -> Result<Option<usage_record::Model>> {
    Ok(usage_record::Entity::find()
        .filter(usage_record::Column::LicenseId.eq(license_id))
        .filter(usage_record::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?)
}

/// One record to count.
pub(super) struct NewRecord {
    pub meter: String,
    pub quantity: i64,
    pub recorded_at: DateTime<Utc>,
    /// Unique per license: `online:...`, `ledger:...`, `adjust:...`.
    pub key: String,
    pub ledger_seq: Option<i64>,
    pub ledger_hash: Option<String>,
    pub request_hash: Option<String>,
    pub answer: Option<serde_json::Value>,
    pub note: Option<String>,
}

/// Where records come from: the license and device they belong to, their source, and when the
/// server received them.
pub(super) struct Origin<'a> {
    pub vendor_id: &'a str,
    pub license_id: &'a str,
    /// `None` for staff adjustments.
    pub device_id: Option<&'a str>,
    pub source: UsageSource,
    pub received_at: DateTime<Utc>,
}

/// Inserts records that are not there yet; returns, in input order, whether each was new.
pub(super) async fn insert_records(
    tx: &DatabaseTransaction,
    origin: &Origin<'_>,
    records: &[NewRecord],
) -> Result<Vec<bool>> {
    let mut inserted = Vec::with_capacity(records.len());
    for chunk in records.chunks(INSERT_CHUNK) {
        let ids: Vec<String> = chunk.iter().map(|_| new_id()).collect();
        let rows = chunk.iter().zip(&ids).map(|(r, id)| usage_record::ActiveModel {
            id: Set(id.clone()),
            vendor_id: Set(origin.vendor_id.to_owned()),
            license_id: Set(origin.license_id.to_owned()),
            device_id: Set(origin.device_id.map(str::to_owned)),
            meter: Set(r.meter.clone()),
            quantity: Set(r.quantity),
            idempotency_key: Set(r.key.clone()),
            source: Set(origin.source),
            ledger_seq: Set(r.ledger_seq),
            ledger_hash: Set(r.ledger_hash.clone()),
            recorded_at: Set(r.recorded_at),
            received_at: Set(origin.received_at),
            request_hash: Set(r.request_hash.clone()),
            answer: Set(r.answer.clone()),
            note: Set(r.note.clone()),
        });
        let written = usage_record::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([usage_record::Column::LicenseId, usage_record::Column::IdempotencyKey])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(tx)
            .await?;
        if written == u64::try_from(chunk.len()).unwrap_or(u64::MAX) {
            inserted.extend(chunk.iter().map(|_| true));
            continue;
        }
        // Some were there already: the ones whose id is ours are the new ones.
        let ours: Vec<String> = usage_record::Entity::find()
            .select_only()
            .column(usage_record::Column::Id)
            .filter(usage_record::Column::Id.is_in(ids.clone()))
            .into_tuple()
            .all(tx)
            .await?;
        inserted.extend(ids.iter().map(|id| ours.contains(id)));
    }
    Ok(inserted)
}

/// How an addition to a period counter is bounded.
#[derive(Debug, Clone, Copy)]
pub(super) enum Bound {
    /// `used + q` may not pass this (limit + overage); the addition is refused otherwise.
    AtMost(i64),
    /// `used + q` may not go below zero (a staff correction downwards).
    NotBelowZero,
    /// Counted whatever the total (usage that already happened, from a device's ledger).
    None,
}

/// Adds `quantity` to the meter's counter for `period`; returns false (and changes nothing)
/// when the bound refuses it.
pub(super) async fn add_to_period(
    tx: &impl ConnectionTrait,
    license_id: &str,
    meter: &str,
    period: DateTime<Utc>,
    quantity: i64,
    bound: Bound,
) -> Result<bool> {
    match bound {
        // `used` is never negative, so this can only be refused.
        Bound::AtMost(cap) if quantity > cap => return Ok(false),
        // Without a row `used` is 0 and the insert below would store a negative total.
        Bound::NotBelowZero if quantity < 0 => {
            let exists = meter_total::Entity::find_by_id((license_id.to_owned(), meter.to_owned(), period))
                .one(tx)
                .await?
                .is_some();
            if !exists {
                return Ok(false);
            }
        }
        _ => {}
    }
    let used = Expr::col((meter_total::Entity, meter_total::Column::Used));
    let mut on_conflict = OnConflict::columns([
        meter_total::Column::LicenseId,
        meter_total::Column::Meter,
        meter_total::Column::PeriodStart,
    ]);
    on_conflict.value(meter_total::Column::Used, used.clone().add(quantity));
    match bound {
        Bound::AtMost(cap) => {
            on_conflict.action_and_where(used.add(quantity).lte(cap));
        }
        Bound::NotBelowZero => {
            on_conflict.action_and_where(used.add(quantity).gte(0));
        }
        Bound::None => {}
    }
    let written = meter_total::Entity::insert(meter_total::ActiveModel {
        license_id: Set(license_id.to_owned()),
        meter: Set(meter.to_owned()),
        period_start: Set(period),
        used: Set(quantity),
    })
    .on_conflict(on_conflict.to_owned())
    .exec_without_returning(tx)
    .await?;
    Ok(written == 1)
}

/// A limited meter's period counter after ledger records were added to it.
pub(super) struct PeriodTotal {
    pub meter: Meter,
    pub period: DateTime<Utc>,
    /// Used before the records.
    pub before: i64,
    /// Used after them.
    pub used: i64,
}

/// Adds counted ledger records to their periods' counters (one statement per period, however
/// many records) and returns each limited meter's periods it changed: the usage happened, so
/// it is counted, and the caller flags what passed limit + overage.
pub(super) async fn add_ledger_to_periods(
    tx: &DatabaseTransaction,
    license_id: &str,
    meters: &[Meter],
    records: &[&NewRecord],
    now: DateTime<Utc>,
) -> Result<Vec<PeriodTotal>> {
    let mut sums: BTreeMap<(&str, DateTime<Utc>), i64> = BTreeMap::new();
    for r in records {
        let Some(meter) = meters.iter().find(|m| m.code == r.meter) else {
            continue;
        };
        // A record dated in the future (a device clock ahead) counts in the current period.
        let period = period_start(meter.reset_period, Ord::min(r.recorded_at, now));
        *sums.entry((meter.code.as_str(), period)).or_default() += r.quantity;
    }
    let mut totals = Vec::new();
    for ((code, period), quantity) in sums {
        add_to_period(tx, license_id, code, period, quantity, Bound::None).await?;
        let Some(meter) = meters.iter().find(|m| m.code == code && m.limit.is_some()) else {
            continue;
        };
        let used = meter_total::Entity::find_by_id((license_id.to_owned(), code.to_owned(), period))
            .one(tx)
            .await?
            .map_or(0, |row| row.used);
        totals.push(PeriodTotal {
            meter: meter.clone(),
            period,
            before: used - quantity,
            used,
        });
    }
    Ok(totals)
}

/// Adds counted records to the hourly rollup and their series (one statement per hour and
/// meter); staff adjustments stay out of them.
pub(super) async fn add_to_rollups(
    tx: &DatabaseTransaction,
    origin: &Origin<'_>,
    records: &[&NewRecord],
) -> Result<()> {
    let device = origin.device_id.unwrap_or("");
    let now = origin.received_at;
    let mut hours: BTreeMap<(&str, DateTime<Utc>), (i64, i64, i64)> = BTreeMap::new();
    for r in records {
        let hour = r
            .recorded_at
            .duration_trunc(Duration::hours(1))
            .unwrap_or(r.recorded_at);
        let skewed =
            origin.source == UsageSource::Online && r.recorded_at > now + Duration::seconds(SKEW_TOLERANCE_SECONDS);
        let sums = hours.entry((r.meter.as_str(), hour)).or_default();
        sums.0 += r.quantity;
        sums.1 += 1;
        sums.2 += i64::from(skewed);
    }
    let mut series: BTreeMap<&str, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for (&(meter, hour), &(quantity, count, skewed)) in &hours {
        let hourly = |c: usage_hourly::Column| Expr::col((usage_hourly::Entity, c));
        usage_hourly::Entity::insert(usage_hourly::ActiveModel {
            license_id: Set(origin.license_id.to_owned()),
            meter: Set(meter.to_owned()),
            device_id: Set(device.to_owned()),
            hour: Set(hour),
            vendor_id: Set(origin.vendor_id.to_owned()),
            quantity: Set(quantity),
            records: Set(count),
            skewed_records: Set(skewed),
            touched_at: Set(now),
        })
        .on_conflict(
            OnConflict::columns([
                usage_hourly::Column::LicenseId,
                usage_hourly::Column::Meter,
                usage_hourly::Column::DeviceId,
                usage_hourly::Column::Hour,
            ])
            .value(
                usage_hourly::Column::Quantity,
                hourly(usage_hourly::Column::Quantity).add(quantity),
            )
            .value(
                usage_hourly::Column::Records,
                hourly(usage_hourly::Column::Records).add(count),
            )
            .value(
                usage_hourly::Column::SkewedRecords,
                hourly(usage_hourly::Column::SkewedRecords).add(skewed),
            )
            .value(usage_hourly::Column::TouchedAt, Expr::value(now))
            .to_owned(),
        )
        .exec_without_returning(tx)
        .await?;
        let span = series.entry(meter).or_insert((hour, hour));
        span.0 = Ord::min(span.0, hour);
        span.1 = Ord::max(span.1, hour);
    }
    for (meter, (first, last)) in series {
        usage_series::Entity::insert(usage_series::ActiveModel {
            license_id: Set(origin.license_id.to_owned()),
            meter: Set(meter.to_owned()),
            device_id: Set(device.to_owned()),
            vendor_id: Set(origin.vendor_id.to_owned()),
            first_hour: Set(first),
            last_hour: Set(last),
            touched_at: Set(now),
            baseline: Set(None),
            baseline_at: Set(None),
        })
        .on_conflict(
            OnConflict::columns([
                usage_series::Column::LicenseId,
                usage_series::Column::Meter,
                usage_series::Column::DeviceId,
            ])
            // Both databases store these times in one sortable form, so the comparison is the
            // calendar's.
            .value(
                usage_series::Column::FirstHour,
                Expr::cust(
                    "CASE WHEN excluded.first_hour < usage_series.first_hour THEN excluded.first_hour ELSE usage_series.first_hour END",
                ),
            )
            .value(
                usage_series::Column::LastHour,
                Expr::cust(
                    "CASE WHEN excluded.last_hour > usage_series.last_hour THEN excluded.last_hour ELSE usage_series.last_hour END",
                ),
            )
            .value(usage_series::Column::TouchedAt, Expr::value(now))
            .to_owned(),
        )
        .exec_without_returning(tx)
        .await?;
    }
    Ok(())
}
