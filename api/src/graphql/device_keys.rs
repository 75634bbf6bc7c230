//! Device-key proofs: `deviceKeyChallenge` hands out a short-lived nonce, and a device
//! re-activating under a policy with `requireDeviceKeyProof` signs it with its old device key
//! (`ActivateDeviceInput.keyProof`). Nonces are stateless (a MAC under the master secret), so
//! asking for them stores nothing.

use async_graphql::{Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use domain::newtypes::Fingerprint;

use crate::graphql::context::ContextExt;
use crate::graphql::error::ApiResult;

/// Proof that the caller holds the device key a device was activated with.
#[derive(InputObject)]
pub struct KeyProofInput {
    /// The nonce `deviceKeyChallenge` returned (valid for 5 minutes and one re-activation).
    pub nonce: String,
    /// Base64 of the Ed25519 signature, by the device key the device was activated with, over
    /// the UTF-8 text `licensing-device-key-proof\n<nonce>\n<devicePublicKey>` (the public
    /// key sent in this activation, empty when none is sent).
    pub signature: String,
}

impl From<KeyProofInput> for domain::devices::KeyProof {
    fn from(input: KeyProofInput) -> Self {
        Self {
            nonce: input.nonce,
            signature: input.signature,
        }
    }
}

/// A nonce to sign with the old device key.
#[derive(SimpleObject)]
pub struct DeviceKeyChallenge {
    /// The nonce: sign it as `KeyProofInput.signature` says.
    pub nonce: String,
    /// Until when it may be used.
    pub expires_at: DateTime<Utc>,
}

/// Device-key mutations.
#[derive(Default)]
pub struct DeviceKeyMutation;

#[Object]
impl DeviceKeyMutation {
    /// A nonce for proving a device's key before re-activating it (no token needed). Any
    /// key and fingerprint get one; only a nonce for an activated device can verify. Counts
    /// against the key's activation budget.
    async fn device_key_challenge(
        &self,
        ctx: &Context<'_>,
        license_key: String,
        fingerprint: String,
    ) -> ApiResult<DeviceKeyChallenge> {
        crate::graphql::devices::activation_budget(ctx, &license_key)?;
        let fingerprint = Fingerprint::try_from(fingerprint.as_str())?;
        let challenge = ctx
            .domain()
            .device_key_challenge(&license_key, fingerprint.as_str())
            .await?;
        Ok(DeviceKeyChallenge {
            nonce: challenge.nonce,
            expires_at: challenge.expires_at,
        })
    }
}
