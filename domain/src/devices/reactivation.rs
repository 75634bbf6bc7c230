//! Re-activation: the same fingerprint activating again on a license while its device row is
//! not released (a reinstall, or someone who learnt the license key and a sibling's
//! fingerprint taking it over).
//!
//! - Every re-activation bumps the device's token generation: the old token is refused at
//!   once in this process and within the token cache's freshness (two seconds) in the others.
//! - A new device public key starts a new usage ledger (the acknowledged position is reset in
//!   `refresh_device`): the new key's records never continue or fork the old chain.
//! - A second re-activation within [`REACTIVATION_WINDOW_HOURS`] opens a DEVICE_REACTIVATION
//!   anomaly (and its ANOMALY alert) for staff.
//! - Under a policy with `require_device_key_proof`, re-activating a live device that has a
//!   key needs a [`KeyProof`]: the stored key's signature over a nonce from
//!   [`Domain::device_key_challenge`] (and the key now sent). Without it the activation is
//!   refused, and staff can release the device to allow a fresh one.
//!
//! Nonces are stateless, so nothing is stored per challenge: `<expiry>.<salt>.<mac>`, the MAC
//! (under the master secret) binding the license, the fingerprint, the device's token
//! generation and the expiry. A re-activation bumps the generation, so a nonce is good for
//! one re-activation at most, and for [`CHALLENGE_TTL_SECONDS`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::Signature;
use entity::device;
use entity::enums::{AnomalyKind, DeviceStatus};
use sea_orm::{ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::anomalies::{self, NewAnomaly};
use crate::licenses::find_by_key;
use crate::{Domain, Error, Result, new_id};

/// How long a `deviceKeyChallenge` nonce may be used.
pub const CHALLENGE_TTL_SECONDS: i64 = 300;
/// Two re-activations of one device this close together are flagged for staff.
pub const REACTIVATION_WINDOW_HOURS: i64 = 24;
/// `keyed_hash` purpose of challenge nonces.
const PURPOSE: &str = "device-key-challenge";

/// Proof that the caller holds a device's stored key.
#[derive(Debug, Clone)]
pub struct KeyProof {
    /// The nonce `deviceKeyChallenge` returned.
    pub nonce: String,
    /// Base64 of the Ed25519 signature by the stored key over [`key_proof_message`].
    pub signature: String,
}

/// A challenge to sign.
#[derive(Debug, Clone)]
pub struct KeyChallenge {
    /// The nonce.
    pub nonce: String,
    /// Until when it may be used.
    pub expires_at: DateTime<Utc>,
}

/// The exact text a device signs with its old key to prove it: the nonce and the public key
/// it activates with now (empty when it sends none), so a proof cannot be replayed for
/// another key.
#[must_use]
pub fn key_proof_message(nonce: &str, new_public_key: Option<&str>) -> String {
    format!("licensing-device-key-proof\n{nonce}\n{}", new_public_key.unwrap_or(""))
}

fn nonce_mac(
    domain: &Domain,
    license_id: &str,
    fingerprint: &str,
    generation: i32,
    expires: i64,
    salt: &str,
) -> String {
    domain.secrets.keyed_hash(
        PURPOSE,
        &format!("{license_id}\n{fingerprint}\n{generation}\n{expires}\n{salt}"),
    )
}

impl Domain {
    /// A nonce for proving a device key before re-activating (anonymous, like
    /// `activateDevice`). An unknown key or fingerprint gets a nonce too (one that never
    /// verifies), so the answer tells nothing about which keys exist.
    ///
    /// # Errors
    /// Database errors.
    pub async fn device_key_challenge(&self, license_key: &str, fingerprint: &str) -> Result<KeyChallenge> {
        let now = self.clock.now();
        let (license_id, generation) = match find_by_key(&self.secrets, &self.db, license_key, false).await? {
            Some((license, _)) => {
                let generation = device::Entity::find()
                    .filter(device::Column::LicenseId.eq(&license.id))
                    .filter(device::Column::Fingerprint.eq(fingerprint))
                    .one(&self.db)
                    .await?
                    .map_or(0, |d| d.token_generation);
                (license.id, generation)
            }
            None => (String::new(), 0),
        };
        let expires_at = now + Duration::seconds(CHALLENGE_TTL_SECONDS);
        let expires = expires_at.timestamp();
        let salt = new_id();
        let mac = nonce_mac(self, &license_id, fingerprint, generation, expires, &salt);
        Ok(KeyChallenge {
            nonce: format!("{expires}.{salt}.{mac}"),
            expires_at,
        })
    }
}

/// Whether re-activating `current` needs a key proof: its policy asks for one and the device is
/// live. (Sending the same public key again proves nothing: it is public.) A live device with no
/// stored key cannot prove one, so under such a policy only staff (releasing it) let it
/// activate again: otherwise the first caller with the key and the fingerprint would bind
/// their own key to it.
pub(super) fn needs_proof(require_device_key_proof: bool, current: &device::Model) -> bool {
    require_device_key_proof && current.status != DeviceStatus::Released
}

/// What a re-activation without a valid proof is told.
fn proof_refused(why: &str) -> Error {
    Error::Forbidden(format!(
        "this device is already activated and its policy requires proof of its device key ({why}): sign the \
         deviceKeyChallenge nonce with the old device key and send it as keyProof, or ask the vendor's staff \
         to release the device, after which it activates afresh"
    ))
}

/// Checks `proof` against `current`'s stored key; `new_key` is the key sent now.
///
/// # Errors
/// [`Error::Forbidden`] when the proof is missing, expired, not for this device and
/// generation, or not signed by the stored key.
pub(super) fn check_proof(
    domain: &Domain,
    current: &device::Model,
    proof: Option<&KeyProof>,
    new_key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let proof = proof.ok_or_else(|| proof_refused("no keyProof was sent"))?;
    let mut parts = proof.nonce.split('.');
    let (Some(expires), Some(salt), Some(mac), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(proof_refused("the nonce is malformed"));
    };
    let expires: i64 = expires.parse().map_err(|_| proof_refused("the nonce is malformed"))?;
    if expires < now.timestamp() {
        return Err(proof_refused("the nonce expired: ask deviceKeyChallenge for a new one"));
    }
    let expected = nonce_mac(
        domain,
        &current.license_id,
        &current.fingerprint,
        current.token_generation,
        expires,
        salt,
    );
    if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
        return Err(proof_refused("the nonce is not this device's, or was used already"));
    }
    let stored = current
        .public_key
        .as_deref()
        .ok_or_else(|| proof_refused("the device was activated without a device key, so there is none to prove"))?;
    let key =
        protocol::offline::decode_public_key(stored).map_err(|e| Error::Internal(format!("stored device key: {e}")))?;
    let raw = STANDARD
        .decode(proof.signature.trim())
        .map_err(|_| proof_refused("the signature is not base64"))?;
    let raw: [u8; 64] = raw
        .try_into()
        .map_err(|_| proof_refused("the signature is not 64 bytes"))?;
    key.verify_strict(
        key_proof_message(&proof.nonce, new_key).as_bytes(),
        &Signature::from_bytes(&raw),
    )
    .map_err(|_| proof_refused("the signature is not by the device's key"))
}

