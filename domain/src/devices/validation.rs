//! `validateLicense`: is this key in force, and is this machine activated on it? Never an
//! error for what the caller sent: a bad key is `NOT_FOUND`, answered by the same lookup a good
//! key costs, and every other refusal is a [`ValidationCode`] with a sentence a person can act on.

use entity::enums::{DeviceStatus, LicenseStatus};
use entity::{device, license};
use protocol::fingerprint;
use protocol::validation::{ValidationCode, Verdict, check_fingerprint};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::seats::mark_dead;
use super::{ValidateInput, ValidationOutcome, device_status, licensee};
use crate::db::begin_write;
use crate::device_history;
use crate::licenses::{effective_status, with_policy};
use crate::newtypes::DeviceComponents;
use crate::{Domain, Error, Result};

impl Domain {
    /// Validates a license key, and a device when a fingerprint is given. Never fails for a
    /// bad key: that is `NOT_FOUND`, answered by the same lookup a good key costs. The license
    /// and the device come from the [`ReadModel`](super::ReadModel); a device it shows dead is
    /// read again from the database before that verdict (a heartbeat may have moved its
    /// deadline meanwhile), and marked dead.
    ///
    /// # Errors
    /// Database errors only.
    pub async fn validate_license(
        &self,
        input: ValidateInput,
        request_id: Option<String>,
    ) -> Result<ValidationOutcome> {
        let now = self.clock.now();
        let verdict = |code, detail: String| Verdict { code, detail };
        let Some(view) = self
            .read_model
            .license_by_key(&self.db, &self.writer, &self.secrets, &input.license_key)
            .await?
        else {
            return Ok(ValidationOutcome {
                verdict: verdict(
                    ValidationCode::NotFound,
                    "no license has this key: check it for typos".into(),
                ),
                license: None,
                device: None,
                actor: None,
            });
        };
        let (license, policy) = (&view.license, &view.policy);
        let actor = licensee(license, request_id);
        let outcome = |verdict: Verdict, device: Option<device::Model>| ValidationOutcome {
            verdict,
            license: Some(license.clone()),
            device,
            actor: Some(actor.clone()),
        };
        match effective_status(license, now) {
            LicenseStatus::Active => {}
            LicenseStatus::Suspended => {
                let why = license
                    .status_reason
                    .as_deref()
                    .map_or(String::new(), |r| format!(" ({r})"));
                return Ok(outcome(
                    verdict(
                        ValidationCode::Suspended,
                        format!("the license is suspended{why}: contact the vendor"),
                    ),
                    None,
                ));
            }
            LicenseStatus::Revoked => {
                return Ok(outcome(
                    verdict(ValidationCode::Revoked, "the license was revoked".into()),
                    None,
                ));
            }
            LicenseStatus::Expired => {
                let at = license.expires_at.map(|at| at.to_rfc3339()).unwrap_or_default();
                return Ok(outcome(
                    verdict(
                        ValidationCode::Expired,
                        format!("the license expired at {at}: renew it"),
                    ),
                    None,
                ));
            }
        }
        let entitlements = &license.entitlements.0;
        let missing: Vec<&str> = input
            .entitlements
            .iter()
            .filter(|e| !entitlements.contains(e))
            .map(String::as_str)
            .collect();
        let Some(fingerprint) = input.fingerprint else {
            if !missing.is_empty() {
                return Ok(outcome(
                    verdict(
                        ValidationCode::EntitlementMissing,
                        format!("not entitled to: {}", missing.join(", ")),
                    ),
                    None,
                ));
            }
            return Ok(outcome(
                verdict(
                    ValidationCode::Valid,
                    "the license is valid (no device was checked)".into(),
                ),
                None,
            ));
        };
        let presented = match input.components.as_deref().map(DeviceComponents::try_from).transpose() {
            Ok(c) => c,
            Err(e) => {
                return Ok(outcome(
                    verdict(ValidationCode::FingerprintMismatch, e.to_string()),
                    None,
                ));
            }
        };
        let exact = self.read_model.device(&self.db, &license.id, &fingerprint).await?;
        let (mut device, note) = match exact {
            Some(device) => (device, None),
            None => {
                // The fingerprint changed: the policy may still accept k of n components.
                let candidates = match &presented {
                    Some(_) => {
                        device::Entity::find()
                            .filter(device::Column::LicenseId.eq(&license.id))
                            .filter(device::Column::Status.ne(DeviceStatus::Released))
                            .all(&self.db)
                            .await?
                    }
                    None => Vec::new(),
                };
                let presented = presented.as_ref().map(|c| c.as_map().clone()).unwrap_or_default();
                let best = candidates
                    .into_iter()
                    .map(|d| {
                        let activated = &d.components.0;
                        let v = check_fingerprint(
                            activated,
                            &d.fingerprint,
                            &presented,
                            &fingerprint,
                            policy.min_component_matches.and_then(|n| u32::try_from(n).ok()),
                        );
                        let matched = fingerprint::compare(activated, &presented).matched;
                        (d, v, matched)
                    })
                    .max_by_key(|(_, v, matched)| (v.code == ValidationCode::Valid, *matched));
                match best {
                    Some((d, v, _)) if v.code == ValidationCode::Valid => (d, Some(v.detail)),
                    Some((_, v, matched)) if matched > 0 => return Ok(outcome(v, None)),
                    _ => return Ok(outcome(not_activated(), None)),
                }
            }
        };
        // Only a set other than the activated one is written: the common call writes nothing.
        if let Some(presented) = &presented {
            device_history::observe_components(&self.writer, &device, presented.as_map(), now).await?;
        }
        let mut status = device_status(&device, license.version, now);
        if status == DeviceStatus::Dead {
            // What the read model holds may predate a heartbeat: ask the database.
            device = device::Entity::find_by_id(&device.id)
                .one(&self.db)
                .await?
                .ok_or(Error::NotFound("device"))?;
            if device.status == DeviceStatus::Released {
                return Ok(outcome(not_activated(), None));
            }
            status = device_status(&device, license.version, now);
        }
        if status == DeviceStatus::Dead {
            let since = device
                .heartbeat_deadline_at
                .map(|at| at.to_rfc3339())
                .unwrap_or_default();
            let device = if device.status == DeviceStatus::Dead {
                device
            } else {
                let tx = begin_write(&self.writer).await?;
                // The license row first, as every other seat change takes it (no deadlock).
                with_policy(&tx, license::Entity::find_by_id(&license.id), true).await?;
                let dead = mark_dead(&tx, license, policy, device, false, now).await?;
                tx.commit().await?;
                self.read_model.forget(&license.id);
                dead
            };
            let seat = if device.holds_seat {
                "its seat is kept"
            } else {
                "its seat was released"
            };
            return Ok(outcome(
                verdict(
                    ValidationCode::HeartbeatDead,
                    format!(
                        "the device missed its heartbeat deadline ({since}); {seat}: send a heartbeat or activate again"
                    ),
                ),
                Some(device),
            ));
        }
        if !missing.is_empty() {
            return Ok(outcome(
                verdict(
                    ValidationCode::EntitlementMissing,
                    format!("not entitled to: {}", missing.join(", ")),
                ),
                Some(device),
            ));
        }
        let until = license
            .expires_at
            .map_or("perpetual".to_owned(), |at| format!("valid until {}", at.to_rfc3339()));
        let detail = match note {
            Some(note) => format!("{until}; {note}"),
            None => until,
        };
        Ok(outcome(verdict(ValidationCode::Valid, detail), Some(device)))
    }
}

fn not_activated() -> Verdict {
    Verdict {
        code: ValidationCode::NotActivated,
        detail: "this machine is not activated on the license: activate it first".into(),
    }
}
