//! Devices: what the shipped software calls (activate, validate, heartbeat, license files,
//! check-out, deactivate) and what staff see and do (devices, releaseDevice).

use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::device;

use crate::graphql::connection::{Connection, from_page, page_request};
use crate::graphql::context::{ClientIp, ContextExt, Scope, scope_of};
use crate::graphql::device_keys::KeyProofInput;
use crate::graphql::error::{ApiError, ApiResult, ErrorCode};
use crate::graphql::licenses::License;
use crate::graphql::page_cost;
use crate::limits::RateLimiter;
use domain::newtypes::{DeviceComponents, DevicePublicKey, Fingerprint, JsonObject, Text};

/// A device's state.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::DeviceStatus")]
pub enum DeviceStatus {
    /// Activated and in sync.
    Active,
    /// The license changed since the device's file: it should call `fetchLicenseFile`.
    PendingSync,
    /// Checked out for off-network use.
    CheckedOut,
    /// Missed its heartbeat deadline.
    Dead,
    /// Deactivated or released; holds no seat.
    Released,
}

/// The outcome of a validation.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "protocol::validation::ValidationCode")]
pub enum ValidationCode {
    /// Valid.
    Valid,
    /// No license has this key.
    NotFound,
    /// Past its expiry.
    Expired,
    /// Suspended.
    Suspended,
    /// Revoked.
    Revoked,
    /// This device is not activated on the license.
    NotActivated,
    /// The fingerprint does not match the activation.
    FingerprintMismatch,
    /// A required entitlement is not granted.
    EntitlementMissing,
    /// The device missed its heartbeat deadline.
    HeartbeatDead,
}

/// A device activated on a license. A device token reads only itself (its siblings are not
/// listed in `License.devices` and not found by id).
#[derive(Clone)]
pub struct Device {
    model: device::Model,
    scope: Option<Scope>,
}

impl From<device::Model> for Device {
    fn from(model: device::Model) -> Self {
        Self { model, scope: None }
    }
}

impl Device {
    /// The device with this id, batched through the request's loader; `None` without an id
    /// (or for another vendor's id).
    ///
    /// # Errors
    /// Unauthenticated callers; database errors.
    pub async fn by_id(ctx: &Context<'_>, id: Option<&str>) -> ApiResult<Option<Self>> {
        let Some(id) = id else {
            return Ok(None);
        };
        Ok(ctx
            .scope()?
            .loaders()
            .devices
            .load_one(id.to_owned())
            .await?
            .map(Into::into))
    }

    /// A device read under its own scope (for callers without a token).
    #[must_use]
    pub fn scoped(model: device::Model, scope: Option<Scope>) -> Self {
        Self { model, scope }
    }

    async fn license_model(&self, ctx: &Context<'_>) -> ApiResult<entity::license::Model> {
        let scope = scope_of(ctx, &self.scope)?;
        scope
            .loaders()
            .licenses
            .load_one(self.model.license_id.clone())
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "license not found"))
    }
}

#[Object]
impl Device {
    /// Device id.
    async fn id(&self) -> ID {
        self.model.id.clone().into()
    }

    /// The license it is activated on.
    async fn license(&self, ctx: &Context<'_>) -> ApiResult<License> {
        Ok(License::scoped(self.license_model(ctx).await?, self.scope.clone()))
    }

    /// Its fingerprint.
    async fn fingerprint(&self) -> &str {
        &self.model.fingerprint
    }

    /// Its fingerprint components.
    async fn components(&self) -> Json<protocol::fingerprint::Components> {
        Json(self.model.components.0.clone())
    }

    /// Status now (PENDING_SYNC and DEAD are computed from the license and the clock).
    async fn status(&self, ctx: &Context<'_>) -> ApiResult<DeviceStatus> {
        let license = self.license_model(ctx).await?;
        Ok(domain::devices::device_status(&self.model, license.version, ctx.domain().clock.now()).into())
    }

    /// Whether it was activated by file (the offline portal) and so never heartbeats.
    async fn offline(&self) -> bool {
        self.model.offline
    }

    /// Whether it counts against the license's seats.
    async fn holds_seat(&self) -> bool {
        self.model.holds_seat
    }

    /// Display name.
    async fn name(&self) -> Option<&str> {
        self.model.name.as_deref()
    }

    /// Host name.
    async fn hostname(&self) -> Option<&str> {
        self.model.hostname.as_deref()
    }

    /// Platform.
    async fn platform(&self) -> Option<&str> {
        self.model.platform.as_deref()
    }

