//! `api_tokens`: An API token. Only the keyed hash of the secret is stored.

use crate::enums::Role;
use sea_orm::entity::prelude::*;

/// An API token. Only the keyed hash of the secret is stored.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "api_tokens")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub name: String,
    pub role: Role,
    /// HMAC-SHA256 of the secret under the master secret, hex.
    pub token_hash: String,
    /// First characters of the secret, to recognise it in a list.
    pub token_prefix: String,
    /// `staff`, `token` or `system`.
    pub created_by_kind: String,
    pub created_by_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
    pub last_used_at: Option<DateTimeUtc>,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
