//! `usage_records`: One accepted consumption record.

use crate::enums::UsageSource;
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
    /// Units; negative only for a staff adjustment downwards.
    pub quantity: i64,
    /// Unique per license: `online:<device>:<key digest>`, `ledger:<device>:<ledger>:<seq>` or
    /// `adjust:<key digest>`.
    pub idempotency_key: String,
    pub source: UsageSource,
    pub ledger_seq: Option<i64>,
    pub ledger_hash: Option<String>,
    pub recorded_at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    /// SHA-256 (hex) of the input an idempotency key was first used with.
    pub request_hash: Option<String>,
    /// What the call that recorded it answered (a retry with the same key answers the same).
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub answer: Option<Json>,
    /// Why staff adjusted usage.
    pub note: Option<String>,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
