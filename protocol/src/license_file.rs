//! The license file: ASCII armour (`LICENSE FILE`) around the JSON envelope
//! `{"alg":"ed25519","kid","payload","sig"}`, where `payload` is base64url (no padding) of the
//! payload JSON and `sig` the Ed25519 signature over exactly those payload bytes. The same file
//! serves as refresh file and check-out file.

use chrono::{DateTime, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::envelope;
pub use crate::envelope::FileError;
use crate::fingerprint::Components;

/// Armour label of license files.
pub const LABEL: &str = "LICENSE FILE";
/// Version of the payload layout; readers refuse versions they do not know.
pub const FORMAT: u32 = 1;

/// The device a file is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceBinding {
    /// Device id.
    pub id: String,
    /// The fingerprint it activated with.
    pub fingerprint: String,
    /// The components it activated with (for k-of-n matching).
    pub components: Components,
}

/// A meter the license grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterGrant {
    /// Meter code.
    pub code: String,
    /// Allowed use per period; `None` = unlimited.
    pub limit: Option<i64>,
    /// `NEVER`, `DAILY`, `WEEKLY`, `MONTHLY` or `YEARLY`.
    pub reset_period: String,
    /// Use allowed beyond the limit.
    pub overage_limit: i64,
}

/// The server's acknowledgement of a device's usage ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageAck {
    /// Last acknowledged sequence number.
    pub seq: u64,
    /// Hash of that record.
    pub hash: String,
}

/// What a license file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicensePayload {
    /// Payload layout version ([`FORMAT`]).
    pub format: u32,
    /// License id.
    pub license_id: String,
    /// Last four characters of the key (never the whole key).
    pub license_key_hint: String,
    /// Vendor slug.
    pub vendor: String,
    /// Product code.
    pub product: String,
    /// Policy id.
    pub policy: String,
    /// `ACTIVE`, `SUSPENDED`, `REVOKED` or `EXPIRED` when signed.
    pub status: String,
    /// Entitlement codes.
    pub entitlements: Vec<String>,
    /// Meters granted.
    pub meters: Vec<MeterGrant>,
    /// When the license was issued.
    pub issued_at: DateTime<Utc>,
    /// When it expires; `None` = perpetual.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the client should fetch a fresh file.
    pub refresh_by: DateTime<Utc>,
    /// How long after `refresh_by` the file still works offline.
    pub grace_seconds: i64,
    /// The license version this file reflects.
    pub version: i64,
    /// The server's clock when it signed (clients never trust a clock earlier than this).
    pub server_time: DateTime<Utc>,
    /// The device it is bound to.
    pub device: DeviceBinding,
    /// k-of-n component rule; `None` = exact fingerprint.
    pub min_component_matches: Option<u32>,
    /// Heartbeat interval the device must keep when online.
    pub heartbeat_interval_seconds: Option<i64>,
    /// End of a check-out (the file is a check-out file).
    pub checked_out_until: Option<DateTime<Utc>>,
    /// Acknowledged usage ledger position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_ack: Option<UsageAck>,
}

/// Signs `payload` with `key` (known as `kid`) and returns the armoured file.
///
/// # Errors
/// [`FileError::Malformed`] if the payload cannot be serialised.
pub fn sign(payload: &LicensePayload, kid: &str, key: &SigningKey) -> Result<String, FileError> {
    envelope::seal(LABEL, payload, Some(kid), key)
}

/// Reads and verifies a license file; `key_for` maps a key id to the vendor's public key.
/// Verification is strict Ed25519 (`verify_strict`): no malleable or small-order signatures.
///
/// # Errors
/// [`FileError`] for anything that does not parse or verify.
pub fn verify(text: &str, key_for: impl Fn(&str) -> Option<VerifyingKey>) -> Result<LicensePayload, FileError> {
    let opened = envelope::open(LABEL, text)?;
    let kid = opened.kid.clone().unwrap_or_default();
    let key = key_for(&kid).ok_or(FileError::UnknownKey(kid))?;
    opened.verify(&key)?;
    let parsed: LicensePayload = opened.payload()?;
    if parsed.format != FORMAT {
        return Err(FileError::Format(parsed.format));
    }
    Ok(parsed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fingerprint::{components, fingerprint};
    use crate::signing::signing_key_from_seed;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use proptest::prelude::*;

    pub(crate) fn payload(now: DateTime<Utc>) -> LicensePayload {
        let comps = components([("mac", "aa"), ("cpu", "x"), ("disk", "d"), ("hostid", "h")]).unwrap_or_default();
        LicensePayload {
            format: FORMAT,
            license_id: "lic".into(),
            license_key_hint: "ABCD".into(),
            vendor: "default".into(),
            product: "pro".into(),
            policy: "pol".into(),
            status: "ACTIVE".into(),
            entitlements: vec!["pro".into()],
            meters: vec![],
            issued_at: now,
            expires_at: Some(now + chrono::Duration::days(7)),
            refresh_by: now + chrono::Duration::days(1),
            grace_seconds: 604_800,
            version: 1,
            server_time: now,
            device: DeviceBinding {
                id: "dev".into(),
                fingerprint: fingerprint(&comps),
                components: comps,
            },
            min_component_matches: Some(3),
            heartbeat_interval_seconds: None,
            checked_out_until: None,
            usage_ack: None,
        }
    }

    #[test]
    fn signs_and_verifies_and_catches_any_flipped_payload_byte() -> Result<(), FileError> {
        let key = signing_key_from_seed(&[5; 32]);
        let public = key.verifying_key();
        let p = payload(Utc::now());
        let file = sign(&p, "k1", &key)?;
        assert!(file.starts_with("-----BEGIN LICENSE FILE-----"));
        assert_eq!(verify(&file, |kid| (kid == "k1").then_some(public))?, p);
        assert_eq!(verify(&file, |_| None), Err(FileError::UnknownKey("k1".into())));
        let other = signing_key_from_seed(&[6; 32]).verifying_key();
        assert_eq!(verify(&file, |_| Some(other)), Err(FileError::BadSignature));

        // Flip each byte of the payload in turn: every change is caught.
        let bad = |e: &dyn std::fmt::Display| FileError::Malformed(e.to_string());
        let json = crate::armour::decode(LABEL, &file).map_err(|e| bad(&e))?;
        let envelope: serde_json::Value = serde_json::from_slice(&json).map_err(|e| bad(&e))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(envelope["payload"].as_str().unwrap_or_default())
            .map_err(|e| bad(&e))?;
        for i in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[i] ^= 0x01;
            let mut forged = envelope.clone();
            forged["payload"] = URL_SAFE_NO_PAD.encode(&altered).into();
            let text = crate::armour::encode(LABEL, &serde_json::to_vec(&forged).map_err(|e| bad(&e))?);
            assert!(verify(&text, |_| Some(public)).is_err(), "byte {i}");
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn never_panics_on_any_input(text in ".{0,300}", raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let public = signing_key_from_seed(&[5; 32]).verifying_key();
            let _ = verify(&text, |_| Some(public));
            let _ = verify(&crate::armour::encode(LABEL, &raw), |_| Some(public));
        }
    }
}
