//! Webhooks out: vendors' endpoints (managed by ADMIN and OWNER, audited), the event outbox
//! every change writes to in its own transaction ([`events`]), what each event carries
//! ([`objects`]), where deliveries may go ([`targets`]) and the delivery log (readable by
//! INTEGRATION too). The worker's sender works through [`deliveries`]; this module only knows rows.

pub mod deliveries;
pub mod events;
pub mod objects;
pub mod targets;

use chrono::Duration;
use entity::columns::StringList;
use entity::enums::WebhookDeliveryStatus;
use entity::{webhook_delivery, webhook_endpoint};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder,
};
use serde_json::{Value, json};

use crate::audit::{self, Change};
use crate::db::begin_write;
use crate::newtypes::Text;
use crate::page::{self, Order, Page, PageRequest};
use crate::secrets::random_bytes;
use crate::{Actor, Capability, Domain, Error, Result, new_id};

/// Encryption context of endpoint secrets.
const SECRET_CONTEXT: &str = "webhook-endpoint-secret";
/// Endpoints per vendor.
const MAX_ENDPOINTS: u64 = 20;
/// Longest description accepted.
const MAX_DESCRIPTION_CHARS: usize = 500;

/// An endpoint to create.
pub struct NewWebhookEndpoint {
    /// Where deliveries are POSTed.
    pub url: String,
    /// Event types (`license.created`, `license.*`, `*`).
    pub events: Vec<String>,
    /// Free text for staff.
    pub description: Option<String>,
}

/// Checks the subscribed event types: `*`, a known type, or `<object>.*` of a known object.
fn parse_events(events: Vec<String>) -> Result<StringList> {
    if events.is_empty() {
        return Err(Error::InvalidInput(
            "events must name at least one event type or \"*\"".into(),
        ));
    }
    let mut parsed: Vec<String> = Vec::with_capacity(events.len());
    for event in events {
        if !events::is_subscribable(&event) {
            return Err(Error::InvalidInput(format!("unknown webhook event type \"{event}\"")));
        }
        if !parsed.contains(&event) {
            parsed.push(event);
        }
    }
    Ok(StringList(parsed))
}

/// What the audit log records of an endpoint (never its secret).
fn endpoint_json(e: &webhook_endpoint::Model) -> Value {
    json!({ "url": e.url, "events": e.events.0, "enabled": e.enabled, "description": e.description })
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Default)]
pub struct WebhookEndpointChange {
    /// A new URL (checked like a new endpoint's).
    pub url: Option<String>,
    /// Enable or disable: a disabled endpoint gets no new deliveries and its pending ones wait.
    pub enabled: Option<bool>,
    /// New subscribed event types.
    pub events: Option<Vec<String>>,
    /// New description (an empty one clears it).
    pub description: Option<String>,
}

impl Domain {
    /// Creates an endpoint; its signing secret (`whsec_` + 64 hex) is returned once and stored
    /// encrypted with the master secret.
    ///
    /// # Errors
    /// [`Error::Forbidden`] below ADMIN; [`Error::InvalidInput`] for a URL the deployment's
    /// [`targets`] rules refuse, an unknown event type, or too many endpoints.
    pub async fn create_webhook_endpoint(
        &self,
        actor: &Actor,
        new: NewWebhookEndpoint,
    ) -> Result<(webhook_endpoint::Model, String)> {
        actor.require(Capability::ManageWebhooks)?;
        let events = parse_events(new.events)?;
        let description = Text::<MAX_DESCRIPTION_CHARS>::optional("description", new.description.as_deref())?;
        let url = self.webhook_targets.check_url(&new.url).await?;
        let secret = format!("whsec_{}", hex::encode(random_bytes::<32>()));
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let existing = webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::VendorId.eq(&actor.vendor_id))
            .count(&tx)
            .await?;
        if existing >= MAX_ENDPOINTS {
            return Err(Error::InvalidInput(format!(
                "a vendor has at most {MAX_ENDPOINTS} webhook endpoints"
            )));
        }
        let endpoint = webhook_endpoint::ActiveModel {
            id: Set(new_id()),
            vendor_id: Set(actor.vendor_id.clone()),
            url: Set(url.to_string()),
            events: Set(events),
            description: Set(description.map(Text::into_inner)),
            secret_enc: Set(self.secrets.encrypt(SECRET_CONTEXT, secret.as_bytes())?),
            enabled: Set(true),
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
                "webhook_endpoint.create",
                "webhook_endpoint",
                &endpoint.id,
                json!({}),
                endpoint_json(&endpoint),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok((endpoint, secret))
    }

