//! The files a device writes for offline use, each in the signed envelope (no `kid`) under its
//! own armour label, signed by the device's Ed25519 key:
//!
//! - **activation request** (`ACTIVATION REQUEST`): the license key, fingerprint and
//!   components, and the device's public key; self-signed, proving the requester holds the key
//!   it names. The vendor's offline portal turns it into a license file.
//! - **deactivation file** (`DEACTIVATION FILE`): the device gives its seat back, carrying the
//!   ledger records the server has not acknowledged yet.
//! - **usage report** (`USAGE REPORT`): ledger records, without giving the seat back.
//!
//! Deactivation files and usage reports are verified with the public key the device activated
//! with, looked up by `device_id`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::envelope::{self, FileError};
use crate::fingerprint::Components;
use crate::ledger::LedgerRecord;

/// Armour label of activation requests.
pub const REQUEST_LABEL: &str = "ACTIVATION REQUEST";
/// Armour label of deactivation files.
pub const DEACTIVATION_LABEL: &str = "DEACTIVATION FILE";
/// Armour label of usage reports.
pub const USAGE_LABEL: &str = "USAGE REPORT";
/// Payload layout version of the three files.
pub const FORMAT: u32 = 1;

/// A device public key as files and `activateDevice` carry it: standard base64 of its 32 bytes.
#[must_use]
pub fn encode_public_key(key: &VerifyingKey) -> String {
    STANDARD.encode(key.as_bytes())
}

/// Reads a device public key written by [`encode_public_key`].
///
/// # Errors
/// [`FileError::Malformed`] when it is not 32 bytes of base64 forming a valid key.
pub fn decode_public_key(text: &str) -> Result<VerifyingKey, FileError> {
    let raw = STANDARD
        .decode(text.trim())
        .map_err(|_| FileError::Malformed("device public key is not base64".into()))?;
    let bytes: [u8; 32] = raw
        .try_into()
        .map_err(|_| FileError::Malformed("device public key is not 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| FileError::Malformed("not an Ed25519 public key".into()))
}

/// What a device asks the offline portal for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationRequest {
    /// Payload layout version ([`FORMAT`]).
    pub format: u32,
    /// The license key, in full (the portal finds the license by it).
    pub license_key: String,
    /// The device's fingerprint.
    pub fingerprint: String,
    /// Its fingerprint components.
    pub components: Components,
    /// Its public key ([`encode_public_key`]); the request is signed with the matching key.
    pub device_public_key: String,
    /// Host name.
    pub hostname: Option<String>,
    /// Platform.
    pub platform: Option<String>,
    /// The device's clock when it wrote the request.
    pub created_at: DateTime<Utc>,
}

/// A device giving its seat back, offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeactivationFile {
    /// Payload layout version ([`FORMAT`]).
    pub format: u32,
    /// The license.
    pub license_id: String,
    /// The device.
    pub device_id: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// `server_time` of the license file the device held: ties the file to that activation,
    /// so it cannot release a later activation of the same device.
    pub license_file_time: DateTime<Utc>,
    /// The device's clock when it deactivated.
    pub deactivated_at: DateTime<Utc>,
    /// Ledger records not yet acknowledged, oldest first.
    pub records: Vec<LedgerRecord>,
}

/// Consumption recorded offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// Payload layout version ([`FORMAT`]).
    pub format: u32,
    /// The license.
    pub license_id: String,
    /// The device.
    pub device_id: String,
    /// The device's clock when it wrote the report.
    pub created_at: DateTime<Utc>,
    /// Ledger records not yet acknowledged, oldest first.
    pub records: Vec<LedgerRecord>,
}

/// A file written by a device that names it.
pub trait DeviceFile: Serialize + DeserializeOwned {
    /// The armour label.
    const LABEL: &'static str;
    /// The device that wrote it.
    fn device_id(&self) -> &str;
    /// Its payload layout version.
    fn format(&self) -> u32;
}

impl DeviceFile for DeactivationFile {
    const LABEL: &'static str = DEACTIVATION_LABEL;
    fn device_id(&self) -> &str {
        &self.device_id
    }
    fn format(&self) -> u32 {
        self.format
    }
}

impl DeviceFile for UsageReport {
    const LABEL: &'static str = USAGE_LABEL;
    fn device_id(&self) -> &str {
        &self.device_id
    }
    fn format(&self) -> u32 {
        self.format
    }
}

/// Signs an activation request with the device key it names.
///
/// # Errors
/// [`FileError::Malformed`] if the request names another key or cannot be serialised.
pub fn write_request(request: &ActivationRequest, key: &SigningKey) -> Result<String, FileError> {
    if request.device_public_key != encode_public_key(&key.verifying_key()) {
        return Err(FileError::Malformed(
            "the request must be signed by the key it names".into(),
        ));
    }
    envelope::seal(REQUEST_LABEL, request, None, key)
}

