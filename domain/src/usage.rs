//! Consumption: the server side of a device's usage ledger and the license's meter totals.
//!
//! Ledger records arrive in files a device signed (the deactivation file today, usage reports
//! with the consumption issue). They are checked against the position the server last
//! acknowledged for that device (`devices.ledger_seq` / `ledger_hash`, echoed to the device as
//! `usage_ack` in every license file): a continuation is counted, a broken chain (rollback,
//! fork, gap, clock moved back) is flagged as an anomaly and counts nothing. Each record lands
//! once in `usage_records` (unique per license and `ledger:<device>:<seq>`) and adds its
//! quantity to `meter_totals` for its meter and reset period, in the same transaction.

use chrono::{DateTime, Datelike as _, Duration, NaiveDate, TimeZone as _, Utc};
use entity::enums::{AnomalyKind, DeviceStatus, ResetPeriod, UsageSource};
use entity::{anomaly, device, license, meter_total, policy, usage_record};
use protocol::envelope::FileError;
use protocol::ledger::{self, LedgerProblem, LedgerRecord};
use protocol::license_file::UsageAck;
use protocol::offline::{self, DeactivationFile};
use sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::anomalies::{self, NewAnomaly};
use crate::db::begin_write;
use crate::devices::release_in;
use crate::idempotency::{self, Claim};
use crate::license_files::acknowledged_usage;
use crate::licenses::with_policy;
use crate::{Actor, Capability, Domain, Error, Result, new_id};

/// Longest meter code a record may name (the column's width).
const MAX_METER_LEN: usize = 64;

/// What importing a deactivation file did.
#[derive(Debug, Clone)]
pub struct DeactivationReceipt {
    /// The device, now released.
    pub device: device::Model,
    /// Ledger records counted by this import.
    pub accepted_records: usize,
    /// Records that were already counted (a second import of the same file, or records a
    /// usage report delivered before).
    pub duplicate_records: usize,
    /// What was wrong with the ledger, if anything (its records were then not counted).
    pub anomalies: Vec<anomaly::Model>,
}

/// Usage of one meter of a license in the current period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterUsage {
    /// Meter code.
    pub meter: String,
    /// Used in the current period.
    pub used: i64,
    /// Allowed per period; `None` = unlimited.
    pub limit: Option<i64>,
    /// `limit - used`, never below zero; `None` when unlimited.
    pub remaining: Option<i64>,
    /// Start of the current period; `None` for meters that never reset.
    pub period_start: Option<DateTime<Utc>>,
}

/// Start of the reset period that contains `at` (UTC days, ISO weeks from Monday, calendar
/// months and years); the epoch for meters that never reset.
#[must_use]
pub fn period_start(reset: ResetPeriod, at: DateTime<Utc>) -> DateTime<Utc> {
    let day = at.date_naive();
    let start = match reset {
        ResetPeriod::Never => return DateTime::UNIX_EPOCH,
        ResetPeriod::Daily => day,
        ResetPeriod::Weekly => day - Duration::days(i64::from(day.weekday().num_days_from_monday())),
        ResetPeriod::Monthly => NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap_or(day),
        ResetPeriod::Yearly => NaiveDate::from_ymd_opt(day.year(), 1, 1).unwrap_or(day),
    };
    Utc.from_utc_datetime(&start.and_time(chrono::NaiveTime::MIN))
}

fn reset_period_of(policy: &policy::Model, meter: &str) -> ResetPeriod {
    policy
        .meters
        .0
        .iter()
        .find(|m| m.code == meter)
        .map_or(ResetPeriod::Never, |m| m.reset_period)
}

