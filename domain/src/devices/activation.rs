//! Activation: a device takes a seat on a license and gets a token and a signed license file.
//!
//! Two entry points, one per way in, over the same named steps:
//! - [`Domain::activate_device`]: online, authenticated by the license key; the device
//!   heartbeats from now on when its policy asks for it;
//! - [`Domain::generate_offline_license`]: the offline portal; a staff member uploads the
//!   device's activation request file; the device lives by its file's refresh horizon.
//!
//! Both open the license row under lock ([`locked_license`]), then [`Domain::bind_device`]
//! takes a seat unless the device holds one, creates or refreshes the device row, signs its
//! file, writes the audit event and commits.

use chrono::{DateTime, Utc};
use entity::enums::{DeploymentMode, DeviceStatus};
use entity::{device, license, policy};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter};
use serde_json::json;

use super::seats::{seats_taken, take_seat};
use super::{ActivateInput, Activation, device_json, heartbeat_times, licensee};
use super::{prune, reactivation};
use crate::audit::{self, Change};
use crate::db::begin_write;
use crate::device_history;
use crate::device_tokens::DeviceTokens;
use crate::licenses::{find_by_key, require_active};
use crate::newtypes::{DeviceComponents, DevicePublicKey, Fingerprint, Text};
use crate::webhooks;
use crate::{Actor, ActorKind, Capability, Domain, Error, Result, new_id};

/// How the device being bound came in: what differs between the two entry points.
struct Arrival<'a> {
    /// Who the audit log names: the key holder online, the staff member for the portal.
    actor: &'a Actor,
    /// The audit action.
    action: &'static str,
    /// Activated by file: no heartbeats, it lives by its file's refresh horizon.
    offline: bool,
    /// When the device counts as dead if it does not heartbeat (`None`: never).
    heartbeat_deadline: Option<DateTime<Utc>>,
}

impl Domain {
    /// Activates a device on a license: the same fingerprint again returns the same device and
    /// takes no second seat, with a new token (the old one is revoked: see `reactivation.rs`
    /// for the key proof and the anomaly rules); a new one takes a seat if the cap allows. The activation that
    /// fills the last seat, and every refusal after it, leave one ACTIVATION_LIMIT_REACHED alert.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown key; [`Error::LicenseExpired`], [`Error::LicenseSuspended`],
    /// [`Error::LicenseRevoked`]; [`Error::ActivationLimitReached`]; [`Error::InvalidInput`] for
    /// an OFFLINE policy.
    pub async fn activate_device(&self, input: ActivateInput, request_id: Option<String>) -> Result<Activation> {
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let (license, policy) = locked_license(self, &tx, &input.license_key).await?;
        require_active(&license, now)?;
        if policy.deployment_mode == DeploymentMode::Offline {
            return Err(Error::InvalidInput(
                "this license activates offline only: send an activation request file to the vendor".into(),
            ));
        }
        let licensee = licensee(&license, request_id);
        let arrival = Arrival {
            actor: &licensee,
            action: "device.activate",
            offline: false,
            heartbeat_deadline: heartbeat_times(policy.heartbeat_interval_seconds, now).1,
        };
        let (device, license_file) = self.bind_device(tx, &license, &policy, input, &arrival, now).await?;
        Ok(self.activation(device, license_file, licensee))
    }

    /// The offline portal: staff upload a device's activation request and get a license file
    /// bound to it. Same seat rules as [`Self::activate_device`]; the license must be the
    /// caller's vendor's and its policy OFFLINE or HYBRID. The device needs no heartbeat.
    ///
    /// # Errors
    /// [`Error::InvalidFile`] for a request that does not parse or verify; [`Error::NotFound`]
    /// for a key of another vendor; [`Error::InvalidInput`] for an ONLINE policy or a request
    /// whose fields are out of bounds; the activation errors.
    pub async fn generate_offline_license(&self, actor: &Actor, request: &str) -> Result<Activation> {
        actor.require(Capability::Support)?;
        let request = protocol::offline::read_request(request).map_err(|e| Error::InvalidFile(e.to_string()))?;
        let input = ActivateInput {
            license_key: request.license_key,
            fingerprint: Fingerprint::try_from(request.fingerprint.as_str())?,
            components: DeviceComponents::try_from(&request.components)?,
            name: None,
            hostname: Text::optional("hostname", request.hostname.as_deref())?,
            platform: Text::optional("platform", request.platform.as_deref())?,
            public_key: Some(DevicePublicKey::try_from(request.device_public_key.as_str())?),
            variables: None,
            key_proof: None,
        };
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let (license, policy) = locked_license(self, &tx, &input.license_key).await?;
        if license.vendor_id != actor.vendor_id {
            return Err(Error::NotFound("license"));
        }
        require_active(&license, now)?;
        if policy.deployment_mode == DeploymentMode::Online {
            return Err(Error::InvalidInput(
                "this license's policy is ONLINE: the device must activate over the network".into(),
            ));
        }
        let arrival = Arrival {
            actor,
            action: "device.activate_offline",
            offline: true,
            heartbeat_deadline: None,
        };
        let (device, license_file) = self.bind_device(tx, &license, &policy, input, &arrival, now).await?;
        Ok(self.activation(device, license_file, licensee(&license, actor.request_id.clone())))
    }

