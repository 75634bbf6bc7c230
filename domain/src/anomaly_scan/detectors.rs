//! The detectors: pure functions from a series' numbers to an optional [`Finding`], with the
//! sentence a person reads and the same numbers as evidence. No database, no clock: the scan
//! (`mod.rs`) reads the numbers and flags what comes back.

use chrono::{DateTime, Duration, Utc};
use entity::enums::AnomalyKind;
use serde_json::{Value, json};

use super::baseline::Baseline;
use super::stats::Summary;

/// A modified z-score above this is a spike.
pub const SPIKE_SCORE: f64 = 3.5;
/// A spike is also at least this many times the usual value...
pub const SPIKE_RATIO: f64 = 3.0;
/// ...and at least this many units, so small numbers never flag.
pub const SPIKE_MIN_UNITS: i64 = 10;
/// Pace flags from this share of the limit used.
pub const PACE_USED_SHARE: f64 = 0.5;
/// Pace flags when the allowance runs out at least this share of the period before its end.
pub const PACE_MARGIN_SHARE: f64 = 0.1;
/// How many weeks a device must have reported in the same hour before its silence counts.
pub const DROP_WEEKS: i64 = 3;
/// Activations within a day above `max(BURST_SEATS_FACTOR × seats, BURST_MIN)` are seat hopping.
pub const BURST_SEATS_FACTOR: i64 = 3;
/// See [`BURST_SEATS_FACTOR`].
pub const BURST_MIN: i64 = 10;
/// Distinct component sets within a day that make drift.
pub const DRIFT_SETS: i64 = 3;
/// Distinct customers sharing one fingerprint that flag.
pub const SHARED_CUSTOMERS: i64 = 3;
/// Online records ahead of the server clock within a day that flag.
pub const CLOCK_SKEWED_RECORDS: i64 = 3;

/// The time the numbers of a finding cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// From (inclusive).
    pub from: DateTime<Utc>,
    /// To (exclusive).
    pub to: DateTime<Utc>,
}

/// The numbers behind a finding, stored as the anomaly's `evidence`.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// Which detector (`usage_spike.hourly`, `usage_pace`...).
    pub detector: &'static str,
    /// The series: `<license>:<meter>`, `<license>:<meter>:<device>`, `<license>:<device>`...
    pub series: String,
    /// The time the numbers cover.
    pub window: Window,
    /// The number judged.
    pub observed: f64,
    /// What it was judged against (`{median, mad, n}` for the statistical detectors).
    pub baseline: Value,
    /// The score, where the detector computes one.
    pub score: Option<f64>,
    /// The line the observed number or the score crossed.
    pub threshold: f64,
}

impl Evidence {
    /// As stored in `anomalies.evidence`.
    #[must_use]
    pub fn to_json(&self) -> Value {
        json!({
            "detector": self.detector,
            "series": self.series,
            "window": { "from": self.window.from.to_rfc3339(), "to": self.window.to.to_rfc3339() },
            "observed": self.observed,
            "baseline": self.baseline,
            "score": self.score,
            "threshold": self.threshold,
        })
    }
}

/// What a detector found.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The anomaly kind.
    pub kind: AnomalyKind,
    /// A sentence with the numbers.
    pub explanation: String,
    /// The same numbers.
    pub evidence: Evidence,
}

fn summary_json(s: &Summary) -> Value {
    json!({ "median": s.median, "mad": s.mad, "n": s.n })
}

/// `4210` as `4,210`.
#[must_use]
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn round(x: f64) -> i64 {
    x.round() as i64
}

fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Who a sentence names: the license by its key's last four characters and the meter.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// `..AB12`.
    pub license: &'a str,
    /// The meter code.
    pub meter: &'a str,
}

/// One total judged against a summary: `Some(score)` when it is a spike.
fn spike_score(observed: i64, usual: &Summary) -> Option<f64> {
    let score = usual.modified_z(observed as f64)?;
    let far = score > SPIKE_SCORE;
    let big = observed as f64 >= SPIKE_RATIO * usual.median && observed >= SPIKE_MIN_UNITS;
    (far && big).then_some(score)
}

