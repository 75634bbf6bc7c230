//! Licenses: issuing, changing and listing them.
//!
//! A device token, and the license-key holder reading an `activateDevice` or
//! `validateLicense` result, see a license's license-file fields only: id, key (masked),
//! status, expiry, seats, entitlements, version, its policy and product, its meters' use, and
//! among its devices only the calling one. The customer is null (personal data), and so are
//! the status reason, metadata and billing fields; `usageHistory` is FORBIDDEN. Staff and API
//! tokens see everything their role allows.

use async_graphql::{Context, ID, InputObject, Json, MaybeUndefined, Object};
use chrono::{DateTime, Utc};
use entity::license;

use crate::graphql::billing::BillingSubscription;
use crate::graphql::catalog::{MeterInput, Policy, Product, load_product};
use crate::graphql::connection::{Connection, from_page, page_request};
use crate::graphql::context::{ContextExt, Scope, scope_of};
use crate::graphql::customers::Customer;
use crate::graphql::devices::Device;
use crate::graphql::enums::LicenseStatus;
use crate::graphql::error::{ApiError, ApiResult, ErrorCode};
use crate::graphql::page_cost;
use crate::graphql::usage::{MeterUsage, UsageBucket, UsagePoint};
use domain::newtypes::{Code, IdempotencyKey, Text};

/// A license.
#[derive(Clone)]
pub struct License {
    model: license::Model,
    /// This response answers the call that issued it, so the key is shown in full.
    issued_to_caller: bool,
    /// Read under this scope instead of the request's (answers to a license-key holder).
    scope: Option<Scope>,
}

impl From<license::Model> for License {
    fn from(model: license::Model) -> Self {
        Self {
            model,
            issued_to_caller: false,
            scope: None,
        }
    }
}

impl License {
    /// The license with this id, batched through the request's loader; `None` without an id
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
            .licenses
            .load_one(id.to_owned())
            .await?
            .map(Into::into))
    }

    /// A license read under its own scope (for callers without a token).
    #[must_use]
    pub fn scoped(model: license::Model, scope: Option<Scope>) -> Self {
        Self {
            model,
            issued_to_caller: false,
            scope,
        }
    }
}

/// Whether `scope` is a device token or a license-key holder: they read the license-file
/// fields only (see the module doc).
pub(crate) fn device_reader(scope: &Scope) -> bool {
    matches!(
        scope.actor.kind,
        domain::ActorKind::Device { .. } | domain::ActorKind::Licensee { .. }
    )
}

impl License {
    /// Whether this license is read by a device or a license-key holder.
    fn for_device(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        Ok(device_reader(scope_of(ctx, &self.scope)?))
    }
}

#[Object]
impl License {
    /// License id.
    async fn id(&self) -> ID {
        self.model.id.clone().into()
    }

    /// The key: in full for OWNER, ADMIN and SUPPORT (and in the response to `issueLicense`),
    /// otherwise only its last four characters.
    async fn key(&self, ctx: &Context<'_>) -> ApiResult<String> {
        Ok(ctx
            .domain()
            .license_key_for(&scope_of(ctx, &self.scope)?.actor, &self.model, self.issued_to_caller)?)
    }

    /// Status now (an active license past its expiry is EXPIRED).
    async fn status(&self, ctx: &Context<'_>) -> LicenseStatus {
        domain::licenses::effective_status(&self.model, ctx.domain().clock.now()).into()
    }

    /// Why it was suspended or revoked (null for devices: staff wrote it for staff).
    async fn status_reason(&self, ctx: &Context<'_>) -> ApiResult<Option<&str>> {
        if self.for_device(ctx)? {
            return Ok(None);
        }
        Ok(self.model.status_reason.as_deref())
    }

