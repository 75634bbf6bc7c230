//! The email outbox: every email the product promises is a row written in the same transaction
//! as the change that promises it (a renewal notice, refresh files, an alert digest). The row,
//! not the job queue, is the record of the email: a relay hands rows that are due to the queue,
//! a delivery takes a short lease on its row before sending, and the row ends `SENT`, or `DEAD`
//! after a permanent failure (with an EMAIL_FAILED alert). Rendering and the mail transport live
//! in the worker; this module only knows rows.

use chrono::{DateTime, Duration, Utc};
use entity::email_outbox;
use entity::enums::{AlertKind, EmailStatus};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use crate::alerts::{self, NewAlert};
use crate::db::begin_write;
use crate::page::{self, Order, Page, PageRequest};
use crate::{Actor, Capability, Domain, Result, new_id};

/// How long a delivery owns its row; a worker that dies mid-send loses it after this.
pub const DELIVERY_LEASE_SECONDS: i64 = 60;
/// How long a transiently failing email keeps being retried (counted from when it was
/// promised): a mail server down over a long weekend loses nothing.
pub const GIVE_UP_AFTER_DAYS: i64 = 4;
/// Rows the relay hands to the queue per call.
const RELAY_BATCH: u64 = 200;

pub use entity::columns::{Attachment, AttachmentList};

/// An email to promise.
pub(crate) struct NewEmail<'a> {
    pub vendor_id: &'a str,
    /// Which template renders it (`renewal_notice`, `refresh_files`, `alert_digest`).
    pub kind: &'static str,
    pub to: Vec<String>,
    pub subject: String,
    /// Template variables.
    pub context: serde_json::Value,
    pub attachments: Vec<Attachment>,
    /// One email per key, ever (`None` = always a new email).
    pub dedupe_key: Option<String>,
}