    /// When it was activated.
    async fn activated_at(&self) -> DateTime<Utc> {
        self.model.activated_at
    }

    /// When it was last heard from.
    async fn last_seen_at(&self) -> Option<DateTime<Utc>> {
        self.model.last_seen_at
    }

    /// When its next heartbeat is due (null when the policy needs none).
    async fn next_heartbeat_due_at(&self, ctx: &Context<'_>) -> ApiResult<Option<DateTime<Utc>>> {
        let license = self.license_model(ctx).await?;
        let scope = scope_of(ctx, &self.scope)?;
        let policy = scope.loaders().policies.load_one(license.policy_id).await?;
        Ok(domain::devices::next_heartbeat_due(
            &self.model,
            policy.and_then(|p| p.heartbeat_interval_seconds),
        ))
    }

    /// When it counts as dead without a heartbeat.
    async fn heartbeat_deadline_at(&self) -> Option<DateTime<Utc>> {
        self.model.heartbeat_deadline_at
    }

    /// Version of the license file the device holds.
    async fn license_version(&self) -> i32 {
        self.model.license_version
    }

    /// End of its check-out.
    async fn checked_out_until(&self) -> Option<DateTime<Utc>> {
        self.model.checked_out_until
    }

    /// When it was released.
    async fn released_at(&self) -> Option<DateTime<Utc>> {
        self.model.released_at
    }

    /// Free-form variables the device reported.
    async fn variables(&self) -> Option<Json<serde_json::Value>> {
        self.model.variables.clone().map(Json)
    }
}

/// One fingerprint component.
#[derive(InputObject)]
pub struct ComponentInput {
    /// Name (`mac`, `cpu`, `disk`, `hostid`...).
    pub name: String,
    /// Value.
    pub value: String,
}

fn pairs(components: Option<Vec<ComponentInput>>) -> Vec<(String, String)> {
    components
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name, c.value))
        .collect()
}

/// What the shipped software sends to activate.
#[derive(InputObject)]
pub struct ActivateDeviceInput {
    /// The license key.
    pub license_key: String,
    /// The device's fingerprint.
    pub fingerprint: String,
    /// Fingerprint components, for k-of-n matching later.
    pub components: Option<Vec<ComponentInput>>,
    /// Display name.
    pub name: Option<String>,
    /// Host name.
    pub hostname: Option<String>,
    /// Platform.
    pub platform: Option<String>,
    /// The device's Ed25519 public key, base64.
    pub device_public_key: Option<String>,
    /// A JSON object of your own.
    pub variables: Option<Json<serde_json::Value>>,
    /// Re-activating a device that is still active under a policy with
    /// `requireDeviceKeyProof`: proof of the device key it was activated with.
    pub key_proof: Option<KeyProofInput>,
}

/// What the shipped software sends to validate.
#[derive(InputObject)]
pub struct ValidateLicenseInput {
    /// The license key.
    pub license_key: String,
    /// The device's fingerprint; omit to check the license alone.
    pub fingerprint: Option<String>,
    /// Fingerprint components, for k-of-n matching.
    pub components: Option<Vec<ComponentInput>>,
    /// Entitlements the software needs.
    pub entitlements: Option<Vec<String>>,
}

/// A successful activation.
#[derive(SimpleObject)]
pub struct Activation {
    /// The device.
    pub device: Device,
    /// Send as `Authorization: Bearer <deviceToken>` for heartbeats and the other device calls.
    pub device_token: String,
    /// A license file bound to this device.
    pub license_file: String,
}

/// What the offline portal returns.
#[derive(SimpleObject)]
pub struct OfflineActivation {
    /// The device the request activated.
    pub device: Device,
    /// A license file bound to it, to hand back to the device.
    pub license_file: String,
}

/// The answer to a validation.
#[derive(SimpleObject)]
pub struct Validation {
    /// Whether the license is valid for this request.
    pub valid: bool,
    /// Why.
    pub code: ValidationCode,
    /// A sentence a person can act on.
    pub detail: String,
    /// The license, when the key was found.
    pub license: Option<License>,
    /// The device, when one matched.
    pub device: Option<Device>,
}

/// The answer to a heartbeat.
#[derive(SimpleObject)]
pub struct Heartbeat {
    /// The device.
    pub device: Device,
    /// When the next heartbeat is due.
    pub next_heartbeat_due_at: Option<DateTime<Utc>>,
    /// The license's current version.
    pub license_version: i32,
    /// The license changed since the device's file: call `fetchLicenseFile`.
    pub update_available: bool,
}

