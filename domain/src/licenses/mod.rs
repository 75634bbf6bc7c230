//! Licenses: issuing (idempotent), updating, and reading them back with the filters a
//! dashboard needs. The key is stored encrypted with a keyed-hash lookup column and shown in
//! full only to roles allowed to see it. Renewing, suspending, reinstating and revoking, and the
//! write path every change takes, are in `changes.rs`.

mod changes;

use chrono::{DateTime, Duration, Utc};
use entity::columns::MeterList;
use entity::enums::LicenseStatus;
use entity::{customer, license, policy};
use sea_orm::sea_query::{LockType, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, JoinType, QueryFilter,
    QuerySelect, RelationTrait,
};
use serde_json::{Value, json};

use crate::audit::{self, Change};
use crate::billing;
use crate::catalog::{self, Meter, NewMeter};
use crate::customers::contains_ci;
use crate::db::begin_write;
use crate::idempotency::{self, Claim};
use crate::newtypes::{self, Code, IdempotencyKey, LicenseKey, Text, masked_key};
use crate::page::{self, Order, Page, PageRequest};
use crate::{Actor, Capability, Domain, Error, MasterSecret, Result, new_id};

/// `keyed_hash` purpose of license keys.
const LICENSE_KEY_PURPOSE: &str = "license-key";
/// Encryption context of license keys.
const LICENSE_KEY_CONTEXT: &str = "license-key";
/// Largest metadata document, serialised.
const MAX_METADATA_BYTES: usize = 16 * 1024;

/// A license to issue.
#[derive(Debug, Clone, Default)]
pub struct IssueLicense {
    /// The policy it is issued under.
    pub policy_id: String,
    /// The customer, by id.
    pub customer_id: Option<String>,
    /// The customer, by external id.
    pub customer_external_id: Option<String>,
    /// Overrides the policy's duration.
    pub expires_at: Option<DateTime<Utc>>,
    /// Overrides the policy's seat cap.
    pub max_activations: Option<i32>,
    /// Overrides the policy's entitlements.
    pub entitlements: Option<Vec<Code>>,
    /// Free-form JSON object.
    pub metadata: Option<Value>,
    /// Meters of its own, laid over the policy's by code.
    pub meters: Option<Vec<NewMeter>>,
    /// The billing subscription it follows.
    pub billing_subscription_id: Option<Text<255>>,
    /// Retries with the same key return the same license.
    pub idempotency_key: Option<IdempotencyKey>,
}

/// A license change; the outer `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct UpdateLicense {
    /// New expiry; `Some(None)` makes it perpetual.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// New seat cap; `Some(None)` makes it unlimited.
    pub max_activations: Option<Option<i32>>,
    /// New entitlements.
    pub entitlements: Option<Vec<Code>>,
    /// New metadata; `Some(None)` clears it.
    pub metadata: Option<Option<Value>>,
    /// The license's own meters (replacing those it had; empty = the policy's only).
    pub meters: Option<Vec<NewMeter>>,
    /// The billing subscription it follows; `Some(None)` unlinks it.
    pub billing_subscription_id: Option<Option<Text<255>>>,
}

/// Filters for listing licenses; all given ones must match.
#[derive(Debug, Clone, Default)]
pub struct LicenseFilter {
    /// Effective status (EXPIRED includes active licenses past their expiry).
    pub status: Option<LicenseStatus>,
    /// Of this product.
    pub product_id: Option<String>,
    /// Under this policy.
    pub policy_id: Option<String>,
    /// Of this customer.
    pub customer_id: Option<String>,
    /// Expiring before this time (perpetual licenses never match).
    pub expires_before: Option<DateTime<Utc>>,
    /// A full license key, a license id, or part of the customer's name, email or external id.
    pub search: Option<String>,
}

/// The lookup hash of a key as typed. A string that is not a key hashes a fixed dummy, so a
/// bad key costs the same lookup as a good one.
pub(crate) fn key_lookup(secrets: &MasterSecret, typed: &str) -> String {
    match LicenseKey::parse(typed) {
        Ok(key) => secrets.keyed_hash(LICENSE_KEY_PURPOSE, key.canonical()),
        Err(_) => secrets.keyed_hash(LICENSE_KEY_PURPOSE, "not-a-key"),
    }
}

