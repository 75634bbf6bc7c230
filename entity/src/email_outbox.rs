//! `email_outbox`: An email promised by a change; the worker delivers it.

use crate::enums::EmailStatus;
use sea_orm::entity::prelude::*;

/// An email promised by a change; the worker delivers it.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "email_outbox")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub kind: String,
    pub to_address: String,
    pub subject: String,
    /// Template variables.
    #[sea_orm(column_type = "JsonBinary")]
    pub context: Json,
    /// JSON array of attachments.
    #[sea_orm(column_type = "JsonBinary")]
    pub attachments: crate::columns::AttachmentList,
    pub status: EmailStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// Stable Message-ID.
    pub message_id: String,
    pub dedupe_key: Option<String>,
    pub created_at: DateTimeUtc,
    pub next_attempt_at: DateTimeUtc,
    pub enqueued_at: Option<DateTimeUtc>,
    pub sent_at: Option<DateTimeUtc>,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
