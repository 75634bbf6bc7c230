//! What a device does with its token: heartbeat, fetch a fresh license file, check out for
//! off-network use and check in again, deactivate. Each call first applies the dead rule, so a
//! device past its heartbeat deadline is treated as dead before any sweep has run.

use chrono::{DateTime, Duration, Utc};
use entity::enums::{DeviceStatus, LicenseStatus};
use entity::{device, license, policy};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};

use super::seats::{SEAT_LOST, apply_dead_rule};
use super::{HeartbeatOutcome, MIN_CHECK_OUT_SECONDS, device_json, device_status, heartbeat_times, save_device};
use crate::db::begin_write;
use crate::device_history;
use crate::licenses::{require_active, with_policy};
use crate::{Actor, Domain, Error, Result};

impl Domain {
    /// Loads the calling device, its license and policy inside `tx`, the license row locked.
    async fn caller_device(
        &self,
        tx: &DatabaseTransaction,
        actor: &Actor,
    ) -> Result<(device::Model, license::Model, policy::Model)> {
        let (device_id, license_id) = actor.device()?;
        let select = license::Entity::find_by_id(license_id).filter(license::Column::VendorId.eq(&actor.vendor_id));
        let (license, policy) = with_policy(tx, select, true).await?.ok_or(Error::NotFound("license"))?;
        let device = device::Entity::find_by_id(device_id)
            .filter(device::Column::VendorId.eq(&actor.vendor_id))
            .one(tx)
            .await?
            .ok_or(Error::NotFound("device"))?;
        if device.status == DeviceStatus::Released {
            return Err(Error::Unauthenticated("the device was released: activate again".into()));
        }
        Ok((device, license, policy))
    }

