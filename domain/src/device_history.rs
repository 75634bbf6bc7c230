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

/// When a device that is being marked dead died: its heartbeat deadline (the sweep or the dead
/// rule only notices later), never after `now`.
fn died_at(device: &device::Model, now: DateTime<Utc>) -> DateTime<Utc> {
    device
        .heartbeat_deadline_at
        .map_or(now, |deadline| Ord::min(deadline, now))
}

/// Records that every device of `devices` died (at its heartbeat deadline), in one statement.
pub(crate) async fn record_deaths(
    db: &impl ConnectionTrait,
    devices: &[device::Model],
    now: DateTime<Utc>,
) -> Result<()> {
    if devices.is_empty() {
        return Ok(());
    }
    device_status_change::Entity::insert_many(devices.iter().map(|d| change(d, DeviceStatus::Dead, died_at(d, now))))
        .exec_without_returning(db)
        .await?;
    Ok(())
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
        // The same hash a fingerprint is: SHA-256 of the sorted `name=value` lines.
        components_hash: Set(protocol::fingerprint::fingerprint(presented)),
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
