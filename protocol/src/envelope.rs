//! The signed envelope every licensing file carries inside its armour:
//! `{"alg":"ed25519","kid"?,"payload","sig"}`, where `payload` is base64url (no padding) of the
//! payload JSON and `sig` the Ed25519 signature over exactly those bytes. License files name
//! the vendor key in `kid`; files a device writes have no `kid` (the device key is known from
//! the activation).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::armour;
use crate::signing::ALGORITHM;

/// Why a file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    /// Not armoured, not base64, or not the expected JSON.
    #[error("not a valid file: {0}")]
    Malformed(String),
    /// Signed with an algorithm other than Ed25519.
    #[error("unsupported signature algorithm {0:?}")]
    Algorithm(String),
    /// Signed by a key this verifier does not know.
    #[error("signed by an unknown key {0:?}")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("the signature does not verify: the file was altered or signed by someone else")]
    BadSignature,
    /// A payload layout this reader does not know.
    #[error("file format {0} is not supported")]
    Format(u32),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    payload: String,
    sig: String,
}

/// Serialises `payload`, signs it with `key` and armours it under `label`.
///
/// # Errors
/// [`FileError::Malformed`] if the payload cannot be serialised.
pub fn seal(label: &str, payload: &impl Serialize, kid: Option<&str>, key: &SigningKey) -> Result<String, FileError> {
    let bytes = serde_json::to_vec(payload).map_err(|e| FileError::Malformed(e.to_string()))?;
    let envelope = Envelope {
        alg: ALGORITHM.into(),
        kid: kid.map(str::to_owned),
        sig: URL_SAFE_NO_PAD.encode(key.sign(&bytes).to_bytes()),
        payload: URL_SAFE_NO_PAD.encode(&bytes),
    };
    let json = serde_json::to_vec(&envelope).map_err(|e| FileError::Malformed(e.to_string()))?;
    Ok(armour::encode(label, &json))
}

/// A file unwrapped but not yet verified: read the payload to learn which key should have
/// signed it, then [`Opened::verify`].
#[derive(Debug, Clone)]
pub struct Opened {
    /// The key id the file names (license files).
    pub kid: Option<String>,
    payload: Vec<u8>,
    sig: Signature,
}

/// Unwraps the armour and the envelope.
///
/// # Errors
/// [`FileError`] for bad armour, JSON, algorithm or signature encoding.
pub fn open(label: &str, text: &str) -> Result<Opened, FileError> {
    let json = armour::decode(label, text).map_err(|e| FileError::Malformed(e.to_string()))?;
    let envelope: Envelope = serde_json::from_slice(&json).map_err(|e| FileError::Malformed(e.to_string()))?;
    if envelope.alg != ALGORITHM {
        return Err(FileError::Algorithm(envelope.alg));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(envelope.payload.as_bytes())
        .map_err(|_| FileError::Malformed("payload is not base64url".into()))?;
    let sig = URL_SAFE_NO_PAD
        .decode(envelope.sig.as_bytes())
        .ok()
        .and_then(|raw| Signature::from_slice(&raw).ok())
        .ok_or(FileError::BadSignature)?;
    Ok(Opened {
        kid: envelope.kid,
        payload,
        sig,
    })
}

impl Opened {
    /// The payload, parsed but not yet trusted.
    ///
    /// # Errors
    /// [`FileError::Malformed`] when it is not the expected JSON.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, FileError> {
        serde_json::from_slice(&self.payload).map_err(|e| FileError::Malformed(e.to_string()))
    }

    /// Checks the signature with `key` (strict Ed25519: no malleable or small-order signatures).
    ///
    /// # Errors
    /// [`FileError::BadSignature`].
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), FileError> {
        key.verify_strict(&self.payload, &self.sig)
            .map_err(|_| FileError::BadSignature)
    }
}
