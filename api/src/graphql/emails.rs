//! The email outbox, for staff: what was promised, and whether it went out.

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::email_outbox;

use crate::graphql::connection::{Connection, from_page, page_request};
use crate::graphql::context::ContextExt;
use crate::graphql::error::ApiResult;
use crate::graphql::page_cost;

/// Where an email stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::EmailStatus")]
pub enum EmailStatus {
    /// Waiting to be sent, or to be retried.
    Pending,
    /// Accepted by the mail server (or written as a file).
    Sent,
    /// Given up on (a permanent failure, or too many attempts): an EMAIL_FAILED alert says so.
    Dead,
}

/// An email the product promised.
#[derive(SimpleObject, Clone)]
pub struct Email {
    /// Email id.
    pub id: ID,
    /// What it is (`renewal_notice`, `refresh_files`, `alert_digest`).
    pub kind: String,
    /// Recipients.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Where it stands.
    pub status: EmailStatus,
    /// Delivery attempts so far.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Its Message-ID (the same on every attempt).
    pub message_id: String,
    /// Names of its attachments.
    pub attachments: Vec<String>,
    /// When it was promised.
    pub created_at: DateTime<Utc>,
    /// When the next attempt is due (while pending).
    pub next_attempt_at: DateTime<Utc>,
    /// When it went out.
    pub sent_at: Option<DateTime<Utc>>,
}

impl From<email_outbox::Model> for Email {
    fn from(e: email_outbox::Model) -> Self {
        let attachments = e.attachments.0;
        Self {
            id: e.id.into(),
            kind: e.kind,
            to: e.to_address,
            subject: e.subject,
            status: e.status.into(),
            attempts: e.attempts,
            last_error: e.last_error,
            message_id: e.message_id,
            attachments: attachments.into_iter().map(|a| a.filename).collect(),
            created_at: e.created_at,
            next_attempt_at: e.next_attempt_at,
            sent_at: e.sent_at,
        }
    }
}

/// Email queries.
#[derive(Default)]
pub struct EmailQuery;

#[Object]
impl EmailQuery {
    /// The vendor's emails, newest first, optionally in one status.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn emails(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        status: Option<EmailStatus>,
    ) -> ApiResult<Connection<Email>> {
        let request = page_request(ctx, first, after)?;
        let page = ctx
            .domain()
            .emails(ctx.actor()?, status.map(Into::into), &request)
            .await?;
        Ok(from_page(page, |e| &e.id, Email::from))
    }
}
