//! The catalog: products and the policies licenses are issued under.

use entity::columns::MeterList;
use entity::enums::{DeadDeviceAction, DeploymentMode, ResetPeriod};
use entity::{license, policy, product};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

use crate::audit::{self, Change};
use crate::db::begin_write;
use crate::newtypes::{self, Code, Text};
use crate::page::{self, Order, Page, PageRequest};
use crate::{Actor, Capability, Domain, Error, Result, new_id};

/// Offline grace when the policy names none: 7 days.
pub const DEFAULT_GRACE_SECONDS: i64 = 604_800;
/// Refresh-by horizon of license files when the policy names none: 30 days.
pub const DEFAULT_LICENSE_FILE_TTL_SECONDS: i64 = 2_592_000;

pub use entity::columns::Meter;

/// A consumption meter to put on a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMeter {
    /// Meter code (`api-calls`).
    pub code: Code,
    /// Allowed use per period; `None` = unlimited.
    pub limit: Option<i64>,
    /// When usage starts again from zero.
    pub reset_period: ResetPeriod,
    /// Use allowed beyond `limit` before recording is refused.
    pub overage_limit: i64,
}

/// A policy to create; `None` takes the documented default.
#[derive(Debug, Clone)]
pub struct NewPolicy {
    /// The product it belongs to.
    pub product_id: String,
    /// Display name.
    pub name: Text<200>,
    /// License duration; `None` = perpetual.
    pub duration_seconds: Option<i64>,
    /// Trial policy (needs a duration).
    pub trial: Option<bool>,
    /// Seat cap; `None` = unlimited.
    pub max_activations: Option<i32>,
    /// Floating seats (reclaimed from dead devices).
    pub floating: Option<bool>,
    /// Online, offline or hybrid (default online).
    pub deployment_mode: Option<DeploymentMode>,
    /// Heartbeat interval; `None` = none required.
    pub heartbeat_interval_seconds: Option<i64>,
    /// What a dead device's seat does (default: release when floating, else keep).
    pub dead_device_action: Option<DeadDeviceAction>,
    /// Offline grace (default 7 days).
    pub grace_seconds: Option<i64>,
    /// License-file refresh horizon (default 30 days).
    pub license_file_ttl_seconds: Option<i64>,
    /// k-of-n fingerprint component rule; `None` = exact fingerprint.
    pub min_component_matches: Option<i32>,
    /// Entitlement codes (distinct).
    pub entitlements: Vec<Code>,
    /// Consumption meters.
    pub meters: Vec<NewMeter>,
    /// Backed by a billing subscription.
    pub subscription_backed: Option<bool>,
    /// How long a linked license outlives its subscription's period end or a lapse (default 7 days).
    pub billing_grace_seconds: Option<i64>,
    /// Re-activating a live device must prove its device key, or wait for staff (default false).
    pub require_device_key_proof: Option<bool>,
}

/// Largest meter limit or overage: far beyond any real allowance, small enough that sums of
/// usage never overflow.
pub const MAX_METER_ALLOWANCE: i64 = 1_000_000_000_000_000;

/// Checks meters to put on a policy or a license: codes distinct, limits and overage between
/// 0 and [`MAX_METER_ALLOWANCE`].
///
/// # Errors
/// [`Error::InvalidInput`] naming the meter at fault.
pub fn parse_meters(new: Vec<NewMeter>) -> Result<Vec<Meter>> {
    let mut meters: Vec<Meter> = Vec::with_capacity(new.len());
    for meter in new {
        let code = meter.code.into_inner();
        if meters.iter().any(|m| m.code == code) {
            return Err(Error::InvalidInput(format!("meter {code} is listed twice")));
        }
        for (field, value) in [("limit", meter.limit), ("overageLimit", Some(meter.overage_limit))] {
            if value.is_some_and(|v| !(0..=MAX_METER_ALLOWANCE).contains(&v)) {
                return Err(Error::InvalidInput(format!(
                    "meter {code}: {field} must be between 0 and {MAX_METER_ALLOWANCE}"
                )));
            }
        }
        meters.push(Meter {
            code,
            limit: meter.limit,
            reset_period: meter.reset_period,
            overage_limit: meter.overage_limit,
        });
    }
    Ok(meters)
}