/// Filters for `devices`.
#[derive(InputObject, Default)]
pub struct DeviceFilter {
    /// Of this license.
    pub license_id: Option<ID>,
    /// In this status.
    pub status: Option<DeviceStatus>,
}

/// Unknown license keys one client address may try per minute (`activateDevice` and
/// `validateLicense`); past it an unknown key answers RATE_LIMITED instead of NOT_FOUND. Only
/// keys that were not found count or are refused: a known key is never blocked, so a site
/// behind one address keeps working while someone there guesses.
pub const MAX_UNKNOWN_KEYS_PER_MINUTE: u32 = 60;
/// `activateDevice` calls per license key per minute (then RATE_LIMITED with `retryAfter`).
pub const ACTIVATIONS_PER_KEY_PER_MINUTE: u32 = 300;
/// `validateLicense` calls per license key per minute, all devices together (then
/// RATE_LIMITED with `retryAfter`): room for a 5 000-seat site validating every minute.
pub const VALIDATIONS_PER_KEY_PER_MINUTE: u32 = 6000;
/// `validateLicense` calls per license key and fingerprint per minute: one machine cannot use
/// up its site's budget.
pub const VALIDATIONS_PER_DEVICE_PER_MINUTE: u32 = 60;
/// `validateLicense` calls per license key per minute that name no fingerprint (a check of
/// the license alone).
pub const VALIDATIONS_WITHOUT_DEVICE_PER_MINUTE: u32 = 600;
/// `heartbeat` calls per device per minute (then RATE_LIMITED with `retryAfter`).
pub const HEARTBEATS_PER_DEVICE_PER_MINUTE: u32 = 60;

/// The device-facing rate limiters, shared by all requests.
pub struct DeviceLimiters {
    /// Unknown license keys per client address.
    pub unknown_keys: RateLimiter,
    /// Activations per license key.
    pub activations: RateLimiter,
    /// Validations per license key.
    pub validations: RateLimiter,
    /// Validations per license key and fingerprint (none: the license alone).
    pub device_validations: RateLimiter,
    /// Validations per license key that name no fingerprint.
    pub keyless_validations: RateLimiter,
    /// Heartbeats per device.
    pub heartbeats: RateLimiter,
}

impl Default for DeviceLimiters {
    fn default() -> Self {
        let minute = std::time::Duration::from_secs(60);
        Self {
            unknown_keys: RateLimiter::new(MAX_UNKNOWN_KEYS_PER_MINUTE, minute),
            activations: RateLimiter::new(ACTIVATIONS_PER_KEY_PER_MINUTE, minute),
            validations: RateLimiter::new(VALIDATIONS_PER_KEY_PER_MINUTE, minute),
            device_validations: RateLimiter::new(VALIDATIONS_PER_DEVICE_PER_MINUTE, minute),
            keyless_validations: RateLimiter::new(VALIDATIONS_WITHOUT_DEVICE_PER_MINUTE, minute),
            heartbeats: RateLimiter::new(HEARTBEATS_PER_DEVICE_PER_MINUTE, minute),
        }
    }
}

fn device_limiters<'a>(ctx: &'a Context<'_>) -> &'a DeviceLimiters {
    ctx.data_unchecked::<std::sync::Arc<DeviceLimiters>>()
}

/// Counts a call against the budget of the license key as typed (canonical form: a key typed
/// in lower case or without dashes is the same key), and first against a narrower one when
/// given (`(limiter, fingerprint, what)`: the key with that fingerprint). A string that is not
/// a key has no budget: it is never found, and the unknown-key limit applies to it.
fn per_key_budget(
    (limiter, what): (&RateLimiter, &str),
    narrower: Option<(&RateLimiter, &str, &str)>,
    typed: &str,
) -> ApiResult<()> {
    let Ok(key) = domain::newtypes::LicenseKey::parse(typed) else {
        return Ok(());
    };
    if let Some((narrower, fingerprint, what)) = narrower {
        narrower
            .check(&(key.canonical(), fingerprint))
            .map_err(|seconds| ApiError::rate_limited(what, seconds))?;
    }
    limiter
        .check(key.canonical())
        .map_err(|seconds| ApiError::rate_limited(what, seconds))
}

/// Counts a call against the activation budget of `license_key` (`activateDevice`,
/// `deviceKeyChallenge`).
///
/// # Errors
/// RATE_LIMITED past [`ACTIVATIONS_PER_KEY_PER_MINUTE`].
pub fn activation_budget(ctx: &Context<'_>, license_key: &str) -> ApiResult<()> {
    per_key_budget(
        (&device_limiters(ctx).activations, "activations of this license key"),
        None,
        license_key,
    )
}

