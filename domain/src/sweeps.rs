//! The periodic work the workers run, each safe to run twice at once (several worker
//! processes): every change is a conditional statement on the rows as they are now, and every
//! email is promised through a claim or a dedupe key.
//!
//! - [`Domain::sweep_dead_devices`]: set-based over the indexed `heartbeat_deadline_at`, in
//!   chunks; marks overdue devices DEAD, frees seats per the policy's `deadDeviceAction`, one
//!   DEVICE_DEAD alert and one status-history row per death.
//! - [`Domain::send_alert_digests`]: one email per vendor listing the alerts staff were not yet
//!   told about (500 devices dying at once make one email, not 500).
//! - [`Domain::promise_renewal_notices`]: one notice per license per threshold before expiry.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use entity::enums::{AlertKind, BillingStatus, DeadDeviceAction, DeviceStatus, LicenseStatus};
use entity::{alert, billing_subscription, customer, device, license, policy, product, vendor};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;

use crate::alerts;
use crate::db::begin_write;
use crate::device_history;
use crate::devices::{dead_alert, release_seats};
use crate::outbox::{self, NewEmail};
use crate::webhooks::{self, events::NewEvent};
use crate::{Domain, Result};

/// Devices marked dead per transaction.
const DEAD_CHUNK: u64 = 500;
/// Alerts put in one digest.
const DIGEST_CHUNK: u64 = 1000;
/// Stored statuses of devices that can still die (PENDING_SYNC is computed, never stored);
/// the sweep reads them through the (status, heartbeat_deadline_at) index, never walking the
/// devices that died long ago.
const LIVE: [DeviceStatus; 2] = [DeviceStatus::Active, DeviceStatus::CheckedOut];
/// Licenses considered per renewal transaction.
const RENEWAL_CHUNK: u64 = 500;

fn dead_now(ids: &[String], now: DateTime<Utc>) -> sea_orm::UpdateMany<device::Entity> {
    device::Entity::update_many()
        .col_expr(device::Column::Status, Expr::value(DeviceStatus::Dead))
        .col_expr(device::Column::UpdatedAt, Expr::value(now))
        .filter(device::Column::Id.is_in(ids.iter().cloned()))
        .filter(device::Column::Status.is_in(LIVE))
        .filter(device::Column::HeartbeatDeadlineAt.lt(now))
}

impl Domain {
    /// Marks every device past its heartbeat deadline DEAD; returns how many died.
    ///
    /// # Errors
    /// Database errors.
    pub async fn sweep_dead_devices(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut died = 0;
        loop {
            let tx = begin_write(&self.writer).await?;
            let overdue = device::Entity::find()
                .filter(device::Column::Status.is_in(LIVE))
                .filter(device::Column::HeartbeatDeadlineAt.lt(now))
                .order_by_asc(device::Column::HeartbeatDeadlineAt)
                .limit(DEAD_CHUNK)
                .all(&tx)
                .await?;
            if overdue.is_empty() {
                break;
            }
            let full_chunk = overdue.len() as u64 == DEAD_CHUNK;
            let mut dead: Vec<device::Model> = Vec::new();
            let mut by_license: BTreeMap<String, Vec<device::Model>> = BTreeMap::new();
            for d in overdue {
                by_license.entry(d.license_id.clone()).or_default().push(d);
            }
            // Lock the licenses first, in id order, as the request paths do (license, then its
            // devices): no deadlock with a concurrent heartbeat or activation.
            let licenses = license::Entity::find()
                .filter(license::Column::Id.is_in(by_license.keys().cloned()))
                .order_by_asc(license::Column::Id)
                .lock_exclusive()
                .all(&tx)
                .await?;
            let policies: BTreeMap<String, policy::Model> = policy::Entity::find()
                .filter(policy::Column::Id.is_in(licenses.iter().map(|l| l.policy_id.clone())))
                .all(&tx)
                .await?
                .into_iter()
                .map(|p| (p.id.clone(), p))
                .collect();
            for license in &licenses {
                let Some(devices) = by_license.get(&license.id) else {
                    continue;
                };
                let release = policies
                    .get(&license.policy_id)
                    .is_some_and(|p| p.dead_device_action == DeadDeviceAction::ReleaseSeat);
                let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
                let mut freed: Vec<device::Model> = Vec::new();
                if release {
                    freed = dead_now(&ids, now)
                        .col_expr(device::Column::HoldsSeat, Expr::value(false))
                        .filter(device::Column::HoldsSeat.eq(true))
                        .exec_with_returning(&tx)
                        .await?;
                    if !freed.is_empty() {
                        release_seats(&tx, license, i32::try_from(freed.len()).unwrap_or(i32::MAX)).await?;
                    }
                }
                // Those that held no seat (or every device, when seats are kept); none left
                // when every overdue device just gave its seat back.
                let kept = if freed.len() < ids.len() {
                    dead_now(&ids, now).exec_with_returning(&tx).await?
                } else {
                    Vec::new()
                };
                let deaths = freed
                    .iter()
                    .map(|d| dead_alert(license, d, true))
                    .chain(kept.iter().map(|d| dead_alert(license, d, false)))
                    .collect();
                alerts::raise_all(&tx, deaths, now).await?;
                died += freed.len() + kept.len();
                dead.extend(freed);
                dead.extend(kept);
            }
            device_history::record_deaths(&tx, &dead, now).await?;
            let events = dead
                .iter()
                .map(|device| NewEvent {
                    vendor_id: &device.vendor_id,
                    event_type: "device.dead",
                    object: webhooks::objects::device(device),
                })
                .collect();
            webhooks::events::record_all(&tx, events, now).await?;
            tx.commit().await?;
            for license in &licenses {
                self.read_model.forget(&license.id);
            }
            if !full_chunk {
                break;
            }
        }
        Ok(died)
    }

