//! `stripe_events`: the webhook inbox; an unprocessed row is a pending re-read.

use sea_orm::entity::prelude::*;

/// One verified billing event (or a local "go and look" when a license is linked).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_events")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Stripe's event id (`evt_...`), unique: a redelivery is dropped.
    pub event_id: String,
    pub event_type: String,
    /// The subscription to re-read; `None` for events about nothing we follow.
    pub subscription_id: Option<String>,
    pub received_at: DateTimeUtc,
    /// When the re-read was applied (or the event found irrelevant).
    pub processed_at: Option<DateTimeUtc>,
    /// Re-reads tried.
    pub attempts: i32,
    /// When the next re-read is due.
    pub next_attempt_at: DateTimeUtc,
    pub last_error: Option<String>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