/// The meters a license has: its policy's, with the license's own meters laid over them by
/// code (a license meter with a new code adds a meter).
#[must_use]
pub fn effective_meters(policy: &policy::Model, license: &license::Model) -> Vec<Meter> {
    let mut meters = policy.meters.0.clone();
    for own in license.meters.iter().flat_map(|list| &list.0) {
        match meters.iter_mut().find(|m| m.code == own.code) {
            Some(meter) => *meter = own.clone(),
            None => meters.push(own.clone()),
        }
    }
    meters
}

/// Longest duration a policy may name: ten years, so time arithmetic never overflows.
pub const MAX_POLICY_SECONDS: i64 = 315_360_000;

fn positive(field: &str, value: Option<i64>, min: i64) -> Result<Option<i64>> {
    match value {
        Some(v) if v < min => Err(Error::InvalidInput(format!("{field} must be at least {min}"))),
        other => Ok(other),
    }
}

fn seconds(field: &str, value: Option<i64>, min: i64) -> Result<Option<i64>> {
    match positive(field, value, min)? {
        Some(v) if v > MAX_POLICY_SECONDS => Err(Error::InvalidInput(format!(
            "{field} must be at most {MAX_POLICY_SECONDS} (ten years)"
        ))),
        other => Ok(other),
    }
}

fn policy_json(p: &policy::Model) -> serde_json::Value {
    json!({
        "product_id": p.product_id, "name": p.name, "duration_seconds": p.duration_seconds, "trial": p.trial,
        "max_activations": p.max_activations, "floating": p.floating, "deployment_mode": p.deployment_mode,
        "heartbeat_interval_seconds": p.heartbeat_interval_seconds, "dead_device_action": p.dead_device_action,
        "grace_seconds": p.grace_seconds, "license_file_ttl_seconds": p.license_file_ttl_seconds,
        "min_component_matches": p.min_component_matches, "entitlements": p.entitlements, "meters": p.meters,
        "subscription_backed": p.subscription_backed, "billing_grace_seconds": p.billing_grace_seconds,
        "require_device_key_proof": p.require_device_key_proof,
    })
}

impl Domain {
    /// Creates a product.
    ///
    /// # Errors
    /// [`Error::Forbidden`], or [`Error::InvalidInput`] for a bad name or a code in use.
    pub async fn create_product(&self, actor: &Actor, name: Text<200>, code: Code) -> Result<product::Model> {
        actor.require(Capability::ManageCatalog)?;
        let (name, code) = (name.into_inner(), code.into_inner());
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let taken = product::Entity::find()
            .filter(product::Column::VendorId.eq(&actor.vendor_id))
            .filter(product::Column::Code.eq(&code))
            .one(&tx)
            .await?;
        if taken.is_some() {
            return Err(Error::InvalidInput(format!("product code {code:?} is in use")));
        }
        let product = product::ActiveModel {
            id: Set(new_id()),
            vendor_id: Set(actor.vendor_id.clone()),
            name: Set(name),
            code: Set(code),
            metadata: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&tx)
        .await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "product.create",
                "product",
                &product.id,
                json!({}),
                json!({ "name": product.name, "code": product.code }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(product)
    }

    /// The vendor's products, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn products(&self, actor: &Actor, request: &PageRequest) -> Result<Page<product::Model>> {
        actor.require(Capability::Read)?;
        let select = product::Entity::find().filter(product::Column::VendorId.eq(&actor.vendor_id));
        page::fetch(&self.db, select, product::Column::Id, request, Order::OldestFirst).await
    }

