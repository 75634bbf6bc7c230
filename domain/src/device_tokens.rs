//! Device tokens: `ldt_<device id>.<generation>.<mac>`, where the MAC is a keyed hash of the
//! id and generation under the master secret. Verifying one needs no database read: the MAC
//! proves we issued it, and a small cache of each device's current generation (refreshed
//! every few seconds, bumped at once by release or deactivation in this process) proves it was
//! not revoked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use entity::device;
use sea_orm::{DatabaseConnection, EntityTrait};

use crate::secrets::MasterSecret;
use crate::{Actor, ActorKind, Error, Result, Role};

/// Prefix of device tokens.
pub const DEVICE_TOKEN_PREFIX: &str = "ldt_";
/// `keyed_hash` purpose of device tokens.
const PURPOSE: &str = "device-token";
/// How long a cached generation is trusted before it is read again. Another API process that
/// releases a device is seen within this time.
const FRESH_FOR: Duration = Duration::from_secs(2);
/// Most devices remembered; beyond it the cache starts over.
const MAX_ENTRIES: usize = 200_000;

#[derive(Clone)]
struct Entry {
    generation: i32,
    vendor_id: String,
    license_id: String,
    read_at: Instant,
}

/// The cache of device token generations.
#[derive(Default)]
pub struct DeviceTokens {
    entries: Mutex<HashMap<String, Entry>>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        // Generations only go up: a read that raced with a release never brings the old one back.
        if entries
            .get(&device.id)
            .is_some_and(|e| e.generation > device.token_generation)
        {
            return;
        }
        entries.insert(
            device.id.clone(),
            Entry {
                generation: device.token_generation,
                vendor_id: device.vendor_id.clone(),
                license_id: device.license_id.clone(),
                read_at: Instant::now(),
            },
        );
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
        if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
            return Err(invalid());
        }
        let cached = {
            let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            entries
                .get(device_id)
                .filter(|e| e.read_at.elapsed() < FRESH_FOR)
                .cloned()
        };
        let entry = match cached {
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
                    read_at: Instant::now(),
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