    /// Changes an endpoint's URL, event types, description, or enables/disables it.
    ///
    /// # Errors
    /// [`Error::Forbidden`] below ADMIN; [`Error::NotFound`] for another vendor's endpoint;
    /// [`Error::InvalidInput`] as [`Domain::create_webhook_endpoint`].
    pub async fn update_webhook_endpoint(
        &self,
        actor: &Actor,
        id: &str,
        change: WebhookEndpointChange,
    ) -> Result<webhook_endpoint::Model> {
        actor.require(Capability::ManageWebhooks)?;
        let events = change.events.map(parse_events).transpose()?;
        let description = match change.description.as_deref().map(str::trim) {
            None => None,
            Some("") => Some(None),
            Some(text) => Some(Some(
                Text::<MAX_DESCRIPTION_CHARS>::parse("description", text)?.into_inner(),
            )),
        };
        let url = match &change.url {
            Some(url) => Some(self.webhook_targets.check_url(url).await?.to_string()),
            None => None,
        };
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let current = endpoint_in(&tx, actor, id).await?;
        let mut model: webhook_endpoint::ActiveModel = current.clone().into();
        if let Some(url) = url {
            model.url = Set(url);
        }
        if let Some(enabled) = change.enabled {
            model.enabled = Set(enabled);
        }
        if let Some(events) = events {
            model.events = Set(events);
        }
        if let Some(description) = description {
            model.description = Set(description);
        }
        model.updated_at = Set(now);
        let endpoint = model.update(&tx).await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "webhook_endpoint.update",
                "webhook_endpoint",
                &endpoint.id,
                endpoint_json(&current),
                endpoint_json(&endpoint),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(endpoint)
    }

    /// Deletes an endpoint. Its delivery log stays (until it ages out); deliveries still
    /// pending end FAILED with "endpoint deleted" and no alert.
    ///
    /// # Errors
    /// [`Error::Forbidden`] below ADMIN; [`Error::NotFound`] for another vendor's endpoint.
    pub async fn delete_webhook_endpoint(&self, actor: &Actor, id: &str) -> Result<webhook_endpoint::Model> {
        actor.require(Capability::ManageWebhooks)?;
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let endpoint = endpoint_in(&tx, actor, id).await?;
        webhook_delivery::Entity::update_many()
            .col_expr(
                webhook_delivery::Column::Status,
                Expr::value(WebhookDeliveryStatus::Failed),
            )
            .col_expr(
                webhook_delivery::Column::LastError,
                Expr::value(Some("endpoint deleted")),
            )
            .col_expr(webhook_delivery::Column::UpdatedAt, Expr::value(now))
            .filter(webhook_delivery::Column::EndpointId.eq(&endpoint.id))
            .filter(webhook_delivery::Column::Status.eq(WebhookDeliveryStatus::Pending))
            .exec(&tx)
            .await?;
        webhook_endpoint::Entity::delete_by_id(&endpoint.id).exec(&tx).await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "webhook_endpoint.delete",
                "webhook_endpoint",
                &endpoint.id,
                endpoint_json(&endpoint),
                json!({}),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(endpoint)
    }

