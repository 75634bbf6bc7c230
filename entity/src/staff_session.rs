//! `staff_sessions`: A login session; the id is the JWT's `jti`.

use sea_orm::entity::prelude::*;

/// A login session; the id is the JWT's `jti`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "staff_sessions")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub staff_user_id: String,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
