//! The job workers: an apalis monitor running two queues, on their own SQLite file
//! (`DATA_DIR/jobs.db`) by default or on Redis when `REDIS_URL` is set (`monitor`):
//!
//! - `licensing.periodic`: one job per tick of each periodic task (`jobs/tick.rs`): the
//!   heartbeat sweep followed by the staff alert digests every `HEARTBEAT_SWEEP_SECS`, renewal
//!   notices every `RENEWAL_SCAN_SECS`.
//! - `licensing.email`: one job per outbox row to deliver (`jobs/email.rs`).
//! - `licensing.billing`: one job per webhook event to re-read, and one per reconciliation
//!   pass (`jobs/billing.rs`), talking to Stripe through [`stripe`].
//!
//! A scheduler in every process (`scheduler`) pushes the ticks and relays due outbox rows to
//! the email queue; with Redis it also publishes new alerts for the live subscription
//! ([`alert_feed`]). Each run of a periodic task and of the relay is counted in `worker_ticks`
//! ([`domain::worker_ticks`]).
//!
//! [`run`] is what `licensing-worker` runs, and what `licensing-api` runs in-process with
//! `WORKERS=embedded`.

pub mod alert_feed;
mod config;
mod jobs;
pub mod mail;
mod monitor;
mod scheduler;
pub mod stripe;

use std::future::Future;
use std::sync::Arc;

pub use config::WorkerConfig;
use domain::Domain;
pub use jobs::email::DeliverEmail;
pub use jobs::tick::{PeriodicTask, Tick};

use crate::jobs::Ctx;
use crate::mail::Mailer;

/// Runs the workers until `shutdown` completes, then lets in-flight jobs finish (at most 10 s).
///
/// # Errors
/// When the queue or the mail transport cannot be set up.
pub async fn run(
    domain: Domain,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mailer = Mailer::new(
        config.smtp_url.as_deref(),
        config.data_dir.join("outbox"),
        &config.mail_from,
    )?;
    if config.redis_url.is_none() && !matches!(domain.db.get_database_backend(), sea_orm::DatabaseBackend::Sqlite) {
        tracing::warn!(
            "the job queue is this host's DATA_DIR/jobs.db: workers on other hosts have their own, so each runs every periodic tick (harmless, but set REDIS_URL to share one queue)"
        );
    }
    let redis_url = config.redis_url.clone();
    let data_dir = config.data_dir.clone();
    let stripe = match &config.stripe_secret_key {
        Some(key) => Some(stripe::StripeClient::new(&config.stripe_api_base, key.clone())?),
        None => {
            tracing::info!("billing sync is off: STRIPE_SECRET_KEY is not set");
            None
        }
    };
    let ctx = Arc::new(Ctx {
        domain,
        mailer,
        config,
        stripe,
    });
    match redis_url {
        Some(url) => {
            let conn = monitor::connect_redis(&url).await?;
            monitor::run_on(conn.clone(), Some(conn), ctx, shutdown).await
        }
        None => monitor::run_on(monitor::open_sqlite(&data_dir).await?, None, ctx, shutdown).await,
    }
}
