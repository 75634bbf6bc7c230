//! DataLoaders for every relation a resolver follows (license -> policy, product, customer;
//! policy -> product; device -> license), so a page of 100 licenses costs one query per relation, not one per row.
//! They are built per request around the caller, so they only ever see the caller's vendor.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use domain::{Actor, Domain};
use entity::{customer, device, license, policy, product};

use crate::graphql::error::ApiError;

/// A row type that can be fetched in batches by id.
pub trait FetchById: Sized + Clone + Send + Sync + 'static {
    /// Fetches the rows with these ids that belong to the caller's vendor.
    fn fetch(domain: &Domain, actor: &Actor, ids: &[String]) -> impl Future<Output = domain::Result<Vec<Self>>> + Send;
    /// The row's id.
    fn id(&self) -> &str;
}

macro_rules! fetch_by_id {
    ($model:ty, $method:ident) => {
        impl FetchById for $model {
            async fn fetch(domain: &Domain, actor: &Actor, ids: &[String]) -> domain::Result<Vec<Self>> {
                domain.$method(actor, ids).await
            }
            fn id(&self) -> &str {
                &self.id
            }
        }
    };
}

fetch_by_id!(product::Model, products_by_ids);
fetch_by_id!(policy::Model, policies_by_ids);
fetch_by_id!(customer::Model, customers_by_ids);
fetch_by_id!(license::Model, licenses_by_ids);
fetch_by_id!(device::Model, devices_by_ids);

/// Loads rows of type `M` by id for one caller.
pub struct ById<M> {
    domain: Domain,
    actor: Arc<Actor>,
    _row: std::marker::PhantomData<fn() -> M>,
}

impl<M: FetchById> Loader<String> for ById<M> {
    type Value = M;
    type Error = ApiError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, M>, ApiError> {
        let rows = M::fetch(&self.domain, &self.actor, keys).await?;
        Ok(rows.into_iter().map(|row| (row.id().to_owned(), row)).collect())
    }
}

/// The loaders of one request.
#[derive(Clone)]
pub struct Loaders {
    /// Products by id.
    pub products: Arc<DataLoader<ById<product::Model>>>,
    /// Policies by id.
    pub policies: Arc<DataLoader<ById<policy::Model>>>,
    /// Customers by id.
    pub customers: Arc<DataLoader<ById<customer::Model>>>,
    /// Licenses by id.
    pub licenses: Arc<DataLoader<ById<license::Model>>>,
    /// Devices by id.
    pub devices: Arc<DataLoader<ById<device::Model>>>,
}

fn loader<M: FetchById>(domain: &Domain, actor: &Arc<Actor>) -> Arc<DataLoader<ById<M>>> {
    Arc::new(DataLoader::new(
        ById {
            domain: domain.clone(),
            actor: actor.clone(),
            _row: std::marker::PhantomData,
        },
        tokio::spawn,
    ))
}

impl Loaders {
    /// Fresh loaders for one caller.
    #[must_use]
    pub fn new(domain: &Domain, actor: &Arc<Actor>) -> Self {
        Self {
            products: loader(domain, actor),
            policies: loader(domain, actor),
            customers: loader(domain, actor),
            licenses: loader(domain, actor),
            devices: loader(domain, actor),
        }
    }
}