/// Counts an unknown key against the caller's address: `Err` when the address is past
/// [`MAX_UNKNOWN_KEYS_PER_MINUTE`].
fn unknown_key_guard(limiters: &DeviceLimiters, client_ip: &str) -> ApiResult<()> {
    limiters
        .unknown_keys
        .check(client_ip)
        .map_err(|seconds| ApiError::rate_limited("unknown license keys", seconds))
}

/// `validateLicense` for a caller at `client_ip`: the resolver, and the direct path of the
/// trusted document (`crate::graphql::trusted`), which must answer the same.
///
/// # Errors
/// RATE_LIMITED past a key's budgets, or past the unknown keys one address may try.
pub async fn validate(
    domain: &domain::Domain,
    limiters: &DeviceLimiters,
    client_ip: &str,
    request_id: Option<String>,
    input: ValidateLicenseInput,
) -> ApiResult<Validation> {
    let narrower = match input.fingerprint.as_deref() {
        Some(fingerprint) => (
            &limiters.device_validations,
            fingerprint,
            "validations of this license key by this device",
        ),
        None => (
            &limiters.keyless_validations,
            "",
            "validations of this license key without a fingerprint",
        ),
    };
    per_key_budget(
        (&limiters.validations, "validations of this license key"),
        Some(narrower),
        &input.license_key,
    )?;
    let outcome = domain
        .validate_license(
            domain::devices::ValidateInput {
                license_key: input.license_key,
                fingerprint: input.fingerprint,
                components: input.components.map(|c| pairs(Some(c))),
                entitlements: input.entitlements.unwrap_or_default(),
            },
            request_id,
        )
        .await?;
    if outcome.verdict.code == protocol::validation::ValidationCode::NotFound {
        unknown_key_guard(limiters, client_ip)?;
    }
    let scope = outcome.actor.map(|actor| Scope::new(domain, actor));
    Ok(Validation {
        valid: outcome.verdict.code == protocol::validation::ValidationCode::Valid,
        code: outcome.verdict.code.into(),
        detail: outcome.verdict.detail,
        license: outcome.license.map(|l| License::scoped(l, scope.clone())),
        device: outcome.device.map(|d| Device::scoped(d, scope)),
    })
}

/// `heartbeat` for an authenticated caller: the resolver, and the direct path of the trusted
/// document.
///
/// # Errors
/// RATE_LIMITED past the device's budget; the domain's refusals.
pub async fn heartbeat(
    domain: &domain::Domain,
    limiters: &DeviceLimiters,
    actor: &domain::Actor,
) -> ApiResult<Heartbeat> {
    if let domain::ActorKind::Device { device_id, .. } = &actor.kind {
        limiters
            .heartbeats
            .check(device_id.as_str())
            .map_err(|seconds| ApiError::rate_limited("heartbeats from this device", seconds))?;
    }
    let outcome = domain.heartbeat(actor).await?;
    Ok(Heartbeat {
        device: outcome.device.into(),
        next_heartbeat_due_at: outcome.next_heartbeat_due_at,
        license_version: outcome.license_version,
        update_available: outcome.update_available,
    })
}

/// Device queries.
#[derive(Default)]
pub struct DeviceQuery;

#[Object]
impl DeviceQuery {
    /// The vendor's devices.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn devices(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<DeviceFilter>,
    ) -> ApiResult<Connection<Device>> {
        ctx.actor()?.require(domain::Capability::Read)?;
        let request = page_request(ctx, first, after)?;
        let filter = filter.unwrap_or_default();
        let filter = domain::devices::DeviceFilter {
            license_id: filter.license_id.map(|id| id.to_string()),
            status: filter.status.map(Into::into),
        };
        let page = ctx.domain().devices(ctx.actor()?, &filter, &request).await?;
        Ok(from_page(page, |d| &d.id, Device::from))
    }

    /// One device.
    async fn device(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Device>> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::Read)?;
        Ok(ctx.loaders()?.devices.load_one(id.to_string()).await?.map(Into::into))
    }
}

/// Device mutations.
#[derive(Default)]
pub struct DeviceMutation;

