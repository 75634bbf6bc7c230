//! Anomalies: flags on suspicious consumption, each with an explanation a person can act on
//! and the same numbers in `evidence`. Raised by the use case that notices them (a usage
//! ledger restored, forked or cut; usage dated while a device was dead) or by the anomaly scan
//! (`anomaly_scan`). One OPEN anomaly per kind and series: its `dedupe_key` names the series,
//! a repeat moves `last_seen_at` and refreshes the evidence, and acknowledging it clears the
//! key so the situation can open a new one. Every new anomaly raises one ANOMALY alert (the
//! staff digest email and the `alerts` subscription).

use chrono::{DateTime, Utc};
use entity::anomaly;
use entity::enums::{AlertKind, AnomalyKind, AnomalyStatus};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveModelTrait as _, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::json;

use crate::alerts::{self, NewAlert};
use crate::audit::{self, Change};
use crate::db::begin_write;
use crate::newtypes::Text;
use crate::page::{self, Order, Page, PageRequest};
use crate::{Actor, Capability, Domain, Error, Result, new_id};

/// An anomaly to flag.
pub(crate) struct NewAnomaly<'a> {
    pub vendor_id: &'a str,
    pub license_id: Option<&'a str>,
    pub device_id: Option<&'a str>,
    /// The meter of the usage series concerned.
    pub meter: Option<&'a str>,
    pub kind: AnomalyKind,
    pub explanation: String,
    pub evidence: serde_json::Value,
    /// The kind and series (`<KIND>:<license>:<meter>...`): one OPEN anomaly per key.
    pub dedupe_key: String,
}

/// A flagged anomaly and whether this call opened it (false: it was open and was repeated).
#[derive(Debug, Clone)]
pub(crate) struct Flagged {
    pub anomaly: anomaly::Model,
    pub opened: bool,
}

