//! Consumption: what a license used of each of its meters.
//!
//! Usage arrives three ways, each a use case of its own: online from a device
//! (`recordUsage`, `online.rs`), in files a device signed offline (usage reports and
//! deactivation files, `ledger_import.rs`), and as staff corrections (`adjust.rs`). All of them
//! count through `counting.rs`: one append-only `usage_records` row per unit of work, unique per
//! license and idempotency key, and the per-period counter in `meter_totals` moved in the same
//! transaction (with the hourly rollups the anomaly scan reads).
//!
//! Periods are calendar periods in UTC: DAILY from 00:00, WEEKLY from Monday 00:00, MONTHLY
//! from the 1st, YEARLY from 1 January; NEVER is one period from the epoch.

mod adjust;
mod counting;
mod ledger_import;
mod online;
mod while_dead;

use chrono::{DateTime, Datelike as _, Duration, DurationRound as _, Months, NaiveDate, TimeZone as _, Utc};
use entity::enums::ResetPeriod;
use entity::{license, meter_total, policy, usage_hourly};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};

pub use adjust::AdjustUsage;
pub use ledger_import::{DeactivationReceipt, UsageReceipt};
pub use online::RecordUsage;

use crate::catalog::{Meter, effective_meters};
use crate::{Actor, Capability, Domain, Error, Result};

/// Usage of one meter of a license in the current period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterUsage {
    /// Meter code.
    pub meter: String,
    /// Used in the current period.
    pub used: i64,
    /// Allowed per period; `None` = unlimited.
    pub limit: Option<i64>,
    /// `limit - used`, never below zero; `None` when unlimited.
    pub remaining: Option<i64>,
    /// Start of the current period; `None` for meters that never reset.
    pub period_start: Option<DateTime<Utc>>,
    /// Start of the next period; `None` for meters that never reset.
    pub period_end: Option<DateTime<Utc>>,
    /// Used beyond `limit` (within the overage allowance).
    pub overage_used: i64,
    /// Used over every period.
    pub lifetime_used: i64,
}

impl MeterUsage {
    /// The usage of `meter` at `now`, from the used amount of the current period and of all.
    fn new(meter: &Meter, used: i64, lifetime_used: i64, now: DateTime<Utc>) -> Self {
        let resets = meter.reset_period != ResetPeriod::Never;
        Self {
            meter: meter.code.clone(),
            used,
            limit: meter.limit,
            remaining: meter.limit.map(|limit| Ord::max(limit - used, 0)),
            period_start: resets.then(|| period_start(meter.reset_period, now)),
            period_end: resets.then(|| period_end(meter.reset_period, now)),
            overage_used: meter.limit.map_or(0, |limit| Ord::max(used - limit, 0)),
            lifetime_used,
        }
    }
}

/// Start of the reset period that contains `at`; the epoch for meters that never reset.
#[must_use]
pub fn period_start(reset: ResetPeriod, at: DateTime<Utc>) -> DateTime<Utc> {
    let day = at.date_naive();
    let start = match reset {
        ResetPeriod::Never => return DateTime::UNIX_EPOCH,
        ResetPeriod::Daily => day,
        ResetPeriod::Weekly => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
        ResetPeriod::Monthly => NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap_or(day),
        ResetPeriod::Yearly => NaiveDate::from_ymd_opt(day.year(), 1, 1).unwrap_or(day),
    };
    Utc.from_utc_datetime(&start.and_time(chrono::NaiveTime::MIN))
}

/// Start of the period after the one that contains `at` (when the counter resets next);
/// `DateTime::MAX_UTC` for meters that never reset.
#[must_use]
pub fn period_end(reset: ResetPeriod, at: DateTime<Utc>) -> DateTime<Utc> {
    let start = period_start(reset, at);
    let end = match reset {
        ResetPeriod::Never => None,
        ResetPeriod::Daily => start.checked_add_signed(Duration::days(1)),
        ResetPeriod::Weekly => start.checked_add_signed(Duration::weeks(1)),
        ResetPeriod::Monthly => start.checked_add_months(Months::new(1)),
        ResetPeriod::Yearly => start.checked_add_months(Months::new(12)),
    };
    end.unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The size of the buckets of a usage history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageBucket {
    /// UTC hours.
    Hour,
    /// UTC days.
    Day,
}

/// Usage in one bucket of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsagePoint {
    /// Start of the bucket.
    pub start: DateTime<Utc>,
    /// Units recorded in it (by `recordedAt`).
    pub quantity: i64,
}