    /// The policy it was issued under.
    async fn policy(&self, ctx: &Context<'_>) -> ApiResult<Policy> {
        let policy = scope_of(ctx, &self.scope)?
            .loaders()
            .policies
            .load_one(self.model.policy_id.clone())
            .await?;
        policy
            .map(|p| Policy::scoped(p, self.scope.clone()))
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "policy not found"))
    }

    /// The product.
    async fn product(&self, ctx: &Context<'_>) -> ApiResult<Product> {
        load_product(scope_of(ctx, &self.scope)?, &self.model.product_id).await
    }

    /// The customer it was issued to (null for devices and license-key holders: a customer's
    /// name, email and ids are personal data).
    async fn customer(&self, ctx: &Context<'_>) -> ApiResult<Option<Customer>> {
        let Some(id) = &self.model.customer_id else {
            return Ok(None);
        };
        if self.for_device(ctx)? {
            return Ok(None);
        }
        Ok(scope_of(ctx, &self.scope)?
            .loaders()
            .customers
            .load_one(id.clone())
            .await?
            .map(Into::into))
    }

    /// The devices activated on it (for a device token only itself; for a license-key holder none).
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn devices(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<Device>> {
        let scope = scope_of(ctx, &self.scope)?;
        let request = page_request(ctx, first, after)?;
        let filter = domain::devices::DeviceFilter {
            license_id: Some(self.model.id.clone()),
            status: None,
        };
        let page = ctx.domain().devices(&scope.actor, &filter, &request).await?;
        Ok(from_page(page, |d| &d.id, |d| Device::scoped(d, self.scope.clone())))
    }

    /// Use of each of its policy's meters in the current period.
    async fn usage(&self, ctx: &Context<'_>) -> ApiResult<Vec<MeterUsage>> {
        let policy = scope_of(ctx, &self.scope)?
            .loaders()
            .policies
            .load_one(self.model.policy_id.clone())
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "policy not found"))?;
        let usage = ctx.domain().license_usage(&self.model, &policy).await?;
        Ok(usage.into_iter().map(Into::into).collect())
    }

    /// Usage of one meter over time by `recordedAt` (default: the last 30 days, in hours),
    /// empty buckets included; at most 2,000 buckets. FORBIDDEN for devices.
    async fn usage_history(
        &self,
        ctx: &Context<'_>,
        meter: String,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        bucket: Option<UsageBucket>,
    ) -> ApiResult<Vec<UsagePoint>> {
        let scope = scope_of(ctx, &self.scope)?;
        scope.actor.require(domain::Capability::Read)?;
        let policy = scope
            .loaders()
            .policies
            .load_one(self.model.policy_id.clone())
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "policy not found"))?;
        let bucket = bucket.map_or(domain::usage::UsageBucket::Hour, Into::into);
        let points = ctx
            .domain()
            .usage_history(&scope.actor, &self.model, &policy, &meter, (from, to), bucket)
            .await?;
        Ok(points.into_iter().map(Into::into).collect())
    }

    /// When it was issued.
    async fn issued_at(&self) -> DateTime<Utc> {
        self.model.issued_at
    }

    /// When it expires; null = perpetual.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.model.expires_at
    }

    /// Seat cap; null = unlimited.
    async fn max_activations(&self) -> Option<i32> {
        self.model.max_activations
    }

    /// Devices holding a seat.
    async fn active_devices(&self) -> i32 {
        self.model.seats_used
    }

    /// Entitlement codes.
    async fn entitlements(&self) -> Vec<String> {
        self.model.entitlements.0.clone()
    }

    /// Bumped by every change that alters the license file.
    async fn version(&self) -> i32 {
        self.model.version
    }

    /// Free-form metadata (null for devices).
    async fn metadata(&self, ctx: &Context<'_>) -> ApiResult<Option<Json<serde_json::Value>>> {
        if self.for_device(ctx)? {
            return Ok(None);
        }
        Ok(self.model.metadata.clone().map(Json))
    }

    /// The billing subscription it follows (null for devices).
    async fn billing_subscription_id(&self, ctx: &Context<'_>) -> ApiResult<Option<&str>> {
        if self.for_device(ctx)? {
            return Ok(None);
        }
        Ok(self.model.billing_subscription_id.as_deref())
    }

    /// What the billing system last said about that subscription (null until it was read;
    /// null for devices).
    async fn billing(&self, ctx: &Context<'_>) -> ApiResult<Option<BillingSubscription>> {
        if self.for_device(ctx)? {
            return Ok(None);
        }
        Ok(ctx.domain().license_billing(&self.model).await?.map(Into::into))
    }

    /// When it last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.model.updated_at
    }
}

