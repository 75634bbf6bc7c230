//! `audit_events`: One change, who made it, and what it changed.

use sea_orm::entity::prelude::*;

/// One change, who made it, and what it changed.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    /// `staff`, `token`, `device` or `system`.
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub actor_label: String,
    /// E.g. `license.suspend`.
    pub action: String,
    pub target_kind: String,
    pub target_id: Option<String>,
    /// `{"before": {...}, "after": {...}}` of the changed fields.
    #[sea_orm(column_type = "JsonBinary")]
    pub diff: Json,
    pub request_id: Option<String>,
    pub created_at: DateTimeUtc,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
