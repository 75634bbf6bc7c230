//! The scheduler every worker process runs, once a second: it pushes the ticks of the periodic
//! tasks that began since its last look (and, with billing sync on, each reconciliation tick),
//! relays due outbox rows to the email queue and due inbox rows and `syncBilling` requests to
//! the billing queue, publishes
//! new alerts on Redis ([`crate::alert_feed`]) when the queues are there, and every hour prunes
//! finished jobs.

use std::sync::Arc;
use std::time::Duration;

use apalis_redis::ConnectionManager;

use crate::alert_feed;
use crate::jobs::Ctx;
use crate::jobs::billing::BillingJob;
use crate::jobs::email::DeliverEmail;
use crate::jobs::tick::{PeriodicTask, Tick};
use crate::monitor::{self, Store};

/// How often the scheduler and the outbox relay run.
const SCHEDULER_INTERVAL: Duration = Duration::from_secs(1);
/// How often finished jobs are pruned from the queue.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);
/// The relay's row in `worker_ticks`.
const OUTBOX_RELAY: &str = "outbox_relay";

/// Runs until `stop` changes.
pub(crate) async fn schedule<S: Store>(
    store: S,
    mut alerts: Option<ConnectionManager>,
    ctx: Arc<Ctx>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let periods = [
        (PeriodicTask::HeartbeatSweep, ctx.config.heartbeat_sweep.as_secs()),
        (PeriodicTask::RenewalScan, ctx.config.renewal_scan.as_secs()),
        (PeriodicTask::AnomalyScan, ctx.config.anomaly_scan.as_secs()),
    ];
    let mut last: [Option<u64>; 3] = [None; 3];
    let mut last_billing: Option<u64> = None;
    let mut alert_tail = ctx.domain.alert_tail();
    let mut last_prune = tokio::time::Instant::now();
    let mut interval = tokio::time::interval(SCHEDULER_INTERVAL);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let unix = ctx.domain.clock.now().timestamp();
        let now = u64::try_from(unix).unwrap_or(0);
        for (i, (task, period)) in periods.iter().enumerate() {
            let slot = now / period.max(&1);
            if last[i] != Some(slot) {
                let key = format!("{task:?}:{slot}");
                match monitor::push(&store, Tick { task: *task, slot }, key).await {
                    Ok(()) => last[i] = Some(slot),
                    Err(e) => tracing::warn!(error = %e, ?task, "could not schedule a tick"),
                }
            }
        }
        let billing_slot = now / ctx.config.billing_sync.as_secs().max(1);
        if ctx.stripe.is_some() && last_billing != Some(billing_slot) {
            let job = BillingJob::Reconcile {
                request: None,
                slot: billing_slot,
            };
            match monitor::push(&store, job, format!("BillingSync:{billing_slot}")).await {
                Ok(()) => last_billing = Some(billing_slot),
                Err(e) => tracing::warn!(error = %e, "could not schedule billing reconciliation"),
            }
        }
        relay_outbox(&store, &ctx, unix).await;
        relay_billing(&store, &ctx, billing_slot).await;
        if last_prune.elapsed() >= PRUNE_INTERVAL {
            last_prune = tokio::time::Instant::now();
            match monitor::prune(&store).await {
                Ok(pruned) => tracing::debug!(pruned, "finished jobs pruned"),
                Err(e) => tracing::warn!(error = %e, "could not prune finished jobs"),
            }
        }
        if let Some(conn) = &mut alerts
            && let Err(e) = alert_feed::publish(&ctx.domain, &mut alert_tail, conn).await
        {
            tracing::warn!(error = %e, "could not publish new alerts (tried again in a second)");
        }
    }
}

/// One pass of the outbox relay: hands the email queue every due row no queue holds, one job
/// per row and attempt. Counted in `worker_ticks` (`outbox_relay`, its tick the Unix second
/// `now`) as started before it looks, and as finished once every row was handed over.
async fn relay_outbox<S: Store>(store: &S, ctx: &Ctx, now: i64) {
    if let Err(e) = ctx.domain.worker_tick_started(OUTBOX_RELAY).await {
        tracing::warn!(error = %e, "outbox relay skipped: could not count its run");
        return;
    }
    let rows = match ctx.domain.emails_to_enqueue().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "outbox relay failed");
            return;
        }
    };
    let mut handed_over = true;
    for (id, attempts) in rows {
        // One job per row and attempt, however often the relay hands the row over.
        let key = format!("email:{id}:{attempts}");
        if let Err(e) = monitor::push(store, DeliverEmail { id }, key).await {
            tracing::warn!(error = %e, "could not enqueue an email (the relay retries)");
            handed_over = false;
        }
    }
    if handed_over && let Err(e) = ctx.domain.worker_tick_finished(OUTBOX_RELAY, now).await {
        tracing::warn!(error = %e, "could not count a finished outbox relay pass");
    }
}

/// Hands the billing queue the due inbox rows (one job per row and attempt) and the waiting
/// `syncBilling` requests (one job per request).
async fn relay_billing<S: Store>(store: &S, ctx: &Ctx, slot: u64) {
    match ctx.domain.stripe_events_to_enqueue().await {
        Ok(rows) => {
            for (id, attempts) in rows {
                let key = format!("stripe-event:{id}:{attempts}");
                if let Err(e) = monitor::push(store, BillingJob::ReRead { event: id }, key).await {
                    tracing::warn!(error = %e, "could not enqueue a billing re-read (the relay retries)");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "billing relay failed"),
    }
    match ctx.domain.pending_billing_requests().await {
        Ok(runs) => {
            for run in runs {
                let key = format!("billing-sync-request:{run}");
                let job = BillingJob::Reconcile {
                    request: Some(run),
                    slot,
                };
                if let Err(e) = monitor::push(store, job, key).await {
                    tracing::warn!(error = %e, "could not enqueue a requested billing sync (the relay retries)");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "billing request relay failed"),
    }
}
