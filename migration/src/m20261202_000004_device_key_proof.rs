//! Device re-activation hardening:
//!
//! - `policies.require_device_key_proof`: re-activating a live device of such a policy must
//!   prove its device key (a signature over a `deviceKeyChallenge` nonce) or wait for staff.
//! - `devices.reactivated_at`: when the device was last re-activated while it still held a
//!   live token, so a second re-activation within 24 hours is flagged for staff.
//! - `ix_devices_license_released`: the released rows of a license, oldest first, for pruning
//!   them beyond the per-license cap.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        m.alter_table(
            Table::alter()
                .table("policies")
                .add_column(boolean("require_device_key_proof").default(false))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("devices")
                .add_column(timestamp_with_time_zone_null("reactivated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_devices_license_released")
                .table("devices")
                .col("license_id")
                .col("released_at")
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_devices_license_released")
                .table("devices")
                .to_owned(),
        )
        .await?;
        m.alter_table(Table::alter().table("devices").drop_column("reactivated_at").to_owned())
            .await?;
        m.alter_table(
            Table::alter()
                .table("policies")
                .drop_column("require_device_key_proof")
                .to_owned(),
        )
        .await
    }
}