    /// Opens a write transaction on the calling device with the dead rule applied. A device
    /// that lost its seat gets [`Error::DeviceDead`] (after the marking is committed).
    pub(crate) async fn live_caller_device(
        &self,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<(DatabaseTransaction, device::Model, license::Model, policy::Model)> {
        let tx = begin_write(&self.writer).await?;
        let (device, license, policy) = self.caller_device(&tx, actor).await?;
        match apply_dead_rule(&tx, &license, &policy, device, now).await? {
            Some(device) => Ok((tx, device, license, policy)),
            None => {
                tx.commit().await?;
                self.read_model.forget(&license.id);
                Err(Error::DeviceDead(SEAT_LOST.into()))
            }
        }
    }

    /// Records a heartbeat. A device past its deadline is dead: with `KEEP_SEAT` the
    /// heartbeat revives it, with `RELEASE_SEAT` it has lost its seat and must activate again.
    /// A heartbeat on a suspended or revoked license records nothing and answers the
    /// license's code.
    ///
    /// # Errors
    /// [`Error::LicenseSuspended`], [`Error::LicenseRevoked`]; [`Error::DeviceDead`];
    /// [`Error::Forbidden`] without a device token.
    pub async fn heartbeat(&self, actor: &Actor) -> Result<HeartbeatOutcome> {
        let (device_id, license_id) = actor.device()?;
        let now = self.clock.now();
        let view = self
            .read_model
            .license(&self.db, &self.writer, license_id)
            .await?
            .filter(|view| view.license.vendor_id == actor.vendor_id)
            .ok_or(Error::NotFound("license"))?;
        require_not_stopped(&view.license)?;
        // The common case, written with whatever other heartbeats arrive meanwhile: a seated,
        // active device within its deadline.
        let (due, deadline) = heartbeat_times(view.policy.heartbeat_interval_seconds, now);
        let epoch = self.read_model.epoch(license_id);
        let written = self
            .heartbeat_writes
            .write(&self.writer, device_id, &actor.vendor_id, now, deadline)
            .await?;
        if let Some(device) = written {
            self.read_model.remember_device(epoch, &device).await;
            return Ok(HeartbeatOutcome {
                update_available: device.license_version < view.license.version,
                license_version: view.license.version,
                next_heartbeat_due_at: due,
                device,
            });
        }
        // Everything else (dead, checked out, released) under the license lock.
        let (tx, device, license, policy) = self.live_caller_device(actor, now).await?;
        require_not_stopped(&license)?;
        let checked_out = device
            .checked_out_until
            .filter(|until| device.status == DeviceStatus::CheckedOut && *until > now);
        let (due, deadline) = heartbeat_times(policy.heartbeat_interval_seconds, checked_out.unwrap_or(now));
        // A device that kept its seat through death is alive again.
        let revived = device.status == DeviceStatus::Dead;
        let mut model: device::ActiveModel = device.into();
        model.status = Set(if checked_out.is_some() {
            DeviceStatus::CheckedOut
        } else {
            DeviceStatus::Active
        });
        if checked_out.is_none() {
            model.checked_out_until = Set(None);
        }
        model.last_seen_at = Set(Some(now));
        model.heartbeat_deadline_at = Set(deadline);
        model.updated_at = Set(now);
        let device = model.update(&tx).await?;
        if revived {
            device_history::record_status(&tx, &device, DeviceStatus::Active, now).await?;
        }
        tx.commit().await?;
        self.read_model.forget(&license.id);
        Ok(HeartbeatOutcome {
            update_available: device.license_version < license.version,
            license_version: license.version,
            next_heartbeat_due_at: due,
            device,
        })
    }

    /// A freshly signed license file for the calling device; the device is in sync afterwards.
    ///
    /// # Errors
    /// [`Error::DeviceDead`] for a device that lost its seat.
    pub async fn fetch_license_file(&self, actor: &Actor) -> Result<String> {
        let now = self.clock.now();
        let (tx, device, license, policy) = self.live_caller_device(actor, now).await?;
        let mut model: device::ActiveModel = device.into();
        model.license_version = Set(license.version);
        model.updated_at = Set(now);
        let device = model.update(&tx).await?;
        let file = self.sign_license_file(&tx, &license, &policy, &device, now).await?;
        tx.commit().await?;
        self.read_model.forget(&license.id);
        Ok(file)
    }

    /// Checks the calling device out for off-network use: its file works until
    /// now + `ttl_seconds` (capped by the policy's file horizon and the license's expiry) with no
    /// heartbeat, and the seat stays held.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a too-short check-out; license status errors.
    pub async fn check_out_device(&self, actor: &Actor, ttl_seconds: i64) -> Result<String> {
        if ttl_seconds < MIN_CHECK_OUT_SECONDS {
            return Err(Error::InvalidInput(format!(
                "ttlSeconds must be at least {MIN_CHECK_OUT_SECONDS}"
            )));
        }
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let (device, license, policy) = self.caller_device(&tx, actor).await?;
        require_active(&license, now)?;
        if device_status(&device, license.version, now) == DeviceStatus::Dead || !device.holds_seat {
            return Err(Error::DeviceDead(
                "the device missed its heartbeat deadline: heartbeat or activate again".into(),
            ));
        }
        let mut until = now + Duration::seconds(ttl_seconds.min(policy.license_file_ttl_seconds));
        if let Some(expires_at) = license.expires_at {
            until = until.min(expires_at);
        }
        let before = device_json(&device);
        let (_, deadline) = heartbeat_times(policy.heartbeat_interval_seconds, until);
        let mut model: device::ActiveModel = device.into();
        model.status = Set(DeviceStatus::CheckedOut);
        model.checked_out_until = Set(Some(until));
        model.heartbeat_deadline_at = Set(deadline);
        model.license_version = Set(license.version);
        model.last_seen_at = Set(Some(now));
        model.updated_at = Set(now);
        let device = save_device(&tx, actor, now, "device.check_out", before, model).await?;
        let file = self.sign_license_file(&tx, &license, &policy, &device, now).await?;
        tx.commit().await?;
        self.read_model.forget(&license.id);
        Ok(file)
    }

    /// Ends the calling device's check-out early; it heartbeats again from now on.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the device is not checked out.
    pub async fn check_in_device(&self, actor: &Actor) -> Result<device::Model> {
        let now = self.clock.now();
        let (tx, device, license, policy) = self.live_caller_device(actor, now).await?;
        if device.status != DeviceStatus::CheckedOut {
            return Err(Error::InvalidInput("the device is not checked out".into()));
        }
        let before = device_json(&device);
        let (_, deadline) = heartbeat_times(policy.heartbeat_interval_seconds, now);
        let mut model: device::ActiveModel = device.into();
        model.status = Set(DeviceStatus::Active);
        model.checked_out_until = Set(None);
        model.heartbeat_deadline_at = Set(deadline);
        model.last_seen_at = Set(Some(now));
        model.updated_at = Set(now);
        let device = save_device(&tx, actor, now, "device.check_in", before, model).await?;
        tx.commit().await?;
        self.read_model.forget(&license.id);
        Ok(device)
    }

    /// Deactivates the calling device: frees its seat and revokes its token at once.
    ///
    /// # Errors
    /// [`Error::Forbidden`] without a device token.
    pub async fn deactivate_device(&self, actor: &Actor) -> Result<device::Model> {
        let (device_id, _) = actor.device()?;
        self.release(actor, device_id, "device.deactivate").await
    }
}

/// Refuses a device call on a suspended or revoked license with the license's code.
fn require_not_stopped(license: &license::Model) -> Result<()> {
    match license.status {
        LicenseStatus::Suspended => Err(Error::LicenseSuspended("the license is suspended".into())),
        LicenseStatus::Revoked => Err(Error::LicenseRevoked("the license was revoked".into())),
        LicenseStatus::Active | LicenseStatus::Expired => Ok(()),
    }
}
