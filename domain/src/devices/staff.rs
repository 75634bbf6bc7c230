//! What staff do to devices: list them (with the effective-status filter), release one, and
//! export a freshly signed refresh file for an offline device.

use entity::enums::{DeadDeviceAction, DeviceStatus};
use entity::{device, license};
use sea_orm::sea_query::ExprTrait as _;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use super::DeviceFilter;
use super::seats::release_in;
use crate::db::begin_write;
use crate::licenses::with_policy;
use crate::page::{self, Order, Page, PageRequest};
use crate::{Actor, ActorKind, Capability, Domain, Error, Result};

impl Domain {
    /// A freshly signed license file for a device, for staff to hand over (the refresh file of
    /// an offline device).
    ///
    /// # Errors
    /// [`Error::NotFound`] for another vendor's device; [`Error::InvalidInput`] for a released
    /// one or one without a seat.
    pub async fn export_license_file(&self, actor: &Actor, device_id: &str) -> Result<String> {
        actor.require(Capability::Support)?;
        let device = device::Entity::find_by_id(device_id)
            .filter(device::Column::VendorId.eq(&actor.vendor_id))
            .one(&self.db)
            .await?
            .ok_or(Error::NotFound("device"))?;
        if device.status == DeviceStatus::Released {
            return Err(Error::InvalidInput(
                "the device was released: it has no license file".into(),
            ));
        }
        let (license, policy) = with_policy(&self.db, license::Entity::find_by_id(&device.license_id), false)
            .await?
            .ok_or(Error::NotFound("license"))?;
        let now = self.clock.now();
        // A device without a seat gets no file: one that lost it, or is past its deadline
        // under RELEASE_SEAT (it loses the seat the moment anything looks).
        let past_deadline = super::device_status(&device, license.version, now) == DeviceStatus::Dead;
        if !device.holds_seat || (past_deadline && policy.dead_device_action == DeadDeviceAction::ReleaseSeat) {
            return Err(Error::InvalidInput(
                "the device holds no seat (it missed its heartbeat deadline): it must activate again".into(),
            ));
        }
        self.sign_license_file(&self.db, &license, &policy, &device, now).await
    }

    /// Releases a device (staff): frees its seat and revokes its token at once.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for READ_ONLY; [`Error::NotFound`] for another vendor's device.
    pub async fn release_device(&self, actor: &Actor, id: &str) -> Result<device::Model> {
        actor.require(Capability::Support)?;
        self.release(actor, id, "device.release").await
    }

    pub(super) async fn release(&self, actor: &Actor, device_id: &str, action: &str) -> Result<device::Model> {
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let find = || device::Entity::find_by_id(device_id).filter(device::Column::VendorId.eq(&actor.vendor_id));
        let license_id = find().one(&tx).await?.ok_or(Error::NotFound("device"))?.license_id;
        let license = license::Entity::find_by_id(&license_id)
            .lock_exclusive()
            .one(&tx)
            .await?
            .ok_or(Error::NotFound("license"))?;
        // Read again under the license lock: a concurrent release has either finished or waits.
        let device = find().one(&tx).await?.ok_or(Error::NotFound("device"))?;
        if device.status == DeviceStatus::Released {
            return Ok(device);
        }
        let device = release_in(&tx, actor, &license, device, action, now).await?;
        tx.commit().await?;
        self.read_model.forget(&license.id);
        Ok(device)
    }

    /// The vendor's devices, oldest first (a device token: itself only; a license-key holder: none).
    ///
    /// # Errors
    /// Database errors.
    pub async fn devices(
        &self,
        actor: &Actor,
        filter: &DeviceFilter,
        request: &PageRequest,
    ) -> Result<Page<device::Model>> {
        let mut select = device::Entity::find().filter(device::Column::VendorId.eq(&actor.vendor_id));
        match &actor.kind {
            // A device sees itself only: never its siblings' fingerprints, components or variables.
            ActorKind::Device { device_id, license_id } => {
                select = select
                    .filter(device::Column::LicenseId.eq(license_id.as_str()))
                    .filter(device::Column::Id.eq(device_id.as_str()));
            }
            // A license-key holder sees none (the device it validated is handed to it directly).
            ActorKind::Licensee { license_id } => {
                select = select
                    .filter(device::Column::LicenseId.eq(license_id.as_str()))
                    .filter(device::Column::Id.is_null());
            }
            _ => actor.require(Capability::Read)?,
        }
        if let Some(id) = &filter.license_id {
            select = select.filter(device::Column::LicenseId.eq(id));
        }
        if let Some(status) = filter.status {
            let now = self.clock.now();
            // The device holds an older file than its license's current version.
            let license_version = Query::select()
                .column(license::Column::Version)
                .from(license::Entity)
                .and_where(
                    Expr::col((license::Entity, license::Column::Id))
                        .equals((device::Entity, device::Column::LicenseId)),
                )
                .to_owned();
            let behind = Expr::col((device::Entity, device::Column::LicenseVersion)).lt(license_version);
            let live = sea_orm::Condition::all()
                .add(device::Column::Status.is_in([
                    DeviceStatus::Active,
                    DeviceStatus::PendingSync,
                    DeviceStatus::CheckedOut,
                ]))
                .add(
                    sea_orm::Condition::any()
                        .add(device::Column::HeartbeatDeadlineAt.is_null())
                        .add(device::Column::HeartbeatDeadlineAt.gte(now)),
                );
            let out_now = sea_orm::Condition::all()
                .add(device::Column::Status.eq(DeviceStatus::CheckedOut))
                .add(device::Column::CheckedOutUntil.gt(now));
            select = select.filter(match status {
                DeviceStatus::Active => live.add(out_now.not()).add(behind.not()),
                DeviceStatus::PendingSync => live.add(out_now.not()).add(behind),
                DeviceStatus::CheckedOut => live.add(out_now),
                DeviceStatus::Dead => sea_orm::Condition::any()
                    .add(device::Column::Status.eq(DeviceStatus::Dead))
                    .add(
                        sea_orm::Condition::all()
                            .add(device::Column::Status.is_in([
                                DeviceStatus::Active,
                                DeviceStatus::PendingSync,
                                DeviceStatus::CheckedOut,
                            ]))
                            .add(device::Column::HeartbeatDeadlineAt.lt(now)),
                    ),
                DeviceStatus::Released => {
                    sea_orm::Condition::all().add(device::Column::Status.eq(DeviceStatus::Released))
                }
            });
        }
        page::fetch(&self.db, select, device::Column::Id, request, Order::OldestFirst).await
    }
}
