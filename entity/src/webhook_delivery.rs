//! `webhook_deliveries`: One event to one endpoint, with its attempts and lease.

use crate::enums::WebhookDeliveryStatus;
use sea_orm::entity::prelude::*;

/// One event to one endpoint, with its attempts and lease.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: WebhookDeliveryStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTimeUtc,
    /// Failures after this end the delivery FAILED (3 days after the event or a redelivery).
    pub retry_until: DateTimeUtc,
    /// A worker holds the delivery until then; past it, another may claim it.
    pub leased_until: Option<DateTimeUtc>,
    pub response_status: Option<i32>,
    /// The first 1 KiB of the last error (or response body).
    pub last_error: Option<String>,
    /// When the event happened.
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub delivered_at: Option<DateTimeUtc>,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
