//! `alerts`: Something staff should know about.

use crate::enums::AlertKind;
use sea_orm::entity::prelude::*;

/// Something staff should know about. Serializable: the live alert feed carries it between
/// processes.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "alerts")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub kind: AlertKind,
    pub message: String,
    pub license_id: Option<String>,
    pub device_id: Option<String>,
    pub dedupe_key: Option<String>,
    pub created_at: DateTimeUtc,
    pub acknowledged_at: Option<DateTimeUtc>,
    pub acknowledged_by: Option<String>,
    /// When staff were emailed about it (or it was decided no email goes out).
    pub notified_at: Option<DateTimeUtc>,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