/// The widest usage history one query may ask for, in buckets.
pub const MAX_HISTORY_POINTS: i64 = 2_000;

/// The meter `code` among a license's meters.
pub(crate) fn find_meter(policy: &policy::Model, license: &license::Model, code: &str) -> Result<Meter> {
    effective_meters(policy, license)
        .into_iter()
        .find(|m| m.code == code)
        .ok_or_else(|| Error::InvalidInput(format!("the license has no meter {code:?}")))
}

/// Records `usage.limit_reached` when a change took the current period's use of a limited
/// meter from below its limit (`before`) to at least it (`used`): once per crossing, since the
/// next change starts at or above the limit. Changes to past periods never cross.
async fn record_limit_reached(
    db: &impl ConnectionTrait,
    vendor_id: &str,
    license_id: &str,
    meter: &Meter,
    period: DateTime<Utc>,
    (before, used): (i64, i64),
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(limit) = meter.limit else {
        return Ok(());
    };
    if period != period_start(meter.reset_period, now) || before >= limit || used < limit {
        return Ok(());
    }
    let period_end = (meter.reset_period != ResetPeriod::Never).then(|| period_end(meter.reset_period, period));
    let object = crate::webhooks::objects::meter_at_limit(license_id, &meter.code, used, limit, period_end);
    crate::webhooks::events::record(db, vendor_id, "usage.limit_reached", object, now).await
}

/// `(period used, lifetime used)` of one meter of a license, read in `db` (inside the
/// transaction that just counted, so a retry's answer is exact).
async fn meter_used(
    db: &impl ConnectionTrait,
    license_id: &str,
    meter: &Meter,
    now: DateTime<Utc>,
) -> Result<(i64, i64)> {
    let totals: Vec<(DateTime<Utc>, i64)> = meter_total::Entity::find()
        .select_only()
        .column(meter_total::Column::PeriodStart)
        .column(meter_total::Column::Used)
        .filter(meter_total::Column::LicenseId.eq(license_id))
        .filter(meter_total::Column::Meter.eq(&meter.code))
        .into_tuple()
        .all(db)
        .await?;
    let current = period_start(meter.reset_period, now);
    let used = totals
        .iter()
        .filter(|(start, _)| *start == current)
        .map(|(_, u)| u)
        .sum();
    let lifetime = totals.iter().map(|(_, u)| u).sum();
    Ok((used, lifetime))
}

impl Domain {
    /// A license's use of each of its meters in the current period.
    ///
    /// # Errors
    /// Database errors.
    pub async fn license_usage(&self, license: &license::Model, policy: &policy::Model) -> Result<Vec<MeterUsage>> {
        let meters = effective_meters(policy, license);
        if meters.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let totals = meter_total::Entity::find()
            .filter(meter_total::Column::LicenseId.eq(&license.id))
            .all(&self.db)
            .await?;
        Ok(meters
            .iter()
            .map(|m| {
                let start = period_start(m.reset_period, now);
                let of_meter = || totals.iter().filter(|t| t.meter == m.code);
                let used = of_meter().filter(|t| t.period_start == start).map(|t| t.used).sum();
                MeterUsage::new(m, used, of_meter().map(|t| t.used).sum(), now)
            })
            .collect())
    }

