//! Consumption: a license's meter usage and its history, devices recording usage online,
//! importing the usage ledger a device carried offline (usage reports and deactivation
//! files), and staff corrections.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use domain::newtypes::{IdempotencyKey, Text};

use crate::graphql::anomalies::Anomaly;
use crate::graphql::context::ContextExt;
use crate::graphql::devices::Device;
use crate::graphql::error::ApiResult;

/// Use of one meter in the current period.
#[derive(SimpleObject, Clone)]
pub struct MeterUsage {
    /// Meter code.
    pub meter: String,
    /// Used in the current period.
    pub used: i64,
    /// Allowed per period; null = unlimited.
    pub limit: Option<i64>,
    /// What is left of `limit`; null = unlimited.
    pub remaining: Option<i64>,
    /// When the current period started; null for meters that never reset.
    pub period_start: Option<DateTime<Utc>>,
    /// When the current period ends (the counter resets); null for meters that never reset.
    pub period_end: Option<DateTime<Utc>>,
    /// Used beyond `limit`, within the overage allowance.
    pub overage_used: i64,
    /// Used over every period.
    pub lifetime_used: i64,
}

impl From<domain::usage::MeterUsage> for MeterUsage {
    fn from(u: domain::usage::MeterUsage) -> Self {
        Self {
            meter: u.meter,
            used: u.used,
            limit: u.limit,
            remaining: u.remaining,
            period_start: u.period_start,
            period_end: u.period_end,
            overage_used: u.overage_used,
            lifetime_used: u.lifetime_used,
        }
    }
}

/// Bucket size of a usage history.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "domain::usage::UsageBucket")]
pub enum UsageBucket {
    /// UTC hours.
    Hour,
    /// UTC days.
    Day,
}

/// Usage in one bucket of a history.
#[derive(SimpleObject, Clone)]
pub struct UsagePoint {
    /// Start of the bucket.
    pub start: DateTime<Utc>,
    /// Units recorded in it (by `recordedAt`).
    pub quantity: i64,
}

impl From<domain::usage::UsagePoint> for UsagePoint {
    fn from(p: domain::usage::UsagePoint) -> Self {
        Self {
            start: p.start,
            quantity: p.quantity,
        }
    }
}

/// Usage a device records online.
#[derive(InputObject)]
pub struct RecordUsageInput {
    /// The meter's code.
    pub meter: String,
    /// Units used: 1 to 10^9.
    pub quantity: i64,
    /// Your key for this unit of work (1-255 printable ASCII): a retry with the same key and
    /// input answers the same and counts once; with other input it is IDEMPOTENCY_CONFLICT.
    pub idempotency_key: String,
    /// When it was used (default now): at most 35 days back, 5 minutes ahead.
    pub recorded_at: Option<DateTime<Utc>>,
}

/// A staff correction of a license's usage in the meter's current period.
#[derive(InputObject)]
pub struct AdjustUsageInput {
    /// The license.
    pub license_id: ID,
    /// The meter's code.
    pub meter: String,
    /// Units to add; negative takes away (never below zero). Not 0, at most 10^9 either way.
    pub delta: i64,
    /// Why (required, up to 500 characters; kept in the audit log).
    pub reason: String,
    /// A retry with the same key counts once.
    pub idempotency_key: String,
}

/// What importing a usage report did.
#[derive(SimpleObject)]
pub struct UsageReceipt {
    /// Ledger records counted by this import.
    pub accepted_records: i32,
    /// Records already counted before (the same report imported again, or an earlier one).
    pub duplicate_records: i32,
    /// What was wrong: a broken ledger (its records were then not counted), usage dated while
    /// the device was dead, periods pushed past their limit by late records.
    pub anomalies: Vec<Anomaly>,
}

impl From<domain::usage::UsageReceipt> for UsageReceipt {
    fn from(r: domain::usage::UsageReceipt) -> Self {
        Self {
            accepted_records: count(r.accepted_records),
            duplicate_records: count(r.duplicate_records),
            anomalies: r.anomalies.into_iter().map(Anomaly).collect(),
        }
    }
}

/// What importing a deactivation file did.
#[derive(SimpleObject)]
pub struct DeactivationReceipt {
    /// The device, released.
    pub device: Device,
    /// Ledger records counted by this import.
    pub accepted_records: i32,
    /// Records already counted before (the same file imported again).
    pub duplicate_records: i32,
    /// What was wrong with the device's usage ledger (its records were then not counted).
    pub anomalies: Vec<Anomaly>,
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Consumption mutations.
#[derive(Default)]
pub struct UsageMutation;

#[Object]
impl UsageMutation {
    /// Counts usage of one of the license's meters (device token). Refused whole with
    /// USAGE_LIMIT_EXCEEDED when it would take the period past limit + overage.
    async fn record_usage(&self, ctx: &Context<'_>, input: RecordUsageInput) -> ApiResult<MeterUsage> {
        let actor = ctx.actor()?;
        actor.device()?;
        let input = domain::usage::RecordUsage {
            meter: input.meter,
            quantity: input.quantity,
            idempotency_key: IdempotencyKey::try_from(input.idempotency_key.as_str())?,
            recorded_at: input.recorded_at,
        };
        Ok(ctx.domain().record_usage(actor, input).await?.into())
    }

    /// Imports a usage report written by `licensing-client usage-report` (OWNER, ADMIN,
    /// SUPPORT, INTEGRATION): counts each new ledger record once; the device's next license
    /// file acknowledges them (`usage_ack`). The same report again changes nothing.
    async fn import_usage_report(&self, ctx: &Context<'_>, file: String) -> ApiResult<UsageReceipt> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::Support)?;
        Ok(ctx.domain().import_usage_report(actor, &file).await?.into())
    }

    /// Imports a deactivation file written by `licensing-client deactivate --out` (OWNER,
    /// ADMIN, SUPPORT, INTEGRATION): frees the device's seat and adds its unacknowledged usage
    /// to the license totals once. The same file again changes nothing (`duplicateRecords`).
    async fn import_deactivation(&self, ctx: &Context<'_>, file: String) -> ApiResult<DeactivationReceipt> {
        let receipt = ctx.domain().import_deactivation(ctx.actor()?, &file).await?;
        Ok(DeactivationReceipt {
            device: receipt.device.into(),
            accepted_records: count(receipt.usage.accepted_records),
            duplicate_records: count(receipt.usage.duplicate_records),
            anomalies: receipt.usage.anomalies.into_iter().map(Anomaly).collect(),
        })
    }

    /// Corrects a meter's current period (OWNER, ADMIN, SUPPORT): audited, with a reason;
    /// never below zero; the same idempotency key counts once.
    async fn adjust_usage(&self, ctx: &Context<'_>, input: AdjustUsageInput) -> ApiResult<MeterUsage> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::ReviewUsage)?;
        let input = domain::usage::AdjustUsage {
            license_id: input.license_id.0,
            meter: input.meter,
            delta: input.delta,
            reason: Text::parse("reason", &input.reason)?,
            idempotency_key: IdempotencyKey::try_from(input.idempotency_key.as_str())?,
        };
        Ok(ctx.domain().adjust_usage(actor, input).await?.into())
    }
}