    /// The vendor's endpoints, oldest first.
    ///
    /// # Errors
    /// [`Error::Forbidden`] below ADMIN.
    pub async fn webhook_endpoints(&self, actor: &Actor) -> Result<Vec<webhook_endpoint::Model>> {
        actor.require(Capability::ManageWebhooks)?;
        Ok(webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::VendorId.eq(&actor.vendor_id))
            .order_by_asc(webhook_endpoint::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// The delivery log, newest first, optionally of one endpoint or in one status.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for roles other than ADMIN, OWNER and INTEGRATION.
    pub async fn webhook_deliveries(
        &self,
        actor: &Actor,
        endpoint_id: Option<&str>,
        status: Option<WebhookDeliveryStatus>,
        request: &PageRequest,
    ) -> Result<Page<webhook_delivery::Model>> {
        actor.require(Capability::ReadWebhookDeliveries)?;
        let mut select =
            webhook_delivery::Entity::find().filter(webhook_delivery::Column::VendorId.eq(&actor.vendor_id));
        if let Some(endpoint_id) = endpoint_id {
            select = select.filter(webhook_delivery::Column::EndpointId.eq(endpoint_id));
        }
        if let Some(status) = status {
            select = select.filter(webhook_delivery::Column::Status.eq(status));
        }
        page::fetch(
            &self.db,
            select,
            webhook_delivery::Column::Id,
            request,
            Order::NewestFirst,
        )
        .await
    }

    /// Schedules a delivery again now, with the same event id and a fresh retry window,
    /// whatever its status. A delivery in flight keeps its attempt; the redelivery follows it.
    ///
    /// # Errors
    /// [`Error::Forbidden`] below ADMIN; [`Error::NotFound`] for another vendor's delivery or
    /// a deleted endpoint's; [`Error::InvalidInput`] while its endpoint is disabled.
    pub async fn redeliver_webhook(&self, actor: &Actor, delivery_id: &str) -> Result<webhook_delivery::Model> {
        actor.require(Capability::ManageWebhooks)?;
        let now = self.clock.now();
        let tx = begin_write(&self.writer).await?;
        let delivery = webhook_delivery::Entity::find_by_id(delivery_id)
            .filter(webhook_delivery::Column::VendorId.eq(&actor.vendor_id))
            .one(&tx)
            .await?
            .ok_or(Error::NotFound("webhook delivery"))?;
        let endpoint = endpoint_in(&tx, actor, &delivery.endpoint_id).await?;
        if !endpoint.enabled {
            return Err(Error::InvalidInput(
                "the delivery's endpoint is disabled: enable it first".into(),
            ));
        }
        let mut model: webhook_delivery::ActiveModel = delivery.into();
        model.status = Set(WebhookDeliveryStatus::Pending);
        model.next_attempt_at = Set(now);
        model.retry_until = Set(now + Duration::days(deliveries::RETRY_WINDOW_DAYS));
        model.updated_at = Set(now);
        let delivery = model.update(&tx).await?;
        audit::record(
            &tx,
            actor,
            now,
            Change::new(
                "webhook.redeliver",
                "webhook_delivery",
                &delivery.id,
                json!({}),
                json!({ "event_id": delivery.event_id, "endpoint_id": delivery.endpoint_id }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(delivery)
    }

    /// The endpoint's signing secret, decrypted (for the sender).
    ///
    /// # Errors
    /// [`Error::Internal`] when the secret does not decrypt.
    pub fn webhook_secret(&self, endpoint: &webhook_endpoint::Model) -> Result<String> {
        let raw = self.secrets.decrypt(SECRET_CONTEXT, &endpoint.secret_enc)?;
        String::from_utf8(raw).map_err(|_| Error::Internal("webhook secret is not UTF-8".into()))
    }
}

/// The caller's vendor's endpoint `id`.
async fn endpoint_in(db: &impl ConnectionTrait, actor: &Actor, id: &str) -> Result<webhook_endpoint::Model> {
    webhook_endpoint::Entity::find_by_id(id)
        .filter(webhook_endpoint::Column::VendorId.eq(&actor.vendor_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound("webhook endpoint"))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests: a failure should stop the test loudly")]
mod tests {
    use super::*;

    #[test]
    fn events_must_be_known_and_are_kept_once() {
        assert!(parse_events(vec!["*".into()]).is_ok());
        assert!(parse_events(vec!["license.*".into(), "device.dead".into()]).is_ok());
        assert!(parse_events(vec!["license.exploded".into()]).is_err());
        assert!(parse_events(vec!["nothing.*".into()]).is_err());
        assert!(parse_events(vec![]).is_err());
        let twice = parse_events(vec!["device.dead".into(), "device.dead".into()]).unwrap();
        assert_eq!(twice.0, vec!["device.dead".to_owned()]);
    }
}
