//! Anomalies: flags on suspicious consumption, with an explanation and evidence; listed,
//! read one by one and acknowledged by staff.

use async_graphql::{Context, Enum, ID, InputObject, Json, Object};
use chrono::{DateTime, Utc};
use entity::anomaly;

use crate::graphql::connection::{Connection, from_page, page_request};
use crate::graphql::context::ContextExt;
use crate::graphql::devices::Device;
use crate::graphql::error::ApiResult;
use crate::graphql::licenses::License;
use crate::graphql::page_cost;

/// What kind of anomaly.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::AnomalyKind")]
pub enum AnomalyKind {
    /// Usage far above the series' own baseline.
    UsageSpike,
    /// A device's clock went backwards.
    ClockTamper,
    /// An older copy of a usage ledger was restored.
    LedgerRollback,
    /// A usage ledger diverged from what was acknowledged (copied to a second machine).
    LedgerFork,
    /// Records are missing from a usage ledger.
    LedgerGap,
    /// A license cycling through far more distinct devices than it has seats (seat hopping).
    ActivationBurst,
    /// A device's fingerprint keeps changing.
    FingerprintDrift,
    /// Usage recorded for a time the device was dead or released.
    UsageWhileDead,
    /// A device that keeps heartbeating stopped reporting usage it normally reports.
    UsageDrop,
    /// The period's allowance will run out well before it resets.
    UsagePace,
    /// One fingerprint active under licenses of several customers.
    SharedFingerprint,
    /// Usage a device reported late took a period past its limit plus overage (it was
    /// counted: the usage happened).
    UsageOverLimit,
    /// A device re-activated (a reinstall, or a takeover of its fingerprint) more than once
    /// within 24 hours.
    DeviceReactivation,
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
        License::by_id(ctx, self.0.license_id.as_deref()).await
    }

    /// The device concerned.
    async fn device(&self, ctx: &Context<'_>) -> ApiResult<Option<Device>> {
        Device::by_id(ctx, self.0.device_id.as_deref()).await
    }

    /// The meter of the usage series concerned, for consumption anomalies.
    async fn meter(&self) -> Option<&str> {
        self.0.meter.as_deref()
    }

    /// When it was detected.
    async fn detected_at(&self) -> DateTime<Utc> {
        self.0.detected_at
    }

    /// When the situation was last seen (a repeat of an open anomaly moves it).
    async fn last_seen_at(&self) -> DateTime<Utc> {
        self.0.last_seen_at
    }

    /// When staff acknowledged it.
    async fn acknowledged_at(&self) -> Option<DateTime<Utc>> {
        self.0.acknowledged_at
    }

    /// The note staff left when acknowledging it.
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
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

/// Which anomalies to list.
#[derive(InputObject, Default)]
pub struct AnomalyFilter {
    /// Only this status.
    pub status: Option<AnomalyStatus>,
    /// Only these kinds.
    pub kinds: Option<Vec<AnomalyKind>>,
    /// Only this license's.
    pub license_id: Option<ID>,
    /// Only this device's.
    pub device_id: Option<ID>,
}

/// Anomaly queries.
#[derive(Default)]
pub struct AnomalyQuery;

#[Object]
impl AnomalyQuery {
    /// The vendor's anomalies, newest first.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn anomalies(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        filter: Option<AnomalyFilter>,
    ) -> ApiResult<Connection<Anomaly>> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::Read)?;
        let request = page_request(ctx, first, after)?;
        let filter = filter.unwrap_or_default();
        let filter = domain::anomalies::AnomalyFilter {
            status: filter.status.map(Into::into),
            kinds: filter.kinds.unwrap_or_default().into_iter().map(Into::into).collect(),
            license_id: filter.license_id.map(|id| id.0),
            device_id: filter.device_id.map(|id| id.0),
        };
        let page = ctx.domain().anomalies(actor, &filter, &request).await?;
        Ok(from_page(page, |a| &a.id, Anomaly))
    }

    /// One anomaly; null when the vendor has none with this id.
    async fn anomaly(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Option<Anomaly>> {
        Ok(ctx.domain().anomaly(ctx.actor()?, &id).await?.map(Anomaly))
    }
}

/// Anomaly mutations.
#[derive(Default)]
pub struct AnomalyMutation;

#[Object]
impl AnomalyMutation {
    /// Marks an anomaly as looked at, with an optional note (OWNER, ADMIN, SUPPORT). The same
    /// situation seen again later opens a new anomaly.
    async fn acknowledge_anomaly(&self, ctx: &Context<'_>, id: ID, note: Option<String>) -> ApiResult<Anomaly> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::ReviewUsage)?;
        Ok(Anomaly(
            ctx.domain().acknowledge_anomaly(actor, &id, note.as_deref()).await?,
        ))
    }
}