fn times_usual(observed: i64, median: f64) -> String {
    if median > 0.0 {
        format!(
            "{:.1}× its usual {}",
            observed as f64 / median,
            thousands(round(median))
        )
    } else {
        "against its usual 0".to_owned()
    }
}

/// USAGE_SPIKE: the strongest of the judged hourly and daily totals of a license series that
/// lies far above its baseline (modified z > 3.5, at least 3× the median and 10 units). Only
/// upward; a series younger than 7 days, or a flat history (MAD 0), never flags.
#[must_use]
pub fn usage_spike(
    names: Names<'_>,
    series: &str,
    baseline: &Baseline,
    hours: &[(DateTime<Utc>, i64)],
    days: &[(DateTime<Utc>, i64)],
) -> Option<Finding> {
    if !baseline.judges() {
        return None;
    }
    let mut best: Option<(f64, Finding)> = None;
    let mut consider = |score: f64, finding: Finding| {
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, finding));
        }
    };
    for &(hour, observed) in hours {
        let Some((usual, seasonal)) = baseline.for_hour(hour) else {
            continue;
        };
        if hour - baseline.first_hour < Duration::days(super::baseline::MIN_HISTORY_DAYS) {
            continue;
        }
        let Some(score) = spike_score(observed, &usual) else {
            continue;
        };
        let against = if seasonal {
            format!("for that hour of the week (median of {} weeks", usual.n)
        } else {
            format!("per hour (median of {} hours", usual.n)
        };
        let explanation = format!(
            "License {}'s meter {} used {} in the hour from {}, {} {}, MAD {}, score {score:.1} > {SPIKE_SCORE}).",
            names.license,
            names.meter,
            thousands(observed),
            utc(hour),
            times_usual(observed, usual.median),
            against,
            thousands(round(usual.mad)),
        );
        let evidence = Evidence {
            detector: if seasonal {
                "usage_spike.hour_of_week"
            } else {
                "usage_spike.hourly"
            },
            series: series.to_owned(),
            window: Window {
                from: hour,
                to: hour + Duration::hours(1),
            },
            observed: observed as f64,
            baseline: summary_json(&usual),
            score: Some(score),
            threshold: SPIKE_SCORE,
        };
        consider(
            score,
            Finding {
                kind: AnomalyKind::UsageSpike,
                explanation,
                evidence,
            },
        );
    }
    if let Some(usual) = baseline.daily {
        for &(day, observed) in days {
            if day - baseline.first_hour < Duration::days(super::baseline::MIN_HISTORY_DAYS) {
                continue;
            }
            let Some(score) = spike_score(observed, &usual) else {
                continue;
            };
            let explanation = format!(
                "License {}'s meter {} used {} on {} (UTC day), {} per day (median of {} days, MAD {}, score {score:.1} > {SPIKE_SCORE}).",
                names.license,
                names.meter,
                thousands(observed),
                day.format("%Y-%m-%d"),
                times_usual(observed, usual.median),
                usual.n,
                thousands(round(usual.mad)),
            );
            let evidence = Evidence {
                detector: "usage_spike.daily",
                series: series.to_owned(),
                window: Window {
                    from: day,
                    to: day + Duration::days(1),
                },
                observed: observed as f64,
                baseline: summary_json(&usual),
                score: Some(score),
                threshold: SPIKE_SCORE,
            };
            consider(
                score,
                Finding {
                    kind: AnomalyKind::UsageSpike,
                    explanation,
                    evidence,
                },
            );
        }
    }
    best.map(|(_, finding)| finding)
}

/// A metered license's current period, for USAGE_PACE.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Used in the current period.
    pub used: i64,
    /// The period's limit.
    pub limit: i64,
    /// Use allowed beyond the limit.
    pub overage: i64,
    /// Usage in the rate window.
    pub recent: i64,
    /// The rate window.
    pub window: Window,
    /// The period.
    pub period: Window,
}

