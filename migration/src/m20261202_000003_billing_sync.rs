//! Billing sync (Stripe):
//!
//! - `policies.billing_grace_seconds`: how long past a subscription's period end (or past a
//!   lapse first seen) a linked license stays usable.
//! - `billing_subscriptions`: what the billing system last said about each subscription (its
//!   status, period end, customer, the `metadata.license_id` hint) and since when it has had
//!   that status, so grace can be counted from when a lapse was first seen.
//! - `stripe_events`: the webhook inbox. One row per verified event id (unique, so a
//!   redelivery is a no-op); an unprocessed row is a pending re-read of its subscription.
//! - `billing_sync_runs`: every reconciliation run, per vendor.
//! - `billing_drift`: the drift report, one open row per (kind, license, subscription).
//! - `leases`: named leases, so one reconciliation runs at a time across the fleet.

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
        m.alter_table(
            Table::alter()
                .table("policies")
                .add_column(big_integer("billing_grace_seconds").default(604_800))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("billing_subscriptions")
                .col(string_len("id", 255).primary_key())
                .col(string_len_null("customer", 255))
                .col(string_len("status", 32))
                .col(string_len("status_raw", 64))
                .col(timestamp_with_time_zone_null("current_period_end"))
                .col(boolean("cancel_at_period_end"))
                .col(string_len_null("license_hint", 255))
                .col(timestamp_with_time_zone("status_since"))
                .col(timestamp_with_time_zone("synced_at"))
                .col(string_len_null("seen_pass_id", 36))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("stripe_events")
                .col(string_len("id", 36).primary_key())
                .col(string_len("event_id", 255))
                .col(string_len("event_type", 128))
                .col(string_len_null("subscription_id", 255))
                .col(timestamp_with_time_zone("received_at"))
                .col(timestamp_with_time_zone_null("processed_at"))
                .col(integer("attempts").default(0))
                .col(timestamp_with_time_zone("next_attempt_at"))
                .col(text_null("last_error"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("stripe_events", "ux_stripe_events_event", &["event_id"], true))
            .await?;
        m.create_index(index(
            "stripe_events",
            "ix_stripe_events_due",
            &["processed_at", "next_attempt_at"],
            false,
        ))
        .await?;
        m.create_table(
            Table::create()
                .table("billing_sync_runs")
                .col(string_len("id", 36).primary_key())
                .col(string_len("vendor_id", 36))
                .col(string_len_null("pass_id", 36))
                .col(boolean("requested"))
                .col(timestamp_with_time_zone("started_at"))
                .col(timestamp_with_time_zone_null("finished_at"))
                .col(integer("subscriptions_seen").default(0))
                .col(integer("drift_opened").default(0))
                .col(integer("drift_resolved").default(0))
                .col(text_null("error"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "billing_sync_runs",
            "ix_billing_sync_runs_vendor",
            &["vendor_id", "id"],
            false,
        ))
        .await?;
        m.create_index(index(
            "billing_sync_runs",
            "ix_billing_sync_runs_pending",
            &["pass_id", "finished_at"],
            false,
        ))
        .await?;
        m.create_table(
            Table::create()
                .table("billing_drift")
                .col(string_len("id", 36).primary_key())
                .col(string_len("vendor_id", 36))
                .col(string_len("kind", 40))
                .col(string_len_null("license_id", 36))
                .col(string_len_null("subscription_id", 255))
                .col(text("explanation"))
                .col(json_binary_null("expected"))
                .col(json_binary_null("actual"))
                .col(boolean("auto_fixed"))
                .col(timestamp_with_time_zone("first_seen_at"))
                .col(timestamp_with_time_zone("last_seen_at"))
                .col(timestamp_with_time_zone_null("resolved_at"))
                .col(string_len_null("last_pass_id", 36))
                .col(string_len_null("dedupe_key", 400))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "billing_drift",
            "ux_billing_drift_open",
            &["vendor_id", "dedupe_key"],
            true,
        ))
        .await?;
        m.create_index(index(
            "billing_drift",
            "ix_billing_drift_vendor",
            &["vendor_id", "id"],
            false,
        ))
        .await?;
        m.create_index(index("billing_drift", "ix_billing_drift_open", &["resolved_at"], false))
            .await?;
        m.create_table(
            Table::create()
                .table("leases")
                .col(string_len("name", 64).primary_key())
                .col(string_len("holder", 64))
                .col(timestamp_with_time_zone("expires_at"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "leases",
            "billing_drift",
            "billing_sync_runs",
            "stripe_events",
            "billing_subscriptions",
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        m.alter_table(
            Table::alter()
                .table("policies")
                .drop_column("billing_grace_seconds")
                .to_owned(),
        )
        .await
    }
}
