//! Devices: the shipped software's side of a license. One concern per file:
//!
//! - `activation.rs` holds `activateDevice` (online, authenticated by the key) and the offline
//!   portal (`generateOfflineLicense`, staff upload a request file): two entry points over the
//!   same named steps;
//! - `validation.rs` holds `validateLicense`;
//! - `device_calls.rs` holds what a device does with its token: heartbeat, fetch its file,
//!   check out and in, deactivate;
//! - `staff.rs` holds what staff do to devices: list, release, export a refresh file;
//! - `seats.rs` holds the seat cap and the dead rule every path above shares;
//! - `reactivation.rs` holds what re-activating a live fingerprint does (token revoked, the
//!   DEVICE_REACTIVATION anomaly, the key proof a policy may require);
//! - `prune.rs` holds the cap on the released device rows a license keeps;
//! - `read_model.rs` holds the in-memory views of licenses that validation and heartbeats
//!   read, and `heartbeat_writes.rs` the batched writes of heartbeats.
//!
//! Seats: `licenses.seats_used` counts the devices with `holds_seat`. A seat is claimed by one
//! conditional `UPDATE ... WHERE seats_used < max_activations` inside a transaction that holds
//! the license row (`FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), with a unique
//! index on (license, fingerprint): never check-then-insert.
//!
//! Heartbeats: a device of a policy with a heartbeat interval is due `interval` after it was
//! last seen and dead one more `interval` later (`heartbeat_deadline_at`). A device past its
//! deadline is treated as dead by validation, heartbeat and activation at once, before any
//! sweep: its seat is released (`RELEASE_SEAT`) or kept (`KEEP_SEAT`, and a later heartbeat
//! revives it), and floating licenses reclaim such seats for new devices.
//!
//! Lock order: every path that changes a seat takes the license row first, then devices.

mod activation;
mod device_calls;
pub(crate) mod heartbeat_writes;
mod prune;
mod reactivation;
pub mod read_model;
mod seats;
mod staff;
mod validation;

pub use prune::{MIN_RELEASED_KEPT, released_kept};
pub use reactivation::{CHALLENGE_TTL_SECONDS, KeyChallenge, KeyProof, REACTIVATION_WINDOW_HOURS, key_proof_message};
pub use read_model::ReadModel;

pub(crate) use seats::{dead_alert, release_in, release_seats};

use chrono::{DateTime, Duration, Utc};
use entity::enums::DeviceStatus;
use entity::{device, license};
use protocol::validation::Verdict;
use sea_orm::{ActiveModelTrait, DatabaseTransaction};
use serde_json::{Value, json};

use crate::audit::{self, Change};
use crate::newtypes::{DeviceComponents, DevicePublicKey, Fingerprint, JsonObject, Text};
use crate::{Actor, ActorKind, Result, Role};

/// Shortest check-out.
pub const MIN_CHECK_OUT_SECONDS: i64 = 60;

/// What the shipped software sends to activate, parsed.
#[derive(Debug, Clone)]
pub struct ActivateInput {
    /// The license key as typed (an unknown or malformed key is `NOT_FOUND`).
    pub license_key: String,
    /// The device's fingerprint.
    pub fingerprint: Fingerprint,
    /// Named fingerprint components (for k-of-n matching and the license file).
    pub components: DeviceComponents,
    /// Display name.
    pub name: Option<Text<200>>,
    /// Host name.
    pub hostname: Option<Text<255>>,
    /// Platform (`linux-x86_64`).
    pub platform: Option<Text<100>>,
    /// The device's Ed25519 public key, for signed offline files.
    pub public_key: Option<DevicePublicKey>,
    /// Free-form JSON object the vendor's software keeps on the device.
    pub variables: Option<JsonObject>,
    /// Proof of the device's stored key, for re-activating a live device under a policy that
    /// requires it.
    pub key_proof: Option<KeyProof>,
}

/// A successful activation.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The device.
    pub device: device::Model,
    /// Its token (`Authorization: Bearer ...` for heartbeats).
    pub token: String,
    /// A license file bound to it.
    pub license_file: String,
    /// The device as an actor, for reading the result.
    pub actor: Actor,
}

