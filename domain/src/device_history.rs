//! What the anomaly detectors need to know about devices beyond their current row, written in
//! the transaction of the change it describes:
//!
//! - `device_status_changes`: every move of a device into ACTIVE (activation, re-activation,
//!   revival by a heartbeat), DEAD (the sweep or the dead rule) or RELEASED (staff release,
//!   deactivation online or by file). USAGE_WHILE_DEAD and ACTIVATION_BURST read it.
//! - `fingerprint_observations`: component sets a device presented in a validation that differ
//!   from the set it activated with, one row per distinct set (SHA-256 of the sorted
//!   `name=value` pairs). FINGERPRINT_DRIFT reads it. A call presenting the activated set
//!   writes nothing.

use chrono::{DateTime, Utc};
use entity::enums::DeviceStatus;
use entity::{device, device_status_change, fingerprint_observation};
use protocol::fingerprint::Components;
use sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use sha2::{Digest as _, Sha256};

use crate::{Result, new_id};

fn change(device: &device::Model, status: DeviceStatus, at: DateTime<Utc>) -> device_status_change::ActiveModel {
    device_status_change::ActiveModel {
        id: Set(new_id()),
        vendor_id: Set(device.vendor_id.clone()),
        license_id: Set(device.license_id.clone()),
        device_id: Set(device.id.clone()),
        status: Set(status),
        at: Set(at),
    }
}

/// Records that `device` entered `status` at `at`.
pub(crate) async fn record_status(
    db: &impl ConnectionTrait,
    device: &device::Model,
    status: DeviceStatus,
    at: DateTime<Utc>,
) -> Result<()> {
    device_status_change::Entity::insert(change(device, status, at))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Records that every device of `devices` entered `status` at `at`, in one statement.
pub(crate) async fn record_statuses(
    db: &impl ConnectionTrait,
    devices: &[device::Model],
    status: DeviceStatus,
    at: DateTime<Utc>,
) -> Result<()> {
    if devices.is_empty() {
        return Ok(());
    }
    device_status_change::Entity::insert_many(devices.iter().map(|d| change(d, status, at)))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// SHA-256 (hex) of the components as sorted `name=value` lines.
#[must_use]
pub fn components_hash(components: &Components) -> String {
    let mut hasher = Sha256::new();
    // A BTreeMap iterates in name order: the same set always hashes the same.
    for (name, value) in components {
        hasher.update(name.as_bytes());
        hasher.update(b"=");
        hasher.update(value.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// Notes the components a call presented for `device` when they differ from the set it
/// activated with (first seen, last seen, how many times); returns whether they differed.
pub(crate) async fn observe_components(
    db: &impl ConnectionTrait,
    device: &device::Model,
    presented: &Components,
    now: DateTime<Utc>,
) -> Result<bool> {
    if *presented == device.components.0 {
        return Ok(false);
    }
    fingerprint_observation::Entity::insert(fingerprint_observation::ActiveModel {
        device_id: Set(device.id.clone()),
        components_hash: Set(components_hash(presented)),
        vendor_id: Set(device.vendor_id.clone()),
        license_id: Set(device.license_id.clone()),
        first_seen_at: Set(now),
        last_seen_at: Set(now),
        times: Set(1),
    })
    .on_conflict(
        OnConflict::columns([
            fingerprint_observation::Column::DeviceId,
            fingerprint_observation::Column::ComponentsHash,
        ])
        .value(fingerprint_observation::Column::LastSeenAt, Expr::value(now))
        .value(
            fingerprint_observation::Column::Times,
            Expr::col((fingerprint_observation::Entity, fingerprint_observation::Column::Times)).add(1),
        )
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> Components {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_hash_depends_on_the_set_not_the_order_given() {
        let a = set(&[("mac", "aa"), ("cpu", "x")]);
        let b = set(&[("cpu", "x"), ("mac", "aa")]);
        assert_eq!(components_hash(&a), components_hash(&b));
        assert_ne!(
            components_hash(&a),
            components_hash(&set(&[("cpu", "x"), ("mac", "ab")]))
        );
        assert_eq!(components_hash(&a).len(), 64);
    }
}
