//! The jobs: one module per job type, each owning its payload, its queue name and its
//! handler, which calls `domain` and is idempotent (apalis delivers at least once).

pub mod billing;
pub mod email;
pub mod tick;

use std::sync::Arc;

use domain::Domain;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::WorkerConfig;
use crate::mail::Mailer;
use crate::stripe::StripeClient;

/// What the handlers share.
pub(crate) struct Ctx {
    /// The use cases.
    pub domain: Domain,
    /// Renders and sends outbox rows.
    pub mailer: Mailer,
    /// Periods and thresholds.
    pub config: WorkerConfig,
    /// The billing API, when billing sync is configured.
    pub stripe: Option<StripeClient>,
}

/// The handle the handlers receive.
pub(crate) type Shared = apalis::prelude::Data<Arc<Ctx>>;

/// A job payload: what apalis' JSON codec stores, on a queue of its own.
pub(crate) trait Job: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// The queue, named explicitly (apalis' default, the type path, changes when code moves).
    const QUEUE: &'static str;
}
