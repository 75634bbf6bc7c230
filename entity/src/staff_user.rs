//! `staff_users`: A person who signs in to the vendor's dashboard.

use crate::enums::Role;
use sea_orm::entity::prelude::*;

/// A person who signs in to the vendor's dashboard.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "staff_users")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    /// Login name, lower-cased.
    pub email: String,
    pub name: Option<String>,
    pub role: Role,
    /// Argon2 PHC string; `None` until a password is set.
    pub password_hash: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub disabled_at: Option<DateTimeUtc>,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
