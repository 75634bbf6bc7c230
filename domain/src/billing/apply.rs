//! Applying what the billing system says about one subscription: the stored copy
//! (`billing_subscriptions`), then each license that follows it, through the mapping. Every
//! license that changes gets one audit event (actor "billing"), one SUBSCRIPTION_CHANGED alert
//! and, when its file changes, a new version (pending sync, refresh-file emails). During a
//! reconciliation pass the disagreements found are noted in the drift report.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Duration;
use entity::enums::{AlertKind, BillingDriftKind, BillingStatus, LicenseStatus};
use entity::{billing_subscription, customer, license, policy, vendor};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
};
use serde_json::json;

use super::drift::{self, Finding};
use super::mapping::{self, LicenseState, SubscriptionState};
use super::pass::BillingPass;
use super::{Subscription, billing_actor};
use crate::alerts::{self, NewAlert};
use crate::db::begin_write;
use crate::licenses::effective_status;
use crate::webhooks::{self, events::NewEvent};
use crate::{Domain, Result};

/// What applying one subscription did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Licenses that follow it.
    pub licenses: usize,
    /// Of those, how many changed.
    pub changed: usize,
}

/// A subscription that is being paid for (or trialled): one without a license is drift.
fn paying(status: BillingStatus) -> bool {
    matches!(
        status,
        BillingStatus::Active | BillingStatus::Trialing | BillingStatus::PastDue
    )
}

fn describe(sub: &Subscription, license: &license::Model, updated: &license::Model) -> String {
    let mut parts = Vec::new();
    if updated.status != license.status || updated.status_reason != license.status_reason {
        parts.push(match updated.status {
            LicenseStatus::Suspended => {
                format!("suspended ({})", updated.status_reason.as_deref().unwrap_or("billing"))
            }
            _ => "reinstated".to_owned(),
        });
    }
    if updated.expires_at != license.expires_at
        && let Some(at) = updated.expires_at
    {
        parts.push(format!("now expires {}", at.format("%Y-%m-%d %H:%M UTC")));
    }
    let renews = if sub.cancel_at_period_end {
        " (will not renew)"
    } else {
        ""
    };
    format!(
        "Subscription {} is {}{renews}: license …{} {}.",
        sub.id,
        sub.status_raw,
        license.key_last4,
        parts.join(", ")
    )
}

impl Domain {
    /// Applies what the billing system says about `sub`: stores it, links the license its
    /// `metadata.license_id` names when no license follows it yet, and brings each following
    /// license in line. With `pass` (reconciliation) the disagreements are noted as drift.
    ///
    /// # Errors
    /// Database errors.
    pub async fn apply_subscription(&self, sub: &Subscription, mut pass: Option<&mut BillingPass>) -> Result<Applied> {
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let (stored, subscription_changed) = self.store_subscription(&tx, sub, pass.as_deref(), now).await?;
        let mut licenses = license::Entity::find()
            .filter(license::Column::BillingSubscriptionId.eq(&sub.id))
            .lock_exclusive()
            .all(&tx)
            .await?;
        if licenses.is_empty()
            && let Some(linked) = self.link_by_hint(&tx, sub).await?
        {
            licenses.push(linked);
        }
        let mut applied = Applied {
            licenses: licenses.len(),
            changed: 0,
        };
        let state = SubscriptionState {
            status: sub.status,
            status_raw: &sub.status_raw,
            current_period_end: sub.current_period_end,
            status_since: stored.status_since,
        };
        let mut vendors = BTreeSet::new();
        let mut followers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for license in licenses {
            vendors.insert(license.vendor_id.clone());
            followers
                .entry(license.vendor_id.clone())
                .or_default()
                .push(license.id.clone());
            let grace: i64 = policy::Entity::find_by_id(&license.policy_id)
                .select_only()
                .column(policy::Column::BillingGraceSeconds)
                .into_tuple()
                .one(&tx)
                .await?
                .unwrap_or(0);
            let decision = mapping::decide(state, Duration::seconds(grace), now);
            let before = LicenseState {
                status: license.status,
                status_reason: license.status_reason.as_deref(),
                expires_at: license.expires_at,
            };
            let change = mapping::change_for(before, &decision);
            let mut updated = license.clone();
            if !change.is_empty() {
                let mut model: license::ActiveModel = license.clone().into();
                if let Some((status, reason)) = change.status.clone() {
                    model.status = Set(status);
                    model.status_reason = Set(reason);
                }
                if let Some(at) = change.expires_at {
                    model.expires_at = Set(Some(at));
                }
                let actor = billing_actor(&license.vendor_id);
                updated = self
                    .save_license_change(&tx, &actor, &license, model, "license.billing_sync", now)
                    .await?;
                alerts::raise(
                    &tx,
                    NewAlert {
                        vendor_id: &license.vendor_id,
                        kind: AlertKind::SubscriptionChanged,
                        message: describe(sub, &license, &updated),
                        license_id: Some(&license.id),
                        device_id: None,
                        dedupe_key: None,
                        email: true,
                    },
                    now,
                )
                .await?;
                applied.changed += 1;
            }
            if let Some(pass) = pass.as_deref_mut() {
                self.note_license_drift(&tx, pass, sub, &license, &updated, now).await?;
            }
        }
        if subscription_changed {
            // One event per vendor whose licenses follow the subscription.
            let events = followers
                .iter()
                .map(|(vendor_id, license_ids)| {
                    let ids: Vec<&str> = license_ids.iter().map(String::as_str).collect();
                    NewEvent {
                        vendor_id,
                        event_type: "subscription.changed",
                        object: webhooks::objects::subscription(&stored, &ids),
                    }
                })
                .collect();
            webhooks::events::record_all(&tx, events, now).await?;
        }
        if let Some(pass) = pass {
            if vendors.is_empty()
                && let Some(vendor_id) = self.attribute_vendor(&tx, sub).await?
            {
                if paying(sub.status) {
                    drift::note(
                        &tx,
                        pass,
                        Finding {
                            vendor_id: &vendor_id,
                            kind: BillingDriftKind::SubscriptionWithoutLicense,
                            license_id: None,
                            subscription_id: Some(&sub.id),
                            explanation: format!(
                                "Subscription {} (customer {}) is {} but no license follows it: issue one with billingSubscriptionId, or link an existing license with updateLicense.",
                                sub.id,
                                sub.customer.as_deref().unwrap_or("unknown"),
                                sub.status_raw
                            ),
                            expected: json!({ "license": "a license with billingSubscriptionId = this subscription" }),
                            actual: json!({ "license": null, "status": sub.status_raw, "customer": sub.customer }),
                            auto_fixed: false,
                        },
                        now,
                    )
                    .await?;
                }
                vendors.insert(vendor_id);
            }
            for vendor_id in vendors {
                pass.stats(&vendor_id).subscriptions_seen += 1;
            }
        }
        tx.commit().await?;
        for ids in followers.values() {
            for id in ids {
                self.read_model.forget(id);
            }
        }
        Ok(applied)
    }

