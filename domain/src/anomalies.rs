//! Anomalies: flags on suspicious consumption (a usage ledger restored, forked, cut or dated
//! backwards...), each with an explanation and evidence, raised by the use case that notices
//! it. A `dedupe_key` keeps one flag per situation; every new flag also raises an ANOMALY alert.

use chrono::{DateTime, Utc};
use entity::anomaly;
use entity::enums::{AlertKind, AnomalyKind, AnomalyStatus};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

use crate::alerts::{self, NewAlert};
use crate::{Result, new_id};

/// An anomaly to flag.
pub(crate) struct NewAnomaly<'a> {
    pub vendor_id: &'a str,
    pub license_id: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub kind: AnomalyKind,
    pub explanation: String,
    pub evidence: serde_json::Value,
    /// One flag per key; `None` = always a new flag.
    pub dedupe_key: Option<String>,
}

/// Flags an anomaly (and alerts staff) unless the same situation was flagged before; returns
/// the flag either way.
pub(crate) async fn flag(
    db: &impl ConnectionTrait,
    new: NewAnomaly<'_>,
    now: DateTime<Utc>,
) -> Result<Option<anomaly::Model>> {
    let id = new_id();
    let inserted = anomaly::Entity::insert(anomaly::ActiveModel {
        id: Set(id.clone()),
        vendor_id: Set(new.vendor_id.to_owned()),
        license_id: Set(new.license_id.map(str::to_owned)),
        device_id: Set(new.device_id.map(str::to_owned)),
        kind: Set(new.kind),
        status: Set(AnomalyStatus::Open),
        explanation: Set(new.explanation.clone()),
        evidence: Set(Some(new.evidence)),
        dedupe_key: Set(new.dedupe_key.clone()),
        detected_at: Set(now),
        acknowledged_at: Set(None),
        acknowledged_by: Set(None),
        note: Set(None),
    })
    .on_conflict(
        OnConflict::columns([anomaly::Column::VendorId, anomaly::Column::DedupeKey])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    if inserted == 1 {
        let alert = NewAlert {
            vendor_id: new.vendor_id,
            kind: AlertKind::Anomaly,
            message: new.explanation,
            license_id: new.license_id,
            device_id: new.device_id,
            dedupe_key: None,
            email: true,
        };
        alerts::raise(db, alert, now).await?;
        return Ok(anomaly::Entity::find_by_id(id).one(db).await?);
    }
    let Some(key) = new.dedupe_key else {
        return Ok(None);
    };
    Ok(anomaly::Entity::find()
        .filter(anomaly::Column::VendorId.eq(new.vendor_id))
        .filter(anomaly::Column::DedupeKey.eq(key))
        .one(db)
        .await?)
}
