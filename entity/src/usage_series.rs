//! `usage_series`: one row per usage series (license, meter, device): when it started, when a
//! record last touched it, and the baseline the anomaly scan last computed for it.

use sea_orm::entity::prelude::*;

/// One usage series.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_series")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub license_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub meter: String,
    /// `''` for usage no device recorded.
    #[sea_orm(primary_key, auto_increment = false)]
    pub device_id: String,
    pub vendor_id: String,
    /// The earliest hour with usage.
    pub first_hour: DateTimeUtc,
    /// The latest hour with usage.
    pub last_hour: DateTimeUtc,
    /// When a record last landed in the series.
    pub touched_at: DateTimeUtc,
    /// The scan's cached baseline (its own JSON shape).
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub baseline: Option<Json>,
    /// When the baseline was computed.
    pub baseline_at: Option<DateTimeUtc>,
}

/// No relations are navigated from here.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
