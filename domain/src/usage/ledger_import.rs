//! Importing the usage ledger a device carried offline: usage reports (`importUsageReport`)
//! and the ledger inside a deactivation file (`importDeactivation`, which also frees the seat).
//!
//! Records are checked against the position the server last acknowledged for the device
//! (`devices.ledger_seq` / `ledger_hash`, echoed to it as `usage_ack` in every license file):
//! a continuation is counted and the position moves to its last record; a broken chain
//! (rollback, fork, gap, clock moved back) is flagged as an anomaly and counts nothing; an
//! altered or badly signed record makes the whole file INVALID_FILE. Each record lands once,
//! keyed by its ledger (`ledger:<device>:<key digest>:<seq>`: a device that re-activates with a
//! new key starts a new ledger whose sequence numbers start again). Late records count in their
//! own period; one that pushes a period past its limit is still counted (the usage happened)
//! and flagged USAGE_OVER_LIMIT.

use chrono::{DateTime, Utc};
use entity::enums::{AnomalyKind, DeviceStatus, UsageSource};
use entity::{anomaly, device, license, policy, usage_record};
use protocol::envelope::FileError;
use protocol::ledger::{self, LedgerProblem, LedgerRecord, RecordSignatures};
use protocol::license_file::UsageAck;
use protocol::offline::{self, DeactivationFile, DeviceFile, UsageReport};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::counting::{self, NewRecord, Origin};
use super::{record_limit_reached, while_dead};
use crate::anomalies::{self, NewAnomaly};
use crate::audit::{self, Change};
use crate::catalog::{Meter, effective_meters};
use crate::db::begin_write;
use crate::devices::release_in;
use crate::idempotency::{self, Claim};
use crate::license_files::acknowledged_usage;
use crate::licenses::with_policy;
use crate::{Actor, Capability, Domain, Error, Result};

/// What importing a usage report did.
#[derive(Debug, Clone, Default)]
pub struct UsageReceipt {
    /// Ledger records counted by this import.
    pub accepted_records: usize,
    /// Records that were already counted (the same report again, or records an earlier
    /// report delivered).
    pub duplicate_records: usize,
    /// What was wrong, if anything: a broken chain (its records were then not counted), usage
    /// dated while the device was dead, periods pushed past their limit.
    pub anomalies: Vec<anomaly::Model>,
}

/// What importing a deactivation file did.
#[derive(Debug, Clone)]
pub struct DeactivationReceipt {
    /// The device, now released.
    pub device: device::Model,
    /// What happened to the ledger records in the file.
    pub usage: UsageReceipt,
}

/// The device a file names, with its license and policy, read under the license row lock.
struct FileDevice {
    device: device::Model,
    license: license::Model,
    policy: policy::Model,
}

fn invalid(e: FileError) -> Error {
    Error::InvalidFile(e.to_string())
}

/// Which ledger a record belongs to: the device's key (a new key starts a new ledger).
fn ledger_key(device: &device::Model, seq: u64) -> String {
    let key_digest = hex::encode(Sha256::digest(device.public_key.as_deref().unwrap_or("").as_bytes()));
    format!("ledger:{}:{}:{seq}", device.id, &key_digest[..16])
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
    let acknowledged = device.ledger_seq.unwrap_or(0);
    let last = records.last().map_or(0, |r| r.seq);
    NewAnomaly {
        vendor_id: &device.vendor_id,
        license_id: Some(&device.license_id),
        device_id: Some(&device.id),
        meter: None,
        kind,
        explanation: format!(
            "Device {}'s usage ledger does not continue the acknowledged record {acknowledged}: {problem}. Its {} records were not counted.",
            device.id,
            records.len()
        ),
        evidence: json!({
            "detector": "ledger_chain",
            "problem": problem.to_string(),
            "acknowledged_seq": device.ledger_seq,
            "acknowledged_hash": device.ledger_hash,
            "first_seq": records.first().map(|r| r.seq),
            "last_seq": records.last().map(|r| r.seq),
            "uncounted_totals": unverified_totals,
        }),
        dedupe_key: format!(
            "{}:{}:{acknowledged}:{last}",
            sea_orm::ActiveEnum::to_value(&kind),
            device.id
        ),
    }
}

