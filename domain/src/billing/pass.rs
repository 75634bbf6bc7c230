//! Reconciliation passes: one at a time across the fleet (a lease in `leases`), each a walk
//! over every subscription the billing system has (the worker pages through them and hands
//! each to [`Domain::apply_subscription`]), then the linked licenses the walk did not meet,
//! then the drift report's bookkeeping and one `billing_sync_runs` row per vendor that bills.
//! A pass that could not finish (the billing system unreachable, 429, 5xx) records its error
//! and resolves nothing: absence is only evidence after a complete walk.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use entity::enums::{BillingDriftKind, LicenseStatus};
use entity::{billing_subscription, billing_sync_run, lease, license, policy};
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, ExprTrait as _, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::json;

use super::drift::{self, Finding};
use crate::db::begin_write;
use crate::{Domain, Result, new_id};

/// The lease's name.
const LEASE: &str = "billing_sync";
/// How long a pass holds the lease without renewing it ([`Domain::renew_billing_pass`]).
const LEASE_FOR: Duration = Duration::minutes(10);
/// Licenses read at once when looking for subscription-backed ones without a subscription.
const CHUNK: u64 = 500;

/// A vendor's numbers in one pass.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RunStats {
    pub subscriptions_seen: i32,
    pub drift_opened: i32,
    pub drift_resolved: i32,
}

/// A reconciliation pass in progress.
#[derive(Debug)]
pub struct BillingPass {
    /// Its id (also the lease holder).
    pub id: String,
    started_at: DateTime<Utc>,
    stats: BTreeMap<String, RunStats>,
}

impl BillingPass {
    pub(crate) fn stats(&mut self, vendor_id: &str) -> &mut RunStats {
        self.stats.entry(vendor_id.to_owned()).or_default()
    }
}

/// Whether a pass could start.
#[derive(Debug)]
pub enum PassStart {
    /// It holds the lease: walk the subscriptions, then finish it.
    Started(BillingPass),
    /// Another pass holds the lease.
    Busy,
    /// The requested run was already taken by another pass.
    AlreadyDone,
}

impl Domain {
    /// Starts a pass: takes the lease and the waiting `syncBilling` requests. `request` is the
    /// run a request job is for: when another pass took it already there is nothing to do.
    ///
    /// # Errors
    /// Database errors.
    pub async fn begin_billing_pass(&self, request: Option<&str>) -> Result<PassStart> {
        let now = self.clock.now();
        let id = new_id();
        let tx = begin_write(&self.writer).await?;
        if let Some(run_id) = request {
            let run = billing_sync_run::Entity::find_by_id(run_id).one(&tx).await?;
            if run.is_none_or(|r| r.pass_id.is_some()) {
                return Ok(PassStart::AlreadyDone);
            }
        }
        lease::Entity::insert(lease::ActiveModel {
            name: Set(LEASE.into()),
            holder: Set(id.clone()),
            expires_at: Set(now + LEASE_FOR),
        })
        .on_conflict(
            OnConflict::column(lease::Column::Name)
                .update_columns([lease::Column::Holder, lease::Column::ExpiresAt])
                .action_and_where(Expr::col((lease::Entity, lease::Column::ExpiresAt)).lt(now))
                .to_owned(),
        )
        .exec_without_returning(&tx)
        .await?;
        let holder = lease::Entity::find_by_id(LEASE).one(&tx).await?.map(|l| l.holder);
        if holder.as_deref() != Some(id.as_str()) {
            return Ok(PassStart::Busy);
        }
        billing_sync_run::Entity::update_many()
            .col_expr(billing_sync_run::Column::PassId, Expr::value(Some(id.clone())))
            .col_expr(billing_sync_run::Column::StartedAt, Expr::value(now))
            .filter(billing_sync_run::Column::PassId.is_null())
            .filter(billing_sync_run::Column::FinishedAt.is_null())
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(PassStart::Started(BillingPass {
            id,
            started_at: now,
            stats: BTreeMap::new(),
        }))
    }

