//! Webhook events: the types an endpoint subscribes to, and the outbox rows a change writes in
//! its own transaction.

use chrono::{DateTime, Utc};
use entity::webhook_event;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use serde_json::json;

use crate::{Result, new_id};

/// Every event type, dotted lower case.
pub const EVENT_TYPES: &[&str] = &[
    "license.created",
    "license.updated",
    "license.renewed",
    "license.suspended",
    "license.reinstated",
    "license.revoked",
    "license.expiring",
    "device.activated",
    "device.deactivated",
    "device.released",
    "device.dead",
    "usage.limit_reached",
    "anomaly.opened",
    "alert.raised",
    "subscription.changed",
];

/// Whether an endpoint may subscribe to `pattern`: `*`, a type, or `<object>.*`.
#[must_use]
pub fn is_subscribable(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(object) = pattern.strip_suffix(".*") {
        return EVENT_TYPES.iter().any(|t| t.split('.').next() == Some(object));
    }
    EVENT_TYPES.contains(&pattern)
}

/// Whether an endpoint subscribed to `patterns` wants an event of `event_type`.
#[must_use]
pub fn matches(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|pattern| {
        pattern == "*"
            || pattern == event_type
            || pattern
                .strip_suffix(".*")
                .is_some_and(|object| event_type.split('.').next() == Some(object))
    })
}

/// An event a change promises.
pub(crate) struct NewEvent<'a> {
    /// Whose event it is.
    pub vendor_id: &'a str,
    /// One of [`EVENT_TYPES`].
    pub event_type: &'static str,
    /// The object as GraphQL returns its main fields ([`super::objects`]).
    pub object: serde_json::Value,
}

/// Writes an event in the caller's transaction (see [`record_all`]).
pub(crate) async fn record(
    db: &impl ConnectionTrait,
    vendor_id: &str,
    event_type: &'static str,
    object: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    record_all(
        db,
        vec![NewEvent {
            vendor_id,
            event_type,
            object,
        }],
        now,
    )
    .await
}

/// Writes events in the caller's transaction, so they exist exactly when the change does;
/// each gets `evt_` + a UUIDv7 (hex), the id every delivery and retry carries.
pub(crate) async fn record_all(db: &impl ConnectionTrait, new: Vec<NewEvent<'_>>, now: DateTime<Utc>) -> Result<()> {
    let rows: Vec<_> = new
        .into_iter()
        .map(|event| {
            debug_assert!(
                EVENT_TYPES.contains(&event.event_type),
                "unknown event type {}",
                event.event_type
            );
            webhook_event::ActiveModel {
                id: Set(format!("evt_{}", new_id().replace('-', ""))),
                vendor_id: Set(event.vendor_id.to_owned()),
                event_type: Set(event.event_type.to_owned()),
                payload: Set(json!({ "object": event.object })),
                created_at: Set(now),
                fanned_out_at: Set(None),
            }
        })
        .collect();
    for chunk in rows.chunks(500) {
        webhook_event::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_types() {
        let license_only = vec!["license.*".to_owned()];
        assert!(matches(&license_only, "license.suspended"));
        assert!(!matches(&license_only, "device.dead"));
        assert!(matches(&["*".to_owned()], "device.dead"));
        assert!(matches(&["device.dead".to_owned()], "device.dead"));
        assert!(!matches(&["device.dead".to_owned()], "device.released"));
    }
}