/// The anomaly of a period that late ledger records pushed past its limit.
fn over_limit_anomaly<'a>(
    device: &'a device::Model,
    meter: &'a Meter,
    period: DateTime<Utc>,
    used: i64,
) -> NewAnomaly<'a> {
    let limit = meter.limit.unwrap_or_default();
    NewAnomaly {
        vendor_id: &device.vendor_id,
        license_id: Some(&device.license_id),
        device_id: Some(&device.id),
        meter: Some(&meter.code),
        kind: AnomalyKind::UsageOverLimit,
        explanation: format!(
            "License {}'s meter {} has used {used} in the period from {}, past its limit of {limit} (+{} overage): device {} reported the usage offline after it happened, so it was counted.",
            device.license_id,
            meter.code,
            period.to_rfc3339(),
            meter.overage_limit,
            device.id
        ),
        evidence: json!({
            "detector": "usage_over_limit",
            "series": { "license_id": device.license_id, "meter": meter.code },
            "period_start": period,
            "observed": used,
            "limit": limit,
            "overage_limit": meter.overage_limit,
        }),
        dedupe_key: format!(
            "USAGE_OVER_LIMIT:{}:{}:{}",
            device.license_id,
            meter.code,
            period.timestamp()
        ),
    }
}

/// Refuses records that name a meter the license does not have or an impossible quantity.
fn check_records(meters: &[Meter], records: &[LedgerRecord]) -> Result<()> {
    match records
        .iter()
        .find(|r| !(1..=ledger::MAX_QUANTITY).contains(&r.quantity) || !meters.iter().any(|m| m.code == r.meter))
    {
        Some(bad) => Err(Error::InvalidFile(format!(
            "ledger record {} names a meter this license does not have ({:?}) or an invalid quantity",
            bad.seq, bad.meter
        ))),
        None => Ok(()),
    }
}

impl Domain {
    /// Reads the device a signed file names (vendor-scoped) under its license's row lock, and
    /// verifies the file with the device's key.
    async fn file_device<T: DeviceFile>(
        &self,
        tx: &DatabaseTransaction,
        actor: &Actor,
        text: &str,
    ) -> Result<(T, FileDevice)> {
        let claimed: T = offline::peek(text).map_err(invalid)?;
        let find =
            || device::Entity::find_by_id(claimed.device_id()).filter(device::Column::VendorId.eq(&actor.vendor_id));
        let unknown = || Error::InvalidFile("the file names a device this vendor does not have".into());
        let license_id = find().one(tx).await?.ok_or_else(unknown)?.license_id;
        // Hold the license row first, as every device change does, then read the device (and
        // the key it activated with) under it.
        let (license, policy) = with_policy(tx, license::Entity::find_by_id(&license_id), true)
            .await?
            .ok_or(Error::NotFound("license"))?;
        let device = find().one(tx).await?.ok_or_else(unknown)?;
        let key = device
            .public_key
            .as_deref()
            .map(offline::decode_public_key)
            .transpose()
            .map_err(invalid)?
            .ok_or_else(|| Error::InvalidFile("the device was activated without a device key".into()))?;
        let file: T = offline::read(text, |id| (id == device.id).then_some(key)).map_err(invalid)?;
        Ok((
            file,
            FileDevice {
                device,
                license,
                policy,
            },
        ))
    }