    /// The steps both entry points share, in `tx` which holds the license row: take a seat
    /// unless the device holds one (a refusal commits its alert, then errs), create or refresh
    /// the device row, sign its file, write the audit event of a new seat, commit.
    async fn bind_device(
        &self,
        tx: DatabaseTransaction,
        license: &license::Model,
        policy: &policy::Model,
        input: ActivateInput,
        arrival: &Arrival<'_>,
        now: DateTime<Utc>,
    ) -> Result<(device::Model, String)> {
        let existing = device::Entity::find()
            .filter(device::Column::LicenseId.eq(&license.id))
            .filter(device::Column::Fingerprint.eq(input.fingerprint.as_str()))
            .one(&tx)
            .await?;
        // A live row activated again online: a reinstall or a takeover (see `reactivation.rs`).
        let reactivating = existing
            .as_ref()
            .filter(|d| !arrival.offline && d.status != DeviceStatus::Released)
            .cloned();
        if let Some(current) = &reactivating
            && reactivation::needs_proof(policy.require_device_key_proof, current)
        {
            let new_key = input.public_key.clone().map(DevicePublicKey::into_inner);
            // Refused before anything is written: the transaction rolls back on drop.
            reactivation::check_proof(self, current, input.key_proof.as_ref(), new_key.as_deref(), now)?;
        }
        let before = existing.as_ref().map_or(json!({}), device_json);
        let needs_seat = existing.as_ref().is_none_or(|d| !d.holds_seat);
        if needs_seat && !take_seat(&tx, license, policy, now).await? {
            // Dead seats may have been reclaimed meanwhile.
            tx.commit().await?;
            self.read_model.forget(&license.id);
            return Err(seats_taken(license));
        }
        // A new seat, or a dead device that kept its seat coming back, is a move into ACTIVE.
        let revives = existing.as_ref().is_some_and(|d| d.status == DeviceStatus::Dead);
        let device = match existing {
            Some(current) => {
                let refresh = Refresh {
                    took_seat: needs_seat,
                    reactivated: reactivating.is_some(),
                };
                refresh_device(&tx, license, policy, current, input, arrival, refresh, now).await?
            }
            None => {
                let device = insert_device(&tx, license, input, arrival, now).await?;
                prune::prune_released(&tx, license).await?;
                device
            }
        };
        if let Some(current) = &reactivating {
            let key_changed = device.public_key != current.public_key;
            reactivation::flag_repeated(&tx, current, key_changed, now).await?;
            let change = Change::new(
                "device.reactivate",
                "device",
                &device.id,
                json!({ "token_generation": current.token_generation }),
                json!({ "token_generation": device.token_generation, "public_key_changed": key_changed }),
            );
            audit::record(&tx, arrival.actor, now, change).await?;
        }
        if needs_seat || revives {
            device_history::record_status(&tx, &device, DeviceStatus::Active, now).await?;
            let object = webhooks::objects::device(&device);
            webhooks::events::record(&tx, &device.vendor_id, "device.activated", object, now).await?;
        }
        let license_file = self.sign_license_file(&tx, license, policy, &device, now).await?;
        if needs_seat {
            let change = Change::new(arrival.action, "device", &device.id, before, device_json(&device));
            audit::record(&tx, arrival.actor, now, change).await?;
        }
        tx.commit().await?;
        self.read_model.forget(&license.id);
        Ok((device, license_file))
    }

    /// The answer to an activation: the device, its token, its file, and the device as an
    /// actor for reading the result.
    fn activation(&self, device: device::Model, license_file: String, licensee: Actor) -> Activation {
        let license_id = device.license_id.clone();
        Activation {
            token: DeviceTokens::token(&self.secrets, &device.id, device.token_generation),
            actor: Actor {
                kind: ActorKind::Device {
                    device_id: device.id.clone(),
                    license_id,
                },
                label: format!("device {}", device.id),
                ..licensee
            },
            device,
            license_file,
        }
    }
}

