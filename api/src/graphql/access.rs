//! Access: `login`/`logout` for staff, API tokens and staff users.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{api_token, staff_user};

use crate::graphql::connection::{Connection, from_page, page_request};
use crate::graphql::context::{ClientIp, ContextExt};
use crate::graphql::enums::Role;
use crate::graphql::error::{ApiError, ApiResult, ErrorCode};
use crate::graphql::page_cost;
use crate::limits::RateLimiter;
use domain::newtypes::{Email, Text};

/// A person who signs in to the dashboard.
#[derive(SimpleObject, Clone)]
pub struct StaffUser {
    /// User id.
    pub id: ID,
    /// Login email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Role.
    pub role: Role,
    /// Whether a password is set (the user can log in).
    pub password_set: bool,
    /// When the user was added.
    pub created_at: DateTime<Utc>,
    /// When the user was disabled (`updateStaffUser`); null while enabled.
    pub disabled_at: Option<DateTime<Utc>>,
}

impl From<staff_user::Model> for StaffUser {
    fn from(u: staff_user::Model) -> Self {
        Self {
            id: u.id.into(),
            email: u.email,
            name: u.name,
            role: u.role.into(),
            password_set: u.password_hash.is_some(),
            created_at: u.created_at,
            disabled_at: u.disabled_at,
        }
    }
}

