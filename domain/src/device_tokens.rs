//! Device tokens: `ldt_<device id>.<generation>.<mac>`, where the MAC is a keyed hash of the
//! id and generation under the master secret. Verifying one needs no database read: the MAC
//! proves we issued it, and the device's current generation, from the hot path's
//! [`ReadModel`](crate::devices::ReadModel) (forgotten at once by release, deactivation and
//! re-activation in this process, and as that model says for other processes), proves it was
//! not revoked.

use subtle::ConstantTimeEq;

use crate::secrets::MasterSecret;
use crate::{Actor, ActorKind, Domain, Error, Result, Role};

/// Prefix of device tokens.
pub const DEVICE_TOKEN_PREFIX: &str = "ldt_";
/// `keyed_hash` purpose of device tokens.
const PURPOSE: &str = "device-token";

/// Device tokens: how they are made.
pub struct DeviceTokens;

impl DeviceTokens {
    /// The token for a device at a generation.
    #[must_use]
    pub fn token(secrets: &MasterSecret, device_id: &str, generation: i32) -> String {
        let mac = secrets.keyed_hash(PURPOSE, &format!("{device_id}.{generation}"));
        format!("{DEVICE_TOKEN_PREFIX}{device_id}.{generation}.{mac}")
    }
}

impl Domain {
    /// The device behind a device token.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for a forged, malformed or revoked token.
    pub async fn authenticate_device_token(&self, token: &str, request_id: Option<String>) -> Result<Actor> {
        let invalid = || Error::Unauthenticated("the device token is invalid or was revoked: activate again".into());
        let rest = token.strip_prefix(DEVICE_TOKEN_PREFIX).ok_or_else(invalid)?;
        let mut parts = rest.split('.');
        let (Some(device_id), Some(generation), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let generation: i32 = generation.parse().map_err(|_| invalid())?;
        let expected = self.secrets.keyed_hash(PURPOSE, &format!("{device_id}.{generation}"));
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return Err(invalid());
        }
        let current = self
            .read_model
            .token_generation(&self.db, &self.writer, device_id)
            .await?
            .ok_or_else(invalid)?;
        if current.generation != generation {
            return Err(invalid());
        }
        Ok(Actor {
            vendor_id: current.vendor_id.clone(),
            role: Role::ReadOnly,
            kind: ActorKind::Device {
                device_id: device_id.to_owned(),
                license_id: current.license_id.clone(),
            },
            label: format!("device {device_id}"),
            request_id,
        })
    }
}
