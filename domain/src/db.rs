//! Connecting to the licensing database, applying migrations, and opening write transactions
//! that serialise correctly on SQLite as well as PostgreSQL.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};

/// How long a statement may wait for SQLite's write lock, or run on PostgreSQL.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection pools of a process.
#[derive(Clone)]
pub struct Pools {
    /// For reads (and everything on PostgreSQL).
    pub read: DatabaseConnection,
    /// For write transactions: one connection on SQLite, the read pool on PostgreSQL.
    pub write: DatabaseConnection,
}

/// Opens the pools for `url` (`sqlite://...` or `postgres://...`).
///
/// # Errors
/// The database error when the server cannot be reached or the file cannot be opened.
pub async fn connect(url: &str) -> Result<Pools, DbErr> {
    let read = open(url, if url.starts_with("postgres") { 16 } else { 8 }).await?;
    let write = if read.get_database_backend() == DatabaseBackend::Sqlite {
        open(url, 1).await?
    } else {
        read.clone()
    };
    Ok(Pools { read, write })
}

/// Opens one pool of `max_connections` on `url`. SQLite runs in WAL mode with
/// `synchronous=NORMAL`, foreign keys on and a busy timeout; PostgreSQL gets a statement timeout.
async fn open(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url);
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(BUSY_TIMEOUT)
        .map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(BUSY_TIMEOUT)
                .foreign_keys(true)
        });
    options.max_connections(max_connections);
    if url.starts_with("postgres") {
        options.statement_timeout(BUSY_TIMEOUT);
    }
    Database::connect(options).await
}

/// Applies every pending migration.
///
/// # Errors
/// The database error of the first migration that fails.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Whether every migration has been applied (for `/readyz`).
///
/// # Errors
/// The database error when the database cannot be queried.
pub async fn is_ready(db: &DatabaseConnection) -> Result<bool, DbErr> {
    Ok(Migrator::get_pending_migrations(db).await?.is_empty())
}

/// Begins a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`, so it takes the
/// write lock at once (waiting up to the busy timeout) instead of failing when a read turns
/// into a write; on PostgreSQL it is an ordinary `READ COMMITTED` transaction and statements
/// take row locks.
///
/// # Errors
/// The database error when the transaction cannot begin.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    if db.get_database_backend() == DatabaseBackend::Sqlite {
        db.begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await
    } else {
        db.begin().await
    }
}
