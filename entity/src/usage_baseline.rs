//! `usage_baselines`: the anomaly scan's cached baseline of each license series (license,
//! meter), in the scan's own JSON shape.

use sea_orm::entity::prelude::*;

/// The baseline of one license series.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_baselines")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub license_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub meter: String,
    pub vendor_id: String,
    /// The baseline (`domain::anomaly_scan` reads and writes its shape).
    #[sea_orm(column_type = "JsonBinary")]
    pub baseline: Json,
    /// When it was computed.
    pub computed_at: DateTimeUtc,
}

/// No relations are navigated from here.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
