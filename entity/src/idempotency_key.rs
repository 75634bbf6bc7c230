//! `idempotency_keys`: A remembered idempotency key and the result it produced.

use sea_orm::entity::prelude::*;

/// A remembered idempotency key and the result it produced.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub operation: String,
    pub key: String,
    /// SHA-256 of the canonical input, hex.
    pub request_hash: String,
    pub result_id: Option<String>,
    pub created_at: DateTimeUtc,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
