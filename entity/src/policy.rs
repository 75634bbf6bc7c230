//! `policies`: The rules a license is issued under.

use crate::enums::{DeadDeviceAction, DeploymentMode};
use sea_orm::entity::prelude::*;

/// The rules a license is issued under.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "policies")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub product_id: String,
    pub name: String,
    /// `None` = perpetual.
    pub duration_seconds: Option<i64>,
    pub trial: bool,
    /// `None` = unlimited.
    pub max_activations: Option<i32>,
    pub floating: bool,
    pub deployment_mode: DeploymentMode,
    /// `None` = no heartbeat required.
    pub heartbeat_interval_seconds: Option<i64>,
    pub dead_device_action: DeadDeviceAction,
    pub grace_seconds: i64,
    pub license_file_ttl_seconds: i64,
    /// `None` = exact fingerprint.
    pub min_component_matches: Option<i32>,
    /// JSON array of entitlement codes.
    #[sea_orm(column_type = "JsonBinary")]
    pub entitlements: crate::columns::StringList,
    /// JSON array of meter definitions.
    #[sea_orm(column_type = "JsonBinary")]
    pub meters: crate::columns::MeterList,
    pub subscription_backed: bool,
    /// How long past its subscription's period end (or a lapse first seen) a linked license stays usable.
    pub billing_grace_seconds: i64,
    /// Re-activating a live device must prove its device key, or wait for staff.
    pub require_device_key_proof: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The row's `product_id`.
    #[sea_orm(
        belongs_to = "super::product::Entity",
        from = "Column::ProductId",
        to = "super::product::Column::Id"
    )]
    Product,
}

impl Related<super::product::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Product.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