/// Counts ledger records once each: a record already in `usage_records` adds nothing.
/// Returns how many were new.
async fn count_records(
    tx: &DatabaseTransaction,
    license: &license::Model,
    policy: &policy::Model,
    device_id: &str,
    records: &[LedgerRecord],
    source: UsageSource,
    now: DateTime<Utc>,
) -> Result<usize> {
    let mut accepted = 0;
    for record in records {
        let inserted = usage_record::Entity::insert(usage_record::ActiveModel {
            id: Set(new_id()),
            vendor_id: Set(license.vendor_id.clone()),
            license_id: Set(license.id.clone()),
            device_id: Set(Some(device_id.to_owned())),
            meter: Set(record.meter.clone()),
            quantity: Set(record.quantity),
            idempotency_key: Set(format!("ledger:{device_id}:{}", record.seq)),
            source: Set(source),
            ledger_seq: Set(i64::try_from(record.seq).ok()),
            ledger_hash: Set(Some(record.hash.clone())),
            recorded_at: Set(record.recorded_at),
            received_at: Set(now),
            request_hash: Set(None),
            note: Set(None),
        })
        .on_conflict(
            OnConflict::columns([usage_record::Column::LicenseId, usage_record::Column::IdempotencyKey])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(tx)
        .await?;
        if inserted == 0 {
            continue;
        }
        accepted += 1;
        // A record dated in the future (a device clock ahead) counts in the current period.
        let period = period_start(
            reset_period_of(policy, &record.meter),
            Ord::min(record.recorded_at, now),
        );
        meter_total::Entity::insert(meter_total::ActiveModel {
            license_id: Set(license.id.clone()),
            meter: Set(record.meter.clone()),
            period_start: Set(period),
            used: Set(record.quantity),
        })
        .on_conflict(
            OnConflict::columns([
                meter_total::Column::LicenseId,
                meter_total::Column::Meter,
                meter_total::Column::PeriodStart,
            ])
            .value(
                meter_total::Column::Used,
                Expr::col((meter_total::Entity, meter_total::Column::Used)).add(record.quantity),
            )
            .to_owned(),
        )
        .exec_without_returning(tx)
        .await?;
    }
    Ok(accepted)
}

/// The anomaly a broken ledger chain is, with evidence staff can act on.
fn ledger_anomaly<'a>(device: &'a device::Model, problem: &LedgerProblem, records: &[LedgerRecord]) -> NewAnomaly<'a> {
    let kind = match problem {
        LedgerProblem::Rollback { .. } => AnomalyKind::LedgerRollback,
        LedgerProblem::Gap { .. } => AnomalyKind::LedgerGap,
        LedgerProblem::ClockBackwards { .. } => AnomalyKind::ClockTamper,
        LedgerProblem::Fork { .. } | LedgerProblem::Tampered { .. } | LedgerProblem::BadSignature { .. } => {
            AnomalyKind::LedgerFork
        }
    };
    let mut unverified_totals = std::collections::BTreeMap::<&str, i64>::new();
    for r in records {
        let total = unverified_totals.entry(r.meter.as_str()).or_default();
        *total = total.saturating_add(r.quantity);
    }
    NewAnomaly {
        vendor_id: &device.vendor_id,
        license_id: Some(&device.license_id),
        device_id: Some(&device.id),
        meter: None,
        kind,
        explanation: format!(
            "Device {}'s usage ledger does not continue the acknowledged record {}: {problem}. Its {} records were not counted.",
            device.id,
            device.ledger_seq.unwrap_or(0),
            records.len()
        ),
        evidence: json!({
            "problem": problem.to_string(),
            "acknowledged_seq": device.ledger_seq,
            "acknowledged_hash": device.ledger_hash,
            "first_seq": records.first().map(|r| r.seq),
            "last_seq": records.last().map(|r| r.seq),
            "uncounted_totals": unverified_totals,
        }),
        dedupe_key: format!(
            "ledger:{}:{}:{}",
            device.id,
            device.ledger_seq.unwrap_or(0),
            records.last().map_or(0, |r| r.seq)
        ),
    }
}

fn invalid(e: FileError) -> Error {
    Error::InvalidFile(e.to_string())
}

