//! `licenses`: A license: a key issued under a policy, usually to a customer.

use crate::enums::LicenseStatus;
use sea_orm::entity::prelude::*;

/// A license: a key issued under a policy, usually to a customer.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "licenses")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub product_id: String,
    pub policy_id: String,
    pub customer_id: Option<String>,
    /// HMAC-SHA256 of the normalised key under the master secret, hex.
    pub key_lookup: String,
    /// The key, encrypted (nonce + ciphertext, base64).
    pub key_enc: String,
    /// Last four characters of the key, for display.
    pub key_last4: String,
    pub status: LicenseStatus,
    /// Why it was suspended or revoked.
    pub status_reason: Option<String>,
    pub issued_at: DateTimeUtc,
    /// `None` = perpetual.
    pub expires_at: Option<DateTimeUtc>,
    /// Effective seat cap; `None` = unlimited.
    pub max_activations: Option<i32>,
    /// Devices holding a seat (kept in step by the activation statements).
    pub seats_used: i32,
    /// Effective entitlements, JSON array.
    #[sea_orm(column_type = "JsonBinary")]
    pub entitlements: crate::columns::StringList,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub metadata: Option<Json>,
    pub billing_subscription_id: Option<String>,
    /// Meters that differ from the policy's, by code (the effective meters are the policy's
    /// with these laid over them).
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub meters: Option<crate::columns::MeterList>,
    /// Bumped by every change that alters the license file.
    pub version: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The row's `policy_id`.
    #[sea_orm(
        belongs_to = "super::policy::Entity",
        from = "Column::PolicyId",
        to = "super::policy::Column::Id"
    )]
    Policy,
    /// The row's `product_id`.
    #[sea_orm(
        belongs_to = "super::product::Entity",
        from = "Column::ProductId",
        to = "super::product::Column::Id"
    )]
    Product,
    /// The row's `customer_id`.
    #[sea_orm(
        belongs_to = "super::customer::Entity",
        from = "Column::CustomerId",
        to = "super::customer::Column::Id"
    )]
    Customer,
}

impl Related<super::policy::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Policy.def()
    }
}

impl Related<super::product::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Product.def()
    }
}

impl Related<super::customer::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customer.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
