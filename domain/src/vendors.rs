//! Vendors (tenants): creation with their owner token and first signing key, settings, and
//! the Ed25519 signing keys that sign license files (encrypted at rest, rotatable).

use entity::enums::Role;
use entity::{signing_key, vendor};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder,
};
use serde_json::json;

use crate::access::{NewApiToken, NewStaffUser};
use crate::audit::{self, Change};
use crate::db::begin_write;
use crate::newtypes::{Email, Text};
use crate::secrets::random_bytes;
use crate::{Actor, Capability, Domain, Error, Result, new_id};
use entity::columns::StringList;

/// Most addresses a vendor may list for staff alerts.
const MAX_ALERT_EMAILS: usize = 20;
/// How long a decrypted signing key is reused before it is read again (a rotation in another
/// process is picked up within this time; files signed meanwhile still verify).
pub(crate) const SIGNING_KEY_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// What `create-vendor` (and the first start) hands back.
#[derive(Debug)]
pub struct CreatedVendor {
    /// The new vendor.
    pub vendor: vendor::Model,
    /// The owner API token's secret: shown once, stored only as a keyed hash.
    pub owner_token: String,
}

/// A vendor settings change; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct VendorSettings {
    /// A new display name.
    pub name: Option<Text<200>>,
    /// Who receives staff alerts (replaces the list).
    pub alert_emails: Option<Vec<Email>>,
}

fn slug(value: &str) -> Result<String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(Error::InvalidInput(
            "slug must be 1-64 characters of a-z, 0-9 and '-'".into(),
        ))
    }
}

impl Domain {
    /// Whether the database holds no vendor yet (first start).
    ///
    /// # Errors
    /// Database errors.
    pub async fn has_no_vendor(&self) -> Result<bool> {
        Ok(vendor::Entity::find().count(&self.db).await? == 0)
    }

    /// Creates a vendor with its first signing key, an owner staff user (who sets a password
    /// later) and an OWNER API token.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name, slug or email, or a slug already taken.
    pub async fn create_vendor(&self, name: &str, slug_value: &str, owner_email: &str) -> Result<CreatedVendor> {
        let name = Text::<200>::parse("name", name)?.into_inner();
        let slug_value = slug(slug_value)?;
        let owner_email = Email::try_from(owner_email)?;
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        if vendor::Entity::find()
            .filter(vendor::Column::Slug.eq(&slug_value))
            .one(&tx)
            .await?
            .is_some()
        {
            return Err(Error::InvalidInput(format!("slug {slug_value:?} is taken")));
        }
        let vendor = vendor::ActiveModel {
            id: Set(new_id()),
            name: Set(name),
            slug: Set(slug_value),
            alert_emails: Set(StringList(vec![owner_email.as_str().to_owned()])),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&tx)
        .await?;
        let system = Actor::system(&vendor.id);
        let key = self.insert_signing_key(&tx, &vendor.id, now).await?;
        let owner = self
            .insert_staff_user(
                &tx,
                &vendor.id,
                NewStaffUser {
                    email: owner_email,
                    name: None,
                    role: Role::Owner,
                    password: None,
                },
                now,
            )
            .await?;
        let token = self
            .insert_api_token(
                &tx,
                &system,
                NewApiToken {
                    name: Text::parse("name", "owner token")?,
                    role: Role::Owner,
                    expires_at: None,
                },
                now,
            )
            .await?;
        let after = json!({
            "name": vendor.name, "slug": vendor.slug, "owner_email": owner.email,
            "signing_key": key.kid, "owner_token_id": token.0.id,
        });
        audit::record(
            &tx,
            &system,
            now,
            Change::new("vendor.create", "vendor", &vendor.id, json!({}), after),
        )
        .await?;
        tx.commit().await?;
        Ok(CreatedVendor {
            vendor,
            owner_token: token.1,
        })
    }

    /// The caller's vendor.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the vendor is gone.
    pub async fn vendor(&self, actor: &Actor) -> Result<vendor::Model> {
        actor.require(Capability::Read)?;
        vendor::Entity::find_by_id(&actor.vendor_id)
            .one(&self.db)
            .await?
            .ok_or(Error::NotFound("vendor"))
    }

