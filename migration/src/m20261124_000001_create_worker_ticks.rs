//! `worker_ticks`: one row per periodic worker task (`heartbeat_sweep`, `renewal_scan`,
//! `outbox_relay`) counting the runs that started and the runs that finished, so operators and
//! tests can see the workers making progress instead of guessing from elapsed time.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("worker_ticks")
                .col(string_len("task", 32).primary_key())
                .col(big_integer("started").default(0))
                .col(big_integer("runs").default(0))
                .col(big_integer_null("last_tick"))
                .col(timestamp_with_time_zone_null("finished_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("worker_ticks").to_owned()).await
    }
}
