//! The job workers: an apalis monitor running two queues, on their own SQLite file
//! (`DATA_DIR/jobs.db`) by default or on Redis when `REDIS_URL` is set:
//!
//! - `licensing.periodic`: one job per tick of each periodic task (the heartbeat sweep followed
//!   by the staff alert digests every `HEARTBEAT_SWEEP_SECS`, renewal notices every
//!   `RENEWAL_SCAN_SECS`). Every process schedules every tick, but under the idempotency key
//!   `<task>:<tick>`, so the queue keeps one job per tick however many workers run; the work
//!   itself is idempotent too (conditional updates, claims, dedupe keys), so a tick delivered
//!   twice changes nothing twice.
//! - `licensing.email`: one job per outbox row to deliver. A relay (every second, in every
//!   process) hands the queue the rows that are due and that no queue holds; the row, not the
//!   job, is the record of the email.
//!
//! With Redis, the scheduler also publishes new alerts for the live subscription
//! ([`alert_feed`]).
//!
//! [`run`] is what `licensing-worker` runs, and what `licensing-api` runs in-process with
//! `WORKERS=embedded`.

pub mod alert_feed;
pub mod mail;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use apalis::prelude::*;
use apalis_core::backend::Vacuum as _;
use apalis_redis::RedisStorage;
use apalis_sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteStorage};
use domain::Domain;
use domain::outbox::Delivery;
use domain::settings::{Settings, env};
use serde::{Deserialize, Serialize};

use crate::mail::Mailer;

/// Queue of periodic ticks.
const PERIODIC_QUEUE: &str = "licensing.periodic";
/// Queue of emails to deliver.
const EMAIL_QUEUE: &str = "licensing.email";
/// How often idle workers look for new jobs (apalis otherwise waits for its 30 s heartbeat).
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// apalis' worker heartbeat. Under load apalis 1.0 sometimes stops re-arming the poll interval
/// and polls again only at the next heartbeat (seen in the tests: an email queued for 28 s), so
/// the heartbeat is short enough to bound that stall.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Missed heartbeats after which a worker's jobs go back to the queue: 60 s, the delivery lease.
const MISSED_HEARTBEATS: usize = 30;
/// How often the scheduler and the outbox relay run.
const SCHEDULER_INTERVAL: Duration = Duration::from_secs(1);
/// How often finished jobs are pruned from the queue.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// How long finished jobs are kept.
const JOBS_KEPT: Duration = Duration::from_secs(24 * 3600);

/// What the workers are configured with, besides the shared [`Settings`].
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `REDIS_URL` | unset | the job queue on Redis instead of `DATA_DIR/jobs.db` |
/// | `SMTP_URL` | unset | `smtp://host:port`; unset = `.eml` files in `DATA_DIR/outbox/` |
/// | `MAIL_FROM` | `licensing@localhost` | sender |
/// | `HEARTBEAT_SWEEP_SECS` | `30` | heartbeat-timeout detection (and alert digests) period |
/// | `RENEWAL_SCAN_SECS` | `3600` | renewal notice period |
/// | `RENEWAL_NOTICE_DAYS` | `30,7,1` | days before expiry a notice goes out |
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where the SQLite queue and `.eml` files live.
    pub data_dir: PathBuf,
    /// Redis, when the queue runs there.
    pub redis_url: Option<String>,
    /// The SMTP server, when mail goes out by SMTP.
    pub smtp_url: Option<String>,
    /// Sender address.
    pub mail_from: String,
    /// Heartbeat sweep period.
    pub heartbeat_sweep: Duration,
    /// Renewal scan period.
    pub renewal_scan: Duration,
    /// Renewal notice thresholds, in days.
    pub renewal_notice_days: Vec<i64>,
}

fn seconds(name: &str, default: u64) -> anyhow::Result<Duration> {
    let value = match env(name) {
        Some(v) => v
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{name} must be a number of seconds"))?,
        None => default,
    };
    anyhow::ensure!(value >= 1, "{name} must be at least 1");
    Ok(Duration::from_secs(value))
}

