//! `meter_totals`: usage per license, meter and reset period (a rollup of `usage_records`).

use sea_orm::entity::prelude::*;

/// Usage of one meter of one license in one reset period.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "meter_totals")]
pub struct Model {
    /// The license.
    #[sea_orm(primary_key, auto_increment = false)]
    pub license_id: String,
    /// The meter code.
    #[sea_orm(primary_key, auto_increment = false)]
    pub meter: String,
    /// Start of the reset period (the epoch for meters that never reset).
    #[sea_orm(primary_key, auto_increment = false)]
    pub period_start: DateTimeUtc,
    /// Sum of accepted usage in the period.
    pub used: i64,
}

/// No relations are navigated from here.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