/// Opens an anomaly, alerts staff and promises an `anomaly.opened` webhook event, or, when one
/// is open for the same kind and series, moves its `last_seen_at` and refreshes its
/// explanation and evidence.
pub(crate) async fn flag(db: &impl ConnectionTrait, new: NewAnomaly<'_>, now: DateTime<Utc>) -> Result<Flagged> {
    let id = new_id();
    let inserted = anomaly::Entity::insert(anomaly::ActiveModel {
        id: Set(id.clone()),
        vendor_id: Set(new.vendor_id.to_owned()),
        license_id: Set(new.license_id.map(str::to_owned)),
        device_id: Set(new.device_id.map(str::to_owned)),
        meter: Set(new.meter.map(str::to_owned)),
        kind: Set(new.kind),
        status: Set(AnomalyStatus::Open),
        explanation: Set(new.explanation.clone()),
        evidence: Set(Some(new.evidence.clone())),
        dedupe_key: Set(Some(new.dedupe_key.clone())),
        detected_at: Set(now),
        last_seen_at: Set(now),
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
    let opened = inserted == 1;
    if opened {
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
    } else {
        anomaly::Entity::update_many()
            .col_expr(anomaly::Column::LastSeenAt, Expr::value(now))
            .col_expr(anomaly::Column::Explanation, Expr::value(new.explanation))
            .col_expr(anomaly::Column::Evidence, Expr::value(new.evidence))
            .filter(anomaly::Column::VendorId.eq(new.vendor_id))
            .filter(anomaly::Column::DedupeKey.eq(&new.dedupe_key))
            .exec(db)
            .await?;
    }
    let anomaly = anomaly::Entity::find()
        .filter(anomaly::Column::VendorId.eq(new.vendor_id))
        .filter(anomaly::Column::DedupeKey.eq(new.dedupe_key))
        .one(db)
        .await?
        .ok_or_else(|| Error::Internal("a flagged anomaly vanished".into()))?;
    if opened {
        let object = crate::webhooks::objects::anomaly(&anomaly);
        crate::webhooks::events::record(db, &anomaly.vendor_id, "anomaly.opened", object, now).await?;
    }
    Ok(Flagged { anomaly, opened })
}

/// Which anomalies to list.
#[derive(Debug, Clone, Default)]
pub struct AnomalyFilter {
    /// Only this status.
    pub status: Option<AnomalyStatus>,
    /// Only these kinds (empty = all).
    pub kinds: Vec<AnomalyKind>,
    /// Only this license's.
    pub license_id: Option<String>,
    /// Only this device's.
    pub device_id: Option<String>,
}

/// The longest note staff may leave on an anomaly.
const MAX_NOTE_LEN: usize = 2000;

impl Domain {
    /// The vendor's anomalies, newest first.
    ///
    /// # Errors
    /// [`Error::Forbidden`] without read access; database errors.
    pub async fn anomalies(
        &self,
        actor: &Actor,
        filter: &AnomalyFilter,
        request: &PageRequest,
    ) -> Result<Page<anomaly::Model>> {
        actor.require(Capability::Read)?;
        let mut select = anomaly::Entity::find().filter(anomaly::Column::VendorId.eq(&actor.vendor_id));
        if let Some(status) = filter.status {
            select = select.filter(anomaly::Column::Status.eq(status));
        }
        if !filter.kinds.is_empty() {
            select = select.filter(anomaly::Column::Kind.is_in(filter.kinds.iter().copied()));
        }
        if let Some(id) = &filter.license_id {
            select = select.filter(anomaly::Column::LicenseId.eq(id));
        }
        if let Some(id) = &filter.device_id {
            select = select.filter(anomaly::Column::DeviceId.eq(id));
        }
        page::fetch(&self.db, select, anomaly::Column::Id, request, Order::NewestFirst).await
    }

    /// One of the vendor's anomalies.
    ///
    /// # Errors
    /// [`Error::Forbidden`] without read access; database errors.
    pub async fn anomaly(&self, actor: &Actor, id: &str) -> Result<Option<anomaly::Model>> {
        actor.require(Capability::Read)?;
        Ok(anomaly::Entity::find_by_id(id)
            .filter(anomaly::Column::VendorId.eq(&actor.vendor_id))
            .one(&self.db)
            .await?)
    }

    /// Marks an anomaly as looked at, with an optional note (SUPPORT and above). The same
    /// situation seen again afterwards opens a new anomaly. Acknowledging twice keeps the first
    /// acknowledgement.
    ///
    /// # Errors
    /// [`Error::NotFound`] for another vendor's anomaly; [`Error::Forbidden`] below SUPPORT;
    /// [`Error::InvalidInput`] for a note over 2,000 characters.
    pub async fn acknowledge_anomaly(&self, actor: &Actor, id: &str, note: Option<&str>) -> Result<anomaly::Model> {
        actor.require(Capability::ReviewUsage)?;
        let note = Text::<MAX_NOTE_LEN>::optional("note", note)?;
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let current = anomaly::Entity::find_by_id(id)
            .filter(anomaly::Column::VendorId.eq(&actor.vendor_id))
            .one(&tx)
            .await?
            .ok_or(Error::NotFound("anomaly"))?;
        if current.status == AnomalyStatus::Acknowledged {
            return Ok(current);
        }
        let mut model: anomaly::ActiveModel = current.into();
        model.status = Set(AnomalyStatus::Acknowledged);
        model.acknowledged_at = Set(Some(now));
        model.acknowledged_by = Set(actor.staff_id().map(str::to_owned));
        model.note = Set(note.map(|n| n.as_str().to_owned()));
        model.dedupe_key = Set(None);
        let updated = model.update(&tx).await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "anomaly.acknowledge",
                "anomaly",
                &updated.id,
                json!({ "status": "OPEN" }),
                json!({ "status": "ACKNOWLEDGED", "acknowledged_at": now, "note": updated.note }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(updated)
    }
}
