//! `data.object` of webhook events: the changed object's main fields under the names GraphQL
//! gives them (camelCase; ids as strings, times RFC 3339, enums SCREAMING_SNAKE_CASE), as they
//! were when the event happened. Links to other objects are their ids (`licenseId`), and a
//! license's key is never sent (only its last four characters, `keyLast4`).

use chrono::{DateTime, Utc};
use entity::enums::LicenseStatus;
use entity::{alert, anomaly, billing_subscription, device, license};
use serde_json::{Value, json};

/// A license (`license.*` events).
#[must_use]
pub fn license(l: &license::Model) -> Value {
    json!({
        "id": l.id,
        "keyLast4": l.key_last4,
        "productId": l.product_id,
        "policyId": l.policy_id,
        "customerId": l.customer_id,
        "status": l.status,
        "statusReason": l.status_reason,
        "issuedAt": l.issued_at,
        "expiresAt": l.expires_at,
        "maxActivations": l.max_activations,
        "activeDevices": l.seats_used,
        "entitlements": l.entitlements.0,
        "metadata": l.metadata,
        "billingSubscriptionId": l.billing_subscription_id,
        "version": l.version,
        "updatedAt": l.updated_at,
    })
}

/// A license about to expire (`license.expiring`): the license and the notice's threshold.
#[must_use]
pub fn expiring_license(l: &license::Model, days_before: i64) -> Value {
    let mut object = license(l);
    object["noticeDaysBefore"] = json!(days_before);
    object
}

/// The event type of a license change: by the status it moved to, else a renewal (staff's
/// `renewLicense`, or a paid billing period moving the expiry later), else an update.
#[must_use]
pub fn license_change_type(action: &str, before: &license::Model, after: &license::Model) -> &'static str {
    let billing_renewal = action == "license.billing_sync"
        && matches!((before.expires_at, after.expires_at), (Some(was), Some(is)) if is > was);
    match (before.status, after.status) {
        (from, LicenseStatus::Suspended) if from != LicenseStatus::Suspended => "license.suspended",
        (from, LicenseStatus::Revoked) if from != LicenseStatus::Revoked => "license.revoked",
        (LicenseStatus::Suspended, to) if to != LicenseStatus::Suspended => "license.reinstated",
        _ if action == "license.renew" || billing_renewal => "license.renewed",
        _ => "license.updated",
    }
}

/// A device (`device.*` events).
#[must_use]
pub fn device(d: &device::Model) -> Value {
    json!({
        "id": d.id,
        "licenseId": d.license_id,
        "fingerprint": d.fingerprint,
        "components": d.components.0,
        "status": d.status,
        "offline": d.offline,
        "holdsSeat": d.holds_seat,
        "name": d.name,
        "hostname": d.hostname,
        "platform": d.platform,
        "activatedAt": d.activated_at,
        "lastSeenAt": d.last_seen_at,
        "heartbeatDeadlineAt": d.heartbeat_deadline_at,
        "licenseVersion": d.license_version,
        "checkedOutUntil": d.checked_out_until,
        "releasedAt": d.released_at,
    })
}

/// A meter that reached its limit (`usage.limit_reached`), as `MeterUsage` plus its license.
#[must_use]
pub fn meter_at_limit(
    license_id: &str,
    meter: &str,
    used: i64,
    limit: i64,
    period_end: Option<DateTime<Utc>>,
) -> Value {
    json!({
        "licenseId": license_id,
        "meter": meter,
        "used": used,
        "limit": limit,
        "remaining": (limit - used).max(0),
        "periodEnd": period_end,
    })
}

/// An anomaly (`anomaly.opened`).
#[must_use]
pub fn anomaly(a: &anomaly::Model) -> Value {
    json!({
        "id": a.id,
        "kind": a.kind,
        "status": a.status,
        "licenseId": a.license_id,
        "deviceId": a.device_id,
        "meter": a.meter,
        "detectedAt": a.detected_at,
        "lastSeenAt": a.last_seen_at,
        "explanation": a.explanation,
        "evidence": a.evidence,
    })
}

/// An alert (`alert.raised`).
#[must_use]
pub fn alert(a: &alert::Model) -> Value {
    json!({
        "id": a.id,
        "kind": a.kind,
        "message": a.message,
        "licenseId": a.license_id,
        "deviceId": a.device_id,
        "createdAt": a.created_at,
    })
}

/// A billing subscription whose state changed (`subscription.changed`), as
/// `BillingSubscription` plus the licenses that follow it.
#[must_use]
pub fn subscription(s: &billing_subscription::Model, license_ids: &[&str]) -> Value {
    json!({
        "externalId": s.id,
        "status": s.status,
        "statusRaw": s.status_raw,
        "currentPeriodEnd": s.current_period_end,
        "cancelAtPeriodEnd": s.cancel_at_period_end,
        "syncedAt": s.synced_at,
        "licenseIds": license_ids,
    })
}