/// USAGE_PACE: at least half the limit used and, at the recent rate, the allowance (limit +
/// overage) runs out at least 10% of the period before the period ends.
#[must_use]
pub fn usage_pace(names: Names<'_>, series: &str, pace: &Pace) -> Option<Finding> {
    let hours = (pace.window.to - pace.window.from).num_seconds() as f64 / 3600.0;
    if pace.limit <= 0 || hours <= 0.0 || (pace.used as f64) < PACE_USED_SHARE * pace.limit as f64 {
        return None;
    }
    let rate = pace.recent as f64 / hours;
    if rate <= 0.0 {
        return None;
    }
    let now = pace.window.to;
    let left = (pace.limit + pace.overage - pace.used).max(0);
    let exhausted_at = now + Duration::seconds((left as f64 / rate * 3600.0) as i64);
    let margin =
        Duration::seconds(((pace.period.to - pace.period.from).num_seconds() as f64 * PACE_MARGIN_SHARE) as i64);
    if exhausted_at > pace.period.to - margin {
        return None;
    }
    let early = pace.period.to - exhausted_at;
    let explanation = format!(
        "License {}'s meter {} has used {} of its {} limit (+{} overage) this period; at the last {:.0} h's rate of {:.1} per hour it runs out at {}, {:.1} days before the period ends at {}.",
        names.license,
        names.meter,
        thousands(pace.used),
        thousands(pace.limit),
        thousands(pace.overage),
        hours,
        rate,
        utc(exhausted_at),
        early.num_seconds() as f64 / 86_400.0,
        utc(pace.period.to),
    );
    let evidence = Evidence {
        detector: "usage_pace",
        series: series.to_owned(),
        window: pace.window,
        observed: pace.used as f64,
        baseline: json!({
            "limit": pace.limit, "overage": pace.overage, "rate_per_hour": rate,
            "projected_exhaustion": exhausted_at.to_rfc3339(),
            "period_start": pace.period.from.to_rfc3339(), "period_end": pace.period.to.to_rfc3339(),
        }),
        score: Some(early.num_seconds() as f64 / 3600.0),
        threshold: margin.num_seconds() as f64 / 3600.0,
    };
    Some(Finding {
        kind: AnomalyKind::UsagePace,
        explanation,
        evidence,
    })
}

/// A device series around one complete hour, for USAGE_DROP.
#[derive(Debug, Clone, Copy)]
pub struct Silence {
    /// The hour judged (complete, the device seen after it).
    pub hour: DateTime<Utc>,
    /// Usage in it.
    pub quantity: i64,
    /// Usage in the same hour 1, 2 and 3 weeks earlier.
    pub weeks_before: [i64; 3],
    /// The series' first hour.
    pub first_hour: DateTime<Utc>,
}

/// USAGE_DROP: a device series at least 3 weeks old that reported usage in the same hour of
/// each of the previous 3 weeks reported none in this one.
#[must_use]
pub fn usage_drop(names: Names<'_>, device: &str, series: &str, silence: &Silence) -> Option<Finding> {
    let old_enough = silence.hour - silence.first_hour >= Duration::weeks(DROP_WEEKS);
    let always = silence.weeks_before.iter().all(|q| *q > 0);
    if !old_enough || !always || silence.quantity > 0 {
        return None;
    }
    let before: Vec<f64> = silence.weeks_before.iter().map(|q| *q as f64).collect();
    let usual = Summary::of(&before)?;
    let explanation = format!(
        "Device {device} on license {} keeps heartbeating but reported no {} usage in the hour from {}, where it reported {} in the same hour of each of the previous {DROP_WEEKS} weeks (median {}).",
        names.license,
        names.meter,
        utc(silence.hour),
        silence
            .weeks_before
            .iter()
            .map(|q| thousands(*q))
            .collect::<Vec<_>>()
            .join(", "),
        thousands(round(usual.median)),
    );
    let evidence = Evidence {
        detector: "usage_drop",
        series: series.to_owned(),
        window: Window {
            from: silence.hour,
            to: silence.hour + Duration::hours(1),
        },
        observed: 0.0,
        baseline: summary_json(&usual),
        score: None,
        threshold: 0.0,
    };
    Some(Finding {
        kind: AnomalyKind::UsageDrop,
        explanation,
        evidence,
    })
}

