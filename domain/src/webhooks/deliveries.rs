//! Webhook deliveries for the sender: fanning events out to the enabled endpoints subscribed
//! to them, claiming due deliveries under a lease (at most [`PER_ENDPOINT_CONCURRENCY`] in
//! flight per endpoint, counted under a lock on the endpoint row so several workers together
//! keep the bound), recording how an attempt ended (DELIVERED, a jittered retry 5 s doubling
//! to 1 h, or FAILED once the retry window closes, with one WEBHOOK_FAILED alert per failing
//! endpoint), and ageing out the log.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use entity::enums::{AlertKind, WebhookDeliveryStatus};
use entity::{vendor, webhook_delivery, webhook_endpoint, webhook_event};
use sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::events;
use crate::alerts::{self, NewAlert};
use crate::db::begin_write;
use crate::outbox::retry_at;
use crate::{Domain, Result, new_id};

/// How long a claimed delivery is the claimer's; a worker killed mid-send loses it after this
/// (longer than the sender's 10 s request timeout).
pub const DELIVERY_LEASE_SECONDS: i64 = 30;
/// How long a failing delivery keeps being retried.
pub const RETRY_WINDOW_DAYS: i64 = 3;
/// Deliveries one endpoint may have in flight at once, across every worker.
pub const PER_ENDPOINT_CONCURRENCY: u64 = 4;
/// How long finished deliveries and their events stay in the log.
pub const LOG_RETENTION_DAYS: i64 = 30;
/// Events fanned out per call.
const FAN_OUT_BATCH: u64 = 500;
/// Endpoints with due deliveries looked at per claim.
const ENDPOINTS_PER_CLAIM: u64 = 200;
/// Longest error kept.
pub const MAX_ERROR_BYTES: usize = 1024;

/// A claimed delivery with what sending it needs.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    /// The delivery row as claimed (`attempts` counts this attempt and is the lease token).
    pub delivery: webhook_delivery::Model,
    /// Its endpoint.
    pub endpoint: webhook_endpoint::Model,
    /// Its event.
    pub event: webhook_event::Model,
    /// The vendor's slug (the body's `vendor`).
    pub vendor_slug: String,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx.
    Delivered(i32),
    /// Another status (with the first bytes of the body), or none (timeout, refused, a
    /// forbidden target).
    Failed(Option<i32>, String),
}

