//! Customers, upserted by the id the vendor's ERP/CRM gives them.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::customer;

use crate::graphql::connection::{Connection, from_page, page_request};
use crate::graphql::context::ContextExt;
use crate::graphql::error::ApiResult;
use crate::graphql::page_cost;
use domain::newtypes::{Email, Text};

/// A vendor's customer.
#[derive(SimpleObject, Clone)]
pub struct Customer {
    /// Customer id.
    pub id: ID,
    /// The id in the vendor's ERP/CRM.
    pub external_id: String,
    /// Display name.
    pub name: String,
    /// Where renewal notices and license files go.
    pub email: Option<String>,
    /// The id in the billing system.
    pub billing_customer_id: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<customer::Model> for Customer {
    fn from(c: customer::Model) -> Self {
        Self {
            id: c.id.into(),
            external_id: c.external_id,
            name: c.name,
            email: c.email,
            billing_customer_id: c.billing_customer_id,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// A customer as the integration knows it; `externalId` is the upsert key.
#[derive(InputObject)]
pub struct UpsertCustomerInput {
    /// The id in the vendor's ERP/CRM.
    pub external_id: String,
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: Option<String>,
    /// The id in the billing system.
    pub billing_customer_id: Option<String>,
}

/// Customer queries.
#[derive(Default)]
pub struct CustomerQuery;

#[Object]
impl CustomerQuery {
    /// The vendor's customers; `search` matches name, email or external id.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn customers(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        search: Option<String>,
    ) -> ApiResult<Connection<Customer>> {
        let request = page_request(ctx, first, after)?;
        let page = ctx
            .domain()
            .customers(ctx.actor()?, search.as_deref(), &request)
            .await?;
        Ok(from_page(page, |c| &c.id, Customer::from))
    }

    /// One customer, by id or by external id.
    async fn customer(
        &self,
        ctx: &Context<'_>,
        id: Option<ID>,
        external_id: Option<String>,
    ) -> ApiResult<Option<Customer>> {
        let found = ctx
            .domain()
            .customer(ctx.actor()?, id.as_deref().map(String::as_str), external_id.as_deref())
            .await?;
        Ok(found.map(Into::into))
    }
}

/// Customer mutations.
#[derive(Default)]
pub struct CustomerMutation;

#[Object]
impl CustomerMutation {
    /// Creates or updates the customer with this `externalId` (OWNER, ADMIN, INTEGRATION).
    /// Safe to retry: the same input twice leaves one customer.
    async fn upsert_customer(&self, ctx: &Context<'_>, input: UpsertCustomerInput) -> ApiResult<Customer> {
        let actor = ctx.actor()?;
        // The role first, as before input was parsed here: a caller who may not do this hears so.
        actor.require(domain::Capability::ManageLicenses)?;
        let input = domain::customers::CustomerInput {
            external_id: Text::parse("externalId", &input.external_id)?,
            name: Text::parse("name", &input.name)?,
            email: input.email.as_deref().map(Email::try_from).transpose()?,
            billing_customer_id: Text::optional("billingCustomerId", input.billing_customer_id.as_deref())?,
        };
        Ok(ctx.domain().upsert_customer(actor, input).await?.into())
    }
}