    /// Creates a policy, filling the documented defaults.
    ///
    /// # Errors
    /// [`Error::Forbidden`]; [`Error::NotFound`] for a product of another vendor;
    /// [`Error::InvalidInput`] when a value is out of range or the rules contradict each other.
    pub async fn create_policy(&self, actor: &Actor, new: NewPolicy) -> Result<policy::Model> {
        actor.require(Capability::ManageCatalog)?;
        let name = new.name.into_inner();
        let duration_seconds = seconds("durationSeconds", new.duration_seconds, 60)?;
        let trial = new.trial.unwrap_or(false);
        if trial && duration_seconds.is_none() {
            return Err(Error::InvalidInput("a trial policy needs durationSeconds".into()));
        }
        let max_activations = positive("maxActivations", new.max_activations.map(i64::from), 1)?;
        let heartbeat = seconds("heartbeatIntervalSeconds", new.heartbeat_interval_seconds, 10)?;
        let grace_seconds = seconds("graceSeconds", new.grace_seconds, 0)?.unwrap_or(DEFAULT_GRACE_SECONDS);
        let billing_grace_seconds =
            seconds("billingGraceSeconds", new.billing_grace_seconds, 0)?.unwrap_or(DEFAULT_GRACE_SECONDS);
        let ttl = seconds("licenseFileTtlSeconds", new.license_file_ttl_seconds, 60)?
            .unwrap_or(DEFAULT_LICENSE_FILE_TTL_SECONDS);
        let min_matches = positive("minComponentMatches", new.min_component_matches.map(i64::from), 1)?;
        let floating = new.floating.unwrap_or(false);
        let dead_device_action = new.dead_device_action.unwrap_or(if floating {
            DeadDeviceAction::ReleaseSeat
        } else {
            DeadDeviceAction::KeepSeat
        });
        let meters = parse_meters(new.meters)?;
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        product::Entity::find_by_id(&new.product_id)
            .filter(product::Column::VendorId.eq(&actor.vendor_id))
            .one(&tx)
            .await?
            .ok_or(Error::NotFound("product"))?;
        let policy = policy::ActiveModel {
            id: Set(new_id()),
            vendor_id: Set(actor.vendor_id.clone()),
            product_id: Set(new.product_id),
            name: Set(name),
            duration_seconds: Set(duration_seconds),
            trial: Set(trial),
            max_activations: Set(max_activations.and_then(|n| i32::try_from(n).ok())),
            floating: Set(floating),
            deployment_mode: Set(new.deployment_mode.unwrap_or(DeploymentMode::Online)),
            heartbeat_interval_seconds: Set(heartbeat),
            dead_device_action: Set(dead_device_action),
            grace_seconds: Set(grace_seconds),
            license_file_ttl_seconds: Set(ttl),
            min_component_matches: Set(min_matches.and_then(|n| i32::try_from(n).ok())),
            entitlements: Set(newtypes::code_list(new.entitlements)),
            meters: Set(MeterList(meters)),
            subscription_backed: Set(new.subscription_backed.unwrap_or(false)),
            billing_grace_seconds: Set(billing_grace_seconds),
            require_device_key_proof: Set(new.require_device_key_proof.unwrap_or(false)),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&tx)
        .await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new("policy.create", "policy", &policy.id, json!({}), policy_json(&policy)),
        )
        .await?;
        tx.commit().await?;
        Ok(policy)
    }

    /// The vendor's policies, oldest first, optionally of one product.
    ///
    /// # Errors
    /// Database errors.
    pub async fn policies(
        &self,
        actor: &Actor,
        product_id: Option<&str>,
        request: &PageRequest,
    ) -> Result<Page<policy::Model>> {
        actor.require(Capability::Read)?;
        let mut select = policy::Entity::find().filter(policy::Column::VendorId.eq(&actor.vendor_id));
        if let Some(product_id) = product_id {
            select = select.filter(policy::Column::ProductId.eq(product_id));
        }
        page::fetch(&self.db, select, policy::Column::Id, request, Order::OldestFirst).await
    }
}
