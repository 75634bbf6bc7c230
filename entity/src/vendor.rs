//! `vendors`: A vendor (tenant): the software company whose licenses these are.

use sea_orm::entity::prelude::*;

/// A vendor (tenant): the software company whose licenses these are.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "vendors")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Display name.
    pub name: String,
    /// Unique short name.
    pub slug: String,
    /// JSON array of addresses that receive staff alerts.
    #[sea_orm(column_type = "JsonBinary")]
    pub alert_emails: crate::columns::StringList,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