/// Flags the second re-activation of `device` within the window (the device as it was before
/// this one; `now` is this one's time).
pub(super) async fn flag_repeated(
    tx: &DatabaseTransaction,
    before: &device::Model,
    key_changed: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(previous) = before.reactivated_at else {
        return Ok(());
    };
    if now - previous > Duration::hours(REACTIVATION_WINDOW_HOURS) {
        return Ok(());
    }
    let name = before
        .name
        .as_deref()
        .or(before.hostname.as_deref())
        .unwrap_or(before.fingerprint.as_str());
    let anomaly = NewAnomaly {
        vendor_id: &before.vendor_id,
        license_id: Some(&before.license_id),
        device_id: Some(&before.id),
        meter: None,
        kind: AnomalyKind::DeviceReactivation,
        explanation: format!(
            "Device {name} was activated again at {now} while already active, the second time within \
             {REACTIVATION_WINDOW_HOURS} hours (previously at {previous}): a reinstall loop, or someone else \
             activating its fingerprint with the license key. Each re-activation revoked the previous device \
             token. Check with the customer; release the device if it is not theirs."
        ),
        evidence: json!({
            "fingerprint": before.fingerprint,
            "previous_reactivation_at": previous,
            "reactivated_at": now,
            "device_key_changed": key_changed,
        }),
        dedupe_key: format!("DEVICE_REACTIVATION:{}", before.id),
    };
    anomalies::flag(tx, anomaly, now).await?;
    Ok(())
}
