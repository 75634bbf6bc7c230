//! What a subscription means for its license: one pure function from the subscription's state
//! (and the policy's `billingGraceSeconds`, and now) to a [`Decision`], and one from a decision
//! and the license as it is to the [`LicenseChange`] to write.
//!
//! | billing status | license |
//! |---|---|
//! | trialing, active | in force; `expiresAt` = period end + grace |
//! | past_due | in force until period end + grace, then SUSPENDED `billing:past_due` |
//! | canceled, unpaid, incomplete_expired, paused | SUSPENDED `billing:<status>` once grace has run from when the status was first seen (grace 0: at once) |
//! | incomplete | SUSPENDED `billing:incomplete` at once (never paid: not activatable) |
//! | anything else | nothing changes (drift UNKNOWN_STATUS) |
//!
//! Billing lifts only suspensions it imposed (`billing:` reasons) and never touches a revoked
//! license; a staff suspension stays.

use chrono::{DateTime, Duration, Utc};
use entity::enums::{BillingStatus, LicenseStatus};

use super::BILLING_REASON_PREFIX;

/// Where a subscription leaves its license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Usable: billing lifts a suspension it imposed.
    InForce,
    /// Suspended with this reason (`billing:<status>`).
    Suspended(String),
    /// A status this version does not know: change nothing.
    Unknown,
}

/// What the subscription decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The expiry the license should have (period end + grace); `None` leaves it alone.
    pub expires_at: Option<DateTime<Utc>>,
    /// In force, suspended, or unknown.
    pub standing: Standing,
}

/// The subscription facts the mapping reads.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionState<'a> {
    /// Its status.
    pub status: BillingStatus,
    /// The status string as sent (it names the suspension reason).
    pub status_raw: &'a str,
    /// The end of the current period.
    pub current_period_end: Option<DateTime<Utc>>,
    /// Since when it has had this status (as first seen here).
    pub status_since: DateTime<Utc>,
}

/// Decides what the subscription means for its license now.
#[must_use]
pub fn decide(sub: SubscriptionState<'_>, grace: Duration, now: DateTime<Utc>) -> Decision {
    let expires_at = sub.current_period_end.map(|end| end + grace);
    let suspended = || Standing::Suspended(format!("{BILLING_REASON_PREFIX}{}", sub.status_raw));
    let standing = match sub.status {
        BillingStatus::Trialing | BillingStatus::Active => Standing::InForce,
        BillingStatus::PastDue => {
            let lapses_at = expires_at.unwrap_or(sub.status_since + grace);
            if now >= lapses_at {
                suspended()
            } else {
                Standing::InForce
            }
        }
        BillingStatus::Canceled | BillingStatus::Unpaid | BillingStatus::IncompleteExpired | BillingStatus::Paused => {
            if now >= sub.status_since + grace {
                suspended()
            } else {
                Standing::InForce
            }
        }
        BillingStatus::Incomplete => suspended(),
        BillingStatus::Unknown => Standing::Unknown,
    };
    match standing {
        Standing::Unknown => Decision {
            expires_at: None,
            standing,
        },
        standing => Decision { expires_at, standing },
    }
}

/// The license as it is, as far as billing cares.
#[derive(Debug, Clone, Copy)]
pub struct LicenseState<'a> {
    /// Stored status.
    pub status: LicenseStatus,
    /// Why it is suspended.
    pub status_reason: Option<&'a str>,
    /// Its expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What to write to a license; all `None` = nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LicenseChange {
    /// New status and reason.
    pub status: Option<(LicenseStatus, Option<String>)>,
    /// New expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

impl LicenseChange {
    /// Whether there is anything to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.expires_at.is_none()
    }
}

/// Whether a suspension was imposed by billing (and so may be lifted by it).
#[must_use]
pub fn suspended_by_billing(license: LicenseState<'_>) -> bool {
    license.status == LicenseStatus::Suspended
        && license
            .status_reason
            .is_some_and(|r| r.starts_with(BILLING_REASON_PREFIX))
}

/// The change that brings `license` in line with `decision`.
#[must_use]
pub fn change_for(license: LicenseState<'_>, decision: &Decision) -> LicenseChange {
    if license.status == LicenseStatus::Revoked || decision.standing == Standing::Unknown {
        return LicenseChange::default();
    }
    let expires_at = decision.expires_at.filter(|at| license.expires_at != Some(*at));
    let status = match &decision.standing {
        Standing::Suspended(reason) => match license.status {
            LicenseStatus::Active | LicenseStatus::Expired => Some((LicenseStatus::Suspended, Some(reason.clone()))),
            LicenseStatus::Suspended if suspended_by_billing(license) && license.status_reason != Some(reason) => {
                Some((LicenseStatus::Suspended, Some(reason.clone())))
            }
            LicenseStatus::Suspended | LicenseStatus::Revoked => None,
        },
        Standing::InForce if suspended_by_billing(license) => Some((LicenseStatus::Active, None)),
        Standing::InForce | Standing::Unknown => None,
    };
    LicenseChange { status, expires_at }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]
