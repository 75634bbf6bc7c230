//! The audit log: one event per change, with who made it and a before/after diff of the
//! fields that changed. Written in the same transaction as the change it describes.

use chrono::{DateTime, Utc};
use entity::audit_event;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::{Map, Value, json};

use crate::page::{self, Order, Page, PageRequest};
use crate::{Actor, Capability, Domain, Result, new_id};

/// What changed: only the keys whose values differ, as `{"before": {...}, "after": {...}}`.
/// A missing or empty side (a creation) stays `{}`; otherwise a missing key counts as null.
#[must_use]
pub fn diff(before: &Value, after: &Value) -> Value {
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut out_b = Map::new();
    let mut out_a = Map::new();
    for key in b.keys().chain(a.keys().filter(|k| !b.contains_key(*k))) {
        let vb = b.get(key).unwrap_or(&Value::Null);
        let va = a.get(key).unwrap_or(&Value::Null);
        if vb != va {
            // A side that never had the key (a creation) stays empty rather than all nulls.
            if b.contains_key(key) || !b.is_empty() {
                out_b.insert(key.clone(), vb.clone());
            }
            if a.contains_key(key) || !a.is_empty() {
                out_a.insert(key.clone(), va.clone());
            }
        }
    }
    json!({ "before": out_b, "after": out_a })
}

/// One change to record.
pub(crate) struct Change<'a> {
    pub action: &'a str,
    pub target_kind: &'a str,
    pub target_id: Option<&'a str>,
    pub before: Value,
    pub after: Value,
}

impl<'a> Change<'a> {
    /// `action` (`license.suspend`) on the `target_kind` row `target_id`, from `before` to `after`.
    pub(crate) fn new(action: &'a str, target_kind: &'a str, target_id: &'a str, before: Value, after: Value) -> Self {
        Self {
            action,
            target_kind,
            target_id: Some(target_id),
            before,
            after,
        }
    }
}

/// Writes the audit event for `change` on `db` (pass the change's transaction).
pub(crate) async fn record(
    db: &impl ConnectionTrait,
    actor: &Actor,
    now: DateTime<Utc>,
    change: Change<'_>,
) -> Result<()> {
    let (actor_kind, actor_id) = actor.audit_identity();
    audit_event::Entity::insert(audit_event::ActiveModel {
        id: Set(new_id()),
        vendor_id: Set(actor.vendor_id.clone()),
        actor_kind: Set(actor_kind.to_owned()),
        actor_id: Set(actor_id.map(str::to_owned)),
        actor_label: Set(actor.label.clone()),
        action: Set(change.action.to_owned()),
        target_kind: Set(change.target_kind.to_owned()),
        target_id: Set(change.target_id.map(str::to_owned)),
        diff: Set(diff(&change.before, &change.after)),
        request_id: Set(actor.request_id.clone()),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

impl Domain {
    /// The vendor's audit events, newest first, optionally for one target or one actor.
    ///
    /// # Errors
    /// Database errors.
    pub async fn audit_events(
        &self,
        actor: &Actor,
        target_id: Option<&str>,
        actor_id: Option<&str>,
        request: &PageRequest,
    ) -> Result<Page<audit_event::Model>> {
        actor.require(Capability::Read)?;
        let mut select = audit_event::Entity::find().filter(audit_event::Column::VendorId.eq(&actor.vendor_id));
        if let Some(target_id) = target_id {
            select = select.filter(audit_event::Column::TargetId.eq(target_id));
        }
        if let Some(actor_id) = actor_id {
            select = select.filter(audit_event::Column::ActorId.eq(actor_id));
        }
        page::fetch(&self.db, select, audit_event::Column::Id, request, Order::NewestFirst).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_keeps_only_changed_keys() {
        let d = diff(&json!({"a": 1, "b": 2, "c": null}), &json!({"a": 1, "b": 3, "d": "x"}));
        assert_eq!(d, json!({"before": {"b": 2, "d": null}, "after": {"b": 3, "d": "x"}}));
        let created = diff(&Value::Null, &json!({"name": "n"}));
        assert_eq!(created, json!({"before": {}, "after": {"name": "n"}}));
    }
}