    /// Emails each vendor's alert recipients one digest of the alerts not yet emailed;
    /// returns how many digests were promised. Vendors without recipients have their
    /// alerts marked as told.
    ///
    /// # Errors
    /// Database errors.
    pub async fn send_alert_digests(&self) -> Result<usize> {
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let vendor_ids: Vec<String> = alert::Entity::find()
            .select_only()
            .column(alert::Column::VendorId)
            .distinct()
            .filter(alert::Column::NotifiedAt.is_null())
            .order_by_asc(alert::Column::VendorId)
            .into_tuple()
            .all(&tx)
            .await?;
        let mut digests = 0;
        for vendor_id in vendor_ids {
            // Claim the alerts: a concurrent digest (another worker) gets none of them.
            let ids: Vec<String> = alert::Entity::find()
                .select_only()
                .column(alert::Column::Id)
                .filter(alert::Column::VendorId.eq(&vendor_id))
                .filter(alert::Column::NotifiedAt.is_null())
                .order_by_asc(alert::Column::Id)
                .limit(DIGEST_CHUNK)
                .into_tuple()
                .all(&tx)
                .await?;
            let mut claimed = alert::Entity::update_many()
                .col_expr(alert::Column::NotifiedAt, Expr::value(Some(now)))
                .filter(alert::Column::Id.is_in(ids))
                .filter(alert::Column::NotifiedAt.is_null())
                .exec_with_returning(&tx)
                .await?;
            let Some(vendor) = vendor::Entity::find_by_id(&vendor_id).one(&tx).await? else {
                continue;
            };
            let to = &vendor.alert_emails.0;
            if claimed.is_empty() || to.is_empty() {
                continue;
            }
            claimed.sort_by(|a, b| a.id.cmp(&b.id));
            let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
            for a in &claimed {
                *counts.entry(kind_label(a.kind)).or_default() += 1;
            }
            let summary: Vec<String> = counts.iter().map(|(label, n)| format!("{n} {label}")).collect();
            let context = json!({
                "vendor": vendor.name,
                "summary": summary,
                "alerts": claimed.iter().map(|a| json!({
                    "kind": a.kind, "message": a.message, "created_at": a.created_at.to_rfc3339(),
                    "license_id": a.license_id, "device_id": a.device_id,
                })).collect::<Vec<_>>(),
            });
            // One email per recipient: one bad address does not cost the others their digest.
            for recipient in to {
                let email = NewEmail {
                    vendor_id: &vendor.id,
                    kind: "alert_digest",
                    dedupe_key: claimed.first().map(|a| format!("alert-digest:{}:{recipient}", a.id)),
                    to: vec![recipient.clone()],
                    subject: format!("[{}] {}", vendor.name, summary.join(", ")),
                    context: context.clone(),
                    attachments: Vec::new(),
                };
                if outbox::promise(&tx, email, now).await? {
                    digests += 1;
                }
            }
        }
        tx.commit().await?;
        Ok(digests)
    }