/// The license of `key` (whatever its vendor: the key is the credential) with its policy,
/// its row locked in `tx`.
async fn locked_license(
    domain: &Domain,
    tx: &DatabaseTransaction,
    key: &str,
) -> Result<(license::Model, policy::Model)> {
    find_by_key(&domain.secrets, tx, key, true)
        .await?
        .ok_or(Error::NotFound("license"))
}

/// What `refresh_device` is told about the activation.
#[derive(Clone, Copy)]
struct Refresh {
    /// The device took a seat now (it held none).
    took_seat: bool,
    /// A live row activated again online (a reinstall or a takeover): remembered for the
    /// DEVICE_REACTIVATION rule.
    reactivated: bool,
}

/// A device activating again (a reinstall, a new request file, a device that lost its seat):
/// its row is refreshed in place; a check-out still running is kept. Its token generation is
/// bumped: the token of the earlier activation is revoked at once.
#[expect(clippy::too_many_arguments, reason = "one step of bind_device, reading its locals")]
async fn refresh_device(
    tx: &DatabaseTransaction,
    license: &license::Model,
    policy: &policy::Model,
    current: device::Model,
    input: ActivateInput,
    arrival: &Arrival<'_>,
    refresh: Refresh,
    now: DateTime<Utc>,
) -> Result<device::Model> {
    let took_seat = refresh.took_seat;
    let mut model: device::ActiveModel = current.clone().into();
    let checked_out = current
        .checked_out_until
        .filter(|until| current.status == DeviceStatus::CheckedOut && *until > now);
    match checked_out {
        Some(until) => model.heartbeat_deadline_at = Set(heartbeat_times(policy.heartbeat_interval_seconds, until).1),
        None => {
            model.status = Set(DeviceStatus::Active);
            model.checked_out_until = Set(None);
            model.heartbeat_deadline_at = Set(arrival.heartbeat_deadline);
        }
    }
    let public_key = input.public_key.map(DevicePublicKey::into_inner);
    model.holds_seat = Set(true);
    model.offline = Set(arrival.offline);
    model.components = Set(input.components.into());
    model.name = Set(input.name.map(Text::into_inner).or(current.name));
    model.hostname = Set(input.hostname.map(Text::into_inner).or(current.hostname));
    model.platform = Set(input.platform.map(Text::into_inner).or(current.platform));
    // A new device key starts a new usage ledger (its genesis is bound to the device, its
    // records to the key): the old acknowledged position means nothing.
    if public_key.is_some() && public_key != current.public_key {
        model.ledger_seq = Set(None);
        model.ledger_hash = Set(None);
    }
    model.public_key = Set(public_key.or(current.public_key));
    if let Some(variables) = input.variables {
        model.variables = Set(Some(variables.into_inner()));
    }
    model.last_seen_at = Set(Some(now));
    model.token_generation = Set(current.token_generation.saturating_add(1));
    if refresh.reactivated {
        model.reactivated_at = Set(Some(now));
    }
    model.license_version = Set(license.version);
    // Every activation starts a new one: files signed before it (and deactivation files
    // written from them) belong to the earlier activation.
    model.activated_at = Set(now);
    if took_seat {
        model.released_at = Set(None);
    }
    model.updated_at = Set(now);
    Ok(model.update(tx).await?)
}

/// A device activating for the first time on this license.
async fn insert_device(
    tx: &DatabaseTransaction,
    license: &license::Model,
    input: ActivateInput,
    arrival: &Arrival<'_>,
    now: DateTime<Utc>,
) -> Result<device::Model> {
    let device = device::ActiveModel {
        id: Set(new_id()),
        vendor_id: Set(license.vendor_id.clone()),
        license_id: Set(license.id.clone()),
        fingerprint: Set(input.fingerprint.into_inner()),
        components: Set(input.components.into()),
        name: Set(input.name.map(Text::into_inner)),
        hostname: Set(input.hostname.map(Text::into_inner)),
        platform: Set(input.platform.map(Text::into_inner)),
        status: Set(DeviceStatus::Active),
        holds_seat: Set(true),
        offline: Set(arrival.offline),
        public_key: Set(input.public_key.map(DevicePublicKey::into_inner)),
        variables: Set(input.variables.map(crate::newtypes::JsonObject::into_inner)),
        token_generation: Set(1),
        license_version: Set(license.version),
        activated_at: Set(now),
        last_seen_at: Set(Some(now)),
        heartbeat_deadline_at: Set(arrival.heartbeat_deadline),
        checked_out_until: Set(None),
        released_at: Set(None),
        reactivated_at: Set(None),
        ledger_seq: Set(None),
        ledger_hash: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    };
    Ok(device.insert(tx).await?)
}
