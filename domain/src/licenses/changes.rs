//! License changes after issue: renewing, suspending, reinstating and revoking, and the one
//! write path every change to a license goes through ([`Domain::save_license_change`]: the
//! version bump, refresh files, a re-read of a newly linked subscription, the audit event).

use chrono::{DateTime, Duration, Utc};
use entity::enums::LicenseStatus;
use entity::{license, policy};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
};

use super::license_json;
use crate::audit::{self, Change};
use crate::billing;
use crate::db::begin_write;
use crate::newtypes::Text;
use crate::webhooks;
use crate::{Actor, Capability, Domain, Error, Result};

impl Domain {
    /// Applies a change to a license inside a write transaction (see
    /// [`Domain::save_license_change`]).
    pub(super) async fn change_license(
        &self,
        actor: &Actor,
        id: &str,
        action: &str,
        apply: impl FnOnce(&license::Model, DateTime<Utc>) -> Result<Option<license::ActiveModel>>,
    ) -> Result<license::Model> {
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let current = license::Entity::find_by_id(id)
            .filter(license::Column::VendorId.eq(&actor.vendor_id))
            .lock_exclusive()
            .one(&tx)
            .await?
            .ok_or(Error::NotFound("license"))?;
        let Some(model) = apply(&current, now)? else {
            return Ok(current);
        };
        let updated = self
            .save_license_change(&tx, actor, &current, model, action, now)
            .await?;
        tx.commit().await?;
        self.read_model.forget(&updated.id);
        Ok(updated)
    }

    /// Writes a change to `current` (a row the transaction has locked): bumps `version` and
    /// promises refresh files when the license file would say something new, and records the
    /// audit event.
    pub(crate) async fn save_license_change(
        &self,
        tx: &DatabaseTransaction,
        actor: &Actor,
        current: &license::Model,
        mut model: license::ActiveModel,
        action: &str,
        now: DateTime<Utc>,
    ) -> Result<license::Model> {
        let before = license_json(current);
        let file_changes = [
            model.status.is_set() && model.status.as_ref() != &current.status,
            model.expires_at.is_set() && model.expires_at.as_ref() != &current.expires_at,
            model.max_activations.is_set() && model.max_activations.as_ref() != &current.max_activations,
            model.entitlements.is_set() && model.entitlements.as_ref() != &current.entitlements,
        ];
        let file_changed = file_changes.contains(&true);
        if file_changed {
            model.version = Set(current.version + 1);
        }
        model.updated_at = Set(now);
        let updated = model.update(tx).await?;
        if updated.billing_subscription_id != current.billing_subscription_id
            && let Some(subscription_id) = &updated.billing_subscription_id
        {
            billing::request_read(tx, subscription_id, now).await?;
        }
        if file_changed {
            self.promise_refresh_files(tx, &updated, now).await?;
        }
        audit::record(
            tx,
            actor,
            now,
            Change::new(action, "license", &updated.id, before, license_json(&updated)),
        )
        .await?;
        webhooks::events::record(
            tx,
            &updated.vendor_id,
            webhooks::objects::license_change_type(action, current, &updated),
            webhooks::objects::license(&updated),
            now,
        )
        .await?;
        Ok(updated)
    }

    /// Extends the license by its policy's duration, from its expiry or from now if it has
    /// already expired.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a perpetual policy; [`Error::LicenseRevoked`].
    pub async fn renew_license(&self, actor: &Actor, id: &str) -> Result<license::Model> {
        actor.require(Capability::ManageLicenses)?;
        let current = self.find_license(&self.db, actor, id).await?;
        let policy = policy::Entity::find_by_id(&current.policy_id)
            .one(&self.db)
            .await?
            .ok_or(Error::NotFound("policy"))?;
        let Some(duration) = policy.duration_seconds else {
            return Err(Error::InvalidInput(
                "the license's policy is perpetual: there is nothing to renew".into(),
            ));
        };
        self.change_license(actor, id, "license.renew", |current, now| {
            if current.status == LicenseStatus::Revoked {
                return Err(Error::LicenseRevoked("a revoked license cannot be renewed".into()));
            }
            let from = current.expires_at.map_or(now, |at| at.max(now));
            let mut model: license::ActiveModel = current.clone().into();
            let until = from
                .checked_add_signed(Duration::seconds(duration))
                .ok_or_else(|| Error::InvalidInput("the renewed expiry is out of range".into()))?;
            model.expires_at = Set(Some(until));
            Ok(Some(model))
        })
        .await
    }

    /// Suspends a license (devices stop validating) until it is reinstated.
    ///
    /// # Errors
    /// [`Error::LicenseRevoked`] for a revoked license.
    pub async fn suspend_license(&self, actor: &Actor, id: &str, reason: Option<Text<500>>) -> Result<license::Model> {
        actor.require(Capability::Support)?;
        let reason = reason.map(Text::into_inner);
        if reason
            .as_deref()
            .is_some_and(|r| r.starts_with(billing::BILLING_REASON_PREFIX))
        {
            return Err(Error::InvalidInput(format!(
                "reasons starting {:?} are billing's own",
                billing::BILLING_REASON_PREFIX
            )));
        }
        self.change_license(actor, id, "license.suspend", |current, _| match current.status {
            LicenseStatus::Revoked => Err(Error::LicenseRevoked("a revoked license cannot be suspended".into())),
            // Staff taking over a billing suspension: billing will no longer lift it.
            LicenseStatus::Suspended
                if current
                    .status_reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with(billing::BILLING_REASON_PREFIX)) =>
            {
                let mut model: license::ActiveModel = current.clone().into();
                model.status_reason = Set(Some(reason.unwrap_or_else(|| "suspended by staff".into())));
                Ok(Some(model))
            }
            LicenseStatus::Suspended => Ok(None),
            LicenseStatus::Active | LicenseStatus::Expired => {
                let mut model: license::ActiveModel = current.clone().into();
                model.status = Set(LicenseStatus::Suspended);
                model.status_reason = Set(reason);
                Ok(Some(model))
            }
        })
        .await
    }

    /// Lifts a suspension.
    ///
    /// # Errors
    /// [`Error::LicenseRevoked`] for a revoked license.
    pub async fn reinstate_license(&self, actor: &Actor, id: &str) -> Result<license::Model> {
        actor.require(Capability::Support)?;
        self.change_license(actor, id, "license.reinstate", |current, _| match current.status {
            LicenseStatus::Revoked => Err(Error::LicenseRevoked("a revoked license cannot be reinstated".into())),
            LicenseStatus::Active | LicenseStatus::Expired => Ok(None),
            LicenseStatus::Suspended => {
                let mut model: license::ActiveModel = current.clone().into();
                model.status = Set(LicenseStatus::Active);
                model.status_reason = Set(None);
                Ok(Some(model))
            }
        })
        .await
    }

    /// Ends a license for good.
    ///
    /// # Errors
    /// [`Error::Forbidden`] or [`Error::NotFound`].
    pub async fn revoke_license(&self, actor: &Actor, id: &str, reason: Option<Text<500>>) -> Result<license::Model> {
        actor.require(Capability::ManageLicenses)?;
        let reason = reason.map(Text::into_inner);
        self.change_license(actor, id, "license.revoke", |current, _| {
            if current.status == LicenseStatus::Revoked {
                return Ok(None);
            }
            let mut model: license::ActiveModel = current.clone().into();
            model.status = Set(LicenseStatus::Revoked);
            model.status_reason = Set(reason);
            Ok(Some(model))
        })
        .await
    }
}