    /// Stores what the billing system said, keeping since when the status has been what it is;
    /// says whether the subscription is new or its customer, status, period end or renewal
    /// changed (a re-read that says the same is no change).
    async fn store_subscription(
        &self,
        tx: &DatabaseTransaction,
        sub: &Subscription,
        pass: Option<&BillingPass>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(billing_subscription::Model, bool)> {
        let previous = billing_subscription::Entity::find_by_id(&sub.id).one(tx).await?;
        let changed = previous.as_ref().is_none_or(|p| {
            (&p.customer, &p.status_raw, p.current_period_end, p.cancel_at_period_end)
                != (
                    &sub.customer,
                    &sub.status_raw,
                    sub.current_period_end,
                    sub.cancel_at_period_end,
                )
        });
        let status_since = match &previous {
            Some(p) if p.status_raw == sub.status_raw => p.status_since,
            _ => now,
        };
        let seen_pass_id = pass
            .map(|p| p.id.clone())
            .or_else(|| previous.and_then(|p| p.seen_pass_id));
        let row = billing_subscription::Model {
            id: sub.id.clone(),
            customer: sub.customer.clone(),
            status: sub.status,
            status_raw: sub.status_raw.clone(),
            current_period_end: sub.current_period_end,
            cancel_at_period_end: sub.cancel_at_period_end,
            license_hint: sub.license_hint.clone(),
            status_since,
            synced_at: now,
            seen_pass_id,
        };
        billing_subscription::Entity::insert(billing_subscription::ActiveModel::from(row.clone()))
            .on_conflict(
                OnConflict::column(billing_subscription::Column::Id)
                    .update_columns([
                        billing_subscription::Column::Customer,
                        billing_subscription::Column::Status,
                        billing_subscription::Column::StatusRaw,
                        billing_subscription::Column::CurrentPeriodEnd,
                        billing_subscription::Column::CancelAtPeriodEnd,
                        billing_subscription::Column::LicenseHint,
                        billing_subscription::Column::StatusSince,
                        billing_subscription::Column::SyncedAt,
                        billing_subscription::Column::SeenPassId,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(tx)
            .await?;
        Ok((row, changed))
    }

    /// Links the license `metadata.license_id` names, when it follows no subscription yet.
    async fn link_by_hint(&self, tx: &DatabaseTransaction, sub: &Subscription) -> Result<Option<license::Model>> {
        let Some(hint) = &sub.license_hint else {
            return Ok(None);
        };
        let Some(license) = license::Entity::find_by_id(hint)
            .filter(license::Column::BillingSubscriptionId.is_null())
            .lock_exclusive()
            .one(tx)
            .await?
        else {
            return Ok(None);
        };
        let mut model: license::ActiveModel = license.clone().into();
        model.billing_subscription_id = Set(Some(sub.id.clone()));
        let actor = billing_actor(&license.vendor_id);
        let linked = self
            .save_license_change(tx, &actor, &license, model, "license.billing_link", self.clock.now())
            .await?;
        Ok(Some(linked))
    }

    /// The vendor a subscription no license follows belongs to: the one whose customer has
    /// its billing customer id, else the only vendor there is.
    async fn attribute_vendor(&self, tx: &DatabaseTransaction, sub: &Subscription) -> Result<Option<String>> {
        if let Some(customer_id) = &sub.customer {
            let vendors: Vec<String> = customer::Entity::find()
                .select_only()
                .column(customer::Column::VendorId)
                .filter(customer::Column::BillingCustomerId.eq(customer_id))
                .distinct()
                .into_tuple()
                .all(tx)
                .await?;
            if let [only] = vendors.as_slice() {
                return Ok(Some(only.clone()));
            }
        }
        if vendor::Entity::find().count(tx).await? == 1 {
            return Ok(vendor::Entity::find().one(tx).await?.map(|v| v.id));
        }
        Ok(None)
    }

    /// Notes what a pass found about one license that follows `sub`.
    async fn note_license_drift(
        &self,
        tx: &DatabaseTransaction,
        pass: &mut BillingPass,
        sub: &Subscription,
        before: &license::Model,
        after: &license::Model,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let finding = |kind, explanation: String, expected, actual, auto_fixed| Finding {
            vendor_id: &before.vendor_id,
            kind,
            license_id: Some(&before.id),
            subscription_id: Some(&sub.id),
            explanation,
            expected,
            actual,
            auto_fixed,
        };
        let mut findings = Vec::new();
        let last4 = &before.key_last4;
        if after.status == LicenseStatus::Suspended && effective_status(before, now) == LicenseStatus::Active {
            findings.push(finding(
                BillingDriftKind::LicenseActiveSubscriptionEnded,
                format!(
                    "License …{last4} was active although subscription {} is {}; the sync suspended it ({}).",
                    sub.id,
                    sub.status_raw,
                    after.status_reason.as_deref().unwrap_or("billing")
                ),
                json!({ "status": "SUSPENDED" }),
                json!({ "status": before.status, "subscription_status": sub.status_raw }),
                true,
            ));
        }
        if before.status == LicenseStatus::Suspended && after.status == LicenseStatus::Active {
            findings.push(finding(
                BillingDriftKind::SuspendedWhilePaid,
                format!(
                    "License …{last4} was suspended ({}) although subscription {} is {}; the sync reinstated it.",
                    before.status_reason.as_deref().unwrap_or("billing"),
                    sub.id,
                    sub.status_raw
                ),
                json!({ "status": "ACTIVE" }),
                json!({ "status": before.status, "status_reason": before.status_reason }),
                true,
            ));
        }
        if after.status == LicenseStatus::Suspended
            && !mapping::suspended_by_billing(LicenseState {
                status: after.status,
                status_reason: after.status_reason.as_deref(),
                expires_at: after.expires_at,
            })
            && matches!(sub.status, BillingStatus::Active | BillingStatus::Trialing)
        {
            findings.push(finding(
                BillingDriftKind::SuspendedWhilePaid,
                format!(
                    "License …{last4} is suspended by staff ({}) while subscription {} is {} and being paid: reinstate the license, or cancel the subscription.",
                    after.status_reason.as_deref().unwrap_or("no reason given"),
                    sub.id,
                    sub.status_raw
                ),
                json!({ "status": "ACTIVE" }),
                json!({ "status": after.status, "status_reason": after.status_reason }),
                false,
            ));
        }
        if before.expires_at != after.expires_at {
            findings.push(finding(
                BillingDriftKind::ExpiryMismatch,
                format!(
                    "License …{last4} expired at {} but subscription {} is paid until {} (plus grace); the sync moved the expiry.",
                    before.expires_at.map_or_else(|| "never".to_owned(), |at| at.to_rfc3339()),
                    sub.id,
                    sub.current_period_end.map_or_else(|| "unknown".to_owned(), |at| at.to_rfc3339())
                ),
                json!({ "expires_at": after.expires_at }),
                json!({ "expires_at": before.expires_at }),
                true,
            ));
        }
        if sub.status == BillingStatus::Unknown {
            findings.push(finding(
                BillingDriftKind::UnknownStatus,
                format!(
                    "Subscription {} has the status {:?}, which this version does not know: license …{last4} was left as it is. Check the subscription in the billing system.",
                    sub.id, sub.status_raw
                ),
                json!({ "status": "a known Stripe status" }),
                json!({ "status": sub.status_raw }),
                false,
            ));
        }
        if let (Some(customer_id), Some(billing_customer)) = (&before.customer_id, &sub.customer) {
            let license_customer: Option<Option<String>> = customer::Entity::find_by_id(customer_id)
                .select_only()
                .column(customer::Column::BillingCustomerId)
                .into_tuple()
                .one(tx)
                .await?;
            if let Some(Some(expected)) = license_customer
                && &expected != billing_customer
            {
                findings.push(finding(
                    BillingDriftKind::CustomerMismatch,
                    format!(
                        "License …{last4} belongs to the customer with billing id {expected}, but subscription {} is billed to {billing_customer}: correct the customer's billingCustomerId or link the right subscription.",
                        sub.id
                    ),
                    json!({ "customer": expected }),
                    json!({ "customer": billing_customer }),
                    false,
                ));
            }
        }
        for finding in findings {
            drift::note(tx, pass, finding, now).await?;
        }
        Ok(())
    }
}
