//! `device_status_changes`: a device's status history (ACTIVE on activation or revival, DEAD,
//! RELEASED), append-only.

use crate::enums::DeviceStatus;
use sea_orm::entity::prelude::*;

/// One status change of one device.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "device_status_changes")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub license_id: String,
    pub device_id: String,
    /// The status from this moment on.
    pub status: DeviceStatus,
    pub at: DateTimeUtc,
}

/// No relations are navigated from here.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
