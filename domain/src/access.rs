//! Access to a vendor: API tokens (stored only as keyed hashes), staff users with argon2
//! passwords, login sessions, and turning a credential into an [`Actor`].

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use entity::enums::Role;
use entity::{api_token, staff_session, staff_user, vendor};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::json;

use crate::actor::can_grant;
use crate::audit::{self, Change};
use crate::db::begin_write;
use crate::newtypes::{self, Email, Text};
use crate::page::{self, Order, Page, PageRequest};
use crate::secrets::random_bytes;
use crate::{Actor, ActorKind, Capability, Domain, Error, Result, new_id};
use sea_orm::ActiveEnum;

/// Prefix of every API token secret, so a leaked one is recognisable.
pub const API_TOKEN_PREFIX: &str = "lsk_";
/// How long a staff session lasts.
pub const SESSION_TTL: Duration = Duration::hours(12);
/// `keyed_hash` purpose of API tokens.
const API_TOKEN_PURPOSE: &str = "api-token";

/// A token to create.
#[derive(Debug, Clone)]
pub struct NewApiToken {
    /// A name saying what uses it ("SAP integration").
    pub name: Text<200>,
    /// Its role; never above the creator's.
    pub role: Role,
    /// When it stops working; `None` = never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A staff user to create.
#[derive(Debug, Clone)]
pub struct NewStaffUser {
    /// Login email.
    pub email: Email,
    /// Display name.
    pub name: Option<Text<200>>,
    /// Role; never above the creator's.
    pub role: Role,
    /// Initial password; without one the user cannot log in until it is set.
    pub password: Option<String>,
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct Session {
    /// Session id (the JWT's `jti`).
    pub id: String,
    /// The user.
    pub user: staff_user::Model,
    /// When the session ends.
    pub expires_at: DateTime<Utc>,
}

fn hash_password_now(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).map_err(|e| Error::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(e.to_string()))
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// A real argon2 hash of a random password, verified against when the email is unknown so a
/// failed login takes the same time either way.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password_now(&URL_SAFE_NO_PAD.encode(random_bytes::<16>())).unwrap_or_default())
}

/// Password hashes computed at once by the whole process: about one per core. argon2 runs on
/// the blocking pool, never on the threads that serve requests, and a login that finds every
/// permit taken is refused at once ([`Error::RateLimited`]) rather than queued.
fn hashing_permits() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static PERMITS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        std::sync::Arc::new(tokio::sync::Semaphore::new(cores))
    })
}

/// Runs `work` (argon2) on the blocking pool under a hashing permit: waits for one when `wait`,
/// else answers [`Error::RateLimited`] when none is free. The permit is held until the work
/// ends, even if the caller stops waiting (a timed-out request), so the bound is on CPU.
async fn with_hashing_permit<T: Send + 'static>(wait: bool, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let permits = hashing_permits().clone();
    let permit = if wait {
        permits
            .acquire_owned()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
    } else {
        permits.try_acquire_owned().map_err(|_| Error::RateLimited(1))?
    };
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(|e| Error::Internal(format!("password hashing stopped: {e}")))
}

/// An argon2 hash of `password` (for staff setting one: waits for a hashing permit).
async fn hash_password(password: &str) -> Result<String> {
    let password = password.to_owned();
    with_hashing_permit(true, move || hash_password_now(&password)).await?
}

fn token_json(t: &api_token::Model) -> serde_json::Value {
    json!({ "name": t.name, "role": t.role.to_value(), "expires_at": t.expires_at, "revoked_at": t.revoked_at })
}

