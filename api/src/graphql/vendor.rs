//! The caller's vendor: `viewer`, settings, and the signing keys that sign license files.

use async_graphql::{Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{signing_key, vendor};

use crate::graphql::context::ContextExt;
use crate::graphql::enums::{ActorKind, Role};
use crate::graphql::error::ApiResult;
use domain::newtypes::{Email, Text};

/// A vendor (tenant).
#[derive(SimpleObject, Clone)]
pub struct Vendor {
    /// Vendor id.
    pub id: async_graphql::ID,
    /// Display name.
    pub name: String,
    /// Short unique name.
    pub slug: String,
    /// Who receives staff alerts.
    pub alert_emails: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl From<vendor::Model> for Vendor {
    fn from(v: vendor::Model) -> Self {
        Self {
            id: v.id.into(),
            alert_emails: v.alert_emails.0,
            name: v.name,
            slug: v.slug,
            created_at: v.created_at,
        }
    }
}

/// Who is calling.
#[derive(SimpleObject)]
pub struct Viewer {
    /// The vendor the caller acts for.
    pub vendor: Vendor,
    /// The caller's role.
    pub role: Role,
    /// How the caller authenticated.
    pub actor_kind: ActorKind,
    /// The staff user's or token's id.
    pub actor_id: Option<async_graphql::ID>,
    /// The staff user's email or the token's name.
    pub label: String,
}

/// A signing key; files name the key that signed them by `kid`.
#[derive(SimpleObject, Clone)]
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// SubjectPublicKeyInfo PEM, for verifying license files anywhere.
    pub public_key_pem: String,
    /// Whether it signs new files (old keys stay listed so their files still verify).
    pub active: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stopped signing.
    pub retired_at: Option<DateTime<Utc>>,
}

impl From<signing_key::Model> for SigningKey {
    fn from(k: signing_key::Model) -> Self {
        Self {
            kid: k.kid,
            algorithm: k.algorithm,
            public_key_pem: k.public_key_pem,
            active: k.active,
            created_at: k.created_at,
            retired_at: k.retired_at,
        }
    }
}

/// A vendor settings change; omitted fields stay as they are.
#[derive(InputObject)]
pub struct VendorSettingsInput {
    /// New display name.
    pub name: Option<String>,
    /// Addresses that receive staff alerts (replaces the list).
    pub alert_emails: Option<Vec<String>>,
}

/// Vendor queries.
#[derive(Default)]
pub struct VendorQuery;

#[Object]
impl VendorQuery {
    /// The caller and their vendor.
    async fn viewer(&self, ctx: &Context<'_>) -> ApiResult<Viewer> {
        let actor = ctx.actor()?;
        let vendor = ctx.domain().vendor(actor).await?;
        let (kind, id) = match &actor.kind {
            domain::ActorKind::Staff { user_id, .. } => (ActorKind::Staff, Some(user_id.clone())),
            domain::ActorKind::Token { token_id } => (ActorKind::ApiToken, Some(token_id.clone())),
            domain::ActorKind::Device { device_id, .. } => (ActorKind::Device, Some(device_id.clone())),
            domain::ActorKind::Licensee { license_id } => (ActorKind::Device, Some(license_id.clone())),
            domain::ActorKind::System => (ActorKind::System, None),
        };
        Ok(Viewer {
            vendor: vendor.into(),
            role: actor.role.into(),
            actor_kind: kind,
            actor_id: id.map(Into::into),
            label: actor.label.clone(),
        })
    }

    /// The vendor's signing keys, the active one first.
    async fn signing_keys(&self, ctx: &Context<'_>) -> ApiResult<Vec<SigningKey>> {
        let keys = ctx.domain().signing_keys(ctx.actor()?).await?;
        Ok(keys.into_iter().map(Into::into).collect())
    }
}

/// Vendor mutations.
#[derive(Default)]
pub struct VendorMutation;

#[Object]
impl VendorMutation {
    /// Changes the vendor's name or alert emails (OWNER, ADMIN).
    async fn update_vendor_settings(&self, ctx: &Context<'_>, input: VendorSettingsInput) -> ApiResult<Vendor> {
        let actor = ctx.actor()?;
        // The role first, as before input was parsed here: a caller who may not do this hears so.
        actor.require(domain::Capability::ManageVendor)?;
        let settings = domain::vendors::VendorSettings {
            name: Text::optional("name", input.name.as_deref())?,
            alert_emails: input
                .alert_emails
                .map(|list| list.iter().map(|e| Email::try_from(e.as_str())).collect())
                .transpose()?,
        };
        Ok(ctx.domain().update_vendor_settings(actor, settings).await?.into())
    }

    /// Starts signing with a new key; the old one stays listed, inactive (OWNER, ADMIN).
    async fn rotate_signing_key(&self, ctx: &Context<'_>) -> ApiResult<SigningKey> {
        Ok(ctx.domain().rotate_signing_key(ctx.actor()?).await?.into())
    }
}