/// ACTIVATION_BURST: more distinct devices activated on a license within a day than
/// `max(3 × seats, 10)`; a license without a seat cap never flags.
#[must_use]
pub fn activation_burst(
    license: &str,
    series: &str,
    seats: Option<i32>,
    devices: i64,
    window: Window,
) -> Option<Finding> {
    let seats = i64::from(seats?);
    let threshold = (BURST_SEATS_FACTOR * seats).max(BURST_MIN);
    if devices <= threshold {
        return None;
    }
    Some(Finding {
        kind: AnomalyKind::ActivationBurst,
        explanation: format!(
            "License {license} activated {devices} distinct devices between {} and {}, more than {threshold} (max({BURST_SEATS_FACTOR} × its {seats} seats, {BURST_MIN})): seats are being cycled between machines.",
            utc(window.from),
            utc(window.to),
        ),
        evidence: Evidence {
            detector: "activation_burst",
            series: series.to_owned(),
            window,
            observed: devices as f64,
            baseline: json!({ "seats": seats }),
            score: None,
            threshold: threshold as f64,
        },
    })
}

/// FINGERPRINT_DRIFT: a device presented at least 3 distinct component sets other than its
/// activated one within a day.
#[must_use]
pub fn fingerprint_drift(license: &str, device: &str, series: &str, sets: i64, window: Window) -> Option<Finding> {
    if sets < DRIFT_SETS {
        return None;
    }
    Some(Finding {
        kind: AnomalyKind::FingerprintDrift,
        explanation: format!(
            "Device {device} on license {license} presented {sets} different component sets other than the one it activated with between {} and {} (threshold {DRIFT_SETS}): one activation may be serving several machines.",
            utc(window.from),
            utc(window.to),
        ),
        evidence: Evidence {
            detector: "fingerprint_drift",
            series: series.to_owned(),
            window,
            observed: sets as f64,
            baseline: json!({ "activated_sets": 1 }),
            score: None,
            threshold: DRIFT_SETS as f64,
        },
    })
}

/// SHARED_FINGERPRINT: one fingerprint active under licenses of at least 3 distinct customers.
#[must_use]
pub fn shared_fingerprint(
    fingerprint: &str,
    series: &str,
    customers: i64,
    licenses: &[String],
    at: DateTime<Utc>,
) -> Option<Finding> {
    if customers < SHARED_CUSTOMERS {
        return None;
    }
    Some(Finding {
        kind: AnomalyKind::SharedFingerprint,
        explanation: format!(
            "Fingerprint {fingerprint} is active under {} licenses of {customers} different customers (threshold {SHARED_CUSTOMERS}): one machine is using several customers' licenses.",
            licenses.len(),
        ),
        evidence: Evidence {
            detector: "shared_fingerprint",
            series: series.to_owned(),
            window: Window { from: at, to: at },
            observed: customers as f64,
            baseline: json!({ "licenses": licenses }),
            score: None,
            threshold: SHARED_CUSTOMERS as f64,
        },
    })
}

/// CLOCK_TAMPER (online): a device series with at least 3 records within a day dated more
/// than a minute ahead of the server clock.
#[must_use]
pub fn clock_tamper(names: Names<'_>, device: &str, series: &str, skewed: i64, window: Window) -> Option<Finding> {
    if skewed < CLOCK_SKEWED_RECORDS {
        return None;
    }
    Some(Finding {
        kind: AnomalyKind::ClockTamper,
        explanation: format!(
            "Device {device} on license {} sent {skewed} {} records dated more than a minute ahead of the server clock between {} and {} (threshold {CLOCK_SKEWED_RECORDS}): its clock keeps disagreeing with ours.",
            names.license,
            names.meter,
            utc(window.from),
            utc(window.to),
        ),
        evidence: Evidence {
            detector: "clock_tamper",
            series: series.to_owned(),
            window,
            observed: skewed as f64,
            baseline: json!({ "allowed_skew_seconds": 60 }),
            score: None,
            threshold: CLOCK_SKEWED_RECORDS as f64,
        },
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]
mod tests;