/// A license to issue. Omitted fields come from the policy.
#[derive(InputObject)]
pub struct IssueLicenseInput {
    /// The policy.
    pub policy_id: ID,
    /// The customer, by id.
    pub customer_id: Option<ID>,
    /// The customer, by external id.
    pub customer_external_id: Option<String>,
    /// Overrides the policy's duration.
    pub expires_at: Option<DateTime<Utc>>,
    /// Overrides the policy's seat cap.
    pub max_activations: Option<i32>,
    /// Overrides the policy's entitlements.
    pub entitlements: Option<Vec<String>>,
    /// A JSON object of your own.
    pub metadata: Option<Json<serde_json::Value>>,
    /// Meters of its own, laid over the policy's by code (a new code adds a meter).
    pub meters: Option<Vec<MeterInput>>,
    /// The billing subscription it follows.
    pub billing_subscription_id: Option<String>,
    /// Same key + same input returns the same license; same key + other input is IDEMPOTENCY_CONFLICT.
    pub idempotency_key: Option<String>,
}

/// A license change: omitted fields stay, explicit nulls clear.
#[derive(InputObject)]
pub struct UpdateLicenseInput {
    /// The license.
    pub id: ID,
    /// New expiry; null = perpetual.
    pub expires_at: MaybeUndefined<DateTime<Utc>>,
    /// New seat cap; null = unlimited.
    pub max_activations: MaybeUndefined<i32>,
    /// New entitlements.
    pub entitlements: Option<Vec<String>>,
    /// New metadata; null clears it.
    pub metadata: MaybeUndefined<Json<serde_json::Value>>,
    /// The license's own meters, replacing those it had (an empty list: the policy's only).
    pub meters: Option<Vec<MeterInput>>,
    /// The billing subscription it follows; null unlinks it.
    pub billing_subscription_id: MaybeUndefined<String>,
}

/// Filters for `licenses`; all given ones must match.
#[derive(InputObject, Default)]
pub struct LicenseFilter {
    /// Status now (EXPIRED includes active licenses past their expiry).
    pub status: Option<LicenseStatus>,
    /// Of this product.
    pub product_id: Option<ID>,
    /// Under this policy.
    pub policy_id: Option<ID>,
    /// Of this customer.
    pub customer_id: Option<ID>,
    /// Expiring before this time.
    pub expires_before: Option<DateTime<Utc>>,
    /// A full license key, a license id, or part of the customer's name, email or external id.
    pub search: Option<String>,
}

fn maybe<T, U>(value: MaybeUndefined<T>, f: impl FnOnce(T) -> U) -> Option<Option<U>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(f(v))),
    }
}

/// License queries.
#[derive(Default)]
pub struct LicenseQuery;

#[Object]
impl LicenseQuery {
    /// The vendor's licenses matching `filter`.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn licenses(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<LicenseFilter>,
    ) -> ApiResult<Connection<License>> {
        let request = page_request(ctx, first, after)?;
        let filter = filter.unwrap_or_default();
        let filter = domain::licenses::LicenseFilter {
            status: filter.status.map(Into::into),
            product_id: filter.product_id.map(|id| id.to_string()),
            policy_id: filter.policy_id.map(|id| id.to_string()),
            customer_id: filter.customer_id.map(|id| id.to_string()),
            expires_before: filter.expires_before,
            search: filter.search,
        };
        let page = ctx.domain().licenses(ctx.actor()?, &filter, &request).await?;
        Ok(from_page(page, |l| &l.id, License::from))
    }

    /// One license, by id or by full key.
    async fn license(&self, ctx: &Context<'_>, id: Option<ID>, key: Option<String>) -> ApiResult<Option<License>> {
        Ok(ctx
            .domain()
            .license(ctx.actor()?, id.as_deref().map(String::as_str), key.as_deref())
            .await?
            .map(Into::into))
    }
}

