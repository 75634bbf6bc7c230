//! sea-orm entities of the licensing database: one module per table, plus the string-backed
//! enums stored in them. No business rules live here.

#![expect(
    missing_docs,
    reason = "sea-orm derives generate undocumented items (Column, PrimaryKey, ActiveModel)"
)]

pub mod alert;
pub mod anomaly;
pub mod api_token;
pub mod audit_event;
pub mod billing_drift;
pub mod billing_subscription;
pub mod billing_sync_run;
pub mod columns;
pub mod customer;
pub mod device;
pub mod device_status_change;
pub mod email_outbox;
pub mod enums;
pub mod fingerprint_observation;
pub mod idempotency_key;
pub mod lease;
pub mod license;
pub mod meter_total;
pub mod policy;
pub mod product;
pub mod scan_watermark;
pub mod signing_key;
pub mod staff_session;
pub mod staff_user;
pub mod stripe_event;
pub mod usage_baseline;
pub mod usage_hourly;
pub mod usage_record;
pub mod usage_series;
pub mod vendor;
pub mod webhook_delivery;
pub mod webhook_endpoint;
pub mod webhook_event;
pub mod worker_tick;
