//! The master secret and what is derived from it: keyed hashes for token and license-key
//! lookups, authenticated encryption for secrets at rest, and the session-signing key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;
use std::sync::Arc;

use crate::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// Smallest accepted master secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Keys derived from the master secret (`LICENSING_SECRET`). Cheap to clone.
#[derive(Clone)]
pub struct MasterSecret {
    lookup_key: Arc<SecretBox<[u8; 32]>>,
    encryption_key: Arc<SecretBox<[u8; 32]>>,
    session_key: Arc<SecretBox<[u8; 32]>>,
}

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

fn derive(secret: &[u8], purpose: &str) -> Result<SecretBox<[u8; 32]>> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).map_err(|e| Error::Internal(e.to_string()))?;
    mac.update(purpose.as_bytes());
    Ok(SecretBox::new(Box::new(mac.finalize().into_bytes().into())))
}

impl MasterSecret {
    /// Derives the working keys from the master secret.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the secret is shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: &[u8]) -> Result<Self> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(Error::InvalidInput(format!(
                "the master secret must be at least {MIN_SECRET_LEN} bytes"
            )));
        }
        Ok(Self {
            lookup_key: Arc::new(derive(secret, "licensing/lookup/v1")?),
            encryption_key: Arc::new(derive(secret, "licensing/encryption/v1")?),
            session_key: Arc::new(derive(secret, "licensing/session-jwt/v1")?),
        })
    }

    /// HMAC-SHA256 of `value` under the lookup key, in hex. `purpose` keeps the hashes of
    /// different kinds of secret apart.
    #[must_use]
    pub fn keyed_hash(&self, purpose: &str, value: &str) -> String {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(self.lookup_key.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Encrypts `plaintext` (XChaCha20-Poly1305, random nonce) bound to `context`;
    /// returns base64 of nonce and ciphertext.
    ///
    /// # Errors
    /// [`Error::Internal`] if encryption fails.
    pub fn encrypt(&self, context: &str, plaintext: &[u8]) -> Result<String> {
        let cipher = XChaCha20Poly1305::new(self.encryption_key.expose_secret().into());
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| Error::Internal("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(STANDARD.encode(out))
    }

    /// Reverses [`Self::encrypt`] for the same `context`.
    ///
    /// # Errors
    /// [`Error::Internal`] when the text was not produced by this secret and context.
    pub fn decrypt(&self, context: &str, encoded: &str) -> Result<Vec<u8>> {
        let raw = STANDARD
            .decode(encoded)
            .map_err(|_| Error::Internal("stored secret is not base64".into()))?;
        if raw.len() < 24 {
            return Err(Error::Internal("stored secret is truncated".into()));
        }
        let (nonce, ciphertext) = raw.split_at(24);
        let cipher = XChaCha20Poly1305::new(self.encryption_key.expose_secret().into());
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| Error::Internal("stored secret does not decrypt with this master secret".into()))
    }

    /// The key that signs staff session JWTs (HS256).
    #[must_use]
    pub fn session_signing_key(&self) -> &[u8; 32] {
        self.session_key.expose_secret()
    }
}

/// `n` bytes from the operating system's CSPRNG.
#[must_use]
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_round_trips_and_binds_context() -> Result<()> {
        let secret = MasterSecret::new(&[9u8; 32])?;
        let sealed = secret.encrypt("license-key", b"ABCDE")?;
        assert_eq!(secret.decrypt("license-key", &sealed)?, b"ABCDE");
        assert!(secret.decrypt("signing-key", &sealed).is_err());
        let other = MasterSecret::new(&[8u8; 32])?;
        assert!(other.decrypt("license-key", &sealed).is_err());
        Ok(())
    }

    #[test]
    fn keyed_hashes_depend_on_purpose_and_secret() -> Result<()> {
        let a = MasterSecret::new(&[1u8; 32])?;
        let b = MasterSecret::new(&[2u8; 32])?;
        assert_ne!(a.keyed_hash("api-token", "x"), a.keyed_hash("license-key", "x"));
        assert_ne!(a.keyed_hash("api-token", "x"), b.keyed_hash("api-token", "x"));
        assert_eq!(a.keyed_hash("api-token", "x").len(), 64);
        assert!(MasterSecret::new(b"short").is_err());
        Ok(())
    }
}
