//! Consumption: a license's meter usage, and importing the usage ledger a device carried
//! offline (its deactivation file).

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};

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
}

impl From<domain::usage::MeterUsage> for MeterUsage {
    fn from(u: domain::usage::MeterUsage) -> Self {
        Self {
            meter: u.meter,
            used: u.used,
            limit: u.limit,
            remaining: u.remaining,
            period_start: u.period_start,
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
    /// Imports a deactivation file written by `licensing-client deactivate --out` (OWNER,
    /// ADMIN, SUPPORT, INTEGRATION): frees the device's seat and adds its unacknowledged usage
    /// to the license totals once. The same file again changes nothing (`duplicateRecords`).
    async fn import_deactivation(&self, ctx: &Context<'_>, file: String) -> ApiResult<DeactivationReceipt> {
        let receipt = ctx.domain().import_deactivation(ctx.actor()?, &file).await?;
        Ok(DeactivationReceipt {
            device: receipt.device.into(),
            accepted_records: count(receipt.accepted_records),
            duplicate_records: count(receipt.duplicate_records),
            anomalies: receipt.anomalies.into_iter().map(Anomaly).collect(),
        })
    }
}