    /// Changes the vendor's name and alert addresses.
    ///
    /// # Errors
    /// [`Error::Forbidden`] below ADMIN; [`Error::InvalidInput`] for a bad name or address.
    pub async fn update_vendor_settings(&self, actor: &Actor, settings: VendorSettings) -> Result<vendor::Model> {
        actor.require(Capability::ManageVendor)?;
        let name = settings.name.map(Text::into_inner);
        let alert_emails = match settings.alert_emails {
            None => None,
            Some(list) if list.len() > MAX_ALERT_EMAILS => {
                return Err(Error::InvalidInput(format!("at most {MAX_ALERT_EMAILS} alert emails")));
            }
            Some(list) => {
                let mut out: Vec<String> = Vec::new();
                for e in list {
                    let e = e.into_inner();
                    if !out.contains(&e) {
                        out.push(e);
                    }
                }
                Some(out)
            }
        };
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let current = vendor::Entity::find_by_id(&actor.vendor_id)
            .one(&tx)
            .await?
            .ok_or(Error::NotFound("vendor"))?;
        let before = json!({ "name": current.name, "alert_emails": current.alert_emails });
        let mut model: vendor::ActiveModel = current.into();
        if let Some(name) = name {
            model.name = Set(name);
        }
        if let Some(list) = alert_emails {
            model.alert_emails = Set(StringList(list));
        }
        model.updated_at = Set(now);
        let updated = model.update(&tx).await?;
        let after = json!({ "name": updated.name, "alert_emails": updated.alert_emails });
        audit::record(
            &tx,
            actor,
            now,
            Change::new("vendor.update_settings", "vendor", &updated.id, before, after),
        )
        .await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// The vendor's signing keys, the active one first, then newest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn signing_keys(&self, actor: &Actor) -> Result<Vec<signing_key::Model>> {
        actor.require(Capability::Read)?;
        Ok(signing_key::Entity::find()
            .filter(signing_key::Column::VendorId.eq(&actor.vendor_id))
            .order_by_desc(signing_key::Column::Active)
            .order_by_desc(signing_key::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Makes a new signing key the active one; older keys stay listed, inactive, so files they
    /// signed still verify.
    ///
    /// # Errors
    /// [`Error::Forbidden`] below ADMIN.
    pub async fn rotate_signing_key(&self, actor: &Actor) -> Result<signing_key::Model> {
        actor.require(Capability::ManageVendor)?;
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let previous = signing_key::Entity::find()
            .filter(signing_key::Column::VendorId.eq(&actor.vendor_id))
            .filter(signing_key::Column::Active.eq(true))
            .one(&tx)
            .await?;
        signing_key::Entity::update_many()
            .col_expr(signing_key::Column::Active, false.into())
            .col_expr(signing_key::Column::RetiredAt, Some(now).into())
            .filter(signing_key::Column::VendorId.eq(&actor.vendor_id))
            .filter(signing_key::Column::Active.eq(true))
            .exec(&tx)
            .await?;
        let key = self.insert_signing_key(&tx, &actor.vendor_id, now).await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "signing_key.rotate",
                "signing_key",
                &key.id,
                json!({ "active_kid": previous.map(|k| k.kid) }),
                json!({ "active_kid": key.kid }),
            ),
        )
        .await?;
        tx.commit().await?;
        self.caches.signing_keys.invalidate(&actor.vendor_id);
        Ok(key)
    }

    /// The vendor's active signing key, decrypted, with its key id.
    ///
    /// # Errors
    /// [`Error::Internal`] when the vendor has no active key or it does not decrypt.
    pub async fn active_signing_key(
        &self,
        db: &impl ConnectionTrait,
        vendor_id: &str,
    ) -> Result<(String, ed25519_dalek::SigningKey)> {
        if let Some(cached) = self.caches.signing_keys.get(vendor_id) {
            return Ok(cached);
        }
        let key = signing_key::Entity::find()
            .filter(signing_key::Column::VendorId.eq(vendor_id))
            .filter(signing_key::Column::Active.eq(true))
            .one(db)
            .await?
            .ok_or_else(|| Error::Internal("vendor has no active signing key".into()))?;
        let der = self
            .secrets
            .decrypt(&signing_key_context(vendor_id), &key.private_key_enc)?;
        let signing = protocol::signing::signing_key_from_der(&der).map_err(|e| Error::Internal(e.to_string()))?;
        self.caches
            .signing_keys
            .insert(vendor_id.to_owned(), (key.kid.clone(), signing.clone()));
        Ok((key.kid, signing))
    }

    async fn insert_signing_key(
        &self,
        db: &impl ConnectionTrait,
        vendor_id: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<signing_key::Model> {
        let signing = protocol::signing::signing_key_from_seed(&random_bytes::<32>());
        let verifying = signing.verifying_key();
        let der = protocol::signing::private_key_der(&signing).map_err(|e| Error::Internal(e.to_string()))?;
        let pem = protocol::signing::public_key_pem(&verifying).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(signing_key::ActiveModel {
            id: Set(new_id()),
            vendor_id: Set(vendor_id.to_owned()),
            kid: Set(protocol::signing::key_id(&verifying)),
            algorithm: Set(protocol::signing::ALGORITHM.to_owned()),
            public_key_pem: Set(pem),
            private_key_enc: Set(self.secrets.encrypt(&signing_key_context(vendor_id), &der)?),
            active: Set(true),
            created_at: Set(now),
            retired_at: Set(None),
        }
        .insert(db)
        .await?)
    }
}

/// Encryption context of a vendor's signing keys: a key sealed for one vendor never opens
/// as another's.
fn signing_key_context(vendor_id: &str) -> String {
    format!("signing-key:{vendor_id}")
}
