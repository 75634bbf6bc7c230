//! The whole data model of the product: tenancy and access, signing keys, catalog, customers,
//! licenses, devices, usage, anomalies, alerts, audit log, email outbox and idempotency records.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A 36-character text id (UUIDv7, so ids sort by creation time).
fn id(col: &'static str) -> ColumnDef {
    string_len(col, 36)
}

fn id_null(col: &'static str) -> ColumnDef {
    string_len_null(col, 36)
}

fn pk() -> ColumnDef {
    string_len("id", 36).primary_key().to_owned()
}

fn at(col: &'static str) -> ColumnDef {
    timestamp_with_time_zone(col)
}

fn at_null(col: &'static str) -> ColumnDef {
    timestamp_with_time_zone_null(col)
}

fn fk(table: &'static str, col: &'static str, to: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_{col}"))
        .from(table, col)
        .to(to, "id")
        .to_owned()
}

fn index(table: &'static str, name: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for col in cols {
        stmt.col(*col);
    }
    stmt.to_owned()
}

fn unique(table: &'static str, name: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut stmt = index(table, name, cols);
    stmt.unique();
    stmt
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    #[expect(clippy::too_many_lines, reason = "one table after another, read top to bottom")]
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("vendors")
                .col(pk())
                .col(string("name"))
                .col(string_len_uniq("slug", 64))
                .col(json_binary("alert_emails"))
                .col(at("created_at"))
                .col(at("updated_at"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("staff_users")
                .col(pk())
                .col(id("vendor_id"))
                .col(string("email"))
                .col(string_null("name"))
                .col(string_len("role", 16))
                .col(string_null("password_hash"))
                .col(at("created_at"))
                .col(at("updated_at"))
                .col(at_null("disabled_at"))
                .foreign_key(&mut fk("staff_users", "vendor_id", "vendors"))
                .to_owned(),
        )
        .await?;
        m.create_index(unique(
            "staff_users",
            "ux_staff_users_vendor_email",
            &["vendor_id", "email"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table("staff_sessions")
                .col(pk())
                .col(id("vendor_id"))
                .col(id("staff_user_id"))
                .col(at("created_at"))
                .col(at("expires_at"))
                .col(at_null("revoked_at"))
                .foreign_key(&mut fk("staff_sessions", "staff_user_id", "staff_users"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("api_tokens")
                .col(pk())
                .col(id("vendor_id"))
                .col(string("name"))
                .col(string_len("role", 16))
                .col(string_len_uniq("token_hash", 64))
                .col(string_len("token_prefix", 16))
                .col(string_len("created_by_kind", 16))
                .col(id_null("created_by_id"))
                .col(at("created_at"))
                .col(at_null("expires_at"))
                .col(at_null("revoked_at"))
                .col(at_null("last_used_at"))
                .foreign_key(&mut fk("api_tokens", "vendor_id", "vendors"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("api_tokens", "ix_api_tokens_vendor", &["vendor_id", "id"]))
            .await?;

        m.create_table(
            Table::create()
                .table("signing_keys")
                .col(pk())
                .col(id("vendor_id"))
                .col(string_len("kid", 64))
                .col(string_len("algorithm", 16))
                .col(text("public_key_pem"))
                .col(text("private_key_enc"))
                .col(boolean("active"))
                .col(at("created_at"))
                .col(at_null("retired_at"))
                .foreign_key(&mut fk("signing_keys", "vendor_id", "vendors"))
                .to_owned(),
        )
        .await?;
        m.create_index(unique(
            "signing_keys",
            "ux_signing_keys_vendor_kid",
            &["vendor_id", "kid"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table("products")
                .col(pk())
                .col(id("vendor_id"))
                .col(string("name"))
                .col(string_len("code", 64))
                .col(json_binary_null("metadata"))
                .col(at("created_at"))
                .col(at("updated_at"))
                .foreign_key(&mut fk("products", "vendor_id", "vendors"))
                .to_owned(),
        )
        .await?;
        m.create_index(unique("products", "ux_products_vendor_code", &["vendor_id", "code"]))
            .await?;

        m.create_table(
            Table::create()
                .table("policies")
                .col(pk())
                .col(id("vendor_id"))
                .col(id("product_id"))
                .col(string("name"))
                .col(big_integer_null("duration_seconds"))
                .col(boolean("trial"))
                .col(integer_null("max_activations"))
                .col(boolean("floating"))
                .col(string_len("deployment_mode", 16))
                .col(big_integer_null("heartbeat_interval_seconds"))
                .col(string_len("dead_device_action", 16))
                .col(big_integer("grace_seconds"))
                .col(big_integer("license_file_ttl_seconds"))
                .col(integer_null("min_component_matches"))
                .col(json_binary("entitlements"))
                .col(json_binary("meters"))
                .col(boolean("subscription_backed"))
                .col(at("created_at"))
                .col(at("updated_at"))
                .foreign_key(&mut fk("policies", "product_id", "products"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "policies",
            "ix_policies_vendor_product",
            &["vendor_id", "product_id"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table("customers")
                .col(pk())
                .col(id("vendor_id"))
                .col(string("external_id"))
                .col(string("name"))
                .col(string_null("email"))
                .col(string_null("billing_customer_id"))
                .col(at("created_at"))
                .col(at("updated_at"))
                .foreign_key(&mut fk("customers", "vendor_id", "vendors"))
                .to_owned(),
        )
        .await?;
        m.create_index(unique(
            "customers",
            "ux_customers_vendor_external",
            &["vendor_id", "external_id"],
        ))
        .await?;
        m.create_index(index(
            "customers",
            "ix_customers_vendor_billing",
            &["vendor_id", "billing_customer_id"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table("licenses")
                .col(pk())
                .col(id("vendor_id"))
                .col(id("product_id"))
                .col(id("policy_id"))
                .col(id_null("customer_id"))
                .col(string_len_uniq("key_lookup", 64))
                .col(text("key_enc"))
                .col(string_len("key_last4", 4))
                .col(string_len("status", 16))
                .col(string_null("status_reason"))
                .col(at("issued_at"))
                .col(at_null("expires_at"))
                .col(integer_null("max_activations"))
                .col(integer("seats_used").default(0))
                .col(json_binary("entitlements"))
                .col(json_binary_null("metadata"))
                .col(string_null("billing_subscription_id"))
                .col(integer("version"))
                .col(at("created_at"))
                .col(at("updated_at"))
                .foreign_key(&mut fk("licenses", "policy_id", "policies"))
                .foreign_key(&mut fk("licenses", "customer_id", "customers"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "licenses",
            "ix_licenses_vendor_status",
            &["vendor_id", "status", "id"],
        ))
        .await?;
        m.create_index(index(
            "licenses",
            "ix_licenses_vendor_product",
            &["vendor_id", "product_id", "id"],
        ))
        .await?;
        m.create_index(index(
            "licenses",
            "ix_licenses_vendor_customer",
            &["vendor_id", "customer_id", "id"],
        ))
        .await?;
        m.create_index(index(
            "licenses",
            "ix_licenses_vendor_expires",
            &["vendor_id", "expires_at"],
        ))
        .await?;
        m.create_index(index("licenses", "ix_licenses_expires", &["expires_at"]))
            .await?;
        m.create_index(index(
            "licenses",
            "ix_licenses_billing_subscription",
            &["billing_subscription_id"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table("devices")
                .col(pk())
                .col(id("vendor_id"))
                .col(id("license_id"))
                .col(string("fingerprint"))
                .col(json_binary("components"))
                .col(string_null("name"))
                .col(string_null("hostname"))
                .col(string_null("platform"))
                .col(string_len("status", 16))
                .col(boolean("holds_seat"))
                .col(boolean("offline"))
                .col(text_null("public_key"))
                .col(json_binary_null("variables"))
                .col(integer("token_generation"))
                .col(integer("license_version"))
                .col(at("activated_at"))
                .col(at_null("last_seen_at"))
                .col(at_null("heartbeat_deadline_at"))
                .col(at_null("checked_out_until"))
                .col(at_null("released_at"))
                .col(big_integer_null("ledger_seq"))
                .col(string_len_null("ledger_hash", 64))
                .col(at("created_at"))
                .col(at("updated_at"))
                .foreign_key(&mut fk("devices", "license_id", "licenses"))
                .to_owned(),
        )
        .await?;
        m.create_index(unique(
            "devices",
            "ux_devices_license_fingerprint",
            &["license_id", "fingerprint"],
        ))
        .await?;
        m.create_index(index(
            "devices",
            "ix_devices_vendor_license",
            &["vendor_id", "license_id", "id"],
        ))
        .await?;
        m.create_index(index(
            "devices",
            "ix_devices_heartbeat_deadline",
            &["heartbeat_deadline_at"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table("usage_records")
                .col(pk())
                .col(id("vendor_id"))
                .col(id("license_id"))
                .col(id_null("device_id"))
                .col(string_len("meter", 64))
                .col(big_integer("quantity"))
                .col(string("idempotency_key"))
                .col(string_len("source", 16))
                .col(big_integer_null("ledger_seq"))
                .col(string_len_null("ledger_hash", 64))
                .col(at("recorded_at"))
                .col(at("received_at"))
                .foreign_key(&mut fk("usage_records", "license_id", "licenses"))
                .to_owned(),
        )
        .await?;
        m.create_index(unique(
            "usage_records",
            "ux_usage_records_license_idempotency",
            &["license_id", "idempotency_key"],
        ))
        .await?;
        m.create_index(index(
            "usage_records",
            "ix_usage_records_license_meter",
            &["license_id", "meter", "recorded_at"],
        ))
        .await?;
        m.create_index(index("usage_records", "ix_usage_records_received", &["received_at"]))
            .await?;

        m.create_table(
            Table::create()
                .table("meter_totals")
                .col(id("license_id"))
                .col(string_len("meter", 64))
                .col(at("period_start"))
                .col(big_integer("used"))
                .primary_key(Index::create().col("license_id").col("meter").col("period_start"))
                .foreign_key(&mut fk("meter_totals", "license_id", "licenses"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("anomalies")
                .col(pk())
                .col(id("vendor_id"))
                .col(id_null("license_id"))
                .col(id_null("device_id"))
                .col(string_len("kind", 32))
                .col(string_len("status", 16))
                .col(text("explanation"))
                .col(json_binary_null("evidence"))
                .col(string_null("dedupe_key"))
                .col(at("detected_at"))
                .col(at_null("acknowledged_at"))
                .col(id_null("acknowledged_by"))
                .col(text_null("note"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "anomalies",
            "ix_anomalies_vendor_status",
            &["vendor_id", "status", "id"],
        ))
        .await?;
        m.create_index(unique(
            "anomalies",
            "ux_anomalies_vendor_dedupe",
            &["vendor_id", "dedupe_key"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table("alerts")
                .col(pk())
                .col(id("vendor_id"))
                .col(string_len("kind", 32))
                .col(text("message"))
                .col(id_null("license_id"))
                .col(id_null("device_id"))
                .col(string_null("dedupe_key"))
                .col(at("created_at"))
                .col(at_null("acknowledged_at"))
                .col(id_null("acknowledged_by"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "alerts",
            "ix_alerts_vendor_ack",
            &["vendor_id", "acknowledged_at", "id"],
        ))
        .await?;
        m.create_index(unique(
            "alerts",
            "ux_alerts_vendor_dedupe",
            &["vendor_id", "dedupe_key"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table("audit_events")
                .col(pk())
                .col(id("vendor_id"))
                .col(string_len("actor_kind", 16))
                .col(id_null("actor_id"))
                .col(string("actor_label"))
                .col(string_len("action", 64))
                .col(string_len("target_kind", 32))
                .col(id_null("target_id"))
                .col(json_binary("diff"))
                .col(string_len_null("request_id", 36))
                .col(at("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "audit_events",
            "ix_audit_events_vendor_target",
            &["vendor_id", "target_id", "id"],
        ))
        .await?;
        m.create_index(index(
            "audit_events",
            "ix_audit_events_vendor_actor",
            &["vendor_id", "actor_id", "id"],
        ))
        .await?;

        m.create_table(
            Table::create()
                .table("email_outbox")
                .col(pk())
                .col(id("vendor_id"))
                .col(string_len("kind", 32))
                .col(string("to_address"))
                .col(string("subject"))
                .col(json_binary("context"))
                .col(json_binary("attachments"))
                .col(string_len("status", 16))
                .col(integer("attempts"))
                .col(text_null("last_error"))
                .col(string("message_id"))
                .col(string_null("dedupe_key"))
                .col(at("created_at"))
                .col(at("next_attempt_at"))
                .col(at_null("enqueued_at"))
                .col(at_null("sent_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index(
            "email_outbox",
            "ix_email_outbox_status_next",
            &["status", "next_attempt_at"],
        ))
        .await?;
        m.create_index(index(
            "email_outbox",
            "ix_email_outbox_vendor_status",
            &["vendor_id", "status", "id"],
        ))
        .await?;
        m.create_index(unique("email_outbox", "ux_email_outbox_dedupe", &["dedupe_key"]))
            .await?;

        m.create_table(
            Table::create()
                .table("idempotency_keys")
                .col(pk())
                .col(id("vendor_id"))
                .col(string_len("operation", 64))
                .col(string_len("key", 255))
                .col(string_len("request_hash", 64))
                .col(id_null("result_id"))
                .col(at("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(unique(
            "idempotency_keys",
            "ux_idempotency_keys_vendor_op_key",
            &["vendor_id", "operation", "key"],
        ))
        .await?;
        m.create_index(index(
            "idempotency_keys",
            "ix_idempotency_keys_created",
            &["created_at"],
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "idempotency_keys",
            "email_outbox",
            "audit_events",
            "alerts",
            "anomalies",
            "meter_totals",
            "usage_records",
            "devices",
            "licenses",
            "customers",
            "policies",
            "products",
            "signing_keys",
            "api_tokens",
            "staff_sessions",
            "staff_users",
            "vendors",
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