impl Domain {
    /// Imports a deactivation file a device wrote offline (staff upload it): verifies it with
    /// the device's key, frees the seat, counts the ledger records the server had not
    /// acknowledged, and moves the acknowledged position to the last one. Importing the same
    /// file again changes nothing and reports its records as duplicates.
    ///
    /// # Errors
    /// [`Error::InvalidFile`] for a file that does not parse or verify, names an unknown
    /// device or another license, or carries altered records (nothing changes);
    /// [`Error::Forbidden`] below SUPPORT.
    pub async fn import_deactivation(&self, actor: &Actor, text: &str) -> Result<DeactivationReceipt> {
        actor.require(Capability::Support)?;
        let claimed: DeactivationFile = offline::peek(text).map_err(invalid)?;
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let find =
            || device::Entity::find_by_id(&claimed.device_id).filter(device::Column::VendorId.eq(&actor.vendor_id));
        let unknown = || Error::InvalidFile("the file names a device this vendor does not have".into());
        let license_id = find().one(&tx).await?.ok_or_else(unknown)?.license_id;
        // Hold the license row first, as every device change does, then read the device (and
        // the key it activated with) under it.
        let (license, policy) = with_policy(&tx, license::Entity::find_by_id(&license_id), true)
            .await?
            .ok_or(Error::NotFound("license"))?;
        let device = find().one(&tx).await?.ok_or_else(unknown)?;
        let key = device
            .public_key
            .as_deref()
            .map(offline::decode_public_key)
            .transpose()
            .map_err(invalid)?
            .ok_or_else(|| Error::InvalidFile("the device was activated without a device key".into()))?;
        let file: DeactivationFile = offline::read(text, |id| (id == device.id).then_some(key)).map_err(invalid)?;
        if file.license_id != device.license_id || file.fingerprint != device.fingerprint {
            return Err(Error::InvalidFile(
                "the file does not match the device's activation (license or fingerprint differ)".into(),
            ));
        }
        let meters = &policy.meters.0;
        if let Some(bad) = file.records.iter().find(|r| {
            !(1..=ledger::MAX_QUANTITY).contains(&r.quantity)
                || r.meter.len() > MAX_METER_LEN
                || !meters.iter().any(|m| m.code == r.meter)
        }) {
            return Err(Error::InvalidFile(format!(
                "ledger record {} names a meter this license does not have ({:?}) or an invalid quantity",
                bad.seq, bad.meter
            )));
        }
        let digest = hex::encode(Sha256::digest(
            serde_json::to_vec(&file).map_err(|e| Error::Internal(e.to_string()))?,
        ));
        let row_id =
            match idempotency::claim(&tx, &actor.vendor_id, "import_deactivation", &digest, &digest, now).await? {
                Claim::Replay { .. } => {
                    return Ok(DeactivationReceipt {
                        device,
                        accepted_records: 0,
                        duplicate_records: file.records.len(),
                        anomalies: Vec::new(),
                    });
                }
                Claim::New { row_id } => row_id,
            };
        if device.status != DeviceStatus::Released && file.license_file_time < device.activated_at {
            return Err(Error::InvalidFile(format!(
                "this deactivation file belongs to an earlier activation: the device was activated again at {}",
                device.activated_at.to_rfc3339()
            )));
        }
        let acknowledged = acknowledged_usage(&device);
        let mut receipt = DeactivationReceipt {
            device: device.clone(),
            accepted_records: 0,
            duplicate_records: 0,
            anomalies: Vec::new(),
        };
        if self
            .already_counted(&tx, &license, &device, acknowledged.as_ref(), &file.records)
            .await?
        {
            receipt.duplicate_records = file.records.len();
        } else {
            match ledger::verify_chain(&device.id, &key, acknowledged.as_ref(), &file.records) {
                Ok(check) => {
                    receipt.accepted_records = count_records(
                        &tx,
                        &license,
                        &policy,
                        &device.id,
                        &check.new_records,
                        UsageSource::Deactivation,
                        now,
                    )
                    .await?;
                    receipt.duplicate_records = file.records.len() - receipt.accepted_records;
                    if let Some(last) = check.new_records.last() {
                        device::Entity::update_many()
                            .col_expr(device::Column::LedgerSeq, Expr::value(i64::try_from(last.seq).ok()))
                            .col_expr(device::Column::LedgerHash, Expr::value(Some(last.hash.clone())))
                            .filter(device::Column::Id.eq(&device.id))
                            .exec(&tx)
                            .await?;
                    }
                }
                Err(problem @ (LedgerProblem::Tampered { .. } | LedgerProblem::BadSignature { .. })) => {
                    return Err(Error::InvalidFile(format!(
                        "the usage ledger in the file is invalid: {problem}"
                    )));
                }
                Err(problem) => {
                    let flagged = anomalies::flag(&tx, ledger_anomaly(&device, &problem, &file.records), now).await?;
                    receipt.anomalies.push(flagged.anomaly);
                }
            }
        }
        let device = find().one(&tx).await?.ok_or_else(unknown)?;
        receipt.device = if device.status == DeviceStatus::Released {
            device
        } else {
            release_in(&tx, actor, &license, device, "device.import_deactivation", now).await?
        };
        idempotency::complete(&tx, &row_id, &receipt.device.id).await?;
        tx.commit().await?;
        self.device_tokens.remember(&receipt.device);
        Ok(receipt)
    }