/// The license with this key, whatever its vendor (the key is the credential), with its
/// policy, in one query; `lock` takes the license row for update.
pub(crate) async fn find_by_key(
    secrets: &MasterSecret,
    db: &impl ConnectionTrait,
    typed: &str,
    lock: bool,
) -> Result<Option<(license::Model, policy::Model)>> {
    let select = license::Entity::find().filter(license::Column::KeyLookup.eq(key_lookup(secrets, typed)));
    with_policy(db, select, lock).await
}

/// A license query joined with the license's policy, locking only the license row.
fn joined_with_policy(
    select: sea_orm::Select<license::Entity>,
    lock: bool,
) -> sea_orm::SelectTwo<license::Entity, policy::Entity> {
    // An inner join: PostgreSQL refuses FOR UPDATE on the nullable side of an outer join.
    let mut select = select
        .select_also(policy::Entity)
        .join(JoinType::InnerJoin, license::Relation::Policy.def());
    if lock {
        // Only the license row: locking the policy too would serialise every device of a policy.
        QuerySelect::query(&mut select).lock_with_tables(LockType::Update, [license::Entity]);
    }
    select
}

/// Runs a license query joined with the license's policy (one round trip).
pub(crate) async fn with_policy(
    db: &impl ConnectionTrait,
    select: sea_orm::Select<license::Entity>,
    lock: bool,
) -> Result<Option<(license::Model, policy::Model)>> {
    match joined_with_policy(select, lock).one(db).await? {
        Some((license, Some(policy))) => Ok(Some((license, policy))),
        Some((_, None)) | None => Ok(None),
    }
}

/// Refuses a license that is not in force now, with the matching error.
///
/// # Errors
/// [`Error::LicenseSuspended`], [`Error::LicenseRevoked`] or [`Error::LicenseExpired`].
pub(crate) fn require_active(license: &license::Model, now: DateTime<Utc>) -> Result<()> {
    match effective_status(license, now) {
        LicenseStatus::Active => Ok(()),
        LicenseStatus::Suspended => Err(Error::LicenseSuspended("the license is suspended".into())),
        LicenseStatus::Revoked => Err(Error::LicenseRevoked("the license was revoked".into())),
        LicenseStatus::Expired => Err(Error::LicenseExpired("the license has expired".into())),
    }
}

/// The status a license has now: an active license past its expiry is expired.
#[must_use]
pub fn effective_status(license: &license::Model, now: DateTime<Utc>) -> LicenseStatus {
    match license.status {
        LicenseStatus::Active if license.expires_at.is_some_and(|at| at <= now) => LicenseStatus::Expired,
        status => status,
    }
}

pub(super) fn license_json(l: &license::Model) -> Value {
    json!({
        "policy_id": l.policy_id, "customer_id": l.customer_id, "status": l.status, "status_reason": l.status_reason,
        "expires_at": l.expires_at, "max_activations": l.max_activations, "entitlements": l.entitlements,
        "metadata": l.metadata, "billing_subscription_id": l.billing_subscription_id, "version": l.version,
        "meters": l.meters,
    })
}

/// The stored form of a license's own meters: `None` when it has none.
fn license_meters(meters: Vec<Meter>) -> Option<MeterList> {
    (!meters.is_empty()).then_some(MeterList(meters))
}

fn check_metadata(metadata: Option<&Value>) -> Result<()> {
    match metadata {
        None => Ok(()),
        Some(Value::Object(_))
            if metadata
                .map(Value::to_string)
                .is_some_and(|s| s.len() <= MAX_METADATA_BYTES) =>
        {
            Ok(())
        }
        Some(Value::Object(_)) => Err(Error::InvalidInput(format!(
            "metadata must be at most {MAX_METADATA_BYTES} bytes"
        ))),
        Some(_) => Err(Error::InvalidInput("metadata must be a JSON object".into())),
    }
}

