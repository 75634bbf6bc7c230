//! The licensing use cases over the database.
//!
//! [`Domain`] is the one handle every binary builds: a database connection, the master
//! secret and a clock. Each module adds the use cases of one resource as `impl Domain` methods
//! (`licenses/` issues, renews, suspends...), takes an [`Actor`] for authorisation and tenancy,
//! writes its audit event in the same transaction as the change, and returns [`Error`].
//! Nothing here knows HTTP, GraphQL or SMTP.

pub mod access;
pub mod actor;
pub mod alerts;
pub mod anomalies;
pub mod anomaly_scan;
pub mod audit;
pub mod billing;
pub mod by_id;
pub mod catalog;
pub mod clock;
pub mod customers;
pub mod db;
pub mod device_history;
pub mod device_tokens;
pub mod devices;
pub mod error;
mod idempotency;
mod license_files;
pub mod licenses;
pub mod newtypes;
pub mod outbox;
pub mod page;
pub mod secrets;
pub mod settings;
pub mod staff_users;
pub mod sweeps;
pub mod token_chain;
mod token_usage;
pub mod usage;
pub mod vendors;
pub mod webhooks;
pub mod worker_ticks;

pub use actor::{Actor, ActorKind, Capability};
pub use clock::Clock;
pub use entity::enums::Role;
pub use error::{Error, Result};
pub use secrets::MasterSecret;

use std::sync::Arc;

use moka::sync::Cache;
use sea_orm::DatabaseConnection;

/// Everything a use case needs: the database, the master secret, the clock, and the
/// process's small caches. Cheap to clone.
#[derive(Clone)]
pub struct Domain {
    /// The licensing database (SQLite or PostgreSQL), for reads.
    pub db: DatabaseConnection,
    /// The pool write transactions use: on SQLite a single connection, so writers queue in
    /// the pool instead of holding connections while they wait for SQLite's one write lock;
    /// on PostgreSQL the same pool as `db`.
    pub writer: DatabaseConnection,
    /// Keys derived from the master secret.
    pub secrets: MasterSecret,
    /// Where "now" comes from.
    pub clock: Clock,
    /// The licenses validation and heartbeats read, in memory ([`devices::ReadModel`]).
    pub read_model: Arc<devices::ReadModel>,
    /// Heartbeats waiting to be written together.
    pub(crate) heartbeat_writes: Arc<devices::heartbeat_writes::HeartbeatWrites>,
    /// The process's small caches of rows that rarely change.
    pub(crate) caches: Arc<Caches>,
    /// API token last-use times not written yet ([`Domain::flush_token_usage`]).
    pub(crate) token_usage: Arc<token_usage::TokenUsage>,
    /// Where webhook deliveries may go (set from the deployment's settings).
    pub webhook_targets: webhooks::targets::TargetRules,
}

impl Domain {
    /// Builds the handle from its parts.
    #[must_use]
    pub fn new(pools: db::Pools, secrets: MasterSecret, clock: Clock) -> Self {
        let backend = pools.write.get_database_backend();
        Self {
            db: pools.read,
            writer: pools.write,
            secrets,
            clock,
            read_model: Arc::new(devices::ReadModel::new(backend)),
            heartbeat_writes: Arc::default(),
            caches: Arc::new(Caches {
                signing_keys: Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(vendors::SIGNING_KEY_FRESH_FOR)
                    .build(),
            }),
            token_usage: Arc::default(),
            webhook_targets: webhooks::targets::TargetRules::default(),
        }
    }
}

/// Bounded caches (least recently used entries leave first), shared by every clone of a
/// [`Domain`].
pub(crate) struct Caches {
    /// Decrypted active signing keys (key id, key) by vendor id, kept for
    /// [`vendors::SIGNING_KEY_FRESH_FOR`].
    pub(crate) signing_keys: Cache<String, (String, ed25519_dalek::SigningKey)>,
}

/// A new time-ordered id (UUIDv7 text), used as the primary key of every row.
#[must_use]
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
