//! Anomalies: flags on suspicious consumption, with an explanation and evidence.

use async_graphql::{Context, Enum, ID, Json, Object};
use chrono::{DateTime, Utc};
use entity::anomaly;

use crate::graphql::context::ContextExt;
use crate::graphql::devices::Device;
use crate::graphql::error::ApiResult;
use crate::graphql::licenses::License;

/// What kind of anomaly.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::AnomalyKind")]
pub enum AnomalyKind {
    /// Usage far above the license's normal rate.
    UsageSpike,
    /// A device's clock went backwards.
    ClockTamper,
    /// An older copy of a usage ledger was restored.
    LedgerRollback,
    /// A usage ledger diverged from what was acknowledged (copied to a second machine).
    LedgerFork,
    /// Records are missing from a usage ledger.
    LedgerGap,
    /// Many activations in a short time.
    ActivationBurst,
    /// A device's fingerprint keeps changing.
    FingerprintDrift,
    /// Usage recorded by a device that is dead.
    UsageWhileDead,
}

/// Whether staff looked at it.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::AnomalyStatus")]
pub enum AnomalyStatus {
    /// Not yet acknowledged.
    Open,
    /// Acknowledged by staff.
    Acknowledged,
}

/// A flag on suspicious consumption.
#[derive(Clone)]
pub struct Anomaly(pub anomaly::Model);

#[Object]
impl Anomaly {
    /// Anomaly id.
    async fn id(&self) -> ID {
        self.0.id.clone().into()
    }

    /// What kind.
    async fn kind(&self) -> AnomalyKind {
        self.0.kind.into()
    }

    /// Open or acknowledged.
    async fn status(&self) -> AnomalyStatus {
        self.0.status.into()
    }

    /// The license concerned.
    async fn license(&self, ctx: &Context<'_>) -> ApiResult<Option<License>> {
        let Some(id) = &self.0.license_id else {
            return Ok(None);
        };
        Ok(ctx
            .scope()?
            .loaders()
            .licenses
            .load_one(id.clone())
            .await?
            .map(Into::into))
    }

    /// The device concerned.
    async fn device(&self, ctx: &Context<'_>) -> ApiResult<Option<Device>> {
        let Some(id) = &self.0.device_id else {
            return Ok(None);
        };
        Ok(ctx
            .scope()?
            .loaders()
            .devices
            .load_one(id.clone())
            .await?
            .map(Into::into))
    }

    /// When it was detected.
    async fn detected_at(&self) -> DateTime<Utc> {
        self.0.detected_at
    }

    /// What was seen, in a sentence.
    async fn explanation(&self) -> &str {
        &self.0.explanation
    }

    /// The facts behind it.
    async fn evidence(&self) -> Option<Json<serde_json::Value>> {
        self.0.evidence.clone().map(Json)
    }
}
