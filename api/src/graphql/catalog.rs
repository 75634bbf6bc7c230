//! The catalog: products and policies.

use async_graphql::{ComplexObject, Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{policy, product};

use crate::graphql::connection::{Connection, from_page, page_request};
use crate::graphql::context::{ContextExt, Scope, scope_of};
use crate::graphql::enums::{DeadDeviceAction, DeploymentMode, ResetPeriod};
use crate::graphql::error::{ApiError, ApiResult, ErrorCode};
use crate::graphql::page_cost;
use domain::newtypes::{Code, Text};

/// A product the vendor sells.
#[derive(SimpleObject, Clone)]
pub struct Product {
    /// Product id.
    pub id: ID,
    /// Display name.
    pub name: String,
    /// Unique code.
    pub code: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl From<product::Model> for Product {
    fn from(p: product::Model) -> Self {
        Self {
            id: p.id.into(),
            name: p.name,
            code: p.code,
            created_at: p.created_at,
        }
    }
}

/// A consumption meter of a policy.
#[derive(SimpleObject, Clone)]
pub struct Meter {
    /// Meter code.
    pub code: String,
    /// Allowed use per period; null = unlimited.
    pub limit: Option<i64>,
    /// When usage starts again from zero.
    pub reset_period: ResetPeriod,
    /// Use allowed beyond the limit.
    pub overage_limit: i64,
}

/// A meter to put on a policy.
#[derive(InputObject)]
pub struct MeterInput {
    /// Meter code.
    pub code: String,
    /// Allowed use per period; omit for unlimited.
    pub limit: Option<i64>,
    /// Default NEVER.
    pub reset_period: Option<ResetPeriod>,
    /// Default 0.
    pub overage_limit: Option<i64>,
}

impl MeterInput {
    /// The meters as the domain takes them (codes checked; defaults filled in).
    pub(crate) fn parse_all(inputs: Vec<Self>) -> domain::Result<Vec<domain::catalog::NewMeter>> {
        inputs
            .into_iter()
            .map(|m| {
                Ok(domain::catalog::NewMeter {
                    code: Code::parse("meter code", &m.code)?,
                    limit: m.limit,
                    reset_period: m.reset_period.map_or(entity::enums::ResetPeriod::Never, Into::into),
                    overage_limit: m.overage_limit.unwrap_or(0),
                })
            })
            .collect()
    }
}

/// The rules licenses are issued under.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct Policy {
    /// Policy id.
    pub id: ID,
    /// The product's id (the `product` field resolves it).
    #[graphql(skip)]
    pub product_id: String,
    /// Display name.
    pub name: String,
    /// License duration; null = perpetual.
    pub duration_seconds: Option<i64>,
    /// Trial policy.
    pub trial: bool,
    /// Seat cap; null = unlimited.
    pub max_activations: Option<i32>,
    /// Floating seats.
    pub floating: bool,
    /// Online, offline or hybrid.
    pub deployment_mode: DeploymentMode,
    /// Heartbeat interval; null = none required.
    pub heartbeat_interval_seconds: Option<i64>,
    /// What a dead device's seat does.
    pub dead_device_action: DeadDeviceAction,
    /// Offline grace period.
    pub grace_seconds: i64,
    /// Refresh-by horizon of license files.
    pub license_file_ttl_seconds: i64,
    /// k-of-n fingerprint rule; null = exact fingerprint.
    pub min_component_matches: Option<i32>,
    /// Entitlement codes.
    pub entitlements: Vec<String>,
    /// Consumption meters.
    pub meters: Vec<Meter>,
    /// Backed by a billing subscription.
    pub subscription_backed: bool,
    /// How long a linked license outlives its subscription's period end, or a lapse from when it was first seen.
    pub billing_grace_seconds: i64,
    /// Re-activating a live device (same fingerprint) must prove its device key with a
    /// `deviceKeyChallenge` signature, or wait until staff release the device.
    pub require_device_key_proof: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Read under this scope instead of the request's (answers to a license-key holder).
    #[graphql(skip)]
    pub scope: Option<Scope>,
}

#[ComplexObject]
impl Policy {
    /// The product it belongs to.
    async fn product(&self, ctx: &Context<'_>) -> ApiResult<Product> {
        load_product(scope_of(ctx, &self.scope)?, &self.product_id).await
    }
}

impl Policy {
    /// A policy read under its own scope (for callers without a token).
    #[must_use]
    pub fn scoped(model: policy::Model, scope: Option<Scope>) -> Self {
        Self { scope, ..model.into() }
    }
}

/// Loads a product through the request's DataLoader.
///
/// # Errors
/// `NOT_FOUND` if it is gone; database errors.
pub async fn load_product(scope: &Scope, id: &str) -> ApiResult<Product> {
    let product = scope.loaders().products.load_one(id.to_owned()).await?;
    product
        .map(Into::into)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "product not found"))
}

impl From<policy::Model> for Policy {
    fn from(p: policy::Model) -> Self {
        let meters = p
            .meters
            .0
            .into_iter()
            .map(|m| Meter {
                code: m.code,
                limit: m.limit,
                reset_period: m.reset_period.into(),
                overage_limit: m.overage_limit,
            })
            .collect();
        Self {
            id: p.id.into(),
            entitlements: p.entitlements.0,
            meters,
            product_id: p.product_id,
            name: p.name,
            duration_seconds: p.duration_seconds,
            trial: p.trial,
            max_activations: p.max_activations,
            floating: p.floating,
            deployment_mode: p.deployment_mode.into(),
            heartbeat_interval_seconds: p.heartbeat_interval_seconds,
            dead_device_action: p.dead_device_action.into(),
            grace_seconds: p.grace_seconds,
            license_file_ttl_seconds: p.license_file_ttl_seconds,
            min_component_matches: p.min_component_matches,
            subscription_backed: p.subscription_backed,
            billing_grace_seconds: p.billing_grace_seconds,
            require_device_key_proof: p.require_device_key_proof,
            created_at: p.created_at,
            scope: None,
        }
    }
}

