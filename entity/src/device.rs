//! `devices`: A machine activated on a license.

use crate::enums::DeviceStatus;
use sea_orm::entity::prelude::*;

/// A machine activated on a license.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "devices")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    pub license_id: String,
    pub fingerprint: String,
    /// JSON object of fingerprint components.
    #[sea_orm(column_type = "JsonBinary")]
    pub components: crate::columns::ComponentMap,
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub platform: Option<String>,
    pub status: DeviceStatus,
    /// Whether the device counts against the license's seats (`licenses.seats_used`).
    pub holds_seat: bool,
    /// Activated by file.
    pub offline: bool,
    /// The device's Ed25519 public key (base64), when it has one.
    pub public_key: Option<String>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub variables: Option<Json>,
    /// Bumped to revoke the device's tokens at once.
    pub token_generation: i32,
    /// Version of the file the device holds.
    pub license_version: i32,
    pub activated_at: DateTimeUtc,
    pub last_seen_at: Option<DateTimeUtc>,
    /// When the device counts as dead without a heartbeat.
    pub heartbeat_deadline_at: Option<DateTimeUtc>,
    pub checked_out_until: Option<DateTimeUtc>,
    pub released_at: Option<DateTimeUtc>,
    /// When it was last re-activated while it still held a live token.
    pub reactivated_at: Option<DateTimeUtc>,
    /// Last acknowledged usage-ledger sequence number.
    pub ledger_seq: Option<i64>,
    /// Hash of that ledger record.
    pub ledger_hash: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// Tables this one points to.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The row's `license_id`.
    #[sea_orm(
        belongs_to = "super::license::Entity",
        from = "Column::LicenseId",
        to = "super::license::Column::Id"
    )]
    License,
}

impl Related<super::license::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::License.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
