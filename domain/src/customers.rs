//! Customers, keyed by the id the vendor's ERP/CRM gives them (`externalId`), so integrations
//! can upsert them as often as they like.

use entity::customer;
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect};
use serde_json::json;

use crate::audit::{self, Change};
use crate::db::begin_write;
use crate::newtypes::{Email, Text};
use crate::page::{self, Order, Page, PageRequest};
use crate::{Actor, Capability, Domain, Error, Result, new_id};

/// A customer as the integration describes it.
#[derive(Debug, Clone)]
pub struct CustomerInput {
    /// The id in the vendor's ERP/CRM; the upsert key.
    pub external_id: Text<255>,
    /// Display name.
    pub name: Text<200>,
    /// Where renewal notices and license files go.
    pub email: Option<Email>,
    /// The customer's id in the billing system.
    pub billing_customer_id: Option<Text<255>>,
}

fn customer_json(c: &customer::Model) -> serde_json::Value {
    json!({ "external_id": c.external_id, "name": c.name, "email": c.email, "billing_customer_id": c.billing_customer_id })
}

/// `LOWER(column) LIKE %needle%`, with the needle's LIKE wildcards escaped.
pub(crate) fn contains_ci(
    column: impl sea_orm::sea_query::IntoColumnRef,
    needle: &str,
) -> sea_orm::sea_query::SimpleExpr {
    let escaped = needle
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    Expr::expr(Func::lower(Expr::col(column)))
        .like(sea_orm::sea_query::LikeExpr::new(format!("%{escaped}%")).escape('\\'))
}

impl Domain {
    /// Creates the customer with this `external_id`, or updates it. Calling it twice, even at
    /// the same time, leaves one customer.
    ///
    /// # Errors
    /// [`Error::Forbidden`] or [`Error::InvalidInput`].
    pub async fn upsert_customer(&self, actor: &Actor, input: CustomerInput) -> Result<customer::Model> {
        actor.require(Capability::ManageLicenses)?;
        let external_id = input.external_id.into_inner();
        let name = input.name.into_inner();
        let email = input.email.map(Email::into_inner);
        let billing = input.billing_customer_id.map(Text::into_inner);
        // A concurrent upsert of the same new external id loses the insert race on the unique
        // index; the retry then finds the row and updates it.
        for _ in 0..3 {
            let now = self.clock.now();
            let tx = begin_write(&self.writer).await?;
            let existing = customer::Entity::find()
                .filter(customer::Column::VendorId.eq(&actor.vendor_id))
                .filter(customer::Column::ExternalId.eq(&external_id))
                .lock_exclusive()
                .one(&tx)
                .await?;
            let (customer, before) = match existing {
                Some(current) => {
                    let before = customer_json(&current);
                    if current.name == name && current.email == email && current.billing_customer_id == billing {
                        return Ok(current);
                    }
                    let mut model: customer::ActiveModel = current.into();
                    model.name = Set(name.clone());
                    model.email = Set(email.clone());
                    model.billing_customer_id = Set(billing.clone());
                    model.updated_at = Set(now);
                    (model.update(&tx).await?, before)
                }
                None => {
                    let inserted = customer::ActiveModel {
                        id: Set(new_id()),
                        vendor_id: Set(actor.vendor_id.clone()),
                        external_id: Set(external_id.clone()),
                        name: Set(name.clone()),
                        email: Set(email.clone()),
                        billing_customer_id: Set(billing.clone()),
                        created_at: Set(now),
                        updated_at: Set(now),
                    }
                    .insert(&tx)
                    .await;
                    match inserted {
                        Ok(c) => (c, json!({})),
                        Err(e) if Error::is_unique_violation(&e) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            let action = if before.as_object().is_some_and(serde_json::Map::is_empty) {
                "customer.create"
            } else {
                "customer.update"
            };
            audit::record(
                &tx,
                actor,
                now,
                Change::new(action, "customer", &customer.id, before, customer_json(&customer)),
            )
            .await?;
            tx.commit().await?;
            return Ok(customer);
        }
        Err(Error::Internal("customer upsert kept losing races".into()))
    }

    /// One customer by id or by external id.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] unless exactly one of the two is given.
    pub async fn customer(
        &self,
        actor: &Actor,
        id: Option<&str>,
        external_id: Option<&str>,
    ) -> Result<Option<customer::Model>> {
        actor.require(Capability::Read)?;
        let select = customer::Entity::find().filter(customer::Column::VendorId.eq(&actor.vendor_id));
        let select = match (id, external_id) {
            (Some(id), None) => select.filter(customer::Column::Id.eq(id)),
            (None, Some(ext)) => select.filter(customer::Column::ExternalId.eq(ext)),
            _ => return Err(Error::InvalidInput("give exactly one of id and externalId".into())),
        };
        Ok(select.one(&self.db).await?)
    }

    /// The vendor's customers, oldest first; `search` matches name, email or external id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn customers(
        &self,
        actor: &Actor,
        search: Option<&str>,
        request: &PageRequest,
    ) -> Result<Page<customer::Model>> {
        actor.require(Capability::Read)?;
        let mut select = customer::Entity::find().filter(customer::Column::VendorId.eq(&actor.vendor_id));
        if let Some(needle) = search.map(str::trim).filter(|s| !s.is_empty()) {
            select = select.filter(
                Condition::any()
                    .add(contains_ci(customer::Column::Name, needle))
                    .add(contains_ci(customer::Column::Email, needle))
                    .add(contains_ci(customer::Column::ExternalId, needle)),
            );
        }
        page::fetch(&self.db, select, customer::Column::Id, request, Order::OldestFirst).await
    }
}
