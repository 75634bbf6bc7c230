//! `worker_ticks`: how many runs of each periodic worker task started and finished.

use sea_orm::entity::prelude::*;

/// The progress of one periodic worker task, across every worker process.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "worker_ticks")]
pub struct Model {
    /// The task: `heartbeat_sweep`, `renewal_scan` or `outbox_relay`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub task: String,
    /// Runs that started (counted before the work).
    pub started: i64,
    /// Runs that finished without an error (counted after the work).
    pub runs: i64,
    /// The tick of the last run to finish: its slot (Unix time / period) for a periodic task,
    /// the Unix second for the outbox relay.
    pub last_tick: Option<i64>,
    /// When the last run finished.
    pub finished_at: Option<DateTimeUtc>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