/// What the shipped software sends to validate. Nothing in it is refused: whatever is wrong
/// with it is a validation code, never an error.
#[derive(Debug, Clone, Default)]
pub struct ValidateInput {
    /// The license key.
    pub license_key: String,
    /// The device's fingerprint, to check its activation.
    pub fingerprint: Option<String>,
    /// Named fingerprint components, for k-of-n matching.
    pub components: Option<Vec<(String, String)>>,
    /// Entitlements the software needs.
    pub entitlements: Vec<String>,
}

/// The answer to a validation.
#[derive(Debug, Clone)]
pub struct ValidationOutcome {
    /// Code and a sentence a person can act on.
    pub verdict: Verdict,
    /// The license, when the key was found.
    pub license: Option<license::Model>,
    /// The device, when one matched.
    pub device: Option<device::Model>,
    /// The key holder as an actor, for reading the result.
    pub actor: Option<Actor>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone)]
pub struct HeartbeatOutcome {
    /// The device after the heartbeat.
    pub device: device::Model,
    /// The license's current version.
    pub license_version: i32,
    /// Whether the license changed since the device's file (fetch a new one).
    pub update_available: bool,
    /// When the next heartbeat is due.
    pub next_heartbeat_due_at: Option<DateTime<Utc>>,
}

/// Filters for listing devices.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// Of this license.
    pub license_id: Option<String>,
    /// In this (effective) status.
    pub status: Option<DeviceStatus>,
}

/// The status a device has now: an active device whose license changed since its file is
/// PENDING_SYNC; one past its heartbeat deadline is DEAD; a check-out that ended is over.
#[must_use]
pub fn device_status(device: &device::Model, license_version: i32, now: DateTime<Utc>) -> DeviceStatus {
    let past_deadline = device.heartbeat_deadline_at.is_some_and(|at| at < now);
    match device.status {
        DeviceStatus::Active | DeviceStatus::PendingSync | DeviceStatus::CheckedOut if past_deadline => {
            DeviceStatus::Dead
        }
        DeviceStatus::CheckedOut if device.checked_out_until.is_some_and(|until| until > now) => {
            DeviceStatus::CheckedOut
        }
        DeviceStatus::Active | DeviceStatus::PendingSync | DeviceStatus::CheckedOut => {
            if device.license_version < license_version {
                DeviceStatus::PendingSync
            } else {
                DeviceStatus::Active
            }
        }
        other => other,
    }
}

/// When a device seen at `at` must next heartbeat, and when it counts as dead.
fn heartbeat_times(interval: Option<i64>, at: DateTime<Utc>) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    match interval {
        Some(interval) => (
            at.checked_add_signed(Duration::seconds(interval)),
            at.checked_add_signed(Duration::seconds(interval.saturating_mul(2))),
        ),
        None => (None, None),
    }
}

/// When the device's next heartbeat is due (for display).
#[must_use]
pub fn next_heartbeat_due(device: &device::Model, heartbeat_interval_seconds: Option<i64>) -> Option<DateTime<Utc>> {
    let interval = heartbeat_interval_seconds?;
    device
        .heartbeat_deadline_at
        .map(|deadline| deadline - Duration::seconds(interval))
}

/// What the audit log records of a device.
fn device_json(d: &device::Model) -> Value {
    json!({
        "license_id": d.license_id, "fingerprint": d.fingerprint, "status": d.status, "holds_seat": d.holds_seat,
        "name": d.name, "checked_out_until": d.checked_out_until,
    })
}

/// Saves a device change and its audit event in `tx`.
async fn save_device(
    tx: &DatabaseTransaction,
    actor: &Actor,
    now: DateTime<Utc>,
    action: &str,
    before: Value,
    model: device::ActiveModel,
) -> Result<device::Model> {
    let device = model.update(tx).await?;
    audit::record(
        tx,
        actor,
        now,
        Change::new(action, "device", &device.id, before, device_json(&device)),
    )
    .await?;
    Ok(device)
}

/// The key holder of `license` as an actor: may read that license and its devices.
fn licensee(license: &license::Model, request_id: Option<String>) -> Actor {
    Actor {
        vendor_id: license.vendor_id.clone(),
        role: Role::ReadOnly,
        kind: ActorKind::Licensee {
            license_id: license.id.clone(),
        },
        label: format!("license ..{}", license.key_last4),
        request_id,
    }
}
