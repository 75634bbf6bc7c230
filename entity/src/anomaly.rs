//! `anomalies`: A flag on suspicious consumption, with its explanation.

use crate::enums::{AnomalyKind, AnomalyStatus};
use sea_orm::entity::prelude::*;

/// A flag on suspicious consumption, with its explanation.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "anomalies")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub license_id: Option<String>,
    pub device_id: Option<String>,
    /// The meter of a usage series, for consumption anomalies.
    pub meter: Option<String>,
    pub kind: AnomalyKind,
    pub status: AnomalyStatus,
    pub explanation: String,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub evidence: Option<Json>,
    /// Cleared when staff acknowledge it, so the same situation can open a new anomaly.
    pub dedupe_key: Option<String>,
    pub detected_at: DateTimeUtc,
    /// When the situation was last seen (a repeat of an open anomaly moves it).
    pub last_seen_at: DateTimeUtc,
    pub acknowledged_at: Option<DateTimeUtc>,
    pub acknowledged_by: Option<String>,
    pub note: Option<String>,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
