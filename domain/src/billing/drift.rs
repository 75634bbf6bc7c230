//! The drift report: what reconciliation found the billing system and the licenses disagree
//! on. One open row per (kind, license, subscription): a later run that finds it again moves
//! `last_seen_at`; a run that no longer finds it resolves it. Disagreements the sync healed
//! (a license active after its subscription ended, suspended while paid, with the wrong
//! expiry) are written resolved, `auto_fixed`. The others are for staff: opening one raises a
//! BILLING_DRIFT alert.

use chrono::{DateTime, Utc};
use entity::billing_drift;
use entity::enums::{AlertKind, BillingDriftKind};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveEnum as _, ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
};
use serde_json::Value;

use super::pass::BillingPass;
use crate::alerts::{self, NewAlert};
use crate::{Result, new_id};

/// One disagreement a pass found.
#[derive(Debug)]
pub(crate) struct Finding<'a> {
    pub vendor_id: &'a str,
    pub kind: BillingDriftKind,
    pub license_id: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
    pub explanation: String,
    pub expected: Value,
    pub actual: Value,
    /// The sync healed it.
    pub auto_fixed: bool,
}

fn dedupe_key(f: &Finding<'_>) -> String {
    format!(
        "{}:{}:{}",
        f.kind.to_value(),
        f.license_id.unwrap_or("-"),
        f.subscription_id.unwrap_or("-")
    )
}

fn alert_key(dedupe_key: &str) -> String {
    format!("billing-drift:{dedupe_key}")
}

/// Records what a pass found: an auto-fixed row (resolved at once), or the open row for the
/// kind, license and subscription (opened now, or seen again).
pub(crate) async fn note(
    tx: &DatabaseTransaction,
    pass: &mut BillingPass,
    finding: Finding<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let key = dedupe_key(&finding);
    let pass_id = pass.id.clone();
    let row = |dedupe_key: Option<String>, resolved_at: Option<DateTime<Utc>>| billing_drift::ActiveModel {
        id: Set(new_id()),
        vendor_id: Set(finding.vendor_id.to_owned()),
        kind: Set(finding.kind),
        license_id: Set(finding.license_id.map(str::to_owned)),
        subscription_id: Set(finding.subscription_id.map(str::to_owned)),
        explanation: Set(finding.explanation.clone()),
        expected: Set(Some(finding.expected.clone())),
        actual: Set(Some(finding.actual.clone())),
        auto_fixed: Set(finding.auto_fixed),
        first_seen_at: Set(now),
        last_seen_at: Set(now),
        resolved_at: Set(resolved_at),
        last_pass_id: Set(Some(pass_id.clone())),
        dedupe_key: Set(dedupe_key),
    };
    let stats = pass.stats(finding.vendor_id);
    if finding.auto_fixed {
        billing_drift::Entity::insert(row(None, Some(now)))
            .exec_without_returning(tx)
            .await?;
        stats.drift_opened += 1;
        stats.drift_resolved += 1;
        return Ok(());
    }
    let inserted = billing_drift::Entity::insert(row(Some(key.clone()), None))
        .on_conflict(
            OnConflict::columns([billing_drift::Column::VendorId, billing_drift::Column::DedupeKey])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(tx)
        .await?;
    if inserted == 1 {
        stats.drift_opened += 1;
        alerts::raise(
            tx,
            NewAlert {
                vendor_id: finding.vendor_id,
                kind: AlertKind::BillingDrift,
                message: finding.explanation.clone(),
                license_id: finding.license_id,
                device_id: None,
                dedupe_key: Some(alert_key(&key)),
                email: true,
            },
            now,
        )
        .await?;
    } else {
        billing_drift::Entity::update_many()
            .col_expr(billing_drift::Column::LastSeenAt, Expr::value(now))
            .col_expr(billing_drift::Column::LastPassId, Expr::value(Some(pass_id.clone())))
            .col_expr(billing_drift::Column::Explanation, Expr::value(finding.explanation))
            .col_expr(billing_drift::Column::Expected, Expr::value(Some(finding.expected)))
            .col_expr(billing_drift::Column::Actual, Expr::value(Some(finding.actual)))
            .filter(billing_drift::Column::VendorId.eq(finding.vendor_id))
            .filter(billing_drift::Column::DedupeKey.eq(&key))
            .exec(tx)
            .await?;
    }
    Ok(())
}

/// Resolves every open row this pass did not find again (the disagreement ended), and
/// closes their alerts so a recurrence alerts again.
pub(crate) async fn resolve_unseen(tx: &DatabaseTransaction, pass: &mut BillingPass, now: DateTime<Utc>) -> Result<()> {
    let unseen: Vec<(String, String, Option<String>)> = billing_drift::Entity::find()
        .select_only()
        .column(billing_drift::Column::Id)
        .column(billing_drift::Column::VendorId)
        .column(billing_drift::Column::DedupeKey)
        .filter(billing_drift::Column::ResolvedAt.is_null())
        .filter(billing_drift::Column::LastPassId.ne(pass.id.as_str()))
        .into_tuple()
        .all(tx)
        .await?;
    for (id, vendor_id, key) in unseen {
        billing_drift::Entity::update_many()
            .col_expr(billing_drift::Column::ResolvedAt, Expr::value(Some(now)))
            .col_expr(billing_drift::Column::DedupeKey, Option::<String>::None.into())
            .filter(billing_drift::Column::Id.eq(&id))
            .exec(tx)
            .await?;
        if let Some(key) = key {
            alerts::clear(tx, &vendor_id, &alert_key(&key)).await?;
        }
        pass.stats(&vendor_id).drift_resolved += 1;
    }
    Ok(())
}
