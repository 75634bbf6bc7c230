//! `billing_subscriptions`: what the billing system last said about a subscription.

use crate::enums::BillingStatus;
use sea_orm::entity::prelude::*;

/// What the billing system (Stripe) last said about one subscription.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "billing_subscriptions")]
pub struct Model {
    /// The subscription's id in the billing system (`sub_...`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The billing system's customer id (`cus_...`).
    pub customer: Option<String>,
    pub status: BillingStatus,
    /// The status string exactly as the billing system sent it.
    pub status_raw: String,
    pub current_period_end: Option<DateTimeUtc>,
    pub cancel_at_period_end: bool,
    /// The subscription's `metadata.license_id`.
    pub license_hint: Option<String>,
    /// Since when it has had `status_raw` (as first seen here): grace for a lapse counts from it.
    pub status_since: DateTimeUtc,
    pub synced_at: DateTimeUtc,
    /// The last reconciliation pass that listed it.
    pub seen_pass_id: Option<String>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
