//! `usage_hourly`: usage per license, meter, device and UTC hour (a rollup of `usage_records`
//! written with each record), which the anomaly scan reads instead of the raw records.

use sea_orm::entity::prelude::*;

/// Usage of one series in one hour.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_hourly")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub license_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub meter: String,
    /// The device; `''` for usage no device recorded (staff adjustments).
    #[sea_orm(primary_key, auto_increment = false)]
    pub device_id: String,
    /// Start of the UTC hour the records are dated in.
    #[sea_orm(primary_key, auto_increment = false)]
    pub hour: DateTimeUtc,
    pub vendor_id: String,
    /// Sum of the records' quantities.
    pub quantity: i64,
    /// How many records.
    pub records: i64,
    /// Online records dated ahead of the server clock (beyond a minute of skew).
    pub skewed_records: i64,
    /// When a record last landed in this hour.
    pub touched_at: DateTimeUtc,
}

/// No relations are navigated from here.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
