//! Webhooks out: endpoints (ADMIN, OWNER), the delivery log (also INTEGRATION) and redelivery.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::{webhook_delivery, webhook_endpoint};

use crate::graphql::connection::{Connection, from_page, page_request};
use crate::graphql::context::ContextExt;
use crate::graphql::error::ApiResult;
use crate::graphql::page_cost;

/// Where a webhook delivery stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
#[graphql(remote = "entity::enums::WebhookDeliveryStatus")]
pub enum WebhookDeliveryStatus {
    /// Not delivered yet; retried with backoff for 3 days.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Retried for 3 days without a 2xx: a WEBHOOK_FAILED alert says so.
    Failed,
}

/// A new webhook endpoint.
#[derive(InputObject)]
pub struct CreateWebhookEndpointInput {
    /// Where deliveries are POSTed (`https` in production).
    pub url: String,
    /// Event types (`license.created`, `license.*`, or `*` for all).
    pub events: Vec<String>,
    /// Free text for staff.
    pub description: Option<String>,
}

/// A vendor's webhook receiver.
#[derive(SimpleObject, Clone)]
pub struct WebhookEndpoint {
    /// Endpoint id.
    pub id: ID,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Subscribed event types.
    pub events: Vec<String>,
    /// Whether events are delivered to it.
    pub enabled: bool,
    /// Free text for staff.
    pub description: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl From<webhook_endpoint::Model> for WebhookEndpoint {
    fn from(e: webhook_endpoint::Model) -> Self {
        Self {
            id: e.id.into(),
            url: e.url,
            events: e.events.0,
            enabled: e.enabled,
            description: e.description,
            created_at: e.created_at,
        }
    }
}

/// A created endpoint and its signing secret (shown once).
#[derive(SimpleObject)]
pub struct CreatedWebhookEndpoint {
    /// The endpoint.
    pub endpoint: WebhookEndpoint,
    /// The HMAC-SHA256 secret that signs its deliveries.
    pub secret: String,
}

/// One event to one endpoint.
#[derive(SimpleObject, Clone)]
pub struct WebhookDelivery {
    /// Delivery id.
    pub id: ID,
    /// The event id (`evt_...`, the same on every retry).
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// Where it stands.
    pub status: WebhookDeliveryStatus,
    /// Attempts so far.
    pub attempts: i32,
    /// The HTTP status of the last attempt.
    pub response_status: Option<i32>,
    /// The first 1 KiB of the last error or response body.
    pub last_error: Option<String>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// When a 2xx came back.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The endpoint it goes to.
    pub endpoint_id: ID,
    /// When it is tried next (while PENDING).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Failures after this end it FAILED: 3 days after the event or the last redelivery.
    pub retry_until: DateTime<Utc>,
    /// When the last attempt was recorded.
    pub updated_at: DateTime<Utc>,
}

impl From<webhook_delivery::Model> for WebhookDelivery {
    fn from(d: webhook_delivery::Model) -> Self {
        Self {
            id: d.id.into(),
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status.into(),
            attempts: d.attempts,
            response_status: d.response_status,
            last_error: d.last_error,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
            endpoint_id: d.endpoint_id.into(),
            next_attempt_at: (d.status == entity::enums::WebhookDeliveryStatus::Pending).then_some(d.next_attempt_at),
            retry_until: d.retry_until,
            updated_at: d.updated_at,
        }
    }
}

/// Webhook queries.
#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// The vendor's webhook endpoints (OWNER, ADMIN).
    async fn webhook_endpoints(&self, ctx: &Context<'_>) -> ApiResult<Vec<WebhookEndpoint>> {
        let endpoints = ctx.domain().webhook_endpoints(ctx.actor()?).await?;
        Ok(endpoints.into_iter().map(Into::into).collect())
    }

    /// The delivery log, newest first (OWNER, ADMIN, INTEGRATION).
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        endpoint_id: Option<ID>,
        status: Option<WebhookDeliveryStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<Connection<WebhookDelivery>> {
        let request = page_request(ctx, first, after)?;
        let page = ctx
            .domain()
            .webhook_deliveries(
                ctx.actor()?,
                endpoint_id.as_ref().map(|id| id.as_str()),
                status.map(Into::into),
                &request,
            )
            .await?;
        Ok(from_page(page, |d| &d.id, WebhookDelivery::from))
    }
}

/// Webhook mutations.
#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Creates an endpoint (OWNER, ADMIN); the signing secret is shown once.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookEndpointInput,
    ) -> ApiResult<CreatedWebhookEndpoint> {
        let new = domain::webhooks::NewWebhookEndpoint {
            url: input.url,
            events: input.events,
            description: input.description,
        };
        let (endpoint, secret) = ctx.domain().create_webhook_endpoint(ctx.actor()?, new).await?;
        Ok(CreatedWebhookEndpoint {
            endpoint: endpoint.into(),
            secret,
        })
    }

    /// Enables/disables an endpoint, changes its event types, URL or description (OWNER,
    /// ADMIN); arguments left out stay as they are, an empty description clears it. A disabled
    /// endpoint gets no new deliveries; its pending ones wait until it is enabled again.
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: ID,
        enabled: Option<bool>,
        events: Option<Vec<String>>,
        url: Option<String>,
        description: Option<String>,
    ) -> ApiResult<WebhookEndpoint> {
        let change = domain::webhooks::WebhookEndpointChange {
            url,
            enabled,
            events,
            description,
        };
        Ok(ctx
            .domain()
            .update_webhook_endpoint(ctx.actor()?, &id, change)
            .await?
            .into())
    }

    /// Deletes an endpoint (OWNER, ADMIN). Its delivery log stays readable for 30 days; pending
    /// deliveries end FAILED ("endpoint deleted").
    async fn delete_webhook_endpoint(&self, ctx: &Context<'_>, id: ID) -> ApiResult<WebhookEndpoint> {
        Ok(ctx.domain().delete_webhook_endpoint(ctx.actor()?, &id).await?.into())
    }

    /// Delivers a delivery's event again now, with the same event id, and retries it for 3 days
    /// more (OWNER, ADMIN). Refused while the endpoint is disabled or deleted.
    async fn redeliver_webhook(&self, ctx: &Context<'_>, delivery_id: ID) -> ApiResult<WebhookDelivery> {
        Ok(ctx.domain().redeliver_webhook(ctx.actor()?, &delivery_id).await?.into())
    }
}
