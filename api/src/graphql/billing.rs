//! Billing sync: what the billing system says about a license's subscription
//! (`License.billing`), the drift report, the reconciliation runs, and `syncBilling`.

use async_graphql::{Context, Enum, ID, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{billing_drift, billing_subscription, billing_sync_run};

use crate::graphql::connection::{Connection, from_page, page_request};
use crate::graphql::context::ContextExt;
use crate::graphql::error::ApiResult;
use crate::graphql::licenses::License;
use crate::graphql::page_cost;

/// A billing subscription's status.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::BillingStatus")]
pub enum BillingStatus {
    /// In a free trial.
    Trialing,
    /// Paid up.
    Active,
    /// The latest payment failed; the billing system is retrying.
    PastDue,
    /// Retries ran out.
    Unpaid,
    /// Ended.
    Canceled,
    /// The first payment has not succeeded yet.
    Incomplete,
    /// The first payment never succeeded.
    IncompleteExpired,
    /// A trial ended without a payment method.
    Paused,
    /// A status this version does not know (see `statusRaw`).
    Unknown,
}

/// What kind of disagreement.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::BillingDriftKind")]
pub enum BillingDriftKind {
    /// A license was in force while its subscription had ended (the sync suspended it).
    LicenseActiveSubscriptionEnded,
    /// A license was suspended while its subscription is paid (a billing suspension is lifted
    /// by the sync; a staff suspension is for staff).
    SuspendedWhilePaid,
    /// A license's expiry was not its period end plus grace (the sync moved it).
    ExpiryMismatch,
    /// A paying subscription no license follows.
    SubscriptionWithoutLicense,
    /// A subscription-backed license with no subscription, or one the billing system does not have.
    LicenseWithoutSubscription,
    /// The license's customer is not the subscription's customer.
    CustomerMismatch,
    /// A subscription status this version does not know: nothing was changed.
    UnknownStatus,
}

/// What the billing system last said about a subscription.
#[derive(SimpleObject)]
pub struct BillingSubscription {
    /// The subscription's id in the billing system.
    pub external_id: String,
    /// Its status.
    pub status: BillingStatus,
    /// The status exactly as the billing system sent it.
    pub status_raw: String,
    /// The end of the current period.
    pub current_period_end: Option<DateTime<Utc>>,
    /// It ends at the period end instead of renewing.
    pub cancel_at_period_end: bool,
    /// When it was last read from the billing system.
    pub synced_at: DateTime<Utc>,
}

impl From<billing_subscription::Model> for BillingSubscription {
    fn from(s: billing_subscription::Model) -> Self {
        Self {
            external_id: s.id,
            status: s.status.into(),
            status_raw: s.status_raw,
            current_period_end: s.current_period_end,
            cancel_at_period_end: s.cancel_at_period_end,
            synced_at: s.synced_at,
        }
    }
}

/// A disagreement between the billing system and a license.
pub struct BillingDrift(pub billing_drift::Model);

#[Object]
impl BillingDrift {
    /// Drift id.
    async fn id(&self) -> ID {
        self.0.id.clone().into()
    }

    /// What kind.
    async fn kind(&self) -> BillingDriftKind {
        self.0.kind.into()
    }

    /// The license concerned.
    async fn license(&self, ctx: &Context<'_>) -> ApiResult<Option<License>> {
        License::by_id(ctx, self.0.license_id.as_deref()).await
    }

    /// The subscription concerned.
    async fn subscription_id(&self) -> Option<&str> {
        self.0.subscription_id.as_deref()
    }

    /// What was found and what to do, in a sentence.
    async fn explanation(&self) -> &str {
        &self.0.explanation
    }

    /// What the billing system says it should be.
    async fn expected(&self) -> Option<Json<serde_json::Value>> {
        self.0.expected.clone().map(Json)
    }

    /// What it was.
    async fn actual(&self) -> Option<Json<serde_json::Value>> {
        self.0.actual.clone().map(Json)
    }

    /// The sync healed it.
    async fn auto_fixed(&self) -> bool {
        self.0.auto_fixed
    }

    /// The first run that found it.
    async fn first_seen_at(&self) -> DateTime<Utc> {
        self.0.first_seen_at
    }

    /// The last run that found it.
    async fn last_seen_at(&self) -> DateTime<Utc> {
        self.0.last_seen_at
    }

    /// When it ended (null while open).
    async fn resolved_at(&self) -> Option<DateTime<Utc>> {
        self.0.resolved_at
    }
}

/// One reconciliation run.
#[derive(SimpleObject)]
pub struct BillingSyncRun {
    /// Run id.
    pub id: ID,
    /// When it started (or was asked for).
    pub started_at: DateTime<Utc>,
    /// When it finished; null while it runs.
    pub finished_at: Option<DateTime<Utc>>,
    /// Subscriptions of this vendor it read.
    pub subscriptions_seen: i32,
    /// Drift rows it opened.
    pub drift_opened: i32,
    /// Drift rows it resolved.
    pub drift_resolved: i32,
    /// Why it could not finish (the billing system unreachable...): no license was changed
    /// on its account.
    pub error: Option<String>,
}

impl From<billing_sync_run::Model> for BillingSyncRun {
    fn from(r: billing_sync_run::Model) -> Self {
        Self {
            id: r.id.into(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            subscriptions_seen: r.subscriptions_seen,
            drift_opened: r.drift_opened,
            drift_resolved: r.drift_resolved,
            error: r.error,
        }
    }
}

/// Billing queries.
#[derive(Default)]
pub struct BillingQuery;

#[Object]
impl BillingQuery {
    /// The drift report, newest first; `openOnly` leaves out resolved rows.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn billing_drift(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        open_only: Option<bool>,
    ) -> ApiResult<Connection<BillingDrift>> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::Read)?;
        let request = page_request(ctx, first, after)?;
        let page = ctx
            .domain()
            .billing_drift(actor, open_only.unwrap_or(false), &request)
            .await?;
        Ok(from_page(page, |d| &d.id, BillingDrift))
    }

    /// The reconciliation runs, newest first.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn billing_sync_runs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<BillingSyncRun>> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::Read)?;
        let request = page_request(ctx, first, after)?;
        let page = ctx.domain().billing_sync_runs(actor, &request).await?;
        Ok(from_page(page, |r| &r.id, BillingSyncRun::from))
    }
}

/// Billing mutations.
#[derive(Default)]
pub struct BillingMutation;

#[Object]
impl BillingMutation {
    /// Runs reconciliation now (OWNER, ADMIN, INTEGRATION): returns the run, which a worker
    /// finishes within seconds (follow it in `billingSyncRuns`).
    async fn sync_billing(&self, ctx: &Context<'_>) -> ApiResult<BillingSyncRun> {
        Ok(ctx.domain().request_billing_sync(ctx.actor()?).await?.into())
    }
}