/// The first [`MAX_ERROR_BYTES`] of `text`, cut at a character boundary.
#[must_use]
pub fn truncate_error(text: &str) -> String {
    let mut end = text.len().min(MAX_ERROR_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn lease_free(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(webhook_delivery::Column::LeasedUntil.is_null())
        .add(webhook_delivery::Column::LeasedUntil.lt(now))
}

fn due(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(webhook_delivery::Column::Status.eq(WebhookDeliveryStatus::Pending))
        .add(webhook_delivery::Column::NextAttemptAt.lte(now))
        .add(lease_free(now))
}

impl Domain {
    /// Makes one PENDING delivery per enabled endpoint of the event's vendor subscribed to its
    /// type, and marks the events fanned out, a batch of them per call; returns whether it
    /// handled a whole batch (so more may be waiting). Safe to run in several workers at once:
    /// a delivery is unique per (event, endpoint).
    ///
    /// # Errors
    /// Database errors.
    pub async fn fan_out_webhook_events(&self) -> Result<bool> {
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let pending = webhook_event::Entity::find()
            .filter(webhook_event::Column::FannedOutAt.is_null())
            .order_by_asc(webhook_event::Column::Id)
            .limit(FAN_OUT_BATCH)
            .all(&tx)
            .await?;
        if pending.is_empty() {
            return Ok(false);
        }
        let mut endpoints: HashMap<String, Vec<webhook_endpoint::Model>> = HashMap::new();
        let mut rows = Vec::new();
        for event in &pending {
            if !endpoints.contains_key(&event.vendor_id) {
                let of_vendor = webhook_endpoint::Entity::find()
                    .filter(webhook_endpoint::Column::VendorId.eq(&event.vendor_id))
                    .filter(webhook_endpoint::Column::Enabled.eq(true))
                    .all(&tx)
                    .await?;
                endpoints.insert(event.vendor_id.clone(), of_vendor);
            }
            let subscribed = endpoints[&event.vendor_id]
                .iter()
                .filter(|endpoint| events::matches(&endpoint.events.0, &event.event_type));
            for endpoint in subscribed {
                rows.push(webhook_delivery::ActiveModel {
                    id: Set(new_id()),
                    vendor_id: Set(event.vendor_id.clone()),
                    endpoint_id: Set(endpoint.id.clone()),
                    event_id: Set(event.id.clone()),
                    event_type: Set(event.event_type.clone()),
                    status: Set(WebhookDeliveryStatus::Pending),
                    attempts: Set(0),
                    next_attempt_at: Set(now),
                    retry_until: Set(event.created_at + Duration::days(RETRY_WINDOW_DAYS)),
                    leased_until: Set(None),
                    response_status: Set(None),
                    last_error: Set(None),
                    created_at: Set(event.created_at),
                    updated_at: Set(now),
                    delivered_at: Set(None),
                });
            }
        }
        for chunk in rows.chunks(500) {
            webhook_delivery::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    OnConflict::columns([webhook_delivery::Column::EventId, webhook_delivery::Column::EndpointId])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&tx)
                .await?;
        }
        webhook_event::Entity::update_many()
            .col_expr(webhook_event::Column::FannedOutAt, Expr::value(Some(now)))
            .filter(webhook_event::Column::Id.is_in(pending.iter().map(|e| e.id.as_str())))
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(pending.len() as u64 == FAN_OUT_BATCH)
    }

    /// Enabled endpoints with a delivery due, except those in `skip` (the caller's own at
    /// their cap), at most 200: an index seek each, whatever the backlog.
    /// The caller decides which to serve first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn endpoints_with_due_webhooks(&self, skip: &[String]) -> Result<Vec<String>> {
        let has_due = Query::select()
            .expr(Expr::val(1))
            .from(webhook_delivery::Entity)
            .and_where(
                Expr::col((webhook_delivery::Entity, webhook_delivery::Column::EndpointId))
                    .equals((webhook_endpoint::Entity, webhook_endpoint::Column::Id)),
            )
            .cond_where(due(self.clock.now()))
            .to_owned();
        Ok(webhook_endpoint::Entity::find()
            .select_only()
            .column(webhook_endpoint::Column::Id)
            .filter(webhook_endpoint::Column::Enabled.eq(true))
            .filter(webhook_endpoint::Column::Id.is_not_in(skip.iter().map(String::as_str)))
            .filter(Expr::exists(has_due))
            .limit(ENDPOINTS_PER_CLAIM)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Claims up to `room` due deliveries of one enabled endpoint under a lease, oldest first,
    /// keeping it at most [`PER_ENDPOINT_CONCURRENCY`] in flight across every worker (counted
    /// while holding a lock on its row, so the count and the claims are one decision), and
    /// counting the attempt now (so a send that kills the worker still counts).
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_webhook_deliveries(&self, endpoint_id: &str, room: u64) -> Result<Vec<ClaimedDelivery>> {
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let Some(endpoint) = webhook_endpoint::Entity::find_by_id(endpoint_id)
            .lock_exclusive()
            .one(&tx)
            .await?
            .filter(|endpoint| endpoint.enabled)
        else {
            return Ok(Vec::new());
        };
        let in_flight = webhook_delivery::Entity::find()
            .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
            .filter(webhook_delivery::Column::Status.eq(WebhookDeliveryStatus::Pending))
            .filter(webhook_delivery::Column::LeasedUntil.gte(now))
            .count(&tx)
            .await?;
        let free = std::cmp::min(PER_ENDPOINT_CONCURRENCY.saturating_sub(in_flight), room);
        if free == 0 {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = webhook_delivery::Entity::find()
            .select_only()
            .column(webhook_delivery::Column::Id)
            .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
            .filter(due(now))
            .order_by_asc(webhook_delivery::Column::NextAttemptAt)
            .order_by_asc(webhook_delivery::Column::Id)
            .limit(free)
            .into_tuple()
            .all(&tx)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let deliveries = webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::LeasedUntil,
                Expr::value(Some(now + Duration::seconds(DELIVERY_LEASE_SECONDS))),
            )
            .col_expr(
                webhook_delivery::Column::Attempts,
                Expr::col(webhook_delivery::Column::Attempts).add(1),
            )
            .col_expr(webhook_delivery::Column::UpdatedAt, Expr::value(now))
            .filter(webhook_delivery::Column::Id.is_in(ids))
            .filter(due(now))
            .exec_with_returning(&tx)
            .await?;
        let mut events: HashMap<String, webhook_event::Model> = webhook_event::Entity::find()
            .filter(webhook_event::Column::Id.is_in(deliveries.iter().map(|d| d.event_id.as_str())))
            .all(&tx)
            .await?
            .into_iter()
            .map(|event| (event.id.clone(), event))
            .collect();
        let vendor_slug: String = vendor::Entity::find_by_id(&endpoint.vendor_id)
            .select_only()
            .column(vendor::Column::Slug)
            .into_tuple()
            .one(&tx)
            .await?
            .unwrap_or_default();
        tx.commit().await?;
        Ok(deliveries
            .into_iter()
            .filter_map(|delivery| {
                let event = events.remove(&delivery.event_id)?;
                Some(ClaimedDelivery {
                    delivery,
                    endpoint: endpoint.clone(),
                    event,
                    vendor_slug: vendor_slug.clone(),
                })
            })
            .collect())
    }

    /// Records how an attempt ended (only while the claimer still holds the lease): DELIVERED
    /// (clearing the endpoint's failure alert); PENDING with a jittered backoff; or FAILED
    /// once the next try would fall past the retry window, raising one WEBHOOK_FAILED alert
    /// per endpoint until a delivery to it succeeds again.
    ///
    /// # Errors
    /// Database errors.
    pub async fn finish_webhook_delivery(
        &self,
        claimed: &ClaimedDelivery,
        attempt: Attempt,
    ) -> Result<WebhookDeliveryStatus> {
        let delivery = &claimed.delivery;
        let now = self.clock.now();
        let failure_key = format!("webhook-failed:{}", delivery.endpoint_id);
        let tx = begin_write(&self.writer).await?;
        let update = webhook_delivery::Entity::update_many()
            .filter(webhook_delivery::Column::Id.eq(&delivery.id))
            .filter(webhook_delivery::Column::Status.eq(WebhookDeliveryStatus::Pending))
            .filter(webhook_delivery::Column::Attempts.eq(delivery.attempts))
            .col_expr(
                webhook_delivery::Column::LeasedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(webhook_delivery::Column::UpdatedAt, Expr::value(now));
        let (status, update, error) = match attempt {
            Attempt::Delivered(code) => (
                WebhookDeliveryStatus::Delivered,
                update
                    .col_expr(webhook_delivery::Column::DeliveredAt, Expr::value(Some(now)))
                    .col_expr(webhook_delivery::Column::ResponseStatus, Expr::value(Some(code)))
                    .col_expr(webhook_delivery::Column::LastError, Expr::value(Option::<String>::None)),
                None,
            ),
            Attempt::Failed(code, error) => {
                let error = truncate_error(&error);
                let update = update
                    .col_expr(webhook_delivery::Column::ResponseStatus, Expr::value(code))
                    .col_expr(webhook_delivery::Column::LastError, Expr::value(Some(error.clone())));
                let next = retry_at(now, delivery.attempts);
                if next < delivery.retry_until {
                    let update = update.col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(next));
                    (WebhookDeliveryStatus::Pending, update, Some(error))
                } else {
                    (WebhookDeliveryStatus::Failed, update, Some(error))
                }
            }
        };
        let changed = update
            .col_expr(webhook_delivery::Column::Status, Expr::value(status))
            .exec(&tx)
            .await?;
        if changed.rows_affected == 1 {
            match status {
                WebhookDeliveryStatus::Delivered => {
                    alerts::clear(&tx, &delivery.vendor_id, &failure_key).await?;
                }
                WebhookDeliveryStatus::Failed => {
                    let alert = NewAlert {
                        vendor_id: &delivery.vendor_id,
                        kind: AlertKind::WebhookFailed,
                        message: format!(
                            "Webhook deliveries to {} are failing: event {} ({}) was given up after {} attempt(s) over {RETRY_WINDOW_DAYS} days: {}. Later failures to this endpoint are listed by webhookDeliveries(status: FAILED); redeliverWebhook sends one again.",
                            claimed.endpoint.url,
                            delivery.event_id,
                            delivery.event_type,
                            delivery.attempts,
                            error.unwrap_or_default()
                        ),
                        license_id: None,
                        device_id: None,
                        dedupe_key: Some(failure_key),
                        email: true,
                    };
                    alerts::raise(&tx, alert, now).await?;
                }
                WebhookDeliveryStatus::Pending => {}
            }
        }
        tx.commit().await?;
        Ok(if changed.rows_affected == 1 {
            status
        } else {
            WebhookDeliveryStatus::Pending
        })
    }

    /// Deletes finished deliveries and fanned-out events older than [`LOG_RETENTION_DAYS`]
    /// (an event only once no delivery refers to it); returns how many rows went.
    ///
    /// # Errors
    /// Database errors.
    pub async fn prune_webhook_log(&self) -> Result<u64> {
        let cutoff = self.clock.now() - Duration::days(LOG_RETENTION_DAYS);
        let tx = begin_write(&self.writer).await?;
        let deliveries = webhook_delivery::Entity::delete_many()
            .filter(webhook_delivery::Column::Status.ne(WebhookDeliveryStatus::Pending))
            .filter(webhook_delivery::Column::UpdatedAt.lt(cutoff))
            .exec(&tx)
            .await?;
        let events = webhook_event::Entity::delete_many()
            .filter(webhook_event::Column::FannedOutAt.is_not_null())
            .filter(webhook_event::Column::CreatedAt.lt(cutoff))
            .filter(
                webhook_event::Column::Id.not_in_subquery(
                    Query::select()
                        .column(webhook_delivery::Column::EventId)
                        .from(webhook_delivery::Entity)
                        .to_owned(),
                ),
            )
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(deliveries.rows_affected + events.rows_affected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_cut_at_a_kibibyte_on_a_char_boundary() {
        assert_eq!(truncate_error("short"), "short");
        let long = "é".repeat(1000);
        let cut = truncate_error(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES);
        assert!(long.starts_with(&cut));
    }
}