impl WorkerConfig {
    /// Reads the environment.
    ///
    /// # Errors
    /// A period or threshold that is not a positive number.
    pub fn from_env(settings: &Settings) -> anyhow::Result<Self> {
        let renewal_notice_days = env("RENEWAL_NOTICE_DAYS")
            .unwrap_or_else(|| "30,7,1".into())
            .split(',')
            .filter(|d| !d.trim().is_empty())
            .map(|d| {
                d.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|d| (1..=3650).contains(d))
                    .with_context(|| format!("RENEWAL_NOTICE_DAYS: {d:?} is not a number of days (1-3650)"))
            })
            .collect::<anyhow::Result<Vec<i64>>>()?;
        Ok(Self {
            data_dir: settings.data_dir.clone(),
            redis_url: env("REDIS_URL"),
            smtp_url: env("SMTP_URL"),
            mail_from: env("MAIL_FROM").unwrap_or_else(|| "licensing@localhost".into()),
            heartbeat_sweep: seconds("HEARTBEAT_SWEEP_SECS", 30)?,
            renewal_scan: seconds("RENEWAL_SCAN_SECS", 3600)?,
            renewal_notice_days,
        })
    }
}

/// A periodic task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeriodicTask {
    /// Mark devices past their heartbeat deadline dead, then send the alert digests.
    HeartbeatSweep,
    /// Promise renewal notices.
    RenewalScan,
}

/// One tick of a periodic task: `slot` is the tick's number (Unix time / period).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tick {
    /// Which task.
    pub task: PeriodicTask,
    /// Which tick.
    pub slot: u64,
}

/// Deliver one outbox row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverEmail {
    /// The row.
    pub id: String,
}

/// What the handlers share.
struct Ctx {
    domain: Domain,
    mailer: Mailer,
    config: WorkerConfig,
}

async fn run_tick(tick: Tick, ctx: Data<Arc<Ctx>>) -> Result<(), BoxDynError> {
    match tick.task {
        PeriodicTask::HeartbeatSweep => {
            let died = ctx.domain.sweep_dead_devices().await?;
            let digests = ctx.domain.send_alert_digests().await?;
            if died > 0 || digests > 0 {
                tracing::info!(died, digests, slot = tick.slot, "heartbeat sweep");
            }
        }
        PeriodicTask::RenewalScan => {
            let notices = ctx
                .domain
                .promise_renewal_notices(&ctx.config.renewal_notice_days)
                .await?;
            if notices > 0 {
                tracing::info!(notices, slot = tick.slot, "renewal notices promised");
            }
        }
    }
    Ok(())
}

async fn deliver(job: DeliverEmail, ctx: Data<Arc<Ctx>>) -> Result<(), BoxDynError> {
    let Some(email) = ctx.domain.start_delivery(&job.id).await? else {
        return Ok(());
    };
    // A send must end inside its lease, or another worker may take the row.
    let limit = Duration::from_secs(u64::try_from(domain::outbox::DELIVERY_LEASE_SECONDS - 10).unwrap_or(30));
    let outcome = match tokio::time::timeout(limit, ctx.mailer.send(&email)).await {
        Ok(outcome) => outcome,
        Err(_) => Delivery::Transient(format!("no answer from the mail server within {} s", limit.as_secs())),
    };
    if let Delivery::Transient(e) | Delivery::Permanent(e) = &outcome {
        tracing::warn!(id = %email.id, attempt = email.attempts, error = %e, "email not delivered");
    }
    ctx.domain.finish_delivery(&email, outcome).await?;
    Ok(())
}

/// The queues, on SQLite or Redis.
#[derive(Clone)]
enum Queues {
    Sqlite(SqlitePool),
    Redis(apalis_redis::ConnectionManager),
}

fn sqlite_config(queue: &str) -> apalis_sqlite::Config {
    apalis_sqlite::Config::default()
        .queue(queue)
        .heartbeat_interval(HEARTBEAT_INTERVAL)
        .missed_heartbeats(MISSED_HEARTBEATS)
}