mod tests {
    use super::*;

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).unwrap() + Duration::hours(hours)
    }

    fn suspended(status: &str) -> Standing {
        Standing::Suspended(format!("billing:{status}"))
    }

    #[test]
    fn each_status_maps_as_documented() {
        let grace = Duration::hours(24);
        // (status, raw, period end, first seen, now) -> (expires at, standing)
        let cases = [
            (
                BillingStatus::Active,
                "active",
                Some(at(100)),
                at(0),
                at(1),
                Some(at(124)),
                Standing::InForce,
            ),
            (
                BillingStatus::Trialing,
                "trialing",
                Some(at(100)),
                at(0),
                at(1),
                Some(at(124)),
                Standing::InForce,
            ),
            (
                BillingStatus::PastDue,
                "past_due",
                Some(at(100)),
                at(90),
                at(110),
                Some(at(124)),
                Standing::InForce,
            ),
            (
                BillingStatus::PastDue,
                "past_due",
                Some(at(100)),
                at(90),
                at(124),
                Some(at(124)),
                suspended("past_due"),
            ),
            (
                BillingStatus::Canceled,
                "canceled",
                Some(at(100)),
                at(10),
                at(33),
                Some(at(124)),
                Standing::InForce,
            ),
            (
                BillingStatus::Canceled,
                "canceled",
                Some(at(100)),
                at(10),
                at(34),
                Some(at(124)),
                suspended("canceled"),
            ),
            (
                BillingStatus::Unpaid,
                "unpaid",
                Some(at(100)),
                at(10),
                at(40),
                Some(at(124)),
                suspended("unpaid"),
            ),
            (
                BillingStatus::Paused,
                "paused",
                None,
                at(10),
                at(40),
                None,
                suspended("paused"),
            ),
            (
                BillingStatus::IncompleteExpired,
                "incomplete_expired",
                None,
                at(0),
                at(30),
                None,
                suspended("incomplete_expired"),
            ),
            (
                BillingStatus::Incomplete,
                "incomplete",
                Some(at(100)),
                at(0),
                at(0),
                Some(at(124)),
                suspended("incomplete"),
            ),
            (
                BillingStatus::Unknown,
                "on_hold",
                Some(at(100)),
                at(0),
                at(500),
                None,
                Standing::Unknown,
            ),
        ];
        for (status, raw, period_end, since, now, expires_at, standing) in cases {
            let state = SubscriptionState {
                status,
                status_raw: raw,
                current_period_end: period_end,
                status_since: since,
            };
            assert_eq!(
                decide(state, grace, now),
                Decision { expires_at, standing },
                "{raw} at {now}"
            );
        }
    }

    #[test]
    fn zero_grace_suspends_a_cancellation_at_once() {
        let state = SubscriptionState {
            status: BillingStatus::Canceled,
            status_raw: "canceled",
            current_period_end: Some(at(100)),
            status_since: at(5),
        };
        assert_eq!(decide(state, Duration::zero(), at(5)).standing, suspended("canceled"));
    }

    #[test]
    fn billing_lifts_only_its_own_suspensions_and_never_touches_a_revoked_license() {
        let in_force = Decision {
            expires_at: Some(at(124)),
            standing: Standing::InForce,
        };
        let lapsed = Decision {
            expires_at: Some(at(124)),
            standing: suspended("canceled"),
        };
        let license = |status, reason, expires_at| LicenseState {
            status,
            status_reason: reason,
            expires_at,
        };
        let set = |status: Option<LicenseStatus>, reason: Option<&str>, expires_at| LicenseChange {
            status: status.map(|s| (s, reason.map(str::to_owned))),
            expires_at,
        };
        let cases = [
            // A renewal moves the expiry.
            (
                license(LicenseStatus::Active, None, Some(at(50))),
                &in_force,
                set(None, None, Some(at(124))),
            ),
            (
                license(LicenseStatus::Active, None, Some(at(124))),
                &in_force,
                LicenseChange::default(),
            ),
            // Billing lifts its own suspension...
            (
                license(LicenseStatus::Suspended, Some("billing:past_due"), Some(at(124))),
                &in_force,
                set(Some(LicenseStatus::Active), None, None),
            ),
            // ...but not a staff suspension, whose expiry still follows the period.
            (
                license(LicenseStatus::Suspended, Some("fraud"), Some(at(50))),
                &in_force,
                set(None, None, Some(at(124))),
            ),
            (
                license(LicenseStatus::Suspended, None, Some(at(124))),
                &lapsed,
                LicenseChange::default(),
            ),
            // A lapse suspends an active or expired license, or renames billing's own reason.
            (
                license(LicenseStatus::Active, None, Some(at(124))),
                &lapsed,
                set(Some(LicenseStatus::Suspended), Some("billing:canceled"), None),
            ),
            (
                license(LicenseStatus::Expired, None, Some(at(124))),
                &lapsed,
                set(Some(LicenseStatus::Suspended), Some("billing:canceled"), None),
            ),
            (
                license(LicenseStatus::Suspended, Some("billing:past_due"), Some(at(124))),
                &lapsed,
                set(Some(LicenseStatus::Suspended), Some("billing:canceled"), None),
            ),
            (
                license(LicenseStatus::Suspended, Some("billing:canceled"), Some(at(124))),
                &lapsed,
                LicenseChange::default(),
            ),
            // Revoked is final.
            (
                license(LicenseStatus::Revoked, None, Some(at(1))),
                &in_force,
                LicenseChange::default(),
            ),
            (
                license(LicenseStatus::Revoked, None, Some(at(1))),
                &lapsed,
                LicenseChange::default(),
            ),
        ];
        for (state, decision, expected) in cases {
            assert_eq!(change_for(state, decision), expected, "{state:?} / {decision:?}");
        }
        let unknown = Decision {
            expires_at: None,
            standing: Standing::Unknown,
        };
        let state = license(LicenseStatus::Suspended, Some("billing:canceled"), Some(at(1)));
        assert!(change_for(state, &unknown).is_empty());
    }
}
