//! The audit log: who changed what, with a before/after diff.

use async_graphql::{Context, ID, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::audit_event;

use crate::graphql::connection::{Connection, from_page, page_request};
use crate::graphql::context::ContextExt;
use crate::graphql::error::ApiResult;
use crate::graphql::page_cost;

/// One change.
#[derive(SimpleObject, Clone)]
pub struct AuditEvent {
    /// Event id.
    pub id: ID,
    /// What was done, e.g. `license.suspend`.
    pub action: String,
    /// `staff`, `token` or `system`.
    pub actor_kind: String,
    /// The staff user's or token's id.
    pub actor_id: Option<ID>,
    /// The staff user's email or the token's name.
    pub actor_label: String,
    /// What kind of thing changed.
    pub target_kind: String,
    /// Its id.
    pub target_id: Option<ID>,
    /// `{"before": {...}, "after": {...}}` of the fields that changed.
    pub diff: Json<serde_json::Value>,
    /// The request that made the change.
    pub request_id: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<audit_event::Model> for AuditEvent {
    fn from(e: audit_event::Model) -> Self {
        Self {
            id: e.id.into(),
            action: e.action,
            actor_kind: e.actor_kind,
            actor_id: e.actor_id.map(Into::into),
            actor_label: e.actor_label,
            target_kind: e.target_kind,
            target_id: e.target_id.map(Into::into),
            diff: Json(e.diff),
            request_id: e.request_id,
            created_at: e.created_at,
        }
    }
}

/// Audit queries.
#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The vendor's audit events, newest first, optionally for one target or one actor.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        target_id: Option<ID>,
        actor_id: Option<ID>,
    ) -> ApiResult<Connection<AuditEvent>> {
        let request = page_request(ctx, first, after)?;
        let page = ctx
            .domain()
            .audit_events(
                ctx.actor()?,
                target_id.as_deref().map(String::as_str),
                actor_id.as_deref().map(String::as_str),
                &request,
            )
            .await?;
        Ok(from_page(page, |e| &e.id, AuditEvent::from))
    }
}
