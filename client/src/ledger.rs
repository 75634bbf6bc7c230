//! The local usage ledger: recording use of a metered entitlement (signed, hash-chained
//! records, [`protocol::ledger`]), which records the server has not acknowledged yet, and the
//! usage report that carries them to the vendor.

use protocol::ledger::{self, LedgerRecord};
use protocol::license_file::LicensePayload;
use protocol::offline::{self, UsageReport};

use crate::{Client, ClientError};

impl Client {
    /// Ledger records the server has not acknowledged yet.
    pub(crate) fn unacknowledged(&self, payload: &LicensePayload) -> Result<Vec<LedgerRecord>, ClientError> {
        let acknowledged = payload.usage_ack.as_ref().map_or(0, |a| a.seq);
        Ok(self
            .state
            .ledger(&payload.device.id)?
            .into_iter()
            .filter(|r| r.seq > acknowledged)
            .collect())
    }

    /// Records `quantity` of `meter` in the usage ledger (the license must be valid and grant
    /// the meter).
    ///
    /// # Errors
    /// [`ClientError::Refused`] for an invalid license, a meter it does not grant, or a
    /// quantity outside 1..=[`ledger::MAX_QUANTITY`].
    pub fn record_use(&self, meter: &str, quantity: i64) -> Result<LedgerRecord, ClientError> {
        if !(1..=ledger::MAX_QUANTITY).contains(&quantity) {
            return Err(ClientError::Refused(format!(
                "the amount must be between 1 and {}",
                ledger::MAX_QUANTITY
            )));
        }
        let _lock = self.state.lock()?;
        let status = self.status_locked(&[])?;
        if !status.valid {
            return Err(ClientError::Refused(format!(
                "the license is not valid ({:?}): {}",
                status.code, status.detail
            )));
        }
        let payload = self
            .installed()?
            .ok_or_else(|| ClientError::Refused("no license is installed".into()))?;
        if !payload.meters.iter().any(|m| m.code == meter) {
            let granted: Vec<&str> = payload.meters.iter().map(|m| m.code.as_str()).collect();
            return Err(ClientError::Refused(format!(
                "this license has no meter {meter:?} (it grants: {})",
                if granted.is_empty() {
                    "none".to_owned()
                } else {
                    granted.join(", ")
                }
            )));
        }
        let key = self.state.device_key()?;
        let ledger = self.state.ledger(&payload.device.id)?;
        // A clock stepped back a little (inside the tolerance) must not date a record before
        // the one it follows: that would read as tampering.
        let at = ledger
            .last()
            .map_or(self.now(), |last| self.now().max(last.recorded_at));
        let record = ledger::append(&payload.device.id, &key, ledger.last(), meter, quantity, at);
        self.state.append_ledger(&payload.device.id, &record)?;
        Ok(record)
    }

    /// A usage report carrying the ledger records not yet acknowledged.
    ///
    /// # Errors
    /// [`ClientError::Refused`] without an installed license or with nothing to report.
    pub fn usage_report(&self) -> Result<String, ClientError> {
        let _lock = self.state.lock()?;
        let payload = self
            .installed()?
            .ok_or_else(|| ClientError::Refused("no license is installed".into()))?;
        let records = self.unacknowledged(&payload)?;
        if records.is_empty() {
            return Err(ClientError::Refused(
                "no usage to report: every record was acknowledged".into(),
            ));
        }
        let report = UsageReport {
            format: offline::FORMAT,
            license_id: payload.license_id,
            device_id: payload.device.id,
            created_at: self.now(),
            records,
        };
        offline::write(&report, &self.state.device_key()?).map_err(|e| ClientError::Refused(e.to_string()))
    }
}
