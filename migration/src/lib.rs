//! Database migrations, one file per change, run on SQLite and PostgreSQL alike.
//! A merged migration is never edited: add a new one.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_data_model;
mod m20261123_000001_alert_notifications;
mod m20261124_000001_create_worker_ticks;
mod m20261202_000001_consumption;
mod m20261202_000002_anomaly_scan;
mod m20261202_000003_billing_sync;
mod m20261202_000004_device_key_proof;
mod m20261203_000001_webhooks;

/// Every migration of the licensing database, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_data_model::Migration),
            Box::new(m20261123_000001_alert_notifications::Migration),
            Box::new(m20261124_000001_create_worker_ticks::Migration),
            Box::new(m20261202_000001_consumption::Migration),
            Box::new(m20261202_000002_anomaly_scan::Migration),
            Box::new(m20261202_000003_billing_sync::Migration),
            Box::new(m20261202_000004_device_key_proof::Migration),
            Box::new(m20261203_000001_webhooks::Migration),
        ]
    }
}
