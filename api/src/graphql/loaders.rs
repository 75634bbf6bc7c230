//! DataLoaders for every relation a resolver follows (license -> policy, product, customer;
//! policy -> product; device -> license), so a page of 100 licenses costs one query per relation, not one per row.
//! They are built per request around the caller, so they only ever see the caller's vendor.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use domain::by_id::VendorRows;
use domain::{Actor, Domain};
use entity::{customer, device, license, policy, product};

use crate::graphql::error::ApiError;

/// Loads rows of table `E` by id for one caller.
pub struct ById<E> {
    domain: Domain,
    actor: Arc<Actor>,
    _table: std::marker::PhantomData<fn() -> E>,
}

impl<E: VendorRows> Loader<String> for ById<E>
where
    E::Model: Sync,
{
    type Value = E::Model;
    type Error = ApiError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, E::Model>, ApiError> {
        let rows = self.domain.rows_by_ids::<E>(&self.actor, keys).await?;
        Ok(rows.into_iter().map(|row| (E::id(&row).to_owned(), row)).collect())
    }
}

/// The loaders of one request.
#[derive(Clone)]
pub struct Loaders {
    /// Products by id.
    pub products: Arc<DataLoader<ById<product::Entity>>>,
    /// Policies by id.
    pub policies: Arc<DataLoader<ById<policy::Entity>>>,
    /// Customers by id.
    pub customers: Arc<DataLoader<ById<customer::Entity>>>,
    /// Licenses by id.
    pub licenses: Arc<DataLoader<ById<license::Entity>>>,
    /// Devices by id.
    pub devices: Arc<DataLoader<ById<device::Entity>>>,
}

fn loader<E: VendorRows>(domain: &Domain, actor: &Arc<Actor>) -> Arc<DataLoader<ById<E>>>
where
    E::Model: Sync,
{
    Arc::new(DataLoader::new(
        ById {
            domain: domain.clone(),
            actor: actor.clone(),
            _table: std::marker::PhantomData,
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
