//! The anomaly scan's own state:
//!
//! - `usage_baselines`: the cached baseline of each license series (license, meter: the sum
//!   of its device series), so an incremental scan judges new hours against stored numbers
//!   instead of re-reading the history.
//! - `ix_usage_hourly_touched`: the hours a record landed in since the last scan, found by
//!   range instead of by walking every series.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("usage_baselines")
                .col(string_len("license_id", 36))
                .col(string_len("meter", 64))
                .col(string_len("vendor_id", 36))
                .col(json_binary("baseline"))
                .col(timestamp_with_time_zone("computed_at"))
                .primary_key(Index::create().col("license_id").col("meter"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_usage_hourly_touched")
                .table("usage_hourly")
                .col("touched_at")
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("ix_usage_hourly_touched")
                .table("usage_hourly")
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table("usage_baselines").to_owned()).await
    }
}
