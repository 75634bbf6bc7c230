//! Vendor Ed25519 signing keys: creation from caller-supplied randomness, PKCS#8 storage form,
//! the SubjectPublicKeyInfo PEM anyone can verify with, and the key id derived from it.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

/// The algorithm name written into license files and listed by `signingKeys`.
pub const ALGORITHM: &str = "ed25519";

/// Why a stored key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PKCS#8 document is not an Ed25519 private key.
    #[error("not an Ed25519 PKCS#8 private key")]
    BadPrivateKey,
    /// The key could not be encoded.
    #[error("could not encode the key")]
    Encode,
}

/// Builds a signing key from 32 bytes of secret randomness supplied by the caller.
#[must_use]
pub fn signing_key_from_seed(seed: &[u8; 32]) -> SigningKey {
    SigningKey::from_bytes(seed)
}

/// The PKCS#8 DER form of a signing key (what gets encrypted at rest).
///
/// # Errors
/// [`KeyError::Encode`] if encoding fails.
pub fn private_key_der(key: &SigningKey) -> Result<Vec<u8>, KeyError> {
    key.to_pkcs8_der()
        .map(|doc| doc.as_bytes().to_vec())
        .map_err(|_| KeyError::Encode)
}

/// Reads a signing key back from PKCS#8 DER.
///
/// # Errors
/// [`KeyError::BadPrivateKey`] if the bytes are not an Ed25519 PKCS#8 key.
pub fn signing_key_from_der(der: &[u8]) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_der(der).map_err(|_| KeyError::BadPrivateKey)
}

/// The SubjectPublicKeyInfo PEM of a public key (`-----BEGIN PUBLIC KEY-----`).
///
/// # Errors
/// [`KeyError::Encode`] if encoding fails.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF).map_err(|_| KeyError::Encode)
}

/// The key id of a public key: `ed25519-` followed by the first 8 bytes of the key in hex.
/// Stable for the key's life, so a file can name the key that signed it.
#[must_use]
pub fn key_id(key: &VerifyingKey) -> String {
    format!("ed25519-{}", hex::encode(&key.as_bytes()[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::DecodePublicKey;
    use ed25519_dalek::{Signer, Verifier};

    #[test]
    fn der_and_pem_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let key = signing_key_from_seed(&[42; 32]);
        let again = signing_key_from_der(&private_key_der(&key)?)?;
        assert_eq!(key.to_bytes(), again.to_bytes());

        let pem = public_key_pem(&key.verifying_key())?;
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let public = VerifyingKey::from_public_key_pem(&pem)?;
        let sig = key.sign(b"payload");
        public.verify(b"payload", &sig)?;
        assert!(key_id(&public).starts_with("ed25519-"));
        assert_eq!(key_id(&public).len(), "ed25519-".len() + 16);
        Ok(())
    }
}