    /// Whether every record is at or before the acknowledged position and is exactly the
    /// record counted there (a file older than one imported before: duplicates, not a
    /// restored ledger).
    async fn already_counted(
        &self,
        tx: &DatabaseTransaction,
        license: &license::Model,
        device: &device::Model,
        acknowledged: Option<&UsageAck>,
        records: &[LedgerRecord],
    ) -> Result<bool> {
        let (Some(ack), Some(last)) = (acknowledged, records.last()) else {
            return Ok(false);
        };
        if last.seq > ack.seq {
            return Ok(false);
        }
        let keys: Vec<String> = records
            .iter()
            .map(|r| format!("ledger:{}:{}", device.id, r.seq))
            .collect();
        let stored: Vec<(String, Option<String>)> = usage_record::Entity::find()
            .select_only()
            .column(usage_record::Column::IdempotencyKey)
            .column(usage_record::Column::LedgerHash)
            .filter(usage_record::Column::LicenseId.eq(&license.id))
            .filter(usage_record::Column::IdempotencyKey.is_in(keys))
            .into_tuple()
            .all(tx)
            .await?;
        Ok(records.iter().all(|r| {
            let key = format!("ledger:{}:{}", device.id, r.seq);
            stored
                .iter()
                .any(|(k, hash)| *k == key && hash.as_deref() == Some(r.hash.as_str()))
        }))
    }

    /// A license's use of each of its policy's meters in the current period.
    ///
    /// # Errors
    /// Database errors.
    pub async fn license_usage(&self, license: &license::Model, policy: &policy::Model) -> Result<Vec<MeterUsage>> {
        let meters = &policy.meters.0;
        if meters.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now();
        let totals = meter_total::Entity::find()
            .filter(meter_total::Column::LicenseId.eq(&license.id))
            .all(&self.db)
            .await?;
        Ok(meters
            .iter()
            .map(|m| {
                let start = period_start(m.reset_period, now);
                let used = totals
                    .iter()
                    .filter(|t| t.meter == m.code && t.period_start == start)
                    .map(|t| t.used)
                    .sum::<i64>();
                MeterUsage {
                    used,
                    limit: m.limit,
                    remaining: m.limit.map(|limit| Ord::max(limit - used, 0)),
                    period_start: (m.reset_period != ResetPeriod::Never).then_some(start),
                    meter: m.code.clone(),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_where_the_calendar_says() {
        let at = Utc
            .with_ymd_and_hms(2026, 11, 19, 15, 4, 5)
            .single()
            .unwrap_or_default();
        let day = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).single().unwrap_or_default();
        assert_eq!(period_start(ResetPeriod::Never, at), DateTime::UNIX_EPOCH);
        assert_eq!(period_start(ResetPeriod::Daily, at), day(2026, 11, 19));
        // 2026-11-19 is a Thursday; its ISO week starts on Monday the 16th.
        assert_eq!(period_start(ResetPeriod::Weekly, at), day(2026, 11, 16));
        assert_eq!(period_start(ResetPeriod::Monthly, at), day(2026, 11, 1));
        assert_eq!(period_start(ResetPeriod::Yearly, at), day(2026, 1, 1));
    }
}
