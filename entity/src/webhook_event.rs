//! `webhook_events`: An event promised by a change (written in its transaction); the worker fans it out.

use sea_orm::entity::prelude::*;

/// An event promised by a change (written in its transaction); the worker fans it out.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_events")]
pub struct Model {
    /// `evt_` + UUIDv7; the same on every retry.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    /// Dotted lower case, e.g. `license.created`.
    pub event_type: String,
    /// The `data` member of the delivered body.
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    pub created_at: DateTimeUtc,
    /// When the worker made one delivery per subscribed endpoint.
    pub fanned_out_at: Option<DateTimeUtc>,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
