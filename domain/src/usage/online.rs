//! `recordUsage`: a device counts usage online, with its device token.
//!
//! The quantity (1 to 10^9) counts in the period that contains `recordedAt` (default now; at
//! most 35 days back, 5 minutes ahead). A quantity that would take that period past the
//! meter's limit plus overage is refused whole. The record's key is the device's idempotency
//! key: the same key with the same input answers what the first call answered and counts
//! once, for as long as the record is kept; other input is a conflict.

use chrono::{DateTime, Duration, Utc};
use entity::enums::UsageSource;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::counting::{self, Bound, NewRecord, Origin, replay, stored_record};
use super::{MeterUsage, find_meter, meter_used, period_start, record_limit_reached, while_dead};
use crate::idempotency;
use crate::licenses::require_active;
use crate::newtypes::IdempotencyKey;
use crate::{Actor, Domain, Error, Result};

/// The largest quantity one call may record.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
/// How far back `recordedAt` may lie (offline and late reporting).
pub const MAX_BACKDATE_DAYS: i64 = 35;
/// How far ahead `recordedAt` may lie (clock skew).
pub const MAX_FUTURE_SECONDS: i64 = 300;

/// Usage a device records online.
#[derive(Debug, Clone)]
pub struct RecordUsage {
    /// The meter's code.
    pub meter: String,
    /// Units used.
    pub quantity: i64,
    /// The device's key for this unit of work.
    pub idempotency_key: IdempotencyKey,
    /// When the usage happened; `None` = now.
    pub recorded_at: Option<DateTime<Utc>>,
}

impl Domain {
    /// Counts usage a device reports online and answers the meter's usage in the current
    /// period.
    ///
    /// # Errors
    /// [`Error::Forbidden`] without a device token (or for a device that lost its seat);
    /// [`Error::InvalidInput`] for an unknown meter, a quantity outside 1..=10^9 or a
    /// `recordedAt` outside the window; the license's error when it is not in force;
    /// [`Error::UsageLimitExceeded`]; [`Error::IdempotencyConflict`].
    pub async fn record_usage(&self, actor: &Actor, input: RecordUsage) -> Result<MeterUsage> {
        let (device_id, license_id) = actor.device()?;
        if !(1..=MAX_QUANTITY).contains(&input.quantity) {
            return Err(Error::InvalidInput(format!(
                "quantity must be between 1 and {MAX_QUANTITY}"
            )));
        }
        let now = self.clock.now();
        let recorded_at = input.recorded_at.unwrap_or(now);
        if recorded_at < now - Duration::days(MAX_BACKDATE_DAYS) {
            return Err(Error::InvalidInput(format!(
                "recordedAt may lie at most {MAX_BACKDATE_DAYS} days in the past"
            )));
        }
        if recorded_at > now + Duration::seconds(MAX_FUTURE_SECONDS) {
            return Err(Error::InvalidInput(format!(
                "recordedAt may lie at most {MAX_FUTURE_SECONDS} seconds in the future (check the device clock)"
            )));
        }
        let request_hash = idempotency::request_hash(&json!({
            "meter": input.meter, "quantity": input.quantity, "recorded_at": input.recorded_at,
        }));
        let key = format!(
            "online:{device_id}:{}",
            hex::encode(Sha256::digest(input.idempotency_key.as_str()))
        );
        // A retry answers from the stored record, whatever changed since.
        if let Some(stored) = stored_record(&self.db, license_id, &key).await? {
            return replay(&stored, &request_hash);
        }

        let (tx, device, license, policy) = self.live_caller_device(actor, now).await?;
        require_active(&license, now)?;
        let meter = find_meter(&policy, &license, &input.meter)?;
        let bound = meter
            .limit
            .map_or(Bound::None, |limit| Bound::AtMost(limit + meter.overage_limit));
        let period = period_start(meter.reset_period, recorded_at);
        if !counting::add_to_period(&tx, &license.id, &meter.code, period, input.quantity, bound).await? {
            return Err(Error::UsageLimitExceeded(format!(
                "{} more of {} would pass the period's limit of {} (+{} overage); nothing was counted",
                input.quantity,
                meter.code,
                meter.limit.unwrap_or_default(),
                meter.overage_limit
            )));
        }
        let (used, lifetime_used) = meter_used(&tx, &license.id, &meter, now).await?;
        let answer = MeterUsage::new(&meter, used, lifetime_used, now);
        let record = NewRecord {
            meter: meter.code.clone(),
            quantity: input.quantity,
            recorded_at,
            key: key.clone(),
            ledger_seq: None,
            ledger_hash: None,
            request_hash: Some(request_hash.clone()),
            answer: Some(serde_json::to_value(&answer).map_err(|e| Error::Internal(e.to_string()))?),
            note: None,
        };
        let origin = Origin {
            vendor_id: &license.vendor_id,
            license_id: &license.id,
            device_id: Some(&device.id),
            source: UsageSource::Online,
            received_at: now,
        };
        if counting::insert_records(&tx, &origin, std::slice::from_ref(&record)).await? != [true] {
            // The same key raced in and committed first: undo this count, answer as a retry.
            drop(tx);
            let stored = stored_record(&self.db, &license.id, &key)
                .await?
                .ok_or_else(|| Error::Internal("a raced usage record vanished".into()))?;
            return replay(&stored, &request_hash);
        }
        counting::add_to_rollups(&tx, &origin, &[&record]).await?;
        let before = used - input.quantity;
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
        while_dead::flag(&tx, &device, policy.heartbeat_interval_seconds, &[&record], now).await?;
        tx.commit().await?;
        Ok(answer)
    }
}