    /// A license's usage of one meter over time, by `recordedAt`, in hour or day buckets
    /// from `from` (default: 30 days ago) to `to` (default: now); empty buckets included.
    /// Read from the hourly rollup written with each record (staff adjustments, which correct
    /// a period's total and happened at no particular hour, are not in it).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unknown meter, `from` after `to`, or more than
    /// [`MAX_HISTORY_POINTS`] buckets.
    pub async fn usage_history(
        &self,
        actor: &Actor,
        license: &license::Model,
        policy: &policy::Model,
        meter: &str,
        range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        bucket: UsageBucket,
    ) -> Result<Vec<UsagePoint>> {
        actor.require(Capability::Read)?;
        let meter = find_meter(policy, license, meter)?;
        let step = match bucket {
            UsageBucket::Hour => Duration::hours(1),
            UsageBucket::Day => Duration::days(1),
        };
        let to = range.1.unwrap_or_else(|| self.clock.now());
        let from = range.0.unwrap_or(to - Duration::days(30));
        if from > to {
            return Err(Error::InvalidInput("from must not be after to".into()));
        }
        let first = from
            .duration_trunc(step)
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        let points = (to - first).num_seconds() / step.num_seconds() + 1;
        if points > MAX_HISTORY_POINTS {
            return Err(Error::InvalidInput(format!(
                "that range holds {points} buckets; ask for at most {MAX_HISTORY_POINTS}"
            )));
        }
        let hours: Vec<(DateTime<Utc>, i64)> = usage_hourly::Entity::find()
            .select_only()
            .column(usage_hourly::Column::Hour)
            .column(usage_hourly::Column::Quantity)
            .filter(usage_hourly::Column::LicenseId.eq(&license.id))
            .filter(usage_hourly::Column::Meter.eq(&meter.code))
            .filter(usage_hourly::Column::Hour.gte(first))
            .filter(usage_hourly::Column::Hour.lte(to))
            .order_by_asc(usage_hourly::Column::Hour)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut series: Vec<UsagePoint> = (0..points)
            .map(|i| UsagePoint {
                start: first + step * i32::try_from(i).unwrap_or(0),
                quantity: 0,
            })
            .collect();
        for (hour, quantity) in hours {
            let index = (hour - first).num_seconds() / step.num_seconds();
            if let Some(point) = usize::try_from(index).ok().and_then(|i| series.get_mut(i)) {
                point.quantity += quantity;
            }
        }
        Ok(series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).single().unwrap_or_default()
    }

    #[test]
    fn periods_start_and_end_where_the_calendar_says() {
        let at = Utc
            .with_ymd_and_hms(2026, 11, 19, 15, 4, 5)
            .single()
            .unwrap_or_default();
        assert_eq!(period_start(ResetPeriod::Never, at), DateTime::UNIX_EPOCH);
        assert_eq!(period_end(ResetPeriod::Never, at), DateTime::<Utc>::MAX_UTC);
        assert_eq!(period_start(ResetPeriod::Daily, at), day(2026, 11, 19));
        assert_eq!(period_end(ResetPeriod::Daily, at), day(2026, 11, 20));
        // 2026-11-19 is a Thursday; its ISO week starts on Monday the 16th.
        assert_eq!(period_start(ResetPeriod::Weekly, at), day(2026, 11, 16));
        assert_eq!(period_end(ResetPeriod::Weekly, at), day(2026, 11, 23));
        assert_eq!(period_start(ResetPeriod::Monthly, at), day(2026, 11, 1));
        assert_eq!(period_end(ResetPeriod::Monthly, at), day(2026, 12, 1));
        assert_eq!(period_start(ResetPeriod::Yearly, at), day(2026, 1, 1));
        assert_eq!(period_end(ResetPeriod::Yearly, at), day(2027, 1, 1));
    }

    #[test]
    fn period_edges_belong_to_the_period_they_start() {
        let midnight = day(2027, 1, 1);
        let before = midnight - Duration::microseconds(1);
        assert_eq!(period_start(ResetPeriod::Daily, midnight), midnight);
        assert_eq!(period_end(ResetPeriod::Daily, before), midnight);
        assert_eq!(period_start(ResetPeriod::Monthly, before), day(2026, 12, 1));
        assert_eq!(period_end(ResetPeriod::Monthly, before), midnight);
        assert_eq!(period_start(ResetPeriod::Yearly, midnight), midnight);
        // A leap day's month ends on 1 March.
        assert_eq!(period_end(ResetPeriod::Monthly, day(2028, 2, 29)), day(2028, 3, 1));
    }

    #[test]
    fn usage_beyond_the_limit_is_overage() {
        let meter = Meter {
            code: "api".into(),
            limit: Some(10),
            reset_period: ResetPeriod::Daily,
            overage_limit: 5,
        };
        let now = day(2026, 12, 2);
        let usage = MeterUsage::new(&meter, 13, 40, now);
        assert_eq!(usage.remaining, Some(0));
        assert_eq!(usage.overage_used, 3);
        assert_eq!(usage.lifetime_used, 40);
        assert_eq!(usage.period_end, Some(day(2026, 12, 3)));
        let unlimited = Meter { limit: None, ..meter };
        let usage = MeterUsage::new(&unlimited, 13, 13, now);
        assert_eq!((usage.remaining, usage.overage_used), (None, 0));
    }
}
