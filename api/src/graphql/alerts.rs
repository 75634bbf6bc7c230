//! Alerts for staff: listed, acknowledged, and delivered live by the `alerts` subscription.

use async_graphql::{ComplexObject, Context, Enum, ID, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use entity::alert;
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use worker::alert_feed::AlertFeed;

use crate::graphql::connection::{Connection, from_page, page_request};
use crate::graphql::context::{ContextExt, SocketToken};
use crate::graphql::devices::Device;
use crate::graphql::error::{ApiError, ApiResult, ErrorCode};
use crate::graphql::licenses::License;
use crate::graphql::page_cost;

/// What an alert is about.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::AlertKind")]
pub enum AlertKind {
    /// A device stopped heartbeating.
    DeviceDead,
    /// A license's seats are all taken.
    ActivationLimitReached,
    /// An anomaly was detected.
    Anomaly,
    /// A billing subscription changed a license.
    SubscriptionChanged,
    /// A license expires soon.
    LicenseExpiring,
    /// An email could not be delivered.
    EmailFailed,
    /// Billing reconciliation found a disagreement for staff.
    BillingDrift,
    /// A webhook delivery was retried for its whole window and given up on.
    WebhookFailed,
}

/// Something staff should know about.
#[derive(SimpleObject, Clone)]
#[graphql(complex)]
pub struct Alert {
    /// Alert id.
    pub id: ID,
    /// What it is about.
    pub kind: AlertKind,
    /// What happened and what to do.
    pub message: String,
    /// The license concerned.
    pub license_id: Option<ID>,
    /// The device concerned.
    pub device_id: Option<ID>,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
    /// When staff acknowledged it.
    pub acknowledged_at: Option<DateTime<Utc>>,
}

#[ComplexObject]
impl Alert {
    /// The license concerned.
    async fn license(&self, ctx: &Context<'_>) -> ApiResult<Option<License>> {
        License::by_id(ctx, self.license_id.as_ref().map(|id| id.as_str())).await
    }

    /// The device concerned.
    async fn device(&self, ctx: &Context<'_>) -> ApiResult<Option<Device>> {
        Device::by_id(ctx, self.device_id.as_ref().map(|id| id.as_str())).await
    }
}

impl From<alert::Model> for Alert {
    fn from(a: alert::Model) -> Self {
        Self {
            id: a.id.into(),
            kind: a.kind.into(),
            message: a.message,
            license_id: a.license_id.map(Into::into),
            device_id: a.device_id.map(Into::into),
            created_at: a.created_at,
            acknowledged_at: a.acknowledged_at,
        }
    }
}

/// Alert queries.
#[derive(Default)]
pub struct AlertQuery;

#[Object]
impl AlertQuery {
    /// The vendor's alerts, newest first.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn alerts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        unacknowledged_only: Option<bool>,
    ) -> ApiResult<Connection<Alert>> {
        let request = page_request(ctx, first, after)?;
        let page = ctx
            .domain()
            .alerts(ctx.actor()?, unacknowledged_only.unwrap_or(false), &request)
            .await?;
        Ok(from_page(page, |a| &a.id, Alert::from))
    }
}

/// Alert mutations.
#[derive(Default)]
pub struct AlertMutation;

#[Object]
impl AlertMutation {
    /// Marks an alert as seen (OWNER, ADMIN, SUPPORT, INTEGRATION).
    async fn acknowledge_alert(&self, ctx: &Context<'_>, id: ID) -> ApiResult<Alert> {
        Ok(ctx.domain().acknowledge_alert(ctx.actor()?, &id).await?.into())
    }
}

/// Live alerts.
#[derive(Default)]
pub struct AlertSubscription;

#[Subscription]
impl AlertSubscription {
    /// The vendor's alerts as they are raised, from any process (staff roles). Live only: what
    /// was raised while not connected is in the `alerts` query. The stream ends with an error
    /// when the connection's token stops authenticating (`UNAUTHENTICATED`) or the subscriber
    /// fell too far behind to be told everything (`RATE_LIMITED`: query `alerts`, then
    /// subscribe again).
    async fn alerts(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Alert>> + use<>> {
        let actor = ctx.actor()?;
        actor.require(domain::Capability::Read).map_err(ApiError::from)?;
        let vendor_id = actor.vendor_id.clone();
        let domain = ctx.domain().clone();
        let token = ctx.data_opt::<SocketToken>().map(|t| t.0.clone());
        let recently = ctx.data_unchecked::<std::sync::Arc<SocketAuthCache>>().clone();
        let receiver = ctx.data_unchecked::<AlertFeed>().subscribe();
        Ok(futures::stream::unfold(Some(receiver), move |receiver| {
            let (vendor_id, domain, token) = (vendor_id.clone(), domain.clone(), token.clone());
            let recently = recently.clone();
            async move {
                let mut receiver = receiver?;
                let next = loop {
                    match receiver.recv().await {
                        Ok(alert) if alert.vendor_id == vendor_id => break Ok(alert),
                        Ok(_) => {}
                        Err(RecvError::Lagged(skipped)) => {
                            break Err(ApiError::new(
                                ErrorCode::RateLimited,
                                format!(
                                    "{skipped} alerts came too fast to deliver; query alerts, then subscribe again"
                                ),
                            ));
                        }
                        Err(RecvError::Closed) => return None,
                    }
                };
                if let Some(token) = &token
                    && let Err(e) = recently.authenticate(&domain, token).await
                {
                    return Some((Err(ApiError::from(e).into()), None));
                }
                match next {
                    Ok(alert) => Some((Ok(Alert::from(alert)), Some(receiver))),
                    Err(e) => Some((Err(e.into()), None)),
                }
            }
        }))
    }
}

/// How long a socket token that authenticated stays trusted before an alert checks it again.
pub const SOCKET_REAUTH_SECONDS: u64 = 5;

/// Socket tokens that authenticated in the last [`SOCKET_REAUTH_SECONDS`], by SHA-256: the
/// alerts of every socket with that token skip the database check until then (a burst of
/// alerts to many dashboards costs one check per token, not one per alert and socket). A
/// revoked token's subscriptions end at the first alert after that.
pub struct SocketAuthCache(moka::sync::Cache<[u8; 32], ()>);

impl Default for SocketAuthCache {
    fn default() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(std::time::Duration::from_secs(SOCKET_REAUTH_SECONDS))
                .build(),
        )
    }
}

impl SocketAuthCache {
    /// Whether `token` still authenticates (remembered for a few seconds when it does).
    ///
    /// # Errors
    /// As [`crate::auth::authenticate`].
    pub async fn authenticate(&self, domain: &domain::Domain, token: &str) -> Result<(), domain::Error> {
        use sha2::Digest as _;
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if self.0.contains_key(&key) {
            return Ok(());
        }
        crate::auth::authenticate(domain, token, None).await?;
        self.0.insert(key, ());
        Ok(())
    }
}
