//! Webhooks out:
//!
//! - `webhook_endpoints`: a vendor's receivers (URL, subscribed event types as a JSON array,
//!   the signing secret encrypted like signing keys, enabled flag).
//! - `webhook_events`: the event outbox. One row per event, written in the transaction of the
//!   change it describes; `fanned_out_at` is set once the worker has made its deliveries.
//! - `webhook_deliveries`: one row per event x endpoint with its status, attempts, next attempt,
//!   the end of its retry window (`retry_until`: 3 days after the event, or after a manual
//!   redelivery), lease (`leased_until`, so a delivery claimed by a killed worker is retried
//!   after it), the last response status and the first 1 KiB of the last error.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

fn index(table: &'static str, name: &'static str, cols: &[&'static str], unique: bool) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    if unique {
        stmt.unique();
    }
    for col in cols {
        stmt.col(*col);
    }
    stmt.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("webhook_endpoints")
                .col(string_len("id", 36).primary_key())
                .col(string_len("vendor_id", 36))
                .col(text("url"))
                .col(json_binary("events"))
                .col(text_null("description"))
                .col(text("secret_enc"))
                .col(boolean("enabled"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "webhook_endpoints",
            "ix_webhook_endpoints_vendor",
            &["vendor_id", "id"],
            false,
        ))
        .await?;
        m.create_table(
            Table::create()
                .table("webhook_events")
                .col(string_len("id", 40).primary_key())
                .col(string_len("vendor_id", 36))
                .col(string_len("event_type", 64))
                .col(json_binary("payload"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone_null("fanned_out_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "webhook_events",
            "ix_webhook_events_pending",
            &["fanned_out_at", "id"],
            false,
        ))
        .await?;
        m.create_table(
            Table::create()
                .table("webhook_deliveries")
                .col(string_len("id", 36).primary_key())
                .col(string_len("vendor_id", 36))
                .col(string_len("endpoint_id", 36))
                .col(string_len("event_id", 40))
                .col(string_len("event_type", 64))
                .col(string_len("status", 16))
                .col(integer("attempts").default(0))
                .col(timestamp_with_time_zone("next_attempt_at"))
                .col(timestamp_with_time_zone("retry_until"))
                .col(timestamp_with_time_zone_null("leased_until"))
                .col(integer_null("response_status"))
                .col(text_null("last_error"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .col(timestamp_with_time_zone_null("delivered_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "webhook_deliveries",
            "ux_webhook_deliveries_event_endpoint",
            &["event_id", "endpoint_id"],
            true,
        ))
        .await?;
        m.create_index(index(
            "webhook_deliveries",
            "ix_webhook_deliveries_due",
            &["status", "next_attempt_at"],
            false,
        ))
        .await?;
        // An endpoint's in-flight count (leased), and its next due deliveries in order.
        m.create_index(index(
            "webhook_deliveries",
            "ix_webhook_deliveries_endpoint_status",
            &["endpoint_id", "status", "leased_until"],
            false,
        ))
        .await?;
        m.create_index(index(
            "webhook_deliveries",
            "ix_webhook_deliveries_endpoint_due",
            &["endpoint_id", "status", "next_attempt_at", "id"],
            false,
        ))
        .await?;
        // The log's pruning: finished deliveries by when they were last touched.
        m.create_index(index(
            "webhook_deliveries",
            "ix_webhook_deliveries_updated",
            &["updated_at"],
            false,
        ))
        .await?;
        m.create_index(index(
            "webhook_events",
            "ix_webhook_events_created",
            &["created_at"],
            false,
        ))
        .await?;
        m.create_index(index(
            "webhook_deliveries",
            "ix_webhook_deliveries_vendor",
            &["vendor_id", "endpoint_id", "id"],
            false,
        ))
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in ["webhook_deliveries", "webhook_events", "webhook_endpoints"] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
