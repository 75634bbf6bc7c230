//! The detectors on synthetic series: each fires on its situation and stays silent just below
//! its threshold, on short or flat histories and on small numbers.

use std::collections::BTreeMap;

use super::*;
use crate::anomaly_scan::baseline::{day_start, hour_of_week};

const NAMES: Names<'static> = Names {
    license: "..AB12",
    meter: "api-calls",
};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Now: a Wednesday, 10:00 UTC.
fn now() -> DateTime<Utc> {
    at("2026-12-02T10:00:00Z")
}

/// A steady weekly rhythm: 100 an hour in working hours (Monday to Friday, 09-17 UTC), 20
/// otherwise, with a deterministic jitter of ±5, over `weeks` weeks before now.
fn rhythm(weeks: i64) -> BTreeMap<DateTime<Utc>, i64> {
    let first = now() - Duration::weeks(weeks);
    let mut totals = BTreeMap::new();
    let mut hour = first;
    let mut i: i64 = 0;
    while hour < now() + Duration::hours(1) {
        let slot = hour_of_week(hour);
        let working = slot / 24 < 5 && (9..17).contains(&(slot % 24));
        let jitter = (i * 7919) % 11 - 5;
        totals.insert(hour, if working { 100 } else { 20 } + jitter);
        hour += Duration::hours(1);
        i += 1;
    }
    totals
}

/// A steady series without a weekly shape: 100 an hour ±5 over `weeks` weeks.
fn steady(weeks: i64) -> BTreeMap<DateTime<Utc>, i64> {
    rhythm(weeks)
        .into_iter()
        .enumerate()
        .map(|(i, (h, _))| (h, 100 + (i as i64 * 7919) % 11 - 5))
        .collect()
}

/// The scan's view after the last hours changed: the baseline up to now, the last 24
/// hours and the days they fall in judged.
fn judge(totals: &BTreeMap<DateTime<Utc>, i64>) -> Option<Finding> {
    let first = *totals.keys().next().unwrap();
    let baseline = Baseline::compute(first, totals, now());
    let from = now() - Duration::hours(23);
    let hours: Vec<_> = totals.range(from..).map(|(h, q)| (*h, *q)).collect();
    let mut days: BTreeMap<DateTime<Utc>, i64> = BTreeMap::new();
    for (h, q) in totals.range(day_start(from)..) {
        *days.entry(day_start(*h)).or_default() += q;
    }
    let days: Vec<_> = days.into_iter().collect();
    usage_spike(NAMES, "lic:api-calls", &baseline, &hours, &days)
}

#[test]
fn a_steady_weekly_rhythm_does_not_flag() {
    assert_eq!(judge(&rhythm(5)), None);
    assert_eq!(judge(&steady(2)), None, "nor a steady young series against every hour");
}

#[test]
fn a_burst_in_the_rhythm_flags_once_against_its_hour_of_the_week() {
    let mut totals = rhythm(5);
    // 03:00 on a Wednesday usually sees about 20.
    totals.insert(at("2026-12-02T03:00:00Z"), 500);
    let finding = judge(&totals).unwrap();
    assert_eq!(finding.kind, AnomalyKind::UsageSpike);
    assert_eq!(finding.evidence.detector, "usage_spike.hour_of_week");
    assert_eq!(finding.evidence.observed, 500.0);
    assert!(finding.evidence.score.unwrap() > SPIKE_SCORE);
    let median = finding.evidence.baseline["median"].as_f64().unwrap();
    assert!((15.0..=25.0).contains(&median), "{median}");
    assert_eq!(finding.evidence.baseline["n"], 4);
    let text = &finding.explanation;
    assert!(
        text.contains("used 500 in the hour from 2026-12-02 03:00 UTC"),
        "{text}"
    );
    assert!(text.contains(&format!("its usual {}", median.round())), "{text}");
    assert!(text.contains("median of 4 weeks"), "{text}");
}

#[test]
fn before_four_weeks_an_hour_is_judged_against_every_hour() {
    let mut totals = steady(2);
    totals.insert(at("2026-12-02T03:00:00Z"), 900);
    let finding = judge(&totals).unwrap();
    assert_eq!(finding.evidence.detector, "usage_spike.hourly");
    assert!(finding.explanation.contains("used 900"), "{}", finding.explanation);
    assert!(
        finding.explanation.contains("per hour (median of 336 hours"),
        "{}",
        finding.explanation
    );
}

#[test]
fn a_short_history_does_not_flag() {
    let mut totals = rhythm(5);
    totals.retain(|h, _| *h >= now() - Duration::days(6));
    totals.insert(at("2026-12-02T03:00:00Z"), 5000);
    assert_eq!(judge(&totals), None);
}

#[test]
fn a_flat_history_does_not_flag() {
    let mut totals: BTreeMap<DateTime<Utc>, i64> = rhythm(5).into_keys().map(|h| (h, 50)).collect();
    totals.insert(at("2026-12-02T03:00:00Z"), 5000);
    assert_eq!(judge(&totals), None, "MAD 0 says nothing about how far is far");
}

#[test]
fn small_numbers_do_not_flag() {
    // A quiet series: 0 or 1 an hour; 9 in one hour is far in z but under the floor.
    let mut totals: BTreeMap<DateTime<Utc>, i64> =
        rhythm(5).into_iter().map(|(h, q)| (h, i64::from(q % 2 == 0))).collect();
    totals.insert(at("2026-12-02T03:00:00Z"), 9);
    assert_eq!(judge(&totals), None);
}

