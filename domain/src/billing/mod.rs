//! Billing sync: subscription-backed licenses follow the billing system (Stripe).
//!
//! The billing system is the truth. A webhook only says "go and look" (`inbox.rs` keeps one
//! row per verified event id; the worker re-reads the subscription and hands it to
//! [`Domain::apply_subscription`]), so the order and repetition of events never matter.
//! Reconciliation (`pass.rs`) pages through every subscription once across the fleet, applies
//! each, and keeps the drift report (`drift.rs`). What a subscription means for its license is
//! one pure function (`mapping.rs`); `apply.rs` writes it: the license change, one audit event
//! (actor "billing"), one SUBSCRIPTION_CHANGED alert, a new license-file version.
//!
//! Nothing here talks HTTP: the worker fetches, this module parses ([`Subscription`],
//! [`StripeEvent`]) and decides.

mod apply;
mod drift;
mod inbox;
pub mod mapping;
mod pass;

pub use apply::Applied;
pub(crate) use inbox::request_read;
pub use inbox::{EventReceipt, ReRead, StripeEvent};
pub use pass::{BillingPass, PassStart};

use chrono::{DateTime, Utc};
use entity::enums::BillingStatus;
use entity::{billing_drift, billing_subscription, billing_sync_run, license};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::audit::{self, Change};
use crate::db::begin_write;
use crate::page::{self, Order, Page, PageRequest};
use crate::{Actor, Capability, Domain, Error, Result, new_id};

/// The prefix of a suspension reason billing imposed: billing lifts only these.
pub const BILLING_REASON_PREFIX: &str = "billing:";

/// The longest billing id (subscription, customer, event) accepted.
const MAX_BILLING_ID: usize = 255;

/// A subscription as the billing system describes it, parsed from Stripe's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `sub_...`.
    pub id: String,
    /// `cus_...`.
    pub customer: Option<String>,
    /// The status, or [`BillingStatus::Unknown`] for a string this version does not know.
    pub status: BillingStatus,
    /// The status string as sent.
    pub status_raw: String,
    /// The end of the current period: the latest `items.data[].current_period_end` (Stripe API
    /// 2025-03-31 and later), else the top-level `current_period_end` (older versions).
    pub current_period_end: Option<DateTime<Utc>>,
    /// Ends at the period end instead of renewing (`cancel_at_period_end`, or a `cancel_at`).
    pub cancel_at_period_end: bool,
    /// `metadata.license_id`: the license it pays for, when the vendor's checkout set it.
    pub license_hint: Option<String>,
}

/// A billing-system id: 1 to 255 characters of letters, digits, `_` and `-`.
pub(crate) fn billing_id(field: &str, value: &str) -> Result<String> {
    let ok = !value.is_empty()
        && value.len() <= MAX_BILLING_ID
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(Error::InvalidInput(format!(
            "{field} must be 1 to {MAX_BILLING_ID} letters, digits, '_' or '-'"
        )))
    }
}

/// A Stripe id field: a string, or an expanded object with an `id`.
pub(crate) fn id_of(value: Option<&Value>) -> Option<&str> {
    match value? {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("id")?.as_str(),
        _ => None,
    }
}

fn timestamp(value: Option<&Value>) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(value?.as_i64()?, 0)
}

/// Stripe's status string as a [`BillingStatus`].
#[must_use]
pub fn parse_status(raw: &str) -> BillingStatus {
    match raw {
        "trialing" => BillingStatus::Trialing,
        "active" => BillingStatus::Active,
        "past_due" => BillingStatus::PastDue,
        "unpaid" => BillingStatus::Unpaid,
        "canceled" => BillingStatus::Canceled,
        "incomplete" => BillingStatus::Incomplete,
        "incomplete_expired" => BillingStatus::IncompleteExpired,
        "paused" => BillingStatus::Paused,
        _ => BillingStatus::Unknown,
    }
}

impl Subscription {
    /// Parses a Stripe subscription object.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when it is not a subscription (no id, no status).
    pub fn from_stripe(value: &Value) -> Result<Self> {
        let id = value
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::InvalidInput("the subscription has no id".into()))?;
        let status_raw = value
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::InvalidInput("the subscription has no status".into()))?;
        let item_period_end = value
            .pointer("/items/data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| timestamp(item.get("current_period_end")))
            .max();
        let current_period_end = item_period_end.or_else(|| timestamp(value.get("current_period_end")));
        let cancel_at_period_end = value.get("cancel_at_period_end").and_then(Value::as_bool) == Some(true)
            || value.get("cancel_at").is_some_and(|v| v.as_i64().is_some());
        let license_hint = value
            .pointer("/metadata/license_id")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .map(str::to_owned);
        Ok(Self {
            id: billing_id("the subscription id", id)?,
            customer: id_of(value.get("customer")).and_then(|c| billing_id("customer", c).ok()),
            status: parse_status(status_raw),
            status_raw: status_raw.chars().take(64).collect(),
            current_period_end,
            cancel_at_period_end,
            license_hint,
        })
    }
}

