//! `fingerprint_observations`: component sets a device presented in validations or heartbeats
//! that differ from the set it activated with.

use sea_orm::entity::prelude::*;

/// One component set one device presented.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "fingerprint_observations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub device_id: String,
    /// SHA-256 (hex) of the sorted `name=value` components.
    #[sea_orm(primary_key, auto_increment = false)]
    pub components_hash: String,
    pub vendor_id: String,
    pub license_id: String,
    pub first_seen_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
    /// How many calls presented it.
    pub times: i64,
}

/// No relations are navigated from here.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