/// An API token (its secret is shown only once, by `createApiToken`).
#[derive(SimpleObject, Clone)]
pub struct ApiToken {
    /// Token id.
    pub id: ID,
    /// What uses it.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The secret's first characters, to recognise it.
    pub prefix: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last use, as written every `TOKEN_USAGE_FLUSH_SECS` (30 s by default).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<api_token::Model> for ApiToken {
    fn from(t: api_token::Model) -> Self {
        Self {
            id: t.id.into(),
            name: t.name,
            role: t.role.into(),
            prefix: t.token_prefix,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// A new token and its secret.
#[derive(SimpleObject)]
pub struct CreatedApiToken {
    /// The secret: send it as `Authorization: Bearer <token>`. Shown only now.
    pub token: String,
    /// The token's record.
    pub api_token: ApiToken,
}

/// A staff login.
#[derive(SimpleObject)]
pub struct Session {
    /// The session JWT: send it as `Authorization: Bearer <token>`.
    pub token: String,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
    /// Who logged in.
    pub user: StaffUser,
}

/// A token to create.
#[derive(InputObject)]
pub struct CreateApiTokenInput {
    /// What uses it.
    pub name: String,
    /// Its role (never above yours).
    pub role: Role,
    /// When it stops working; omit for never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A staff user to add.
#[derive(InputObject)]
pub struct CreateStaffUserInput {
    /// Login email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// Role (never above yours).
    pub role: Role,
    /// Initial password (10-256 characters); without one the user cannot log in yet.
    pub password: Option<String>,
}

/// Access queries.
#[derive(Default)]
pub struct AccessQuery;

#[Object]
impl AccessQuery {
    /// The vendor's API tokens (OWNER, ADMIN).
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn api_tokens(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<ApiToken>> {
        let request = page_request(ctx, first, after)?;
        let page = ctx.domain().api_tokens(ctx.actor()?, &request).await?;
        Ok(from_page(page, |t| &t.id, ApiToken::from))
    }

    /// The vendor's staff users.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn staff_users(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<StaffUser>> {
        let request = page_request(ctx, first, after)?;
        let page = ctx.domain().staff_users(ctx.actor()?, &request).await?;
        Ok(from_page(page, |u| &u.id, StaffUser::from))
    }
}

/// Access mutations.
#[derive(Default)]
pub struct AccessMutation;

#[Object]
impl AccessMutation {
    /// Logs a staff user in and returns a session JWT. Twenty attempts per minute per client
    /// address, five per address and email; pass `vendorSlug` when the email belongs to
    /// several vendors. At most one `login` per request.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
        vendor_slug: Option<String>,
    ) -> ApiResult<Session> {
        // The email is checked (and its length capped) before it reaches any limiter.
        if email.len() > MAX_LOGIN_EMAIL_BYTES {
            return Err(ApiError::new(ErrorCode::InvalidInput, "email is not an email address"));
        }
        let email = Email::try_from(email.as_str())?;
        let ip = ctx.data_opt::<ClientIp>().map_or("unknown", |ip| ip.0.as_str());
        let limiter = ctx.data_unchecked::<std::sync::Arc<LoginLimiter>>();
        limiter
            .per_address
            .check(ip)
            .map_err(|seconds| ApiError::rate_limited("login attempts from this address", seconds))?;
        limiter
            .per_address_and_email
            .check(&(ip, email.as_str()))
            .map_err(|seconds| ApiError::rate_limited("login attempts", seconds))?;
        let email = email.into_inner();
        let domain = ctx.domain();
        let session = domain
            .login(&email, &password, vendor_slug.as_deref(), ctx.request_id())
            .await?;
        let token = crate::auth::session_token(domain, &session, domain.clock.now())?;
        Ok(Session {
            token,
            expires_at: session.expires_at,
            user: session.user.into(),
        })
    }

    /// Ends the caller's staff session.
    async fn logout(&self, ctx: &Context<'_>) -> ApiResult<bool> {
        ctx.domain().logout(ctx.actor()?).await?;
        Ok(true)
    }

    /// Creates an API token (OWNER, ADMIN; never above your role). The secret is shown once.
    async fn create_api_token(&self, ctx: &Context<'_>, input: CreateApiTokenInput) -> ApiResult<CreatedApiToken> {
        let actor = ctx.actor()?;
        // The role first, as before input was parsed here: a caller who may not do this hears so.
        actor.require(domain::Capability::ManageAccess)?;
        let new = domain::access::NewApiToken {
            name: Text::parse("name", &input.name)?,
            role: input.role.into(),
            expires_at: input.expires_at,
        };
        let (token, secret) = ctx.domain().create_api_token(actor, new).await?;
        Ok(CreatedApiToken {
            token: secret,
            api_token: token.into(),
        })
    }

    /// Revokes an API token at once (OWNER, ADMIN).
    async fn revoke_api_token(&self, ctx: &Context<'_>, id: ID) -> ApiResult<ApiToken> {
        Ok(ctx.domain().revoke_api_token(ctx.actor()?, &id).await?.into())
    }

    /// Adds a staff user (OWNER, ADMIN; never above your role).
    async fn create_staff_user(&self, ctx: &Context<'_>, input: CreateStaffUserInput) -> ApiResult<StaffUser> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::ManageAccess)?;
        let new = domain::access::NewStaffUser {
            email: Email::try_from(input.email.as_str())?,
            name: Text::optional("name", input.name.as_deref())?,
            role: input.role.into(),
            password: input.password,
        };
        Ok(ctx.domain().create_staff_user(actor, new).await?.into())
    }

    /// Changes a staff user's role or disables (`disabled: true`) or enables them (OWNER,
    /// ADMIN; never a user or a role above yours, never yourself, never the last enabled
    /// OWNER). Disabling ends the user's sessions. The API tokens the user created follow at
    /// once: they act at most at the user's role, and stop working while the user is disabled.
    async fn update_staff_user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        role: Option<Role>,
        disabled: Option<bool>,
    ) -> ApiResult<StaffUser> {
        let update = domain::staff_users::StaffUserUpdate {
            role: role.map(Into::into),
            disabled,
        };
        Ok(ctx.domain().update_staff_user(ctx.actor()?, &id, update).await?.into())
    }

    /// Sets a staff user's password (your own, or as OWNER/ADMIN anyone's at or below your
    /// role). Ends the user's open sessions.
    async fn set_staff_password(&self, ctx: &Context<'_>, user_id: ID, password: String) -> ApiResult<StaffUser> {
        Ok(ctx
            .domain()
            .set_staff_password(ctx.actor()?, &user_id, &password)
            .await?
            .into())
    }
}

/// Login attempts one client address may make per minute, whatever the emails.
pub const LOGINS_PER_ADDRESS_PER_MINUTE: u32 = 20;
/// Login attempts one client address may make per minute for one email.
pub const LOGINS_PER_ADDRESS_AND_EMAIL_PER_MINUTE: u32 = 5;
/// Longest email `login` reads (longer: INVALID_INPUT, before any limiter sees it).
const MAX_LOGIN_EMAIL_BYTES: usize = 320;

/// The login rate limiters, shared by all requests of the process.
pub struct LoginLimiter {
    /// Attempts per client address.
    pub per_address: RateLimiter,
    /// Attempts per client address and email.
    pub per_address_and_email: RateLimiter,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        let minute = std::time::Duration::from_secs(60);
        Self {
            per_address: RateLimiter::new(LOGINS_PER_ADDRESS_PER_MINUTE, minute),
            per_address_and_email: RateLimiter::new(LOGINS_PER_ADDRESS_AND_EMAIL_PER_MINUTE, minute),
        }
    }
}