fn pace(used: i64, recent: i64) -> Pace {
    Pace {
        used,
        limit: 10_000,
        overage: 0,
        recent,
        window: Window {
            from: now() - Duration::days(1),
            to: now(),
        },
        period: Window {
            from: at("2026-12-01T00:00:00Z"),
            to: at("2027-01-01T00:00:00Z"),
        },
    }
}

#[test]
fn pace_flags_an_allowance_that_runs_out_well_before_the_reset() {
    let finding = usage_pace(NAMES, "lic:api-calls", &pace(6_000, 480)).unwrap();
    assert_eq!(finding.kind, AnomalyKind::UsagePace);
    // 4,000 left at 20 an hour: 200 hours, 2026-12-10 18:00.
    let text = &finding.explanation;
    assert!(text.contains("used 6,000 of its 10,000 limit"), "{text}");
    assert!(text.contains("rate of 20.0 per hour"), "{text}");
    assert!(text.contains("runs out at 2026-12-10 18:00 UTC"), "{text}");
    assert!(text.contains("period ends at 2027-01-01 00:00 UTC"), "{text}");
}

#[test]
fn pace_stays_silent_below_half_the_limit_or_at_a_rate_that_lasts() {
    assert_eq!(usage_pace(NAMES, "s", &pace(4_999, 480)), None, "under half the limit");
    // 4,000 left at 5 an hour: 800 hours, past the period's end.
    assert_eq!(usage_pace(NAMES, "s", &pace(6_000, 120)), None, "the allowance lasts");
    assert_eq!(usage_pace(NAMES, "s", &pace(6_000, 0)), None, "no recent use");
}

fn silence(quantity: i64, weeks_before: [i64; 3], age_weeks: i64) -> Silence {
    let hour = at("2026-12-02T09:00:00Z");
    Silence {
        hour,
        quantity,
        weeks_before,
        first_hour: hour - Duration::weeks(age_weeks),
    }
}

#[test]
fn drop_flags_a_device_silent_in_an_hour_it_always_reports() {
    let finding = usage_drop(NAMES, "dev-1", "lic:api-calls:dev-1", &silence(0, [40, 35, 42], 4)).unwrap();
    assert_eq!(finding.kind, AnomalyKind::UsageDrop);
    assert!(
        finding.explanation.contains("reported 40, 35, 42"),
        "{}",
        finding.explanation
    );
    assert_eq!(finding.evidence.baseline["median"], 40.0);
}

#[test]
fn drop_stays_silent_when_the_hour_is_not_always_used_or_the_series_is_young() {
    assert_eq!(
        usage_drop(NAMES, "d", "s", &silence(1, [40, 35, 42], 4)),
        None,
        "it reported"
    );
    assert_eq!(
        usage_drop(NAMES, "d", "s", &silence(0, [40, 0, 42], 4)),
        None,
        "not every week"
    );
    assert_eq!(
        usage_drop(NAMES, "d", "s", &silence(0, [40, 35, 42], 2)),
        None,
        "two weeks old"
    );
}

fn day() -> Window {
    Window {
        from: now() - Duration::days(1),
        to: now(),
    }
}

#[test]
fn a_burst_of_activations_flags_above_three_times_the_seats_or_ten() {
    assert!(activation_burst("..AB12", "lic", Some(2), 11, day()).is_some());
    assert_eq!(
        activation_burst("..AB12", "lic", Some(2), 10, day()),
        None,
        "10 is the floor"
    );
    let finding = activation_burst("..AB12", "lic", Some(5), 16, day()).unwrap();
    assert!(
        finding.explanation.contains("activated 16 distinct devices"),
        "{}",
        finding.explanation
    );
    assert!(finding.explanation.contains("more than 15"), "{}", finding.explanation);
    assert_eq!(activation_burst("..AB12", "lic", Some(5), 15, day()), None);
    assert_eq!(
        activation_burst("..AB12", "lic", None, 1000, day()),
        None,
        "unlimited seats"
    );
}

#[test]
fn drift_flags_three_other_component_sets() {
    let finding = fingerprint_drift("..AB12", "dev-1", "lic:dev-1", 3, day()).unwrap();
    assert_eq!(finding.kind, AnomalyKind::FingerprintDrift);
    assert!(finding.explanation.contains("presented 3 different component sets"));
    assert_eq!(fingerprint_drift("..AB12", "dev-1", "lic:dev-1", 2, day()), None);
}

#[test]
fn a_fingerprint_shared_by_three_customers_flags() {
    let licenses = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let finding = shared_fingerprint("fp", "fp", 3, &licenses, now()).unwrap();
    assert_eq!(finding.kind, AnomalyKind::SharedFingerprint);
    assert!(
        finding
            .explanation
            .contains("under 3 licenses of 3 different customers")
    );
    assert_eq!(shared_fingerprint("fp", "fp", 2, &licenses, now()), None);
}

#[test]
fn clock_tamper_flags_three_skewed_records_in_a_day() {
    let finding = clock_tamper(NAMES, "dev-1", "s", 3, day()).unwrap();
    assert_eq!(finding.kind, AnomalyKind::ClockTamper);
    assert!(finding.explanation.contains("sent 3 api-calls records"));
    assert_eq!(clock_tamper(NAMES, "dev-1", "s", 2, day()), None);
}

#[test]
fn thousands_separators() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(680), "680");
    assert_eq!(thousands(4210), "4,210");
    assert_eq!(thousands(-1_234_567), "-1,234,567");
}
