//! Validation codes, and the offline rules a client applies to a verified license file.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::fingerprint::{Components, compare, fingerprint};
use crate::license_file::LicensePayload;

/// The outcome of a validation, online or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValidationCode {
    /// The license is valid for this device.
    Valid,
    /// No such license key.
    NotFound,
    /// Past its expiry.
    Expired,
    /// Suspended by the vendor.
    Suspended,
    /// Revoked by the vendor.
    Revoked,
    /// This device is not activated on the license.
    NotActivated,
    /// The device's fingerprint does not match the activation.
    FingerprintMismatch,
    /// A required entitlement is not granted.
    EntitlementMissing,
    /// The device missed its heartbeat deadline.
    HeartbeatDead,
}

impl ValidationCode {
    /// The code as written on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "VALID",
            Self::NotFound => "NOT_FOUND",
            Self::Expired => "EXPIRED",
            Self::Suspended => "SUSPENDED",
            Self::Revoked => "REVOKED",
            Self::NotActivated => "NOT_ACTIVATED",
            Self::FingerprintMismatch => "FINGERPRINT_MISMATCH",
            Self::EntitlementMissing => "ENTITLEMENT_MISSING",
            Self::HeartbeatDead => "HEARTBEAT_DEAD",
        }
    }
}

/// A validation outcome with a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The code.
    pub code: ValidationCode,
    /// What happened and what to do.
    pub detail: String,
}

impl Verdict {
    fn new(code: ValidationCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

/// Checks the fingerprint rule: the exact fingerprint, or at least `min` of the activated
/// components when the policy allows k-of-n matching.
#[must_use]
pub fn check_fingerprint(
    activated: &Components,
    activated_fingerprint: &str,
    presented: &Components,
    presented_fingerprint: &str,
    min: Option<u32>,
) -> Verdict {
    if presented_fingerprint == activated_fingerprint {
        return Verdict::new(ValidationCode::Valid, "fingerprint matches");
    }
    let m = compare(activated, presented);
    match min {
        Some(min) if m.accepts(min as usize) => Verdict::new(
            ValidationCode::Valid,
            format!(
                "{} of {} components match (changed: {}); at least {min} are required",
                m.matched,
                m.total,
                m.differing.join(", ")
            ),
        ),
        Some(min) => Verdict::new(
            ValidationCode::FingerprintMismatch,
            format!(
                "only {} of {} fingerprint components match (changed: {}); at least {min} must: this is not the activated machine",
                m.matched,
                m.total,
                m.differing.join(", ")
            ),
        ),
        None if m.total > 0 => Verdict::new(
            ValidationCode::FingerprintMismatch,
            format!(
                "the fingerprint differs from the activated machine (changed components: {})",
                m.differing.join(", ")
            ),
        ),
        None => Verdict::new(
            ValidationCode::FingerprintMismatch,
            "the fingerprint differs from the activated machine",
        ),
    }
}

/// The offline rules for a verified license file: status, expiry, device binding,
/// entitlements, and `refresh_by` plus the grace period (or the end of a check-out).
#[must_use]
pub fn evaluate(
    payload: &LicensePayload,
    now: DateTime<Utc>,
    presented: &Components,
    entitlements: &[String],
) -> Verdict {
    match payload.status.as_str() {
        "SUSPENDED" => {
            return Verdict::new(
                ValidationCode::Suspended,
                "the license is suspended; contact the vendor",
            );
        }
        "REVOKED" => return Verdict::new(ValidationCode::Revoked, "the license was revoked"),
        "EXPIRED" => {
            return Verdict::new(
                ValidationCode::Expired,
                "the license had expired when this file was signed; renew it with the vendor",
            );
        }
        "ACTIVE" => {}
        other => {
            return Verdict::new(
                ValidationCode::Suspended,
                format!("the file names a license status this client does not know ({other:?}): update the software"),
            );
        }
    }
    if let Some(expires_at) = payload.expires_at
        && expires_at <= now
    {
        return Verdict::new(
            ValidationCode::Expired,
            format!("the license expired at {}", expires_at.to_rfc3339()),
        );
    }
    let fp = check_fingerprint(
        &payload.device.components,
        &payload.device.fingerprint,
        presented,
        &fingerprint(presented),
        payload.min_component_matches,
    );
    if fp.code != ValidationCode::Valid {
        return fp;
    }
    let missing: Vec<&str> = entitlements
        .iter()
        .filter(|e| !payload.entitlements.contains(e))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Verdict::new(
            ValidationCode::EntitlementMissing,
            format!("not entitled to: {}", missing.join(", ")),
        );
    }
    let works_until = match payload.checked_out_until {
        Some(until) => until,
        // A grace too large to add means "for ever", never a panic on a hostile file.
        None => Duration::try_seconds(payload.grace_seconds)
            .and_then(|grace| payload.refresh_by.checked_add_signed(grace))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    };
    if works_until <= now {
        let why = if payload.checked_out_until.is_some() {
            "the check-out ended"
        } else {
            "the file was not refreshed in time and its grace period is over"
        };
        return Verdict::new(
            ValidationCode::HeartbeatDead,
            format!(
                "{why} at {}: connect to the server to refresh the license",
                works_until.to_rfc3339()
            ),
        );
    }
    if payload.checked_out_until.is_none() && payload.refresh_by <= now {
        return Verdict::new(
            ValidationCode::Valid,
            format!(
                "the license file was due for a refresh at {}: it keeps working in its grace period until {}; connect to the server",
                payload.refresh_by.to_rfc3339(),
                works_until.to_rfc3339()
            ),
        );
    }
    Verdict::new(
        ValidationCode::Valid,
        format!("valid offline until {}", works_until.to_rfc3339()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license_file::tests::payload;

    #[test]
    fn rules_in_order() {
        let now = Utc::now();
        let p = payload(now);
        let same = p.device.components.clone();
        assert_eq!(evaluate(&p, now, &same, &["pro".into()]).code, ValidationCode::Valid);
        assert_eq!(
            evaluate(&p, now, &same, &["sso".into()]).code,
            ValidationCode::EntitlementMissing
        );
        assert_eq!(
            evaluate(&p, now + Duration::days(8), &same, &[]).code,
            ValidationCode::Expired
        );
        let mut one = same.clone();
        one.insert("disk".into(), "other".into());
        let v = evaluate(&p, now, &one, &[]);
        assert_eq!(v.code, ValidationCode::Valid, "{}", v.detail);
        let mut two = one.clone();
        two.insert("mac".into(), "other".into());
        let v = evaluate(&p, now, &two, &[]);
        assert_eq!(v.code, ValidationCode::FingerprintMismatch);
        assert!(v.detail.contains("disk") && v.detail.contains("mac"), "{}", v.detail);
        // Past refresh_by but inside grace: valid; past grace: refused with a reason.
        assert_eq!(
            evaluate(&p, now + Duration::days(2), &same, &[]).code,
            ValidationCode::Valid
        );
        let mut perpetual = p.clone();
        perpetual.expires_at = None;
        let late = evaluate(&perpetual, now + Duration::days(9), &same, &[]);
        assert_eq!(late.code, ValidationCode::HeartbeatDead);
        assert!(late.detail.contains("grace"));
    }
}
