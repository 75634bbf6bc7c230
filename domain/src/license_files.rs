//! Signed license files: shaping the payload a device's file carries (license, policy rules,
//! meters, the device binding, the acknowledged usage position) and signing it with the
//! vendor's active key. Every path that hands out a file (activation, the offline portal,
//! fetch, check-out, refresh-file emails, exports) comes here, and so does the promise of the
//! refresh-file email a license change owes an offline customer.

use chrono::{DateTime, Duration, Utc};
use entity::enums::{DeploymentMode, DeviceStatus};
use entity::{customer, device, license, policy, product, vendor};
use protocol::license_file::{self, DeviceBinding, LicensePayload, MeterGrant, UsageAck};
use sea_orm::{ActiveEnum, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;

use crate::outbox::{self, Attachment, NewEmail};

use crate::licenses::effective_status;
use crate::{Domain, Error, Result};

/// The last usage-ledger record the server acknowledged for a device (`usage_ack`).
pub(crate) fn acknowledged_usage(device: &device::Model) -> Option<UsageAck> {
    let seq = u64::try_from(device.ledger_seq?).ok()?;
    Some(UsageAck {
        seq,
        hash: device.ledger_hash.clone()?,
    })
}

impl Domain {
    /// Signs a license file for `device` with the vendor's active key.
    pub(crate) async fn sign_license_file(
        &self,
        db: &impl ConnectionTrait,
        license: &license::Model,
        policy: &policy::Model,
        device: &device::Model,
        now: DateTime<Utc>,
    ) -> Result<String> {
        let vendor = vendor::Entity::find_by_id(&license.vendor_id)
            .one(db)
            .await?
            .ok_or(Error::NotFound("vendor"))?;
        let product = product::Entity::find_by_id(&license.product_id)
            .one(db)
            .await?
            .ok_or(Error::NotFound("product"))?;
        let (kid, key) = self.active_signing_key(db, &license.vendor_id).await?;
        let checked_out_until = device
            .checked_out_until
            .filter(|until| device.status == DeviceStatus::CheckedOut && *until > now);
        let payload = LicensePayload {
            format: license_file::FORMAT,
            license_id: license.id.clone(),
            license_key_hint: license.key_last4.clone(),
            vendor: vendor.slug,
            product: product.code,
            policy: policy.id.clone(),
            status: effective_status(license, now).to_value(),
            entitlements: license.entitlements.0.clone(),
            meters: crate::catalog::effective_meters(policy, license)
                .iter()
                .map(|m| MeterGrant {
                    code: m.code.clone(),
                    limit: m.limit,
                    reset_period: m.reset_period.to_value(),
                    overage_limit: m.overage_limit,
                })
                .collect(),
            issued_at: license.issued_at,
            expires_at: license.expires_at,
            refresh_by: checked_out_until.unwrap_or(now + Duration::seconds(policy.license_file_ttl_seconds)),
            grace_seconds: if checked_out_until.is_some() {
                0
            } else {
                policy.grace_seconds
            },
            version: i64::from(license.version),
            server_time: now,
            device: DeviceBinding {
                id: device.id.clone(),
                fingerprint: device.fingerprint.clone(),
                components: device.components.0.clone(),
            },
            min_component_matches: policy.min_component_matches.and_then(|n| u32::try_from(n).ok()),
            heartbeat_interval_seconds: policy.heartbeat_interval_seconds,
            checked_out_until,
            usage_ack: acknowledged_usage(device),
        };
        license_file::sign(&payload, &kid, &key).map_err(|e| Error::Internal(e.to_string()))
    }

    /// When a license's file changed and its policy deploys OFFLINE or HYBRID, promises the
    /// customer one email with a freshly signed refresh file per device holding the license.
    pub(crate) async fn promise_refresh_files(
        &self,
        tx: &DatabaseTransaction,
        license: &license::Model,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let Some(customer_id) = &license.customer_id else {
            return Ok(());
        };
        let Some(to) = customer::Entity::find_by_id(customer_id)
            .one(tx)
            .await?
            .and_then(|c| c.email.map(|email| (c.name, email)))
        else {
            return Ok(());
        };
        let Some(policy) = policy::Entity::find_by_id(&license.policy_id).one(tx).await? else {
            return Ok(());
        };
        if policy.deployment_mode == DeploymentMode::Online {
            return Ok(());
        }
        let devices = device::Entity::find()
            .filter(device::Column::LicenseId.eq(&license.id))
            .filter(device::Column::Status.ne(DeviceStatus::Released))
            .filter(device::Column::HoldsSeat.eq(true))
            .order_by_asc(device::Column::Id)
            .all(tx)
            .await?;
        if devices.is_empty() {
            return Ok(());
        }
        let mut attachments = Vec::with_capacity(devices.len());
        let mut names = Vec::with_capacity(devices.len());
        for device in &devices {
            let name = device
                .name
                .clone()
                .or_else(|| device.hostname.clone())
                .unwrap_or_else(|| device.id.clone());
            let safe: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
                .take(64)
                .collect();
            attachments.push(Attachment {
                filename: format!("license-{safe}.lic"),
                content_type: "application/x-license-file".into(),
                content: self.sign_license_file(tx, license, &policy, device, now).await?,
            });
            names.push(name);
        }
        let product = product::Entity::find_by_id(&license.product_id)
            .one(tx)
            .await?
            .map_or_else(|| "your software".to_owned(), |p| p.name);
        let email = NewEmail {
            vendor_id: &license.vendor_id,
            kind: "refresh_files",
            to: vec![to.1],
            subject: format!("Updated license files for {product}"),
            context: json!({
                "customer": to.0,
                "product": product,
                "key_hint": license.key_last4,
                "expires_at": license.expires_at.map(|at| at.to_rfc3339()),
                "version": license.version,
                "devices": names,
            }),
            attachments,
            dedupe_key: Some(format!("refresh:{}:{}", license.id, license.version)),
        };
        outbox::promise(tx, email, now).await?;
        Ok(())
    }
}
