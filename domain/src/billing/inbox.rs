//! The webhook inbox (`stripe_events`): one row per verified event id, written before the
//! endpoint answers 200, so a redelivered event is recognised and dropped and a stored one is
//! never lost. An unprocessed row is a pending re-read of its subscription: the worker's relay
//! hands due rows to the billing queue, the job re-reads the subscription from the billing
//! system and applies what it finds (the payload is never trusted for state). A re-read that
//! fails is retried with backoff for three days (Stripe's own retry window); reconciliation
//! repairs whatever is still missing after that. Linking a license to a subscription writes a
//! local row too, so the license follows its subscription within seconds.

use chrono::Duration;
use entity::stripe_event;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;

use super::{billing_id, id_of};
use crate::db::begin_write;
use crate::outbox::backoff;
use crate::{Domain, Error, Result, new_id};

/// How long a relayed row waits for its job before the relay hands it over again.
const RELAY_LEASE: Duration = Duration::seconds(60);
/// Rows relayed at once.
const RELAY_BATCH: u64 = 200;
/// How long a failing re-read is retried.
const RETRY_FOR: Duration = Duration::days(3);
/// How long processed rows are kept (well past Stripe's retry window, so redeliveries are
/// still recognised).
const KEEP_FOR: Duration = Duration::days(30);

/// A verified billing event, as far as sync cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeEvent {
    /// `evt_...`.
    pub event_id: String,
    /// `customer.subscription.updated`, `invoice.paid`...
    pub event_type: String,
    /// The subscription it is about, if any.
    pub subscription_id: Option<String>,
}

/// What storing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReceipt {
    /// Stored: its subscription will be re-read.
    Accepted,
    /// Seen before: nothing to do.
    Duplicate,
}

/// How a re-read ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReRead {
    /// Applied (or nothing to apply).
    Done,
    /// The billing system could not be asked; try again later.
    Failed(String),
}

impl StripeEvent {
    /// Reads an event's id, type and the subscription it concerns: the object itself for
    /// `customer.subscription.*`, the object's `subscription` (or, from API 2025-03-31,
    /// `parent.subscription_details.subscription`) for invoices and the like.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when it is not an event.
    pub fn from_stripe(value: &Value) -> Result<Self> {
        let event_id = value
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::InvalidInput("the event has no id".into()))?;
        let event_type = value
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && t.len() <= 128)
            .ok_or_else(|| Error::InvalidInput("the event has no type".into()))?;
        let object = value.pointer("/data/object");
        let subscription = match object {
            Some(o) if o.get("object").and_then(Value::as_str) == Some("subscription") => id_of(o.get("id")),
            Some(o) => {
                id_of(o.get("subscription")).or_else(|| id_of(o.pointer("/parent/subscription_details/subscription")))
            }
            None => None,
        };
        Ok(Self {
            event_id: billing_id("the event id", event_id)?,
            event_type: event_type.to_owned(),
            subscription_id: subscription.map(|s| billing_id("the subscription id", s)).transpose()?,
        })
    }
}