/// Writes an outbox row in the caller's transaction; returns false when the dedupe key was
/// already used (the email was promised before).
pub(crate) async fn promise(db: &impl ConnectionTrait, email: NewEmail<'_>, now: DateTime<Utc>) -> Result<bool> {
    let id = new_id();
    let inserted = email_outbox::Entity::insert(email_outbox::ActiveModel {
        message_id: Set(format!("<{id}@licensing>")),
        id: Set(id),
        vendor_id: Set(email.vendor_id.to_owned()),
        kind: Set(email.kind.to_owned()),
        to_address: Set(email.to.join(", ")),
        subject: Set(email.subject),
        context: Set(email.context),
        attachments: Set(AttachmentList(email.attachments)),
        status: Set(EmailStatus::Pending),
        attempts: Set(0),
        last_error: Set(None),
        dedupe_key: Set(email.dedupe_key),
        created_at: Set(now),
        next_attempt_at: Set(now),
        enqueued_at: Set(None),
        sent_at: Set(None),
    })
    .on_conflict(
        OnConflict::column(email_outbox::Column::DedupeKey)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(inserted == 1)
}

/// Rows no queue holds: never enqueued, or enqueued before `lost` (the job was lost).
fn in_no_queue(lost: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(email_outbox::Column::EnqueuedAt.is_null())
        .add(email_outbox::Column::EnqueuedAt.lt(lost))
}

/// Wait before retry `attempt` (1, 2, ...): 5 s doubling, at most an hour.
#[must_use]
pub fn backoff(attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(10);
    Duration::seconds((5_i64 << exponent).min(3600))
}

/// When to retry after failed attempt `attempt`: [`backoff`] plus up to 20% jitter, so a queue
/// of emails or webhooks failing together does not retry in lockstep.
#[must_use]
pub fn retry_at(now: DateTime<Utc>, attempt: i32) -> DateTime<Utc> {
    now + backoff(attempt) * (100 + rand::Rng::gen_range(&mut rand::thread_rng(), 0..20)) / 100
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The transport accepted it.
    Sent,
    /// Try again later (connection refused, 4xx).
    Transient(String),
    /// Never going to work (5xx, a bad address).
    Permanent(String),
}

impl Domain {
    /// The vendor's emails, newest first, optionally in one status.
    ///
    /// # Errors
    /// Database errors.
    pub async fn emails(
        &self,
        actor: &Actor,
        status: Option<EmailStatus>,
        request: &PageRequest,
    ) -> Result<Page<email_outbox::Model>> {
        actor.require(Capability::Read)?;
        let mut select = email_outbox::Entity::find().filter(email_outbox::Column::VendorId.eq(&actor.vendor_id));
        if let Some(status) = status {
            select = select.filter(email_outbox::Column::Status.eq(status));
        }
        page::fetch(&self.db, select, email_outbox::Column::Id, request, Order::NewestFirst).await
    }

    /// The relay: marks due rows that no queue holds (never enqueued, or enqueued longer ago
    /// than a lease: the job was lost) as enqueued now, and returns them as (id, attempts so
    /// far) for the caller to push to the queue (under a key naming the attempt, so a row is
    /// queued once per attempt however often the relay runs).
    ///
    /// # Errors
    /// Database errors.
    pub async fn emails_to_enqueue(&self) -> Result<Vec<(String, i32)>> {
        let now = self.clock.now();
        let lost = now - Duration::seconds(DELIVERY_LEASE_SECONDS);
        let tx = begin_write(&self.writer).await?;
        let due: Vec<(String, i32)> = email_outbox::Entity::find()
            .select_only()
            .column(email_outbox::Column::Id)
            .column(email_outbox::Column::Attempts)
            .filter(email_outbox::Column::Status.eq(EmailStatus::Pending))
            .filter(email_outbox::Column::NextAttemptAt.lte(now))
            .filter(in_no_queue(lost))
            .order_by_asc(email_outbox::Column::NextAttemptAt)
            .order_by_asc(email_outbox::Column::Id)
            .limit(RELAY_BATCH)
            .into_tuple()
            .all(&tx)
            .await?;
        let mut claimed = Vec::with_capacity(due.len());
        for (id, attempts) in due {
            // Conditional on the row as it is now: a concurrent relay (PostgreSQL) takes it once.
            let updated = email_outbox::Entity::update_many()
                .col_expr(email_outbox::Column::EnqueuedAt, Expr::value(Some(now)))
                .filter(email_outbox::Column::Id.eq(&id))
                .filter(email_outbox::Column::Status.eq(EmailStatus::Pending))
                .filter(in_no_queue(lost))
                .exec(&tx)
                .await?;
            if updated.rows_affected == 1 {
                claimed.push((id, attempts));
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Takes the delivery lease on a row that is pending and due, counting the attempt now (so
    /// a send that crashes or hangs the worker still counts); `None` when it is sent, dead, not
    /// due, or another worker holds it (then there is nothing to do). The returned row's
    /// `attempts` is the lease token [`Domain::finish_delivery`] checks.
    ///
    /// # Errors
    /// Database errors.
    pub async fn start_delivery(&self, id: &str) -> Result<Option<email_outbox::Model>> {
        use sea_orm::sea_query::ExprTrait as _;
        let now = self.clock.now();
        let leased = email_outbox::Entity::update_many()
            .col_expr(
                email_outbox::Column::NextAttemptAt,
                Expr::value(now + Duration::seconds(DELIVERY_LEASE_SECONDS)),
            )
            .col_expr(email_outbox::Column::EnqueuedAt, Expr::value(Some(now)))
            .col_expr(
                email_outbox::Column::Attempts,
                Expr::col(email_outbox::Column::Attempts).add(1),
            )
            .filter(email_outbox::Column::Id.eq(id))
            .filter(email_outbox::Column::Status.eq(EmailStatus::Pending))
            .filter(email_outbox::Column::NextAttemptAt.lte(now))
            .exec_with_returning(&self.writer)
            .await?;
        Ok(leased.into_iter().next())
    }

    /// Records how a delivery ended: `SENT`; a retry with backoff; or `DEAD` with an
    /// EMAIL_FAILED alert after a permanent failure, or a transient one
    /// [`GIVE_UP_AFTER_DAYS`] after the email was promised.
    ///
    /// # Errors
    /// Database errors.
    pub async fn finish_delivery(&self, email: &email_outbox::Model, outcome: Delivery) -> Result<EmailStatus> {
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let attempts = email.attempts;
        // Only the holder of the lease records an outcome: a late finisher whose lease lapsed
        // (and was taken by another worker, which counted another attempt) changes nothing.
        let update = email_outbox::Entity::update_many()
            .filter(email_outbox::Column::Id.eq(&email.id))
            .filter(email_outbox::Column::Status.eq(EmailStatus::Pending))
            .filter(email_outbox::Column::Attempts.eq(attempts));
        let (status, error) = match outcome {
            Delivery::Sent => (EmailStatus::Sent, None),
            Delivery::Transient(error) if now - email.created_at < Duration::days(GIVE_UP_AFTER_DAYS) => {
                (EmailStatus::Pending, Some(error))
            }
            Delivery::Transient(error) | Delivery::Permanent(error) => (EmailStatus::Dead, Some(error)),
        };
        let update = match status {
            EmailStatus::Sent => update.col_expr(email_outbox::Column::SentAt, Expr::value(Some(now))),
            EmailStatus::Pending => update
                .col_expr(
                    email_outbox::Column::NextAttemptAt,
                    Expr::value(retry_at(now, attempts)),
                )
                .col_expr(
                    email_outbox::Column::EnqueuedAt,
                    Expr::value(Option::<DateTime<Utc>>::None),
                ),
            EmailStatus::Dead => update,
        };
        let changed = update
            .col_expr(email_outbox::Column::Status, Expr::value(status))
            .col_expr(email_outbox::Column::LastError, Expr::value(error.clone()))
            .exec(&tx)
            .await?;
        if changed.rows_affected == 1 && status == EmailStatus::Dead {
            let alert = NewAlert {
                vendor_id: &email.vendor_id,
                kind: AlertKind::EmailFailed,
                message: format!(
                    "The email \"{}\" to {} could not be delivered after {attempts} attempt(s): {}",
                    email.subject,
                    email.to_address,
                    error.unwrap_or_default()
                ),
                license_id: None,
                device_id: None,
                dedupe_key: Some(format!("email-failed:{}", email.id)),
                // A failed alert digest must not trigger another digest about itself.
                email: email.kind != "alert_digest",
            };
            alerts::raise(&tx, alert, now).await?;
        }
        tx.commit().await?;
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::seconds(5));
        assert_eq!(backoff(2), Duration::seconds(10));
        assert_eq!(backoff(5), Duration::seconds(80));
        assert_eq!(backoff(40), Duration::seconds(3600));
    }
}