/// An actor for changes billing makes: audited as the system, labelled "billing".
pub(crate) fn billing_actor(vendor_id: &str) -> Actor {
    Actor {
        label: "billing".into(),
        ..Actor::system(vendor_id)
    }
}

impl Domain {
    /// What the billing system last said about a license's subscription; `None` when it is
    /// not linked or not synced yet.
    ///
    /// # Errors
    /// Database errors.
    pub async fn license_billing(&self, license: &license::Model) -> Result<Option<billing_subscription::Model>> {
        let Some(id) = &license.billing_subscription_id else {
            return Ok(None);
        };
        Ok(billing_subscription::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// The vendor's drift report, newest first; `open_only` leaves out resolved rows.
    ///
    /// # Errors
    /// Database errors.
    pub async fn billing_drift(
        &self,
        actor: &Actor,
        open_only: bool,
        request: &PageRequest,
    ) -> Result<Page<billing_drift::Model>> {
        actor.require(Capability::Read)?;
        let mut select = billing_drift::Entity::find().filter(billing_drift::Column::VendorId.eq(&actor.vendor_id));
        if open_only {
            select = select.filter(billing_drift::Column::ResolvedAt.is_null());
        }
        page::fetch(&self.db, select, billing_drift::Column::Id, request, Order::NewestFirst).await
    }

    /// The vendor's reconciliation runs, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn billing_sync_runs(
        &self,
        actor: &Actor,
        request: &PageRequest,
    ) -> Result<Page<billing_sync_run::Model>> {
        actor.require(Capability::Read)?;
        let select = billing_sync_run::Entity::find().filter(billing_sync_run::Column::VendorId.eq(&actor.vendor_id));
        page::fetch(
            &self.db,
            select,
            billing_sync_run::Column::Id,
            request,
            Order::NewestFirst,
        )
        .await
    }

    /// Asks for a reconciliation now: a run row the next pass picks up (a worker starts one
    /// within seconds). Returns the run, not yet finished.
    ///
    /// # Errors
    /// [`Error::Forbidden`] unless OWNER, ADMIN or INTEGRATION.
    pub async fn request_billing_sync(&self, actor: &Actor) -> Result<billing_sync_run::Model> {
        actor.require(Capability::ManageLicenses)?;
        let now = self.clock.now();
        let run = billing_sync_run::ActiveModel {
            id: Set(new_id()),
            vendor_id: Set(actor.vendor_id.clone()),
            pass_id: Set(None),
            requested: Set(true),
            started_at: Set(now),
            finished_at: Set(None),
            subscriptions_seen: Set(0),
            drift_opened: Set(0),
            drift_resolved: Set(0),
            error: Set(None),
        };
        let tx = begin_write(&self.writer).await?;
        let run = billing_sync_run::Entity::insert(run).exec_with_returning(&tx).await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "billing.sync_request",
                "billing_sync_run",
                &run.id,
                json!({}),
                json!({ "requested": true }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(run)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_period_end_comes_from_the_items_then_the_top_level() {
        let new_shape = json!({ "id": "sub_1", "status": "active", "customer": "cus_1",
            "current_period_end": 100,
            "items": { "data": [ { "current_period_end": 2_000_000_000 }, { "current_period_end": 1_900_000_000 } ] } });
        let sub = Subscription::from_stripe(&new_shape).unwrap();
        assert_eq!(sub.current_period_end, DateTime::from_timestamp(2_000_000_000, 0));
        let old_shape = json!({ "id": "sub_1", "status": "active", "customer": { "id": "cus_1" },
            "current_period_end": 1_800_000_000, "items": { "data": [ { "id": "si_1" } ] } });
        let sub = Subscription::from_stripe(&old_shape).unwrap();
        assert_eq!(sub.current_period_end, DateTime::from_timestamp(1_800_000_000, 0));
        assert_eq!(sub.customer.as_deref(), Some("cus_1"));
    }

    #[test]
    fn unknown_statuses_are_kept_raw() {
        let sub = Subscription::from_stripe(&json!({ "id": "sub_1", "status": "on_hold" })).unwrap();
        assert_eq!(
            (sub.status, sub.status_raw.as_str()),
            (BillingStatus::Unknown, "on_hold")
        );
    }

    #[test]
    fn a_scheduled_cancel_means_it_will_not_renew() {
        let sub = Subscription::from_stripe(&json!({ "id": "sub_1", "status": "active", "cancel_at": 1_900_000_000,
            "cancel_at_period_end": false, "metadata": { "license_id": " lic " } }))
        .unwrap();
        assert!(sub.cancel_at_period_end);
        assert_eq!(sub.license_hint.as_deref(), Some("lic"));
    }

    #[test]
    fn malformed_subscriptions_are_refused() {
        for bad in [
            json!({ "status": "active" }),
            json!({ "id": "sub_1" }),
            json!({ "id": "sub 1", "status": "active" }),
        ] {
            assert!(Subscription::from_stripe(&bad).is_err(), "{bad}");
        }
    }
}