#[Object]
impl DeviceMutation {
    /// Activates a device with a license key (no token needed). The same fingerprint again
    /// returns the same device with a new token (the old one is revoked; a second such
    /// re-activation within 24 h opens a DEVICE_REACTIVATION anomaly; under a policy with
    /// `requireDeviceKeyProof` a live device must send `keyProof` or be released by staff
    /// first, else FORBIDDEN); a new one takes a seat or gets ACTIVATION_LIMIT_REACHED.
    async fn activate_device(&self, ctx: &Context<'_>, input: ActivateDeviceInput) -> ApiResult<Activation> {
        let domain = ctx.domain();
        activation_budget(ctx, &input.license_key)?;
        let input = domain::devices::ActivateInput {
            license_key: input.license_key,
            fingerprint: Fingerprint::try_from(input.fingerprint.as_str())?,
            components: DeviceComponents::try_from(pairs(input.components).as_slice())?,
            name: Text::optional("name", input.name.as_deref())?,
            hostname: Text::optional("hostname", input.hostname.as_deref())?,
            platform: Text::optional("platform", input.platform.as_deref())?,
            public_key: input
                .device_public_key
                .as_deref()
                .map(DevicePublicKey::try_from)
                .transpose()?,
            variables: input.variables.map(|v| JsonObject::try_from(v.0)).transpose()?,
            key_proof: input.key_proof.map(Into::into),
        };
        let activation = match domain.activate_device(input, ctx.request_id()).await {
            Err(err @ domain::Error::NotFound("license")) => {
                let ip = ctx.data_opt::<ClientIp>().map_or("unknown", |ip| ip.0.as_str());
                unknown_key_guard(device_limiters(ctx), ip)?;
                return Err(err.into());
            }
            other => other?,
        };
        let scope = Some(Scope::new(domain, activation.actor));
        Ok(Activation {
            device: Device::scoped(activation.device, scope),
            device_token: activation.token,
            license_file: activation.license_file,
        })
    }

    /// Validates a license key (no token needed), and a device when a fingerprint is given.
    /// A bad key is `valid: false, code: NOT_FOUND`, never an error.
    async fn validate_license(&self, ctx: &Context<'_>, input: ValidateLicenseInput) -> ApiResult<Validation> {
        let ip = ctx.data_opt::<ClientIp>().map_or("unknown", |ip| ip.0.as_str());
        validate(ctx.domain(), device_limiters(ctx), ip, ctx.request_id(), input).await
    }

    /// Records the calling device's heartbeat (device token).
    async fn heartbeat(&self, ctx: &Context<'_>) -> ApiResult<Heartbeat> {
        heartbeat(ctx.domain(), device_limiters(ctx), ctx.actor()?).await
    }

    /// A freshly signed license file for the calling device (device token).
    async fn fetch_license_file(&self, ctx: &Context<'_>) -> ApiResult<String> {
        Ok(ctx.domain().fetch_license_file(ctx.actor()?).await?)
    }

    /// Checks the calling device out for `ttlSeconds` of off-network use (device token);
    /// returns the check-out license file.
    async fn check_out_device(&self, ctx: &Context<'_>, ttl_seconds: i32) -> ApiResult<String> {
        Ok(ctx
            .domain()
            .check_out_device(ctx.actor()?, i64::from(ttl_seconds))
            .await?)
    }

    /// Ends the calling device's check-out early (device token).
    async fn check_in_device(&self, ctx: &Context<'_>) -> ApiResult<Device> {
        Ok(ctx.domain().check_in_device(ctx.actor()?).await?.into())
    }

    /// Deactivates the calling device: frees its seat, revokes its token (device token).
    async fn deactivate_device(&self, ctx: &Context<'_>) -> ApiResult<Device> {
        Ok(ctx.domain().deactivate_device(ctx.actor()?).await?.into())
    }

    /// The offline portal: an activation request file in, a license file bound to that device
    /// out (OWNER, ADMIN, SUPPORT, INTEGRATION). The policy must be OFFLINE or HYBRID.
    async fn generate_offline_license(&self, ctx: &Context<'_>, request: String) -> ApiResult<OfflineActivation> {
        let activation = ctx.domain().generate_offline_license(ctx.actor()?, &request).await?;
        Ok(OfflineActivation {
            device: activation.device.into(),
            license_file: activation.license_file,
        })
    }

    /// A freshly signed license file for a device: the refresh file staff hand to an offline
    /// device (OWNER, ADMIN, SUPPORT, INTEGRATION).
    async fn export_license_file(&self, ctx: &Context<'_>, device_id: ID) -> ApiResult<String> {
        Ok(ctx.domain().export_license_file(ctx.actor()?, &device_id).await?)
    }

    /// Releases a device: frees its seat, revokes its token (OWNER, ADMIN, SUPPORT, INTEGRATION).
    async fn release_device(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Device> {
        Ok(ctx.domain().release_device(ctx.actor()?, &id).await?.into())
    }
}
