//! `webhook_endpoints`: A vendor's webhook receiver; its signing secret is encrypted with the master secret.

use sea_orm::entity::prelude::*;

/// A vendor's webhook receiver; its signing secret is encrypted with the master secret.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub url: String,
    /// Subscribed event types (`*` is all).
    #[sea_orm(column_type = "JsonBinary")]
    pub events: crate::columns::StringList,
    pub description: Option<String>,
    /// The HMAC secret, encrypted (nonce + ciphertext, base64).
    pub secret_enc: String,
    pub enabled: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
