//! `scan_watermarks`: how far each incremental scan (the anomaly scan) has read.

use sea_orm::entity::prelude::*;

/// One scan's position.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "scan_watermarks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub scan: String,
    /// Everything touched before this moment has been scanned.
    pub through: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