    /// Imports a usage report written by `licensing-client usage-report` (OWNER, ADMIN,
    /// SUPPORT, INTEGRATION): counts the records the server had not acknowledged, once each,
    /// and moves the device's acknowledged position (the next license file carries it as
    /// `usage_ack`). The same report again counts nothing and reports duplicates.
    ///
    /// # Errors
    /// [`Error::InvalidFile`] for a file that does not parse or verify, names an unknown
    /// device or another license, or carries altered records (nothing changes);
    /// [`Error::Forbidden`] below SUPPORT.
    pub async fn import_usage_report(&self, actor: &Actor, text: &str) -> Result<UsageReceipt> {
        actor.require(Capability::Support)?;
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let (report, at): (UsageReport, FileDevice) = self.file_device(&tx, actor, text).await?;
        if report.license_id != at.device.license_id {
            return Err(Error::InvalidFile(
                "the report names another license than the device's".into(),
            ));
        }
        let receipt = self
            .count_ledger(&tx, &at, &report.records, UsageSource::UsageReport, now)
            .await?;
        let ledger_seq = device::Entity::find_by_id(&at.device.id)
            .one(&tx)
            .await?
            .and_then(|d| d.ledger_seq);
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "usage.import_report",
                "device",
                &at.device.id,
                json!({ "ledger_seq": at.device.ledger_seq }),
                json!({
                    "ledger_seq": ledger_seq,
                    "accepted_records": receipt.accepted_records,
                    "duplicate_records": receipt.duplicate_records,
                    "anomalies": receipt.anomalies.iter().map(|a| &a.id).collect::<Vec<_>>(),
                }),
            ),
        )
        .await?;
        tx.commit().await?;
        self.read_model.forget(&at.license.id);
        Ok(receipt)
    }

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
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let (file, at): (DeactivationFile, FileDevice) = self.file_device(&tx, actor, text).await?;
        if file.license_id != at.device.license_id || file.fingerprint != at.device.fingerprint {
            return Err(Error::InvalidFile(
                "the file does not match the device's activation (license or fingerprint differ)".into(),
            ));
        }
        check_records(&effective_meters(&at.policy, &at.license), &file.records)?;
        let digest = hex::encode(Sha256::digest(
            serde_json::to_vec(&file).map_err(|e| Error::Internal(e.to_string()))?,
        ));
        let row_id =
            match idempotency::claim(&tx, &actor.vendor_id, "import_deactivation", &digest, &digest, now).await? {
                Claim::Replay { .. } => {
                    return Ok(DeactivationReceipt {
                        device: at.device,
                        usage: UsageReceipt {
                            duplicate_records: file.records.len(),
                            ..UsageReceipt::default()
                        },
                    });
                }
                Claim::New { row_id } => row_id,
            };
        if at.device.status != DeviceStatus::Released && file.license_file_time < at.device.activated_at {
            return Err(Error::InvalidFile(format!(
                "this deactivation file belongs to an earlier activation: the device was activated again at {}",
                at.device.activated_at.to_rfc3339()
            )));
        }
        let usage = self
            .count_ledger(&tx, &at, &file.records, UsageSource::Deactivation, now)
            .await?;
        let device = device::Entity::find_by_id(&at.device.id)
            .one(&tx)
            .await?
            .ok_or(Error::NotFound("device"))?;
        let device = if device.status == DeviceStatus::Released {
            device
        } else {
            release_in(&tx, actor, &at.license, device, "device.import_deactivation", now).await?
        };
        idempotency::complete(&tx, &row_id, &device.id).await?;
        tx.commit().await?;
        self.read_model.forget(&at.license.id);
        Ok(DeactivationReceipt { device, usage })
    }

    /// Counts a device's ledger records against its acknowledged position (see the module
    /// docs) inside `tx`.
    async fn count_ledger(
        &self,
        tx: &DatabaseTransaction,
        at: &FileDevice,
        records: &[LedgerRecord],
        source: UsageSource,
        now: DateTime<Utc>,
    ) -> Result<UsageReceipt> {
        let meters = effective_meters(&at.policy, &at.license);
        check_records(&meters, records)?;
        let device = &at.device;
        let acknowledged = acknowledged_usage(device);
        let mut receipt = UsageReceipt::default();
        if self.already_counted(tx, device, acknowledged.as_ref(), records).await? {
            receipt.duplicate_records = records.len();
            return Ok(receipt);
        }
        // The file's signature (verified with the device key in `file_device`) covers every record.
        let check = match ledger::verify_chain(
            &device.id,
            RecordSignatures::CoveredByFile,
            acknowledged.as_ref(),
            records,
        ) {
            Ok(check) => check,
            Err(problem @ (LedgerProblem::Tampered { .. } | LedgerProblem::BadSignature { .. })) => {
                return Err(Error::InvalidFile(format!(
                    "the usage ledger in the file is invalid: {problem}"
                )));
            }
            Err(problem) => {
                let flagged = anomalies::flag(tx, ledger_anomaly(device, &problem, records), now).await?;
                receipt.anomalies.push(flagged.anomaly);
                return Ok(receipt);
            }
        };
        let new: Vec<NewRecord> = check
            .new_records
            .iter()
            .map(|r| NewRecord {
                meter: r.meter.clone(),
                quantity: r.quantity,
                recorded_at: r.recorded_at,
                key: ledger_key(device, r.seq),
                ledger_seq: i64::try_from(r.seq).ok(),
                ledger_hash: Some(r.hash.clone()),
                request_hash: None,
                answer: None,
                note: None,
            })
            .collect();
        let origin = Origin {
            vendor_id: &device.vendor_id,
            license_id: &device.license_id,
            device_id: Some(&device.id),
            source,
            received_at: now,
        };
        let inserted = counting::insert_records(tx, &origin, &new).await?;
        let counted: Vec<&NewRecord> = new
            .iter()
            .zip(&inserted)
            .filter(|(_, new)| **new)
            .map(|(r, _)| r)
            .collect();
        receipt.accepted_records = counted.len();
        receipt.duplicate_records = records.len() - counted.len();
        for total in counting::add_ledger_to_periods(tx, &device.license_id, &meters, &counted, now).await? {
            let (meter, period, used) = (&total.meter, total.period, total.used);
            let (vendor_id, license_id) = (&device.vendor_id, &device.license_id);
            record_limit_reached(tx, vendor_id, license_id, meter, period, (total.before, used), now).await?;
            if used > meter.limit.unwrap_or_default() + meter.overage_limit {
                let flagged = anomalies::flag(tx, over_limit_anomaly(device, meter, period, used), now).await?;
                receipt.anomalies.push(flagged.anomaly);
            }
        }
        counting::add_to_rollups(tx, &origin, &counted).await?;
        if let Some(flagged) = while_dead::flag(tx, device, at.policy.heartbeat_interval_seconds, &counted, now).await?
        {
            receipt.anomalies.push(flagged);
        }
        if let Some(last) = check.new_records.last() {
            device::Entity::update_many()
                .col_expr(device::Column::LedgerSeq, Expr::value(i64::try_from(last.seq).ok()))
                .col_expr(device::Column::LedgerHash, Expr::value(Some(last.hash.clone())))
                .filter(device::Column::Id.eq(&device.id))
                .exec(tx)
                .await?;
        }
        Ok(receipt)
    }

    /// Whether every record is at or before the acknowledged position and is exactly the
    /// record counted there (a file older than one imported before: duplicates, not a
    /// restored ledger).
    async fn already_counted(
        &self,
        tx: &DatabaseTransaction,
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
        let keys: Vec<String> = records.iter().map(|r| ledger_key(device, r.seq)).collect();
        let stored: Vec<(String, Option<String>)> = usage_record::Entity::find()
            .select_only()
            .column(usage_record::Column::IdempotencyKey)
            .column(usage_record::Column::LedgerHash)
            .filter(usage_record::Column::LicenseId.eq(&device.license_id))
            .filter(usage_record::Column::IdempotencyKey.is_in(keys.clone()))
            .into_tuple()
            .all(tx)
            .await?;
        Ok(records.iter().zip(&keys).all(|(r, key)| {
            stored
                .iter()
                .any(|(k, hash)| k == key && hash.as_deref() == Some(r.hash.as_str()))
        }))
    }
}
