//! Alerts remember when staff were emailed about them (`notified_at`), so the alert digest
//! emails each alert once even with several workers running (alerts raised before count as
//! told); and the heartbeat sweep finds live devices past their deadline through an index on
//! (status, deadline); the live alert feed follows new alerts through an index on
//! `created_at`.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("alerts")
                .add_column(timestamp_with_time_zone_null("notified_at"))
                .to_owned(),
        )
        .await?;
        // Alerts that exist already were seen in the dashboard: no digest of the past.
        m.exec_stmt(
            Query::update()
                .table("alerts")
                .value("notified_at", Expr::col("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_devices_status_deadline")
                .table("devices")
                .col("status")
                .col("heartbeat_deadline_at")
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_alerts_notified")
                .table("alerts")
                .col("notified_at")
                .col("vendor_id")
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_alerts_created")
                .table("alerts")
                .col("created_at")
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("ix_alerts_created").table("alerts").to_owned())
            .await?;
        m.drop_index(Index::drop().name("ix_alerts_notified").table("alerts").to_owned())
            .await?;
        m.drop_index(
            Index::drop()
                .name("ix_devices_status_deadline")
                .table("devices")
                .to_owned(),
        )
        .await?;
        m.alter_table(Table::alter().table("alerts").drop_column("notified_at").to_owned())
            .await
    }
}
