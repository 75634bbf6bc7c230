//! `billing_sync_runs`: one reconciliation run, as one vendor sees it.

use sea_orm::entity::prelude::*;

/// One reconciliation run for one vendor (a pass over the billing system writes one per
/// vendor that bills; a `syncBilling` request is a row waiting for a pass).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "billing_sync_runs")]
pub struct Model {
    /// UUIDv7 text id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub vendor_id: String,
    /// The pass that ran it; `None` while a request waits.
    pub pass_id: Option<String>,
    /// Asked for with `syncBilling` (else scheduled).
    pub requested: bool,
    pub started_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    pub subscriptions_seen: i32,
    pub drift_opened: i32,
    pub drift_resolved: i32,
    pub error: Option<String>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
