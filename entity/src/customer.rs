//! `customers`: A vendor's customer, keyed by its id in the vendor's ERP/CRM.

use sea_orm::entity::prelude::*;

/// A vendor's customer, keyed by its id in the vendor's ERP/CRM.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "customers")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub external_id: String,
    pub name: String,
    pub email: Option<String>,
    pub billing_customer_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
