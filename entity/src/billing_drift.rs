//! `billing_drift`: the drift report, one open row per (kind, license, subscription).

use crate::enums::BillingDriftKind;
use sea_orm::entity::prelude::*;

/// A disagreement between the billing system and a license.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "billing_drift")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub kind: BillingDriftKind,
    pub license_id: Option<String>,
    pub subscription_id: Option<String>,
    pub explanation: String,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub expected: Option<Json>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub actual: Option<Json>,
    /// The sync healed it (the row is resolved when written).
    pub auto_fixed: bool,
    pub first_seen_at: DateTimeUtc,
    /// The last run that still found it.
    pub last_seen_at: DateTimeUtc,
    pub resolved_at: Option<DateTimeUtc>,
    /// The last pass that found it.
    pub last_pass_id: Option<String>,
    /// `kind:license:subscription` while open, so a run finds the row an earlier run opened.
    pub dedupe_key: Option<String>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
