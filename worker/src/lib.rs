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
//! With Redis, [`read_model_feed`] keeps each process's in-memory license views in step with
//! the changes the others make (started by `licensing-api` and `licensing-worker` alike).
//!
//! [`run`] is what `licensing-worker` runs, and what `licensing-api` runs in-process with
//! `WORKERS=embedded`.

pub mod alert_feed;
mod config;
mod jobs;
pub mod mail;
mod monitor;
pub mod read_model_feed;
mod scheduler;
pub mod stripe;
pub mod supervise;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

pub use config::WorkerConfig;
use domain::Domain;
use futures::FutureExt as _;
pub use jobs::email::DeliverEmail;
pub use jobs::tick::{PeriodicTask, Tick};
pub use supervise::{Health, WorkerHealth};

use crate::jobs::Ctx;
use crate::mail::Mailer;
use crate::supervise::{Backoff, HEALTHY_RUN};

/// Runs the workers until `shutdown` completes, then lets in-flight jobs finish (at most 10 s).
/// When the queue cannot be reached (Redis down) or a worker fails, the workers start again
/// after a pause growing from 1 s to 60 s ([`supervise`]); `health` says meanwhile whether
/// they run.
///
/// # Errors
/// When the configuration is unusable (a bad `SMTP_URL` or `MAIL_FROM`, the outbox directory
/// cannot be created): nothing a retry would fix.
pub async fn run(
    domain: Domain,
    config: WorkerConfig,
    health: WorkerHealth,
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
    let shutdown = shutdown.boxed().shared();
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        let failure = match run_once(&ctx, &health, shutdown.clone()).await {
            Ok(monitor::Ended::Shutdown) => return Ok(()),
            Ok(monitor::Ended::WorkerFailed) => "a job worker failed".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff.reset();
        }
        let pause = backoff.pause();
        tracing::warn!(error = %failure, retry_in_secs = pause.as_secs(), "the job workers stopped; starting them again after a pause");
        health.set(Health::Down(failure));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.clone() => return Ok(()),
        }
    }
}

/// Connects to the queue and runs the workers on it until shutdown or a failure.
async fn run_once(
    ctx: &Arc<Ctx>,
    health: &WorkerHealth,
    shutdown: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
) -> anyhow::Result<monitor::Ended> {
    match ctx.config.redis_url.clone() {
        Some(url) => {
            let conn = monitor::connect_redis(&url).await?;
            health.set(Health::Running);
            monitor::run_on(conn.clone(), Some(conn), ctx.clone(), shutdown).await
        }
        None => {
            let pool = monitor::open_sqlite(&ctx.config.data_dir).await?;
            health.set(Health::Running);
            monitor::run_on(pool, None, ctx.clone(), shutdown).await
        }
    }
}
