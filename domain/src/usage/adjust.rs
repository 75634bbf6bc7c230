//! `adjustUsage`: staff correct a meter's current period (a refund of wrongly counted units,
//! a goodwill credit, usage that arrived outside the product). Audited, with a reason; the
//! idempotency key makes a retry count once; the period's total never goes below zero.

use entity::enums::UsageSource;
use entity::license;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::counting::{self, Bound, NewRecord, Origin, replay, stored_record};
use super::online::MAX_QUANTITY;
use super::{MeterUsage, find_meter, meter_used, period_start, record_limit_reached};
use crate::audit::{self, Change};
use crate::db::begin_write;
use crate::idempotency;
use crate::licenses::with_policy;
use crate::newtypes::{IdempotencyKey, Text};
use crate::{Actor, Capability, Domain, Error, Result};

/// A staff correction of a license's usage.
#[derive(Debug, Clone)]
pub struct AdjustUsage {
    /// The license.
    pub license_id: String,
    /// The meter's code.
    pub meter: String,
    /// Units to add (negative: to take away), not 0, at most 10^9 either way.
    pub delta: i64,
    /// Why, for the audit log.
    pub reason: Text<500>,
    /// Retries with the same key count once.
    pub idempotency_key: IdempotencyKey,
}

impl Domain {
    /// Adds `delta` to the meter's current period and answers its usage (OWNER, ADMIN,
    /// SUPPORT).
    ///
    /// # Errors
    /// [`Error::Forbidden`]; [`Error::NotFound`] for another vendor's license;
    /// [`Error::InvalidInput`] for an unknown meter, a delta of 0 or beyond 10^9, or one that
    /// would take the period below zero; [`Error::IdempotencyConflict`].
    pub async fn adjust_usage(&self, actor: &Actor, input: AdjustUsage) -> Result<MeterUsage> {
        actor.require(Capability::ReviewUsage)?;
        if input.delta == 0 || input.delta.abs() > MAX_QUANTITY {
            return Err(Error::InvalidInput(format!(
                "delta must be between -{MAX_QUANTITY} and {MAX_QUANTITY}, and not 0"
            )));
        }
        let request_hash = idempotency::request_hash(&json!({
            "license_id": input.license_id, "meter": input.meter, "delta": input.delta, "reason": input.reason.as_str(),
        }));
        let key = format!("adjust:{}", hex::encode(Sha256::digest(input.idempotency_key.as_str())));
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let select =
            license::Entity::find_by_id(&input.license_id).filter(license::Column::VendorId.eq(&actor.vendor_id));
        let (license, policy) = with_policy(&tx, select, true)
            .await?
            .ok_or(Error::NotFound("license"))?;
        if let Some(stored) = stored_record(&tx, &license.id, &key).await? {
            return replay(&stored, &request_hash);
        }
        let meter = find_meter(&policy, &license, &input.meter)?;
        let (before, _) = meter_used(&tx, &license.id, &meter, now).await?;
        let bound = if input.delta < 0 {
            Bound::NotBelowZero
        } else {
            Bound::None
        };
        let period = period_start(meter.reset_period, now);
        if !counting::add_to_period(&tx, &license.id, &meter.code, period, input.delta, bound).await? {
            return Err(Error::InvalidInput(format!(
                "the period has used {before} of {}: a correction of {} would take it below zero",
                meter.code, input.delta
            )));
        }
        let (used, lifetime_used) = meter_used(&tx, &license.id, &meter, now).await?;
        let answer = MeterUsage::new(&meter, used, lifetime_used, now);
        let record = NewRecord {
            meter: meter.code.clone(),
            quantity: input.delta,
            recorded_at: now,
            key,
            ledger_seq: None,
            ledger_hash: None,
            request_hash: Some(request_hash),
            answer: Some(serde_json::to_value(&answer).map_err(|e| Error::Internal(e.to_string()))?),
            note: Some(input.reason.as_str().to_owned()),
        };
        let origin = Origin {
            vendor_id: &license.vendor_id,
            license_id: &license.id,
            device_id: None,
            source: UsageSource::Adjustment,
            received_at: now,
        };
        // The license row is locked: no other call with this key can have raced in.
        counting::insert_records(&tx, &origin, std::slice::from_ref(&record)).await?;
        record_limit_reached(
            &tx,
            &license.vendor_id,
            &license.id,
            &meter,
            period,
            (before, used),
            now,
        )
        .await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "usage.adjust",
                "license",
                &license.id,
                // The meter and period only after: the diff keeps what differs, and they name what
                // was corrected.
                json!({ "used": before }),
                json!({ "meter": meter.code, "period_start": period, "used": used, "delta": input.delta, "reason": input.reason.as_str() }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(answer)
    }
}