/// A product to create.
#[derive(InputObject)]
pub struct CreateProductInput {
    /// Display name.
    pub name: String,
    /// Unique code: letters, digits, `_ - . :`.
    pub code: String,
}

/// A policy to create. Omitted fields take the defaults noted.
#[derive(InputObject)]
pub struct CreatePolicyInput {
    /// The product.
    pub product_id: ID,
    /// Display name.
    pub name: String,
    /// null = perpetual.
    pub duration_seconds: Option<i64>,
    /// Default false.
    pub trial: Option<bool>,
    /// null = unlimited.
    pub max_activations: Option<i32>,
    /// Default false.
    pub floating: Option<bool>,
    /// Default ONLINE.
    pub deployment_mode: Option<DeploymentMode>,
    /// null = no heartbeat required.
    pub heartbeat_interval_seconds: Option<i64>,
    /// Default RELEASE_SEAT when floating, else KEEP_SEAT.
    pub dead_device_action: Option<DeadDeviceAction>,
    /// Offline grace, default 604800 (7 days).
    pub grace_seconds: Option<i64>,
    /// Refresh-by horizon of license files, default 2592000 (30 days).
    pub license_file_ttl_seconds: Option<i64>,
    /// k-of-n fingerprint components that must match; null = exact fingerprint.
    pub min_component_matches: Option<i32>,
    /// Entitlement codes.
    pub entitlements: Option<Vec<String>>,
    /// Consumption meters.
    pub meters: Option<Vec<MeterInput>>,
    /// Backed by a billing subscription.
    pub subscription_backed: Option<bool>,
    /// How long a linked license outlives its subscription's period end, or a lapse from when
    /// it was first seen; default 604800 (7 days), 0 = not at all.
    pub billing_grace_seconds: Option<i64>,
    /// Re-activating a live device must prove its device key (a signature over a
    /// `deviceKeyChallenge` nonce) or wait for staff to release it; default false.
    pub require_device_key_proof: Option<bool>,
}

/// Catalog queries.
#[derive(Default)]
pub struct CatalogQuery;

#[Object]
impl CatalogQuery {
    /// The vendor's products.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn products(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<Product>> {
        let request = page_request(ctx, first, after)?;
        let page = ctx.domain().products(ctx.actor()?, &request).await?;
        Ok(from_page(page, |p| &p.id, Product::from))
    }

    /// One product.
    async fn product(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Product>> {
        ctx.actor()?.require(domain::Capability::Read)?;
        Ok(ctx.loaders()?.products.load_one(id.to_string()).await?.map(Into::into))
    }

    /// The vendor's policies, optionally of one product.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn policies(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        product_id: Option<ID>,
    ) -> ApiResult<Connection<Policy>> {
        let request = page_request(ctx, first, after)?;
        let page = ctx
            .domain()
            .policies(ctx.actor()?, product_id.as_deref().map(String::as_str), &request)
            .await?;
        Ok(from_page(page, |p| &p.id, Policy::from))
    }

    /// One policy.
    async fn policy(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Policy>> {
        ctx.actor()?.require(domain::Capability::Read)?;
        Ok(ctx.loaders()?.policies.load_one(id.to_string()).await?.map(Into::into))
    }
}

/// Catalog mutations.
#[derive(Default)]
pub struct CatalogMutation;

#[Object]
impl CatalogMutation {
    /// Creates a product (OWNER, ADMIN, INTEGRATION).
    async fn create_product(&self, ctx: &Context<'_>, input: CreateProductInput) -> ApiResult<Product> {
        let actor = ctx.actor()?;
        // The role first, as before input was parsed here: a caller who may not do this hears so.
        actor.require(domain::Capability::ManageCatalog)?;
        let name = Text::parse("name", &input.name)?;
        let code = Code::parse("code", &input.code)?;
        Ok(ctx.domain().create_product(actor, name, code).await?.into())
    }

    /// Creates a policy (OWNER, ADMIN, INTEGRATION).
    async fn create_policy(&self, ctx: &Context<'_>, input: CreatePolicyInput) -> ApiResult<Policy> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::ManageCatalog)?;
        let name = Text::parse("name", &input.name)?;
        let entitlements = Code::list("entitlements", &input.entitlements.unwrap_or_default())?;
        let meters = MeterInput::parse_all(input.meters.unwrap_or_default())?;
        let new = domain::catalog::NewPolicy {
            product_id: input.product_id.to_string(),
            name,
            duration_seconds: input.duration_seconds,
            trial: input.trial,
            max_activations: input.max_activations,
            floating: input.floating,
            deployment_mode: input.deployment_mode.map(Into::into),
            heartbeat_interval_seconds: input.heartbeat_interval_seconds,
            dead_device_action: input.dead_device_action.map(Into::into),
            grace_seconds: input.grace_seconds,
            license_file_ttl_seconds: input.license_file_ttl_seconds,
            min_component_matches: input.min_component_matches,
            entitlements,
            meters,
            subscription_backed: input.subscription_backed,
            billing_grace_seconds: input.billing_grace_seconds,
            require_device_key_proof: input.require_device_key_proof,
        };
        Ok(ctx.domain().create_policy(actor, new).await?.into())
    }
}