/// Reads an activation request and checks it is signed by the key it names.
///
/// # Errors
/// [`FileError`] for anything that does not parse or verify.
pub fn read_request(text: &str) -> Result<ActivationRequest, FileError> {
    let opened = envelope::open(REQUEST_LABEL, text)?;
    let request: ActivationRequest = opened.payload()?;
    if request.format != FORMAT {
        return Err(FileError::Format(request.format));
    }
    opened.verify(&decode_public_key(&request.device_public_key)?)?;
    Ok(request)
}

/// Signs a deactivation file or usage report with the device key.
///
/// # Errors
/// [`FileError::Malformed`] if it cannot be serialised.
pub fn write<T: DeviceFile>(file: &T, key: &SigningKey) -> Result<String, FileError> {
    envelope::seal(T::LABEL, file, None, key)
}

/// Parses a deactivation file or usage report WITHOUT verifying it, to learn which device's
/// key must verify it; trust nothing in it before [`read`].
///
/// # Errors
/// [`FileError`] for anything that does not parse.
pub fn peek<T: DeviceFile>(text: &str) -> Result<T, FileError> {
    let file: T = envelope::open(T::LABEL, text)?.payload()?;
    if file.format() != FORMAT {
        return Err(FileError::Format(file.format()));
    }
    Ok(file)
}

/// Reads a deactivation file or usage report and checks it with the public key of the device
/// it names (`key_for(device_id)`).
///
/// # Errors
/// [`FileError::UnknownKey`] for an unknown device; other [`FileError`]s for anything that does
/// not parse or verify.
pub fn read<T: DeviceFile>(text: &str, key_for: impl Fn(&str) -> Option<VerifyingKey>) -> Result<T, FileError> {
    let opened = envelope::open(T::LABEL, text)?;
    let file: T = opened.payload()?;
    if file.format() != FORMAT {
        return Err(FileError::Format(file.format()));
    }
    let key = key_for(file.device_id()).ok_or_else(|| FileError::UnknownKey(file.device_id().to_owned()))?;
    opened.verify(&key)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::{components, fingerprint};
    use crate::ledger;
    use crate::signing::signing_key_from_seed;
    use proptest::prelude::*;

    fn request(key: &SigningKey) -> ActivationRequest {
        let comps = components([("mac", "aa"), ("disk", "d")]).unwrap_or_default();
        ActivationRequest {
            format: FORMAT,
            license_key: "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE".into(),
            fingerprint: fingerprint(&comps),
            components: comps,
            device_public_key: encode_public_key(&key.verifying_key()),
            hostname: Some("plant-7".into()),
            platform: None,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn requests_are_self_signed() -> Result<(), FileError> {
        let key = signing_key_from_seed(&[1; 32]);
        let req = request(&key);
        let text = write_request(&req, &key)?;
        assert!(text.starts_with("-----BEGIN ACTIVATION REQUEST-----"));
        assert_eq!(read_request(&text)?, req);
        // Naming one key and signing with another is refused when written and when read.
        let other = signing_key_from_seed(&[2; 32]);
        assert!(write_request(&req, &other).is_err());
        let swapped = envelope::seal(REQUEST_LABEL, &req, None, &other)?;
        assert_eq!(read_request(&swapped), Err(FileError::BadSignature));
        assert!(read_request(&text.replace("ACTIVATION REQUEST", "USAGE REPORT")).is_err());
        Ok(())
    }

    #[test]
    fn deactivation_files_verify_with_the_device_key() -> Result<(), FileError> {
        let key = signing_key_from_seed(&[1; 32]);
        let public = key.verifying_key();
        let record = ledger::append("dev", &key, None, "calls", 3, Utc::now());
        let file = DeactivationFile {
            format: FORMAT,
            license_id: "lic".into(),
            device_id: "dev".into(),
            fingerprint: "fp".into(),
            license_file_time: Utc::now(),
            deactivated_at: Utc::now(),
            records: vec![record],
        };
        let text = write(&file, &key)?;
        assert_eq!(
            read::<DeactivationFile>(&text, |id| (id == "dev").then_some(public))?,
            file
        );
        assert_eq!(
            read::<DeactivationFile>(&text, |_| None),
            Err(FileError::UnknownKey("dev".into()))
        );
        let other = signing_key_from_seed(&[2; 32]).verifying_key();
        assert_eq!(
            read::<DeactivationFile>(&text, |_| Some(other)),
            Err(FileError::BadSignature)
        );
        assert!(
            read::<UsageReport>(&text, |_| Some(public)).is_err(),
            "a deactivation file is not a usage report"
        );
        Ok(())
    }

    proptest! {
        #[test]
        fn never_panics_on_any_input(text in ".{0,300}", raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let public = signing_key_from_seed(&[1; 32]).verifying_key();
            let _ = read_request(&text);
            let _ = read_request(&crate::armour::encode(REQUEST_LABEL, &raw));
            let _ = read::<UsageReport>(&crate::armour::encode(USAGE_LABEL, &raw), |_| Some(public));
            let _ = decode_public_key(&text);
        }
    }
}