    /// The `syncBilling` requests no pass has taken yet (the relay queues one job for each).
    ///
    /// # Errors
    /// Database errors.
    pub async fn pending_billing_requests(&self) -> Result<Vec<String>> {
        Ok(billing_sync_run::Entity::find()
            .select_only()
            .column(billing_sync_run::Column::Id)
            .filter(billing_sync_run::Column::PassId.is_null())
            .filter(billing_sync_run::Column::FinishedAt.is_null())
            .limit(100)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Keeps the pass's lease for another ten minutes (call it between pages).
    ///
    /// # Errors
    /// Database errors.
    pub async fn renew_billing_pass(&self, pass: &BillingPass) -> Result<()> {
        lease::Entity::update_many()
            .col_expr(lease::Column::ExpiresAt, Expr::value(self.clock.now() + LEASE_FOR))
            .filter(lease::Column::Name.eq(LEASE))
            .filter(lease::Column::Holder.eq(&pass.id))
            .exec(&self.writer)
            .await?;
        Ok(())
    }

    /// The subscriptions licenses follow that this pass's walk did not list: the worker
    /// fetches each one by id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn unseen_linked_subscriptions(&self, pass: &BillingPass) -> Result<Vec<String>> {
        let seen = Query::select()
            .column(billing_subscription::Column::Id)
            .from(billing_subscription::Entity)
            .and_where(billing_subscription::Column::SeenPassId.eq(pass.id.as_str()))
            .to_owned();
        Ok(license::Entity::find()
            .select_only()
            .column(license::Column::BillingSubscriptionId)
            .filter(license::Column::BillingSubscriptionId.is_not_null())
            .filter(license::Column::Status.ne(LicenseStatus::Revoked))
            .filter(license::Column::BillingSubscriptionId.not_in_subquery(seen))
            .distinct()
            .into_tuple::<Option<String>>()
            .all(&self.db)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// The billing system has no subscription `subscription_id`: each license that follows it
    /// is drift for staff (nothing is changed: the link may be a typo).
    ///
    /// # Errors
    /// Database errors.
    pub async fn subscription_missing(&self, pass: &mut BillingPass, subscription_id: &str) -> Result<()> {
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let licenses = license::Entity::find()
            .filter(license::Column::BillingSubscriptionId.eq(subscription_id))
            .filter(license::Column::Status.ne(LicenseStatus::Revoked))
            .all(&tx)
            .await?;
        for license in licenses {
            drift::note(
                &tx,
                pass,
                Finding {
                    vendor_id: &license.vendor_id,
                    kind: BillingDriftKind::LicenseWithoutSubscription,
                    license_id: Some(&license.id),
                    subscription_id: Some(subscription_id),
                    explanation: format!(
                        "License …{} follows subscription {subscription_id}, which the billing system does not have: correct its billingSubscriptionId.",
                        license.key_last4
                    ),
                    expected: json!({ "subscription": subscription_id }),
                    actual: json!({ "subscription": null }),
                    auto_fixed: false,
                },
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Finishes a pass. After a complete walk (`error` is `None`), subscription-backed licenses
    /// without a subscription are noted and drift no longer found is resolved. Either way each
    /// vendor that bills (and each that asked) gets its run row, and the lease is released.
    ///
    /// # Errors
    /// Database errors.
    pub async fn finish_billing_pass(&self, mut pass: BillingPass, error: Option<String>) -> Result<()> {
        let now = self.clock.now();
        if error.is_none() {
            self.note_unlinked_licenses(&mut pass).await?;
            let tx = begin_write(&self.writer).await?;
            drift::resolve_unseen(&tx, &mut pass, now).await?;
            tx.commit().await?;
        }
        let tx = begin_write(&self.writer).await?;
        let billing_vendors: Vec<String> = license::Entity::find()
            .select_only()
            .column(license::Column::VendorId)
            .filter(license::Column::BillingSubscriptionId.is_not_null())
            .distinct()
            .into_tuple()
            .all(&tx)
            .await?;
        let backed_vendors: Vec<String> = policy::Entity::find()
            .select_only()
            .column(policy::Column::VendorId)
            .filter(policy::Column::SubscriptionBacked.eq(true))
            .distinct()
            .into_tuple()
            .all(&tx)
            .await?;
        for vendor_id in billing_vendors.into_iter().chain(backed_vendors) {
            pass.stats(&vendor_id);
        }
        let requested = billing_sync_run::Entity::find()
            .filter(billing_sync_run::Column::PassId.eq(&pass.id))
            .all(&tx)
            .await?;
        for run in &requested {
            pass.stats(&run.vendor_id);
        }
        for (vendor_id, stats) in &pass.stats {
            let mine: Vec<&billing_sync_run::Model> = requested.iter().filter(|r| &r.vendor_id == vendor_id).collect();
            let row = |id: String, requested: bool| billing_sync_run::ActiveModel {
                id: Set(id),
                vendor_id: Set(vendor_id.clone()),
                pass_id: Set(Some(pass.id.clone())),
                requested: Set(requested),
                started_at: Set(pass.started_at),
                finished_at: Set(Some(now)),
                subscriptions_seen: Set(stats.subscriptions_seen),
                drift_opened: Set(stats.drift_opened),
                drift_resolved: Set(stats.drift_resolved),
                error: Set(error.clone()),
            };
            if mine.is_empty() {
                billing_sync_run::Entity::insert(row(new_id(), false))
                    .exec_without_returning(&tx)
                    .await?;
            }
            for run in mine {
                billing_sync_run::Entity::update(row(run.id.clone(), true))
                    .exec(&tx)
                    .await?;
            }
        }
        lease::Entity::delete_many()
            .filter(lease::Column::Name.eq(LEASE))
            .filter(lease::Column::Holder.eq(&pass.id))
            .exec(&tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Notes every license under a subscription-backed policy that follows no subscription.
    async fn note_unlinked_licenses(&self, pass: &mut BillingPass) -> Result<()> {
        let now = self.clock.now();
        let backed = Query::select()
            .column(policy::Column::Id)
            .from(policy::Entity)
            .and_where(policy::Column::SubscriptionBacked.eq(true))
            .to_owned();
        let mut after = String::new();
        loop {
            let tx = begin_write(&self.writer).await?;
            let licenses = license::Entity::find()
                .filter(
                    Condition::all()
                        .add(license::Column::PolicyId.in_subquery(backed.clone()))
                        .add(license::Column::BillingSubscriptionId.is_null())
                        .add(license::Column::Status.ne(LicenseStatus::Revoked))
                        .add(license::Column::Id.gt(after.as_str())),
                )
                .order_by_asc(license::Column::Id)
                .limit(CHUNK)
                .all(&tx)
                .await?;
            let Some(last) = licenses.last() else {
                break;
            };
            after.clone_from(&last.id);
            let full = licenses.len() as u64 == CHUNK;
            for license in &licenses {
                drift::note(
                    &tx,
                    pass,
                    Finding {
                        vendor_id: &license.vendor_id,
                        kind: BillingDriftKind::LicenseWithoutSubscription,
                        license_id: Some(&license.id),
                        subscription_id: None,
                        explanation: format!(
                            "License …{} is under a subscription-backed policy but follows no subscription: link it with updateLicense(billingSubscriptionId), or revoke it.",
                            license.key_last4
                        ),
                        expected: json!({ "subscription": "a billing subscription id" }),
                        actual: json!({ "subscription": null }),
                        auto_fixed: false,
                    },
                    now,
                )
                .await?;
            }
            tx.commit().await?;
            if !full {
                break;
            }
        }
        Ok(())
    }
}
