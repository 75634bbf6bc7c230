//! Consumption metering and the anomaly worker's rollups.
//!
//! - `licenses.meters`: per-license meter overrides (by code) on top of the policy's meters.
//! - `usage_records`: `request_hash` (what an online record's idempotency key was used with, so
//!   a reuse with other input is refused), `answer` (what the first call answered, so a retry
//!   gets the same), `note` (an adjustment's reason); sources are the
//!   upper-case `UsageSource` strings.
//! - `anomalies`: `meter`, `last_seen_at` (a repeat of an open anomaly moves it).
//! - `usage_hourly`: usage per license, meter, device (`''` = none) and UTC hour, written in the
//!   transaction that counts each record; `usage_series` says when each series was first seen,
//!   last touched and its cached baseline, so a scan visits only series touched since the last
//!   one.
//! - `device_status_changes`: each device's status history (ACTIVE, DEAD, RELEASED), so usage
//!   dated while a device was dead and seat hopping can be told.
//! - `fingerprint_observations`: component sets a device presented other than the one it
//!   activated with.
//! - `scan_watermarks`: how far each incremental scan has read.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn index(table: &'static str, name: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for col in cols {
        stmt.col(*col);
    }
    stmt.to_owned()
}

/// SQLite alters one column per statement.
async fn add_column(m: &SchemaManager<'_>, table: &'static str, column: ColumnDef) -> Result<(), DbErr> {
    let mut column = column;
    m.alter_table(Table::alter().table(table).add_column(&mut column).to_owned())
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    #[expect(clippy::too_many_lines, reason = "one table after another, read top to bottom")]
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        add_column(m, "licenses", json_binary_null("meters")).await?;
        add_column(m, "usage_records", string_len_null("request_hash", 64)).await?;
        add_column(m, "usage_records", text_null("note")).await?;
        add_column(m, "usage_records", json_binary_null("answer")).await?;
        m.exec_stmt(
            Query::update()
                .table("usage_records")
                .value("source", "DEACTIVATION")
                .and_where(Expr::col("source").eq("deactivation"))
                .to_owned(),
        )
        .await?;
        add_column(m, "anomalies", string_len_null("meter", 64)).await?;
        add_column(
            m,
            "anomalies",
            // SQLite adds a column only with a constant default; every row is filled just below.
            timestamp_with_time_zone("last_seen_at")
                .default("1970-01-01T00:00:00+00:00")
                .to_owned(),
        )
        .await?;
        m.exec_stmt(
            Query::update()
                .table("anomalies")
                .value("last_seen_at", Expr::col("detected_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "anomalies",
            "ix_anomalies_vendor_kind",
            &["vendor_id", "kind", "id"],
        ))
        .await?;
        m.create_index(index(
            "devices",
            "ix_devices_vendor_fingerprint",
            &["vendor_id", "fingerprint"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table("usage_hourly")
                .col(string_len("license_id", 36))
                .col(string_len("meter", 64))
                .col(string_len("device_id", 36))
                .col(timestamp_with_time_zone("hour"))
                .col(string_len("vendor_id", 36))
                .col(big_integer("quantity"))
                .col(big_integer("records"))
                .col(big_integer("skewed_records").default(0))
                .col(timestamp_with_time_zone("touched_at"))
                .primary_key(
                    Index::create()
                        .col("license_id")
                        .col("meter")
                        .col("device_id")
                        .col("hour"),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("usage_series")
                .col(string_len("license_id", 36))
                .col(string_len("meter", 64))
                .col(string_len("device_id", 36))
                .col(string_len("vendor_id", 36))
                .col(timestamp_with_time_zone("first_hour"))
                .col(timestamp_with_time_zone("last_hour"))
                .col(timestamp_with_time_zone("touched_at"))
                .col(json_binary_null("baseline"))
                .col(timestamp_with_time_zone_null("baseline_at"))
                .primary_key(Index::create().col("license_id").col("meter").col("device_id"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("usage_series", "ix_usage_series_touched", &["touched_at"]))
            .await?;
        m.create_table(
            Table::create()
                .table("device_status_changes")
                .col(string_len("id", 36).primary_key())
                .col(string_len("vendor_id", 36))
                .col(string_len("license_id", 36))
                .col(string_len("device_id", 36))
                .col(string_len("status", 16))
                .col(timestamp_with_time_zone("at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "device_status_changes",
            "ix_device_status_changes_device",
            &["device_id", "at"],
        ))
        .await?;
        m.create_index(index(
            "device_status_changes",
            "ix_device_status_changes_at",
            &["at", "license_id"],
        ))
        .await?;
        m.create_table(
            Table::create()
                .table("fingerprint_observations")
                .col(string_len("device_id", 36))
                .col(string_len("components_hash", 64))
                .col(string_len("vendor_id", 36))
                .col(string_len("license_id", 36))
                .col(timestamp_with_time_zone("first_seen_at"))
                .col(timestamp_with_time_zone("last_seen_at"))
                .col(big_integer("times"))
                .primary_key(Index::create().col("device_id").col("components_hash"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "fingerprint_observations",
            "ix_fingerprint_observations_seen",
            &["last_seen_at"],
        ))
        .await?;
        m.create_table(
            Table::create()
                .table("scan_watermarks")
                .col(string_len("scan", 32).primary_key())
                .col(timestamp_with_time_zone("through"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "scan_watermarks",
            "fingerprint_observations",
            "device_status_changes",
            "usage_series",
            "usage_hourly",
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