fn redis_config(queue: &str) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(queue)
        .heartbeat_interval(HEARTBEAT_INTERVAL)
        .missed_heartbeats(MISSED_HEARTBEATS)
        .idempotency_ttl(Some(Duration::from_secs(7 * 24 * 3600)))
}

impl Queues {
    async fn open(config: &WorkerConfig) -> anyhow::Result<Self> {
        if let Some(url) = &config.redis_url {
            let conn = apalis_redis::connect(url.as_str())
                .await
                .context("connecting to REDIS_URL")?;
            return Ok(Self::Redis(conn));
        }
        // The queue's own file, durable (apalis' setup() would switch it to synchronous=OFF).
        let options = SqliteConnectOptions::new()
            .filename(config.data_dir.join("jobs.db"))
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
        Ok(Self::Sqlite(pool))
    }

    /// Pushes `args` to `queue` under an idempotency key: a key already used is dropped.
    async fn push<T>(&self, queue: &str, args: T, key: String) -> Result<(), BoxDynError>
    where
        T: Serialize + for<'de> Deserialize<'de> + Send + Sync + Unpin + 'static,
    {
        let task = TaskBuilder::new(args).idempotency_key(key).max_attempts(3).build();
        match self {
            Self::Sqlite(pool) => {
                SqliteStorage::<T>::new(pool)
                    .with_config(sqlite_config(queue))
                    .push_task(task)
                    .await?;
            }
            Self::Redis(conn) => {
                RedisStorage::<T>::new(conn.clone())
                    .with_config(redis_config(queue))
                    .push_task(task)
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes finished jobs (their rows and idempotency keys), so the queue does not grow
    /// forever; returns how many. The outbox rows, not the jobs, are the record of each email.
    async fn prune(&self) -> Result<usize, BoxDynError> {
        Ok(match self {
            // apalis-sqlite's statement covers every queue in the file (and compares its
            // integer `run_at` with a date text, so it removes every finished job, whatever
            // its age: harmless, a tick pushed again for the current slot runs idempotently).
            Self::Sqlite(pool) => {
                SqliteStorage::<Tick>::new(pool)
                    .with_config(sqlite_config(PERIODIC_QUEUE))
                    .vacuum_before(JOBS_KEPT)
                    .await?
            }
            Self::Redis(conn) => {
                RedisStorage::<Tick>::new(conn.clone())
                    .with_config(redis_config(PERIODIC_QUEUE))
                    .vacuum_before(JOBS_KEPT)
                    .await?
                    + RedisStorage::<DeliverEmail>::new(conn.clone())
                        .with_config(redis_config(EMAIL_QUEUE))
                        .vacuum_before(JOBS_KEPT)
                        .await?
            }
        })
    }
}

/// Every second: pushes the ticks that began since the last look, and hands due outbox rows
/// to the email queue; every hour, prunes finished jobs.
async fn schedule(queues: Queues, ctx: Arc<Ctx>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let periods = [
        (PeriodicTask::HeartbeatSweep, ctx.config.heartbeat_sweep.as_secs()),
        (PeriodicTask::RenewalScan, ctx.config.renewal_scan.as_secs()),
    ];
    let mut last: [Option<u64>; 2] = [None, None];
    let mut alert_tail = ctx.domain.alert_tail();
    let mut last_prune = tokio::time::Instant::now();
    let mut interval = tokio::time::interval(SCHEDULER_INTERVAL);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let now = u64::try_from(ctx.domain.clock.now().timestamp()).unwrap_or(0);
        for (i, (task, period)) in periods.iter().enumerate() {
            let slot = now / period.max(&1);
            if last[i] != Some(slot) {
                let key = format!("{task:?}:{slot}");
                match queues.push(PERIODIC_QUEUE, Tick { task: *task, slot }, key).await {
                    Ok(()) => last[i] = Some(slot),
                    Err(e) => tracing::warn!(error = %e, ?task, "could not schedule a tick"),
                }
            }
        }
        match ctx.domain.emails_to_enqueue().await {
            Ok(rows) => {
                for (id, attempts) in rows {
                    // One job per row and attempt, however often the relay hands the row over.
                    let key = format!("email:{id}:{attempts}");
                    if let Err(e) = queues.push(EMAIL_QUEUE, DeliverEmail { id }, key).await {
                        tracing::warn!(error = %e, "could not enqueue an email (the relay retries)");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "outbox relay failed"),
        }
        if last_prune.elapsed() >= PRUNE_INTERVAL {
            last_prune = tokio::time::Instant::now();
            match queues.prune().await {
                Ok(pruned) => tracing::debug!(pruned, "finished jobs pruned"),
                Err(e) => tracing::warn!(error = %e, "could not prune finished jobs"),
            }
        }
        if let Queues::Redis(conn) = &queues
            && let Err(e) = alert_feed::publish(&ctx.domain, &mut alert_tail, &mut conn.clone()).await
        {
            tracing::warn!(error = %e, "could not publish new alerts (tried again in a second)");
        }
    }
}

/// A name no other live worker process has.
fn worker_name(role: &str) -> String {
    format!("{role}@{}:{}", domain::new_id(), std::process::id())
}

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
    let queues = Queues::open(&config).await?;
    let ctx = Arc::new(Ctx { domain, mailer, config });
    // On shutdown the scheduler stops at once (no new work for a queue this process no longer
    // serves); the monitor then lets in-flight jobs finish.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(schedule(queues.clone(), ctx.clone(), stopped));
    let monitor = match queues {
        Queues::Sqlite(pool) => {
            let (p1, c1, p2, c2) = (pool.clone(), ctx.clone(), pool, ctx.clone());
            Monitor::new()
                .register(move |_| {
                    WorkerBuilder::new(worker_name("periodic"))
                        .backend(
                            SqliteStorage::<Tick>::new(&p1)
                                .with_config(sqlite_config(PERIODIC_QUEUE))
                                .poll_with_interval(POLL_INTERVAL),
                        )
                        .data(c1.clone())
                        .build(run_tick)
                })
                .register(move |_| {
                    WorkerBuilder::new(worker_name("email"))
                        .backend(
                            SqliteStorage::<DeliverEmail>::new(&p2)
                                .with_config(sqlite_config(EMAIL_QUEUE))
                                .poll_with_interval(POLL_INTERVAL),
                        )
                        .data(c2.clone())
                        .concurrency(4)
                        .build(deliver)
                })
        }
        Queues::Redis(conn) => {
            let (r1, c1, r2, c2) = (conn.clone(), ctx.clone(), conn, ctx.clone());
            Monitor::new()
                .register(move |_| {
                    WorkerBuilder::new(worker_name("periodic"))
                        .backend(
                            RedisStorage::<Tick>::new(r1.clone())
                                .with_config(redis_config(PERIODIC_QUEUE))
                                .poll_with_interval(POLL_INTERVAL),
                        )
                        .data(c1.clone())
                        .build(run_tick)
                })
                .register(move |_| {
                    WorkerBuilder::new(worker_name("email"))
                        .backend(
                            RedisStorage::<DeliverEmail>::new(r2.clone())
                                .with_config(redis_config(EMAIL_QUEUE))
                                .poll_with_interval(POLL_INTERVAL),
                        )
                        .data(c2.clone())
                        .concurrency(4)
                        .build(deliver)
                })
        }
    };
    let result = monitor
        .should_restart(|worker, error| {
            tracing::warn!(worker = worker.name(), %error, "worker stopped; restarting");
            true
        })
        .shutdown_timeout(Duration::from_secs(10))
        .run_with_signal(async move {
            shutdown.await;
            let _ = stop.send(true);
            Ok(())
        })
        .await;
    scheduler.abort();
    result.context("job workers")
}
