//! The cached baseline of a license series (`usage_baselines`): what its hourly and daily
//! totals usually are, so an incremental scan judges the hours that changed against a few
//! stored numbers instead of re-reading the series' history.
//!
//! A baseline covers the four weeks of whole hours before `through` (fewer when the series is
//! younger): one [`Summary`] over all those hours, one over its whole UTC days, and, once the
//! series is four weeks old, one per hour of the week (each of four values: that hour in each
//! of the four weeks). Hours without usage count as 0. It is recomputed when it is a day old,
//! or when usage older than the series' first hour arrived, so the scan reads a series' history
//! at most once a day.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike as _, Duration, DurationRound as _, Timelike as _, Utc};
use serde::{Deserialize, Serialize};

use super::stats::Summary;

/// Hours in a week: the seasonal slots.
pub const HOURS_PER_WEEK: usize = 168;
/// How many weeks a baseline looks back, and how old a series must be to be judged hour by
/// hour of the week.
pub const SEASONAL_WEEKS: i64 = 4;
/// How old a series must be before it is judged at all.
pub const MIN_HISTORY_DAYS: i64 = 7;
/// How long a baseline is used before it is recomputed.
pub const FRESH_FOR_HOURS: i64 = 24;

/// The start of the UTC hour of `at`.
#[must_use]
pub fn hour_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(Duration::hours(1)).unwrap_or(at)
}

/// The start of the UTC day of `at`.
#[must_use]
pub fn day_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(Duration::days(1)).unwrap_or(at)
}

/// The hour of the week of `at`: 0 is Monday 00:00-01:00 UTC, 167 Sunday 23:00-24:00.
#[must_use]
pub fn hour_of_week(at: DateTime<Utc>) -> usize {
    let day = at.weekday().num_days_from_monday() as usize;
    day * 24 + at.hour() as usize
}

/// What a license series' totals usually are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The series' first hour with usage when this was computed.
    pub first_hour: DateTime<Utc>,
    /// The hours before this one were counted.
    pub through: DateTime<Utc>,
    /// Every hour of the window.
    pub hourly: Option<Summary>,
    /// Every whole UTC day of the window.
    pub daily: Option<Summary>,
    /// One summary per hour of the week, once the series is [`SEASONAL_WEEKS`] old.
    pub seasonal: Option<Vec<Summary>>,
}

impl Baseline {
    /// The baseline of a series that started at `first_hour`, from its hourly `totals` (hours
    /// missing from the map had no usage), counting the hours before `through`.
    #[must_use]
    pub fn compute(first_hour: DateTime<Utc>, totals: &BTreeMap<DateTime<Utc>, i64>, through: DateTime<Utc>) -> Self {
        let window_start = first_hour.max(through - Duration::weeks(SEASONAL_WEEKS));
        let mut hours = Vec::new();
        let mut slots: Vec<Vec<f64>> = vec![Vec::new(); HOURS_PER_WEEK];
        let mut days: BTreeMap<DateTime<Utc>, (f64, i64)> = BTreeMap::new();
        let mut hour = window_start;
        while hour < through {
            let value = totals.get(&hour).copied().unwrap_or(0) as f64;
            hours.push(value);
            if let Some(slot) = slots.get_mut(hour_of_week(hour)) {
                slot.push(value);
            }
            let day = days.entry(day_start(hour)).or_insert((0.0, 0));
            day.0 += value;
            day.1 += 1;
            hour += Duration::hours(1);
        }
        // Only whole days: the first and last day of the window may be cut.
        let whole_days: Vec<f64> = days.values().filter(|(_, n)| *n == 24).map(|(sum, _)| *sum).collect();
        let seasonal = (first_hour <= through - Duration::weeks(SEASONAL_WEEKS))
            .then(|| {
                slots
                    .iter()
                    .map(|values| Summary::of(values))
                    .collect::<Option<Vec<_>>>()
            })
            .flatten();
        Self {
            first_hour,
            through,
            hourly: Summary::of(&hours),
            daily: Summary::of(&whole_days),
            seasonal,
        }
    }

    /// Whether this baseline may judge a series whose first hour is `first_hour` at `now`.
    #[must_use]
    pub fn is_fresh(&self, first_hour: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.first_hour == first_hour && hour_start(now) < self.through + Duration::hours(FRESH_FOR_HOURS)
    }

    /// Whether the series was old enough, when this was computed, to be judged.
    #[must_use]
    pub fn judges(&self) -> bool {
        self.through - self.first_hour >= Duration::days(MIN_HISTORY_DAYS)
    }

    /// What `hour` is compared with: its hour of the week once the series is seasonal, else
    /// every hour; and whether it was the seasonal one.
    #[must_use]
    pub fn for_hour(&self, hour: DateTime<Utc>) -> Option<(Summary, bool)> {
        match &self.seasonal {
            Some(slots) => slots.get(hour_of_week(hour)).map(|s| (*s, true)),
            None => self.hourly.map(|s| (s, false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map_or(DateTime::UNIX_EPOCH, |t| t.with_timezone(&Utc))
    }

    #[test]
    fn hours_of_the_week_start_on_monday() {
        assert_eq!(hour_of_week(at("2026-11-30T00:30:00Z")), 0, "a Monday");
        assert_eq!(hour_of_week(at("2026-12-06T23:00:00Z")), 167, "a Sunday");
    }

    #[test]
    fn a_young_series_has_no_seasonal_slots_and_missing_hours_count_as_zero() {
        let first = at("2026-11-20T00:00:00Z");
        let through = at("2026-11-30T00:00:00Z");
        let totals = BTreeMap::from([(first, 10)]);
        let b = Baseline::compute(first, &totals, through);
        assert!(b.seasonal.is_none());
        assert!(b.judges());
        let hourly = b.hourly.unwrap_or_else(|| panic!("hours"));
        assert_eq!((hourly.n, hourly.median), (240, 0.0));
        assert_eq!(b.daily.map(|d| d.n), Some(10));
    }

    #[test]
    fn four_weeks_make_a_seasonal_baseline_with_four_values_per_slot() {
        let through = at("2026-11-30T00:00:00Z");
        let first = through - Duration::weeks(5);
        let b = Baseline::compute(first, &BTreeMap::new(), through);
        let slots = b.seasonal.unwrap_or_else(|| panic!("seasonal"));
        assert_eq!(slots.len(), HOURS_PER_WEEK);
        assert!(slots.iter().all(|s| s.n == 4));
    }

    #[test]
    fn a_baseline_goes_stale_after_a_day_or_when_older_usage_arrives() {
        let through = at("2026-11-30T00:00:00Z");
        let first = at("2026-11-01T00:00:00Z");
        let b = Baseline::compute(first, &BTreeMap::new(), through);
        assert!(b.is_fresh(first, through + Duration::hours(23)));
        assert!(!b.is_fresh(first, through + Duration::hours(24)));
        assert!(!b.is_fresh(first - Duration::hours(1), through));
    }
}