impl Domain {
    pub(crate) async fn insert_api_token(
        &self,
        db: &impl ConnectionTrait,
        creator: &Actor,
        new: NewApiToken,
        now: DateTime<Utc>,
    ) -> Result<(api_token::Model, String)> {
        let secret = format!("{API_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
        let (created_by_kind, created_by_id) = creator.audit_identity();
        let model = api_token::ActiveModel {
            id: Set(new_id()),
            vendor_id: Set(creator.vendor_id.clone()),
            name: Set(new.name.into_inner()),
            role: Set(new.role),
            token_hash: Set(self.secrets.keyed_hash(API_TOKEN_PURPOSE, &secret)),
            token_prefix: Set(secret[..12].to_owned()),
            created_by_kind: Set(created_by_kind.to_owned()),
            created_by_id: Set(created_by_id.map(str::to_owned)),
            created_at: Set(now),
            expires_at: Set(new.expires_at),
            revoked_at: Set(None),
            last_used_at: Set(None),
        }
        .insert(db)
        .await?;
        Ok((model, secret))
    }

    /// Creates an API token; the secret is returned once and stored only as a keyed hash.
    ///
    /// # Errors
    /// [`Error::Forbidden`] below ADMIN or for a role above the caller's;
    /// [`Error::InvalidInput`] for an empty name or an expiry in the past.
    pub async fn create_api_token(&self, actor: &Actor, new: NewApiToken) -> Result<(api_token::Model, String)> {
        actor.require(Capability::ManageAccess)?;
        if !can_grant(actor.role, new.role) {
            return Err(Error::Forbidden(format!(
                "a {} may not create a {} token",
                actor.role.to_value(),
                new.role.to_value()
            )));
        }
        let now = self.clock.now();
        if new.expires_at.is_some_and(|at| at <= now) {
            return Err(Error::InvalidInput("expiresAt must be in the future".into()));
        }
        self.require_room_in_chain(actor, now).await?;
        let tx = begin_write(&self.writer).await?;
        let (token, secret) = self.insert_api_token(&tx, actor, new, now).await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "api_token.create",
                "api_token",
                &token.id,
                json!({}),
                token_json(&token),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok((token, secret))
    }

    /// Revokes an API token at once.
    ///
    /// # Errors
    /// [`Error::Forbidden`] below ADMIN; [`Error::NotFound`] for another vendor's token.
    pub async fn revoke_api_token(&self, actor: &Actor, id: &str) -> Result<api_token::Model> {
        actor.require(Capability::ManageAccess)?;
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let token = api_token::Entity::find_by_id(id)
            .filter(api_token::Column::VendorId.eq(&actor.vendor_id))
            .one(&tx)
            .await?
            .ok_or(Error::NotFound("API token"))?;
        if token.revoked_at.is_some() {
            return Ok(token);
        }
        if !can_grant(actor.role, token.role) {
            return Err(Error::Forbidden(format!(
                "a {} may not revoke an OWNER token",
                actor.role.to_value()
            )));
        }
        let before = token_json(&token);
        let mut model: api_token::ActiveModel = token.into();
        model.revoked_at = Set(Some(now));
        let token = model.update(&tx).await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new("api_token.revoke", "api_token", &token.id, before, token_json(&token)),
        )
        .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// The vendor's API tokens (never their secrets), oldest first.
    ///
    /// # Errors
    /// [`Error::Forbidden`] below ADMIN.
    pub async fn api_tokens(&self, actor: &Actor, request: &PageRequest) -> Result<Page<api_token::Model>> {
        actor.require(Capability::ManageAccess)?;
        let select = api_token::Entity::find().filter(api_token::Column::VendorId.eq(&actor.vendor_id));
        page::fetch(&self.db, select, api_token::Column::Id, request, Order::OldestFirst).await
    }

    /// The actor behind an API token secret, acting with the role its creator allows now
    /// (see `token_chain`: capped by the creating staff user's current role, refused while that
    /// user is disabled). Needs no write: the last use is written by [`Domain::flush_token_usage`].
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for an unknown, revoked or expired token, or one whose
    /// creator no longer lets it work; [`Error::Db`] when the database fails.
    pub async fn authenticate_api_token(&self, secret: &str, request_id: Option<String>) -> Result<Actor> {
        let unauthenticated = || Error::Unauthenticated("the API token is invalid, expired or revoked".into());
        if !secret.starts_with(API_TOKEN_PREFIX) {
            return Err(unauthenticated());
        }
        let now = self.clock.now();
        let token = api_token::Entity::find()
            .filter(api_token::Column::TokenHash.eq(self.secrets.keyed_hash(API_TOKEN_PURPOSE, secret)))
            .one(&self.db)
            .await?
            .ok_or_else(unauthenticated)?;
        if token.revoked_at.is_some() || token.expires_at.is_some_and(|at| at <= now) {
            return Err(unauthenticated());
        }
        // The role its creator allows now (`token_chain`); no write: the last use is noted in
        // memory and flushed in batches (`token_usage`).
        let standing = self.token_standing(&token, now).await?.ok_or_else(|| {
            Error::Unauthenticated("the API token's creator was disabled or revoked: the token no longer works".into())
        })?;
        self.token_usage.note(&token.id, now);
        Ok(Actor {
            vendor_id: token.vendor_id,
            role: standing.role,
            kind: ActorKind::Token { token_id: token.id },
            label: format!("token {}", token.name),
            request_id,
        })
    }

    pub(crate) async fn insert_staff_user(
        &self,
        db: &impl ConnectionTrait,
        vendor_id: &str,
        user: NewStaffUser,
        now: DateTime<Utc>,
    ) -> Result<staff_user::Model> {
        let NewStaffUser {
            email,
            name,
            role,
            password,
        } = user;
        let (email, name) = (email.into_inner(), name.map(Text::into_inner));
        let existing = staff_user::Entity::find()
            .filter(staff_user::Column::VendorId.eq(vendor_id))
            .filter(staff_user::Column::Email.eq(&email))
            .one(db)
            .await?;
        if existing.is_some() {
            return Err(Error::InvalidInput(format!("a staff user with email {email} exists")));
        }
        let password_hash = match password.as_deref() {
            Some(password) => Some(hash_password(password).await?),
            None => None,
        };
        Ok(staff_user::ActiveModel {
            id: Set(new_id()),
            vendor_id: Set(vendor_id.to_owned()),
            email: Set(email),
            name: Set(name),
            role: Set(role),
            password_hash: Set(password_hash),
            created_at: Set(now),
            updated_at: Set(now),
            disabled_at: Set(None),
        }
        .insert(db)
        .await?)
    }

    /// Adds a staff user to the caller's vendor.
    ///
    /// # Errors
    /// [`Error::Forbidden`] below ADMIN or for a role above the caller's;
    /// [`Error::InvalidInput`] for a bad email or password or an email already in use.
    pub async fn create_staff_user(&self, actor: &Actor, new: NewStaffUser) -> Result<staff_user::Model> {
        actor.require(Capability::ManageAccess)?;
        if !can_grant(actor.role, new.role) {
            return Err(Error::Forbidden(format!(
                "a {} may not create a {} user",
                actor.role.to_value(),
                new.role.to_value()
            )));
        }
        let password = new
            .password
            .as_deref()
            .map(newtypes::password)
            .transpose()?
            .map(str::to_owned);
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let user = self
            .insert_staff_user(
                &tx,
                &actor.vendor_id,
                NewStaffUser {
                    email: new.email,
                    name: new.name,
                    role: new.role,
                    password,
                },
                now,
            )
            .await?;
        let after = json!({
            "email": user.email, "name": user.name, "role": user.role.to_value(), "password_set": user.password_hash.is_some(),
        });
        audit::record(
            &tx,
            actor,
            now,
            Change::new("staff_user.create", "staff_user", &user.id, json!({}), after),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Sets a staff user's password: anyone their own, ADMIN and OWNER others' (never a role
    /// above their own).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Forbidden`] or [`Error::InvalidInput`].
    pub async fn set_staff_password(&self, actor: &Actor, user_id: &str, password: &str) -> Result<staff_user::Model> {
        let password = newtypes::password(password)?;
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let user = staff_user::Entity::find_by_id(user_id)
            .filter(staff_user::Column::VendorId.eq(&actor.vendor_id))
            .one(&tx)
            .await?
            .ok_or(Error::NotFound("staff user"))?;
        let is_self = matches!(&actor.kind, ActorKind::Staff { user_id, .. } if *user_id == user.id);
        if !is_self {
            actor.require(Capability::ManageAccess)?;
            if !can_grant(actor.role, user.role) {
                return Err(Error::Forbidden(
                    "you may not change the password of a user above your role".into(),
                ));
            }
        }
        let had_password = user.password_hash.is_some();
        let mut model: staff_user::ActiveModel = user.into();
        model.password_hash = Set(Some(hash_password(password).await?));
        model.updated_at = Set(now);
        let user = model.update(&tx).await?;
        // Changing a password ends the user's sessions, except the one changing its own.
        let mut sessions = staff_session::Entity::update_many()
            .col_expr(staff_session::Column::RevokedAt, Some(now).into())
            .filter(staff_session::Column::StaffUserId.eq(&user.id))
            .filter(staff_session::Column::RevokedAt.is_null());
        if let ActorKind::Staff { session_id, .. } = &actor.kind {
            sessions = sessions.filter(staff_session::Column::Id.ne(session_id.as_str()));
        }
        sessions.exec(&tx).await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "staff_user.set_password",
                "staff_user",
                &user.id,
                json!({ "password_set": had_password, "password": "(hidden)" }),
                json!({ "password_set": true, "password": "(changed)" }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// The vendor's staff users, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn staff_users(&self, actor: &Actor, request: &PageRequest) -> Result<Page<staff_user::Model>> {
        actor.require(Capability::Read)?;
        let select = staff_user::Entity::find().filter(staff_user::Column::VendorId.eq(&actor.vendor_id));
        page::fetch(&self.db, select, staff_user::Column::Id, request, Order::OldestFirst).await
    }

    /// Checks an email and password and opens a session. `vendor_slug` picks the vendor when
    /// the email belongs to several.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for a wrong email or password (the same answer, in the same
    /// time); [`Error::InvalidInput`] when the email is in several vendors and no slug was given;
    /// [`Error::RateLimited`] when every password-hashing permit is taken.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        vendor_slug: Option<&str>,
        request_id: Option<String>,
    ) -> Result<Session> {
        let wrong = || Error::Unauthenticated("wrong email or password".into());
        let email = Email::try_from(email).map_err(|_| wrong())?.into_inner();
        let mut condition = Condition::all()
            .add(staff_user::Column::Email.eq(&email))
            .add(staff_user::Column::DisabledAt.is_null());
        if let Some(slug) = vendor_slug {
            let vendor = vendor::Entity::find()
                .filter(vendor::Column::Slug.eq(slug))
                .one(&self.db)
                .await?;
            condition = condition.add(staff_user::Column::VendorId.eq(vendor.map(|v| v.id).unwrap_or_default()));
        }
        let users = staff_user::Entity::find().filter(condition).all(&self.db).await?;
        // The password is checked before anything else is said, so a wrong one reveals nothing
        // (not even that the email exists, or exists in several vendors). argon2 runs off the
        // request threads, under a process-wide permit (none free: RATE_LIMITED at once).
        let password = password.to_owned();
        let mut matching: Vec<staff_user::Model> = with_hashing_permit(false, move || {
            let mut matching = Vec::new();
            let mut checked = 0;
            for user in users {
                if let Some(hash) = user.password_hash.as_deref() {
                    checked += 1;
                    if verify_password(&password, hash) {
                        matching.push(user);
                    }
                }
            }
            if checked == 0 {
                // As much work as a real check, so an unknown email answers in the same time.
                verify_password(&password, dummy_hash());
            }
            matching
        })
        .await?;
        let user = match matching.len() {
            0 => return Err(wrong()),
            1 => matching.remove(0),
            _ => {
                return Err(Error::InvalidInput(
                    "this email belongs to several vendors: pass vendorSlug".into(),
                ));
            }
        };
        let now = self.clock.now();
        let expires_at = now + SESSION_TTL;
        let session_id = new_id();
        let actor = Actor {
            vendor_id: user.vendor_id.clone(),
            role: user.role,
            kind: ActorKind::Staff {
                user_id: user.id.clone(),
                session_id: session_id.clone(),
            },
            label: user.email.clone(),
            request_id,
        };
        let tx = begin_write(&self.writer).await?;
        staff_session::ActiveModel {
            id: Set(session_id.clone()),
            vendor_id: Set(user.vendor_id.clone()),
            staff_user_id: Set(user.id.clone()),
            created_at: Set(now),
            expires_at: Set(expires_at),
            revoked_at: Set(None),
        }
        .insert(&tx)
        .await?;
        audit::record(
            &tx,
            &actor,
            now,
            Change::new(
                "staff.login",
                "staff_session",
                &session_id,
                json!({}),
                json!({ "staff_user_id": user.id, "expires_at": expires_at }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(Session {
            id: session_id,
            user,
            expires_at,
        })
    }

    /// The actor behind a session whose JWT has already been verified: the session must be
    /// open and the user enabled; the role is the user's current one.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for a revoked or expired session or a disabled user.
    pub async fn authenticate_session(
        &self,
        session_id: &str,
        user_id: &str,
        request_id: Option<String>,
    ) -> Result<Actor> {
        let unauthenticated = || Error::Unauthenticated("the session has ended; log in again".into());
        let now = self.clock.now();
        let session = staff_session::Entity::find_by_id(session_id)
            .filter(staff_session::Column::StaffUserId.eq(user_id))
            .one(&self.db)
            .await?
            .ok_or_else(unauthenticated)?;
        if session.revoked_at.is_some() || session.expires_at <= now {
            return Err(unauthenticated());
        }
        let user = staff_user::Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .ok_or_else(unauthenticated)?;
        if user.disabled_at.is_some() {
            return Err(unauthenticated());
        }
        Ok(Actor {
            vendor_id: user.vendor_id,
            role: user.role,
            kind: ActorKind::Staff {
                user_id: user.id,
                session_id: session.id,
            },
            label: user.email,
            request_id,
        })
    }

    /// Ends the caller's session.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the caller is not a staff session.
    pub async fn logout(&self, actor: &Actor) -> Result<()> {
        let ActorKind::Staff { session_id, .. } = &actor.kind else {
            return Err(Error::InvalidInput("only a staff session can log out".into()));
        };
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        staff_session::Entity::update_many()
            .col_expr(staff_session::Column::RevokedAt, Some(now).into())
            .filter(staff_session::Column::Id.eq(session_id))
            .exec(&tx)
            .await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "staff.logout",
                "staff_session",
                session_id,
                json!({ "revoked_at": null }),
                json!({ "revoked_at": now }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
