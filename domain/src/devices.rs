//! Devices: activation against the seat cap, validation, heartbeats, signed license files,
//! check-out and release.
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

use chrono::{DateTime, Duration, Utc};
use entity::enums::{AlertKind, DeadDeviceAction, DeploymentMode, DeviceStatus, LicenseStatus};
use entity::{device, license, policy, product, vendor};
use protocol::fingerprint::{self, Components};
use protocol::license_file::{self, DeviceBinding, LicensePayload, MeterGrant, UsageAck};
use protocol::validation::{ValidationCode, Verdict, check_fingerprint};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QuerySelect,
};
use serde_json::{Value, json};

use crate::alerts::{self, NewAlert};
use crate::audit::{self, Change};
use crate::catalog::{policy_meters, string_list};
use crate::db::begin_write;
use crate::device_tokens::DeviceTokens;
use crate::licenses::{effective_status, find_by_key, require_active, with_policy};
use crate::page::{self, Order, Page, PageRequest};
use crate::{Actor, ActorKind, Capability, Domain, Error, Result, Role, new_id, newtypes};

/// Shortest check-out.
pub const MIN_CHECK_OUT_SECONDS: i64 = 60;

/// What the shipped software sends to activate.
#[derive(Debug, Clone, Default)]
pub struct ActivateInput {
    /// The license key.
    pub license_key: String,
    /// The device's fingerprint.
    pub fingerprint: String,
    /// Named fingerprint components.
    pub components: Vec<(String, String)>,
    /// Display name.
    pub name: Option<String>,
    /// Host name.
    pub hostname: Option<String>,
    /// Platform (`linux-x86_64`).
    pub platform: Option<String>,
    /// The device's Ed25519 public key (base64), for signed offline files.
    pub public_key: Option<String>,
    /// Free-form JSON object.
    pub variables: Option<Value>,
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

/// What the shipped software sends to validate.
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

fn parse_components(pairs: &[(String, String)]) -> Result<Components> {
    fingerprint::components(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .map_err(|e| Error::InvalidInput(e.to_string()))
}

fn activation_limit_key(license_id: &str) -> String {
    format!("activation-limit:{license_id}")
}

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
    let change = Change {
        action,
        target_kind: "device",
        target_id: Some(&device.id),
        before,
        after: device_json(&device),
    };
    audit::record(tx, actor, now, change).await?;
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
    save_device(tx, actor, now, action, before, model).await
}

/// The last usage-ledger record the server acknowledged for a device (`usage_ack`).
pub(crate) fn acknowledged_usage(device: &device::Model) -> Option<UsageAck> {
    let seq = u64::try_from(device.ledger_seq?).ok()?;
    Some(UsageAck {
        seq,
        hash: device.ledger_hash.clone()?,
    })
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

/// Marks a device dead; its seat goes back to the license when the policy says so or when
/// `force_release` (a floating license reclaiming it).
async fn mark_dead(
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
    }
    device::Entity::find_by_id(&device.id)
        .one(tx)
        .await?
        .ok_or(Error::NotFound("device"))
}

/// What a device that lost its seat to the dead rule is told.
const SEAT_LOST: &str = "the device missed its heartbeat deadline and its seat was released: activate again";

/// Applies the dead rule to a device read under the license lock: past its deadline it is
/// marked dead. Returns the device, or `None` when it no longer holds a seat (the caller
/// commits the marking and refuses the request).
async fn apply_dead_rule(
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

/// Heartbeat intervals by license id. A license never changes policy and a policy never
/// changes, so an entry never goes stale.
#[derive(Default)]
pub(crate) struct HeartbeatIntervals(std::sync::Mutex<std::collections::HashMap<String, Option<i64>>>);

impl Domain {
    /// The heartbeat interval of a license's policy, cached.
    async fn heartbeat_interval(&self, license_id: &str) -> Result<Option<i64>> {
        let cached = self
            .heartbeat_intervals
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(license_id)
            .copied();
        if let Some(interval) = cached {
            return Ok(interval);
        }
        let (_, policy) = with_policy(&self.db, license::Entity::find_by_id(license_id), false)
            .await?
            .ok_or(Error::NotFound("license"))?;
        let mut intervals = self
            .heartbeat_intervals
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if intervals.len() >= 100_000 {
            intervals.clear();
        }
        intervals.insert(license_id.to_owned(), policy.heartbeat_interval_seconds);
        Ok(policy.heartbeat_interval_seconds)
    }

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
        let status = match effective_status(license, now) {
            LicenseStatus::Active => "ACTIVE",
            LicenseStatus::Suspended => "SUSPENDED",
            LicenseStatus::Revoked => "REVOKED",
            LicenseStatus::Expired => "EXPIRED",
        };
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
            status: status.into(),
            entitlements: string_list(&license.entitlements),
            meters: policy_meters(policy)
                .into_iter()
                .map(|m| MeterGrant {
                    code: m.code,
                    limit: m.limit,
                    reset_period: serde_json::to_value(m.reset_period)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
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
                components: serde_json::from_value(device.components.clone()).unwrap_or_default(),
            },
            min_component_matches: policy.min_component_matches.and_then(|n| u32::try_from(n).ok()),
            heartbeat_interval_seconds: policy.heartbeat_interval_seconds,
            checked_out_until,
            usage_ack: acknowledged_usage(device),
        };
        license_file::sign(&payload, &kid, &key).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Activates a device on a license: the same fingerprint again returns the same device and
    /// takes no second seat; a new one takes a seat if the cap allows. The activation that
    /// fills the last seat, and every refusal after it, leave one ACTIVATION_LIMIT_REACHED alert.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown key; [`Error::LicenseExpired`], [`Error::LicenseSuspended`],
    /// [`Error::LicenseRevoked`]; [`Error::ActivationLimitReached`]; [`Error::InvalidInput`].
    pub async fn activate_device(&self, input: ActivateInput, request_id: Option<String>) -> Result<Activation> {
        self.activate(input, request_id, None).await
    }

    /// The offline portal: staff upload a device's activation request and get a license file
    /// bound to it. Same seat rules as [`Self::activate_device`]; the license must be the
    /// caller's vendor's and its policy OFFLINE or HYBRID. The device needs no heartbeat.
    ///
    /// # Errors
    /// [`Error::InvalidFile`] for a request that does not parse or verify; [`Error::NotFound`]
    /// for a key of another vendor; [`Error::InvalidInput`] for an ONLINE policy; the
    /// activation errors.
    pub async fn generate_offline_license(&self, actor: &Actor, request: &str) -> Result<Activation> {
        actor.require(Capability::Support)?;
        let request = protocol::offline::read_request(request).map_err(|e| Error::InvalidFile(e.to_string()))?;
        let input = ActivateInput {
            license_key: request.license_key,
            fingerprint: request.fingerprint,
            components: request.components.into_iter().collect(),
            name: None,
            hostname: request.hostname,
            platform: request.platform,
            public_key: Some(request.device_public_key),
            variables: None,
        };
        self.activate(input, actor.request_id.clone(), Some(actor)).await
    }

    /// Activation online (`portal` = `None`, authenticated by the key) or through the offline
    /// portal by a staff member.
    async fn activate(
        &self,
        input: ActivateInput,
        request_id: Option<String>,
        portal: Option<&Actor>,
    ) -> Result<Activation> {
        let fingerprint = newtypes::text("fingerprint", &input.fingerprint, 256)?;
        let components = parse_components(&input.components)?;
        let name = newtypes::optional_text("name", input.name.as_deref(), 200)?;
        let hostname = newtypes::optional_text("hostname", input.hostname.as_deref(), 255)?;
        let platform = newtypes::optional_text("platform", input.platform.as_deref(), 100)?;
        let public_key = newtypes::optional_text("devicePublicKey", input.public_key.as_deref(), 200)?;
        if let Some(key) = &public_key {
            protocol::offline::decode_public_key(key)
                .map_err(|e| Error::InvalidInput(format!("devicePublicKey: {e}")))?;
        }
        if input
            .variables
            .as_ref()
            .is_some_and(|v| !v.is_object() || v.to_string().len() > 16 * 1024)
        {
            return Err(Error::InvalidInput(
                "variables must be a JSON object of at most 16 KiB".into(),
            ));
        }
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let (license, policy) = find_by_key(&self.secrets, &tx, &input.license_key, true)
            .await?
            .ok_or(Error::NotFound("license"))?;
        if portal.is_some_and(|staff| staff.vendor_id != license.vendor_id) {
            return Err(Error::NotFound("license"));
        }
        require_active(&license, now)?;
        match (portal, policy.deployment_mode) {
            (None, DeploymentMode::Offline) => {
                return Err(Error::InvalidInput(
                    "this license activates offline only: send an activation request file to the vendor".into(),
                ));
            }
            (Some(_), DeploymentMode::Online) => {
                return Err(Error::InvalidInput(
                    "this license's policy is ONLINE: the device must activate over the network".into(),
                ));
            }
            _ => {}
        }
        let licensee = licensee(&license, request_id);
        let existing = device::Entity::find()
            .filter(device::Column::LicenseId.eq(&license.id))
            .filter(device::Column::Fingerprint.eq(&fingerprint))
            .one(&tx)
            .await?;
        // A device activated by file cannot heartbeat: it lives by its file's refresh horizon.
        let (_, deadline) = if portal.is_some() {
            (None, None)
        } else {
            heartbeat_times(policy.heartbeat_interval_seconds, now)
        };
        let before = existing.as_ref().map_or(json!({}), device_json);
        let needs_seat = existing.as_ref().is_none_or(|d| !d.holds_seat);
        if needs_seat {
            let mut claimed = claim_seat(&tx, &license).await?;
            if !claimed && (policy.floating || policy.dead_device_action == DeadDeviceAction::ReleaseSeat) {
                claimed =
                    self.reclaim_dead_seat(&tx, &license, &policy, now).await? && claim_seat(&tx, &license).await?;
            }
            if !claimed {
                let message = format!(
                    "License ..{} has all {} seats taken; further activations are refused until a device is released.",
                    license.key_last4,
                    license.max_activations.unwrap_or_default()
                );
                raise_limit_alert(&tx, &license, message, now).await?;
                tx.commit().await?;
                return Err(Error::ActivationLimitReached(format!(
                    "all {} seats of this license are taken: release a device or ask the vendor for more seats",
                    license.max_activations.unwrap_or_default()
                )));
            }
            let seats = license::Entity::find_by_id(&license.id)
                .one(&tx)
                .await?
                .map_or(0, |l| l.seats_used);
            if license.max_activations.is_some_and(|max| seats >= max) {
                let message = format!(
                    "License ..{} now uses all {seats} of its seats; the next activation will be refused.",
                    license.key_last4
                );
                raise_limit_alert(&tx, &license, message, now).await?;
            }
        }
        let components_json = serde_json::to_value(&components).map_err(|e| Error::Internal(e.to_string()))?;
        let device = match existing {
            Some(current) => {
                let mut model: device::ActiveModel = current.clone().into();
                let checked_out = current
                    .checked_out_until
                    .filter(|until| current.status == DeviceStatus::CheckedOut && *until > now);
                match checked_out {
                    Some(until) => {
                        model.heartbeat_deadline_at = Set(heartbeat_times(policy.heartbeat_interval_seconds, until).1)
                    }
                    None => {
                        model.status = Set(DeviceStatus::Active);
                        model.checked_out_until = Set(None);
                        model.heartbeat_deadline_at = Set(deadline);
                    }
                }
                model.holds_seat = Set(true);
                model.offline = Set(portal.is_some());
                model.components = Set(components_json);
                model.name = Set(name.or(current.name));
                model.hostname = Set(hostname.or(current.hostname));
                model.platform = Set(platform.or(current.platform));
                // A new device key starts a new usage ledger (its genesis is bound to the
                // device, its records to the key): the old acknowledged position means nothing.
                if public_key.is_some() && public_key != current.public_key {
                    model.ledger_seq = Set(None);
                    model.ledger_hash = Set(None);
                }
                model.public_key = Set(public_key.or(current.public_key));
                if input.variables.is_some() {
                    model.variables = Set(input.variables);
                }
                model.last_seen_at = Set(Some(now));
                model.license_version = Set(license.version);
                // Every activation starts a new one: files signed before it (and deactivation
                // files written from them) belong to the earlier activation.
                model.activated_at = Set(now);
                if needs_seat {
                    model.released_at = Set(None);
                }
                model.updated_at = Set(now);
                model.update(&tx).await?
            }
            None => {
                device::ActiveModel {
                    id: Set(new_id()),
                    vendor_id: Set(license.vendor_id.clone()),
                    license_id: Set(license.id.clone()),
                    fingerprint: Set(fingerprint),
                    components: Set(components_json),
                    name: Set(name),
                    hostname: Set(hostname),
                    platform: Set(platform),
                    status: Set(DeviceStatus::Active),
                    holds_seat: Set(true),
                    offline: Set(portal.is_some()),
                    public_key: Set(public_key),
                    variables: Set(input.variables),
                    token_generation: Set(1),
                    license_version: Set(license.version),
                    activated_at: Set(now),
                    last_seen_at: Set(Some(now)),
                    heartbeat_deadline_at: Set(deadline),
                    checked_out_until: Set(None),
                    released_at: Set(None),
                    ledger_seq: Set(None),
                    ledger_hash: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(&tx)
                .await?
            }
        };
        let license_file = self.sign_license_file(&tx, &license, &policy, &device, now).await?;
        if needs_seat {
            audit::record(
                &tx,
                portal.unwrap_or(&licensee),
                now,
                Change {
                    action: if portal.is_some() {
                        "device.activate_offline"
                    } else {
                        "device.activate"
                    },
                    target_kind: "device",
                    target_id: Some(&device.id),
                    before,
                    after: device_json(&device),
                },
            )
            .await?;
        }
        tx.commit().await?;
        self.device_tokens.remember(&device);
        Ok(Activation {
            token: DeviceTokens::token(&self.secrets, &device.id, device.token_generation),
            actor: Actor {
                kind: ActorKind::Device {
                    device_id: device.id.clone(),
                    license_id: license.id.clone(),
                },
                label: format!("device {}", device.id),
                ..licensee
            },
            device,
            license_file,
        })
    }

    /// A freshly signed license file for a device, for staff to hand over (the refresh file of
    /// an offline device).
    ///
    /// # Errors
    /// [`Error::NotFound`] for another vendor's device; [`Error::InvalidInput`] for a released one.
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
        self.sign_license_file(&self.db, &license, &policy, &device, self.clock.now())
            .await
    }

    /// Marks the license's devices that are past their heartbeat deadline dead and releases
    /// their seats (a floating or `RELEASE_SEAT` license making room for a new device).
    /// Returns whether any device was overdue.
    async fn reclaim_dead_seat(
        &self,
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

    /// Validates a license key, and a device when a fingerprint is given. Never fails for a
    /// bad key: that is `NOT_FOUND`, answered by the same lookup a good key costs.
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
        let Some((license, policy)) = find_by_key(&self.secrets, &self.db, &input.license_key, false).await? else {
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
        let actor = licensee(&license, request_id);
        let outcome = |verdict: Verdict, device: Option<device::Model>| ValidationOutcome {
            verdict,
            license: Some(license.clone()),
            device,
            actor: Some(actor.clone()),
        };
        match effective_status(&license, now) {
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
        let entitlements = string_list(&license.entitlements);
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
        let presented = match input.components.as_deref().map(parse_components).transpose() {
            Ok(c) => c,
            Err(e) => {
                return Ok(outcome(
                    verdict(ValidationCode::FingerprintMismatch, e.to_string()),
                    None,
                ));
            }
        };
        let exact = device::Entity::find()
            .filter(device::Column::LicenseId.eq(&license.id))
            .filter(device::Column::Fingerprint.eq(&fingerprint))
            .filter(device::Column::Status.ne(DeviceStatus::Released))
            .one(&self.db)
            .await?;
        let (device, note) = match exact {
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
                let presented = presented.clone().unwrap_or_default();
                let best = candidates
                    .into_iter()
                    .map(|d| {
                        let activated: Components = serde_json::from_value(d.components.clone()).unwrap_or_default();
                        let v = check_fingerprint(
                            &activated,
                            &d.fingerprint,
                            &presented,
                            &fingerprint,
                            policy.min_component_matches.and_then(|n| u32::try_from(n).ok()),
                        );
                        let matched = fingerprint::compare(&activated, &presented).matched;
                        (d, v, matched)
                    })
                    .max_by_key(|(_, v, matched)| (v.code == ValidationCode::Valid, *matched));
                match best {
                    Some((d, v, _)) if v.code == ValidationCode::Valid => (d, Some(v.detail)),
                    Some((_, v, matched)) if matched > 0 => return Ok(outcome(v, None)),
                    _ => {
                        return Ok(outcome(
                            verdict(
                                ValidationCode::NotActivated,
                                "this machine is not activated on the license: activate it first".into(),
                            ),
                            None,
                        ));
                    }
                }
            }
        };
        let status = device_status(&device, license.version, now);
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
                let dead = mark_dead(&tx, &license, &policy, device, false, now).await?;
                tx.commit().await?;
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
    async fn live_caller_device(
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
                Err(Error::DeviceDead(SEAT_LOST.into()))
            }
        }
    }

    /// Records a heartbeat. A device past its deadline is dead: with `KEEP_SEAT` the
    /// heartbeat revives it, with `RELEASE_SEAT` it has lost its seat and must activate again.
    ///
    /// # Errors
    /// [`Error::DeviceDead`]; [`Error::Forbidden`] without a device token.
    pub async fn heartbeat(&self, actor: &Actor) -> Result<HeartbeatOutcome> {
        let (device_id, license_id) = actor.device()?;
        let now = self.clock.now();
        // The common case in one statement: a seated, active device within its deadline.
        let interval = self.heartbeat_interval(license_id).await?;
        let (due, deadline) = heartbeat_times(interval, now);
        let updated = device::Entity::update_many()
            .col_expr(device::Column::LastSeenAt, Expr::value(Some(now)))
            .col_expr(device::Column::HeartbeatDeadlineAt, Expr::value(deadline))
            .col_expr(device::Column::UpdatedAt, Expr::value(now))
            .filter(device::Column::Id.eq(device_id))
            .filter(device::Column::VendorId.eq(&actor.vendor_id))
            .filter(device::Column::Status.eq(DeviceStatus::Active))
            .filter(device::Column::HoldsSeat.eq(true))
            .filter(
                sea_orm::Condition::any()
                    .add(device::Column::HeartbeatDeadlineAt.is_null())
                    .add(device::Column::HeartbeatDeadlineAt.gte(now)),
            )
            .exec_with_returning(&self.writer)
            .await?;
        if let Some(device) = updated.into_iter().next() {
            let license = license::Entity::find_by_id(license_id)
                .one(&self.db)
                .await?
                .ok_or(Error::NotFound("license"))?;
            return Ok(HeartbeatOutcome {
                update_available: device.license_version < license.version,
                license_version: license.version,
                next_heartbeat_due_at: due,
                device,
            });
        }
        // Everything else (dead, checked out, released) under the license lock.
        let (tx, device, license, policy) = self.live_caller_device(actor, now).await?;
        let checked_out = device
            .checked_out_until
            .filter(|until| device.status == DeviceStatus::CheckedOut && *until > now);
        let (due, deadline) = heartbeat_times(policy.heartbeat_interval_seconds, checked_out.unwrap_or(now));
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
        tx.commit().await?;
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
        Ok(file)
    }

    /// Ends the calling device's check-out early; it heartbeats again from now on.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the device is not checked out.
    pub async fn check_in_device(&self, actor: &Actor) -> Result<device::Model> {
        let now = self.clock.now();
        let (tx, device, _license, policy) = self.live_caller_device(actor, now).await?;
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

    /// Releases a device (staff): frees its seat and revokes its token at once.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for READ_ONLY; [`Error::NotFound`] for another vendor's device.
    pub async fn release_device(&self, actor: &Actor, id: &str) -> Result<device::Model> {
        actor.require(Capability::Support)?;
        self.release(actor, id, "device.release").await
    }

    async fn release(&self, actor: &Actor, device_id: &str, action: &str) -> Result<device::Model> {
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
        self.device_tokens.remember(&device);
        Ok(device)
    }

    /// The vendor's devices, oldest first.
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
            ActorKind::Licensee { license_id } | ActorKind::Device { license_id, .. } => {
                select = select.filter(device::Column::LicenseId.eq(license_id.as_str()));
            }
            _ => actor.require(Capability::Read)?,
        }
        if let Some(id) = &filter.license_id {
            select = select.filter(device::Column::LicenseId.eq(id));
        }
        if let Some(status) = filter.status {
            let now = self.clock.now();
            let behind = Expr::cust(
                "devices.license_version < (SELECT licenses.version FROM licenses WHERE licenses.id = devices.license_id)",
            );
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
                DeviceStatus::Active => live.add(out_now.not()).add(Expr::cust("NOT (devices.license_version < (SELECT licenses.version FROM licenses WHERE licenses.id = devices.license_id))")),
                DeviceStatus::PendingSync => live.add(out_now.not()).add(behind),
                DeviceStatus::CheckedOut => live.add(out_now),
                DeviceStatus::Dead => sea_orm::Condition::any()
                    .add(device::Column::Status.eq(DeviceStatus::Dead))
                    .add(
                        sea_orm::Condition::all()
                            .add(device::Column::Status.is_in([DeviceStatus::Active, DeviceStatus::PendingSync, DeviceStatus::CheckedOut]))
                            .add(device::Column::HeartbeatDeadlineAt.lt(now)),
                    ),
                DeviceStatus::Released => sea_orm::Condition::all().add(device::Column::Status.eq(DeviceStatus::Released)),
            });
        }
        page::fetch(&self.db, select, device::Column::Id, request, Order::OldestFirst).await
    }

    /// Devices by id (for a DataLoader).
    ///
    /// # Errors
    /// Database errors.
    pub async fn devices_by_ids(&self, actor: &Actor, ids: &[String]) -> Result<Vec<device::Model>> {
        Ok(device::Entity::find()
            .filter(device::Column::VendorId.eq(&actor.vendor_id))
            .filter(device::Column::Id.is_in(ids.iter().map(String::as_str)))
            .all(&self.db)
            .await?)
    }
}
