//! `usage_records`: One accepted consumption record.

use sea_orm::entity::prelude::*;

/// One accepted consumption record.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_records")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub license_id: String,
    pub device_id: Option<String>,
    pub meter: String,
    pub quantity: i64,
    pub idempotency_key: String,
    /// `online`, `report` or `deactivation`.
    pub source: String,
    pub ledger_seq: Option<i64>,
    pub ledger_hash: Option<String>,
    pub recorded_at: DateTimeUtc,
    pub received_at: DateTimeUtc,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
