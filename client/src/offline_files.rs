//! The offline exchange through the vendor's portal: the activation request this device
//! writes to be activated without a network, and the deactivation file that gives its seat
//! back (carrying the usage the server has not acknowledged).

use std::path::Path;

use protocol::fingerprint;
use protocol::offline::{self, ActivationRequest, DeactivationFile};

use crate::{Client, ClientError, detect, state};

impl Client {
    /// Writes an activation request for `license_key`, signed by the device key, for the
    /// vendor's offline portal.
    ///
    /// # Errors
    /// [`ClientError`] when the key cannot be made or the request signed.
    pub fn request(&self, license_key: &str) -> Result<String, ClientError> {
        let _lock = self.state.lock()?;
        let key = self.state.device_key()?;
        let request = ActivationRequest {
            format: offline::FORMAT,
            license_key: license_key.trim().to_owned(),
            fingerprint: fingerprint::fingerprint(&self.components),
            components: self.components.clone(),
            device_public_key: offline::encode_public_key(&key.verifying_key()),
            hostname: detect::host_name(),
            platform: Some(detect::platform()),
            created_at: self.now(),
        };
        offline::write_request(&request, &key).map_err(|e| ClientError::Refused(e.to_string()))
    }

    /// Gives the seat back offline: writes a deactivation file to `out` (signed by the device
    /// key, carrying the unacknowledged ledger records; durable before anything else changes)
    /// for the vendor to import, then stops validating. The device key and ledger stay.
    ///
    /// # Errors
    /// [`ClientError::Refused`] without an installed license or when `out` cannot be written
    /// (then nothing changes).
    pub fn deactivate_offline(&self, out: &Path) -> Result<(), ClientError> {
        let _lock = self.state.lock()?;
        let payload = self
            .installed()?
            .ok_or_else(|| ClientError::Refused("no license is installed: nothing to deactivate".into()))?;
        let file = DeactivationFile {
            format: offline::FORMAT,
            records: self.unacknowledged(&payload)?,
            license_id: payload.license_id.clone(),
            device_id: payload.device.id.clone(),
            fingerprint: payload.device.fingerprint.clone(),
            license_file_time: payload.server_time,
            deactivated_at: self.now(),
        };
        let text = offline::write(&file, &self.state.device_key()?).map_err(|e| ClientError::Refused(e.to_string()))?;
        state::write_durably(out, text.as_bytes())
            .map_err(|e| ClientError::Refused(format!("the deactivation file was not written: {e}")))?;
        self.give_back(&payload, format!("deactivation file {}", out.display()))
    }
}