fn check_max_activations(value: Option<i32>) -> Result<Option<i32>> {
    match value {
        Some(n) if n < 1 => Err(Error::InvalidInput("maxActivations must be at least 1".into())),
        other => Ok(other),
    }
}

impl Domain {
    /// Issues a license under a policy. With an idempotency key, a retry with the same input
    /// returns the first license (also when both calls race) and other input is a conflict.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::NotFound`] (policy, customer), [`Error::InvalidInput`],
    /// [`Error::IdempotencyConflict`].
    pub async fn issue_license(&self, actor: &Actor, input: IssueLicense) -> Result<license::Model> {
        actor.require(Capability::ManageLicenses)?;
        let idempotency_key = input.idempotency_key;
        let entitlements = input.entitlements.map(newtypes::code_list);
        let max_activations = check_max_activations(input.max_activations)?;
        check_metadata(input.metadata.as_ref())?;
        let billing = input
            .billing_subscription_id
            .map(|id| billing::billing_id("billingSubscriptionId", id.as_str()))
            .transpose()?;
        let own_meters = input
            .meters
            .map(catalog::parse_meters)
            .transpose()?
            .and_then(license_meters);
        let now = self.clock.now();
        if input.expires_at.is_some_and(|at| at <= now) {
            return Err(Error::InvalidInput("expiresAt must be in the future".into()));
        }
        let hash = idempotency::request_hash(&json!({
            "policy_id": input.policy_id, "customer_id": input.customer_id, "customer_external_id": input.customer_external_id,
            "expires_at": input.expires_at, "max_activations": max_activations, "entitlements": entitlements,
            "metadata": input.metadata, "billing_subscription_id": billing, "meters": own_meters,
        }));

        let tx = begin_write(&self.writer).await?;
        let claim = match &idempotency_key {
            Some(key) => {
                Some(idempotency::claim(&tx, &actor.vendor_id, "issueLicense", key.as_str(), &hash, now).await?)
            }
            None => None,
        };
        if let Some(Claim::Replay { result_id }) = &claim {
            let license = self.find_license(&tx, actor, result_id).await?;
            tx.commit().await?;
            return Ok(license);
        }
        let policy = policy::Entity::find_by_id(&input.policy_id)
            .filter(policy::Column::VendorId.eq(&actor.vendor_id))
            .one(&tx)
            .await?
            .ok_or(Error::NotFound("policy"))?;
        let customer_id = self
            .resolve_customer(
                &tx,
                actor,
                input.customer_id.as_deref(),
                input.customer_external_id.as_deref(),
            )
            .await?;
        let key = LicenseKey::generate();
        let expires_at = input
            .expires_at
            .or_else(|| policy.duration_seconds.map(|s| now + Duration::seconds(s)));
        let license = license::ActiveModel {
            id: Set(new_id()),
            vendor_id: Set(actor.vendor_id.clone()),
            product_id: Set(policy.product_id.clone()),
            policy_id: Set(policy.id.clone()),
            customer_id: Set(customer_id),
            key_lookup: Set(self.secrets.keyed_hash(LICENSE_KEY_PURPOSE, key.canonical())),
            key_enc: Set(self.secrets.encrypt(LICENSE_KEY_CONTEXT, key.canonical().as_bytes())?),
            key_last4: Set(key.last4().to_owned()),
            status: Set(LicenseStatus::Active),
            status_reason: Set(None),
            issued_at: Set(now),
            expires_at: Set(expires_at),
            max_activations: Set(max_activations.or(policy.max_activations)),
            seats_used: Set(0),
            entitlements: Set(entitlements.unwrap_or_else(|| policy.entitlements.clone())),
            metadata: Set(input.metadata),
            billing_subscription_id: Set(billing),
            meters: Set(own_meters),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&tx)
        .await?;
        if let Some(Claim::New { row_id }) = &claim {
            idempotency::complete(&tx, row_id, &license.id).await?;
        }
        if let Some(subscription_id) = &license.billing_subscription_id {
            billing::request_read(&tx, subscription_id, now).await?;
        }
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "license.issue",
                "license",
                &license.id,
                json!({}),
                license_json(&license),
            ),
        )
        .await?;
        crate::webhooks::events::record(
            &tx,
            &license.vendor_id,
            "license.created",
            crate::webhooks::objects::license(&license),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(license)
    }

    async fn resolve_customer(
        &self,
        db: &impl ConnectionTrait,
        actor: &Actor,
        id: Option<&str>,
        external_id: Option<&str>,
    ) -> Result<Option<String>> {
        let select = customer::Entity::find().filter(customer::Column::VendorId.eq(&actor.vendor_id));
        let found = match (id, external_id) {
            (None, None) => return Ok(None),
            (Some(id), _) => select.filter(customer::Column::Id.eq(id)).one(db).await?,
            (None, Some(ext)) => select.filter(customer::Column::ExternalId.eq(ext)).one(db).await?,
        };
        let customer = found.ok_or(Error::NotFound("customer"))?;
        if external_id.is_some_and(|ext| ext != customer.external_id) {
            return Err(Error::InvalidInput(
                "customerId and customerExternalId name different customers".into(),
            ));
        }
        Ok(Some(customer.id))
    }

    pub(super) async fn find_license(
        &self,
        db: &impl ConnectionTrait,
        actor: &Actor,
        id: &str,
    ) -> Result<license::Model> {
        license::Entity::find_by_id(id)
            .filter(license::Column::VendorId.eq(&actor.vendor_id))
            .one(db)
            .await?
            .ok_or(Error::NotFound("license"))
    }

    /// Changes expiry, seat cap, entitlements or metadata.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::NotFound`], [`Error::LicenseRevoked`],
    /// [`Error::InvalidInput`] (e.g. a seat cap below the seats in use).
    pub async fn update_license(&self, actor: &Actor, id: &str, change: UpdateLicense) -> Result<license::Model> {
        actor.require(Capability::ManageLicenses)?;
        let entitlements = change.entitlements.map(newtypes::code_list);
        if let Some(max) = change.max_activations {
            check_max_activations(max)?;
        }
        if let Some(metadata) = &change.metadata {
            check_metadata(metadata.as_ref())?;
        }
        let meters = change
            .meters
            .map(catalog::parse_meters)
            .transpose()?
            .map(license_meters);
        let billing = change
            .billing_subscription_id
            .map(|id| {
                id.map(|id| billing::billing_id("billingSubscriptionId", id.as_str()))
                    .transpose()
            })
            .transpose()?;
        self.change_license(actor, id, "license.update", |current, _now| {
            if current.status == LicenseStatus::Revoked {
                return Err(Error::LicenseRevoked("a revoked license cannot be changed".into()));
            }
            if let Some(Some(max)) = change.max_activations
                && max < current.seats_used
            {
                return Err(Error::InvalidInput(format!(
                    "{} devices hold seats; release devices before lowering maxActivations to {max}",
                    current.seats_used
                )));
            }
            let mut model: license::ActiveModel = current.clone().into();
            if let Some(expires_at) = change.expires_at {
                model.expires_at = Set(expires_at);
            }
            if let Some(max) = change.max_activations {
                model.max_activations = Set(max);
            }
            if let Some(entitlements) = entitlements {
                model.entitlements = Set(entitlements);
            }
            if let Some(metadata) = change.metadata {
                model.metadata = Set(metadata);
            }
            if let Some(meters) = meters {
                model.meters = Set(meters);
            }
            if let Some(billing) = billing {
                model.billing_subscription_id = Set(billing);
            }
            Ok(Some(model))
        })
        .await
    }

    /// One license by id or by full key.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] unless exactly one of the two is given.
    pub async fn license(&self, actor: &Actor, id: Option<&str>, key: Option<&str>) -> Result<Option<license::Model>> {
        actor.require(Capability::Read)?;
        let select = license::Entity::find().filter(license::Column::VendorId.eq(&actor.vendor_id));
        let select = match (id, key) {
            (Some(id), None) => select.filter(license::Column::Id.eq(id)),
            (None, Some(key)) => match LicenseKey::parse(key) {
                Ok(key) => select.filter(
                    license::Column::KeyLookup.eq(self.secrets.keyed_hash(LICENSE_KEY_PURPOSE, key.canonical())),
                ),
                Err(_) => return Ok(None),
            },
            _ => return Err(Error::InvalidInput("give exactly one of id and key".into())),
        };
        Ok(select.one(&self.db).await?)
    }

    /// The vendor's licenses matching `filter`, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn licenses(
        &self,
        actor: &Actor,
        filter: &LicenseFilter,
        request: &PageRequest,
    ) -> Result<Page<license::Model>> {
        actor.require(Capability::Read)?;
        let now = self.clock.now();
        let mut cond = Condition::all().add(license::Column::VendorId.eq(&actor.vendor_id));
        if let Some(status) = filter.status {
            let not_expired = Condition::any()
                .add(license::Column::ExpiresAt.is_null())
                .add(license::Column::ExpiresAt.gt(now));
            cond = cond.add(match status {
                LicenseStatus::Active => Condition::all()
                    .add(license::Column::Status.eq(LicenseStatus::Active))
                    .add(not_expired),
                LicenseStatus::Expired => Condition::any()
                    .add(license::Column::Status.eq(LicenseStatus::Expired))
                    .add(
                        Condition::all()
                            .add(license::Column::Status.eq(LicenseStatus::Active))
                            .add(license::Column::ExpiresAt.lte(now)),
                    ),
                other => Condition::all().add(license::Column::Status.eq(other)),
            });
        }
        if let Some(id) = &filter.product_id {
            cond = cond.add(license::Column::ProductId.eq(id));
        }
        if let Some(id) = &filter.policy_id {
            cond = cond.add(license::Column::PolicyId.eq(id));
        }
        if let Some(id) = &filter.customer_id {
            cond = cond.add(license::Column::CustomerId.eq(id));
        }
        if let Some(before) = filter.expires_before {
            cond = cond.add(license::Column::ExpiresAt.lt(before));
        }
        if let Some(needle) = filter.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            let mut any = Condition::any().add(license::Column::Id.eq(needle));
            if let Ok(key) = LicenseKey::parse(needle) {
                any = any
                    .add(license::Column::KeyLookup.eq(self.secrets.keyed_hash(LICENSE_KEY_PURPOSE, key.canonical())));
            }
            let customers = Query::select()
                .column(customer::Column::Id)
                .from(customer::Entity)
                .and_where(customer::Column::VendorId.eq(&actor.vendor_id))
                .cond_where(
                    Condition::any()
                        .add(contains_ci(customer::Column::Name, needle))
                        .add(contains_ci(customer::Column::Email, needle))
                        .add(contains_ci(customer::Column::ExternalId, needle)),
                )
                .to_owned();
            any = any.add(license::Column::CustomerId.in_subquery(customers));
            cond = cond.add(any);
        }
        page::fetch(
            &self.db,
            license::Entity::find().filter(cond),
            license::Column::Id,
            request,
            Order::OldestFirst,
        )
        .await
    }

    /// The license key as this caller may see it: in full for OWNER, ADMIN and SUPPORT (or
    /// when `issued_by_caller`, the response to the call that issued it), else masked.
    ///
    /// # Errors
    /// [`Error::Internal`] if the stored key does not decrypt.
    pub fn license_key_for(&self, actor: &Actor, license: &license::Model, issued_by_caller: bool) -> Result<String> {
        if !(issued_by_caller || actor.can(Capability::RevealLicenseKeys)) {
            return Ok(masked_key(&license.key_last4));
        }
        let raw = self.secrets.decrypt(LICENSE_KEY_CONTEXT, &license.key_enc)?;
        let canonical = String::from_utf8(raw).map_err(|_| Error::Internal("stored key is not text".into()))?;
        Ok(LicenseKey::parse(&canonical)?.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{DbBackend, QueryTrait};

    #[test]
    fn the_key_lookup_locks_only_the_license_row() {
        let select = joined_with_policy(license::Entity::find().filter(license::Column::KeyLookup.eq("x")), true);
        let sql = select.build(DbBackend::Postgres).to_string();
        assert!(sql.contains("INNER JOIN \"policies\""), "{sql}");
        assert!(sql.ends_with("FOR UPDATE OF \"licenses\""), "{sql}");
    }
}