/// License mutations.
#[derive(Default)]
pub struct LicenseMutation;

#[Object]
impl LicenseMutation {
    /// Issues a license (OWNER, ADMIN, INTEGRATION). The response shows the key in full.
    async fn issue_license(&self, ctx: &Context<'_>, input: IssueLicenseInput) -> ApiResult<License> {
        let actor = ctx.actor()?;
        // The role first, as before input was parsed here: a caller who may not do this hears so.
        actor.require(domain::Capability::ManageLicenses)?;
        let idempotency_key = input
            .idempotency_key
            .as_deref()
            .map(IdempotencyKey::try_from)
            .transpose()?;
        let entitlements = input.entitlements.map(|e| Code::list("entitlements", &e)).transpose()?;
        let issue = domain::licenses::IssueLicense {
            policy_id: input.policy_id.to_string(),
            customer_id: input.customer_id.map(|id| id.to_string()),
            customer_external_id: input.customer_external_id,
            expires_at: input.expires_at,
            max_activations: input.max_activations,
            entitlements,
            metadata: input.metadata.map(|m| m.0),
            meters: input.meters.map(MeterInput::parse_all).transpose()?,
            billing_subscription_id: Text::optional("billingSubscriptionId", input.billing_subscription_id.as_deref())?,
            idempotency_key,
        };
        let model = ctx.domain().issue_license(actor, issue).await?;
        Ok(License {
            model,
            issued_to_caller: true,
            scope: None,
        })
    }

    /// Changes expiry, seat cap, entitlements or metadata (OWNER, ADMIN, INTEGRATION).
    async fn update_license(&self, ctx: &Context<'_>, input: UpdateLicenseInput) -> ApiResult<License> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::ManageLicenses)?;
        let change = domain::licenses::UpdateLicense {
            expires_at: maybe(input.expires_at, |at| at),
            max_activations: maybe(input.max_activations, |n| n),
            entitlements: input.entitlements.map(|e| Code::list("entitlements", &e)).transpose()?,
            metadata: maybe(input.metadata, |m| m.0),
            meters: input.meters.map(MeterInput::parse_all).transpose()?,
            billing_subscription_id: match input.billing_subscription_id {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(id) => Some(Text::optional("billingSubscriptionId", Some(&id))?),
            },
        };
        Ok(ctx.domain().update_license(actor, &input.id, change).await?.into())
    }

    /// Adds the policy's duration to the expiry (from now if already expired).
    async fn renew_license(&self, ctx: &Context<'_>, id: ID) -> ApiResult<License> {
        Ok(ctx.domain().renew_license(ctx.actor()?, &id).await?.into())
    }

    /// Suspends a license until reinstated (OWNER, ADMIN, SUPPORT, INTEGRATION).
    async fn suspend_license(&self, ctx: &Context<'_>, id: ID, reason: Option<String>) -> ApiResult<License> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::Support)?;
        let reason = Text::optional("reason", reason.as_deref())?;
        Ok(ctx.domain().suspend_license(actor, &id, reason).await?.into())
    }

    /// Lifts a suspension (OWNER, ADMIN, SUPPORT, INTEGRATION).
    async fn reinstate_license(&self, ctx: &Context<'_>, id: ID) -> ApiResult<License> {
        Ok(ctx.domain().reinstate_license(ctx.actor()?, &id).await?.into())
    }

    /// Ends a license for good (OWNER, ADMIN, INTEGRATION).
    async fn revoke_license(&self, ctx: &Context<'_>, id: ID, reason: Option<String>) -> ApiResult<License> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::ManageLicenses)?;
        let reason = Text::optional("reason", reason.as_deref())?;
        Ok(ctx.domain().revoke_license(actor, &id, reason).await?.into())
    }
}
