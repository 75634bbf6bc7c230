//! The seat cap and the dead rule, shared by every device path: claiming a seat with one
//! conditional statement, giving seats back, the one open ACTIVATION_LIMIT_REACHED alert per
//! license, and marking a device dead when it is past its heartbeat deadline. Every function
//! here runs inside a transaction that already holds the license row.

use chrono::{DateTime, Utc};
use entity::enums::{AlertKind, DeadDeviceAction, DeviceStatus};
use entity::{device, license, policy};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};

use super::{device_json, device_status, save_device};
use crate::alerts::{self, NewAlert};
use crate::device_history;
use crate::webhooks;
use crate::{Actor, Error, Result};

fn activation_limit_key(license_id: &str) -> String {
    format!("activation-limit:{license_id}")
}

/// Raises the license's one open ACTIVATION_LIMIT_REACHED alert (a no-op while it is open).
async fn raise_limit_alert(
    tx: &DatabaseTransaction,
    license: &license::Model,
    message: String,
    now: DateTime<Utc>,
) -> Result<()> {
    let alert = NewAlert {
        vendor_id: &license.vendor_id,
        kind: AlertKind::ActivationLimitReached,
        message,
        license_id: Some(&license.id),
        device_id: None,
        dedupe_key: Some(activation_limit_key(&license.id)),
        email: true,
    };
    alerts::raise(tx, alert, now).await?;
    Ok(())
}

/// Releases a device that is not released yet, inside a transaction holding its license row:
/// frees its seat, ends any check-out and bumps its token generation (the caller tells the
/// token cache after committing). Records the audit event `action`.
pub(crate) async fn release_in(
    tx: &DatabaseTransaction,
    actor: &Actor,
    license: &license::Model,
    device: device::Model,
    action: &str,
    now: DateTime<Utc>,
) -> Result<device::Model> {
    if device.holds_seat {
        release_seat(tx, license).await?;
    }
    let before = device_json(&device);
    let generation = device.token_generation + 1;
    let mut model: device::ActiveModel = device.into();
    model.status = Set(DeviceStatus::Released);
    model.holds_seat = Set(false);
    model.released_at = Set(Some(now));
    model.checked_out_until = Set(None);
    model.heartbeat_deadline_at = Set(None);
    model.token_generation = Set(generation);
    model.updated_at = Set(now);
    let device = save_device(tx, actor, now, action, before, model).await?;
    device_history::record_status(tx, &device, DeviceStatus::Released, now).await?;
    // The device giving its seat back itself (online or by file) is a deactivation; staff
    // or an integration taking it is a release.
    let event_type = match action {
        "device.deactivate" | "device.import_deactivation" => "device.deactivated",
        _ => "device.released",
    };
    webhooks::events::record(
        tx,
        &device.vendor_id,
        event_type,
        webhooks::objects::device(&device),
        now,
    )
    .await?;
    Ok(device)
}

/// Frees one seat of a license and lets a later fill alert again.
async fn release_seat(tx: &DatabaseTransaction, license: &license::Model) -> Result<()> {
    release_seats(tx, license, 1).await
}

/// Frees `n` seats of a license (never below zero) and lets a later fill alert again.
pub(crate) async fn release_seats(tx: &DatabaseTransaction, license: &license::Model, n: i32) -> Result<()> {
    use sea_orm::sea_query::ExprTrait as _;
    license::Entity::update_many()
        .col_expr(
            license::Column::SeatsUsed,
            Expr::case(
                Expr::col(license::Column::SeatsUsed).gt(n),
                Expr::col(license::Column::SeatsUsed).sub(n),
            )
            .finally(0)
            .into(),
        )
        .filter(license::Column::Id.eq(&license.id))
        .filter(license::Column::SeatsUsed.gt(0))
        .exec(tx)
        .await?;
    alerts::clear(tx, &license.vendor_id, &activation_limit_key(&license.id)).await
}

/// The DEVICE_DEAD alert of one death (a device that revives and dies again alerts again).
pub(crate) fn dead_alert<'a>(
    license: &'a license::Model,
    device: &'a device::Model,
    seat_released: bool,
) -> NewAlert<'a> {
    let deadline = device
        .heartbeat_deadline_at
        .map(|at| at.to_rfc3339())
        .unwrap_or_default();
    let name = device
        .name
        .as_deref()
        .or(device.hostname.as_deref())
        .unwrap_or(device.id.as_str());
    NewAlert {
        vendor_id: &license.vendor_id,
        kind: AlertKind::DeviceDead,
        message: format!(
            "Device {name} on license ..{} stopped heartbeating (deadline {deadline}); its seat was {}.",
            license.key_last4,
            if seat_released { "released" } else { "kept" }
        ),
        license_id: Some(&license.id),
        device_id: Some(&device.id),
        dedupe_key: Some(format!("device-dead:{}:{deadline}", device.id)),
        email: true,
    }
}

/// Takes one seat if the cap allows: the one conditional statement the seat cap rests on.
async fn claim_seat(tx: &DatabaseTransaction, license: &license::Model) -> Result<bool> {
    use sea_orm::sea_query::ExprTrait as _;
    let claimed = license::Entity::update_many()
        .col_expr(license::Column::SeatsUsed, Expr::col(license::Column::SeatsUsed).add(1))
        .filter(license::Column::Id.eq(&license.id))
        .filter(
            sea_orm::Condition::any()
                .add(license::Column::MaxActivations.is_null())
                .add(Expr::col(license::Column::SeatsUsed).lt(Expr::col(license::Column::MaxActivations))),
        )
        .exec(tx)
        .await?;
    Ok(claimed.rows_affected == 1)
}