/// Asks for a re-read of `subscription_id` (a license was linked to it), in `db`'s transaction.
pub(crate) async fn request_read(
    db: &impl ConnectionTrait,
    subscription_id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let id = new_id();
    stripe_event::Entity::insert(stripe_event::ActiveModel {
        event_id: Set(format!("local_link_{id}")),
        id: Set(id),
        event_type: Set("license.linked".into()),
        subscription_id: Set(Some(subscription_id.to_owned())),
        received_at: Set(now),
        processed_at: Set(None),
        attempts: Set(0),
        next_attempt_at: Set(now),
        last_error: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

impl Domain {
    /// Stores a verified event; a redelivery (same event id) is a [`EventReceipt::Duplicate`].
    /// An event about no subscription is stored as processed (so its redeliveries are
    /// recognised too).
    ///
    /// # Errors
    /// Database errors (the endpoint answers 5xx, and Stripe retries).
    pub async fn record_stripe_event(&self, event: StripeEvent) -> Result<EventReceipt> {
        let now = self.clock.now();
        let relevant = event.subscription_id.is_some();
        let inserted = stripe_event::Entity::insert(stripe_event::ActiveModel {
            id: Set(new_id()),
            event_id: Set(event.event_id),
            event_type: Set(event.event_type),
            subscription_id: Set(event.subscription_id),
            received_at: Set(now),
            processed_at: Set((!relevant).then_some(now)),
            attempts: Set(0),
            next_attempt_at: Set(now),
            last_error: Set(None),
        })
        .on_conflict(
            OnConflict::column(stripe_event::Column::EventId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.writer)
        .await?;
        Ok(if inserted == 1 {
            EventReceipt::Accepted
        } else {
            EventReceipt::Duplicate
        })
    }

    /// The relay: the due unprocessed rows as (id, attempts so far), each held back from the
    /// next relay pass for a minute while its job runs.
    ///
    /// # Errors
    /// Database errors.
    pub async fn stripe_events_to_enqueue(&self) -> Result<Vec<(String, i32)>> {
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let due: Vec<(String, i32)> = stripe_event::Entity::find()
            .select_only()
            .column(stripe_event::Column::Id)
            .column(stripe_event::Column::Attempts)
            .filter(stripe_event::Column::ProcessedAt.is_null())
            .filter(stripe_event::Column::NextAttemptAt.lte(now))
            .order_by_asc(stripe_event::Column::NextAttemptAt)
            .limit(RELAY_BATCH)
            .into_tuple()
            .all(&tx)
            .await?;
        let mut claimed = Vec::with_capacity(due.len());
        for (id, attempts) in due {
            let updated = stripe_event::Entity::update_many()
                .col_expr(stripe_event::Column::NextAttemptAt, Expr::value(now + RELAY_LEASE))
                .filter(stripe_event::Column::Id.eq(&id))
                .filter(stripe_event::Column::ProcessedAt.is_null())
                .filter(stripe_event::Column::NextAttemptAt.lte(now))
                .exec(&tx)
                .await?;
            if updated.rows_affected == 1 {
                claimed.push((id, attempts));
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// An unprocessed inbox row; `None` once it is processed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn pending_stripe_event(&self, id: &str) -> Result<Option<stripe_event::Model>> {
        Ok(stripe_event::Entity::find_by_id(id)
            .filter(stripe_event::Column::ProcessedAt.is_null())
            .one(&self.db)
            .await?)
    }

    /// Records how a re-read ended: processed, or retried after a backoff (given up after
    /// three days, with the error kept: reconciliation repairs it).
    ///
    /// # Errors
    /// Database errors.
    pub async fn finish_stripe_event(&self, event: &stripe_event::Model, outcome: ReRead) -> Result<()> {
        let now = self.clock.now();
        let update = stripe_event::Entity::update_many()
            .filter(stripe_event::Column::Id.eq(&event.id))
            .filter(stripe_event::Column::ProcessedAt.is_null());
        let update = match outcome {
            ReRead::Done => update
                .col_expr(stripe_event::Column::ProcessedAt, Expr::value(Some(now)))
                .col_expr(stripe_event::Column::LastError, Option::<String>::None.into()),
            ReRead::Failed(error) => {
                let attempts = event.attempts + 1;
                let give_up = now - event.received_at >= RETRY_FOR;
                update
                    .col_expr(stripe_event::Column::Attempts, Expr::value(attempts))
                    .col_expr(
                        stripe_event::Column::NextAttemptAt,
                        Expr::value(now + backoff(attempts)),
                    )
                    .col_expr(stripe_event::Column::LastError, Expr::value(Some(error)))
                    .col_expr(stripe_event::Column::ProcessedAt, Expr::value(give_up.then_some(now)))
            }
        };
        update.exec(&self.writer).await?;
        Ok(())
    }

    /// Deletes processed inbox rows older than 30 days; returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn prune_stripe_events(&self) -> Result<u64> {
        let cutoff = self.clock.now() - KEEP_FOR;
        let deleted = stripe_event::Entity::delete_many()
            .filter(stripe_event::Column::ProcessedAt.lt(cutoff))
            .exec(&self.writer)
            .await?;
        Ok(deleted.rows_affected)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_name_their_subscription_in_either_shape() {
        let sub = json!({ "id": "evt_1", "type": "customer.subscription.updated",
            "data": { "object": { "object": "subscription", "id": "sub_1" } } });
        let old_invoice = json!({ "id": "evt_2", "type": "invoice.paid",
            "data": { "object": { "object": "invoice", "subscription": "sub_2" } } });
        let new_invoice = json!({ "id": "evt_3", "type": "invoice.paid",
            "data": { "object": { "object": "invoice", "subscription": null,
                "parent": { "subscription_details": { "subscription": "sub_3" } } } } });
        let other = json!({ "id": "evt_4", "type": "charge.succeeded", "data": { "object": { "object": "charge" } } });
        let found: Vec<Option<String>> = [sub, old_invoice, new_invoice, other]
            .iter()
            .map(|e| StripeEvent::from_stripe(e).unwrap().subscription_id)
            .collect();
        assert_eq!(
            found,
            [Some("sub_1".into()), Some("sub_2".into()), Some("sub_3".into()), None]
        );
    }

    #[test]
    fn malformed_events_are_refused() {
        for bad in [
            json!({ "type": "invoice.paid" }),
            json!({ "id": "evt_1" }),
            json!({ "id": "evt 1", "type": "x" }),
            json!({ "id": "evt_1", "type": "x", "data": { "object": { "object": "subscription", "id": "sub'1" } } }),
        ] {
            assert!(StripeEvent::from_stripe(&bad).is_err(), "{bad}");
        }
    }
}
