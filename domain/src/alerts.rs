//! Alerts for staff: written by the use cases that notice something (a license's seats all
//! taken, a device gone silent...), listed and acknowledged by staff. A `dedupe_key` keeps one
//! open alert per situation: while it is set, the same situation does not alert again.
//! [`AlertTail`] follows new alerts for the live `alerts` subscription.

use chrono::{DateTime, Utc};
use entity::alert;
use entity::enums::AlertKind;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;

use crate::audit::{self, Change};
use crate::db::begin_write;
use crate::page::{self, Order, Page, PageRequest};
use crate::webhooks::{self, events::NewEvent};
use crate::{Actor, Capability, Domain, Error, Result, new_id};

/// An alert to raise.
pub(crate) struct NewAlert<'a> {
    pub vendor_id: &'a str,
    pub kind: AlertKind,
    pub message: String,
    pub license_id: Option<&'a str>,
    pub device_id: Option<&'a str>,
    /// One open alert per key; `None` = always a new alert.
    pub dedupe_key: Option<String>,
    /// Whether staff get it in the next alert digest email (false for alerts about the alert
    /// emails themselves, which must not feed on their own failures).
    pub email: bool,
}

/// Raises an alert unless one with the same dedupe key is open; returns whether it was new.
pub(crate) async fn raise(db: &impl ConnectionTrait, alert: NewAlert<'_>, now: DateTime<Utc>) -> Result<bool> {
    Ok(raise_all(db, vec![alert], now).await? == 1)
}

/// Raises many alerts in one statement (a sweep's deaths), each unless one with its dedupe key
/// is open, with an `alert.raised` webhook event for each new one; returns how many were new.
pub(crate) async fn raise_all(db: &impl ConnectionTrait, alerts: Vec<NewAlert<'_>>, now: DateTime<Utc>) -> Result<u64> {
    if alerts.is_empty() {
        return Ok(0);
    }
    let rows = alerts.into_iter().map(|alert| alert::ActiveModel {
        id: Set(new_id()),
        vendor_id: Set(alert.vendor_id.to_owned()),
        kind: Set(alert.kind),
        message: Set(alert.message),
        license_id: Set(alert.license_id.map(str::to_owned)),
        device_id: Set(alert.device_id.map(str::to_owned)),
        dedupe_key: Set(alert.dedupe_key),
        created_at: Set(now),
        acknowledged_at: Set(None),
        acknowledged_by: Set(None),
        notified_at: Set((!alert.email).then_some(now)),
    });
    let inserted = alert::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([alert::Column::VendorId, alert::Column::DedupeKey])
                .do_nothing()
                .to_owned(),
        )
        .exec_with_returning(db)
        .await?;
    let events = inserted
        .iter()
        .map(|alert| NewEvent {
            vendor_id: &alert.vendor_id,
            event_type: "alert.raised",
            object: webhooks::objects::alert(alert),
        })
        .collect();
    webhooks::events::record_all(db, events, now).await?;
    Ok(inserted.len() as u64)
}

/// Closes the situation behind `dedupe_key`: the next occurrence raises a new alert.
pub(crate) async fn clear(db: &impl ConnectionTrait, vendor_id: &str, dedupe_key: &str) -> Result<()> {
    alert::Entity::update_many()
        .col_expr(alert::Column::DedupeKey, Option::<String>::None.into())
        .filter(alert::Column::VendorId.eq(vendor_id))
        .filter(alert::Column::DedupeKey.eq(dedupe_key))
        .exec(db)
        .await?;
    Ok(())
}

/// How far back a tail looks on every poll: an alert is stamped when it is raised but seen only
/// once its transaction commits, which for a sweep chunk can be a few seconds later.
const TAIL_LOOKBACK_SECONDS: i64 = 60;

/// A position in the stream of new alerts (all vendors): what [`Domain::follow_alerts`]
/// already returned. It starts at the moment it is made: no history.
#[derive(Debug)]
pub struct AlertTail {
    started_at: DateTime<Utc>,
    /// Alerts returned within the look-back window, by id, with their time.
    seen: std::collections::HashMap<String, DateTime<Utc>>,
}

impl AlertTail {
    /// Forgets that `alert` was returned, so the next follow returns it again (while it is
    /// inside the look-back window).
    pub fn retry(&mut self, alert: &alert::Model) {
        self.seen.remove(&alert.id);
    }
}

impl Domain {
    /// A tail starting now.
    #[must_use]
    pub fn alert_tail(&self) -> AlertTail {
        AlertTail {
            started_at: self.clock.now(),
            seen: std::collections::HashMap::new(),
        }
    }

    /// The alerts committed since the last call on `tail`, oldest first, each returned once.
    ///
    /// # Errors
    /// Database errors.
    pub async fn follow_alerts(&self, tail: &mut AlertTail) -> Result<Vec<alert::Model>> {
        let floor = tail
            .started_at
            .max(self.clock.now() - chrono::Duration::seconds(TAIL_LOOKBACK_SECONDS));
        tail.seen.retain(|_, at| *at >= floor);
        let recent = alert::Entity::find()
            .filter(alert::Column::CreatedAt.gte(floor))
            .order_by_asc(alert::Column::CreatedAt)
            .order_by_asc(alert::Column::Id)
            .all(&self.db)
            .await?;
        Ok(recent
            .into_iter()
            .filter(|a| tail.seen.insert(a.id.clone(), a.created_at).is_none())
            .collect())
    }

    /// The vendor's alerts, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn alerts(
        &self,
        actor: &Actor,
        unacknowledged_only: bool,
        request: &PageRequest,
    ) -> Result<Page<alert::Model>> {
        actor.require(Capability::Read)?;
        let mut select = alert::Entity::find().filter(alert::Column::VendorId.eq(&actor.vendor_id));
        if unacknowledged_only {
            select = select.filter(alert::Column::AcknowledgedAt.is_null());
        }
        page::fetch(&self.db, select, alert::Column::Id, request, Order::NewestFirst).await
    }

    /// Marks an alert as seen; the situation may alert again afterwards.
    ///
    /// # Errors
    /// [`Error::NotFound`] for another vendor's alert; [`Error::Forbidden`] for READ_ONLY.
    pub async fn acknowledge_alert(&self, actor: &Actor, id: &str) -> Result<alert::Model> {
        actor.require(Capability::Support)?;
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let current = alert::Entity::find_by_id(id)
            .filter(alert::Column::VendorId.eq(&actor.vendor_id))
            .one(&tx)
            .await?
            .ok_or(Error::NotFound("alert"))?;
        if current.acknowledged_at.is_some() {
            return Ok(current);
        }
        let mut model: alert::ActiveModel = current.into();
        model.acknowledged_at = Set(Some(now));
        model.acknowledged_by = Set(actor.staff_id().map(str::to_owned));
        model.dedupe_key = Set(None);
        let updated = model.update(&tx).await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "alert.acknowledge",
                "alert",
                &updated.id,
                json!({ "acknowledged_at": null }),
                json!({ "acknowledged_at": now }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(updated)
    }
}