    /// Promises a renewal notice for every active license whose expiry is within one of
    /// `thresholds_days` (only the nearest threshold: a license issued 5 days before expiry
    /// gets the 7-day notice, not the 30-day one too), once per license, threshold and expiry
    /// (a renewal starts a new cycle), each with a `license.expiring` webhook event. Returns
    /// how many were promised.
    ///
    /// # Errors
    /// Database errors.
    pub async fn promise_renewal_notices(&self, thresholds_days: &[i64]) -> Result<usize> {
        let Some(&widest) = thresholds_days.iter().max() else {
            return Ok(0);
        };
        let now = self.clock.now();
        let mut promised = 0;
        // Walks the due licenses in (expires_at, id) order, so each chunk is a range of the
        // expiry index starting where the last one ended.
        let mut after: Option<(DateTime<Utc>, String)> = None;
        loop {
            let tx = begin_write(&self.writer).await?;
            let mut select = license::Entity::find()
                .filter(license::Column::Status.eq(LicenseStatus::Active))
                .filter(license::Column::ExpiresAt.gt(now))
                .filter(license::Column::ExpiresAt.lte(now + Duration::days(widest)))
                .filter(license::Column::CustomerId.is_not_null());
            if let Some((expires_at, id)) = &after {
                select = select.filter(
                    Condition::any().add(license::Column::ExpiresAt.gt(*expires_at)).add(
                        Condition::all()
                            .add(license::Column::ExpiresAt.eq(*expires_at))
                            .add(license::Column::Id.gt(id.as_str())),
                    ),
                );
            }
            let rows = select
                .order_by_asc(license::Column::ExpiresAt)
                .order_by_asc(license::Column::Id)
                .limit(RENEWAL_CHUNK)
                .find_also_related(customer::Entity)
                .all(&tx)
                .await?;
            let Some((last, _)) = rows.last() else {
                break;
            };
            after = last.expires_at.map(|e| (e, last.id.clone()));
            let full_chunk = rows.len() as u64 == RENEWAL_CHUNK;
            let vendors: BTreeMap<String, vendor::Model> = vendor::Entity::find()
                .filter(vendor::Column::Id.is_in(rows.iter().map(|(l, _)| l.vendor_id.clone())))
                .all(&tx)
                .await?
                .into_iter()
                .map(|v| (v.id.clone(), v))
                .collect();
            let products: BTreeMap<String, product::Model> = product::Entity::find()
                .filter(product::Column::Id.is_in(rows.iter().map(|(l, _)| l.product_id.clone())))
                .all(&tx)
                .await?
                .into_iter()
                .map(|p| (p.id.clone(), p))
                .collect();
            let subscriptions: BTreeMap<String, billing_subscription::Model> = billing_subscription::Entity::find()
                .filter(
                    billing_subscription::Column::Id
                        .is_in(rows.iter().filter_map(|(l, _)| l.billing_subscription_id.clone())),
                )
                .all(&tx)
                .await?
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect();
            for (license, customer) in rows {
                let (Some(expires_at), Some(customer)) = (license.expires_at, customer) else {
                    continue;
                };
                // A subscription that renews by itself moves the expiry when it does: no notice.
                let subscription = license
                    .billing_subscription_id
                    .as_ref()
                    .and_then(|id| subscriptions.get(id));
                let renews_itself = subscription.is_some_and(|s| {
                    matches!(s.status, BillingStatus::Active | BillingStatus::Trialing) && !s.cancel_at_period_end
                });
                if renews_itself {
                    continue;
                }
                let will_not_renew = subscription.is_some_and(|s| s.cancel_at_period_end);
                let Some(email) = customer.email.clone() else {
                    continue;
                };
                let left = expires_at - now;
                let Some(days) = thresholds_days
                    .iter()
                    .copied()
                    .filter(|d| left <= Duration::days(*d))
                    .min()
                else {
                    continue;
                };
                let (Some(vendor), Some(product)) =
                    (vendors.get(&license.vendor_id), products.get(&license.product_id))
                else {
                    continue;
                };
                let notice = NewEmail {
                    vendor_id: &license.vendor_id,
                    kind: "renewal_notice",
                    to: vec![email],
                    subject: format!(
                        "Your {} license expires on {}",
                        product.name,
                        expires_at.format("%Y-%m-%d")
                    ),
                    context: json!({
                        "customer": customer.name,
                        "vendor": vendor.name,
                        "product": product.name,
                        "license_id": license.id,
                        "key_hint": license.key_last4,
                        "expires_at": expires_at.to_rfc3339(),
                        "expires_on": expires_at.format("%A %-d %B %Y, %H:%M UTC").to_string(),
                        "days": days,
                        "will_not_renew": will_not_renew,
                    }),
                    attachments: Vec::new(),
                    dedupe_key: Some(format!("renewal:{}:{}:{days}", license.id, expires_at.timestamp())),
                };
                if outbox::promise(&tx, notice, now).await? {
                    promised += 1;
                    let object = webhooks::objects::expiring_license(&license, days);
                    webhooks::events::record(&tx, &license.vendor_id, "license.expiring", object, now).await?;
                }
            }
            tx.commit().await?;
            if !full_chunk {
                break;
            }
        }
        Ok(promised)
    }
}

fn kind_label(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::DeviceDead => "devices stopped heartbeating",
        AlertKind::ActivationLimitReached => "licenses reached their seat cap",
        AlertKind::Anomaly => "anomalies",
        AlertKind::SubscriptionChanged => "subscription changes",
        AlertKind::LicenseExpiring => "licenses expiring",
        AlertKind::EmailFailed => "emails failed",
        AlertKind::BillingDrift => "billing disagreements",
        AlertKind::WebhookFailed => "webhook deliveries failed",
    }
}
