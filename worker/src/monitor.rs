//! The apalis side: the two queues on their own SQLite file (`DATA_DIR/jobs.db`) or on Redis,
//! and the monitor that runs a worker per queue until shutdown.
//!
//! apalis has one storage type per backend and job type (`SqliteStorage<T>`,
//! `RedisStorage<T>`). [`Store`] names that family once, pinning the associated types both
//! storages share (a JSON wire format, the same persistence layer), so the monitor, the pushes
//! and the pruning below are each written once, generic over where the queues live.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use apalis::prelude::*;
use apalis_core::backend::finalize::Durable;
use apalis_core::backend::persistence::TaskPersistLayer;
use apalis_core::backend::{BackendConfig, Vacuum, WireFormatBackend};
use apalis_redis::{ConnectionManager, RedisStorage};
use apalis_sqlite::{JsonCodec, SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteStorage};
use futures::Sink;
use serde_json::Value;

use crate::jobs::billing::{self, BillingJob};
use crate::jobs::email::{self, DeliverEmail};
use crate::jobs::tick::{self, Tick};
use crate::jobs::{Ctx, Job};
use crate::scheduler;

/// How often idle workers look for new jobs (apalis otherwise waits for its 30 s heartbeat).
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// apalis' worker heartbeat. Under load apalis 1.0 sometimes stops re-arming the poll interval
/// and polls again only at the next heartbeat (seen in the tests: an email queued for 28 s), so
/// the heartbeat is short enough to bound that stall.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Missed heartbeats after which a worker's jobs go back to the queue: 60 s, the delivery lease.
const MISSED_HEARTBEATS: usize = 30;
/// How long finished jobs are kept.
const JOBS_KEPT: Duration = Duration::from_secs(24 * 3600);
/// Emails delivered at once by one process.
const EMAIL_CONCURRENCY: usize = 4;
/// Billing jobs run at once by one process (re-reads beside a pass; passes take a lease).
const BILLING_CONCURRENCY: usize = 4;

/// Where the queues live: a handle that opens the apalis storage of each job type's queue.
pub(crate) trait Store: Clone + Send + Sync + 'static {
    /// The storage's error.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The storage of the queue of `T`.
    type Queue<T: Job>: Backend<Task = Task<Vec<u8>>, Error = Self::Error>
        + BackendConfig<Args = T, Kind = Durable, Layer = TaskPersistLayer<JsonCodec<Value>, Value>>
        + WireFormatBackend<Codec = JsonCodec<Vec<u8>>, Compact = Vec<u8>>
        + Sink<Task<Vec<u8>>, Error = Self::Error>
        + Vacuum
        + Send
        + Unpin
        + 'static;

    /// The queue of `T` ([`Job::QUEUE`]).
    fn queue<T: Job>(&self) -> Self::Queue<T>;
}

impl Store for SqlitePool {
    type Error = apalis_sqlite::Error;
    type Queue<T: Job> = SqliteStorage<T>;

    fn queue<T: Job>(&self) -> SqliteStorage<T> {
        SqliteStorage::new(self).with_config(
            apalis_sqlite::Config::default()
                .queue(T::QUEUE)
                .heartbeat_interval(HEARTBEAT_INTERVAL)
                .missed_heartbeats(MISSED_HEARTBEATS),
        )
    }
}

impl Store for ConnectionManager {
    type Error = apalis_redis::Error;
    type Queue<T: Job> = RedisStorage<T>;

    fn queue<T: Job>(&self) -> RedisStorage<T> {
        RedisStorage::new(self.clone()).with_config(
            apalis_redis::Config::default()
                .queue(T::QUEUE)
                .heartbeat_interval(HEARTBEAT_INTERVAL)
                .missed_heartbeats(MISSED_HEARTBEATS)
                .idempotency_ttl(Some(Duration::from_secs(7 * 24 * 3600))),
        )
    }
}

/// Connects to the Redis queue.
///
/// # Errors
/// When Redis cannot be reached.
pub(crate) async fn connect_redis(url: &str) -> anyhow::Result<ConnectionManager> {
    apalis_redis::connect(url).await.context("connecting to REDIS_URL")
}

