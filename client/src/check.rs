//! The offline check of a license file, with no IO: the verdict ([`Status`], [`StatusCode`]),
//! the vendor's keys it verifies with ([`vendor_keys`]), and [`check()`] itself (signature,
//! clock, then the rules of [`validation::evaluate`]).

use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::VerifyingKey;
use protocol::fingerprint::Components;
use protocol::license_file::{self, LicensePayload};
use protocol::validation::{self, ValidationCode};
use serde::Serialize;

use crate::ClientError;

/// How far the clock may read earlier than a time already seen before it counts as moved
/// back (clock corrections, a server a little ahead).
pub const CLOCK_TOLERANCE_SECONDS: i64 = 300;

/// The outcome of an offline check, stable as JSON (`status --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatusCode {
    /// Valid on this machine now.
    Valid,
    /// No license is installed (never activated, or deactivated).
    NotActivated,
    /// The installed file does not verify with the vendor's key.
    InvalidFile,
    /// The clock reads earlier than a time this installation has already seen.
    ClockTamper,
    /// Past the license's expiry.
    Expired,
    /// Suspended by the vendor.
    Suspended,
    /// Revoked by the vendor.
    Revoked,
    /// Not the machine the file is bound to.
    FingerprintMismatch,
    /// A required entitlement is not granted.
    EntitlementMissing,
    /// Not refreshed in time and the grace period is over, or the check-out ended.
    HeartbeatDead,
}

impl From<ValidationCode> for StatusCode {
    fn from(code: ValidationCode) -> Self {
        match code {
            ValidationCode::Valid => Self::Valid,
            ValidationCode::NotFound | ValidationCode::NotActivated => Self::NotActivated,
            ValidationCode::Expired => Self::Expired,
            ValidationCode::Suspended => Self::Suspended,
            ValidationCode::Revoked => Self::Revoked,
            ValidationCode::FingerprintMismatch => Self::FingerprintMismatch,
            ValidationCode::EntitlementMissing => Self::EntitlementMissing,
            ValidationCode::HeartbeatDead => Self::HeartbeatDead,
        }
    }
}

/// What the installed license says, and whether it is valid here and now.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Whether the software may run.
    pub valid: bool,
    /// Why (or why not).
    pub code: StatusCode,
    /// A sentence a person can act on.
    pub detail: String,
    /// The license.
    pub license_id: Option<String>,
    /// This device, as the server knows it.
    pub device_id: Option<String>,
    /// The product code.
    pub product: Option<String>,
    /// Granted entitlements.
    pub entitlements: Vec<String>,
    /// License expiry (null = perpetual).
    pub expires_at: Option<DateTime<Utc>>,
    /// When the file should be refreshed.
    pub refresh_by: Option<DateTime<Utc>>,
    /// Until when it keeps working offline: `refresh_by` plus grace, or the end of the check-out.
    pub works_offline_until: Option<DateTime<Utc>>,
    /// Past `refresh_by` but inside the grace period.
    pub in_grace: bool,
    /// End of a check-out.
    pub checked_out_until: Option<DateTime<Utc>>,
    /// The license version the file reflects.
    pub version: Option<i64>,
}

impl Status {
    /// The status when no trusted, current file is installed.
    pub(crate) fn without_file(code: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            valid: false,
            code,
            detail: detail.into(),
            license_id: None,
            device_id: None,
            product: None,
            entitlements: Vec::new(),
            expires_at: None,
            refresh_by: None,
            works_offline_until: None,
            in_grace: false,
            checked_out_until: None,
            version: None,
        }
    }

    /// The status of `payload` with the verdict `code` (and `detail`) at `now`.
    pub(crate) fn of(payload: &LicensePayload, code: StatusCode, detail: String, now: DateTime<Utc>) -> Self {
        let works_until = works_offline_until(payload);
        Self {
            valid: code == StatusCode::Valid,
            code,
            detail,
            license_id: Some(payload.license_id.clone()),
            device_id: Some(payload.device.id.clone()),
            product: Some(payload.product.clone()),
            entitlements: payload.entitlements.clone(),
            expires_at: payload.expires_at,
            refresh_by: Some(payload.refresh_by),
            works_offline_until: Some(works_until),
            in_grace: payload.checked_out_until.is_none() && payload.refresh_by <= now && now < works_until,
            checked_out_until: payload.checked_out_until,
            version: Some(payload.version),
        }
    }
}

/// `refresh_by` plus grace, or the end of the check-out.
fn works_offline_until(payload: &LicensePayload) -> DateTime<Utc> {
    payload.checked_out_until.unwrap_or_else(|| {
        Duration::try_seconds(payload.grace_seconds)
            .and_then(|grace| payload.refresh_by.checked_add_signed(grace))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    })
}

/// Reads every Ed25519 public key (SubjectPublicKeyInfo PEM blocks, as `signingKeys` lists
/// them) in `pem`: ship the vendor's current and previous keys to accept files from both.
///
/// # Errors
/// [`ClientError::Refused`] when a block is not an Ed25519 public key, or there is none.
pub fn vendor_keys(pem: &str) -> Result<Vec<VerifyingKey>, ClientError> {
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    const END: &str = "-----END PUBLIC KEY-----";
    let mut keys = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN PUBLIC KEY-----") {
        let Some(end) = rest[start..].find(END).map(|i| start + i + END.len()) else {
            break;
        };
        let key = VerifyingKey::from_public_key_pem(&rest[start..end])
            .map_err(|e| ClientError::Refused(format!("the vendor public key is not an Ed25519 key: {e}")))?;
        keys.push(key);
        rest = &rest[end..];
    }
    if keys.is_empty() {
        return Err(ClientError::Refused(
            "no PUBLIC KEY block in the vendor key file (use signingKeys { publicKeyPem })".into(),
        ));
    }
    Ok(keys)
}

/// Verifies a license file with whichever of `keys` signed it (by key id).
pub(crate) fn verify_with(text: &str, keys: &[VerifyingKey]) -> Result<LicensePayload, protocol::envelope::FileError> {
    license_file::verify(text, |kid| {
        keys.iter().copied().find(|k| protocol::signing::key_id(k) == kid)
    })
}

/// The offline check of a license file, with no IO: signature with one of the vendor's
/// keys, the clock against `newest_seen` (and the file's `server_time`), then the rules of
/// [`validation::evaluate`] for this machine's `components` and the `entitlements` needed.
#[must_use]
pub fn check(
    text: &str,
    keys: &[VerifyingKey],
    components: &Components,
    entitlements: &[String],
    now: DateTime<Utc>,
    newest_seen: Option<DateTime<Utc>>,
) -> Status {
    let payload = match verify_with(text, keys) {
        Ok(payload) => payload,
        Err(e) => {
            return Status::without_file(
                StatusCode::InvalidFile,
                format!("the installed license file cannot be trusted ({e}): install a fresh one from the vendor"),
            );
        }
    };
    let seen = newest_seen.map_or(payload.server_time, |seen| seen.max(payload.server_time));
    if now + Duration::seconds(CLOCK_TOLERANCE_SECONDS) < seen {
        let detail = format!(
            "the clock reads {}, earlier than {} which this installation has already seen: set the clock right",
            now.to_rfc3339(),
            seen.to_rfc3339()
        );
        return Status::of(&payload, StatusCode::ClockTamper, detail, now);
    }
    let verdict = validation::evaluate(&payload, now, components, entitlements);
    Status::of(&payload, verdict.code.into(), verdict.detail, now)
}