/// Takes a seat for a device that holds none; `false` when every seat is taken. A floating
/// or `RELEASE_SEAT` license first reclaims the seats of devices past their deadline. Filling
/// the last seat raises the license's ACTIVATION_LIMIT_REACHED alert; a refusal raises it too
/// (a no-op while it is open), so the caller commits before answering [`seats_taken`].
pub(super) async fn take_seat(
    tx: &DatabaseTransaction,
    license: &license::Model,
    policy: &policy::Model,
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut claimed = claim_seat(tx, license).await?;
    if !claimed && (policy.floating || policy.dead_device_action == DeadDeviceAction::ReleaseSeat) {
        claimed = reclaim_dead_seats(tx, license, policy, now).await? && claim_seat(tx, license).await?;
    }
    let max = license.max_activations.unwrap_or_default();
    if !claimed {
        let message = format!(
            "License ..{} has all {max} seats taken; further activations are refused until a device is released.",
            license.key_last4,
        );
        raise_limit_alert(tx, license, message, now).await?;
        return Ok(false);
    }
    let seats = license::Entity::find_by_id(&license.id)
        .one(tx)
        .await?
        .map_or(0, |l| l.seats_used);
    if license.max_activations.is_some_and(|max| seats >= max) {
        let message = format!(
            "License ..{} now uses all {seats} of its seats; the next activation will be refused.",
            license.key_last4
        );
        raise_limit_alert(tx, license, message, now).await?;
    }
    Ok(true)
}

/// The answer to an activation [`take_seat`] refused.
pub(super) fn seats_taken(license: &license::Model) -> Error {
    Error::ActivationLimitReached(format!(
        "all {} seats of this license are taken: release a device or ask the vendor for more seats",
        license.max_activations.unwrap_or_default()
    ))
}

/// Marks a device dead; its seat goes back to the license when the policy says so or when
/// `force_release` (a floating license reclaiming it).
pub(super) async fn mark_dead(
    tx: &DatabaseTransaction,
    license: &license::Model,
    policy: &policy::Model,
    device: device::Model,
    force_release: bool,
    now: DateTime<Utc>,
) -> Result<device::Model> {
    let release = force_release || policy.dead_device_action == DeadDeviceAction::ReleaseSeat;
    // Conditional on the row as it is now, not as the caller read it: two requests marking the
    // same device dead release its seat once.
    let mut update = device::Entity::update_many()
        .col_expr(device::Column::Status, Expr::value(DeviceStatus::Dead))
        .col_expr(device::Column::UpdatedAt, Expr::value(now))
        .filter(device::Column::Id.eq(&device.id))
        .filter(device::Column::Status.ne(DeviceStatus::Released))
        .filter(device::Column::HeartbeatDeadlineAt.lt(now));
    if release {
        update = update
            .col_expr(device::Column::HoldsSeat, Expr::value(false))
            .filter(device::Column::HoldsSeat.eq(true));
    }
    let marked = update.exec(tx).await?.rows_affected == 1;
    if marked && release {
        release_seat(tx, license).await?;
    }
    if marked {
        alerts::raise(tx, dead_alert(license, &device, release), now).await?;
        device_history::record_deaths(tx, std::slice::from_ref(&device), now).await?;
    }
    let device = device::Entity::find_by_id(&device.id)
        .one(tx)
        .await?
        .ok_or(Error::NotFound("device"))?;
    if marked {
        webhooks::events::record(
            tx,
            &device.vendor_id,
            "device.dead",
            webhooks::objects::device(&device),
            now,
        )
        .await?;
    }
    Ok(device)
}

/// What a device that lost its seat to the dead rule is told.
pub(super) const SEAT_LOST: &str = "the device missed its heartbeat deadline and its seat was released: activate again";

/// Applies the dead rule to a device read under the license lock: past its deadline it is
/// marked dead. Returns the device, or `None` when it no longer holds a seat (the caller
/// commits the marking and refuses the request).
pub(super) async fn apply_dead_rule(
    tx: &DatabaseTransaction,
    license: &license::Model,
    policy: &policy::Model,
    device: device::Model,
    now: DateTime<Utc>,
) -> Result<Option<device::Model>> {
    let device = match device_status(&device, license.version, now) {
        DeviceStatus::Dead if device.status != DeviceStatus::Dead => {
            mark_dead(tx, license, policy, device, false, now).await?
        }
        _ => device,
    };
    Ok(device.holds_seat.then_some(device))
}

/// Marks the license's devices that are past their heartbeat deadline dead and releases
/// their seats (a floating or `RELEASE_SEAT` license making room for a new device).
/// Returns whether any device was overdue.
async fn reclaim_dead_seats(
    tx: &DatabaseTransaction,
    license: &license::Model,
    policy: &policy::Model,
    now: DateTime<Utc>,
) -> Result<bool> {
    let overdue = device::Entity::find()
        .filter(device::Column::LicenseId.eq(&license.id))
        .filter(device::Column::HoldsSeat.eq(true))
        .filter(device::Column::HeartbeatDeadlineAt.lt(now))
        .all(tx)
        .await?;
    let freed = !overdue.is_empty();
    for device in overdue {
        mark_dead(tx, license, policy, device, policy.floating, now).await?;
    }
    Ok(freed)
}