/// Opens (and migrates) the SQLite queue, `data_dir/jobs.db`.
///
/// # Errors
/// When the file cannot be opened or migrated.
pub(crate) async fn open_sqlite(data_dir: &Path) -> anyhow::Result<SqlitePool> {
    // The queue's own file, durable (apalis' setup() would switch it to synchronous=OFF).
    let options = SqliteConnectOptions::new()
        .filename(data_dir.join("jobs.db"))
        .create_if_missing(true)
        .pragma("journal_mode", "WAL")
        .pragma("synchronous", "NORMAL")
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .context("opening the job queue")?;
    // Workers starting together on a new file race to migrate it; the loser finds the
    // work done when it tries again.
    let mut attempt = 0;
    while let Err(e) = SqliteStorage::<()>::migrations().run(&pool).await {
        attempt += 1;
        if attempt == 5 {
            return Err(e).context("migrating the job queue");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(pool)
}

/// Pushes `args` to its queue under an idempotency key: a key already used is dropped.
pub(crate) async fn push<S: Store, T: Job>(store: &S, args: T, key: String) -> Result<(), BoxDynError> {
    let task = TaskBuilder::new(args).idempotency_key(key).max_attempts(3).build();
    store.queue::<T>().push_task(task).await?;
    Ok(())
}

/// Deletes finished jobs (their rows and idempotency keys), so the queues do not grow
/// forever; returns how many. The outbox rows, not the jobs, are the record of each email.
///
/// apalis-sqlite's statement covers every queue in the file (and compares its integer
/// `run_at` with a date text, so it removes every finished job, whatever its age: harmless, a
/// tick pushed again for the current slot runs idempotently), so on SQLite the second call
/// finds nothing left; on Redis each queue has its own keys.
pub(crate) async fn prune<S: Store>(store: &S) -> Result<usize, BoxDynError> {
    Ok(store.queue::<Tick>().vacuum_before(JOBS_KEPT).await?
        + store.queue::<DeliverEmail>().vacuum_before(JOBS_KEPT).await?
        + store.queue::<BillingJob>().vacuum_before(JOBS_KEPT).await?)
}

/// A name no other live worker process has.
fn worker_name(role: &str) -> String {
    format!("{role}@{}:{}", domain::new_id(), std::process::id())
}

/// Why [`run_on`] returned.
pub(crate) enum Ended {
    /// The shutdown signal came.
    Shutdown,
    /// A worker failed (its queue unreachable, say): the others were stopped too, so the
    /// caller starts them all again after a pause instead of apalis restarting the one at once,
    /// in a tight loop.
    WorkerFailed,
}

/// Runs the scheduler and one worker per queue on `store` until `shutdown` completes or a
/// worker fails, then lets in-flight jobs finish (at most 10 s). `alerts` is the Redis
/// connection the scheduler publishes new alerts on, when the queues are on Redis.
pub(crate) async fn run_on<S: Store>(
    store: S,
    alerts: Option<ConnectionManager>,
    ctx: Arc<Ctx>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Ended> {
    // On shutdown the scheduler stops at once (no new work for a queue this process no longer
    // serves); the monitor then lets in-flight jobs finish.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let failed = Arc::new(tokio::sync::Notify::new());
    let on_failure = failed.clone();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let webhooks = tokio::spawn(crate::webhooks::run(Arc::new(ctx.domain.clone()), stopped.clone()));
    let scheduler = tokio::spawn(scheduler::schedule(store.clone(), alerts, ctx.clone(), stopped));
    let (periodic, periodic_ctx, emails, email_ctx) = (store.clone(), ctx.clone(), store.clone(), ctx.clone());
    let (billing_store, billing_ctx) = (store, ctx);
    let result = Monitor::new()
        .register(move |_| {
            WorkerBuilder::new(worker_name("periodic"))
                .backend(periodic.queue::<Tick>().poll_with_interval(POLL_INTERVAL))
                .data(periodic_ctx.clone())
                .build(tick::run)
        })
        .register(move |_| {
            WorkerBuilder::new(worker_name("email"))
                .backend(emails.queue::<DeliverEmail>().poll_with_interval(POLL_INTERVAL))
                .data(email_ctx.clone())
                .concurrency(EMAIL_CONCURRENCY)
                .build(email::deliver)
        })
        .register(move |_| {
            WorkerBuilder::new(worker_name("billing"))
                .backend(billing_store.queue::<BillingJob>().poll_with_interval(POLL_INTERVAL))
                .data(billing_ctx.clone())
                .concurrency(BILLING_CONCURRENCY)
                .build(billing::run)
        })
        .should_restart(move |worker, error| {
            tracing::warn!(worker = worker.name(), %error, "job worker failed");
            on_failure.notify_one();
            false
        })
        .shutdown_timeout(Duration::from_secs(10))
        .run_with_signal(async move {
            let ended = tokio::select! {
                () = shutdown => Ended::Shutdown,
                () = failed.notified() => Ended::WorkerFailed,
            };
            let _ = ended_tx.send(ended);
            let _ = stop.send(true);
            Ok(())
        })
        .await;
    scheduler.abort();
    webhooks.abort();
    result.context("job workers")?;
    // The monitor also returns when every worker ended by itself.
    Ok(ended_rx.await.unwrap_or(Ended::WorkerFailed))
}
