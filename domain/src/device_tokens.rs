//! Device tokens: `ldt_<device id>.<generation>.<mac>`, where the MAC is a keyed hash of the
//! id and generation under the master secret. Verifying one needs no database read: the MAC
//! proves we issued it, and a small cache of each device's current generation (refreshed
//! every few seconds, bumped at once by release or deactivation in this process) proves it was
//! not revoked.

use std::time::Duration;

use entity::device;
use moka::sync::Cache;
use sea_orm::{DatabaseConnection, EntityTrait};
use subtle::ConstantTimeEq;

use crate::secrets::MasterSecret;
use crate::{Actor, ActorKind, Error, Result, Role};

/// Prefix of device tokens.
pub const DEVICE_TOKEN_PREFIX: &str = "ldt_";
/// `keyed_hash` purpose of device tokens.
const PURPOSE: &str = "device-token";
/// How long a cached generation is trusted before it is read again. Another API process that
/// releases a device is seen within this time.
const FRESH_FOR: Duration = Duration::from_secs(2);
/// Most devices remembered (the least recently used are dropped first).
const MAX_ENTRIES: u64 = 200_000;

#[derive(Clone)]
struct Entry {
    generation: i32,
    vendor_id: String,
    license_id: String,
}

/// The cache of device token generations, each trusted for two seconds.
pub struct DeviceTokens {
    entries: Cache<String, Entry>,
}

impl Default for DeviceTokens {
    fn default() -> Self {
        Self {
            entries: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(FRESH_FOR)
                .build(),
        }
    }
}

impl DeviceTokens {
    /// The token for a device at a generation.
    #[must_use]
    pub fn token(secrets: &MasterSecret, device_id: &str, generation: i32) -> String {
        let mac = secrets.keyed_hash(PURPOSE, &format!("{device_id}.{generation}"));
        format!("{DEVICE_TOKEN_PREFIX}{device_id}.{generation}.{mac}")
    }

    /// Remembers a device's current generation (after activation, release, deactivation).
    pub fn remember(&self, device: &device::Model) {
        let read = Entry {
            generation: device.token_generation,
            vendor_id: device.vendor_id.clone(),
            license_id: device.license_id.clone(),
        };
        // Generations only go up: a read that raced with a release never brings the old one back.
        self.entries
            .entry(device.id.clone())
            .and_upsert_with(|cached| match cached {
                Some(cached) if cached.value().generation > read.generation => cached.into_value(),
                _ => read,
            });
    }

    /// The device behind a token.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for a forged, malformed or revoked token.
    pub async fn authenticate(
        &self,
        db: &DatabaseConnection,
        secrets: &MasterSecret,
        token: &str,
        request_id: Option<String>,
    ) -> Result<Actor> {
        let invalid = || Error::Unauthenticated("the device token is invalid or was revoked: activate again".into());
        let rest = token.strip_prefix(DEVICE_TOKEN_PREFIX).ok_or_else(invalid)?;
        let mut parts = rest.split('.');
        let (Some(device_id), Some(generation), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let generation: i32 = generation.parse().map_err(|_| invalid())?;
        let expected = secrets.keyed_hash(PURPOSE, &format!("{device_id}.{generation}"));
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return Err(invalid());
        }
        let entry = match self.entries.get(device_id) {
            Some(entry) => entry,
            None => {
                let device = device::Entity::find_by_id(device_id)
                    .one(db)
                    .await?
                    .ok_or_else(invalid)?;
                self.remember(&device);
                Entry {
                    generation: device.token_generation,
                    vendor_id: device.vendor_id,
                    license_id: device.license_id,
                }
            }
        };
        if entry.generation != generation {
            return Err(invalid());
        }
        Ok(Actor {
            vendor_id: entry.vendor_id,
            role: Role::ReadOnly,
            kind: ActorKind::Device {
                device_id: device_id.to_owned(),
                license_id: entry.license_id,
            },
            label: format!("device {device_id}"),
            request_id,
        })
    }
}
